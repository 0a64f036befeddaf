package collector

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/heartbeat"
)

// epoch is the fake clock's start: 2025-01-01T00:00:00Z.
var epoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

var (
	thresholds = fleet.Thresholds{SilentAfter: 5, ZombieAfter: 15}
	policy     = &fleet.ThresholdPolicy{Global: thresholds}
)

// fakeClock is a settable clock for Options.Now.
type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time { return c.t }

// k8sBeat is a realistic heartbeat of a Kubernetes agent.
func k8sBeat(tenant string, i int, at time.Time) *heartbeat.BeatRequest {
	pod := fmt.Sprintf("agent-worker-7d9f8b6c5-%05d", i)
	return &heartbeat.BeatRequest{
		Key:      fleet.Key{Tenant: tenant, AgentID: fmt.Sprintf("agent-%07d", i)},
		Time:     at,
		Interval: 30 * time.Second,
		Status:   heartbeat.StatusHealthy,
		Version:  "1.4.2",
		Platform: heartbeat.Platform{
			Type:        heartbeat.PlatformKubernetes,
			ContainerID: fmt.Sprintf("containerd://%064x", uint64(i)*0x9e3779b97f4a7c15),
			Image:       "registry.example.com/platform/agent-worker:1.4.2",
			PodName:     pod,
			Namespace:   "agents-prod",
			Node:        fmt.Sprintf("ip-10-0-%d-%d.eu-west-1.compute.internal", i/256%256, i%256),
			Region:      "eu-west-1",
			Hostname:    pod,
			OS:          "linux",
			PID:         int64(1 + i%4000),
		},
		HasPlatform: true,
		Uptime:      float64(3600 + i),
		HasUptime:   true,
		Metrics:     heartbeat.ReportedMetrics{RequestsHandled: float64(1500 + i), Errors: float64(i % 7), AvgLatencyMs: 145.5},
		HasMetrics:  true,
	}
}

// fleetTenants are the tenants fillFleet spreads the agents over, round
// robin (k8sBeat agent i belongs to the (i mod 3)-th).
var fleetTenants = []string{"acme", "globex", "initech"}

// fillFleet registers n Kubernetes agents over three tenants with a spread
// of states at epoch: mostly ACTIVE, some SILENT, ZOMBIE, STOPPED, REVOKED.
func fillFleet(tb testing.TB, s *heartbeat.Store, n int) {
	tb.Helper()
	for i := range n {
		at := epoch.Add(-time.Duration(i%97) * time.Second)
		switch i % 50 {
		case 1:
			at = epoch.Add(-6 * 30 * time.Second) // SILENT
		case 2:
			at = epoch.Add(-20 * 30 * time.Second) // ZOMBIE
		}
		// The receiver stamps beats with its clock, to the nanosecond: the
		// timestamps a scrape formats are not whole seconds. Earlier, so no
		// state changes.
		at = at.Add(-time.Duration(i) * 7_919_993 % time.Second)
		req := k8sBeat(fleetTenants[i%len(fleetTenants)], i, at)
		if i%50 == 3 {
			req.Status = heartbeat.StatusShutdown
		}
		_, err := s.Beat(req, thresholds)
		require.NoError(tb, err)
		if i%50 == 4 {
			s.SetRevoked(req.Key, true)
		}
	}
}
