package heartbeat

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/fleet"
)

// maxBlobBytes is an agent's strings at their longest: a 64-byte tenant
// id, a 128-byte agent id, every reported string at MaxStringLen.
const maxBlobBytes = 2 + 64 + 128 + (numStrings-2)*(1+MaxStringLen)

// WorstCaseBytesPerAgent bounds what one agent costs the store: its record
// and its index entry, and its strings twice over, because an agent whose
// strings change leaves the old copy in its shard's arena until the arena is
// compacted (when more than half of it is garbage); both with a quarter
// more for the spare capacity of growing slices. Each of the 256 shards may
// also hold up to 64 KiB of garbage whatever its size (16 MiB in all).
const WorstCaseBytesPerAgent = 5*int(unsafe.Sizeof(record{}))/4 + 48 + 5*maxBlobBytes/2

// BenchmarkWorstCaseMemoryPerAgent fills a store with agents whose every string
// is as long as allowed, changes each of them once (creating arena garbage),
// and checks its cost per agent (live heap and resident mapped memory)
// against WorstCaseBytesPerAgent, the figure the README quotes: a tenant's
// max_agents times it bounds the tenant's memory.
//
// A memory goal, so a benchmark (make bench-go): the race detector's shadow
// memory would make the heap figure meaningless under make test.
func BenchmarkWorstCaseMemoryPerAgent(b *testing.B) {
	t := b
	const n = 20_000
	long := func(c string, i int) string {
		s := fmt.Sprintf("%s-%d-", c, i)
		return s + strings.Repeat(c, MaxStringLen-len(s))
	}
	tenant := strings.Repeat("t", 64)
	beat := func(s *Store, i int, c string) {
		_, err := s.Beat(&BeatRequest{
			Key: fleet.Key{Tenant: tenant, AgentID: fmt.Sprintf("%0128d", i)}, Time: stT0, Interval: time.Minute,
			Version: long(c+"v", i), HasPlatform: true, Platform: Platform{
				Type: PlatformKubernetes, ContainerID: long(c+"c", i), Image: long(c+"i", i), PodName: long(c+"p", i),
				Namespace: long(c+"n", i), Node: long(c+"o", i), FunctionName: long(c+"f", i), Region: long(c+"r", i),
				Hostname: long(c+"h", i), OS: long(c+"s", i),
			},
		}, fleet.Thresholds{SilentAfter: 5, ZombieAfter: 15})
		require.NoError(t, err)
	}
	before := stHeapAlloc()
	s := NewStore(n, nil)
	for i := range n {
		beat(s, i, "a")
	}
	for i := range n {
		beat(s, i, "b") // every blob rewritten once: the old ones are garbage
	}
	perAgent := float64(stHeapAlloc()-before+stResidentOffHeap(s)) / n
	runtime.KeepAlive(s)
	b.ReportMetric(perAgent, "bytes/agent")
	require.LessOrEqual(t, perAgent, float64(WorstCaseBytesPerAgent)+float64(numShards*(64<<10))/n)
}
