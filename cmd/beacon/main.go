// Command beacon runs an AI agent under Sentinel's dead man's switch: it
// starts the agent as a child process, registers it with sentinel, sends
// heartbeats, and obeys the kill switch. See beacon/README.md.
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/promslog"
	promslogflag "github.com/prometheus/common/promslog/flag"
	"github.com/prometheus/common/version"

	"github.com/agentsentinel/sentinel/beacon"
)

// exitUsage is beacon's exit code for bad flags or configuration.
const exitUsage = 2

func main() { os.Exit(run()) }

func run() int {
	// A closed stdout or stderr (a log pipe gone) must not kill beacon with
	// SIGPIPE and leave the agent unsupervised: with SIGPIPE notified, such a
	// write only fails. Notify, not Ignore: an ignored signal would stay
	// ignored in the child across exec. Nothing reads the channel.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	// The agent runs as the same user: keep it from reading the credentials
	// in /proc/<beacon>/environ or beacon's memory.
	if err := protectCredentials(); err != nil {
		fmt.Fprintf(os.Stderr, "beacon: warning: cannot protect the credentials from the agent: %v\n", err)
	}

	// Arguments of the child are never expanded from @files.
	kingpin.EnableFileExpansion = false

	app := kingpin.New("beacon", "Runs an AI agent under Sentinel's dead man's switch: heartbeats, kill switch, pause/resume.")
	app.Version(version.Print("beacon"))
	app.HelpFlag.Short('h')
	var logConfig promslog.Config
	promslogflag.AddFlags(app, &logConfig)

	runCmd := app.Command("run", `Run COMMAND (or --cmd through /bin/sh -c) and send heartbeats for it to sentinel.

Examples:
  beacon run --endpoint https://sentinel.example.com --token "$KEY" -- python agent.py
  SENTINEL_URL=… SENTINEL_TOKEN=… beacon run --heartbeat-interval 30 --cmd "npm start"

Exit codes: the agent's own code (128+signal when a signal killed it); 2 bad flags;
3 revoked by the kill switch; 4 stopped by a terminate command; 126 the command
cannot be executed; 127 the command was not found.`).Default()
	app.Interspersed(false) // everything after COMMAND belongs to it
	var (
		endpoint = runCmd.Flag("endpoint", "Sentinel's base URL, e.g. https://sentinel.example.com.").
				Envar("SENTINEL_URL").PlaceHolder("URL").String()
		token = runCmd.Flag("token", "Credential: a tenant API key (registers the agent and earns a runtime token) or an srt_ runtime token. Prefer the environment variable: flags show in ps.").
			Envar("SENTINEL_TOKEN").PlaceHolder("TOKEN").String()
		tokenFile = runCmd.Flag("token-file", "File where runtime tokens are kept (mode 0600, atomic writes). A token found there at start is used instead of --token. Without it runtime tokens are kept in memory only.").
				Envar("SENTINEL_TOKEN_FILE").PlaceHolder("PATH").String()
		agentID = runCmd.Flag("id", "Agent id, ^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$. Default: derived from the platform (pod name, container id, function name or hostname).").
			Envar("SENTINEL_AGENT_ID").PlaceHolder("ID").String()
		interval = intervalFlag(runCmd.Flag("heartbeat-interval", "Heartbeat interval to ask for, e.g. 60s, 1m or 30 (seconds). Sentinel may clamp it; its answer wins.").
				Default("60s").PlaceHolder("DURATION"))
		silentAfter = runCmd.Flag("silent-after", "Missed heartbeats after which sentinel reports the agent SILENT. Default: the tenant's (sentinel's configuration bounds it).").
				Envar("SENTINEL_SILENT_AFTER").PlaceHolder("BEATS").Int()
		zombieAfter = runCmd.Flag("zombie-after", "Missed heartbeats after which sentinel reports the agent ZOMBIE (and the kill switch may revoke it). Default: the tenant's.").
				Envar("SENTINEL_ZOMBIE_AFTER").PlaceHolder("BEATS").Int()
		noHeartbeat = runCmd.Flag("no-heartbeat", "Run the agent with no beacon at all: no heartbeats, no kill switch.").Bool()
		protocol    = runCmd.Flag("protocol", "Wire protocol: beacon (/api/v1/installations/{id}/heartbeat) or abs (/v1/heartbeat?agentId={id}).").
				Default(string(beacon.ProtocolBeacon)).Enum(string(beacon.ProtocolBeacon), string(beacon.ProtocolABS))
		shellCmd     = runCmd.Flag("cmd", `Command line run through /bin/sh -c, e.g. --cmd "npm start"; instead of COMMAND.`).PlaceHolder("COMMAND-LINE").String()
		agentVersion = runCmd.Flag("agent-version", "Agent version sent with each heartbeat (the agent's report file may override it).").
				Envar("SENTINEL_AGENT_VERSION").PlaceHolder("VERSION").String()
		shutdownTimeout = runCmd.Flag("shutdown-timeout", "Grace period between SIGTERM and SIGKILL after a terminate command, or a revocation that names none.").
				Default("10s").Duration()
		metricsFile = runCmd.Flag("metrics-file", "Report file the agent writes its status and metrics to, exported to it as "+beacon.EnvMetricsFile+". Default: a fresh temporary file.").
				PlaceHolder("PATH").String()
		command = runCmd.Arg("command", "Command to run, and its arguments (put -- before them).").Strings()
	)

	if _, err := app.Parse(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "beacon: error: %v, try --help\n", err)
		return exitUsage
	}
	logger := promslog.New(&logConfig)

	usage := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "beacon: error: "+format+", try --help\n", a...)
		return exitUsage
	}

	var cmd *exec.Cmd
	switch {
	case *shellCmd != "" && len(*command) > 0:
		return usage("give either --cmd or COMMAND, not both")
	case *shellCmd != "":
		cmd = exec.Command("/bin/sh", "-c", *shellCmd)
	case len(*command) > 0:
		cmd = exec.Command((*command)[0], (*command)[1:]...)
	default:
		return usage("no command to run: give COMMAND after -- or --cmd")
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr

	sup := &beacon.Supervisor{
		Cmd:             cmd,
		ShutdownTimeout: *shutdownTimeout,
		Logger:          logger,
	}

	if !*noHeartbeat {
		if *endpoint == "" {
			return usage("no sentinel endpoint: set --endpoint or SENTINEL_URL (or run with --no-heartbeat)")
		}
		platform := beacon.DetectPlatform()
		id := *agentID
		if id == "" {
			if id = platform.DefaultID(); id == "" {
				return usage("cannot derive an agent id from the %s platform: set --id or SENTINEL_AGENT_ID", platform.Type)
			}
		} else if !beacon.ValidID(id) {
			return usage("--id %q is not a valid agent id: it must match ^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$", id)
		}
		if _, err := (&beacon.Client{Endpoint: *endpoint, AgentID: id, Protocol: beacon.Protocol(*protocol)}).URL(); err != nil {
			return usage("--endpoint: %v", err)
		}
		switch {
		case *silentAfter < 0 || *zombieAfter < 0:
			return usage("--silent-after and --zombie-after must be positive")
		case *silentAfter > 0 && *zombieAfter > 0 && *zombieAfter <= *silentAfter:
			return usage("--zombie-after (%d) must be greater than --silent-after (%d)", *zombieAfter, *silentAfter)
		}
		if *token == "" && *tokenFile == "" {
			return usage("no credential: set --token or SENTINEL_TOKEN (or a --token-file holding a runtime token)")
		}
		if *tokenFile != "" && *token == "" {
			if t, err := beacon.ReadTokenFile(*tokenFile); err != nil || t == "" {
				return usage("no credential: --token-file %s holds no token and --token/SENTINEL_TOKEN is not set", *tokenFile)
			}
		}

		reportFile := *metricsFile
		if reportFile == "" {
			dir, err := os.MkdirTemp("", "beacon-*")
			if err != nil {
				logger.Error("Cannot create the report file's directory", "err", err)
				return 1
			}
			defer os.RemoveAll(dir)
			reportFile = filepath.Join(dir, "metrics.json")
		}
		sup.ReportFile = reportFile
		sup.Beacon = &beacon.Config{
			Endpoint:    *endpoint,
			AgentID:     id,
			Token:       *token,
			TokenFile:   *tokenFile,
			Interval:    *interval,
			SilentAfter: *silentAfter,
			ZombieAfter: *zombieAfter,
			Protocol:    beacon.Protocol(*protocol),
			Version:     *agentVersion,
			Platform:    &platform,
			UserAgent:   "beacon/" + cmp.Or(version.Version, "dev"),
			Logger:      logger,
		}
		logger.Info("Starting beacon", "version", version.Version, "endpoint", *endpoint, "agent_id", id,
			"platform", platform.Type, "protocol", *protocol, "heartbeat_interval", *interval, "report_file", reportFile)
	}

	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(sigs)
	sup.Signals = sigs

	code, err := sup.Run(context.Background())
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			logger.Error("Command not found", "err", err)
		} else {
			logger.Error("Cannot run the agent", "err", err)
		}
	}
	return code
}

// intervalValue is a positive duration where a bare number means seconds.
type intervalValue time.Duration

func intervalFlag(s kingpin.Settings) *time.Duration {
	d := new(time.Duration)
	s.SetValue((*intervalValue)(d))
	return d
}

func (v *intervalValue) Set(s string) error {
	d, err := parseInterval(s)
	if err != nil {
		return err
	}
	*v = intervalValue(d)
	return nil
}

func (v *intervalValue) String() string { return time.Duration(*v).String() }

// maxIntervalSeconds keeps a bare number within time.Duration.
const maxIntervalSeconds = 1e9

// parseInterval accepts a Go duration ("60s", "1m30s") or a bare number of
// seconds ("30", "0.5").
func parseInterval(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	var d time.Duration
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(f) || f > maxIntervalSeconds {
			return 0, fmt.Errorf("heartbeat interval %q is out of range", s)
		}
		d = time.Duration(f * float64(time.Second))
	} else if d, err = time.ParseDuration(s); err != nil {
		return 0, fmt.Errorf("%q is not a duration (like 60s or 1m) nor a number of seconds", s)
	}
	if d <= 0 {
		return 0, fmt.Errorf("heartbeat interval %q must be positive", s)
	}
	return d, nil
}
