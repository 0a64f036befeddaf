package heartbeat

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// stMappedBytes is what s's regions hold, mapped or not.
func stMappedBytes(s *Store) (n int64) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.RLock()
		n += int64(len(sh.mem.records.mem) + len(sh.mem.arena.mem))
		sh.mu.RUnlock()
	}
	return n
}

// stSettleCleanups lets the cleanups of the stores earlier tests dropped run.
// Cleanups run on a goroutine of their own, hence the pause.
func stSettleCleanups() int64 {
	last := int64(-1)
	for n := offHeapBytes.Load(); n != last; n = offHeapBytes.Load() {
		last = n
		runtime.GC()
		time.Sleep(time.Millisecond)
	}
	return last
}

// TestStoreMemoryOffHeap checks the accounting of the store's mapped memory
// through growth and compaction (no region leaks when one is replaced), and
// that a store's memory is unmapped once the store is unreachable.
func TestStoreMemoryOffHeap(t *testing.T) {
	base := stSettleCleanups()
	s := NewStore(10_000, nil)
	require.Zero(t, stMappedBytes(s), "an empty store maps nothing")
	compactions := 0
	for rev := range 40 { // grows the records and arenas, and compacts them
		for i := range 2000 {
			req := stBeat(fmt.Sprintf("a-%d", i), stT0.Add(time.Duration(rev)*time.Second))
			req.Platform, req.HasPlatform = stPlatform(i, rev), true
			sh := s.shardOf(s.hash(req.Key))
			before := len(sh.arena)
			stMustBeat(t, s, req)
			if len(sh.arena) < before {
				compactions++
			}
		}
	}
	require.Positive(t, compactions)
	mine := stMappedBytes(s)
	require.Positive(t, mine)
	if runtime.GOOS == "linux" {
		// At most: a store an earlier test dropped late may have been
		// unmapped meanwhile, but a leaked region would count on top.
		require.LessOrEqual(t, offHeapBytes.Load()-base, mine, "every region replaced by a larger or compacted one is unmapped")
	}
	for i := range 2000 {
		require.Equal(t, stPlatform(i, 39), stMustGet(t, s, stKey(fmt.Sprintf("a-%d", i))).Platform, i)
	}

	runtime.KeepAlive(s)
	s = nil
	require.Eventually(t, func() bool {
		runtime.GC()
		return offHeapBytes.Load() <= base
	}, 10*time.Second, 5*time.Millisecond, "the memory of an unreachable store is unmapped")

	// Release unmaps at once; the cleanup then finds nothing left to free.
	base = stSettleCleanups()
	s = NewStore(10, nil)
	stMustBeat(t, s, stFullBeat("r", stT0))
	require.Positive(t, stMappedBytes(s))
	s.Release()
	require.Zero(t, stMappedBytes(s))
	if runtime.GOOS == "linux" {
		require.LessOrEqual(t, offHeapBytes.Load(), base)
	}
	runtime.KeepAlive(s)
	s = nil
	require.LessOrEqual(t, stSettleCleanups(), base)
}
