package killswitch

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/heartbeat"
	"github.com/agentsentinel/sentinel/ledger"
)

func adminRevocation(reason string, at time.Time) fleet.Revocation {
	return fleet.Revocation{Reason: reason, ShutdownTimeout: 5 * time.Second, RevokedAt: at, Source: "admin"}
}

func TestControlRevokeIdempotent(t *testing.T) {
	e := newEnv(t)
	e.beat("acme", "a1")
	k := key("acme", "a1")

	first := adminRevocation("first", t0)
	got, changed, err := e.control.Revoke(ctx, k, first)
	require.NoError(t, err)
	require.True(t, changed)
	require.Equal(t, first, got)
	ag, _ := e.agent("acme", "a1")
	require.True(t, ag.Revoked)

	// A second revoke keeps the first revocation and commits nothing.
	before, err := e.ledger.Load(ctx)
	require.NoError(t, err)
	got, changed, err = e.control.Revoke(ctx, k, adminRevocation("second", t0.Add(time.Minute)))
	require.NoError(t, err)
	require.False(t, changed)
	require.Equal(t, first, got)
	rev, ok := e.control.Revocation(k)
	require.True(t, ok)
	require.Equal(t, first, rev)
	after, err := e.ledger.Load(ctx)
	require.NoError(t, err)
	require.Equal(t, before.Revision, after.Revision)

	require.Equal(t, float64(1), testutil.ToFloat64(e.control.revocationsTotal.WithLabelValues("admin")))
	require.Zero(t, testutil.ToFloat64(e.control.revocationsTotal.WithLabelValues("alert")))

	// Revocations by an alert are counted apart.
	e.beat("acme", "a2")
	_, _, err = e.control.Revoke(ctx, key("acme", "a2"), fleet.Revocation{Reason: "zombie", RevokedAt: t0, Source: "alert:AgentZombie"})
	require.NoError(t, err)
	require.Equal(t, float64(1), e.counter("sentinel_revocations_total", map[string]string{"source": "alert"}))
	require.Equal(t, float64(1), e.counter("sentinel_revocations_total", map[string]string{"source": "admin"}))
}

func TestControlReinstate(t *testing.T) {
	e := newEnv(t)
	e.beat("acme", "a1")
	k := key("acme", "a1")

	ok, err := e.control.Reinstate(ctx, k)
	require.NoError(t, err)
	require.False(t, ok, "not revoked")

	_, _, err = e.control.Revoke(ctx, k, adminRevocation("r", t0))
	require.NoError(t, err)
	ok, err = e.control.Reinstate(ctx, k)
	require.NoError(t, err)
	require.True(t, ok)
	_, revoked := e.control.Revocation(k)
	require.False(t, revoked)
	ag, _ := e.agent("acme", "a1")
	require.False(t, ag.Revoked)

	ok, err = e.control.Reinstate(ctx, k)
	require.NoError(t, err)
	require.False(t, ok)

	// Revoked again after a reinstatement, with the new reason.
	_, changed, err := e.control.Revoke(ctx, k, adminRevocation("again", t0.Add(time.Hour)))
	require.NoError(t, err)
	require.True(t, changed)
	rev, _ := e.control.Revocation(k)
	require.Equal(t, "again", rev.Reason)
}

func TestControlCommand(t *testing.T) {
	e := newEnv(t)
	e.beat("acme", "a1")
	k := key("acme", "a1")

	pc1, err := e.control.Command(ctx, k, fleet.CommandPause, t0)
	require.NoError(t, err)
	require.Equal(t, PendingCommand{Command: fleet.CommandPause, Seq: pc1.Seq, IssuedAt: t0}, pc1)
	require.NotZero(t, pc1.Seq)

	// A newer command replaces the pending one, with a newer sequence.
	pc2, err := e.control.Command(ctx, k, fleet.CommandTerminate, t0.Add(time.Second))
	require.NoError(t, err)
	require.Greater(t, pc2.Seq, pc1.Seq)
	got, ok := e.control.PendingCommand(k)
	require.True(t, ok)
	require.Equal(t, pc2, got)
	ag, _ := e.agent("acme", "a1")
	require.Equal(t, fleet.CommandTerminate, ag.Command)

	// An acknowledgement of the replaced command does not remove the new one.
	e.control.CommandAcknowledged(k, pc1.Seq)
	e.settle()
	got, ok = e.control.PendingCommand(k)
	require.True(t, ok)
	require.Equal(t, pc2, got)

	e.control.CommandAcknowledged(k, pc2.Seq)
	e.settle()
	_, ok = e.control.PendingCommand(k)
	require.False(t, ok)

	// Sequences are per Control, not per agent.
	e.beat("acme", "a2")
	pc3, err := e.control.Command(ctx, key("acme", "a2"), fleet.CommandResume, t0)
	require.NoError(t, err)
	require.Greater(t, pc3.Seq, pc2.Seq)
}

func TestControlForget(t *testing.T) {
	e := newEnv(t)
	token := e.register(acmeKey, "a1")
	k := key("acme", "a1")
	_, _, err := e.control.Revoke(ctx, k, adminRevocation("r", t0))
	require.NoError(t, err)
	_, err = e.control.Command(ctx, k, fleet.CommandPause, t0)
	require.NoError(t, err)

	at := t0.Add(time.Minute)
	ok, err := e.control.Forget(ctx, k, func() time.Time { return at })
	require.NoError(t, err)
	require.True(t, ok)
	_, revoked := e.control.Revocation(k)
	require.False(t, revoked)
	_, pending := e.control.PendingCommand(k)
	require.False(t, pending)
	_, known := e.agent("acme", "a1")
	require.False(t, known)
	require.Equal(t, at, stateOf(e.control).Forgotten[k])

	ok, err = e.control.Forget(ctx, k, func() time.Time { return at })
	require.NoError(t, err)
	require.False(t, ok, "nothing left to forget")

	// Its old runtime token is refused; it registers afresh with the tenant
	// key: not revoked, no command.
	e.clock.Set(at.Add(time.Minute))
	requireError(t, e.do(http.MethodPost, "/api/v1/installations/a1/heartbeat", token, ""), http.StatusUnauthorized, "issued before the agent was forgotten")
	a := e.do(http.MethodPost, "/api/v1/installations/a1/heartbeat", acmeKey, "")
	require.Equal(t, http.StatusOK, a.status, a.raw)
	require.Equal(t, true, a.body["registered"], a.raw)
	require.Equal(t, "ACTIVE", a.str("state"))
	require.Nil(t, a.body["command"])

	// An agent known only by its revocation (its registration was lost with
	// the store) can be forgotten too.
	e.beat("acme", "a2")
	_, _, err = e.control.Revoke(ctx, key("acme", "a2"), adminRevocation("r", t0))
	require.NoError(t, err)
	e.restart(nil)
	_, known = e.agent("acme", "a2")
	require.False(t, known)
	ok, err = e.control.Forget(ctx, key("acme", "a2"), func() time.Time { return at })
	require.NoError(t, err)
	require.True(t, ok)
	_, revoked = e.control.Revocation(key("acme", "a2"))
	require.False(t, revoked)
}

// TestControlForgetBeforeQueuedRegistration: a registration queued before
// its agent is forgotten but committed after the forget (registrations wait
// up to asyncLinger for a batch) does not bring the agent back; one from a
// beat after the forget registers it again.
func TestControlForgetBeforeQueuedRegistration(t *testing.T) {
	e := newEnv(t)
	k := key("acme", "a1")
	e.beat("acme", "a1")
	ok, err := e.control.Forget(ctx, k, func() time.Time { return t0.Add(time.Second) })
	require.NoError(t, err)
	require.True(t, ok)
	// The beat's registration, committed only now.
	e.control.AgentRegistered(k, t0)
	e.settle()
	require.False(t, e.ledger.Registered(k), "a registration from before the forget")
	require.False(t, e.control.Known(k))

	e.control.AgentRegistered(k, t0.Add(2*time.Second))
	e.settle()
	require.True(t, e.ledger.Registered(k), "a registration after the forget")
}

// TestControlQueueAfterClose: a registration or acknowledgement that
// arrives after Close (a heartbeat still served past the shutdown timeout)
// is counted as dropped, not left in the queue unseen.
func TestControlQueueAfterClose(t *testing.T) {
	e := newEnv(t)
	e.control.AgentRegistered(key("acme", "before"), t0)
	e.control.Close()
	require.True(t, e.ledger.Registered(key("acme", "before")), "committed by Close")
	e.control.AgentRegistered(key("acme", "after"), t0)
	e.control.CommandAcknowledged(key("acme", "after"), 1)
	require.Equal(t, uint64(2), e.control.asyncDropped.Load())
	require.Zero(t, e.control.asyncPending.Load())
	require.False(t, e.ledger.Registered(key("acme", "after")))
}

func TestControlRevokeAll(t *testing.T) {
	e := newEnv(t)
	for _, id := range []string{"a1", "a2", "a3"} {
		e.beat("acme", id)
	}
	_, _, err := e.control.Revoke(ctx, key("acme", "a2"), adminRevocation("first", t0))
	require.NoError(t, err)

	keys := []fleet.Key{key("acme", "a1"), key("acme", "a2"), key("acme", "a3")}
	n, err := e.control.RevokeAll(ctx, keys, adminRevocation("all", t0.Add(time.Minute)))
	require.NoError(t, err)
	require.Equal(t, 2, n, "a2 was revoked already")
	for _, k := range keys {
		rev, ok := e.control.Revocation(k)
		require.True(t, ok)
		ag, _ := e.store.Get(k)
		require.True(t, ag.Revoked, k)
		if k.AgentID == "a2" {
			require.Equal(t, "first", rev.Reason)
		} else {
			require.Equal(t, "all", rev.Reason)
		}
	}
	require.Equal(t, float64(3), e.counter("sentinel_revocations_total", map[string]string{"source": "admin"}))

	n, err = e.control.RevokeAll(ctx, keys, adminRevocation("again", t0))
	require.NoError(t, err)
	require.Zero(t, n)
	n, err = e.control.RevokeAll(ctx, nil, adminRevocation("none", t0))
	require.NoError(t, err)
	require.Zero(t, n)
}

// populate makes a varied kill-switch state and returns the key of every
// agent it touched.
func populate(t *testing.T, e *env) {
	t.Helper()
	for i := range 6 {
		e.beat("acme", fmt.Sprintf("a%d", i))
		e.beat("globex", fmt.Sprintf("g%d", i))
	}
	c := e.control
	must := func(err error) { t.Helper(); require.NoError(t, err) }
	_, _, err := c.Revoke(ctx, key("acme", "a0"), adminRevocation("cost", t0))
	must(err)
	_, _, err = c.Revoke(ctx, key("globex", "g0"), fleet.Revocation{Reason: "zombie", ShutdownTimeout: 1500 * time.Millisecond, RevokedAt: t0, Source: "alert:AgentZombie"})
	must(err)
	_, _, err = c.Revoke(ctx, key("acme", "a1"), adminRevocation("tmp", t0))
	must(err)
	_, err = c.Reinstate(ctx, key("acme", "a1"))
	must(err)
	_, err = c.Command(ctx, key("acme", "a2"), fleet.CommandPause, t0)
	must(err)
	_, err = c.Command(ctx, key("acme", "a2"), fleet.CommandTerminate, t0.Add(time.Second))
	must(err)
	pc, err := c.Command(ctx, key("acme", "a3"), fleet.CommandResume, t0)
	must(err)
	c.CommandAcknowledged(key("acme", "a3"), pc.Seq)
	e.settle()
	_, err = c.Command(ctx, key("globex", "g1"), fleet.CommandPause, t0)
	must(err)
	_, err = c.Forget(ctx, key("acme", "a4"), func() time.Time { return t0.Add(time.Minute) })
	must(err)
	_, err = c.RevokeAll(ctx, []fleet.Key{key("globex", "g2"), key("globex", "g3"), key("globex", "g0")}, adminRevocation("all", t0.Add(2*time.Minute)))
	must(err)
	// Forgotten, registered again, then revoked: the revocation outlives the forget.
	_, _, err = c.Revoke(ctx, key("acme", "a5"), adminRevocation("before forget", t0))
	must(err)
	_, err = c.Forget(ctx, key("acme", "a5"), func() time.Time { return t0.Add(3 * time.Minute) })
	must(err)
	e.clock.Set(t0.Add(4 * time.Minute))
	e.beat("acme", "a5")
	_, _, err = c.Revoke(ctx, key("acme", "a5"), adminRevocation("after forget", t0.Add(5*time.Minute)))
	must(err)
}

func TestControlReplay(t *testing.T) {
	e := newEnv(t)
	populate(t, e)
	want := stateOf(e.control)
	require.Len(t, want.Revocations, 5)
	require.Len(t, want.Commands, 2)
	require.Len(t, want.Forgotten, 2)
	snap := e.snapshot()

	e.restart(snap)
	require.Equal(t, want, stateOf(e.control))

	// The store agrees with the journal after SyncStore.
	for _, tc := range []struct {
		tenant, id string
		revoked    bool
		command    fleet.Command
	}{
		{"acme", "a0", true, fleet.CommandNone},
		{"acme", "a1", false, fleet.CommandNone},
		{"acme", "a2", false, fleet.CommandTerminate},
		{"acme", "a3", false, fleet.CommandNone},
		{"acme", "a5", true, fleet.CommandNone},
		{"globex", "g0", true, fleet.CommandNone},
		{"globex", "g1", false, fleet.CommandPause},
		{"globex", "g2", true, fleet.CommandNone},
		{"globex", "g4", false, fleet.CommandNone},
	} {
		ag, ok := e.agent(tc.tenant, tc.id)
		require.True(t, ok, tc.id)
		require.Equal(t, tc.revoked, ag.Revoked, tc.id)
		require.Equal(t, tc.command, ag.Command, tc.id)
	}
	_, ok := e.agent("acme", "a4")
	require.False(t, ok)

	// New sequences continue after the replayed ones.
	pc, err := e.control.Command(ctx, key("acme", "a1"), fleet.CommandPause, t0)
	require.NoError(t, err)
	for _, old := range want.Commands {
		require.Greater(t, pc.Seq, old.Seq)
	}
}

// TestSyncStoreForgotten: agents forgotten after the snapshot the store was
// restored from are deleted again, unless they registered again after the
// forget.
func TestSyncStoreForgotten(t *testing.T) {
	e := newEnv(t)
	for _, id := range []string{"a1", "a2", "a3"} {
		e.beat("acme", id)
	}
	e.clock.Set(t0.Add(time.Minute))
	stale := e.snapshot() // taken before the forgets

	e.clock.Set(t0.Add(2 * time.Minute))
	for _, id := range []string{"a1", "a2"} {
		ok, err := e.control.Forget(ctx, key("acme", id), func() time.Time { return e.clock.Now() })
		require.NoError(t, err)
		require.True(t, ok)
	}
	e.clock.Set(t0.Add(3 * time.Minute))
	e.beat("acme", "a2") // registered again after its forget
	e.clock.Set(t0.Add(4 * time.Minute))
	fresh := e.snapshot()

	known := func(id string) bool { _, ok := e.agent("acme", id); return ok }

	e.restart(stale)
	require.False(t, known("a1"), "forgotten after the snapshot")
	require.False(t, known("a2"), "its re-registration is not in this snapshot")
	require.True(t, known("a3"))

	e.restart(fresh)
	require.False(t, known("a1"))
	require.True(t, known("a2"), "registered again after the forget")
	ag, _ := e.agent("acme", "a2")
	require.Equal(t, t0.Add(3*time.Minute), ag.LastHeartbeat)
	require.True(t, known("a3"))
	require.Equal(t, 2, e.store.Len())
}

// TestControlChurn: a long history of changes comes back as its end state.
func TestControlChurn(t *testing.T) {
	e := newEnv(t)
	populate(t, e)
	for i := range 50 {
		_, _, err := e.control.Revoke(ctx, key("acme", "a1"), adminRevocation(fmt.Sprint("churn ", i), t0))
		require.NoError(t, err)
		_, err = e.control.Reinstate(ctx, key("acme", "a1"))
		require.NoError(t, err)
	}
	want := stateOf(e.control)
	e.restart(e.snapshot())
	require.Equal(t, want, stateOf(e.control))
	rev, ok := e.control.Revocation(key("acme", "a5"))
	require.True(t, ok, "a revocation issued after its agent's forget survives")
	require.Equal(t, "after forget", rev.Reason)
	ag, _ := e.agent("acme", "a5")
	require.True(t, ag.Revoked)

	// Writes after a restart are kept too.
	_, err := e.control.Command(ctx, key("acme", "a0"), fleet.CommandPause, t0)
	require.NoError(t, err)
	want = stateOf(e.control)
	e.restart(e.snapshot())
	require.Equal(t, want, stateOf(e.control))
}

// TestControlJournalFailure: a change that cannot be journaled changes
// nothing, in memory or in the store.
func TestControlJournalFailure(t *testing.T) {
	e := newEnv(t)
	for _, id := range []string{"a1", "a2", "a3"} {
		e.beat("acme", id)
	}
	_, _, err := e.control.Revoke(ctx, key("acme", "a2"), adminRevocation("r", t0))
	require.NoError(t, err)
	_, err = e.control.Command(ctx, key("acme", "a3"), fleet.CommandPause, t0)
	require.NoError(t, err)

	wantState := stateOf(e.control)
	wantAgents := map[string]heartbeat.Agent{}
	for _, id := range []string{"a1", "a2", "a3"} {
		wantAgents[id], _ = e.agent("acme", id)
	}
	revocations := testutil.ToFloat64(e.control.revocationsTotal.WithLabelValues("admin"))

	e.ledger.fail.Store(true)
	_, changed, err := e.control.Revoke(ctx, key("acme", "a1"), adminRevocation("x", t0))
	require.ErrorIs(t, err, errDiskFull)
	require.False(t, changed)
	_, err = e.control.RevokeAll(ctx, []fleet.Key{key("acme", "a1"), key("acme", "a3")}, adminRevocation("x", t0))
	require.ErrorIs(t, err, errDiskFull)
	ok, err := e.control.Reinstate(ctx, key("acme", "a2"))
	require.ErrorIs(t, err, errDiskFull)
	require.False(t, ok)
	_, err = e.control.Command(ctx, key("acme", "a1"), fleet.CommandTerminate, t0)
	require.ErrorIs(t, err, errDiskFull)
	ok, err = e.control.Forget(ctx, key("acme", "a3"), func() time.Time { return t0 })
	require.ErrorIs(t, err, errDiskFull)
	require.False(t, ok)

	require.Equal(t, wantState, stateOf(e.control))
	for id, want := range wantAgents {
		got, ok := e.agent("acme", id)
		require.True(t, ok, id)
		require.Equal(t, want, got, id)
	}
	require.Equal(t, revocations, testutil.ToFloat64(e.control.revocationsTotal.WithLabelValues("admin")))

	// Nothing of it reached the disk either.
	e.ledger.fail.Store(false)
	e.restart(e.snapshot())
	require.Equal(t, wantState, stateOf(e.control))
}

// A watch that lost track starts again from a fresh Load: what the new state
// no longer holds (a command acknowledged or a revocation lifted during the
// gap, maybe on another replica) leaves the store too.
func TestResetClearsWhatTheGapRemoved(t *testing.T) {
	e := newEnv(t)
	e.beat("acme", "a1")
	e.beat("acme", "a2")
	_, err := e.control.Command(ctx, key("acme", "a1"), fleet.CommandPause, t0)
	require.NoError(t, err)
	_, _, err = e.control.Revoke(ctx, key("acme", "a2"), fleet.Revocation{Reason: "r", RevokedAt: t0, Source: "admin"})
	require.NoError(t, err)
	ag, _ := e.agent("acme", "a1")
	require.Equal(t, fleet.CommandPause, ag.Command)

	e.control.reset(ledger.NewState())
	ag, _ = e.agent("acme", "a1")
	require.Equal(t, fleet.CommandNone, ag.Command, "the acknowledged command is gone from the store")
	ag, _ = e.agent("acme", "a2")
	require.False(t, ag.Revoked, "the lifted revocation is gone from the store")
}
