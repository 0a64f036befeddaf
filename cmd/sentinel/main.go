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
		configFile       = a.Flag("config.file", "Sentinel configuration file.").Default("sentinel.yml").String()
		configCheck      = a.Flag("config.check", "Validate the configuration file and exit.").Bool()
		telemetryPath    = a.Flag("web.telemetry-path", "Path under which to expose metrics.").Default("/metrics").String()
		storagePath      = a.Flag("storage.path", "Directory for the durable state: kill-switch journal, agent snapshot, token key.").Default("data/").String()
		snapshotInterval = a.Flag("storage.snapshot-interval", "How often the hot agent state is snapshotted to disk.").Default("1m").Duration()
		shutdownTimeout  = a.Flag("web.shutdown-timeout", "How long a graceful shutdown waits for in-flight requests.").Default("15s").Duration()
		maxScrapes       = a.Flag("web.max-requests", "Maximum number of scrapes of the metrics in flight; more are answered 503. Each holds a rendered copy of the fleet, ~160 MB per 100k agents, until its client has read it.").Default(strconv.Itoa(app.DefaultMaxScrapes)).Int()
		webFlags         = kingpinflag.AddFlags(a, ":9464")
		collectors       = make([]*bool, len(collector.Optional))
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
	if *maxScrapes < 1 {
		fmt.Fprintf(os.Stderr, "sentinel: --web.max-requests must be at least 1, got %d\n", *maxScrapes)
		return 2
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
		return 0
	}

	logger.Info("starting sentinel", "version", version.Info(), "build_context", version.BuildContext())
	// Catch SIGHUP before the (possibly long) restore: its default action
	// would kill the process. A reload asked for during start-up runs once
	// serving begins.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	sentinel, err := app.New(app.Options{
		ConfigFile:         *configFile,
		StoragePath:        *storagePath,
		SnapshotInterval:   *snapshotInterval,
		TelemetryPath:      *telemetryPath,
		MaxScrapes:         *maxScrapes,
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
