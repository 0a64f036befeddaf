package beacon_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/agentsentinel/sentinel/beacon"
)

// A Go agent embeds beacon: it registers, sends heartbeats with its own
// figures, and stops when sentinel's kill switch revokes it.
func Example() {
	// A stand-in for sentinel that revokes the agent at its third heartbeat.
	var beats atomic.Int64
	sentinel := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if beats.Add(1) < 3 {
			fmt.Fprint(w, `{"installation_id":"my-agent-01","lease_renewed":true,"state":"ACTIVE","heartbeat_interval_seconds":0.01}`)
			return
		}
		fmt.Fprint(w, `{"installation_id":"my-agent-01","lease_renewed":false,"revoked":true,"reason":"Emergency shutdown initiated by admin","shutdown_timeout_ms":5000}`)
	}))
	defer sentinel.Close()

	var handled atomic.Int64 // the agent's own work counter
	b, err := beacon.New(beacon.Config{
		Endpoint: sentinel.URL,
		AgentID:  "my-agent-01",
		Token:    "tenant-api-key", // or a runtime token; see TokenFile
		Interval: 30 * time.Second,
		Version:  "1.4.2",
		Report: func() beacon.Report {
			return beacon.Report{Status: beacon.StatusHealthy, Metrics: &beacon.Metrics{RequestsHandled: handled.Add(100)}}
		},
		OnCommand: func(c beacon.Command) { fmt.Println("command:", c) },
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err = b.Run(ctx) // blocks; run it in a goroutine next to the agent's work
	var stop *beacon.StopError
	if errors.As(err, &stop) && errors.Is(err, beacon.ErrRevoked) {
		fmt.Printf("revoked: %s (shut down within %v)\n", stop.Reason, stop.ShutdownTimeout)
		return
	}
	// On a normal exit, tell sentinel the agent stopped on purpose.
	_ = b.Shutdown(context.Background(), 0)
	// Output:
	// revoked: Emergency shutdown initiated by admin (shut down within 5s)
}

// An agent run by the beacon command reports its figures through the file
// named by BEACON_METRICS_FILE; beacon reads it before each heartbeat.
func ExampleWriteReportFile() {
	dir, err := os.MkdirTemp("", "agent")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "metrics.json") // in the agent: os.Getenv(beacon.EnvMetricsFile)

	err = beacon.WriteReportFile(path, beacon.Report{
		Status:  beacon.StatusDegraded,
		Metrics: &beacon.Metrics{RequestsHandled: 1500, Errors: 2, AvgLatencyMs: 145},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	r, err := beacon.ReadReportFile(path)
	fmt.Println(r.Status, *r.Metrics, err)
	// Output: degraded {1500 2 145} <nil>
}

func ExampleDetector() {
	p := beacon.Detector{
		Getenv: func(k string) string {
			return map[string]string{"KUBERNETES_SERVICE_HOST": "10.0.0.1", "POD_NAME": "my-agent-7f8a9b-xyz", "POD_NAMESPACE": "production", "NODE_NAME": "node-pool-1-abc"}[k]
		},
	}.Detect()
	fmt.Println(p.Type, p.PodName, p.Namespace, p.Node, p.DefaultID())
	// Output: kubernetes my-agent-7f8a9b-xyz production node-pool-1-abc my-agent-7f8a9b-xyz
}
