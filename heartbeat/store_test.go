package heartbeat

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/internal/testutil"
)

var (
	stT0     = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	stTh     = fleet.Thresholds{SilentAfter: 5, ZombieAfter: 15}
	stPolicy = &fleet.ThresholdPolicy{Global: stTh}
)

func stKey(id string) fleet.Key { return fleet.Key{Tenant: "acme", AgentID: id} }

// beat is a minimal heartbeat of id at t with a 10 s interval.
func stBeat(id string, t time.Time) *BeatRequest {
	return &BeatRequest{Key: stKey(id), Time: t, Interval: 10 * time.Second}
}

func stMustBeat(t testing.TB, s *Store, req *BeatRequest) BeatResult {
	t.Helper()
	res, err := s.Beat(req, stTh)
	require.NoError(t, err)
	return res
}

func stMustGet(t *testing.T, s *Store, k fleet.Key) Agent {
	t.Helper()
	a, ok := s.Get(k)
	require.True(t, ok, "agent %s", k)
	return a
}

func stState(t *testing.T, s *Store, k fleet.Key, now time.Time, th *fleet.ThresholdPolicy) fleet.State {
	t.Helper()
	a := stMustGet(t, s, k)
	return a.State(now, th)
}

func stFullBeat(id string, t time.Time) *BeatRequest {
	return &BeatRequest{
		Key: stKey(id), Time: t, Interval: 30 * time.Second, Status: StatusHealthy, Version: "1.4.2",
		Platform: Platform{
			Type: PlatformKubernetes, ContainerID: "containerd://0123", Image: "reg/agent:1.4.2",
			PodName: "agent-7d9f", Namespace: "prod", Node: "node-1", FunctionName: "", Region: "eu-west-1",
			Hostname: "agent-7d9f", OS: "linux", PID: 4242,
		},
		HasPlatform: true,
		Uptime:      3600, HasUptime: true,
		Metrics:    ReportedMetrics{RequestsHandled: 1500, Errors: 2, AvgLatencyMs: 145},
		HasMetrics: true,
		ExitCode:   0, HasExitCode: false,
	}
}

func TestStoreBeatRegisterGet(t *testing.T) {
	s := NewStore(10, nil)
	_, ok := s.Get(stKey("a"))
	require.False(t, ok)

	req := stFullBeat("a", stT0)
	res := stMustBeat(t, s, req)
	require.Equal(t, BeatResult{Registered: true, Previous: fleet.StateActive}, res)
	require.Equal(t, 1, s.Len())
	want := Agent{
		Key: stKey("a"), Status: StatusHealthy, Version: "1.4.2", Platform: req.Platform,
		RegisteredAt: stT0, LastHeartbeat: stT0, Interval: 30 * time.Second,
		UptimeSeconds: 3600, HasUptime: true, Metrics: req.Metrics, HasMetrics: true,
	}
	require.Equal(t, want, stMustGet(t, s, stKey("a")))

	tests := []struct {
		name   string
		req    func(at time.Time) *BeatRequest
		update func(a *Agent)
	}{
		{"bare beat keeps version, platform, metrics and status", func(at time.Time) *BeatRequest {
			return &BeatRequest{Key: stKey("a"), Time: at, Interval: 30 * time.Second}
		}, func(*Agent) {}},
		{"new version only", func(at time.Time) *BeatRequest {
			return &BeatRequest{Key: stKey("a"), Time: at, Interval: 30 * time.Second, Version: "1.5.0"}
		}, func(a *Agent) { a.Version = "1.5.0" }},
		{"new platform only", func(at time.Time) *BeatRequest {
			return &BeatRequest{Key: stKey("a"), Time: at, Interval: 30 * time.Second,
				Platform: Platform{Type: PlatformDocker, ContainerID: "d0", Hostname: "d0", PID: 1}, HasPlatform: true}
		}, func(a *Agent) { a.Platform = Platform{Type: PlatformDocker, ContainerID: "d0", Hostname: "d0", PID: 1} }},
		{"status, interval, uptime, metrics, exit code", func(at time.Time) *BeatRequest {
			return &BeatRequest{Key: stKey("a"), Time: at, Interval: time.Minute, Status: StatusDegraded,
				Uptime: 7, HasUptime: true, Metrics: ReportedMetrics{RequestsHandled: 9}, HasMetrics: true,
				ExitCode: 3, HasExitCode: true}
		}, func(a *Agent) {
			a.Status, a.Interval, a.UptimeSeconds = StatusDegraded, time.Minute, 7
			a.Metrics, a.ExitCode, a.HasExitCode = ReportedMetrics{RequestsHandled: 9}, 3, true
		}},
		{"token issue", func(at time.Time) *BeatRequest {
			return &BeatRequest{Key: stKey("a"), Time: at, Interval: time.Minute, IssueToken: true}
		}, func(a *Agent) { a.TokenVersion++ }},
		{"presented newer token version is adopted", func(at time.Time) *BeatRequest {
			return &BeatRequest{Key: stKey("a"), Time: at, Interval: time.Minute, PresentedTokenVersion: 7}
		}, func(a *Agent) { a.TokenVersion = 7 }},
		{"presented older token version is ignored", func(at time.Time) *BeatRequest {
			return &BeatRequest{Key: stKey("a"), Time: at, Interval: time.Minute, PresentedTokenVersion: 2}
		}, func(*Agent) {}},
	}
	at := stT0
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			prev := stMustGet(t, s, stKey("a"))
			at = at.Add(time.Second)
			res := stMustBeat(t, s, tc.req(at))
			require.False(t, res.Registered)
			require.Equal(t, fleet.StateActive, res.Previous)
			require.Equal(t, prev.LastHeartbeat, res.PreviousBeat)
			want := prev
			want.LastHeartbeat = at
			if i := tc.req(at).Interval; i != 0 {
				want.Interval = i
			}
			tc.update(&want)
			require.Equal(t, want, stMustGet(t, s, stKey("a")))
			if tc.req(at).IssueToken {
				require.Equal(t, want.TokenVersion, res.TokenVersion)
			}
		})
	}
	require.Equal(t, 1, s.Len())
}

// TestGetIsACopy: an Agent from Get owns its strings.
func TestStoreGetIsACopy(t *testing.T) {
	s := NewStore(10, nil)
	stMustBeat(t, s, stFullBeat("a", stT0))
	a := stMustGet(t, s, stKey("a"))
	for i := range 2000 { // rewrite and compact the arena under a's feet
		req := stFullBeat("a", stT0)
		req.Platform.Image = fmt.Sprintf("img-%d-%s", i, strings.Repeat("x", 200))
		stMustBeat(t, s, req)
	}
	require.Equal(t, "reg/agent:1.4.2", a.Platform.Image)
	require.Equal(t, "agent-7d9f", a.Platform.PodName)
}

func TestStoreStateTransitions(t *testing.T) {
	tests := []struct {
		age  time.Duration
		want fleet.State
	}{
		{0, fleet.StateActive},
		{-time.Hour, fleet.StateActive}, // clock skew: never negative missed beats
		{49*time.Second + 999*time.Millisecond, fleet.StateActive},
		{50 * time.Second, fleet.StateSilent}, // exactly 5 missed
		{149*time.Second + 999999999, fleet.StateSilent},
		{150 * time.Second, fleet.StateZombie}, // exactly 15 missed
		{24 * time.Hour, fleet.StateZombie},
	}
	for _, tc := range tests {
		t.Run(tc.age.String(), func(t *testing.T) {
			s := NewStore(10, nil)
			stMustBeat(t, s, stBeat("a", stT0))
			a := stMustGet(t, s, stKey("a"))
			require.Equal(t, tc.want, a.State(stT0.Add(tc.age), stPolicy))
			// The next beat reports the state it found.
			res := stMustBeat(t, s, stBeat("a", stT0.Add(tc.age)))
			require.Equal(t, tc.want, res.Previous)
			require.Equal(t, fleet.StateActive, stState(t, s, stKey("a"), stT0.Add(tc.age), stPolicy))
		})
	}
}

func TestStoreStoppedAndRevoked(t *testing.T) {
	s := NewStore(10, nil)
	stMustBeat(t, s, stFullBeat("a", stT0))

	t.Run("shutdown stops", func(t *testing.T) {
		req := stBeat("a", stT0.Add(time.Second))
		req.Status, req.ExitCode, req.HasExitCode = StatusShutdown, 3, true
		res := stMustBeat(t, s, req)
		require.Equal(t, fleet.StateActive, res.Previous)
		a := stMustGet(t, s, stKey("a"))
		require.True(t, a.Stopped)
		require.Equal(t, StatusShutdown, a.Status)
		require.Equal(t, int64(3), a.ExitCode)
		// Stopped forever, however long it stays quiet.
		require.Equal(t, fleet.StateStopped, a.State(stT0.Add(1000*time.Hour), stPolicy))
	})
	t.Run("next beat starts it again", func(t *testing.T) {
		res := stMustBeat(t, s, stBeat("a", stT0.Add(time.Hour)))
		require.Equal(t, fleet.StateStopped, res.Previous)
		a := stMustGet(t, s, stKey("a"))
		require.False(t, a.Stopped)
		require.Equal(t, StatusUnknown, a.Status) // shutdown is not carried over
		require.Equal(t, fleet.StateActive, a.State(stT0.Add(time.Hour), stPolicy))
	})
	t.Run("revoked beats are recorded but answered revoked", func(t *testing.T) {
		require.True(t, s.SetRevoked(stKey("a"), true))
		require.True(t, s.SetCommand(stKey("a"), fleet.CommandPause, 7))
		req := stFullBeat("a", stT0.Add(2*time.Hour))
		req.Version, req.Status, req.IssueToken = "9.9.9", StatusUnhealthy, true
		res := stMustBeat(t, s, req)
		require.Equal(t, BeatResult{Previous: fleet.StateRevoked, PreviousBeat: stT0.Add(time.Hour), Revoked: true}, res,
			"no token and no command for a revoked agent")
		after := stMustGet(t, s, stKey("a"))
		require.True(t, after.Revoked)
		require.Equal(t, "9.9.9", after.Version)
		require.Equal(t, stT0.Add(2*time.Hour), after.LastHeartbeat, "seen alive: a reinstatement must not find it ZOMBIE")
		require.Equal(t, fleet.CommandPause, after.Command, "the command waits for the reinstatement")
		require.Equal(t, fleet.StateRevoked, stState(t, s, stKey("a"), stT0.Add(2*time.Hour), stPolicy))
		require.True(t, s.SetCommand(stKey("a"), fleet.CommandNone, 0))
	})
	t.Run("reinstated beats are recorded", func(t *testing.T) {
		require.True(t, s.SetRevoked(stKey("a"), false))
		res := stMustBeat(t, s, stBeat("a", stT0.Add(3*time.Hour)))
		require.False(t, res.Revoked)
		require.Equal(t, fleet.StateZombie, res.Previous) // quiet since the hour mark: RECOVERED for the receiver
		require.Equal(t, stT0.Add(3*time.Hour), stMustGet(t, s, stKey("a")).LastHeartbeat)
	})
	t.Run("unknown agents", func(t *testing.T) {
		require.False(t, s.SetRevoked(stKey("nobody"), true))
		require.False(t, s.SetCommand(stKey("nobody"), fleet.CommandPause, 1))
		require.False(t, s.Delete(stKey("nobody")))
	})
}

func TestStoreNewAgentHook(t *testing.T) {
	s := NewStore(10, func(k fleet.Key) (bool, fleet.Command, uint32) {
		switch k.AgentID {
		case "revoked":
			return true, fleet.CommandNone, 0
		case "commanded":
			return false, fleet.CommandTerminate, 7
		}
		return false, fleet.CommandNone, 0
	})
	res := stMustBeat(t, s, stBeat("revoked", stT0))
	require.True(t, res.Registered)
	require.True(t, res.Revoked)
	a := stMustGet(t, s, stKey("revoked"))
	require.True(t, a.Revoked)
	require.Equal(t, stT0, a.LastHeartbeat) // registration is still when it was seen

	res = stMustBeat(t, s, stBeat("commanded", stT0))
	require.Equal(t, fleet.CommandTerminate, res.Command)
	require.Equal(t, uint32(7), res.CommandSeq)
}

func TestStoreCommandDelivery(t *testing.T) {
	type step struct {
		set     fleet.Command // SetCommand before the beat, when not CommandNone
		seq     uint32
		carried fleet.Command
		carSeq  uint32
		acked   uint32
		pending fleet.Command // Agent.Command after the beat
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"carried once, acknowledged by the next beat", []step{
			{set: fleet.CommandPause, seq: 1, carried: fleet.CommandPause, carSeq: 1, pending: fleet.CommandPause},
			{acked: 1},
			{},
		}},
		{"a newer command replaces a carried one", []step{
			{set: fleet.CommandPause, seq: 1, carried: fleet.CommandPause, carSeq: 1, pending: fleet.CommandPause},
			{set: fleet.CommandTerminate, seq: 2, carried: fleet.CommandTerminate, carSeq: 2, pending: fleet.CommandTerminate},
			{acked: 2},
		}},
		{"a newer command before delivery", []step{
			{set: fleet.CommandPause, seq: 1, carried: fleet.CommandPause, carSeq: 1, pending: fleet.CommandPause},
			{acked: 1},
			{set: fleet.CommandResume, seq: 2, carried: fleet.CommandResume, carSeq: 2, pending: fleet.CommandResume},
			{acked: 2},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := NewStore(10, nil)
			stMustBeat(t, s, stBeat("a", stT0))
			for i, st := range tc.steps {
				if st.set != fleet.CommandNone {
					require.True(t, s.SetCommand(stKey("a"), st.set, st.seq))
					require.Equal(t, st.set, stMustGet(t, s, stKey("a")).Command)
				}
				res := stMustBeat(t, s, stBeat("a", stT0.Add(time.Duration(i+1)*time.Second)))
				require.Equal(t, st.carried, res.Command, "step %d", i)
				require.Equal(t, st.carSeq, res.CommandSeq, "step %d", i)
				require.Equal(t, st.acked, res.AckedCommandSeq, "step %d", i)
				require.Equal(t, st.pending, stMustGet(t, s, stKey("a")).Command, "step %d", i)
			}
		})
	}
	t.Run("a command set twice before a beat is carried once", func(t *testing.T) {
		s := NewStore(10, nil)
		stMustBeat(t, s, stBeat("a", stT0))
		require.True(t, s.SetCommand(stKey("a"), fleet.CommandPause, 1))
		require.True(t, s.SetCommand(stKey("a"), fleet.CommandTerminate, 2))
		res := stMustBeat(t, s, stBeat("a", stT0.Add(time.Second)))
		require.Equal(t, fleet.CommandTerminate, res.Command)
		require.Equal(t, uint32(2), res.CommandSeq)
	})
}

// forceCollision links a record for k into the chain of hash h, as a
// 64-bit hash collision would: real collisions cannot be produced on purpose.
func stForceCollision(s *Store, h uint64, k fleet.Key) {
	sh := s.shardOf(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	r := sh.insert(h)
	r.lastBeat = stT0.UnixNano()
	sh.setBlob(r, appendBlob(nil, k, "", &Platform{}))
	s.count.Add(1)
}

// chain returns the agent ids in the chain of h, head first.
func stChain(s *Store, h uint64) []string {
	sh := s.shardOf(h)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	var ids []string
	for next := uint32(sh.index[h]); next != 0; next = sh.records[next-1].next {
		ids = append(ids, strings.Clone(sh.str(&sh.records[next-1], strAgentID)))
	}
	return ids
}

func TestStoreDeleteHashChains(t *testing.T) {
	// The real key's position in a chain of three: insert prepends.
	for _, tc := range []struct {
		name   string
		before int // colliding records inserted before the real one
		chain  []string
		rest   []string
	}{
		{"tail", 0, []string{"x2", "x1", "real"}, []string{"x2", "x1"}},
		{"middle", 1, []string{"x2", "real", "x1"}, []string{"x2", "x1"}},
		{"head", 2, []string{"real", "x2", "x1"}, []string{"x2", "x1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewStore(10, nil)
			h := s.hash(stKey("real"))
			for i := 1; i <= 2; i++ {
				if i == tc.before+1 {
					stMustBeat(t, s, stBeat("real", stT0))
				}
				stForceCollision(s, h, stKey(fmt.Sprintf("x%d", i)))
			}
			if tc.before == 2 {
				stMustBeat(t, s, stBeat("real", stT0))
			}
			require.Equal(t, tc.chain, stChain(s, h))
			require.Equal(t, 3, s.Len())

			require.Equal(t, stT0, stMustGet(t, s, stKey("real")).LastHeartbeat) // found through the chain
			require.True(t, s.Delete(stKey("real")))
			require.False(t, s.Delete(stKey("real")))
			require.Equal(t, tc.rest, stChain(s, h))
			require.Equal(t, 2, s.Len())
			_, ok := s.Get(stKey("real"))
			require.False(t, ok)
			sh := s.shardOf(h)
			for _, id := range tc.rest {
				require.GreaterOrEqual(t, sh.find(h, stKey(id)), 0, id)
			}

			// The freed slot is reused, and the real key re-registers at the head.
			freed := sh.free[len(sh.free)-1]
			res := stMustBeat(t, s, stBeat("real", stT0.Add(time.Minute)))
			require.True(t, res.Registered)
			require.Equal(t, int(freed), sh.find(h, stKey("real")))
			require.Equal(t, append([]string{"real"}, tc.rest...), stChain(s, h))
			require.Equal(t, stT0.Add(time.Minute), stMustGet(t, s, stKey("real")).RegisteredAt)
			stCheckIndex(t, s)
		})
	}
}

// stCheckIndex checks that every index entry names the head of a chain of
// used records and keeps that head's blob offset, which find reads the key
// at (find still finds a record whose entry is stale, the slow way: only
// this check sees it).
func stCheckIndex(t *testing.T, s *Store) {
	t.Helper()
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.RLock()
		n := 0
		for h, e := range sh.index {
			head := &sh.records[uint32(e)-1]
			require.Equal(t, head.blobOff, uint32(e>>32), "shard %d: index entry of %x keeps a stale offset", i, h)
			for next := uint32(e); next != 0; next = sh.records[next-1].next {
				require.NotZero(t, sh.records[next-1].flags&flagUsed, "shard %d: chain of %x holds a free record", i, h)
				n++
			}
		}
		require.Equal(t, len(sh.records)-len(sh.free), n, "shard %d: records reachable from the index", i)
		sh.mu.RUnlock()
	}
}

func TestStoreDeleteAndSlotReuse(t *testing.T) {
	s := NewStore(10_000, nil)
	for i := range 3000 {
		stMustBeat(t, s, stFullBeat(fmt.Sprintf("a-%d", i), stT0))
	}
	slots := func() (n int) {
		for i := range s.shards {
			n += len(s.shards[i].records)
		}
		return n
	}
	require.Equal(t, 3000, slots())
	for i := 0; i < 3000; i += 2 {
		require.True(t, s.Delete(stKey(fmt.Sprintf("a-%d", i))))
	}
	require.Equal(t, 1500, s.Len())
	for i := range 1500 {
		stMustBeat(t, s, stFullBeat(fmt.Sprintf("b-%d", i), stT0))
	}
	require.Equal(t, 3000, s.Len())
	// Freed slots are reused before records grow (without reuse: 4500). The
	// shards fill unevenly: those that got more newcomers than they lost
	// grow, by ~350 slots in all.
	require.Less(t, slots(), 3700)
	for i := range 3000 {
		_, ok := s.Get(stKey(fmt.Sprintf("a-%d", i)))
		require.Equal(t, i%2 == 1, ok, i)
	}
	for i := range 1500 {
		require.Equal(t, "reg/agent:1.4.2", stMustGet(t, s, stKey(fmt.Sprintf("b-%d", i))).Platform.Image)
	}
	require.Equal(t, 3000, s.Snapshot(nil).Len())
}

func TestStoreMaxAgents(t *testing.T) {
	s := NewStore(3, nil)
	for _, id := range []string{"a", "b", "c"} {
		stMustBeat(t, s, stBeat(id, stT0))
	}
	_, err := s.Beat(stBeat("d", stT0), stTh)
	require.ErrorIs(t, err, ErrTooManyAgents)
	require.Equal(t, 3, s.Len())
	_, ok := s.Get(stKey("d"))
	require.False(t, ok)
	// Nobody was evicted, and known agents keep beating.
	for _, id := range []string{"a", "b", "c"} {
		stMustBeat(t, s, stBeat(id, stT0.Add(time.Second)))
	}

	require.True(t, s.Delete(stKey("b")))
	stMustBeat(t, s, stBeat("d", stT0))
	_, err = s.Beat(stBeat("e", stT0), stTh)
	require.ErrorIs(t, err, ErrTooManyAgents)

	// Lowering the limit evicts nobody; restoring ignores it.
	s.SetLimit(1)
	require.Equal(t, 3, s.Len())
	stMustBeat(t, s, stBeat("a", stT0.Add(2*time.Second)))
	_, err = s.Beat(stBeat("e", stT0), stTh)
	require.ErrorIs(t, err, ErrTooManyAgents)
	s.Restore(&Agent{Key: stKey("restored"), LastHeartbeat: stT0, Interval: time.Second})
	require.Equal(t, 4, s.Len())
	require.Equal(t, 4, s.Snapshot(nil).Len())
}

func TestStoreMaxAgentsConcurrent(t *testing.T) {
	s := NewStore(50, nil)
	var admitted, refused atomic.Int64
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			_, err := s.Beat(stBeat(fmt.Sprintf("a-%d", i), stT0), stTh)
			switch {
			case err == nil:
				admitted.Add(1)
			case errors.Is(err, ErrTooManyAgents):
				refused.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	require.Equal(t, int64(50), admitted.Load())
	require.Equal(t, int64(150), refused.Load())
	require.Equal(t, 50, s.Len())
	require.Equal(t, 50, s.Snapshot(nil).Len())
}

func stPlatform(i, rev int) Platform {
	return Platform{
		Type:        PlatformKubernetes,
		ContainerID: fmt.Sprintf("containerd://%064x", i*7919+rev),
		Image:       fmt.Sprintf("registry.example.com/team/agent:%d.%d", i, rev),
		PodName:     fmt.Sprintf("agent-%d-%d", i, rev),
		Namespace:   "ns-" + strings.Repeat("n", rev%40),
		Node:        fmt.Sprintf("node-%d", rev),
		Hostname:    fmt.Sprintf("host-%d-%d", i, rev),
		Region:      "eu-west-1",
		OS:          "linux",
		PID:         int64(rev),
	}
}

// TestArenaCompaction changes platforms many times: the arenas are
// compacted, stay bounded, and every agent keeps exactly its latest strings.
func TestStoreArenaCompaction(t *testing.T) {
	s := NewStore(10_000, nil)
	// ~8 agents a shard × 60 revisions × ~150-byte blobs puts every shard
	// well past the 64 KiB of garbage that triggers a compaction, whatever
	// the hash seed does to the spread.
	const agents, revisions = 2000, 60
	compactions := 0
	for rev := range revisions {
		for i := range agents {
			req := stBeat(fmt.Sprintf("a-%d", i), stT0.Add(time.Duration(rev)*time.Second))
			req.Platform, req.HasPlatform = stPlatform(i, rev), true
			req.Version = fmt.Sprintf("v%d", rev)
			sh := s.shardOf(s.hash(req.Key))
			before := len(sh.arena)
			stMustBeat(t, s, req)
			if len(sh.arena) < before {
				compactions++
			}
		}
		// A beat without platform or version rewrites nothing.
		stMustBeat(t, s, stBeat("a-0", stT0.Add(time.Duration(rev)*time.Second)))
	}
	require.Positive(t, compactions)
	live, total := 0, 0
	for i := range s.shards {
		sh := &s.shards[i]
		total += len(sh.arena)
		for j := range sh.records {
			live += int(sh.records[j].blobLen)
		}
		require.Equal(t, len(sh.arena)-sh.garbage, stSumBlobs(sh), "shard %d garbage accounting", i)
	}
	require.LessOrEqual(t, total, 2*live+numShards*(64<<10))
	stCheckIndex(t, s)
	for i := range agents {
		a := stMustGet(t, s, stKey(fmt.Sprintf("a-%d", i)))
		require.Equal(t, stPlatform(i, revisions-1), a.Platform, i)
		require.Equal(t, fmt.Sprintf("v%d", revisions-1), a.Version)
	}
	// Deleted agents' blobs count as garbage and go at the next compaction.
	for i := range agents / 2 {
		require.True(t, s.Delete(stKey(fmt.Sprintf("a-%d", i))))
	}
	for i := range s.shards {
		require.Equal(t, len(s.shards[i].arena)-s.shards[i].garbage, stSumBlobs(&s.shards[i]))
	}
	stCheckIndex(t, s)
}

func stSumBlobs(sh *shard) (n int) {
	for j := range sh.records {
		if sh.records[j].flags&flagUsed != 0 {
			n += int(sh.records[j].blobLen)
		}
	}
	return n
}

// TestLongStrings: strings over MaxStringLen are cut, at a rune boundary.
func TestStoreLongStrings(t *testing.T) {
	s := NewStore(10, nil)
	req := stBeat("a", stT0)
	req.Version = strings.Repeat("v", MaxStringLen-1) + "é" // é is two bytes: the cut splits it
	req.Platform = Platform{Image: strings.Repeat("日", 100), Hostname: strings.Repeat("h", 1000)}
	req.HasPlatform = true
	stMustBeat(t, s, req)
	a := stMustGet(t, s, stKey("a"))
	require.Equal(t, strings.Repeat("v", MaxStringLen-1), a.Version)
	require.Equal(t, strings.Repeat("日", MaxStringLen/3), a.Platform.Image)
	require.Equal(t, strings.Repeat("h", MaxStringLen), a.Platform.Hostname)
	for _, s := range []string{a.Version, a.Platform.Image, a.Platform.Hostname} {
		require.True(t, utf8.ValidString(s))
	}
}

func TestStoreRestoreRoundTrip(t *testing.T) {
	src := NewStore(1000, nil)
	for i := range 300 {
		req := stFullBeat(fmt.Sprintf("a-%d", i), stT0.Add(-time.Duration(i)*time.Minute))
		req.Platform = stPlatform(i, i%7)
		req.Key.Tenant = []string{"acme", "globex"}[i%2]
		req.IssueToken = i%3 == 0
		req.HasExitCode, req.ExitCode = i%5 == 0, int64(i)
		req.HasUptime, req.HasMetrics = i%4 != 0, i%6 != 0
		if i%11 == 0 {
			req.Status = StatusShutdown
		}
		stMustBeat(t, src, req)
		if i%13 == 0 {
			src.SetRevoked(req.Key, true)
		}
		if i%17 == 0 {
			src.SetCommand(req.Key, fleet.CommandPause, uint32(i))
		}
	}
	var agents []Agent
	src.Snapshot(nil).Each(func(a *Agent) bool {
		c := *a
		c.cloneStrings()
		agents = append(agents, c)
		return true
	})
	require.Len(t, agents, 300)

	dst := NewStore(1, nil) // max_agents does not apply to restored agents
	for i := range agents {
		dst.Restore(&agents[i])
	}
	require.Equal(t, 300, dst.Len())
	for _, a := range agents {
		require.Equal(t, a, stMustGet(t, dst, a.Key))
	}
	// Restore replaces an agent with the same key.
	changed := agents[0]
	changed.Version, changed.Platform.Image, changed.Revoked = "changed", "img", !changed.Revoked
	dst.Restore(&changed)
	require.Equal(t, 300, dst.Len())
	require.Equal(t, changed, stMustGet(t, dst, changed.Key))
	stCheckIndex(t, dst)

	// Each stops when told.
	n := 0
	dst.Snapshot(nil).Each(func(*Agent) bool { n++; return n < 10 })
	require.Equal(t, 10, n)
}

// TestViewReuse: a View reused across snapshots reflects the latest state only.
func TestStoreViewReuse(t *testing.T) {
	s := NewStore(1000, nil)
	for i := range 100 {
		stMustBeat(t, s, stFullBeat(fmt.Sprintf("a-%d", i), stT0))
	}
	v := s.Snapshot(nil)
	require.Equal(t, 100, v.Len())
	for i := range 50 {
		s.Delete(stKey(fmt.Sprintf("a-%d", i)))
	}
	req := stFullBeat("a-99", stT0.Add(time.Hour))
	req.Version = "2.0"
	stMustBeat(t, s, req)
	v2 := s.Snapshot(v)
	require.Same(t, v, v2)
	require.Equal(t, 50, v.Len())
	seen := map[string]string{}
	v.Each(func(a *Agent) bool { seen[a.AgentID] = strings.Clone(a.Version); return true })
	require.Len(t, seen, 50)
	require.Equal(t, "2.0", seen["a-99"])
	require.NotContains(t, seen, "a-0")
}

// TestConcurrent runs beats, registrations, deletes, revocations and
// snapshots at once; with -race it checks the locking, and every snapshot
// must be internally consistent.
func TestStoreConcurrent(t *testing.T) {
	s := NewStore(1_000_000, nil)
	for i := range 1000 {
		stMustBeat(t, s, stFullBeat(fmt.Sprintf("stable-%d", i), stT0))
	}
	var stops []func()
	for w := range 3 {
		stops = append(stops, testutil.WriteWhile(t, func(i int) error {
			id := fmt.Sprintf("churn-%d-%d", w, i%300)
			req := stFullBeat(id, stT0.Add(time.Duration(i)*time.Millisecond))
			req.Platform = stPlatform(i, i%50)
			if _, err := s.Beat(req, stTh); err != nil {
				return err
			}
			switch i % 7 {
			case 0:
				s.Delete(stKey(id))
			case 1:
				s.SetRevoked(stKey(id), i%2 == 0)
			case 2:
				s.SetCommand(stKey(id), fleet.CommandPause, uint32(i))
			case 3:
				s.Get(stKey(fmt.Sprintf("stable-%d", i%1000)))
			}
			return nil
		}))
	}
	var v *View
	for range 30 {
		v = s.Snapshot(v)
		stable := 0
		v.Each(func(a *Agent) bool {
			if strings.HasPrefix(a.AgentID, "stable-") {
				stable++
				if a.Platform.Image != "reg/agent:1.4.2" || a.Version != "1.4.2" {
					t.Errorf("%s: torn record %+v", a.AgentID, a)
				}
			} else if !strings.HasPrefix(a.Platform.PodName, "agent-") {
				t.Errorf("%s: torn record %+v", a.AgentID, a)
			}
			return true
		})
		require.Equal(t, 1000, stable)
	}
	for _, stop := range stops {
		stop()
	}
	n := 0
	s.Snapshot(nil).Each(func(*Agent) bool { n++; return true })
	require.Equal(t, s.Len(), n)
	stCheckIndex(t, s)
}

// TestStoreSilentAgentSurvivesHeartbeatFlood is the durability-of-state
// proof: a silent agent's state survives a fleet whose heartbeat volume is
// many times any cache size. A cache (fastcache's minimum is 32 MB) would
// have dropped the silent agent's entry long before the flood is over; the
// store must keep it, byte for byte, and turn it SILENT and ZOMBIE on time.
func TestStoreSilentAgentSurvivesHeartbeatFlood(t *testing.T) {
	const (
		fleetSize = 200_000
		workers   = 2
		cacheSize = 32 << 20
	)
	// 2M heartbeats, ~3 GB of payload (~96x the cache); the race detector
	// checks every byte copied, so under -race 400k, ~0.6 GB (~19x).
	rounds := 10
	if testutil.RaceEnabled {
		rounds = 2
	}
	s := NewStore(fleetSize+1, nil)
	silentReq := stFullBeat("silent-one", stT0)
	silentReq.Platform.Image = "registry.example.com/silent/agent@sha256:" + strings.Repeat("5", 64)
	silentReq.Version = "0.9.1-rc.3+build.77"
	stMustBeat(t, s, silentReq)
	want := stMustGet(t, s, stKey("silent-one"))

	// Big platform strings; each round a quarter of the fleet changes them,
	// so blobs are rewritten and the arenas keep compacting (every beat
	// rewriting its blob only makes the test slower, not stronger).
	variants := make([]string, 61)
	for i := range variants {
		variants[i] = fmt.Sprintf("%03d-", i) + strings.Repeat(string(rune('a'+i%26)), 220)
	}
	ids := make([]string, fleetSize)
	for i := range ids {
		ids[i] = fmt.Sprintf("flood-%06d", i)
	}
	var payload atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			req := BeatRequest{Interval: 10 * time.Second, Status: StatusHealthy, HasPlatform: true, HasUptime: true}
			req.Key.Tenant = "flood"
			var bytes int64
			for r := range rounds {
				req.Time = stT0.Add(time.Duration(r+1) * 10 * time.Second)
				for i := w; i < fleetSize; i += workers {
					rev := (r + i%4) / 4 // changes every 4th round
					v := func(f int) string { return variants[(i+rev*7+f*13)%len(variants)] }
					req.Key.AgentID = ids[i]
					req.Version = v(0)[:20]
					req.Platform = Platform{
						Type: PlatformKubernetes, ContainerID: v(1), Image: v(2), PodName: v(3),
						Namespace: v(4), Node: v(5), Region: v(6), Hostname: v(7), OS: "linux", PID: int64(r),
					}
					req.Uptime = float64(r)
					if _, err := s.Beat(&req, stTh); err != nil {
						t.Error(err)
						return
					}
					bytes += int64(len(req.Key.AgentID) + len(req.Version) + 7*len(v(1)) + len("linux"))
				}
			}
			payload.Add(bytes)
		})
	}
	wg.Wait()
	require.Equal(t, fleetSize+1, s.Len())
	require.Greater(t, payload.Load(), int64(16*cacheSize), "the flood must dwarf a cache")
	t.Logf("%d heartbeats, %d MB of payload (%.0fx a 32 MB cache)",
		fleetSize*rounds, payload.Load()>>20, float64(payload.Load())/cacheSize)

	// Exactly intact: last heartbeat, platform, version, everything.
	got := stMustGet(t, s, stKey("silent-one"))
	require.Equal(t, want, got)
	require.Equal(t, stT0, got.LastHeartbeat)
	require.Equal(t, silentReq.Platform, got.Platform)
	require.Equal(t, "0.9.1-rc.3+build.77", got.Version)
	found := false
	s.Snapshot(nil).Each(func(a *Agent) bool {
		if a.Key == stKey("silent-one") {
			found = true
			require.Equal(t, want, *a)
		}
		return true
	})
	require.True(t, found)

	// It turns SILENT at exactly 5 missed 30 s beats and ZOMBIE at 15.
	for _, tc := range []struct {
		at   time.Duration
		want fleet.State
	}{
		{150*time.Second - 1, fleet.StateActive},
		{150 * time.Second, fleet.StateSilent},
		{450*time.Second - 1, fleet.StateSilent},
		{450 * time.Second, fleet.StateZombie},
	} {
		require.Equal(t, tc.want, got.State(stT0.Add(tc.at), stPolicy), tc.at)
	}
	// The flood agents hold their latest beat too: the store is no cache.
	for _, i := range []int{0, 1, fleetSize / 2, fleetSize - 1} {
		a := stMustGet(t, s, fleet.Key{Tenant: "flood", AgentID: ids[i]})
		require.Equal(t, stT0.Add(time.Duration(rounds)*10*time.Second), a.LastHeartbeat)
		require.Equal(t, variants[(i+(rounds-1+i%4)/4*7+2*13)%len(variants)], a.Platform.Image)
	}
}

// TestStoreBeatRewritesBlobOnlyOnChange: a beat compares its strings with
// the stored ones and writes a new blob only when one differs, and the
// agent always reads back what it last reported.
func TestStoreBeatRewritesBlobOnlyOnChange(t *testing.T) {
	base := stPlatform(1, 1)
	changed := base
	changed.Node = "node-other"
	pid := base
	pid.PID = 99
	long := base
	long.Hostname = strings.Repeat("h", 1000)
	cut := long
	cut.Hostname = long.Hostname[:MaxStringLen]
	for _, tc := range []struct {
		name string
		// The agent registers with version 1.0 and platform base, then
		// beats with version and platform (nil: the beat carries none).
		version      string
		platform     *Platform
		rewrite      bool
		wantVersion  string
		wantPlatform Platform
	}{
		{"same version and platform", "1.0", &base, false, "1.0", base},
		{"neither", "", nil, false, "1.0", base},
		{"same version only", "1.0", nil, false, "1.0", base},
		{"new version only", "1.1", nil, true, "1.1", base},
		{"new version, same platform", "1.1", &base, true, "1.1", base},
		{"one platform field", "", &changed, true, "1.0", changed},
		{"pid only, kept in the record", "", &pid, false, "1.0", pid},
		{"over-long string, cut", "", &long, true, "1.0", cut},
		{"platform cleared", "", &Platform{}, true, "1.0", Platform{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewStore(10, nil)
			first := stBeat("a", stT0)
			first.Version, first.Platform, first.HasPlatform = "1.0", base, true
			stMustBeat(t, s, first)
			sh := s.shardOf(s.hash(stKey("a")))
			for i := range 2 { // the second beat repeats the first: never a rewrite
				before, garbage := len(sh.arena), sh.garbage
				req := stBeat("a", stT0.Add(time.Duration(i+1)*time.Second))
				req.Version = tc.version
				if tc.platform != nil {
					req.Platform, req.HasPlatform = *tc.platform, true
				}
				stMustBeat(t, s, req)
				rewrite := tc.rewrite && i == 0
				require.Equal(t, rewrite, len(sh.arena) != before, "beat %d: arena grew", i)
				require.Equal(t, rewrite, sh.garbage != garbage, "beat %d: old blob became garbage", i)
				a := stMustGet(t, s, stKey("a"))
				require.Equal(t, stKey("a"), a.Key)
				require.Equal(t, tc.wantVersion, a.Version)
				require.Equal(t, tc.wantPlatform, a.Platform)
				stCheckIndex(t, s)
			}
		})
	}
}

// TestBlobStringsAndKey: the one-pass reader agrees with reading each string
// alone, and the in-place key check matches exactly the stored key.
func TestBlobStringsAndKey(t *testing.T) {
	p := stPlatform(3, 7)
	blob := appendBlob(nil, fleet.Key{Tenant: "acme", AgentID: "agent-1"}, "2.0", &p)
	strs := blobStrings(blob)
	for i := range numStrings {
		require.Equal(t, blobString(blob, i), strs[i], i)
	}
	require.Equal(t, [numStrings]string{}, blobStrings(nil))
	for _, tc := range []struct {
		key  fleet.Key
		want bool
	}{
		{fleet.Key{Tenant: "acme", AgentID: "agent-1"}, true},
		{fleet.Key{Tenant: "acme", AgentID: "agent-2"}, false},
		{fleet.Key{Tenant: "acme", AgentID: "agent-10"}, false},
		{fleet.Key{Tenant: "acme", AgentID: "agent-"}, false},
		{fleet.Key{Tenant: "acm", AgentID: "eagent-1"}, false},
		{fleet.Key{Tenant: "acmex", AgentID: "agent-1"}, false},
		{fleet.Key{Tenant: "", AgentID: "agent-1"}, false},
	} {
		require.Equal(t, tc.want, blobHasKey(blob, tc.key), "%+v", tc.key)
	}
	require.False(t, blobHasKey(nil, fleet.Key{}), "an unwritten blob holds no key")
	require.False(t, blobHasKey([]byte{4, 'a', 'c', 'm'}, fleet.Key{Tenant: "acme"}), "a short blob is no match")
}
