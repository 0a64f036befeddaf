// Package beacon is the agent side of Sentinel, the Prometheus-native dead
// man's switch for AI agents. It is both the engine of the beacon command and
// a Go SDK that agents embed.
//
// A Go agent creates a Beacon with New and runs it next to its work:
//
//	b, err := beacon.New(beacon.Config{
//		Endpoint:  os.Getenv("SENTINEL_URL"),
//		Token:     os.Getenv("SENTINEL_TOKEN"),
//		TokenFile: "/var/lib/my-agent/sentinel-token",
//		AgentID:   beacon.DetectPlatform().DefaultID(),
//		Report:    func() beacon.Report { return beacon.Report{Metrics: &beacon.Metrics{…}} },
//	})
//	…
//	err = b.Run(ctx) // heartbeats until ctx ends or sentinel says stop
//	if errors.Is(err, beacon.ErrRevoked) {
//		… stop within the StopError's ShutdownTimeout …
//	}
//	b.Shutdown(context.Background(), exitCode) // final "shutdown" heartbeat
//
// The first heartbeat registers the agent; with a tenant API key sentinel
// answers a runtime token, which Beacon keeps (in Config.TokenFile, mode
// 0600, written atomically) and uses from then on, replacing it whenever an
// answer carries a refreshed token. Heartbeats follow the interval sentinel
// answers. Sentinel being unreachable never stops anything: Beacon retries
// with exponential backoff and jitter, capped at the interval, and logs once
// per failure streak.
//
// Supervisor runs a child process under a Beacon: it maps the kill switch to
// signals on the child's process group (revoked or terminate: SIGTERM, then
// SIGKILL; pause: SIGSTOP; resume: SIGCONT), forwards signals, and sends the
// final heartbeat with the child's exit code. The child reports its status
// and metrics through the JSON file named by BEACON_METRICS_FILE (see
// ReadReportFile).
//
// Client sends single heartbeats of either protocol, Beacon
// (POST /api/v1/installations/{id}/heartbeat) or ABS
// (POST /v1/heartbeat?agentId={id}); Detector finds the platform (Docker,
// Kubernetes, AWS Lambda, bare metal).
package beacon
