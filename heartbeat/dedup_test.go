package heartbeat

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

// The measure: 400k unique ids from tenant A (what took 13 s to
// send) must not flush tenant B's window. A's own last DefaultEventWindow
// ids are all still remembered.
func TestEventFilterTenantsDoNotEvictEachOther(t *testing.T) {
	f := newEventFilter(0)
	f.event("b", "shutdown-1").add()
	for i := range 400_000 {
		f.event("a", fmt.Sprint("a-", i)).add()
	}
	require.True(t, f.event("b", "shutdown-1").seen())
	require.False(t, f.event("a", "shutdown-1").seen(), "ids are per tenant")
	for i := 400_000 - DefaultEventWindow; i < 400_000; i += 997 {
		require.True(t, f.event("a", fmt.Sprint("a-", i)).seen(), "id %d of the last window", i)
	}
	require.False(t, f.event("a", "a-0").seen(), "the oldest ids go")

	// A reload that removes tenant b drops its window.
	f.retain(func(t string) bool { return t == "a" })
	require.False(t, f.event("b", "shutdown-1").seen())
}

// BenchmarkEventFilterMemory measures what a tenant's full window costs
// (the README quotes it): a memory goal, so a benchmark (make bench-go), not
// a test under the race detector.
func BenchmarkEventFilterMemory(b *testing.B) {
	t := b
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f := newEventFilter(0)
	for i := range 2*DefaultEventWindow + 1 {
		f.event("a", fmt.Sprint(i)).add()
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perTenant := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	b.ReportMetric(float64(perTenant)/1e6, "MB/window")
	require.Less(t, perTenant, int64(8<<20))
	runtime.KeepAlive(f)
}
