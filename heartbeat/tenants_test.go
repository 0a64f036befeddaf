package heartbeat_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/heartbeat"
)

// One tenant at its own max_agents is refused with 429, a Retry-After and a
// message naming the tenant's limit; other tenants still register. At the
// global limit the message names the global one.
func TestTenantMaxAgents(t *testing.T) {
	e := newEnv(t, withMaxAgents(4), withAcmeMaxAgents(2))
	e.register("agent-1")
	e.register("agent-2")

	for _, a := range []*answer{
		e.beacon("agent-3", acmeKey, `{"heartbeat_interval_seconds":30}`),
		e.abs("agent-3", acmeKey, `{"heartbeat_interval_seconds":30}`),
		e.event(acmeKey, map[string]any{"event_id": "x", "tenant_id": "acme", "event_type": "agent.heartbeat", "source": "agent-3",
			"payload": map[string]any{"heartbeat_interval_seconds": 30}}),
	} {
		requireError(t, a, http.StatusTooManyRequests, "this tenant's max_agents")
		require.Equal(t, "30", a.header.Get("Retry-After"), "retry at the agent's own pace")
	}
	require.Equal(t, float64(3), e.counter("sentinel_agents_refused_total", map[string]string{"tenant": "acme"}))
	require.Equal(t, 2, e.store.TenantLen("acme"))

	// Another tenant is not held back by acme's limit.
	for _, id := range []string{"gx-1", "gx-2"} {
		require.Equal(t, http.StatusOK, e.beacon(id, globexKey, "").status)
	}
	// Now the global limit (4) is reached: its own message, default interval.
	a := e.beacon("gx-3", globexKey, "")
	requireError(t, a, http.StatusTooManyRequests, "heartbeat.max_agents")
	require.Equal(t, "60", a.header.Get("Retry-After"))

	// Forgetting an acme agent makes room for another acme agent.
	require.Equal(t, http.StatusOK, e.do(request{method: http.MethodDelete, path: "/api/v1/installations/agent-2", token: acmeAdmin}).status)
	require.Equal(t, 1, e.store.TenantLen("acme"))
	e.register("agent-3")
	requireError(t, e.beacon("agent-4", acmeKey, ""), http.StatusTooManyRequests, "this tenant's max_agents")
}

func TestStoreTenantCounts(t *testing.T) {
	s := heartbeat.NewStore(100, nil)
	s.SetTenantLimits(map[string]int{"a": 2, "b": 0})
	beat := func(tenant, id string) error {
		_, err := s.Beat(&heartbeat.BeatRequest{Key: fleet.Key{Tenant: tenant, AgentID: id}, Time: t0, Interval: time.Minute}, thresholds)
		return err
	}
	require.NoError(t, beat("a", "1"))
	require.NoError(t, beat("a", "2"))
	require.NoError(t, beat("a", "2"), "a known agent is never refused")
	require.ErrorIs(t, beat("a", "3"), heartbeat.ErrTenantTooManyAgents)
	for i := range 5 {
		require.NoError(t, beat("b", fmt.Sprint(i)), "0: only the global limit")
	}
	require.Equal(t, 2, s.TenantLen("a"))
	require.Equal(t, 5, s.TenantLen("b"))

	// Restored agents count, but are never refused.
	a, ok := s.Get(fleet.Key{Tenant: "a", AgentID: "1"})
	require.True(t, ok)
	a.AgentID = "restored"
	s.Restore(&a)
	require.Equal(t, 3, s.TenantLen("a"))

	// A removed tenant's limit no longer applies.
	s.SetTenantLimits(map[string]int{"b": 5})
	require.NoError(t, beat("a", "4"))
	require.ErrorIs(t, beat("b", "6"), heartbeat.ErrTenantTooManyAgents)

	// Dropping a tenant deletes its agents and its count.
	require.Equal(t, 4, s.DropTenants(func(tenant string) bool { return tenant != "a" }))
	require.Zero(t, s.TenantLen("a"))
	require.Equal(t, 5, s.Len())
	_, ok = s.Get(fleet.Key{Tenant: "a", AgentID: "1"})
	require.False(t, ok)
}

// One tenant flooding /v1/events with unique ids flushes only its own
// duplicate window: another tenant's replayed agent.shutdown stays a
// duplicate and does not stop its agent.
func TestEventWindowPerTenant(t *testing.T) {
	const window = 500
	e := newEnv(t, withEventWindow(window))
	shutdown := map[string]any{"event_id": "bye-1", "tenant_id": "globex", "event_type": "agent.shutdown", "source": "gx-1"}
	require.Equal(t, false, e.event(globexKey, shutdown).body["duplicate"])
	require.Equal(t, http.StatusOK, e.beacon("gx-1", globexKey, "").status) // running again

	first := map[string]any{"event_id": "flood-0", "tenant_id": "acme", "event_type": "agent.heartbeat", "source": "flood"}
	require.Equal(t, false, e.event(acmeKey, first).body["duplicate"])
	for i := 1; i <= 2*window; i++ {
		a := e.event(acmeKey, map[string]any{"event_id": fmt.Sprint("flood-", i), "tenant_id": "acme", "event_type": "agent.heartbeat", "source": "flood"})
		require.Equal(t, http.StatusOK, a.status, a.raw)
	}
	// acme's own oldest id is forgotten: the flood really did flush a window...
	require.Equal(t, false, e.event(acmeKey, first).body["duplicate"])
	// ...but not globex's: the replay is a duplicate and changes nothing.
	a := e.event(globexKey, shutdown)
	require.Equal(t, true, a.body["duplicate"], a.raw)
	ag, ok := e.agent("globex", "gx-1")
	require.True(t, ok)
	require.False(t, ag.Stopped, "a replayed shutdown must not stop the agent")
}
