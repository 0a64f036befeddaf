package heartbeat

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentsentinel/sentinel/auth"
	"github.com/agentsentinel/sentinel/config"
	"github.com/agentsentinel/sentinel/fleet"
)

// noKillSwitch is a KillSwitch with nothing revoked, for benchmarks.
type noKillSwitch struct{}

func (noKillSwitch) Revocation(fleet.Key) (fleet.Revocation, bool) { return fleet.Revocation{}, false }
func (noKillSwitch) CommandAcknowledged(fleet.Key, uint32)         {}
func (noKillSwitch) AgentRegistered(fleet.Key, time.Time)          {}
func (noKillSwitch) Forgotten(fleet.Key) (time.Time, bool)         { return time.Time{}, false }

const benchBody = `{"status":"healthy","uptime_seconds":3600,"heartbeat_interval_seconds":60,"version":"1.4.2",
"platform":{"type":"kubernetes","pod_name":"my-agent-7f8a9b-xyz","namespace":"production","node":"node-pool-1-abc"},
"metrics":{"requests_handled":1500,"errors":2,"avg_latency_ms":145}}`

// bareHandler is the baseline of the performance goal: a plain net/http
// handler that reads the body and writes a fixed JSON answer.
func bareHandler(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"installation_id":"a","lease_renewed":true,"state":"ACTIVE","lease_expires_at":"2026-02-03T12:05:00Z","next_heartbeat_at":"2026-02-03T12:01:00Z","heartbeat_interval_seconds":60,"command":null,"refreshed_token":null}` + "\n"))
}

type benchFleet struct {
	mux    http.Handler // the receiver's Routes in front of a ServeMux, as app serves it
	ids    []string
	tokens []string
}

// newBenchFleet registers n agents and returns their runtime tokens, so the
// benchmark measures steady-state heartbeats with runtime tokens.
func newBenchFleet(b *testing.B, n int) *benchFleet {
	cfg, err := config.Parse([]byte("tenants: [{id: acme, api_keys: [bench-key]}]\n"), ".")
	if err != nil {
		b.Fatal(err)
	}
	signer, err := auth.NewSigner(bytes.Repeat([]byte{7}, auth.KeySize))
	if err != nil {
		b.Fatal(err)
	}
	store := NewStore(cfg.Heartbeat.MaxAgents, nil)
	rc := NewReceiver(ReceiverOptions{Store: store, Signer: signer, KillSwitch: noKillSwitch{}, Registerer: prometheus.NewRegistry()}, SettingsFromConfig(cfg))
	mux := http.NewServeMux()
	rc.Register(mux)
	f := &benchFleet{mux: rc.Routes(mux)}
	expires := time.Now().Add(90 * 24 * time.Hour)
	for i := range n {
		id := fmt.Sprintf("agent-%06d", i)
		f.ids = append(f.ids, id)
		f.tokens = append(f.tokens, signer.Issue(auth.RuntimeToken{Tenant: "acme", AgentID: id, Version: 1, ExpiresAt: expires}))
	}
	return f
}

func (f *benchFleet) request(url string, i int) *http.Request {
	i %= len(f.ids)
	req, _ := http.NewRequest(http.MethodPost, url+"/api/v1/installations/"+f.ids[i]+"/heartbeat", bytes.NewReader([]byte(benchBody)))
	req.Header.Set("Authorization", "Bearer "+f.tokens[i])
	req.Header.Set("Content-Type", "application/json")
	return req
}

// BenchmarkHeartbeatHTTP sends heartbeats over loopback HTTP to sentinel's
// handler and to the bare baseline handler, interleaved in the same run, and
// reports the ratio (goal: ≤ 1.4).
func BenchmarkHeartbeatHTTP(b *testing.B) {
	f := newBenchFleet(b, 10000)
	sentinel := httptest.NewServer(f.mux)
	defer sentinel.Close()
	bare := httptest.NewServer(http.HandlerFunc(bareHandler))
	defer bare.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

	send := func(url string, i int) {
		resp, err := client.Do(f.request(url, i))
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
	// Register every agent and warm both servers before measuring.
	for i := range f.ids {
		send(sentinel.URL, i)
		send(bare.URL, i)
	}
	const chunk = 200
	var bareTime, sentinelTime time.Duration
	b.ResetTimer()
	for done := 0; done < b.N; done += chunk {
		n := min(chunk, b.N-done)
		start := time.Now()
		for i := range n {
			send(bare.URL, done+i)
		}
		mid := time.Now()
		for i := range n {
			send(sentinel.URL, done+i)
		}
		bareTime += mid.Sub(start)
		sentinelTime += time.Since(mid)
	}
	b.StopTimer()
	b.ReportMetric(float64(bareTime.Nanoseconds())/float64(b.N), "bare-ns/beat")
	b.ReportMetric(float64(sentinelTime.Nanoseconds())/float64(b.N), "sentinel-ns/beat")
	b.ReportMetric(float64(sentinelTime)/float64(bareTime), "ratio")
}

// BenchmarkHeartbeatHandler calls the handlers directly, without a network,
// which shows the handler's own cost; the ratio here is far above the
// end-to-end one because the baseline does almost nothing.
func BenchmarkHeartbeatHandler(b *testing.B) {
	f := newBenchFleet(b, 10000)
	for _, bc := range []struct {
		name    string
		handler http.Handler
	}{
		{"bare", http.HandlerFunc(bareHandler)},
		{"sentinel", f.mux},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for i := range f.ids {
				bc.handler.ServeHTTP(httptest.NewRecorder(), f.request("http://sentinel", i))
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				w := httptest.NewRecorder()
				bc.handler.ServeHTTP(w, f.request("http://sentinel", i))
				if w.Code != http.StatusOK {
					b.Fatalf("status %d: %s", w.Code, w.Body)
				}
			}
		})
	}
}
