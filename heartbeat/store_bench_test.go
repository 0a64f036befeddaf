package heartbeat

import (
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/agentsentinel/sentinel/fleet"
)

// stK8sBeat fills req with a realistic heartbeat of Kubernetes agent i:
// the strings a beacon in a pod reports (~330 bytes of them).
func stK8sBeat(req *BeatRequest, i int, at time.Time) {
	n := strconv.Itoa(i)
	pod := "agent-worker-7d9f8b6c5-" + n
	*req = BeatRequest{
		Key:      fleet.Key{Tenant: [...]string{"acme", "globex", "initech"}[i%3], AgentID: "agent-" + n},
		Time:     at,
		Interval: 30 * time.Second,
		Status:   StatusHealthy,
		Version:  "1.4.2",
		Platform: Platform{
			Type:        PlatformKubernetes,
			ContainerID: "containerd://" + strconv.FormatUint(uint64(i)*0x9e3779b97f4a7c15, 16) + "4f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a",
			Image:       "registry.example.com/platform/agent-worker:1.4.2",
			PodName:     pod,
			Namespace:   "agents-prod",
			Node:        "ip-10-0-" + strconv.Itoa(i/256%256) + "-" + strconv.Itoa(i%256) + ".eu-west-1.compute.internal",
			Region:      "eu-west-1",
			Hostname:    pod,
			OS:          "linux",
			PID:         int64(1 + i%4000),
		},
		HasPlatform: true,
		Uptime:      3600,
		HasUptime:   true,
		Metrics:     ReportedMetrics{RequestsHandled: 1500, Errors: 2, AvgLatencyMs: 145},
		HasMetrics:  true,
	}
}

func stFill(b *testing.B, n int) *Store {
	s := NewStore(n, nil)
	var req BeatRequest
	for i := range n {
		stK8sBeat(&req, i, stT0)
		if _, err := s.Beat(&req, stTh); err != nil {
			b.Fatal(err)
		}
	}
	return s
}

func stHeapAlloc() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// stResidentOffHeap is what s's mapped regions cost in resident memory: the
// pages up to their used length (a region's room to grow is never touched).
// Regions that fell back to the Go heap are in HeapAlloc instead.
func stResidentOffHeap(s *Store) uint64 {
	pages := func(n int) uint64 { return uint64((n + minRegion - 1) / minRegion * minRegion) }
	var n uint64
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.RLock()
		if sh.mem.records.mapped {
			n += pages(len(sh.records) * int(unsafe.Sizeof(record{})))
		}
		if sh.mem.arena.mapped {
			n += pages(len(sh.arena))
		}
		sh.mu.RUnlock()
	}
	return n
}

// BenchmarkMemoryPerAgent fills a store with realistic agents and reports
// what it costs per agent (target: at most 1536 bytes): the live heap it
// adds (its index maps) and the resident part of its records and arenas,
// mapped outside the heap; and what a full garbage collection costs with the
// store live and once it is gone: nothing of it has pointers, so the
// collector does not scan it and the two should be close.
func BenchmarkMemoryPerAgent(b *testing.B) {
	for _, bc := range []struct {
		name string
		n    int
	}{{"100k", 100_000}, {"1M", 1_000_000}} {
		b.Run(bc.name, func(b *testing.B) {
			var perAgent, heapPerAgent, gcLive, gcEmpty float64
			for b.Loop() {
				before := stHeapAlloc()
				s := stFill(b, bc.n)
				heap := stHeapAlloc() - before
				perAgent = float64(heap+stResidentOffHeap(s)) / float64(bc.n)
				heapPerAgent = float64(heap) / float64(bc.n)

				start := time.Now()
				runtime.GC()
				gcLive = float64(time.Since(start).Microseconds()) / 1e3
				runtime.KeepAlive(s)

				s = nil
				runtime.GC()
				start = time.Now()
				runtime.GC()
				gcEmpty = float64(time.Since(start).Microseconds()) / 1e3
			}
			b.ReportMetric(perAgent, "bytes/agent")
			b.ReportMetric(heapPerAgent, "heap-bytes/agent")
			b.ReportMetric(gcLive, "gc-ms-live")
			b.ReportMetric(gcEmpty, "gc-ms-empty")
		})
	}
}

// BenchmarkBeat is one Store.Beat of a known agent with a realistic body,
// from parallel goroutines over a 100k fleet: the steady state of the
// heartbeat path (the platform is unchanged, so no blob is rewritten).
func BenchmarkBeat(b *testing.B) {
	const n = 100_000
	s := stFill(b, n)
	reqs := make([]BeatRequest, n)
	for i := range reqs {
		stK8sBeat(&reqs[i], i, stT0.Add(time.Second))
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(7919)) // goroutines start apart
		for pb.Next() {
			if _, err := s.Beat(&reqs[i%n], stTh); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

// BenchmarkSnapshot1M encodes the hot state of 1M agents, as the periodic
// snapshot does, and reports its size; the baseline is a plain copy of the
// same bytes, the least any snapshot costs.
func BenchmarkSnapshot1M(b *testing.B) {
	s := stFill(b, 1_000_000)
	var out countingWriter
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		out = 0
		if _, err := s.EncodeSnapshot(&out, stT0); err != nil {
			b.Fatal(err)
		}
	}
	encode := time.Since(start) / time.Duration(b.N)
	b.StopTimer()
	buf := make([]byte, out)
	copyStart := time.Now()
	for range b.N {
		_ = append(buf[:0:0], buf...)
	}
	copied := time.Since(copyStart) / time.Duration(b.N)
	b.ReportMetric(float64(out)/float64(1_000_000), "bytes/agent")
	b.ReportMetric(float64(encode.Milliseconds()), "encode-ms")
	b.ReportMetric(float64(encode)/float64(copied), "x-memcpy")
}

type countingWriter int

func (w *countingWriter) Write(p []byte) (int, error) {
	*w += countingWriter(len(p))
	return len(p), nil
}
