// Command sentinel is the heartbeat receiver, per-agent exporter, kill
// switch and Alertmanager bridge of SPEC 0, on one port.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/promslog"
	promslogflag "github.com/prometheus/common/promslog/flag"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"

	"github.com/agentsentinel/sentinel/app"
	"github.com/agentsentinel/sentinel/collector"
	"github.com/agentsentinel/sentinel/config"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	a := kingpin.New("sentinel", "A Prometheus-native dead man's switch for fleets of AI agents.")
	var (
		configFile        = a.Flag("config.file", "Sentinel configuration file.").Default("sentinel.yml").String()
		configCheck       = a.Flag("config.check", "Validate the configuration file and exit.").Bool()
		telemetryPath     = a.Flag("web.telemetry-path", "Path under which to expose metrics.").Default("/metrics").String()
		storagePath       = a.Flag("storage.path", "Directory of the embedded ledger: kill-switch state, outbox, agent snapshot, token key. Unused with storage.postgres.").Default("data/").String()
		snapshotInterval  = a.Flag("storage.snapshot-interval", "How often the hot agent state is snapshotted (with storage.postgres: saved to the database and the other replicas' merged in).").Default("1m").Duration()
		replicaName       = a.Flag("storage.replica-name", "Name of this replica among those sharing a PostgreSQL ledger, stable across its restarts; default: the host name.").String()
		shutdownTimeout   = a.Flag("web.shutdown-timeout", "How long a graceful shutdown waits for in-flight requests.").Default("15s").Duration()
		maxScrapes        = a.Flag("web.max-requests", "Maximum number of scrapes of the metrics in flight; more are answered 503. Each holds a rendered copy of the fleet, ~160 MB per 100k agents, until its client has read it.").Default(strconv.Itoa(app.DefaultMaxScrapes)).Int()
		maxConnections    = a.Flag("web.max-connections", "Maximum number of HTTP connections open at once; at the limit a new connection replaces the longest-idle one, or is closed at once. Lowered to fit the file-descriptor limit.").Default(strconv.Itoa(app.DefaultMaxConnections)).Int()
		idleTimeout       = a.Flag("web.idle-timeout", "How long an idle keep-alive connection is kept open.").Default(app.DefaultIdleTimeout.String()).Duration()
		readHeaderTimeout = a.Flag("web.read-header-timeout", "How long a client may take to send a request's line and headers.").Default(app.DefaultReadHeaderTimeout.String()).Duration()
		maxHeaderBytes    = a.Flag("web.max-header-bytes", "Maximum size of a request's line and headers (net/http allows 4 KiB more); larger requests are answered 431.").Default("16KiB").Bytes()
		webFlags          = kingpinflag.AddFlags(a, ":9464")
		collectors        = make([]*bool, len(collector.Optional))
	)
	// node_exporter's style: --[no-]collector.<name>, all on by default.
	// The families the alerting rules read have no flag.
	for i, o := range collector.Optional {
		collectors[i] = a.Flag("collector."+o.Name, "Expose "+o.Family+" per agent (--no-collector."+o.Name+" to spare Prometheus the series).").Default("true").Bool()
	}
	logConfig := &promslog.Config{}
	promslogflag.AddFlags(a, logConfig)
	a.Version(version.Print("sentinel"))
	a.HelpFlag.Short('h')
	if _, err := a.Parse(args); err != nil {
		fmt.Fprintf(os.Stderr, "sentinel: %v\n", err)
		return 2
	}
	for _, f := range []struct {
		ok   bool
		rule string
		got  any
	}{
		{*maxScrapes >= 1, "--web.max-requests must be at least 1", *maxScrapes},
		{*maxConnections >= 1, "--web.max-connections must be at least 1", *maxConnections},
		{*idleTimeout > 0, "--web.idle-timeout must be positive", *idleTimeout},
		{*readHeaderTimeout > 0, "--web.read-header-timeout must be positive", *readHeaderTimeout},
		{*maxHeaderBytes >= 1<<10 && *maxHeaderBytes <= 1<<20, "--web.max-header-bytes must be between 1KiB and 1MiB", *maxHeaderBytes},
	} {
		if !f.ok {
			fmt.Fprintf(os.Stderr, "sentinel: %s, got %v\n", f.rule, f.got)
			return 2
		}
	}
	logger := promslog.New(logConfig)
	var disabled []collector.OptionalFamily
	for i, on := range collectors {
		if !*on {
			disabled = append(disabled, collector.Optional[i])
		}
	}

	if *configCheck {
		if _, err := config.Load(*configFile); err != nil {
			fmt.Fprintf(os.Stderr, "FAILED: %v\n", err)
			return 1
		}
		fmt.Printf("SUCCESS: %s is valid sentinel configuration\n", *configFile)
		if web := *webFlags.WebConfigFile; web != "" {
			if err := app.CheckWebConfig(web); err != nil {
				fmt.Fprintf(os.Stderr, "FAILED: %v\n", err)
				return 1
			}
			fmt.Printf("SUCCESS: %s is valid web configuration\n", web)
		}
		return 0
	}

	logger.Info("starting sentinel", "version", version.Info(), "build_context", version.BuildContext())
	// Before the (possibly long) restore: a broken certificate fails now.
	if err := app.CheckWebConfig(*webFlags.WebConfigFile); err != nil {
		logger.Error("cannot start", "err", err)
		return 1
	}
	// Catch SIGHUP before the (possibly long) restore: its default action
	// would kill the process. A reload asked for during start-up runs once
	// serving begins.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	sentinel, err := app.New(app.Options{
		ConfigFile:         *configFile,
		StoragePath:        *storagePath,
		SnapshotInterval:   *snapshotInterval,
		Replica:            *replicaName,
		TelemetryPath:      *telemetryPath,
		MaxScrapes:         *maxScrapes,
		MaxConnections:     *maxConnections,
		IdleTimeout:        *idleTimeout,
		ReadHeaderTimeout:  *readHeaderTimeout,
		MaxHeaderBytes:     int(*maxHeaderBytes),
		DisabledCollectors: disabled,
		Logger:             logger,
	})
	if err != nil {
		logger.Error("cannot start", "err", err)
		return 1
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	reload := make(chan struct{})
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			case <-ctx.Done():
				return
			}
		}
	}()

	if err := sentinel.Run(ctx, webFlags, nil, reload, *shutdownTimeout); err != nil {
		logger.Error("sentinel stopped with an error", "err", err)
		return 1
	}
	logger.Info("sentinel stopped")
	return 0
}
