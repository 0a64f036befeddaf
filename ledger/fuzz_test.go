package ledger_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/ledger"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func sampleOps() []ledger.Op {
	k := fleet.Key{Tenant: "acme", AgentID: "a1"}
	ev := &ledger.Event{ID: "e1", Tenant: "acme", AgentID: "a1", Type: "agent.revoked", Sequence: 1, CreatedAt: t0, Body: []byte(`{"x":1}`)}
	return []ledger.Op{
		ledger.Revoke{Key: k, Revocation: fleet.Revocation{Reason: "r", ShutdownTimeout: time.Second, RevokedAt: t0, Source: "admin"}, Event: ev},
		ledger.Reinstate{Key: k},
		ledger.SetCommand{Key: k, Command: fleet.CommandPause, IssuedAt: t0, Seq: 3},
		ledger.AckCommand{Key: k, Seq: 3},
		ledger.Forget{Key: k, At: t0},
		ledger.Register{Key: k, At: t0},
		ledger.Announce{Key: k, To: fleet.StateSilent, Event: &ledger.Event{ID: "e2", Tenant: "acme", Type: "heartbeat.state_change", Sequence: 2}},
		ledger.AlertSeen{Key: "fp/1/firing", At: t0},
		ledger.SetEndpointDisabled{Tenant: "acme", Disabled: true},
		ledger.Pipeline{Expect: ledger.PipelineOK, To: ledger.PipelineSilent},
		ledger.Lease{IDs: []string{"e1"}, Worker: "w", Until: t0},
		ledger.RecordAttempt{ID: "e1", Attempt: ledger.Attempt{Worker: "w", At: t0, Outcome: ledger.OutcomeRetry}},
		ledger.RedeliverEvent{ID: "e1", At: t0},
		ledger.Prune{At: t0},
	}
}

func TestChangeRoundTrip(t *testing.T) {
	c := ledger.Change{Revision: 7, Ops: sampleOps()}
	b, err := ledger.EncodeChange(c)
	require.NoError(t, err)
	got, err := ledger.DecodeChange(b)
	require.NoError(t, err)
	require.Equal(t, c, got)
}

// FuzzDecodeChange: stored changes come from disk and from the database; a
// damaged one is an error, never a panic, and whatever decodes applies to a
// state without a panic either.
func FuzzDecodeChange(f *testing.F) {
	b, err := ledger.EncodeChange(ledger.Change{Revision: 1, Ops: sampleOps()})
	require.NoError(f, err)
	f.Add(b)
	f.Add([]byte(`{"rev":1,"ops":[]}`))
	f.Add([]byte(`{"rev":1,"ops":[{"op":"explode","data":{}}]}`))
	f.Add([]byte(`{"rev":0}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ledger.DecodeChange(b)
		if err != nil {
			return
		}
		s := ledger.NewState()
		s.Revision = c.Revision - 1
		require.NoError(t, s.Apply(c))
		again, err := ledger.EncodeChange(c)
		require.NoError(t, err)
		c2, err := ledger.DecodeChange(again)
		require.NoError(t, err)
		require.Len(t, c2.Ops, len(c.Ops))
	})
}

// FuzzDecodeSnapshot: a damaged snapshot of the whole state is an error,
// never a panic.
func FuzzDecodeSnapshot(f *testing.F) {
	core := ledger.NewCore()
	stop := make(chan struct{})
	defer close(stop)
	go core.RunCommitter(stop, nopPersister{})
	_, err := core.Apply(context.Background(),
		ledger.Revoke{Key: fleet.Key{Tenant: "acme", AgentID: "a"}, Revocation: fleet.Revocation{Reason: "r"},
			Event: &ledger.Event{ID: "e", Tenant: "acme", AgentID: "a", Type: "agent.revoked"}},
		ledger.SetCommand{Key: fleet.Key{Tenant: "acme", AgentID: "b"}, Command: fleet.CommandPause},
		ledger.AlertSeen{Key: "k", At: t0})
	require.NoError(f, err)
	var buf bytes.Buffer
	_, err = core.EncodeSnapshot(&buf)
	require.NoError(f, err)
	f.Add(buf.Bytes())
	f.Add([]byte(`{"format":2}`))
	f.Add([]byte(`{"format":1,"deliveries":[{"event":{"id":""}}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c := ledger.NewCore()
		if _, err := c.DecodeSnapshot(bytes.NewReader(b)); err != nil {
			return
		}
		_, _ = c.Load(context.Background())
		_, _, _ = c.Deliveries(context.Background(), ledger.DeliveryFilter{})
		var out bytes.Buffer
		_, err := c.EncodeSnapshot(&out)
		require.NoError(t, err)
	})
}

type nopPersister struct{}

func (nopPersister) Prepare(context.Context, *ledger.Txn) error                  { return nil }
func (nopPersister) Persist(context.Context, *ledger.Txn, []ledger.Change) error { return nil }
