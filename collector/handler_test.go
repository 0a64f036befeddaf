package collector

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/heartbeat"
)

// variedFleet is fiveStates plus a Kubernetes fleet over three tenants and
// agents whose reported strings need escaping or are not valid UTF-8.
func variedFleet(t *testing.T) *heartbeat.Store {
	t.Helper()
	s := fiveStates(t)
	fillFleet(t, s, 300)
	weird := []struct {
		tenant, id string
		version    string
		p          heartbeat.Platform
	}{
		{`we"ird\ten` + "\nant", "q-1", `v1 "quoted" \ back\slash` + "\nnewline", heartbeat.Platform{
			Type: heartbeat.PlatformDocker, Image: `img:"x"`, Hostname: "h\\\\", ContainerID: "\n\n\"\"\\",
		}},
		{"acme", "utf8-1", "héllo ✓ 日本", heartbeat.Platform{Namespace: "ns-ü", Node: "ノード", PodName: "😀"}},
		{"acme", "bad-utf8", "\xff\xfe1.0", heartbeat.Platform{Image: "ok\xc3", Region: "\x80\"\\\n\x80"}},
		// 254 ASCII bytes and an é: the cut at MaxStringLen must not split the rune.
		{"acme", "cut-rune", strings.Repeat("v", heartbeat.MaxStringLen-1) + "é", heartbeat.Platform{
			Hostname: strings.Repeat("h", heartbeat.MaxStringLen),
		}},
		{"acme", "long-1", strings.Repeat(`"\`, 100), heartbeat.Platform{Image: strings.Repeat("x", 300)}},
	}
	for i, w := range weird {
		_, err := s.Beat(&heartbeat.BeatRequest{
			Key: fleet.Key{Tenant: w.tenant, AgentID: w.id}, Time: epoch.Add(-time.Duration(i) * time.Hour),
			Interval: 45 * time.Second, Status: heartbeat.StatusStarting, Version: w.version,
			Platform: w.p, HasPlatform: true,
			Uptime: math.Inf(1), HasUptime: i == 0,
			Metrics: heartbeat.ReportedMetrics{RequestsHandled: 1e21, Errors: math.NaN(), AvgLatencyMs: 1e-3}, HasMetrics: i == 1,
		}, thresholds)
		require.NoError(t, err)
	}
	return s
}

// selfCounters is a deterministic stand-in for the application's registry.
func selfCounters(t *testing.T) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	hb := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sentinel_heartbeats_total", Help: "Heartbeats received.",
	}, []string{"protocol", "result"})
	hb.WithLabelValues("beacon", "ok").Add(42)
	hb.WithLabelValues("abs", "revoked").Add(1.5)
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sentinel_build_info", Help: "Build information.",
		ConstLabels: prometheus.Labels{"version": `1.0 "dev"`},
	})
	info.Set(1)
	reg.MustRegister(hb, info)
	return reg
}

func scrapeHandler(t *testing.T, h http.Handler) (*http.Response, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	res := rec.Result()
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res, string(body)
}

// normalized encodes families sorted by name, their metrics sorted by
// labels, as text: the form in which two expositions are compared.
func normalized(t *testing.T, mfs []*dto.MetricFamily) string {
	t.Helper()
	slices.SortFunc(mfs, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
	var buf bytes.Buffer
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			slices.SortFunc(m.Label, func(a, b *dto.LabelPair) int { return strings.Compare(a.GetName(), b.GetName()) })
		}
		keys := make(map[*dto.Metric]string, len(mf.Metric))
		for _, m := range mf.Metric {
			keys[m] = fmt.Sprint(m.GetLabel())
		}
		slices.SortFunc(mf.Metric, func(a, b *dto.Metric) int { return strings.Compare(keys[a], keys[b]) })
		_, err := expfmt.MetricFamilyToText(&buf, mf)
		require.NoError(t, err)
	}
	return buf.String()
}

func parseText(t *testing.T, text string) []*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	byName, err := p.TextToMetricFamilies(strings.NewReader(text))
	require.NoError(t, err)
	var mfs []*dto.MetricFamily
	for _, mf := range byName {
		mfs = append(mfs, mf)
	}
	return mfs
}

// gatherBoth is what promhttp would serve for a registry holding self's
// collectors and c.
func gatherBoth(t *testing.T, self prometheus.Gatherer, c *Collector) []*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))
	mfs, err := prometheus.Gatherers{self, reg}.Gather()
	require.NoError(t, err)
	return mfs
}

// TestHandlerMatchesCollector: the streamed exposition parses to exactly the
// families and samples the const Collector gathers, and is byte for byte the
// lines client_golang's text encoder writes, in another order.
func TestHandlerMatchesCollector(t *testing.T) {
	clock := &fakeClock{t: epoch}
	s := variedFleet(t)
	c := newTestCollector(s, clock, "acme", "globex", "umbrella")
	self := selfCounters(t)
	h := c.Handler(self, nil)

	defer func(n int) { chunkAgents = n }(chunkAgents)
	for _, at := range []time.Duration{0, 5 * time.Minute, 2 * time.Hour} {
		// One chunk, and a chunk per agent or per few: the page is the same.
		for _, per := range []int{chunkAgents, 1, 3} {
			t.Run(fmt.Sprintf("%s/chunks-of-%d", at, per), func(t *testing.T) {
				chunkAgents = per
				clock.t = epoch.Add(at)
				res, body := scrapeHandler(t, h)
				require.Equal(t, http.StatusOK, res.StatusCode)

				want := gatherBoth(t, self, c)
				require.Equal(t, normalized(t, want), normalized(t, parseText(t, body)))

				var enc bytes.Buffer
				for _, mf := range want {
					_, err := expfmt.MetricFamilyToText(&enc, mf)
					require.NoError(t, err)
				}
				wantLines := strings.Split(strings.TrimSuffix(enc.String(), "\n"), "\n")
				gotLines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")
				slices.Sort(wantLines)
				slices.Sort(gotLines)
				require.Equal(t, wantLines, gotLines)

				// Self families come first.
				require.True(t, strings.HasPrefix(body, "# HELP sentinel_build_info "), body[:80])
			})
		}
	}
}

func TestHandlerInvalidUTF8(t *testing.T) {
	clock := &fakeClock{t: epoch}
	c := newTestCollector(variedFleet(t), clock)
	_, body := scrapeHandler(t, c.Handler(nil, nil))
	require.True(t, utf8Valid(body))
	for _, want := range []string{
		"version=\"\uFFFD1.0\"",
		`region="` + "\uFFFD" + `\"\\\n` + "\uFFFD" + `"`,
		// The store cuts over-long strings at a rune boundary.
		`version="` + strings.Repeat("v", heartbeat.MaxStringLen-1) + `"`,
	} {
		require.True(t, strings.Contains(body, want), "no %q in the exposition", want)
	}
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "") == s }

func TestHandlerHeaders(t *testing.T) {
	clock := &fakeClock{t: epoch}
	c := newTestCollector(fiveStates(t), clock, "acme")
	h := c.Handler(selfCounters(t), nil)

	res, body := scrapeHandler(t, h)
	require.Equal(t, "text/plain; version=0.0.4; charset=utf-8", res.Header.Get("Content-Type"))
	require.Equal(t, fmt.Sprint(len(body)), res.Header.Get("Content-Length"))
	require.Empty(t, res.Header.Get("Content-Encoding"))

	require.Equal(t, "Accept-Encoding", res.Header.Get("Vary"))

	for _, tc := range []struct {
		method, accept string
		gzip           bool
	}{
		{http.MethodHead, "", false},
		{http.MethodHead, "gzip", true},
		{http.MethodGet, "gzip", true},
		{http.MethodGet, "identity", false},
	} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(tc.method, "/metrics", nil)
		req.Header.Set("Accept-Encoding", tc.accept)
		h.ServeHTTP(rec, req)
		require.Equal(t, http.StatusOK, rec.Code)
		require.Equal(t, "Accept-Encoding", rec.Header().Get("Vary"))
		if tc.gzip {
			// The compressed length is only known once it is written.
			require.Equal(t, "gzip", rec.Header().Get("Content-Encoding"))
			require.Empty(t, rec.Header().Get("Content-Length"))
		} else {
			require.Empty(t, rec.Header().Get("Content-Encoding"))
			require.Equal(t, fmt.Sprint(len(body)), rec.Header().Get("Content-Length"))
		}
		if tc.method == http.MethodHead {
			require.Zero(t, rec.Body.Len())
		}
	}
}

// TestHandlerEmptyFamilies: families without samples are left out, as
// client_golang does; sentinel_agents keeps its zeros.
func TestHandlerEmptyFamilies(t *testing.T) {
	clock := &fakeClock{t: epoch}
	c := newTestCollector(heartbeat.NewStore(10, nil), clock, "acme")
	_, body := scrapeHandler(t, c.Handler(nil, nil))
	require.Equal(t, `# HELP sentinel_agents Number of agents per tenant and state.
# TYPE sentinel_agents gauge
sentinel_agents{state="ACTIVE",tenant="acme"} 0
sentinel_agents{state="SILENT",tenant="acme"} 0
sentinel_agents{state="ZOMBIE",tenant="acme"} 0
sentinel_agents{state="STOPPED",tenant="acme"} 0
sentinel_agents{state="REVOKED",tenant="acme"} 0
`, body)

	c = newTestCollector(heartbeat.NewStore(10, nil), clock)
	_, body = scrapeHandler(t, c.Handler(nil, nil))
	require.Empty(t, body)
}

// TestHandlerSelfErrors: a failing or colliding self collector is logged and
// the agent series are served all the same.
func TestHandlerSelfErrors(t *testing.T) {
	clock := &fakeClock{t: epoch}
	c := newTestCollector(fiveStates(t), clock, "acme")
	self := prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		mfs, err := selfCounters(t).Gather()
		require.NoError(t, err)
		clash := prometheus.NewGauge(prometheus.GaugeOpts{Name: "sentinel_agents", Help: "clash"})
		reg := prometheus.NewRegistry()
		reg.MustRegister(clash)
		more, err := reg.Gather()
		require.NoError(t, err)
		return append(mfs, more...), errors.New("process collector broke")
	})
	var logs bytes.Buffer
	h := c.Handler(self, slog.New(slog.NewTextHandler(&logs, nil)))
	res, body := scrapeHandler(t, h)
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Contains(t, logs.String(), "process collector broke")
	require.Contains(t, logs.String(), "family=sentinel_agents")
	mfs := parseText(t, body)
	require.Len(t, mfs, numFamilies+2)
	require.NotContains(t, body, "clash")
}

// TestHandlerForget: a forgotten agent's series leave the next scrape.
func TestHandlerForget(t *testing.T) {
	clock := &fakeClock{t: epoch.Add(time.Hour)}
	s := fiveStates(t)
	h := newTestCollector(s, clock, "acme").Handler(nil, nil)
	_, body := scrapeHandler(t, h)
	require.Equal(t, 9, strings.Count(body, `agent_id="silent-1"`))
	require.Equal(t, 8, strings.Count(body, `agent_id="zombie-1"`))
	require.True(t, s.Delete(fleet.Key{Tenant: "acme", AgentID: "zombie-1"}))
	_, body = scrapeHandler(t, h)
	require.Equal(t, 9, strings.Count(body, `agent_id="silent-1"`))
	require.NotContains(t, body, "zombie-1")
}

func TestAppendFloatMatchesExpfmt(t *testing.T) {
	for _, v := range []float64{
		0, math.Copysign(0, -1), 1, -1, 2, 0.145, 12.5, 60, 3600, 999999, 1e6, -999999, -1e6, 1234567,
		1.7356896e9, 1735689600.123456789, 1e21, 1e-5, 1e-4, 5e-324, math.MaxFloat64, -math.MaxFloat64,
		math.Inf(1), math.Inf(-1), math.NaN(), 0.1 + 0.2, 1 << 53, 1<<53 + 1, 123456.5,
	} {
		t.Run(fmt.Sprint(v), func(t *testing.T) {
			var buf bytes.Buffer
			_, err := expfmt.MetricFamilyToText(&buf, &dto.MetricFamily{
				Name: new("x"), Type: dto.MetricType_GAUGE.Enum(),
				Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: new(v)}}},
			})
			require.NoError(t, err)
			require.Equal(t, "# TYPE x gauge\nx "+string(appendFloat(nil, v))+"\n", buf.String())
		})
	}
}

func TestAppendLabelValueMatchesExpfmt(t *testing.T) {
	for _, v := range []string{
		"", "a", "plain-ascii.value_01", `"`, `\`, "\n", "\r\t", `a"b\c` + "\nd", "12345678\n", "1234567\"",
		"abcdefgh\\ijklmnop", "ümlaut", "日本語のラベル", "😀", strings.Repeat("x", 64) + `"`,
		strings.Repeat(`"\`, 20), "\x00\x01\x7f", "bcd\x5c\x5c", "01234567" + "89abcdef" + "é",
		"My Agent #1 (prod)", "!#$%&'()*+,-./0123", "tab\tand\rreturn..", "123456789 \n", "0123456789abcde\"",
	} {
		t.Run(fmt.Sprintf("%q", v), func(t *testing.T) {
			var buf bytes.Buffer
			_, err := expfmt.MetricFamilyToText(&buf, &dto.MetricFamily{
				Name: new("x"), Type: dto.MetricType_GAUGE.Enum(),
				Metric: []*dto.Metric{{
					Label: []*dto.LabelPair{{Name: new("l"), Value: new(v)}},
					Gauge: &dto.Gauge{Value: new(1.0)},
				}},
			})
			require.NoError(t, err)
			require.Equal(t, "# TYPE x gauge\nx{l=\""+string(appendLabelValue(nil, v))+"\"} 1\n", buf.String())
		})
	}
	for in, want := range map[string]string{
		"\xff":          "\uFFFD",
		"ab\xc3":        "ab\uFFFD",
		"\xff\xfe\"x\n": "\uFFFD" + `\"x\n`, // one U+FFFD per run of invalid bytes
		"ok\x80\x80ok":  "ok\uFFFDok",
	} {
		require.Equal(t, want, string(appendLabelValue(nil, in)), "%q", in)
		require.Equal(t, labelValue(in), strings.NewReplacer(`\"`, `"`, `\n`, "\n").Replace(want))
	}
}

// TestHandlerConcurrent scrapes while agents beat, register and are
// forgotten; run with -race.
func TestHandlerConcurrent(t *testing.T) {
	clock := &fakeClock{t: epoch}
	s := heartbeat.NewStore(100_000, nil)
	fillFleet(t, s, 300)
	c := newTestCollector(s, clock, "acme")
	h := c.Handler(selfCounters(t), nil)
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			for i := range 20_000 {
				select {
				case <-stop:
					return
				default:
				}
				req := k8sBeat("acme", 5000+w*100_000+i%500, epoch)
				_, err := s.Beat(req, thresholds)
				if err != nil {
					t.Error(err)
					return
				}
				if i%3 == 0 {
					s.Delete(req.Key)
				}
			}
		})
	}
	var swg sync.WaitGroup
	for range 3 {
		swg.Go(func() {
			for range 4 {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
				p := expfmt.NewTextParser(model.UTF8Validation)
				// Well-formed, each family in one block.
				if _, err := p.TextToMetricFamilies(rec.Body); err != nil {
					t.Error(err)
				}
				if _, err := reg.Gather(); err != nil {
					t.Error(err)
				}
			}
		})
	}
	swg.Wait()
	close(stop)
	wg.Wait()
}

// stalledWriter is a scraper that stops reading: its first Write reports on
// writing and then blocks until release is closed.
type stalledWriter struct {
	h       http.Header
	once    sync.Once
	writing chan struct{}
	release chan struct{}
}

func newStalledWriter(release chan struct{}) *stalledWriter {
	return &stalledWriter{h: http.Header{}, writing: make(chan struct{}), release: release}
}

func (w *stalledWriter) Header() http.Header { return w.h }
func (w *stalledWriter) WriteHeader(int)     {}
func (w *stalledWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.writing) })
	<-w.release
	return len(p), nil
}

// TestHandlerMaxScrapes: scrapes held by clients that do not read (each
// holding its rendered copy of the fleet) are capped; the next one is
// answered 503 at once, and a slot frees when a held scrape ends.
func TestHandlerMaxScrapes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		max     int
		stalled int
		wantCap bool
	}{
		{"cap 1", 1, 1, true},
		{"cap 3", 3, 3, true},
		{"no cap", 0, 5, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := &fakeClock{t: epoch}
			c := New(fiveStates(t), Options{
				Thresholds: func() *fleet.ThresholdPolicy { return policy },
				Now:        clock.Now, MaxScrapes: tc.max,
			})
			h := c.Handler(selfCounters(t), nil)
			release := make(chan struct{})
			releaseAll := sync.OnceFunc(func() { close(release) })
			t.Cleanup(releaseAll) // also when a require below fails
			var wg sync.WaitGroup
			for range tc.stalled {
				w := newStalledWriter(release)
				wg.Go(func() { h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil)) })
				<-w.writing
			}

			for _, method := range []string{http.MethodGet, http.MethodHead} {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(method, "/metrics", nil))
				if !tc.wantCap {
					require.Equal(t, http.StatusOK, rec.Code)
					continue
				}
				require.Equal(t, http.StatusServiceUnavailable, rec.Code)
				require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
				require.JSONEq(t, fmt.Sprintf(`{"error":"%d scrapes are already in flight, the limit; retry later"}`, tc.max), rec.Body.String())
			}
			if tc.wantCap {
				require.Equal(t, uint64(2), c.RejectedScrapes())
			} else {
				require.Zero(t, c.RejectedScrapes())
			}

			releaseAll()
			wg.Wait()
			res, body := scrapeHandler(t, h)
			require.Equal(t, http.StatusOK, res.StatusCode)
			require.Contains(t, body, "sentinel_agent_info{")
		})
	}
}

// TestHandlerMethods: /metrics is read-only; anything but GET and HEAD is a
// JSON 405 naming the allowed methods.
func TestHandlerMethods(t *testing.T) {
	h := newTestCollector(fiveStates(t), &fakeClock{t: epoch}, "acme").Handler(nil, nil)
	for _, tc := range []struct {
		method string
		status int
	}{
		{http.MethodGet, http.StatusOK},
		{http.MethodHead, http.StatusOK},
		{http.MethodPost, http.StatusMethodNotAllowed},
		{http.MethodPut, http.StatusMethodNotAllowed},
		{http.MethodDelete, http.StatusMethodNotAllowed},
		{http.MethodPatch, http.StatusMethodNotAllowed},
		{http.MethodOptions, http.StatusMethodNotAllowed},
	} {
		t.Run(tc.method, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tc.method, "/metrics", nil))
			require.Equal(t, tc.status, rec.Code)
			if tc.status == http.StatusOK {
				require.Equal(t, contentType, rec.Header().Get("Content-Type"))
				return
			}
			require.Equal(t, "GET, HEAD", rec.Header().Get("Allow"))
			require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
			require.JSONEq(t, `{"error":"method `+tc.method+` not allowed; use GET or HEAD"}`, rec.Body.String())
		})
	}
}
