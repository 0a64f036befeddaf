package app_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/app"
	"github.com/agentsentinel/sentinel/storage"
)

func TestOperationalEndpoints(t *testing.T) {
	e := newEnv(t, baseConfig)
	s := e.start()

	for _, tc := range []struct {
		method, path string
		status       int
		contentType  string
		contains     string
		allow        string // the Allow header of a 405
	}{
		{http.MethodGet, "/-/healthy", http.StatusOK, "text/plain", "Healthy", ""},
		{http.MethodHead, "/-/healthy", http.StatusOK, "text/plain", "", ""},
		{http.MethodGet, "/-/ready", http.StatusOK, "text/plain", "Ready", ""},
		{http.MethodHead, "/-/ready", http.StatusOK, "text/plain", "", ""},
		{http.MethodGet, "/", http.StatusOK, "text/html", "Sentinel", ""},
		{http.MethodGet, "/metrics", http.StatusOK, "text/plain", "sentinel_build_info", ""},
		{http.MethodHead, "/metrics", http.StatusOK, "text/plain", "", ""},
		{http.MethodGet, "/no/such/thing", http.StatusNotFound, "application/json", `{"error":"no such endpoint: /no/such/thing"}`, ""},
		{http.MethodPost, "/favicon.ico", http.StatusNotFound, "application/json", `"error"`, ""},
		{http.MethodGet, "/-/reload", http.StatusMethodNotAllowed, "application/json", `"error"`, "POST, PUT"},
		{http.MethodPost, "/metrics", http.StatusMethodNotAllowed, "application/json", `{"error":"method POST not allowed; use GET or HEAD"}`, "GET, HEAD"},
		{http.MethodDelete, "/metrics", http.StatusMethodNotAllowed, "application/json", `"error"`, "GET, HEAD"},
		{http.MethodDelete, "/-/healthy", http.StatusMethodNotAllowed, "application/json", `{"error":"method DELETE not allowed; use GET or HEAD"}`, "GET, HEAD"},
		{http.MethodPost, "/-/healthy", http.StatusMethodNotAllowed, "application/json", `"error"`, "GET, HEAD"},
		{http.MethodPost, "/-/ready", http.StatusMethodNotAllowed, "application/json", `"error"`, "GET, HEAD"},
		{http.MethodPut, "/-/ready", http.StatusMethodNotAllowed, "application/json", `"error"`, "GET, HEAD"},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			r := s.do(tc.method, tc.path, "", nil)
			require.Equal(t, tc.status, r.status, "%s", r.body)
			require.True(t, strings.HasPrefix(r.header.Get("Content-Type"), tc.contentType), r.header.Get("Content-Type"))
			require.Contains(t, string(r.body), tc.contains)
			require.Equal(t, tc.allow, r.header.Get("Allow"))
			if tc.contentType == "application/json" {
				require.Contains(t, r.json(t), "error")
			}
		})
	}

	t.Run("landing page links", func(t *testing.T) {
		r := s.do(http.MethodGet, "/", "", nil)
		for _, link := range []string{"/metrics", "/-/healthy", "/-/ready"} {
			require.Contains(t, string(r.body), link)
		}
		// Every link it shows is served (sentinel serves no pprof).
		links := regexp.MustCompile(`href="(/[^"]*)"`).FindAllStringSubmatch(string(r.body), -1)
		require.NotEmpty(t, links)
		for _, m := range links {
			require.NotEqual(t, http.StatusNotFound, s.do(http.MethodGet, m[1], "", nil).status, m[1])
		}
	})

	t.Run("not ready after close", func(t *testing.T) {
		s.close()
		// The handler outlives the server: call it directly.
		rec := doHandler(s.app.Handler(), http.MethodGet, "/-/ready")
		require.Equal(t, http.StatusServiceUnavailable, rec.Code)
		rec = doHandler(s.app.Handler(), http.MethodGet, "/-/healthy")
		require.Equal(t, http.StatusOK, rec.Code)
	})
}

func TestCustomTelemetryPath(t *testing.T) {
	e := newEnv(t, baseConfig)
	o := e.options()
	o.TelemetryPath = "/internal/metrics"
	a := mustNew(t, o)
	rec := doHandler(a.Handler(), http.MethodGet, "/internal/metrics")
	require.Equal(t, http.StatusOK, rec.Code)
	require.Contains(t, rec.Body.String(), "sentinel_config_last_reload_successful 1")
	rec = doHandler(a.Handler(), http.MethodGet, "/metrics")
	require.Equal(t, http.StatusNotFound, rec.Code)
	rec = doHandler(a.Handler(), http.MethodGet, "/")
	require.Contains(t, rec.Body.String(), "/internal/metrics")
}

// failedJournal is a kill-switch journal after a failed fsync.
type failedJournal struct{ err error }

func (j failedJournal) Healthy() error { return j.err }

// TestFailedJournalIsUnhealthy: a journal that refuses writes (every
// kill-switch action answers 503 until it is reopened) fails the liveness
// probe with the reason, so that the orchestrator restarts sentinel, and
// shows as sentinel_journal_healthy 0. Heartbeats need no disk write, so
// readiness stays.
func TestFailedJournalIsUnhealthy(t *testing.T) {
	e := newEnv(t, baseConfig)
	a := mustNew(t, e.options())
	h := a.Handler()

	rec := doHandler(h, http.MethodGet, "/-/healthy")
	require.Equal(t, http.StatusOK, rec.Code)
	require.Equal(t, "Sentinel is Healthy.\n", rec.Body.String())
	requireSample(t, doHandler(h, http.MethodGet, "/metrics").Body.String(), "sentinel_journal_healthy", 1)

	a.SetJournalHealth(failedJournal{errors.New("sync journal data/killswitch.journal: input/output error")})
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		rec = doHandler(h, method, "/-/healthy")
		require.Equal(t, http.StatusServiceUnavailable, rec.Code, method)
	}
	require.Equal(t, "Sentinel is unhealthy: the kill-switch journal refuses writes: sync journal data/killswitch.journal: input/output error\n",
		doHandler(h, http.MethodGet, "/-/healthy").Body.String())
	requireSample(t, doHandler(h, http.MethodGet, "/metrics").Body.String(), "sentinel_journal_healthy", 0)
	require.Equal(t, http.StatusOK, doHandler(h, http.MethodGet, "/-/ready").Code)

	// Closing, which happens only on the way out, is not a failure: the
	// real journal, closed, still reads as healthy (see "not ready after close").
	a.SetJournalHealth(failedJournal{fmt.Errorf("append: %w", storage.ErrJournalClosed)})
	require.Equal(t, http.StatusOK, doHandler(h, http.MethodGet, "/-/healthy").Code)
	requireSample(t, doHandler(h, http.MethodGet, "/metrics").Body.String(), "sentinel_journal_healthy", 1)
}

// stalledWriter is a scraper that stops reading: its first Write reports on
// writing and then blocks until release is closed.
type stalledWriter struct {
	h       http.Header
	once    sync.Once
	writing chan struct{}
	release chan struct{}
}

func (w *stalledWriter) Header() http.Header { return w.h }
func (w *stalledWriter) WriteHeader(int)     {}
func (w *stalledWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.writing) })
	<-w.release
	return len(p), nil
}

// TestMaxScrapes: each scrape in flight holds its own rendered copy of the
// fleet until the client has read it, so slow clients are capped (4 unless
// set) and the next scrape is answered 503, and counted, at once.
func TestMaxScrapes(t *testing.T) {
	for _, tc := range []struct {
		max, inFlight int
	}{
		{0, app.DefaultMaxScrapes},
		{1, 1},
		{2, 2},
	} {
		t.Run(fmt.Sprint(tc.max), func(t *testing.T) {
			e := newEnv(t, baseConfig)
			o := e.options()
			o.MaxScrapes = tc.max
			h := mustNew(t, o).Handler()

			release := make(chan struct{})
			releaseAll := sync.OnceFunc(func() { close(release) })
			t.Cleanup(releaseAll) // also when a require below fails
			var wg sync.WaitGroup
			for range tc.inFlight {
				w := &stalledWriter{h: http.Header{}, writing: make(chan struct{}), release: release}
				wg.Go(func() { h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil)) })
				<-w.writing
			}
			rec := doHandler(h, http.MethodGet, "/metrics")
			require.Equal(t, http.StatusServiceUnavailable, rec.Code)
			require.JSONEq(t, fmt.Sprintf(`{"error":"%d scrapes are already in flight, the limit; retry later"}`, tc.inFlight), rec.Body.String())
			// The probes do not count.
			require.Equal(t, http.StatusOK, doHandler(h, http.MethodGet, "/-/healthy").Code)

			releaseAll()
			wg.Wait()
			rec = doHandler(h, http.MethodGet, "/metrics")
			require.Equal(t, http.StatusOK, rec.Code)
			requireSample(t, rec.Body.String(), "sentinel_metrics_scrapes_rejected_total", 1)
		})
	}

	t.Run("negative", func(t *testing.T) {
		o := newEnv(t, baseConfig).options()
		o.MaxScrapes = -1
		_, err := app.New(o)
		require.EqualError(t, err, "the maximum number of scrapes in flight must be positive, not -1")
	})
}
