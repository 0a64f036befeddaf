package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/internal/testutil"
)

// fakeSentinel speaks just enough of the agent API for the generator: it
// checks every request is well formed, issues a runtime token at a Beacon
// registration with the tenant key and records who sent what.
type fakeSentinel struct {
	mu        sync.Mutex
	beats     map[string]int    // agent id → heartbeats
	creds     map[string]string // agent id → last credential
	protocols map[string]string // agent id → last protocol
	bad       []string
	fail      bool // answer 503 to everything
}

const testKey = "tenant-key"

func newFakeSentinel(t *testing.T) (*fakeSentinel, *httptest.Server) {
	f := &fakeSentinel{beats: map[string]int{}, creds: map[string]string{}, protocols: map[string]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/installations/{id}/heartbeat", func(w http.ResponseWriter, r *http.Request) {
		f.serve(w, r, r.PathValue("id"), protoBeacon)
	})
	mux.HandleFunc("POST /v1/heartbeat", func(w http.ResponseWriter, r *http.Request) {
		f.serve(w, r, r.URL.Query().Get("agentId"), protoABS)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *fakeSentinel) serve(w http.ResponseWriter, r *http.Request, id, proto string) {
	body, err := io.ReadAll(r.Body)
	var decoded map[string]any
	jerr := json.Unmarshal(body, &decoded)
	cred := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil || jerr != nil || r.Header.Get("Content-Type") != "application/json" {
		f.bad = append(f.bad, id)
	}
	if f.fail {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	first := f.beats[id] == 0
	f.beats[id]++
	f.creds[id], f.protocols[id] = cred, proto
	if proto == protoBeacon && first && cred == testKey {
		io.WriteString(w, `{"installation_id":"`+id+`","registered":true,"runtime_token":{"runtime_token":"srt_`+id+`","expires_at":"2030-01-01T00:00:00Z","token_version":1}}`)
		return
	}
	io.WriteString(w, `{"lease_renewed":true}`)
}

func TestRunClosedRegistersEveryAgentOnceThenUsesItsToken(t *testing.T) {
	f, srv := newFakeSentinel(t)
	sum, err := Run(context.Background(), Config{
		URL: srv.URL + "/", Token: testKey, Agents: 50, Prefix: "a", Protocol: protoMixed,
		Mode: modeClosed, Connections: 4, Interval: 10 * time.Second,
		Duration: 100 * time.Millisecond, Register: true, RuntimeTokens: true,
	})
	require.NoError(t, err)
	require.NotNil(t, sum.Register)
	require.Equal(t, uint64(50), sum.Register.Requests)
	require.Equal(t, uint64(50), sum.Register.OK)
	require.Equal(t, map[string]int{"200": 50}, sum.Register.Status)
	require.NotNil(t, sum.Load)
	require.Positive(t, sum.Load.Requests)
	require.Zero(t, sum.Load.Errors)
	require.Positive(t, sum.Load.Throughput)
	require.Positive(t, sum.Load.Latency.P99)
	require.LessOrEqual(t, sum.Load.Latency.P50, sum.Load.Latency.P99)
	require.LessOrEqual(t, sum.Load.Latency.P99, sum.Load.Latency.P999)

	f.mu.Lock()
	defer f.mu.Unlock()
	require.Empty(t, f.bad, "every body is JSON")
	require.Len(t, f.beats, 50)
	for i := range 50 {
		id := (&generator{cfg: Config{Prefix: "a"}}).agentID(i)
		require.Positive(t, f.beats[id], id)
		if i%2 == 0 {
			require.Equal(t, protoBeacon, f.protocols[id])
			if f.beats[id] > 1 {
				require.Equal(t, "srt_"+id, f.creds[id], "a registered Beacon agent beats with its runtime token")
			}
		} else {
			require.Equal(t, protoABS, f.protocols[id])
			require.Equal(t, testKey, f.creds[id], "ABS agents always use the tenant key")
		}
	}
}

func TestRunOpenLoopKeepsTheRate(t *testing.T) {
	f, srv := newFakeSentinel(t)
	sum, err := Run(context.Background(), Config{
		URL: srv.URL, Token: testKey, Agents: 10, Protocol: protoABS, Mode: modeOpen,
		Rate: 200, Connections: 2, Interval: time.Second, Duration: 250 * time.Millisecond,
	})
	require.NoError(t, err)
	require.Nil(t, sum.Register, "--no-register")
	// Requests are scheduled at start + k/rate for k < rate·duration: 50.
	require.Equal(t, uint64(50), sum.Load.Requests)
	require.Equal(t, 200.0, sum.Load.TargetRate)
	require.Contains(t, sum.Load.LatencyMethod, "scheduled start")
	f.mu.Lock()
	defer f.mu.Unlock()
	require.Len(t, f.beats, 10)
	for id, n := range f.beats {
		require.Equal(t, 5, n, "round robin over the agents: %s", id)
	}
}

func TestRunFleetBeatsEveryAgentPerInterval(t *testing.T) {
	f, srv := newFakeSentinel(t)
	ctx, cancel := context.WithCancel(context.Background())
	var progress testutil.SyncBuffer
	done := make(chan *Summary)
	go func() {
		sum, err := Run(ctx, Config{
			URL: srv.URL, Token: testKey, Agents: 20, Protocol: protoBeacon, Mode: modeFleet,
			Connections: 2, Interval: 100 * time.Millisecond, Register: true, RuntimeTokens: true,
			Progress: &progress, ProgressEvery: 20 * time.Millisecond,
		})
		require.NoError(t, err)
		done <- sum
	}()
	// Fleet mode runs until cancelled: wait until every agent beat twice
	// after its registration, then stop it.
	require.Eventually(t, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		if len(f.beats) < 20 {
			return false
		}
		for _, n := range f.beats {
			if n < 3 {
				return false
			}
		}
		return true
	}, 10*time.Second, 10*time.Millisecond)
	cancel()
	sum := <-done
	require.Equal(t, 200.0, sum.Load.TargetRate, "20 agents every 100ms")
	require.Zero(t, sum.Load.Errors)
	require.Contains(t, progress.String(), "load ")
}

func TestRunCountsFailures(t *testing.T) {
	f, srv := newFakeSentinel(t)
	f.fail = true
	sum, err := Run(context.Background(), Config{
		URL: srv.URL, Token: testKey, Agents: 3, Protocol: protoBeacon, Mode: modeClosed,
		Connections: 1, Interval: time.Second, Duration: 50 * time.Millisecond, Register: true,
	})
	require.ErrorContains(t, err, `no agent registered (answers by status: {"503":3})`)
	require.Equal(t, uint64(3), sum.Register.Errors)

	srv.Close()
	sum, err = Run(context.Background(), Config{
		URL: srv.URL, Token: testKey, Agents: 3, Protocol: protoBeacon, Mode: modeClosed,
		Connections: 1, Interval: time.Second, Duration: 50 * time.Millisecond,
	})
	require.NoError(t, err)
	require.Equal(t, sum.Load.Requests, sum.Load.Errors)
	require.Equal(t, int(sum.Load.Requests), sum.Load.Status["0"], "transport errors count as status 0")
	require.NotEmpty(t, sum.Load.FirstTransport)
}

func TestConfigValidate(t *testing.T) {
	ok := Config{URL: "http://x", Agents: 1, Connections: 1, Interval: time.Second,
		Protocol: protoBeacon, Mode: modeClosed, Duration: time.Second}
	for _, tc := range []struct {
		name   string
		modify func(*Config)
		err    string
	}{
		{"no url", func(c *Config) { c.URL = "" }, "--url is required"},
		{"no agents", func(c *Config) { c.Agents = 0 }, "--agents must be at least 1"},
		{"no connections", func(c *Config) { c.Connections = 0 }, "--connections must be at least 1"},
		{"no interval", func(c *Config) { c.Interval = 0 }, "--interval must be positive"},
		{"protocol", func(c *Config) { c.Protocol = "grpc" }, "--protocol must be"},
		{"mode", func(c *Config) { c.Mode = "burst" }, "--mode must be"},
		{"closed without duration", func(c *Config) { c.Duration = 0 }, "--duration must be positive"},
		{"open without rate", func(c *Config) { c.Mode = modeOpen }, "open mode needs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.modify(&c)
			require.ErrorContains(t, c.validate(), tc.err)
		})
	}
	require.NoError(t, ok.validate())
}

func TestBodyIsTheBeaconSchema(t *testing.T) {
	b := appendBody(nil, "agent-0000042", 3, 30*time.Second)
	var body struct {
		Status   string  `json:"status"`
		Uptime   float64 `json:"uptime_seconds"`
		Interval float64 `json:"heartbeat_interval_seconds"`
		Platform struct {
			Type string `json:"type"`
		} `json:"platform"`
		Metrics struct {
			RequestsHandled float64 `json:"requests_handled"`
		} `json:"metrics"`
	}
	require.NoError(t, json.Unmarshal(b, &body))
	require.Equal(t, "healthy", body.Status)
	require.Equal(t, 30.0, body.Interval)
	require.Equal(t, 3600.0+90, body.Uptime)
	require.Equal(t, "kubernetes", body.Platform.Type)
	require.Equal(t, 1575.0, body.Metrics.RequestsHandled)
	require.Less(t, len(b), 700)
}

func TestMainWritesTextAndJSON(t *testing.T) {
	_, srv := newFakeSentinel(t)
	dir := t.TempDir()
	keyFile, jsonFile := filepath.Join(dir, "key"), filepath.Join(dir, "out.json")
	require.NoError(t, os.WriteFile(keyFile, []byte(testKey+"\n"), 0o600))
	var stdout, stderr bytes.Buffer
	code := run([]string{"--url", srv.URL, "--token-file", keyFile, "--agents", "5", "--connections", "2",
		"--duration", "50ms", "--json", jsonFile, "--quiet"}, &stdout, &stderr)
	require.Equal(t, 0, code, stderr.String())
	require.Contains(t, stdout.String(), "5 agents, protocol beacon, 2 connections")
	require.Contains(t, stdout.String(), "register (closed): 5 requests")
	require.Contains(t, stdout.String(), "latency p50")
	raw, err := os.ReadFile(jsonFile)
	require.NoError(t, err)
	var sum Summary
	require.NoError(t, json.Unmarshal(raw, &sum))
	require.Equal(t, uint64(5), sum.Register.OK)
	require.Positive(t, sum.Load.Requests)

	require.Equal(t, 2, run([]string{"--mode", "burst"}, &stdout, &stderr))
	require.Equal(t, 1, run([]string{"--url", srv.URL, "--agents", "0"}, &stdout, &stderr))
}

func TestRuntimeToken(t *testing.T) {
	require.Equal(t, "srt_x", runtimeToken([]byte(`{"registered":true,"runtime_token":{"runtime_token":"srt_x"}}`)))
	require.Empty(t, runtimeToken([]byte(`{"status":"ACTIVE"}`)))
	require.Empty(t, runtimeToken([]byte(`{"runtime_token":null}`)))
	require.Empty(t, runtimeToken([]byte(`not json`)))
}

func FuzzRuntimeToken(f *testing.F) {
	f.Add([]byte(`{"registered":true,"runtime_token":{"runtime_token":"srt_x","token_version":1}}`))
	f.Add([]byte(`{"status":"ACTIVE","agentId":"a"}`))
	f.Add([]byte(`{"runtime_token":"srt_flat"}`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, b []byte) {
		tok := runtimeToken(b)
		if tok != "" && !bytes.Contains(b, []byte(`runtime_token`)) {
			t.Fatalf("token %q from an answer without one", tok)
		}
	})
}
