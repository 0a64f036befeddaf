// Command sentinel-loadgen simulates a fleet of agents heartbeating to
// sentinel (or to any server that speaks its agent API) over keep-alive
// HTTP/1.1, and reports throughput and latency percentiles corrected for
// coordinated omission, as text and as JSON.
//
// Modes: closed (each connection sends its next heartbeat once the last is
// answered: saturation throughput), open (heartbeats start at --rate per
// second whatever the answers take: latency at a given load), fleet (every
// agent beats once per --interval, for as long as it runs). Agents are
// first registered, as fast as the connections allow, unless
// --no-register.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	a := kingpin.New("sentinel-loadgen", "Simulate N agents heartbeating to sentinel and measure it.")
	var (
		cfg       Config
		tokenFile = a.Flag("token-file", "File holding the tenant API key (instead of --token).").String()
		jsonOut   = a.Flag("json", "Also write the summary as JSON to this file (- for stdout, instead of the text).").String()
		quiet     = a.Flag("quiet", "No progress line.").Bool()
	)
	a.Flag("url", "Base URL of sentinel.").Default("http://127.0.0.1:9464").StringVar(&cfg.URL)
	a.Flag("token", "Tenant API key (prefer --token-file: arguments are visible to other users).").Envar("SENTINEL_TOKEN").StringVar(&cfg.Token)
	a.Flag("agents", "Number of simulated agents.").Default("1000").IntVar(&cfg.Agents)
	a.Flag("agent-prefix", "Agent id prefix: ids are <prefix>-0000000 and up.").Default("loadgen").StringVar(&cfg.Prefix)
	a.Flag("protocol", "beacon, abs, or mixed (even agents Beacon, odd ones ABS).").Default(protoBeacon).EnumVar(&cfg.Protocol, protoBeacon, protoABS, protoMixed)
	a.Flag("mode", "closed (as fast as answers come), open (fixed --rate) or fleet (each agent once per --interval).").Default(modeClosed).EnumVar(&cfg.Mode, modeClosed, modeOpen, modeFleet)
	a.Flag("connections", "Keep-alive connections, one worker each; the agents share them.").Default("16").IntVar(&cfg.Connections)
	a.Flag("rate", "Open loop: heartbeats per second.").Float64Var(&cfg.Rate)
	a.Flag("interval", "The agents' heartbeat interval (sent in the body; fleet mode's period).").Default("60s").DurationVar(&cfg.Interval)
	a.Flag("duration", "Length of the measured phase (fleet mode: 0 runs until interrupted).").Default("10s").DurationVar(&cfg.Duration)
	a.Flag("register", "Register every agent first (one heartbeat each, as fast as possible).").Default("true").BoolVar(&cfg.Register)
	a.Flag("runtime-tokens", "Beacon agents beat with the runtime token of their registration, as beacon does.").Default("true").BoolVar(&cfg.RuntimeTokens)
	a.Flag("timeout", "Per-request timeout.").Default("10s").DurationVar(&cfg.Timeout)
	a.Flag("progress-interval", "How often the progress line is printed on stderr.").Default("1s").DurationVar(&cfg.ProgressEvery)
	a.HelpFlag.Short('h')
	a.UsageWriter(stderr)
	a.ErrorWriter(stderr)
	if _, err := a.Parse(args); err != nil {
		fmt.Fprintf(stderr, "sentinel-loadgen: %v\n", err)
		return 2
	}
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			fmt.Fprintf(stderr, "sentinel-loadgen: read token file: %v\n", err)
			return 2
		}
		cfg.Token = string(trimSpace(b))
	}
	if !*quiet {
		cfg.Progress = stderr
	}
	cfg.Marks = stderr

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sum, err := Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "sentinel-loadgen: %v\n", err)
		if sum == nil {
			return 1
		}
	}
	if *jsonOut != "-" {
		writeText(stdout, sum)
	}
	if *jsonOut != "" {
		out := stdout
		if *jsonOut != "-" {
			f, ferr := os.Create(*jsonOut)
			if ferr != nil {
				fmt.Fprintf(stderr, "sentinel-loadgen: %v\n", ferr)
				return 1
			}
			defer f.Close()
			out = f
		}
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(sum); err != nil {
			fmt.Fprintf(stderr, "sentinel-loadgen: write JSON: %v\n", err)
			return 1
		}
	}
	if err != nil {
		return 1
	}
	return 0
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\n' || b[0] == '\r' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\n' || b[len(b)-1] == '\r' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// writeText prints the summary for a human.
func writeText(w io.Writer, s *Summary) {
	fmt.Fprintf(w, "%d agents, protocol %s, %d connections, interval %s, %s\n",
		s.Agents, s.Protocol, s.Connections, time.Duration(s.Interval*float64(time.Second)), s.URL)
	for _, p := range []*Phase{s.Register, s.Load} {
		if p == nil {
			continue
		}
		fmt.Fprintf(w, "\n%s (%s", p.Name, p.Mode)
		if p.TargetRate > 0 {
			fmt.Fprintf(w, ", target %.0f/s", p.TargetRate)
		}
		fmt.Fprintf(w, "): %d requests in %.1fs = %.0f/s, %d ok, %d errors\n",
			p.Requests, p.Seconds, p.Throughput, p.OK, p.Errors)
		fmt.Fprintf(w, "  latency p50 %s  p99 %s  p99.9 %s  max %s  mean %s\n",
			dur(p.Latency.P50), dur(p.Latency.P99), dur(p.Latency.P999), dur(p.Latency.Max), dur(p.Latency.Mean))
		fmt.Fprintf(w, "  (%s)\n", p.LatencyMethod)
		if p.Errors > 0 {
			fmt.Fprintf(w, "  %s\n", p.describeFailures())
		}
		if p.MaxBehindSecond > 0.1 {
			fmt.Fprintf(w, "  fell behind schedule by up to %s: the target rate was not reached\n", dur(p.MaxBehindSecond))
		}
	}
}

func dur(sec float64) string {
	d := time.Duration(sec * float64(time.Second))
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond / 10).String()
	case d < time.Second:
		return d.Round(time.Microsecond * 10).String()
	}
	return d.Round(time.Millisecond).String()
}
