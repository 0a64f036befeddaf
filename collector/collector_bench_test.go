package collector

import (
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"testing"
	"time"

	kgzip "github.com/klauspost/compress/gzip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/heartbeat"
	"github.com/agentsentinel/sentinel/internal/testutil"
)

var (
	bench100kOnce  sync.Once
	bench100kStore *heartbeat.Store
)

// fleet100k is built once and shared by the benchmarks: b.N runs the
// benchmark function more than once.
func fleet100k(b *testing.B) *heartbeat.Store {
	bench100kOnce.Do(func() {
		bench100kStore = heartbeat.NewStore(1_000_000, nil)
		fillFleet(b, bench100kStore, 100_000)
	})
	return bench100kStore
}

// discard is a ResponseWriter that counts and drops the body.
type discard struct {
	h http.Header
	n int64
}

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) WriteHeader(int)             {}
func (d *discard) Write(p []byte) (int, error) { d.n += int64(len(p)); return len(p), nil }

func selfRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

func newBenchCollector(s *heartbeat.Store) *Collector {
	clock := &fakeClock{t: epoch}
	return New(s, Options{
		Thresholds: func() *fleet.ThresholdPolicy { return policy },
		Tenants:    func() []string { return []string{"acme", "globex", "initech", "umbrella"} },
		Now:        clock.Now,
	})
}

// BenchmarkScrape100k is one identity /metrics scrape of 100k agents
// through Handler, half of whom beat again before each (beatHalf, not
// timed), so that every chunk of the families a beat changes is rendered
// anew. In the same run it weighs a second collector of the same store that
// renders every text anew at each scrape (fresh), the baseline of keeping
// the texts nothing changed: kept/fresh-cpu is their ratio of process CPU.
func BenchmarkScrape100k(b *testing.B) {
	s := fleet100k(b)
	kept := newBenchCollector(s)
	fresh := newBenchCollector(s)
	fresh.fresh = true
	handlers := []http.Handler{kept.Handler(selfRegistry(), nil), fresh.Handler(selfRegistry(), nil)}
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	// The first scrape allocates the buffers the others reuse: report it apart.
	start := time.Now()
	handlers[0].ServeHTTP(&discard{h: http.Header{}}, req)
	first := time.Since(start)
	handlers[1].ServeHTTP(&discard{h: http.Header{}}, req)
	var wall, cpu [2]time.Duration
	var bytes int64
	round := 0
	b.ReportAllocs()
	for b.Loop() {
		for i, h := range handlers {
			b.StopTimer()
			round++
			beatHalf(b, s, round)
			b.StartTimer()
			w := &discard{h: http.Header{}}
			start, c0 := time.Now(), testutil.ProcessCPU()
			h.ServeHTTP(w, req)
			wall[i] += time.Since(start)
			cpu[i] += testutil.ProcessCPU() - c0
			bytes = w.n
		}
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 / float64(b.N) }
	b.ReportMetric(ms(wall[0]), "kept-ms")
	b.ReportMetric(ms(wall[1]), "fresh-ms")
	b.ReportMetric(ms(cpu[0]), "kept-cpu-ms")
	b.ReportMetric(ms(cpu[1]), "fresh-cpu-ms")
	b.ReportMetric(float64(cpu[0])/float64(cpu[1]), "kept/fresh-cpu")
	b.ReportMetric(float64(first.Microseconds())/1e3, "first-ms")
	b.ReportMetric(float64(bytes)/1e6, "MB/scrape")
}

// BenchmarkGzipPage100k compresses the rendered page of 100k agents with
// each candidate: the standard library and klauspost/compress at their
// fastest levels, on one core, and the parallel gzipper Handler uses.
func BenchmarkGzipPage100k(b *testing.B) {
	h := newBenchCollector(fleet100k(b)).Handler(selfRegistry(), nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	page := rec.Body.Bytes()
	// The handler writes the page as a few dozen family buffers; feed the
	// single-stream writers 1 MiB at a time, which is no slower.
	stream := func(mk func(io.Writer) io.WriteCloser) func(io.Writer) error {
		return func(w io.Writer) error {
			z := mk(w)
			for off := 0; off < len(page); off += 1 << 20 {
				if _, err := z.Write(page[off:min(off+1<<20, len(page))]); err != nil {
					return err
				}
			}
			return z.Close()
		}
	}
	std := func(level int) func(io.Writer) error {
		return stream(func(w io.Writer) io.WriteCloser { z, _ := gzip.NewWriterLevel(w, level); return z })
	}
	kp := func(level int) func(io.Writer) error {
		return stream(func(w io.Writer) io.WriteCloser { z, _ := kgzip.NewWriterLevel(w, level); return z })
	}
	for _, tc := range []struct {
		name string
		run  func(io.Writer) error
	}{
		{"stdlib-BestSpeed", std(gzip.BestSpeed)},
		{"klauspost-1", kp(1)},
		{"klauspost-2", kp(2)},
		{"klauspost-3", kp(3)},
		{"klauspost-huffman-only", kp(kgzip.HuffmanOnly)},
		{fmt.Sprintf("segments-klauspost-%d-workers-%d", gzipLevel, gzipWorkers), func(w io.Writer) error {
			return pageGzipper.writePage(w, [][]byte{page})
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var n int64
			for b.Loop() {
				d := &discard{h: http.Header{}}
				if err := tc.run(d); err != nil {
					b.Fatal(err)
				}
				n = d.n
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/op")
			b.ReportMetric(float64(n)/1e6, "MB/scrape")
			b.ReportMetric(float64(len(page))/float64(n), "ratio")
		})
	}
}

// BenchmarkScrape100kGzipVsIdentity alternates identity and gzip scrapes of
// 100k agents through Handler, so that all see the same machine, and
// reports each one's wall and CPU time and their ratios (the goal: gzip ≤ 2×
// identity, gzip/identity-cpu). CPU time is the process's (getrusage), so it
// is the one figure a busy machine does not distort.
//
// Before each scrape, half the agents beat again with new times and
// counters (not timed), as a fleet beating every 30 s does between two
// scrapes 15 s apart: every chunk of the families a beat changes is rendered
// and compressed anew (reused-share says how much of the page was not). The
// baseline, gzip-all, is a second collector of the same store that renders
// every text anew (fresh) and compresses every piece: its compressor
// alternates between two, and a piece is only reused by the compressor that
// made it.
func BenchmarkScrape100kGzipVsIdentity(b *testing.B) {
	defer func(z *gzipper) { pageGzipper = z }(pageGzipper)
	s := fleet100k(b)
	h := newBenchCollector(s).Handler(selfRegistry(), nil)
	allCollector := newBenchCollector(s)
	allCollector.fresh = true
	all := allCollector.Handler(selfRegistry(), nil)
	reusing, others := newGzipper(gzipLevel), [2]*gzipper{newGzipper(gzipLevel), newGzipper(gzipLevel)}
	plain := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	gz := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	gz.Header.Set("Accept-Encoding", "gzip")
	pageGzipper = reusing
	h.ServeHTTP(&discard{h: http.Header{}}, plain) // warm up the buffers
	h.ServeHTTP(&discard{h: http.Header{}}, gz)
	for _, z := range others {
		pageGzipper = z
		all.ServeHTTP(&discard{h: http.Header{}}, gz)
	}
	var wall, cpu [3]time.Duration
	var size [3]int64
	round, iteration := 0, 0
	for b.Loop() {
		iteration++
		for i, scrape := range []struct {
			h http.Handler
			r *http.Request
			z *gzipper
		}{{h, plain, reusing}, {h, gz, reusing}, {all, gz, others[(iteration+1)%2]}} {
			b.StopTimer()
			round++
			beatHalf(b, s, round)
			b.StartTimer()
			pageGzipper = scrape.z
			d := &discard{h: http.Header{}}
			start, c0 := time.Now(), testutil.ProcessCPU()
			scrape.h.ServeHTTP(d, scrape.r)
			wall[i] += time.Since(start)
			cpu[i] += testutil.ProcessCPU() - c0
			size[i] = d.n
		}
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 / float64(b.N) }
	b.ReportMetric(ms(wall[0]), "identity-ms")
	b.ReportMetric(ms(wall[1]), "gzip-ms")
	b.ReportMetric(ms(wall[2]), "gzip-all-ms")
	b.ReportMetric(float64(wall[1])/float64(wall[0]), "gzip/identity")
	b.ReportMetric(ms(cpu[0]), "identity-cpu-ms")
	b.ReportMetric(ms(cpu[1]), "gzip-cpu-ms")
	b.ReportMetric(ms(cpu[2]), "gzip-all-cpu-ms")
	b.ReportMetric(float64(cpu[1])/float64(cpu[0]), "gzip/identity-cpu")
	b.ReportMetric(float64(cpu[2])/float64(cpu[0]), "gzip-all/identity-cpu")
	b.ReportMetric(float64(size[0])/1e6, "identity-MB")
	b.ReportMetric(float64(size[1])/1e6, "gzip-MB")
	segments := 1 + numFamilies*chunksFor(s.Len())
	b.ReportMetric(float64(reusing.reused.Load())/float64((b.N+1)*segments), "reused-share")
	if n := others[0].reused.Load() + others[1].reused.Load(); n != 0 {
		b.Fatalf("the baseline reused %d pieces", n)
	}
}

// beatHalf has every other agent of fleet100k beat again, round seconds
// later, its uptime and request count grown as a running agent's are.
func beatHalf(tb testing.TB, s *heartbeat.Store, round int) {
	for i := round % 2; i < 100_000; i += 2 {
		req := k8sBeat(fleetTenants[i%len(fleetTenants)], i, epoch.Add(time.Duration(round)*time.Second-time.Duration(i%97)*time.Second))
		req.Uptime += float64(30 * round)
		req.Metrics.RequestsHandled += float64(round)
		if _, err := s.Beat(req, thresholds); err != nil {
			tb.Fatal(err)
		}
	}
}

// BenchmarkScrape100kGzipCandidates weighs the deflate levels of
// gzipCandidates against each other and against identity: every iteration
// serves one identity scrape of 100k agents through Handler, then one gzip
// scrape per candidate, so that all see the same machine. For each it
// reports the process CPU time per scrape, the answer's size, and the CPU
// ratio to identity (the goal: ≤ 2×).
func BenchmarkScrape100kGzipCandidates(b *testing.B) {
	defer func(z *gzipper) { pageGzipper = z }(pageGzipper)
	h := newBenchCollector(fleet100k(b)).Handler(selfRegistry(), nil)
	plain := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	gz := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	gz.Header.Set("Accept-Encoding", "gzip")
	zs := make([]*gzipper, len(gzipCandidates))
	for i, c := range gzipCandidates {
		zs[i] = newGzipper(c.level)
		pageGzipper = zs[i]
		h.ServeHTTP(&discard{h: http.Header{}}, gz) // warm up the pools
	}
	var identityCPU time.Duration
	var identitySize int64
	cpu := make([]time.Duration, len(zs))
	size := make([]int64, len(zs))
	for b.Loop() {
		d := &discard{h: http.Header{}}
		c0 := testutil.ProcessCPU()
		h.ServeHTTP(d, plain)
		identityCPU += testutil.ProcessCPU() - c0
		identitySize = d.n
		for i, z := range zs {
			pageGzipper = z
			d := &discard{h: http.Header{}}
			c0 := testutil.ProcessCPU()
			h.ServeHTTP(d, gz)
			cpu[i] += testutil.ProcessCPU() - c0
			size[i] = d.n
		}
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 / float64(b.N) }
	b.ReportMetric(ms(identityCPU), "identity-cpu-ms")
	b.ReportMetric(float64(identitySize)/1e6, "identity-MB")
	for i, c := range gzipCandidates {
		b.ReportMetric(ms(cpu[i]), c.name+"-cpu-ms")
		b.ReportMetric(float64(cpu[i])/float64(identityCPU), c.name+"/identity-cpu")
		b.ReportMetric(float64(size[i])/1e6, c.name+"-MB")
	}
}

// BenchmarkCollectConst100k is the same fleet through the const-metrics
// Collector, gathered and encoded by client_golang as promhttp would.
func BenchmarkCollectConst100k(b *testing.B) {
	s := fleet100k(b)
	reg := selfRegistry()
	reg.MustRegister(newBenchCollector(s))
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	var bytes int64
	b.ReportAllocs()
	for b.Loop() {
		w := &discard{h: http.Header{}}
		h.ServeHTTP(w, req)
		bytes = w.n
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/op")
	b.ReportMetric(float64(bytes)/1e6, "MB/scrape")
}

// BenchmarkStalledReaders100k measures what clients that stop reading cost
// at 100k agents: the heap while MaxScrapes of them hold their pages, and
// after eight more scrapes, each taking over a stalled client's slot (the
// evicted page is freed once its write fails, so the heap stays flat).
func BenchmarkStalledReaders100k(b *testing.B) {
	s := fleet100k(b)
	heap := func() float64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return float64(m.HeapInuse) / 1e6
	}
	var base, held, after float64
	for b.Loop() {
		c := newBenchCollector(s)
		c.inflight = make(chan struct{}, 4)
		c.writers.stallAfter = time.Nanosecond
		h := c.Handler(selfRegistry(), nil)
		base = heap()
		var wg sync.WaitGroup
		var stalls []*deadlineStall
		stall := func() {
			w := newDeadlineStall()
			stalls = append(stalls, w)
			wg.Go(func() { h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil)) })
			<-w.writing
		}
		for range 4 {
			stall()
		}
		held = heap()
		for range 8 {
			stall() // takes over the slot of the longest-stalled one
		}
		after = heap()
		for _, w := range stalls {
			_ = w.SetWriteDeadline(time.Now())
		}
		wg.Wait()
		if c.EvictedScrapes() != 8 {
			b.Fatalf("%d scrapes evicted, want 8", c.EvictedScrapes())
		}
	}
	b.ReportMetric(base, "MB-heap-idle")
	b.ReportMetric(held, "MB-heap-4-stalled")
	b.ReportMetric(after, "MB-heap-after-8-takeovers")
}
