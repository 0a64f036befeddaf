package ledger_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/ledger"
)

// marshalled is the stored form of a one-op change as encoding/json writes
// it: the reference the Revoke encoder must match byte for byte.
func marshalled(t testing.TB, op ledger.Op) []byte {
	b, err := json.Marshal(op)
	require.NoError(t, err)
	return append(append([]byte(`{"rev":1,"ops":[{"op":"revoke","data":`), b...), "}]}"...)
}

func TestRevokeJSONIsMarshals(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.FixedZone("x", 3600))
	k := fleet.Key{Tenant: "acme", AgentID: "a1"}
	for _, tc := range []struct {
		name string
		op   ledger.Revoke
	}{
		{"zero", ledger.Revoke{}},
		{"no event", ledger.Revoke{Key: k, Revocation: fleet.Revocation{Reason: "r", ShutdownTimeout: 5 * time.Second, RevokedAt: at, Source: "admin"}}},
		{"event", ledger.Revoke{Key: k, Revocation: fleet.Revocation{Reason: "r", RevokedAt: at, Source: "alert:x"},
			Event: &ledger.Event{ID: "e1", Tenant: "acme", AgentID: "a1", Type: "agent.revoked", Sequence: 7, CreatedAt: at}}},
		{"event without agent", ledger.Revoke{Key: k, Event: &ledger.Event{ID: "e1", Tenant: "acme", Type: "t"}}},
		{"body compacted and escaped", ledger.Revoke{Key: k, Event: &ledger.Event{ID: "e", Body: []byte("{ \"a\" : [1, \"<&>\u2028\"] }")}}},
		{"strings to escape", ledger.Revoke{
			Key:        fleet.Key{Tenant: "a\"b\\c", AgentID: "<script>&\u2029\x01\xff"},
			Revocation: fleet.Revocation{Reason: "line\nbreak\té", Source: "alert:ünï"},
		}},
		{"negative timeout", ledger.Revoke{Key: k, Revocation: fleet.Revocation{ShutdownTimeout: -1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ledger.EncodeChange(ledger.Change{Revision: 1, Ops: []ledger.Op{tc.op}})
			require.NoError(t, err)
			require.Equal(t, string(marshalled(t, tc.op)), string(got))
			back, err := ledger.DecodeChange(got)
			require.NoError(t, err)
			require.Len(t, back.Ops, 1)
		})
	}
}

// What encoding/json refuses, the Revoke encoder refuses.
func TestRevokeJSONRefusals(t *testing.T) {
	for name, op := range map[string]ledger.Revoke{
		"year out of range": {Revocation: fleet.Revocation{RevokedAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}},
		"invalid body":      {Event: &ledger.Event{ID: "e", Body: []byte("{")}},
	} {
		t.Run(name, func(t *testing.T) {
			_, want := json.Marshal(op)
			require.Error(t, want)
			_, err := ledger.EncodeChange(ledger.Change{Revision: 1, Ops: []ledger.Op{op}})
			require.ErrorContains(t, err, "encode revoke op")
		})
	}
}

// FuzzRevokeJSON: for any strings, times and body, the Revoke encoder writes
// what encoding/json writes, or fails where it fails.
func FuzzRevokeJSON(f *testing.F) {
	f.Add("acme", "a1", "reason", "admin", "e1", int64(5e9), int64(1e18), uint64(1), []byte(`{"x":1}`))
	f.Add("a\"<>&", "\u2028\xff", "\n\t", "ü", "", int64(-1), int64(-1e18), uint64(0), []byte(nil))
	f.Fuzz(func(t *testing.T, tenant, agent, reason, source, id string, timeout, nanos int64, seq uint64, body []byte) {
		at := time.Unix(0, nanos).UTC()
		op := ledger.Revoke{
			Key:        fleet.Key{Tenant: tenant, AgentID: agent},
			Revocation: fleet.Revocation{Reason: reason, ShutdownTimeout: time.Duration(timeout), RevokedAt: at, Source: source},
		}
		if id != "" {
			op.Event = &ledger.Event{ID: id, Tenant: tenant, AgentID: agent, Type: "agent.revoked", Sequence: seq, CreatedAt: at, Body: body}
		}
		got, err := ledger.EncodeChange(ledger.Change{Revision: 1, Ops: []ledger.Op{op}})
		if _, merr := json.Marshal(op); merr != nil {
			require.Error(t, err)
			return
		}
		require.NoError(t, err)
		require.Equal(t, string(marshalled(t, op)), string(got))
	})
}
