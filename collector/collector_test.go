package collector

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/heartbeat"
)

// fiveStates is a store with one agent in each state at epoch, interval 60s.
func fiveStates(t *testing.T) *heartbeat.Store {
	t.Helper()
	s := heartbeat.NewStore(10_000, nil)
	beat := func(id string, ago time.Duration, mod func(*heartbeat.BeatRequest)) {
		req := &heartbeat.BeatRequest{
			Key:      fleet.Key{Tenant: "acme", AgentID: id},
			Time:     epoch.Add(-ago),
			Interval: time.Minute,
		}
		if mod != nil {
			mod(req)
		}
		_, err := s.Beat(req, thresholds)
		require.NoError(t, err)
	}
	// ACTIVE: one missed beat; reports everything.
	beat("active-1", time.Minute, func(r *heartbeat.BeatRequest) {
		r.Status, r.Version = heartbeat.StatusHealthy, "1.4.2"
		r.Platform = heartbeat.Platform{
			Type: heartbeat.PlatformKubernetes, ContainerID: "containerd://abc", Image: "reg/agent:1.4.2",
			PodName: "agent-7d9f", Namespace: "prod", Node: "node-1", Region: "eu-west-1", Hostname: "agent-7d9f",
		}
		r.HasPlatform = true
		r.Uptime, r.HasUptime = 3600, true
		r.Metrics = heartbeat.ReportedMetrics{RequestsHandled: 1500, Errors: 2, AvgLatencyMs: 145}
		r.HasMetrics = true
	})
	// SILENT: exactly five missed beats.
	beat("silent-1", 5*time.Minute, func(r *heartbeat.BeatRequest) {
		r.Status, r.Version = heartbeat.StatusDegraded, "2.0.0"
		r.Platform = heartbeat.Platform{Type: heartbeat.PlatformDocker, ContainerID: "d0cker", Image: "agent:2", Hostname: "d0cker"}
		r.HasPlatform = true
		r.Uptime, r.HasUptime = 12.5, true
	})
	// ZOMBIE: exactly fifteen missed beats.
	beat("zombie-1", 15*time.Minute, func(r *heartbeat.BeatRequest) {
		r.Platform = heartbeat.Platform{Type: heartbeat.PlatformBareMetal, Hostname: "db-3"}
		r.HasPlatform = true
	})
	// STOPPED: sent its shutdown signal half an hour ago.
	beat("stopped-1", 30*time.Minute, func(r *heartbeat.BeatRequest) {
		r.Status = heartbeat.StatusShutdown
		r.Platform = heartbeat.Platform{Type: heartbeat.PlatformLambda, FunctionName: "fn", Region: "us-east-1"}
		r.HasPlatform = true
		r.Metrics, r.HasMetrics = heartbeat.ReportedMetrics{RequestsHandled: 10}, true
	})
	// REVOKED: beat ten seconds ago, then the kill switch.
	beat("revoked-1", 10*time.Second, nil)
	require.True(t, s.SetRevoked(fleet.Key{Tenant: "acme", AgentID: "revoked-1"}, true))
	return s
}

func newTestCollector(s *heartbeat.Store, clock *fakeClock, tenants ...string) *Collector {
	return New(s, Options{
		Thresholds: func() fleet.Thresholds { return thresholds },
		Tenants:    func() []string { return tenants },
		Now:        clock.Now,
	})
}

// epoch is 1735689600; the timestamps below are epoch minus the beat's age.
const fiveStatesText = `
# HELP sentinel_agent_errors_total Agent-reported number of errors.
# TYPE sentinel_agent_errors_total counter
sentinel_agent_errors_total{agent_id="active-1",tenant="acme"} 2
sentinel_agent_errors_total{agent_id="stopped-1",tenant="acme"} 0
# HELP sentinel_agent_heartbeat_interval_seconds Effective heartbeat interval of the agent in seconds.
# TYPE sentinel_agent_heartbeat_interval_seconds gauge
sentinel_agent_heartbeat_interval_seconds{agent_id="active-1",tenant="acme"} 60
sentinel_agent_heartbeat_interval_seconds{agent_id="revoked-1",tenant="acme"} 60
sentinel_agent_heartbeat_interval_seconds{agent_id="silent-1",tenant="acme"} 60
sentinel_agent_heartbeat_interval_seconds{agent_id="stopped-1",tenant="acme"} 60
sentinel_agent_heartbeat_interval_seconds{agent_id="zombie-1",tenant="acme"} 60
# HELP sentinel_agent_info Agent metadata as last reported; the value is always 1.
# TYPE sentinel_agent_info gauge
sentinel_agent_info{agent_id="active-1",container_id="containerd://abc",function="",hostname="agent-7d9f",image="reg/agent:1.4.2",namespace="prod",node="node-1",platform="kubernetes",pod="agent-7d9f",region="eu-west-1",status="healthy",tenant="acme",version="1.4.2"} 1
sentinel_agent_info{agent_id="revoked-1",container_id="",function="",hostname="",image="",namespace="",node="",platform="",pod="",region="",status="",tenant="acme",version=""} 1
sentinel_agent_info{agent_id="silent-1",container_id="d0cker",function="",hostname="d0cker",image="agent:2",namespace="",node="",platform="docker",pod="",region="",status="degraded",tenant="acme",version="2.0.0"} 1
sentinel_agent_info{agent_id="stopped-1",container_id="",function="fn",hostname="",image="",namespace="",node="",platform="lambda",pod="",region="us-east-1",status="shutdown",tenant="acme",version=""} 1
sentinel_agent_info{agent_id="zombie-1",container_id="",function="",hostname="db-3",image="",namespace="",node="",platform="bare_metal",pod="",region="",status="",tenant="acme",version=""} 1
# HELP sentinel_agent_last_heartbeat_timestamp_seconds Unix time of the agent's last accepted heartbeat.
# TYPE sentinel_agent_last_heartbeat_timestamp_seconds gauge
sentinel_agent_last_heartbeat_timestamp_seconds{agent_id="active-1",tenant="acme"} 1.73568954e+09
sentinel_agent_last_heartbeat_timestamp_seconds{agent_id="revoked-1",tenant="acme"} 1.73568959e+09
sentinel_agent_last_heartbeat_timestamp_seconds{agent_id="silent-1",tenant="acme"} 1.7356893e+09
sentinel_agent_last_heartbeat_timestamp_seconds{agent_id="stopped-1",tenant="acme"} 1.7356878e+09
sentinel_agent_last_heartbeat_timestamp_seconds{agent_id="zombie-1",tenant="acme"} 1.7356887e+09
# HELP sentinel_agent_latency_average_seconds Agent-reported average request latency in seconds.
# TYPE sentinel_agent_latency_average_seconds gauge
sentinel_agent_latency_average_seconds{agent_id="active-1",tenant="acme"} 0.145
sentinel_agent_latency_average_seconds{agent_id="stopped-1",tenant="acme"} 0
# HELP sentinel_agent_lease_expiry_timestamp_seconds Unix time at which the agent's lease ends: last heartbeat + interval * silent_after.
# TYPE sentinel_agent_lease_expiry_timestamp_seconds gauge
sentinel_agent_lease_expiry_timestamp_seconds{agent_id="active-1",tenant="acme"} 1.73568984e+09
sentinel_agent_lease_expiry_timestamp_seconds{agent_id="revoked-1",tenant="acme"} 1.73568989e+09
sentinel_agent_lease_expiry_timestamp_seconds{agent_id="silent-1",tenant="acme"} 1.7356896e+09
sentinel_agent_lease_expiry_timestamp_seconds{agent_id="stopped-1",tenant="acme"} 1.7356881e+09
sentinel_agent_lease_expiry_timestamp_seconds{agent_id="zombie-1",tenant="acme"} 1.735689e+09
# HELP sentinel_agent_paused 1 while the agent is paused by the kill switch (it beat after being handed pause, and has not been handed resume or terminate since), else 0.
# TYPE sentinel_agent_paused gauge
sentinel_agent_paused{agent_id="active-1",tenant="acme"} 0
sentinel_agent_paused{agent_id="revoked-1",tenant="acme"} 0
sentinel_agent_paused{agent_id="silent-1",tenant="acme"} 0
sentinel_agent_paused{agent_id="stopped-1",tenant="acme"} 0
sentinel_agent_paused{agent_id="zombie-1",tenant="acme"} 0
# HELP sentinel_agent_requests_handled_total Agent-reported number of requests handled.
# TYPE sentinel_agent_requests_handled_total counter
sentinel_agent_requests_handled_total{agent_id="active-1",tenant="acme"} 1500
sentinel_agent_requests_handled_total{agent_id="stopped-1",tenant="acme"} 10
# HELP sentinel_agent_revoked 1 while the agent is revoked by the kill switch, else 0.
# TYPE sentinel_agent_revoked gauge
sentinel_agent_revoked{agent_id="active-1",tenant="acme"} 0
sentinel_agent_revoked{agent_id="revoked-1",tenant="acme"} 1
sentinel_agent_revoked{agent_id="silent-1",tenant="acme"} 0
sentinel_agent_revoked{agent_id="stopped-1",tenant="acme"} 0
sentinel_agent_revoked{agent_id="zombie-1",tenant="acme"} 0
# HELP sentinel_agent_stopped 1 after the agent sent its shutdown signal, else 0.
# TYPE sentinel_agent_stopped gauge
sentinel_agent_stopped{agent_id="active-1",tenant="acme"} 0
sentinel_agent_stopped{agent_id="revoked-1",tenant="acme"} 0
sentinel_agent_stopped{agent_id="silent-1",tenant="acme"} 0
sentinel_agent_stopped{agent_id="stopped-1",tenant="acme"} 1
sentinel_agent_stopped{agent_id="zombie-1",tenant="acme"} 0
# HELP sentinel_agent_uptime_seconds Agent-reported uptime in seconds.
# TYPE sentinel_agent_uptime_seconds gauge
sentinel_agent_uptime_seconds{agent_id="active-1",tenant="acme"} 3600
sentinel_agent_uptime_seconds{agent_id="silent-1",tenant="acme"} 12.5
# HELP sentinel_agents Number of agents per tenant and state.
# TYPE sentinel_agents gauge
sentinel_agents{state="ACTIVE",tenant="acme"} 1
sentinel_agents{state="SILENT",tenant="acme"} 1
sentinel_agents{state="ZOMBIE",tenant="acme"} 1
sentinel_agents{state="STOPPED",tenant="acme"} 1
sentinel_agents{state="REVOKED",tenant="acme"} 1
sentinel_agents{state="ACTIVE",tenant="globex"} 0
sentinel_agents{state="SILENT",tenant="globex"} 0
sentinel_agents{state="ZOMBIE",tenant="globex"} 0
sentinel_agents{state="STOPPED",tenant="globex"} 0
sentinel_agents{state="REVOKED",tenant="globex"} 0
`

func TestCollectFiveStates(t *testing.T) {
	clock := &fakeClock{t: epoch}
	c := newTestCollector(fiveStates(t), clock, "acme", "globex")
	require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(fiveStatesText)))
}

// TestCollectStateBoundaries checks sentinel_agents as an agent's age crosses
// silent_after and zombie_after, to the nanosecond.
func TestCollectStateBoundaries(t *testing.T) {
	s := heartbeat.NewStore(10, nil)
	_, err := s.Beat(&heartbeat.BeatRequest{Key: fleet.Key{Tenant: "acme", AgentID: "a"}, Time: epoch, Interval: time.Minute}, thresholds)
	require.NoError(t, err)
	clock := &fakeClock{}
	c := newTestCollector(s, clock)
	for _, tc := range []struct {
		age  time.Duration
		want fleet.State
	}{
		{0, fleet.StateActive},
		{5*time.Minute - 1, fleet.StateActive},
		{5 * time.Minute, fleet.StateSilent},
		{15*time.Minute - 1, fleet.StateSilent},
		{15 * time.Minute, fleet.StateZombie},
		{24 * time.Hour, fleet.StateZombie},
	} {
		t.Run(tc.age.String(), func(t *testing.T) {
			clock.t = epoch.Add(tc.age)
			var want strings.Builder
			want.WriteString("# HELP sentinel_agents Number of agents per tenant and state.\n# TYPE sentinel_agents gauge\n")
			for _, st := range fleet.States {
				v := "0"
				if st == tc.want {
					v = "1"
				}
				want.WriteString(`sentinel_agents{state="` + st.String() + `",tenant="acme"} ` + v + "\n")
			}
			require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(want.String()), "sentinel_agents"))
		})
	}
}

func TestCollectAndLint(t *testing.T) {
	clock := &fakeClock{t: epoch}
	c := newTestCollector(fiveStates(t), clock, "acme", "globex")
	problems, err := testutil.CollectAndLint(c)
	require.NoError(t, err)
	require.Empty(t, problems)
}

func TestPedanticRegistry(t *testing.T) {
	clock := &fakeClock{t: epoch}
	s := fiveStates(t)
	fillFleet(t, s, 50) // and a few more in every state, three tenants
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(newTestCollector(s, clock, "acme", "umbrella")))
	mfs, err := reg.Gather()
	require.NoError(t, err)
	require.Len(t, mfs, numFamilies)
}

func TestEmptyStore(t *testing.T) {
	clock := &fakeClock{t: epoch}
	c := newTestCollector(heartbeat.NewStore(10, nil), clock, "acme")
	require.Equal(t, 5, testutil.CollectAndCount(c))
	require.Equal(t, 5, testutil.CollectAndCount(c, "sentinel_agents"))
	c = newTestCollector(heartbeat.NewStore(10, nil), clock)
	require.Equal(t, 0, testutil.CollectAndCount(c))
}

// TestForgottenAgentDisappears: the series of a silent or zombie agent stay
// (a vanished series would resolve its alert); a forgotten agent's go.
func TestForgottenAgentDisappears(t *testing.T) {
	clock := &fakeClock{t: epoch}
	s := fiveStates(t)
	c := newTestCollector(s, clock, "acme")
	perAgent := []string{
		"sentinel_agent_last_heartbeat_timestamp_seconds", "sentinel_agent_heartbeat_interval_seconds",
		"sentinel_agent_lease_expiry_timestamp_seconds", "sentinel_agent_stopped", "sentinel_agent_revoked", "sentinel_agent_paused",
		"sentinel_agent_info",
	}
	count := func(agentID string) int {
		reg := prometheus.NewPedanticRegistry()
		require.NoError(t, reg.Register(c))
		mfs, err := reg.Gather()
		require.NoError(t, err)
		n := 0
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				for _, lp := range m.GetLabel() {
					if lp.GetName() == "agent_id" && lp.GetValue() == agentID {
						n++
					}
				}
			}
		}
		return n
	}
	require.Equal(t, len(perAgent)+1, count("silent-1")) // + uptime
	require.Equal(t, len(perAgent), count("zombie-1"))

	// A day later both are zombies, still exposed.
	clock.t = epoch.Add(24 * time.Hour)
	require.Equal(t, len(perAgent)+1, count("silent-1"))
	require.Equal(t, len(perAgent), count("zombie-1"))

	require.True(t, s.Delete(fleet.Key{Tenant: "acme", AgentID: "zombie-1"}))
	require.Zero(t, count("zombie-1"))
	require.Equal(t, len(perAgent)+1, count("silent-1"))
	require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(`
# HELP sentinel_agents Number of agents per tenant and state.
# TYPE sentinel_agents gauge
sentinel_agents{state="ACTIVE",tenant="acme"} 0
sentinel_agents{state="SILENT",tenant="acme"} 0
sentinel_agents{state="ZOMBIE",tenant="acme"} 2
sentinel_agents{state="STOPPED",tenant="acme"} 1
sentinel_agents{state="REVOKED",tenant="acme"} 1
`), "sentinel_agents"))
}

// TestUnconfiguredTenant: agents of a tenant removed from the config are
// still counted (they stay until forgotten), with all five states.
func TestUnconfiguredTenant(t *testing.T) {
	clock := &fakeClock{t: epoch}
	s := heartbeat.NewStore(10, nil)
	_, err := s.Beat(&heartbeat.BeatRequest{Key: fleet.Key{Tenant: "old", AgentID: "a"}, Time: epoch, Interval: time.Minute}, thresholds)
	require.NoError(t, err)
	c := newTestCollector(s, clock, "acme")
	require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(`
# HELP sentinel_agents Number of agents per tenant and state.
# TYPE sentinel_agents gauge
sentinel_agents{state="ACTIVE",tenant="acme"} 0
sentinel_agents{state="SILENT",tenant="acme"} 0
sentinel_agents{state="ZOMBIE",tenant="acme"} 0
sentinel_agents{state="STOPPED",tenant="acme"} 0
sentinel_agents{state="REVOKED",tenant="acme"} 0
sentinel_agents{state="ACTIVE",tenant="old"} 1
sentinel_agents{state="SILENT",tenant="old"} 0
sentinel_agents{state="ZOMBIE",tenant="old"} 0
sentinel_agents{state="STOPPED",tenant="old"} 0
sentinel_agents{state="REVOKED",tenant="old"} 0
`), "sentinel_agents"))
}

// TestThresholdsReload: the lease and the states follow the current config.
func TestThresholdsReload(t *testing.T) {
	clock := &fakeClock{t: epoch.Add(3 * time.Minute)}
	s := heartbeat.NewStore(10, nil)
	_, err := s.Beat(&heartbeat.BeatRequest{Key: fleet.Key{Tenant: "acme", AgentID: "a"}, Time: epoch, Interval: time.Minute}, thresholds)
	require.NoError(t, err)
	th := thresholds
	c := New(s, Options{Thresholds: func() fleet.Thresholds { return th }, Now: clock.Now})
	th = fleet.Thresholds{SilentAfter: 2, ZombieAfter: 3}
	require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(`
# HELP sentinel_agent_lease_expiry_timestamp_seconds Unix time at which the agent's lease ends: last heartbeat + interval * silent_after.
# TYPE sentinel_agent_lease_expiry_timestamp_seconds gauge
sentinel_agent_lease_expiry_timestamp_seconds{agent_id="a",tenant="acme"} 1.73568972e+09
# HELP sentinel_agents Number of agents per tenant and state.
# TYPE sentinel_agents gauge
sentinel_agents{state="ACTIVE",tenant="acme"} 0
sentinel_agents{state="SILENT",tenant="acme"} 0
sentinel_agents{state="ZOMBIE",tenant="acme"} 1
sentinel_agents{state="STOPPED",tenant="acme"} 0
sentinel_agents{state="REVOKED",tenant="acme"} 0
`), "sentinel_agent_lease_expiry_timestamp_seconds", "sentinel_agents"))
}
