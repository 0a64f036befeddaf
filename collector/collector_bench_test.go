package collector

import (
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/heartbeat"
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

// BenchmarkScrape100k is one /metrics scrape of 100k agents through Handler.
func BenchmarkScrape100k(b *testing.B) {
	s := fleet100k(b)
	h := newBenchCollector(s).Handler(selfRegistry(), nil)
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	// The first scrape allocates the buffers the others reuse: report it apart.
	start := time.Now()
	h.ServeHTTP(&discard{h: http.Header{}}, req)
	first := time.Since(start)
	var bytes int64
	b.ReportAllocs()
	for b.Loop() {
		w := &discard{h: http.Header{}}
		h.ServeHTTP(w, req)
		bytes = w.n
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/op")
	b.ReportMetric(float64(first.Microseconds())/1e3, "first-ms")
	b.ReportMetric(float64(bytes)/1e6, "MB/scrape")
}

// BenchmarkScrape100kGzip is BenchmarkScrape100k plus gzip at BestSpeed, the
// cost Handler avoids by never compressing.
func BenchmarkScrape100kGzip(b *testing.B) {
	s := fleet100k(b)
	h := newBenchCollector(s).Handler(selfRegistry(), nil)
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	h.ServeHTTP(&discard{h: http.Header{}}, req) // warm up
	var bytes int64
	for b.Loop() {
		d := &discard{h: http.Header{}}
		zw, _ := gzip.NewWriterLevel(d, gzip.BestSpeed)
		w := &gzipWriter{ResponseWriter: d, w: zw}
		h.ServeHTTP(w, req)
		_ = zw.Close()
		bytes = d.n
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/op")
	b.ReportMetric(float64(bytes)/1e6, "MB/scrape")
}

type gzipWriter struct {
	http.ResponseWriter
	w io.Writer
}

func (g *gzipWriter) Write(p []byte) (int, error) { return g.w.Write(p) }

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
