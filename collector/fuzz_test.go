package collector

import (
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/heartbeat"
)

// FuzzExposition gives an agent arbitrary reported strings and numbers (as
// a restored snapshot could hold them: any bytes) and scrapes it: the
// hand-written exposition always parses with expfmt, and parses to exactly
// what client_golang's const metrics gather for the same store.
func FuzzExposition(f *testing.F) {
	for _, seed := range []struct {
		tenant, id, version, hostname, image string
		uptime, requests                     float64
	}{
		{"acme", "agent-1", "1.4.2", "host", "img:1", 3600, 1500},
		{`we"ird\ten` + "\nant", "q-1", `v1 "quoted" \ back\slash` + "\nnewline", "h\\\\", `img:"x"`, math.Inf(1), math.NaN()},
		{"acme", "utf8-1", "héllo ✓ 日本", "ノード", "😀", 0, 1e21},
		{"acme", "bad-utf8", "\xff\xfe1.0", "ok\xc3", "\x80\"\\\n\x80", -0.0, 1e-3},
		{"acme", "cut-rune", strings.Repeat("v", heartbeat.MaxStringLen-1) + "é", strings.Repeat("h", 300), "", math.MaxFloat64, math.SmallestNonzeroFloat64},
	} {
		f.Add(seed.tenant, seed.id, seed.version, seed.hostname, seed.image, seed.uptime, seed.requests)
	}
	f.Fuzz(func(t *testing.T, tenant, id, version, hostname, image string, uptime, requests float64) {
		if tenant == "" || !fleet.ValidAgentID(id) {
			return // the receiver and the snapshot reader refuse these
		}
		s := heartbeat.NewStore(10, nil)
		_, err := s.Beat(&heartbeat.BeatRequest{
			Key: fleet.Key{Tenant: tenant, AgentID: id}, Time: epoch, Interval: time.Minute,
			Status: heartbeat.StatusHealthy, Version: version,
			Platform: heartbeat.Platform{Type: heartbeat.PlatformDocker, Hostname: hostname, Image: image}, HasPlatform: true,
			Uptime: uptime, HasUptime: true,
			Metrics: heartbeat.ReportedMetrics{RequestsHandled: requests, Errors: uptime, AvgLatencyMs: requests}, HasMetrics: true,
		}, thresholds)
		require.NoError(t, err)
		c := newTestCollector(s, &fakeClock{t: epoch.Add(7 * time.Minute)}, tenant)
		res, body := scrapeHandler(t, c.Handler(nil, nil))
		require.Equal(t, http.StatusOK, res.StatusCode)
		require.True(t, utf8Valid(body), "the exposition is valid UTF-8")
		require.Equal(t, normalized(t, gatherBoth(t, prometheus.NewRegistry(), c)), normalized(t, parseText(t, body)))
	})
}
