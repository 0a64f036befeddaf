package e2e

import (
	"fmt"
	"net/http"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// agentAlertLabels are the exact labels of an agent liveness alert (SPEC 5):
// no instance or job, which would split the alert per sentinel replica.
func agentAlertLabels(name, agentID, severity, state string) map[string]string {
	return map[string]string{
		"alertname": name, "tenant": tenant, "agent_id": agentID,
		"severity": severity, "state": state,
	}
}

// TestPipeline drives the whole chain: heartbeats into the real sentinel,
// scraped by the real Prometheus evaluating alerts/sentinel.rules.yml as is,
// notified through the real Alertmanager to a fake customer webhook.
func TestPipeline(t *testing.T) {
	start := time.Now()
	s := startStack(t)
	t.Logf("stack up in %s", time.Since(start).Round(time.Millisecond))

	// The agent scenarios run side by side on the shared stack, each with
	// its own agent; the slowest (ZOMBIE, ~20 s) sets the pace.
	t.Run("agents", func(t *testing.T) {
		t.Run("healthy agent stays quiet", func(t *testing.T) {
			t.Parallel()
			testHealthyAgent(t, s)
		})
		t.Run("silent then zombie then recovered", func(t *testing.T) {
			t.Parallel()
			testSilentZombieRecovered(t, s)
		})
		t.Run("shutdown agent raises no alert", func(t *testing.T) {
			t.Parallel()
			testShutdownAgent(t, s)
		})
		t.Run("revoked agent raises no alert", func(t *testing.T) {
			t.Parallel()
			testRevokedAgent(t, s)
		})
		t.Run("kubernetes agent info", func(t *testing.T) {
			t.Parallel()
			testKubernetesInfo(t, s)
		})
	})

	t.Run("rules evaluate without errors", func(t *testing.T) {
		groups := s.rules(t)
		names := map[string]bool{}
		for _, g := range groups {
			for _, r := range g.Rules {
				names[r.Name] = true
				require.Equal(t, "ok", r.Health, "rule %s of group %s: %s", r.Name, g.Name, r.LastError)
			}
		}
		for _, n := range []string{"AgentSilent", "AgentZombie", "SentinelDown", "Watchdog", "sentinel:agent_missed_heartbeats"} {
			require.True(t, names[n], "rule %s is not loaded", n)
		}
	})

	// Last: it stops sentinel.
	t.Run("sentinel down", func(t *testing.T) {
		testSentinelDown(t, s)
	})
	t.Logf("pipeline test took %s", time.Since(start).Round(time.Millisecond))
}

// A 1s agent beating every second must never be counted as missing beats,
// although Prometheus scrapes on its own schedule.
func testHealthyAgent(t *testing.T, s *stack) {
	const id = "healthy-agent"
	first := s.mustBeat(t, id, `{"status":"healthy","heartbeat_interval_seconds":1}`)
	require.True(t, first.Registered, first.raw)
	require.Equal(t, "ACTIVE", first.State, first.raw)
	require.Equal(t, 1.0, first.HeartbeatIntervalSeconds, first.raw)

	stop := s.beatEvery(id, `{"status":"healthy","heartbeat_interval_seconds":1,"uptime_seconds":5}`, time.Second)
	defer stop()
	waitFor(t, 15*time.Second, "Prometheus to count the healthy agent's missed beats", func() bool {
		_, ok := s.missed(t, id)
		return ok
	})
	observed := time.Now()
	maxMissed := 0.0
	for time.Since(observed) < 8*time.Second {
		require.Empty(t, s.agentAlerts(t, id), "a healthy agent raised an alert")
		if m, ok := s.missed(t, id); ok {
			maxMissed = max(maxMissed, m)
		}
		time.Sleep(poll)
	}
	n, err := stop()
	require.NoError(t, err)
	require.GreaterOrEqual(t, n, 8, "the agent beat too rarely to prove anything")
	require.Less(t, maxMissed, 5.0, "a healthy agent was counted as missing beats")
	require.Empty(t, s.hook.alerts("", id), "the webhook was notified about a healthy agent")
	t.Logf("healthy agent: %d beats, at most %.0f missed as counted by the rules", n, maxMissed)

	a := s.mustBeat(t, id, `{"status":"shutdown","exit_code":0}`)
	require.Equal(t, "STOPPED", a.State, a.raw)
}

// A 1s agent that stops beating: AgentSilent after 5 missed beats, then
// AgentZombie after 15 (AgentSilent resolving in the same evaluation), each
// notified to the webhook; a heartbeat answers RECOVERED and resolves it.
func testSilentZombieRecovered(t *testing.T, s *stack) {
	const id = "silent-agent"
	const body = `{"status":"healthy","heartbeat_interval_seconds":1}`
	first := s.mustBeat(t, id, body)
	require.True(t, first.Registered, first.raw)
	lastBeat := time.Now() // before sentinel stamps the last beat
	a := s.mustBeat(t, id, body)
	require.Equal(t, "ACTIVE", a.State, a.raw)
	// SPEC 2.1: the lease ends exactly when the agent turns SILENT.
	require.WithinDuration(t, lastBeat.Add(5*time.Second), a.LeaseExpiresAt, time.Second, a.raw)
	waitFor(t, 10*time.Second, "Prometheus to see the agent", func() bool {
		m, ok := s.missed(t, id)
		return ok && m < 5
	})

	// SILENT.
	var silent promAlert
	waitFor(t, 15*time.Second, "AgentSilent to fire in Prometheus", func() bool {
		var ok bool
		silent, ok = s.alert(t, "AgentSilent", id)
		if ok {
			_, zombie := s.alert(t, "AgentZombie", id)
			require.False(t, zombie, "AgentZombie fired together with AgentSilent")
		}
		return ok
	})
	silentAfter := silent.ActiveAt.Sub(lastBeat)
	require.Equal(t, "firing", silent.State, "AgentSilent has no for: and fires at once")
	require.Equal(t, agentAlertLabels("AgentSilent", id, "warning", "SILENT"), silent.Labels)
	require.GreaterOrEqual(t, silentAfter, 5*time.Second, "AgentSilent fired before 5 missed beats")
	requireMissedValue(t, silent, 5, 15)
	requireAnnotations(t, silent, id)

	waitFor(t, 10*time.Second, "the webhook to receive AgentSilent", func() bool {
		return s.hook.has("AgentSilent", id, "firing")
	})
	got := s.hook.alerts("AgentSilent", id)[0]
	require.Equal(t, agentAlertLabels("AgentSilent", id, "warning", "SILENT"), got.Labels)

	// ZOMBIE.
	var zombie promAlert
	waitFor(t, 25*time.Second, "AgentZombie to fire in Prometheus and AgentSilent to stop", func() bool {
		var ok bool
		zombie, ok = s.alert(t, "AgentZombie", id)
		if !ok {
			return false
		}
		_, stillSilent := s.alert(t, "AgentSilent", id)
		return !stillSilent
	})
	zombieAfter := zombie.ActiveAt.Sub(lastBeat)
	require.Equal(t, "firing", zombie.State)
	require.Equal(t, agentAlertLabels("AgentZombie", id, "critical", "ZOMBIE"), zombie.Labels)
	require.GreaterOrEqual(t, zombieAfter, 15*time.Second, "AgentZombie fired before 15 missed beats")
	requireMissedValue(t, zombie, 15, 1e9)
	requireAnnotations(t, zombie, id)
	waitFor(t, 10*time.Second, "the webhook to receive AgentZombie", func() bool {
		return s.hook.has("AgentZombie", id, "firing")
	})
	got = s.hook.alerts("AgentZombie", id)[0]
	require.Equal(t, agentAlertLabels("AgentZombie", id, "critical", "ZOMBIE"), got.Labels)
	t.Logf("AgentSilent active %s and AgentZombie %s after the last beat", silentAfter.Round(time.Millisecond), zombieAfter.Round(time.Millisecond))

	// RECOVERED.
	a = s.mustBeat(t, id, body)
	require.Equal(t, "RECOVERED", a.State, a.raw)
	require.NotNil(t, a.LeaseRenewed, a.raw)
	require.True(t, *a.LeaseRenewed, a.raw)
	recovered := time.Now()
	stop := s.beatEvery(id, body, time.Second)
	defer stop()
	waitFor(t, 10*time.Second, "AgentZombie to resolve in Prometheus", func() bool {
		return len(s.agentAlerts(t, id)) == 0
	})
	waitFor(t, 10*time.Second, "the webhook to receive AgentZombie resolved", func() bool {
		return s.hook.has("AgentZombie", id, "resolved")
	})
	t.Logf("AgentZombie resolved at the webhook %s after the recovering beat", time.Since(recovered).Round(time.Millisecond))
	// Straight from ZOMBIE to ACTIVE: AgentSilent must not fire on the way.
	require.Empty(t, s.agentAlerts(t, id))
	n, err := stop()
	require.NoError(t, err)
	require.Positive(t, n)

	a = s.mustBeat(t, id, `{"status":"shutdown","exit_code":0}`)
	require.Equal(t, "STOPPED", a.State, a.raw)
}

// An agent that says goodbye raises no alert however long it stays quiet.
func testShutdownAgent(t *testing.T, s *stack) {
	const id = "stopped-agent"
	a := s.mustBeat(t, id, `{"status":"healthy","heartbeat_interval_seconds":1}`)
	require.True(t, a.Registered, a.raw)
	// The interval is sent again: without it the default 60s would apply
	// (SPEC 2.1) and 15 missed beats would take 15 minutes.
	a = s.mustBeat(t, id, `{"status":"shutdown","exit_code":0,"heartbeat_interval_seconds":1}`)
	require.Equal(t, "STOPPED", a.State, a.raw)
	require.NotNil(t, a.LeaseRenewed, a.raw)
	require.False(t, *a.LeaseRenewed, a.raw)
	require.JSONEq(t, `{"installation_id":"stopped-agent","lease_renewed":false,"state":"STOPPED"}`, a.raw)

	stayQuiet(t, s, id, "sentinel_agent_stopped")
}

// An agent revoked by the kill switch raises no alert when it goes quiet.
func testRevokedAgent(t *testing.T, s *stack) {
	const id = "revoked-agent"
	a := s.mustBeat(t, id, `{"status":"healthy","heartbeat_interval_seconds":1}`)
	require.True(t, a.Registered, a.raw)

	status, raw, err := s.post(s.sentinelURL+"/api/v1/installations/"+id+"/revoke", adminToken,
		`{"reason":"e2e: revoked by admin","shutdown_timeout_ms":1500}`)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, status, raw)
	require.Contains(t, raw, `"revoked":true`)

	// The agent learns it at its next heartbeat, then goes quiet.
	a = s.mustBeat(t, id, `{"status":"healthy","heartbeat_interval_seconds":1}`)
	require.True(t, a.Revoked, a.raw)
	require.NotNil(t, a.LeaseRenewed, a.raw)
	require.False(t, *a.LeaseRenewed, a.raw)
	require.Equal(t, "e2e: revoked by admin", a.Reason, a.raw)
	require.Equal(t, int64(1500), a.ShutdownTimeoutMs, a.raw)

	stayQuiet(t, s, id, "sentinel_agent_revoked")
}

// stayQuiet waits until Prometheus sees flag = 1 for the agent and counts at
// least 15 missed beats, past the ZOMBIE threshold, and for two evaluations
// more, checking on every poll that the agent has no alert in Prometheus
// and none reached the webhook.
func stayQuiet(t *testing.T, s *stack, id, flag string) {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("Prometheus to see %s = 1", flag), func() bool {
		r := s.query(t, fmt.Sprintf(`%s{tenant=%q,agent_id=%q} == 1`, flag, tenant, id))
		return len(r) == 1
	})
	var pastZombie time.Time
	maxMissed := 0.0
	waitFor(t, 30*time.Second, "the quiet agent to be counted 15 missed beats behind", func() bool {
		require.Empty(t, s.agentAlerts(t, id), "an agent with %s = 1 raised an alert", flag)
		require.Empty(t, s.hook.alerts("", id), "the webhook was notified about an agent with %s = 1", flag)
		if m, ok := s.missed(t, id); ok {
			maxMissed = max(maxMissed, m)
		}
		if maxMissed >= 15 && pastZombie.IsZero() {
			pastZombie = time.Now()
		}
		return !pastZombie.IsZero() && time.Since(pastZombie) > 2500*time.Millisecond
	})
	t.Logf("%s: quiet at %.0f missed beats", id, maxMissed)
}

// Agent metadata reaches Prometheus as sentinel_agent_info labels.
func testKubernetesInfo(t *testing.T, s *stack) {
	const id = "k8s-agent"
	// A long interval keeps it ACTIVE for the rest of the test.
	a := s.mustBeat(t, id, `{
		"status": "healthy", "heartbeat_interval_seconds": 3600, "version": "1.4.2", "uptime_seconds": 42,
		"platform": {"type": "kubernetes", "pod_name": "agent-7d9f8-abcde", "namespace": "agents",
		             "node": "node-3", "container_id": "c0ffee", "image": "registry.example/agent:1.4.2",
		             "hostname": "agent-7d9f8-abcde", "os": "linux", "pid": 1},
		"metrics": {"requests_handled": 1500, "errors": 2, "avg_latency_ms": 145}}`)
	require.True(t, a.Registered, a.raw)
	require.Equal(t, 3600.0, a.HeartbeatIntervalSeconds, a.raw)

	var info []promSample
	waitFor(t, 10*time.Second, "sentinel_agent_info of the kubernetes agent in Prometheus", func() bool {
		info = s.query(t, fmt.Sprintf(`sentinel_agent_info{tenant=%q,agent_id=%q}`, tenant, id))
		return len(info) > 0
	})
	require.Len(t, info, 1)
	require.Equal(t, 1.0, info[0].Value)
	m := info[0].Metric
	for label, want := range map[string]string{
		"__name__": "sentinel_agent_info", "job": "sentinel", "instance": s.sentinelAddr,
		"tenant": tenant, "agent_id": id, "platform": "kubernetes", "status": "healthy",
		"version": "1.4.2", "pod": "agent-7d9f8-abcde", "namespace": "agents", "node": "node-3",
		"container_id": "c0ffee", "image": "registry.example/agent:1.4.2", "hostname": "agent-7d9f8-abcde",
	} {
		require.Equal(t, want, m[label], "label %s of %v", label, m)
	}

	for q, want := range map[string]float64{
		"sentinel_agent_heartbeat_interval_seconds": 3600,
		"sentinel_agent_requests_handled_total":     1500,
		"sentinel_agent_errors_total":               2,
		"sentinel_agent_latency_average_seconds":    0.145,
		"sentinel_agent_uptime_seconds":             42,
		"sentinel_agent_stopped":                    0,
		"sentinel_agent_revoked":                    0,
	} {
		r := s.query(t, fmt.Sprintf(`%s{tenant=%q,agent_id=%q}`, q, tenant, id))
		require.Len(t, r, 1, q)
		require.InDelta(t, want, r[0].Value, 1e-9, q)
	}
	require.Empty(t, s.agentAlerts(t, id))
}

// SIGTERM stops sentinel gracefully; Prometheus then sees up == 0 and
// SentinelDown becomes pending (firing only after its for:, usually 1m, too
// long for this test: it is awaited only when the rule's for: is short).
func testSentinelDown(t *testing.T, s *stack) {
	var forSeconds float64 = -1
	for _, g := range s.rules(t) {
		for _, r := range g.Rules {
			if r.Name == "SentinelDown" {
				forSeconds = r.Duration
			}
		}
	}
	require.GreaterOrEqual(t, forSeconds, 0.0, "SentinelDown is not loaded")
	_, active := s.alert(t, "SentinelDown", "")
	require.False(t, active, "SentinelDown is active while sentinel runs")

	require.NoError(t, s.sentinel.cmd.Process.Signal(syscall.SIGTERM))
	stopped := time.Now()
	select {
	case <-s.sentinel.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("sentinel did not stop within 30s of SIGTERM\n%s", s.sentinel.tail(30))
	}
	require.NoError(t, s.sentinel.err, "sentinel's exit after SIGTERM\n%s", s.sentinel.tail(30))
	require.NotContains(t, s.sentinel.output(), "DATA RACE")
	t.Logf("sentinel stopped %s after SIGTERM", time.Since(stopped).Round(time.Millisecond))

	waitFor(t, 10*time.Second, `up{job="sentinel"} == 0`, func() bool {
		r := s.query(t, `up{job="sentinel"}`)
		return len(r) == 1 && r[0].Value == 0
	})
	want := map[string]string{
		"alertname": "SentinelDown", "severity": "critical", "job": "sentinel", "instance": s.sentinelAddr,
	}
	var down promAlert
	waitFor(t, 10*time.Second, "SentinelDown to be active in Prometheus", func() bool {
		var ok bool
		down, ok = s.alert(t, "SentinelDown", "")
		return ok
	})
	require.Equal(t, want, down.Labels)
	require.Contains(t, down.Annotations["description"], "Sentinel "+s.sentinelAddr+" has been")
	if forSeconds > 20 {
		require.Equal(t, "pending", down.State, "SentinelDown has for: %gs", forSeconds)
		t.Logf("SentinelDown pending %s after SIGTERM (for: %gs, firing not awaited)", down.ActiveAt.Sub(stopped).Round(time.Millisecond), forSeconds)
		return
	}
	waitFor(t, time.Duration(forSeconds+10)*time.Second, "SentinelDown to fire", func() bool {
		down, _ = s.alert(t, "SentinelDown", "")
		return down.State == "firing"
	})
	waitFor(t, 10*time.Second, "the webhook to receive SentinelDown", func() bool {
		return s.hook.has("SentinelDown", "", "firing")
	})
}

// requireMissedValue checks the alert's value, the missed beat count.
func requireMissedValue(t *testing.T, a promAlert, lo, hi float64) {
	t.Helper()
	v, err := strconv.ParseFloat(a.Value, 64)
	require.NoError(t, err, a.Value)
	require.GreaterOrEqual(t, v, lo, "%s value", a.Labels["alertname"])
	require.Less(t, v, hi, "%s value", a.Labels["alertname"])
}

// requireAnnotations checks that the templates rendered with real data,
// including the last heartbeat looked up with the query function.
func requireAnnotations(t *testing.T, a promAlert, id string) {
	t.Helper()
	require.NotEmpty(t, a.Annotations["summary"])
	require.NotEmpty(t, a.Annotations["runbook_url"])
	d := a.Annotations["description"]
	require.Contains(t, d, "Agent "+id+" of tenant "+tenant+" has missed ")
	require.NotContains(t, d, "an unknown time", "the description could not find the last heartbeat")
	require.NotContains(t, d, "<no value>")
}
