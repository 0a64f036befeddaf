package heartbeat

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/fleet"
)

// totalChanges sums the change counts of every shard.
func totalChanges(s *Store) ChangeCounts {
	var sum ChangeCounts
	for i := range NumShards {
		c := s.ShardChanges(i)
		for k := range sum {
			sum[k] += c[k]
		}
	}
	return sum
}

// TestStoreCountsChanges: each write counts exactly the kinds of change it
// made, once, and a write that changes nothing counts nothing.
func TestStoreCountsChanges(t *testing.T) {
	s := NewStore(100, nil)
	k := stKey("a")
	stMustBeat(t, s, stFullBeat("a", stT0))
	// beat edits the agent's beat, kept from one step to the next, and
	// sends it a second after the last one.
	at, req := stT0, stFullBeat("a", stT0)
	beat := func(edit func(*BeatRequest)) func() {
		return func() {
			at = at.Add(time.Second)
			if edit != nil {
				edit(req)
			}
			r := *req
			r.Time = at
			stMustBeat(t, s, &r)
		}
	}
	for _, tc := range []struct {
		name  string
		write func()
		want  []Change
	}{
		{"a beat", beat(nil), []Change{ChangeLastBeat}},
		{"the same beat again", func() { r := *req; r.Time = at; stMustBeat(t, s, &r) }, nil},
		{"interval", beat(func(r *BeatRequest) { r.Interval = time.Minute }), []Change{ChangeLastBeat, ChangeInterval}},
		{"own thresholds", beat(func(r *BeatRequest) {
			r.Thresholds = fleet.Thresholds{SilentAfter: 2, ZombieAfter: 4}
		}), []Change{ChangeLastBeat, ChangeThresholds}},
		{"uptime", beat(func(r *BeatRequest) { r.Uptime = 99 }), []Change{ChangeLastBeat, ChangeUptime}},
		{"requests", beat(func(r *BeatRequest) { r.Metrics.RequestsHandled++ }), []Change{ChangeLastBeat, ChangeRequests}},
		{"errors", beat(func(r *BeatRequest) { r.Metrics.Errors = 3 }), []Change{ChangeLastBeat, ChangeErrors}},
		{"latency", beat(func(r *BeatRequest) { r.Metrics.AvgLatencyMs = 1 }), []Change{ChangeLastBeat, ChangeLatency}},
		{"a beat without metrics keeps them", beat(func(r *BeatRequest) { r.HasMetrics = false }), []Change{ChangeLastBeat}},
		{"version", beat(func(r *BeatRequest) { r.Version = "2" }), []Change{ChangeLastBeat, ChangeInfo}},
		{"platform", beat(func(r *BeatRequest) { r.Platform.Node = "node-2" }), []Change{ChangeLastBeat, ChangeInfo}},
		{"shutdown", beat(func(r *BeatRequest) { r.Status = StatusShutdown }), []Change{ChangeLastBeat, ChangeStopped, ChangeInfo}},
		{"revoked", func() { require.True(t, s.SetRevoked(k, true)) }, []Change{ChangeRevoked}},
		{"revoked again", func() { require.True(t, s.SetRevoked(k, true)) }, nil},
		{"reinstated", func() { require.True(t, s.SetRevoked(k, false)) }, []Change{ChangeRevoked}},
		{"a command", func() { require.True(t, s.SetCommand(k, fleet.CommandPause, 1)) }, nil},
		{"restored as it is", func() { a := stMustGet(t, s, k); s.Restore(&a) }, nil},
		{"merged, older", func() {
			a := stMustGet(t, s, k)
			a.LastHeartbeat = a.LastHeartbeat.Add(-time.Second)
			a.Version = "older"
			require.False(t, s.Merge(&a))
		}, nil},
		{"merged, newer", func() {
			a := stMustGet(t, s, k)
			a.LastHeartbeat = a.LastHeartbeat.Add(time.Hour)
			a.Paused = true
			require.True(t, s.Merge(&a))
		}, []Change{ChangeLastBeat, ChangePaused}},
		{"another agent", func() { stMustBeat(t, s, stBeat("b", at)) }, []Change{ChangeMembers}},
		{"deleted", func() { require.True(t, s.Delete(stKey("b"))) }, []Change{ChangeMembers}},
		{"an unknown agent deleted", func() { require.False(t, s.Delete(stKey("b"))) }, nil},
		{"a tenant dropped", func() { require.Equal(t, 1, s.DropTenants(func(string) bool { return false })) }, []Change{ChangeMembers}},
	} {
		before := totalChanges(s)
		tc.write()
		after := totalChanges(s)
		var want ChangeCounts
		for _, c := range tc.want {
			want[c] = 1
		}
		for c := range after {
			after[c] -= before[c]
		}
		require.Equal(t, want, after, tc.name)
	}
}

// TestEachShardReportsCopiedChanges: EachShard calls its shard function
// once per shard, in order, before that shard's agents, with the counts the
// shard had when it was copied.
func TestEachShardReportsCopiedChanges(t *testing.T) {
	s := NewStore(1000, nil)
	for i := range 300 {
		stMustBeat(t, s, stBeat(string(rune('a'+i%26))+string(rune('A'+i/26)), stT0))
	}
	next, agents := 0, 0
	var sum ChangeCounts
	s.EachShard(func(i int, c *ChangeCounts) {
		require.Equal(t, next, i)
		require.Equal(t, s.ShardChanges(i), *c)
		next++
		for k := range sum {
			sum[k] += c[k]
		}
	}, func(*Agent) bool {
		require.Positive(t, next, "an agent before its shard")
		agents++
		return true
	})
	require.Equal(t, NumShards, next)
	require.Equal(t, 300, agents)
	require.Equal(t, uint64(300), sum[ChangeMembers])
	require.Equal(t, totalChanges(s), sum)
}
