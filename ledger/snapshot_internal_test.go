package ledger

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/fleet"
)

// marshalledSnapshot is the reference for encodeSnapshot: the snapshot
// struct filled from m and written by encoding/json, as the state was
// written before it was streamed.
func marshalledSnapshot(t *testing.T, m machine) []byte {
	s := &snapshot{Format: snapshotFormat, Revision: m.Revision, AlertKeys: maps.Clone(m.AlertKeys),
		Pipeline: m.Pipeline, WatchdogAt: m.WatchdogAt, CommandSeq: m.CommandSeq, OutboxNext: m.outbox.next}
	for _, k := range sortedKeys(m.Revocations) {
		s.Revocations = append(s.Revocations, keyedRevocation{k, m.Revocations[k]})
	}
	for _, k := range sortedKeys(m.Commands) {
		s.Commands = append(s.Commands, keyedCommand{k, m.Commands[k]})
	}
	for _, k := range sortedKeys(m.Forgotten) {
		s.Forgotten = append(s.Forgotten, keyedTime{k, m.Forgotten[k]})
	}
	for _, k := range sortedKeys(m.Registered) {
		s.Registered = append(s.Registered, keyedTime{k, m.Registered[k]})
	}
	for _, k := range sortedKeys(m.Announced) {
		s.Announced = append(s.Announced, keyedState{k, m.Announced[k]})
	}
	for _, k := range sortedKeys(m.Sequences) {
		s.Sequences = append(s.Sequences, keyedSeq{k, m.Sequences[k]})
	}
	s.Disabled = slices.Sorted(maps.Keys(m.Disabled))
	for _, d := range m.outbox.byID {
		s.Deliveries = append(s.Deliveries, snapshotDelivery{Delivery: *d, Ordinal: d.ordinal})
	}
	slices.SortFunc(s.Deliveries, func(a, b snapshotDelivery) int { return cmp.Compare(a.Ordinal, b.Ordinal) })
	var buf bytes.Buffer
	require.NoError(t, json.NewEncoder(&buf).Encode(s))
	return buf.Bytes()
}

// TestSnapshotStreamIsTheMarshalledDocument holds the streamed snapshot to
// the bytes encoding/json writes for the snapshot struct, for an empty state
// and for one with entries in every part, strings to escape included.
func TestSnapshotStreamIsTheMarshalledDocument(t *testing.T) {
	at := time.Date(2026, 5, 1, 12, 0, 0, 123456789, time.UTC)
	empty := machine{State: NewState(), outbox: newOutbox()}

	full := machine{State: NewState(), outbox: newOutbox()}
	full.Revision, full.CommandSeq, full.Pipeline, full.WatchdogAt = 42, 7, PipelineSilent, at
	for i, id := range []string{"a", "b<&>", "ü\"quoted\"", "z\\", "tab\there"} {
		k := fleet.Key{Tenant: []string{"acme", "globex"}[i%2], AgentID: id}
		full.Registered[k] = at.Add(time.Duration(i) * time.Second)
		full.Forgotten[fleet.Key{Tenant: "acme", AgentID: "gone-" + id}] = at.In(time.FixedZone("X", 3600))
		full.Sequences[k] = uint64(i + 1)
		full.Announced[k] = fleet.StateSilent
		full.Commands[k] = Command{Command: fleet.CommandPause, Seq: uint32(i), IssuedAt: at}
		full.Revocations[k] = fleet.Revocation{Reason: "why " + id, ShutdownTimeout: time.Minute, RevokedAt: at, Source: "admin"}
		full.AlertKeys[fmt.Sprintf("alert-%d", i)] = at
	}
	full.Disabled["globex"], full.Disabled["acme"] = true, true
	for i := range 3 {
		id := fmt.Sprintf("ev-%d", i)
		full.outbox.byID[id] = &Delivery{
			Event:  Event{ID: id, Tenant: "acme", AgentID: "a", Type: "agent.revoked", Sequence: uint64(i), CreatedAt: at, Body: json.RawMessage(`{"x": 1}`)},
			Status: StatusPending, Attempts: i, NextAttempt: at, ordinal: uint64(10 - i),
		}
	}
	full.outbox.next = 10

	for name, m := range map[string]machine{"empty": empty, "full": full} {
		t.Run(name, func(t *testing.T) {
			var got bytes.Buffer
			require.NoError(t, m.encodeSnapshot(&got))
			require.Equal(t, string(marshalledSnapshot(t, m)), got.String())

			c := NewCore()
			rev, err := c.DecodeSnapshot(bytes.NewReader(got.Bytes()))
			require.NoError(t, err)
			require.Equal(t, m.Revision, rev)
			var again bytes.Buffer
			_, err = c.EncodeSnapshot(&again)
			require.NoError(t, err)
			require.Equal(t, got.String(), again.String(), "decoded and encoded again, the same document")
		})
	}
}

// failingWriter fails every write.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, fmt.Errorf("disk full") }

func TestSnapshotStreamWriteError(t *testing.T) {
	m := machine{State: NewState(), outbox: newOutbox()}
	for i := range 10_000 { // more than the writer buffers
		m.Registered[fleet.Key{Tenant: "acme", AgentID: fmt.Sprintf("agent-%05d", i)}] = time.Unix(int64(i), 0).UTC()
	}
	require.ErrorContains(t, m.encodeSnapshot(failingWriter{}), "disk full")
}
