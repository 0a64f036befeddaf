package heartbeat

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/fleet"
)

// shardChanges returns the change counts of shard i.
func (s *Store) shardChanges(i int) ChangeCounts {
	sh := &s.shards[i]
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	return sh.changes
}

// totalChanges sums the change counts of every shard.
func totalChanges(s *Store) ChangeCounts {
	var sum ChangeCounts
	for i := range NumShards {
		c := s.shardChanges(i)
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

// TestEachRunReportsCopiedChanges: EachRun calls its run function once per
// run of shards, in order, before that run's agents, with the counts its
// shards had when they were copied.
func TestEachRunReportsCopiedChanges(t *testing.T) {
	s := NewStore(1000, nil)
	for i := range 300 {
		stMustBeat(t, s, stBeat(fmt.Sprintf("agent-%d", i), stT0))
	}
	var copies RunCopies // reused from one size of run to the next
	for _, perRun := range []int{1, 16, NumShards, 16} {
		next, agents := 0, 0
		var sum ChangeCounts
		s.EachRun(perRun, &copies, func(i int, c *ChangeCounts) {
			require.Equal(t, next, i)
			var want ChangeCounts
			for j := i * perRun; j < (i+1)*perRun; j++ {
				for k, n := range s.shardChanges(j) {
					want[k] += n
				}
			}
			require.Equal(t, want, *c)
			next++
			for k := range sum {
				sum[k] += c[k]
			}
		}, func(*Agent) bool {
			require.Positive(t, next, "an agent before its run")
			agents++
			return true
		})
		require.Equal(t, NumShards/perRun, next)
		require.Equal(t, 300, agents)
		require.Equal(t, uint64(300), sum[ChangeMembers])
		require.Equal(t, totalChanges(s), sum)
	}
	require.Panics(t, func() { s.EachRun(3, nil, nil, func(*Agent) bool { return true }) })
}

// TestRewrittenStringsCountedThroughCompaction: strings rewritten at the
// same length are counted even when the compaction they trigger puts the
// agent's strings back where they were.
func TestRewrittenStringsCountedThroughCompaction(t *testing.T) {
	s := NewStore(100_000, nil)
	agent := stFullBeat("agent", stT0)
	stMustBeat(t, s, agent)
	home := s.shardOf(s.hash(agent.Key))
	slot := home.find(s.hash(agent.Key), agent.Key)
	size := int(home.records[slot].blobLen)
	// Agents of the same shard, registered after it and deleted, leave
	// garbage just short of what makes the next rewrite compact.
	for i := 0; home.garbage+size <= 64<<10; i++ {
		req := stFullBeat(fmt.Sprintf("other-%d", i), stT0)
		if s.shardOf(s.hash(req.Key)) != home {
			continue
		}
		stMustBeat(t, s, req)
		require.True(t, s.Delete(req.Key))
	}
	require.Zero(t, home.records[slot].blobOff, "the agent's strings open the arena")

	before := totalChanges(s)
	agent.Version = "9.9.9" // as long as "1.4.2"
	agent.Time = stT0.Add(time.Second)
	stMustBeat(t, s, agent)
	require.Zero(t, home.garbage, "the rewrite compacted the arena")
	require.Zero(t, home.records[slot].blobOff, "and put the strings back at the start")
	require.Equal(t, uint64(1), totalChanges(s)[ChangeInfo]-before[ChangeInfo])
	require.Equal(t, "9.9.9", stMustGet(t, s, agent.Key).Version)
}
