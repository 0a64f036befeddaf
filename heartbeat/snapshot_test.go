package heartbeat

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/agentsentinel/sentinel/fleet"
	"github.com/stretchr/testify/require"
)

// snapshotFleet returns a store with varied agents: full heartbeats,
// minimal ones, a stopped one, a deleted one.
func snapshotFleet(t testing.TB) *Store {
	s := NewStore(1000, nil)
	for i := range 300 {
		req := stFullBeat(fmt.Sprintf("agent-%03d", i), stT0.Add(time.Duration(i)*time.Millisecond+7))
		if i%3 == 0 {
			req = stBeat(fmt.Sprintf("agent-%03d", i), stT0.Add(time.Duration(i)*time.Second))
		}
		if i%10 == 0 {
			req.Status = StatusShutdown
			req.ExitCode, req.HasExitCode = -1, true
		}
		stMustBeat(t, s, req)
	}
	require.True(t, s.Delete(stKey("agent-007")))
	return s
}

func agentsOf(s *Store) map[fleet.Key]Agent {
	m := map[fleet.Key]Agent{}
	s.Each(func(a *Agent) bool {
		c := *a
		c.cloneStrings()
		m[c.Key] = c
		return true
	})
	return m
}

func TestSnapshotRoundTrip(t *testing.T) {
	src := snapshotFleet(t)
	var buf bytes.Buffer
	n, err := src.EncodeSnapshot(&buf, stT0.Add(time.Hour))
	require.NoError(t, err)
	require.Equal(t, 299, n)

	dst := NewStore(1, nil) // Restore ignores max_agents: admitted agents are never evicted
	takenAt, got, err := dst.DecodeSnapshot(bytes.NewReader(buf.Bytes()))
	require.NoError(t, err)
	require.Equal(t, 299, got)
	require.Equal(t, stT0.Add(time.Hour), takenAt)
	require.Equal(t, 299, dst.Len())
	require.Equal(t, agentsOf(src), agentsOf(dst), "every field survives to the nanosecond")
}

func TestSnapshotDecodeErrors(t *testing.T) {
	var buf bytes.Buffer
	_, err := snapshotFleet(t).EncodeSnapshot(&buf, stT0)
	require.NoError(t, err)
	good := buf.Bytes()
	withCount := func(n uint64) []byte {
		b := bytes.Clone(good)
		binary.LittleEndian.PutUint64(b[len(b)-8:], n)
		return b
	}
	for _, tt := range []struct {
		name string
		data []byte
		msg  string
	}{
		{"empty", nil, "snapshot header: unexpected EOF"},
		{"truncated in a record", good[:len(good)/2], "unexpected EOF"},
		{"no trailer", good[:len(good)-9], "unexpected EOF"},
		{"count mismatch", withCount(3), "snapshot holds 299 agents but its trailer says 3"},
		{"trailing data", append(bytes.Clone(good), 0), "data after the last agent"},
		{"bad marker", append(bytes.Clone(good[:8]), 7), "bad record marker 7"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := NewStore(1000, nil).DecodeSnapshot(bytes.NewReader(tt.data))
			require.ErrorContains(t, err, tt.msg)
		})
	}
}

// Each copies one shard at a time, so an fn that writes to the store does
// not deadlock, and an early false stops it.
func TestStoreEach(t *testing.T) {
	s := snapshotFleet(t)
	n := 0
	s.Each(func(a *Agent) bool {
		stMustBeat(t, s, stBeat(a.AgentID, stT0.Add(48*time.Hour)))
		n++
		return true
	})
	require.Equal(t, 299, n)
	n = 0
	s.Each(func(*Agent) bool { n++; return n < 5 })
	require.Equal(t, 5, n)
}
