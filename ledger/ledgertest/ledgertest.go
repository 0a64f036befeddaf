// Package ledgertest is the conformance suite every ledger backend passes:
// atomicity, conditional operations, watch order, outbox leases, restart.
package ledgertest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/ledger"
)

// Backend opens ledgers for the suite.
type Backend struct {
	// Open returns a new, empty ledger, closed when the test ends.
	Open func(t *testing.T) ledger.Ledger
	// Reopen closes l and opens the same ledger again (a restart).
	Reopen func(t *testing.T, l ledger.Ledger) ledger.Ledger
	// Second, when set, opens another replica of l's ledger.
	Second func(t *testing.T, l ledger.Ledger) ledger.Ledger
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func key(id string) fleet.Key { return fleet.Key{Tenant: "acme", AgentID: id} }

func event(id, agent, typ string) *ledger.Event {
	return &ledger.Event{ID: id, Tenant: "acme", AgentID: agent, Type: typ, CreatedAt: t0, Body: []byte(`{"x":1}`)}
}

func revocation(reason string) fleet.Revocation {
	return fleet.Revocation{Reason: reason, ShutdownTimeout: 5 * time.Second, RevokedAt: t0, Source: "admin"}
}

// Run runs the suite.
func Run(t *testing.T, b Backend) {
	t.Run("ConditionalOps", func(t *testing.T) { testConditional(t, b) })
	t.Run("Atomicity", func(t *testing.T) { testAtomicity(t, b) })
	t.Run("WatchOrder", func(t *testing.T) { testWatch(t, b) })
	t.Run("Outbox", func(t *testing.T) { testOutbox(t, b) })
	t.Run("Registered", func(t *testing.T) { testRegistered(t, b) })
	t.Run("Restart", func(t *testing.T) { testRestart(t, b) })
	t.Run("Closed", func(t *testing.T) { testClosed(t, b) })
	if b.Second != nil {
		t.Run("Replicas", func(t *testing.T) { testReplicas(t, b) })
	}
}

func apply(t *testing.T, l ledger.Ledger, ops ...ledger.Op) ledger.Result {
	t.Helper()
	res, err := l.Apply(context.Background(), ops...)
	require.NoError(t, err)
	require.Len(t, res.Ops, len(ops))
	return res
}

func testConditional(t *testing.T, b Backend) {
	l := b.Open(t)
	ctx := context.Background()
	a := key("a")

	tests := []struct {
		name    string
		op      ledger.Op
		applied bool
	}{
		{"first revoke applies", ledger.Revoke{Key: a, Revocation: revocation("first"), Event: event("e1", "a", "agent.revoked")}, true},
		{"second revoke does not", ledger.Revoke{Key: a, Revocation: revocation("second"), Event: event("e2", "a", "agent.revoked")}, false},
		{"reinstate applies", ledger.Reinstate{Key: a}, true},
		{"reinstate again does not", ledger.Reinstate{Key: a}, false},
		{"command applies", ledger.SetCommand{Key: a, Command: fleet.CommandPause, IssuedAt: t0}, true},
		{"ack of another seq does not", ledger.AckCommand{Key: a, Seq: 99}, false},
		{"ack of the seq applies", ledger.AckCommand{Key: a, Seq: 1}, true},
		{"announce SILENT from ACTIVE applies", ledger.Announce{Key: a, From: []fleet.State{fleet.StateActive}, To: fleet.StateSilent, Event: event("e3", "a", "heartbeat.state_change")}, true},
		{"announce SILENT again does not", ledger.Announce{Key: a, To: fleet.StateSilent, Event: event("e4", "a", "heartbeat.state_change")}, false},
		{"announce from ZOMBIE does not", ledger.Announce{Key: a, From: []fleet.State{fleet.StateZombie}, To: fleet.StateRecovered, Event: event("e5", "a", "heartbeat.state_change")}, false},
		{"announce ACTIVE from SILENT applies", ledger.Announce{Key: a, From: []fleet.State{fleet.StateSilent}, To: fleet.StateActive, Event: event("e6", "a", "heartbeat.state_change")}, true},
		{"alert key once", ledger.AlertSeen{Key: "fp/1/firing", At: t0}, true},
		{"alert key twice", ledger.AlertSeen{Key: "fp/1/firing", At: t0}, false},
		{"disable endpoint", ledger.SetEndpointDisabled{Tenant: "acme", Disabled: true}, true},
		{"disable endpoint again", ledger.SetEndpointDisabled{Tenant: "acme", Disabled: true}, false},
		{"pipeline silent", ledger.Pipeline{Expect: ledger.PipelineOK, To: ledger.PipelineSilent, Events: []ledger.Event{*event("p1", "", "pipeline.silent")}}, true},
		{"pipeline silent again", ledger.Pipeline{Expect: ledger.PipelineOK, To: ledger.PipelineSilent, Events: []ledger.Event{*event("p2", "", "pipeline.silent")}}, false},
		{"register applies", ledger.Register{Key: a, At: t0}, true},
		{"register again does not", ledger.Register{Key: a, At: t0}, false},
		{"forget applies", ledger.Forget{Key: a, At: t0}, true},
		{"forget again does not", ledger.Forget{Key: a, At: t0}, false},
		{"register from before the forget does not", ledger.Register{Key: a, At: t0.Add(-time.Second)}, false},
		{"register at the forget does not", ledger.Register{Key: a, At: t0}, false},
		{"register after the forget applies", ledger.Register{Key: a, At: t0.Add(time.Second)}, true},
	}
	var lastRev ledger.Revision
	for _, tc := range tests {
		res := apply(t, l, tc.op)
		require.Equal(t, tc.applied, res.Applied(0), tc.name)
		if tc.applied {
			require.Equal(t, lastRev+1, res.Revision, tc.name)
			lastRev = res.Revision
		} else {
			require.Zero(t, res.Revision, tc.name)
		}
	}
	s, err := l.Load(ctx)
	require.NoError(t, err)
	require.Equal(t, lastRev, s.Revision)
	require.Empty(t, s.Revocations)
	require.Empty(t, s.Commands)
	require.Empty(t, s.Announced)
	require.Contains(t, s.Forgotten, a)
	require.True(t, s.Disabled["acme"])
	require.Equal(t, ledger.PipelineSilent, s.Pipeline)
	require.Equal(t, uint64(3), s.Sequences[a], "e1, e3 and e6 were enqueued; the others were not")

	// Sequence numbers survive a forget and keep increasing.
	res := apply(t, l, ledger.Enqueue{Event: *event("e7", "a", "agent.revoked")})
	require.Equal(t, uint64(4), res.Ops[0].Events[0].Sequence)

	// Commands get increasing sequence numbers.
	r1 := apply(t, l, ledger.SetCommand{Key: key("b"), Command: fleet.CommandTerminate, IssuedAt: t0})
	r2 := apply(t, l, ledger.SetCommand{Key: key("c"), Command: fleet.CommandResume, IssuedAt: t0})
	require.Greater(t, r2.Ops[0].CommandSeq, r1.Ops[0].CommandSeq)

	// Two revokes of one agent in one Apply: the second sees the first.
	res = apply(t, l, ledger.Revoke{Key: key("d"), Revocation: revocation("x")}, ledger.Revoke{Key: key("d"), Revocation: revocation("y")})
	require.True(t, res.Applied(0))
	require.False(t, res.Applied(1))
}

// testRegistered: Registered and RegisteredKeys answer what Load holds,
// a forget included.
func testRegistered(t *testing.T, b Backend) {
	l := b.Open(t)
	other := fleet.Key{Tenant: "globex", AgentID: "g"}
	apply(t, l, ledger.Register{Key: key("a"), At: t0}, ledger.Register{Key: key("b"), At: t0}, ledger.Register{Key: other, At: t0})
	apply(t, l, ledger.Forget{Key: key("b"), At: t0.Add(time.Second)})

	require.True(t, l.Registered(key("a")))
	require.False(t, l.Registered(key("b")), "forgotten")
	require.False(t, l.Registered(key("never")))
	require.True(t, l.Registered(other))
	require.Equal(t, []fleet.Key{key("a")}, l.RegisteredKeys("acme"))
	require.Equal(t, []fleet.Key{other}, l.RegisteredKeys("globex"))
	require.Empty(t, l.RegisteredKeys("initech"))
	s, err := l.Load(context.Background())
	require.NoError(t, err)
	require.Len(t, s.Registered, 2)
}

func testAtomicity(t *testing.T, b Backend) {
	l := b.Open(t)
	ctx := context.Background()
	apply(t, l, ledger.Revoke{Key: key("before"), Revocation: revocation("x")})
	before, err := l.Load(ctx)
	require.NoError(t, err)

	bad := []ledger.Op{
		ledger.Revoke{Key: key("a"), Revocation: revocation("x"), Event: event("e1", "a", "agent.revoked")},
		ledger.SetCommand{Key: key("a"), Command: fleet.CommandPause, IssuedAt: t0},
		ledger.Enqueue{Event: ledger.Event{ID: "", Tenant: "acme", Type: "x"}}, // invalid: no id
	}
	_, err = l.Apply(ctx, bad...)
	require.ErrorIs(t, err, ledger.ErrInvalid)
	after, err := l.Load(ctx)
	require.NoError(t, err)
	require.Equal(t, before, after, "a failed Apply changes nothing")
	d, _, err := l.Deliveries(ctx, ledger.DeliveryFilter{})
	require.NoError(t, err)
	require.Empty(t, d, "nor the outbox")

	// A duplicate event id is refused as a whole too.
	apply(t, l, ledger.Enqueue{Event: *event("dup", "a", "x")})
	_, err = l.Apply(ctx, ledger.Revoke{Key: key("z"), Revocation: revocation("x")}, ledger.Enqueue{Event: *event("dup", "a", "x")})
	require.ErrorIs(t, err, ledger.ErrInvalid)
	s, err := l.Load(ctx)
	require.NoError(t, err)
	require.NotContains(t, s.Revocations, key("z"))
}

func testWatch(t *testing.T, b Backend) {
	l := b.Open(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	apply(t, l, ledger.Register{Key: key("early"), At: t0})

	const writers, each = 8, 25
	cache := ledger.NewState()
	done := make(chan error, 1)
	var seen int
	go func() {
		done <- l.Watch(ctx, 0, func(c ledger.Change) error {
			if err := cache.Apply(c); err != nil {
				return err
			}
			if seen++; seen == writers*each+1 {
				cancel()
			}
			return nil
		})
	}()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				k := key(fmt.Sprintf("w%d-%d", w, i))
				_, err := l.Apply(context.Background(), ledger.Revoke{Key: k, Revocation: revocation("x")},
					ledger.SetCommand{Key: k, Command: fleet.CommandTerminate, IssuedAt: t0})
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	require.ErrorIs(t, <-done, context.Canceled)
	s, err := l.Load(context.Background())
	require.NoError(t, err)
	require.Equal(t, s, cache, "the watched changes, applied in order, rebuild the state")
	require.Len(t, s.Revocations, writers*each)
}

// requirePending checks that PendingDeliveries, a count kept as changes
// apply, agrees with the pending deliveries listed, and returns it.
func requirePending(t *testing.T, l ledger.Ledger) int {
	t.Helper()
	ctx := context.Background()
	n, err := l.PendingDeliveries(ctx)
	require.NoError(t, err)
	listed, _, err := l.Deliveries(ctx, ledger.DeliveryFilter{Status: ledger.StatusPending, Limit: 1 << 20})
	require.NoError(t, err)
	require.Len(t, listed, n, "PendingDeliveries agrees with the pending deliveries listed")
	return n
}

func testOutbox(t *testing.T, b Backend) {
	l := b.Open(t)
	ctx := context.Background()
	require.Equal(t, 0, requirePending(t, l))
	apply(t, l,
		ledger.Enqueue{Event: *event("a1", "a", "x")},
		ledger.Enqueue{Event: *event("a2", "a", "x")},
		ledger.Enqueue{Event: *event("b1", "b", "x")},
	)
	apply(t, l, ledger.Enqueue{Event: ledger.Event{ID: "o1", Tenant: "other", AgentID: "a", Type: "x", CreatedAt: t0}})
	apply(t, l, ledger.SetEndpointDisabled{Tenant: "other", Disabled: true})
	require.Equal(t, 4, requirePending(t, l))

	ids := func(ds []ledger.Delivery) []string {
		var out []string
		for _, d := range ds {
			out = append(out, d.Event.ID)
		}
		return out
	}
	const lease = time.Minute
	got, err := l.Claim(ctx, ledger.ClaimRequest{Worker: "w0", Tenant: "nobody", Now: t0, Lease: lease, Max: 10})
	require.NoError(t, err)
	require.Empty(t, got, "a claim for one tenant hands out only that tenant's events")
	got, err = l.Claim(ctx, ledger.ClaimRequest{Worker: "w1", Now: t0, Lease: lease, Max: 10})
	require.NoError(t, err)
	require.Equal(t, []string{"a1", "b1"}, ids(got), "one head per agent, none of a disabled endpoint")
	require.Equal(t, "w1", got[0].Worker)

	got, err = l.Claim(ctx, ledger.ClaimRequest{Worker: "w2", Now: t0.Add(time.Second), Lease: lease, Max: 10})
	require.NoError(t, err)
	require.Empty(t, got, "leased deliveries are not handed out twice, nor a2 behind a1")

	require.Equal(t, 4, requirePending(t, l), "leased deliveries are still pending")
	require.NoError(t, l.Record(ctx, "a1", ledger.Attempt{Worker: "w1", At: t0, Outcome: ledger.OutcomeDelivered, StatusCode: 200}))
	require.Equal(t, 3, requirePending(t, l))
	require.ErrorIs(t, l.Record(ctx, "b1", ledger.Attempt{Worker: "w2", At: t0, Outcome: ledger.OutcomeDelivered}), ledger.ErrLeaseLost)
	require.ErrorIs(t, l.Record(ctx, "nope", ledger.Attempt{Worker: "w2", At: t0, Outcome: ledger.OutcomeDelivered}), ledger.ErrNotFound)

	got, err = l.Claim(ctx, ledger.ClaimRequest{Worker: "w2", Tenant: "acme", Now: t0.Add(time.Second), Lease: lease, Max: 10})
	require.NoError(t, err)
	require.Equal(t, []string{"a2"}, ids(got), "a2 follows once a1 is delivered")

	// w1 died holding b1: after its lease, another worker gets it, and w1's
	// late record is refused.
	got, err = l.Claim(ctx, ledger.ClaimRequest{Worker: "w3", Now: t0.Add(lease + 500*time.Millisecond), Lease: lease, Max: 10})
	require.NoError(t, err)
	require.Equal(t, []string{"b1"}, ids(got))
	require.ErrorIs(t, l.Record(ctx, "b1", ledger.Attempt{Worker: "w1", At: t0, Outcome: ledger.OutcomeDelivered}), ledger.ErrLeaseLost)

	// A retry is due at its next attempt, not before.
	next := t0.Add(lease + time.Hour)
	require.NoError(t, l.Record(ctx, "b1", ledger.Attempt{Worker: "w3", At: t0, Outcome: ledger.OutcomeRetry, StatusCode: 503, Error: "unavailable", NextAttempt: next}))
	got, err = l.Claim(ctx, ledger.ClaimRequest{Worker: "w3", Now: next.Add(-time.Second), Lease: lease, Max: 10})
	require.NoError(t, err)
	require.NotContains(t, ids(got), "b1")
	got, err = l.Claim(ctx, ledger.ClaimRequest{Worker: "w3", Now: next, Lease: lease, Max: 10})
	require.NoError(t, err)
	require.Contains(t, ids(got), "b1")
	require.NoError(t, l.Record(ctx, "b1", ledger.Attempt{Worker: "w3", At: next, Outcome: ledger.OutcomeFailed, StatusCode: 400}))
	require.Equal(t, 2, requirePending(t, l), "a failed delivery is no longer pending")
	one, _, err := l.Deliveries(ctx, ledger.DeliveryFilter{ID: "b1"})
	require.NoError(t, err)
	require.Equal(t, []string{"b1"}, ids(one))
	none, _, err := l.Deliveries(ctx, ledger.DeliveryFilter{ID: "nope"})
	require.NoError(t, err)
	require.Empty(t, none)

	failed, cursor, err := l.Deliveries(ctx, ledger.DeliveryFilter{Status: ledger.StatusFailed})
	require.NoError(t, err)
	require.Empty(t, cursor)
	require.Len(t, failed, 1)
	require.Equal(t, 2, failed[0].Attempts)
	require.Equal(t, 400, failed[0].LastStatusCode)

	require.NoError(t, l.Redeliver(ctx, "b1", next))
	require.ErrorIs(t, l.Redeliver(ctx, "nope", next), ledger.ErrNotFound)
	pending, _, err := l.Deliveries(ctx, ledger.DeliveryFilter{Status: ledger.StatusPending, Tenant: "acme"})
	require.NoError(t, err)
	require.Equal(t, []string{"a2", "b1"}, ids(pending))
	require.Equal(t, 3, requirePending(t, l), "a redelivered event is pending again")

	// Pages.
	page, cursor, err := l.Deliveries(ctx, ledger.DeliveryFilter{Limit: 2})
	require.NoError(t, err)
	require.Equal(t, []string{"a1", "a2"}, ids(page))
	page, cursor, err = l.Deliveries(ctx, ledger.DeliveryFilter{Limit: 2, Cursor: cursor})
	require.NoError(t, err)
	require.Equal(t, []string{"b1", "o1"}, ids(page))
	require.Empty(t, cursor)
}

func testRestart(t *testing.T, b Backend) {
	l := b.Open(t)
	ctx := context.Background()
	key1, err := l.SigningKey(ctx, 32)
	require.NoError(t, err)
	apply(t, l, ledger.Revoke{Key: key("a"), Revocation: revocation("kept"), Event: event("e1", "a", "agent.revoked")})
	apply(t, l, ledger.SetCommand{Key: key("b"), Command: fleet.CommandPause, IssuedAt: t0})
	apply(t, l, ledger.AlertSeen{Key: "k", At: t0}, ledger.Forget{Key: key("c"), At: t0})
	_, err = l.Claim(ctx, ledger.ClaimRequest{Worker: "w", Now: t0, Lease: time.Minute, Max: 1})
	require.NoError(t, err)
	want, err := l.Load(ctx)
	require.NoError(t, err)
	wantOut, _, err := l.Deliveries(ctx, ledger.DeliveryFilter{})
	require.NoError(t, err)

	wantPending := requirePending(t, l)
	l = b.Reopen(t, l)
	require.Equal(t, wantPending, requirePending(t, l), "the pending count survives a restart")
	got, err := l.Load(ctx)
	require.NoError(t, err)
	require.Equal(t, want, got)
	gotOut, _, err := l.Deliveries(ctx, ledger.DeliveryFilter{})
	require.NoError(t, err)
	require.Equal(t, wantOut, gotOut)
	key2, err := l.SigningKey(ctx, 32)
	require.NoError(t, err)
	require.Equal(t, key1, key2)
	require.False(t, apply(t, l, ledger.AlertSeen{Key: "k", At: t0}).Applied(0))
	res := apply(t, l, ledger.SetCommand{Key: key("b"), Command: fleet.CommandResume, IssuedAt: t0})
	require.Equal(t, uint32(2), res.Ops[0].CommandSeq, "command sequence numbers go on after a restart")
}

// testClosed checks that a closed ledger refuses writes with ErrClosed at
// once, as often as it is asked, and that Close is idempotent.
func testClosed(t *testing.T, b Backend) {
	l := b.Open(t)
	require.NoError(t, l.Close())
	require.NoError(t, l.Close())
	ctx := context.Background()
	for range 3 {
		_, err := l.Apply(ctx, ledger.AlertSeen{Key: "k", At: t0})
		require.ErrorIs(t, err, ledger.ErrClosed)
		_, err = l.Claim(ctx, ledger.ClaimRequest{Worker: "w", Now: t0, Lease: time.Minute, Max: 1})
		require.ErrorIs(t, err, ledger.ErrClosed)
	}
}

func testReplicas(t *testing.T, b Backend) {
	l1 := b.Open(t)
	l2 := b.Second(t, l1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	res := apply(t, l1, ledger.Revoke{Key: key("a"), Revocation: revocation("x")})
	seen := make(chan ledger.Change, 1)
	go func() {
		_ = l2.Watch(ctx, 0, func(c ledger.Change) error {
			if c.Revision == res.Revision {
				seen <- c
				return context.Canceled
			}
			return nil
		})
	}()
	select {
	case <-seen:
	case <-ctx.Done():
		t.Fatal("replica 2 never saw replica 1's revocation")
	}
	// Conditions hold across replicas: replica 2 cannot revoke again.
	require.False(t, apply(t, l2, ledger.Revoke{Key: key("a"), Revocation: revocation("y")}).Applied(0))
	// Command sequence numbers are shared.
	r1 := apply(t, l1, ledger.SetCommand{Key: key("a"), Command: fleet.CommandPause, IssuedAt: t0})
	r2 := apply(t, l2, ledger.SetCommand{Key: key("a"), Command: fleet.CommandResume, IssuedAt: t0})
	require.Equal(t, r1.Ops[0].CommandSeq+1, r2.Ops[0].CommandSeq)
	k1, err := l1.SigningKey(ctx, 32)
	require.NoError(t, err)
	k2, err := l2.SigningKey(ctx, 32)
	require.NoError(t, err)
	require.Equal(t, k1, k2)
	// A delivery goes to one replica's worker at a time.
	apply(t, l1, ledger.Enqueue{Event: *event("e", "a", "x")})
	got1, err := l1.Claim(ctx, ledger.ClaimRequest{Worker: "r1", Now: t0, Lease: time.Minute, Max: 10})
	require.NoError(t, err)
	got2, err := l2.Claim(ctx, ledger.ClaimRequest{Worker: "r2", Now: t0, Lease: time.Minute, Max: 10})
	require.NoError(t, err)
	require.Len(t, got1, 1)
	require.Empty(t, got2)
}
