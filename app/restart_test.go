package app_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/heartbeat"
)

func acme(id string) fleet.Key   { return fleet.Key{Tenant: "acme", AgentID: id} }
func globex(id string) fleet.Key { return fleet.Key{Tenant: "globex", AgentID: id} }

// refreshed returns the refreshed_token of a heartbeat answer and its version.
func refreshed(t *testing.T, m map[string]any) (string, float64) {
	t.Helper()
	tok, ok := m["refreshed_token"].(map[string]any)
	require.True(t, ok, "no refreshed_token in %v", m)
	return tok["runtime_token"].(string), tok["token_version"].(float64)
}

// A graceful restart (Close, then New on the same storage) keeps every
// agent's hot state exactly: last heartbeat to the nanosecond, platform,
// reported metrics, token versions; states derived from it do not move.
func TestGracefulRestartKeepsHotState(t *testing.T) {
	e := newEnv(t, baseConfig)
	s := e.start()

	tokA1 := s.register("a1", acmeKey, map[string]any{
		"status": "healthy", "version": "1.4.2", "uptime_seconds": 3600, "heartbeat_interval_seconds": 10,
		"platform": map[string]any{
			"type": "docker", "container_id": "c0ffee", "image": "acme/agent:1.4.2",
			"hostname": "box-1", "os": "linux", "pid": 4242,
		},
		"metrics": map[string]any{"requests_handled": 1500, "errors": 2, "avg_latency_ms": 145},
	})
	tokA2 := s.register("a2", acmeKey, map[string]any{
		"platform": map[string]any{"type": "kubernetes", "pod_name": "agent-7d9f", "namespace": "agents", "node": "node-3", "region": "eu-west-1"},
	})
	tokG1 := s.register("g1", globexKey, map[string]any{"heartbeat_interval_seconds": 30, "platform": map[string]any{"type": "lambda", "function_name": "fn"}})
	tokDone := s.register("done", acmeKey, nil)

	// Half an hour later the tokens expire within token_refresh_before: the
	// next beats refresh them, so a1, a2 and g1 reach token version 2.
	e.clock.Advance(31*time.Minute + 7)
	newA1, v := refreshed(t, s.beat("a1", tokA1, map[string]any{
		"metrics": map[string]any{"requests_handled": 1717, "errors": 3, "avg_latency_ms": 99.5},
	}))
	require.Equal(t, 2.0, v)
	_, v = refreshed(t, s.beat("a2", tokA2, nil))
	require.Equal(t, 2.0, v)
	newG1, v := refreshed(t, s.beat("g1", tokG1, map[string]any{"heartbeat_interval_seconds": 30}))
	require.Equal(t, 2.0, v)
	stopped := s.beat("done", tokDone, map[string]any{"status": "shutdown", "exit_code": 3})
	require.Equal(t, "STOPPED", stopped["state"])

	// quiet beats once and then misses six beats of 10 s: SILENT.
	tokQuiet := s.register("quiet", acmeKey, map[string]any{"heartbeat_interval_seconds": 10, "status": "starting"})
	e.clock.Advance(65*time.Second + 3)
	s.beat("a1", newA1, map[string]any{"status": "degraded", "heartbeat_interval_seconds": 10})
	s.beat("g1", newG1, map[string]any{"heartbeat_interval_seconds": 30})
	e.clock.Advance(11) // odd nanoseconds everywhere

	ids := []fleet.Key{acme("a1"), acme("a2"), acme("done"), acme("quiet"), globex("g1")}
	type observed struct {
		agents  map[fleet.Key]heartbeat.Agent
		details map[string]map[string]any
		series  []string
		fleet   []string
	}
	observe := func(s *running) observed {
		t.Helper()
		o := observed{agents: map[fleet.Key]heartbeat.Agent{}, details: map[string]map[string]any{}}
		for _, k := range ids {
			a, ok := s.app.Store().Get(k)
			require.True(t, ok, "agent %s missing", k)
			o.agents[k] = a
			if k.Tenant == "acme" {
				r := s.installation(k.AgentID)
				require.Equal(t, http.StatusOK, r.status, "%s", r.body)
				o.details[k.AgentID] = r.json(t)
			}
		}
		text := s.metrics()
		o.series = seriesWithPrefix(text, "sentinel_agent_")
		o.fleet = seriesWithPrefix(text, "sentinel_agents{")
		return o
	}
	before := observe(s)
	require.Equal(t, 5, s.app.Store().Len())
	require.Equal(t, "SILENT", before.details["quiet"]["state"])
	require.Equal(t, "ACTIVE", before.details["a1"]["state"])
	require.Equal(t, "STOPPED", before.details["done"]["state"])
	// Seven series per agent, plus uptime, requests, errors and latency of a1,
	// the only one that reported them.
	require.Len(t, before.series, 5*7+4)

	s.close()
	s2 := e.start()
	after := observe(s2)

	require.Equal(t, 5, s2.app.Store().Len())
	for _, k := range ids {
		b, a := before.agents[k], after.agents[k]
		require.Equal(t, b, a, "agent %s", k)
		require.Equal(t, b.LastHeartbeat.UnixNano(), a.LastHeartbeat.UnixNano(), "agent %s last heartbeat", k)
	}
	require.Equal(t, before.details, after.details)
	require.Equal(t, before.series, after.series)
	require.Equal(t, before.fleet, after.fleet)

	// Spot checks of the values that carry the liveness alerts.
	text := s2.metrics()
	a1 := after.agents[acme("a1")]
	require.Equal(t, e.clock.Now().Add(-11).UnixNano(), a1.LastHeartbeat.UnixNano())
	requireSample(t, text, `sentinel_agent_last_heartbeat_timestamp_seconds{agent_id="a1",tenant="acme"}`, float64(a1.LastHeartbeat.UnixNano())/1e9)
	requireSample(t, text, `sentinel_agent_requests_handled_total{agent_id="a1",tenant="acme"}`, 1717)
	requireSample(t, text, `sentinel_agent_latency_average_seconds{agent_id="a1",tenant="acme"}`, 0.0995)
	requireSample(t, text, `sentinel_agent_stopped{agent_id="done",tenant="acme"}`, 1)
	requireSample(t, text, `sentinel_agents{state="SILENT",tenant="acme"}`, 2) // quiet and a2
	require.Equal(t, uint32(2), a1.TokenVersion)
	require.Equal(t, uint32(2), after.agents[globex("g1")].TokenVersion)
	require.Equal(t, uint32(1), after.agents[acme("quiet")].TokenVersion)
	require.Equal(t, heartbeat.PlatformDocker, a1.Platform.Type)
	require.Equal(t, "acme/agent:1.4.2", a1.Platform.Image)
	require.Equal(t, int64(4242), a1.Platform.PID)
	require.Equal(t, "1.4.2", a1.Version)
	require.Equal(t, heartbeat.StatusDegraded, a1.Status)
	require.Equal(t, 3600.0, a1.UptimeSeconds)
	require.Equal(t, "node-3", after.agents[acme("a2")].Platform.Node)
	require.Equal(t, 30*time.Second, after.agents[globex("g1")].Interval)
	require.Equal(t, int64(3), after.agents[acme("done")].ExitCode)
	require.Equal(t, "SILENT", after.details["quiet"]["state"])
	require.Equal(t, 6.0, after.details["quiet"]["missed_beats"])
	require.Equal(t, 2.0, after.details["a1"]["token_version"])

	// Runtime tokens issued before the restart still verify: the signing key
	// was persisted. The silent agent comes back ACTIVE, not registered anew.
	m := s2.beat("quiet", tokQuiet, nil)
	require.Equal(t, "ACTIVE", m["state"])
	require.Nil(t, m["registered"])
	m = s2.beat("a1", newA1, nil)
	require.Equal(t, "ACTIVE", m["state"])
	require.Nil(t, m["registered"])
	m = s2.beat("g1", newG1, nil)
	require.Nil(t, m["registered"])
	// The version-1 token of a1 was superseded but is not expired yet.
	m = s2.beat("a1", tokA1, nil)
	require.Nil(t, m["registered"])
	m = s2.beat("done", tokDone, map[string]any{"status": "healthy"})
	require.Equal(t, "ACTIVE", m["state"], "a later heartbeat starts a stopped agent again")
	require.Equal(t, 5, s2.app.Store().Len())
}

// A sentinel that crashed (no Close, so no final snapshot) restarts from its
// last periodic snapshot plus the journal. An agent registered after that
// snapshot is registered again by its next heartbeat, with its runtime token
// still valid, and what the kill switch acknowledged before the crash is in
// force on that heartbeat.
func TestCrashAfterSnapshot(t *testing.T) {
	e := newEnv(t, baseConfig)
	s := e.start()

	tokEarly := s.register("early", acmeKey, map[string]any{"metrics": map[string]any{"requests_handled": 10}})
	tokEarlyRevoked := s.register("early-revoked", acmeKey, nil)
	require.NoError(t, s.app.Snapshot())
	snapshotted, ok := s.app.Store().Get(acme("early"))
	require.True(t, ok)

	e.clock.Advance(time.Second + 1)
	tokLate := s.register("late", acmeKey, nil)
	tokLateRevoked := s.register("late-revoked", acmeKey, nil)
	tokLateCmd := s.register("late-cmd", acmeKey, map[string]any{"heartbeat_interval_seconds": 20})
	s.beat("early", tokEarly, map[string]any{"metrics": map[string]any{"requests_handled": 99}})

	r := s.do(http.MethodPost, "/api/v1/installations/late-revoked/revoke", acmeAdmin,
		map[string]any{"reason": "compromised", "shutdown_timeout_ms": 1234})
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	r = s.do(http.MethodPost, "/api/v1/installations/early-revoked/revoke?tenant=acme", globalAdmin, nil)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	r = s.do(http.MethodPost, "/api/v1/installations/late-cmd/command", acmeAdmin, map[string]any{"command": "pause"})
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	r = s.do(http.MethodPost, "/api/v1/installations/early/command", acmeAdmin, map[string]any{"command": "terminate"})
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)

	// Crash: the process stops serving and never closes; a new one opens the
	// same storage.
	s.server.Close()
	s.app.Crash()
	e.clock.Advance(2 * time.Second)
	s2 := e.start()

	// Only the snapshot's agents are back, with their snapshotted state.
	require.Equal(t, 2, s2.app.Store().Len())
	got, ok := s2.app.Store().Get(acme("early"))
	require.True(t, ok)
	require.Equal(t, snapshotted.LastHeartbeat, got.LastHeartbeat)
	require.Equal(t, 10.0, got.Metrics.RequestsHandled)
	require.Equal(t, fleet.CommandTerminate, got.Command, "journaled command applied to a snapshotted agent")
	er, ok := s2.app.Store().Get(acme("early-revoked"))
	require.True(t, ok)
	require.True(t, er.Revoked, "journaled revocation applied to a snapshotted agent")
	require.Equal(t, http.StatusNotFound, s2.installation("late").status, "not in the store until it beats again (SPEC 9)")

	// The revocation of an agent the snapshot does not know is in force on
	// its first heartbeat, made with the pre-crash runtime token.
	m := s2.beat("late-revoked", tokLateRevoked, map[string]any{"status": "healthy"})
	require.Equal(t, map[string]any{
		"installation_id": "late-revoked", "lease_renewed": false, "revoked": true,
		"reason": "compromised", "shutdown_timeout_ms": 1234.0,
	}, m)
	d := s2.installation("late-revoked").json(t)
	require.Equal(t, "REVOKED", d["state"])
	require.Equal(t, "compromised", d["revocation"].(map[string]any)["reason"])

	m = s2.beat("early-revoked", tokEarlyRevoked, nil)
	require.Equal(t, true, m["revoked"])
	require.Equal(t, "Emergency shutdown initiated by admin", m["reason"])
	require.Equal(t, 5000.0, m["shutdown_timeout_ms"], "bridge.kill_switch.shutdown_timeout default")

	// The pending command of an agent registered after the snapshot is
	// carried by its first heartbeat; the token was not reissued.
	m = s2.beat("late-cmd", tokLateCmd, map[string]any{"heartbeat_interval_seconds": 20})
	require.Equal(t, true, m["registered"])
	require.Equal(t, "pause", m["command"])
	require.Equal(t, "ACTIVE", m["state"])
	require.Nil(t, m["runtime_token"], "a runtime token presented on re-registration stays the agent's credential")
	d = s2.installation("late-cmd").json(t)
	require.Equal(t, "pause", d["pending_command"].(map[string]any)["command"], "pending until the next heartbeat")
	require.Equal(t, 1.0, d["token_version"], "the presented token's version is adopted")
	m = s2.beat("late-cmd", tokLateCmd, nil)
	require.Nil(t, m["command"], "acknowledged by the heartbeat after the one that carried it")
	require.Nil(t, s2.installation("late-cmd").json(t)["pending_command"])

	m = s2.beat("late", tokLate, nil)
	require.Equal(t, true, m["registered"])
	require.Equal(t, "ACTIVE", m["state"])
	require.Nil(t, m["command"])

	m = s2.beat("early", tokEarly, nil)
	require.Nil(t, m["registered"])
	require.Equal(t, "terminate", m["command"])

	require.Equal(t, 5, s2.app.Store().Len())
	// A tenant key also re-registers; it gets a fresh token version.
	e.clock.Advance(time.Second)
	require.Equal(t, http.StatusOK, s2.do(http.MethodDelete, "/api/v1/installations/late", acmeAdmin, nil).status)
	tok := s2.register("late", acmeKey, nil)
	require.NotEqual(t, tokLate, tok)
}
