package app_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/app"

	"github.com/agentsentinel/sentinel/internal/testutil"
)

// Credentials of baseConfig.
const (
	acmeKey     = "acme-key-1"
	acmeAdmin   = "acme-admin-1"
	globalAdmin = "global-admin-1"
	globexKey   = "globex-key-1"
)

// baseConfig has a short default interval so that tests move the fake clock
// by seconds, and short token lifetimes so that a refresh is reachable.
const baseConfig = `
heartbeat:
  default_interval: 10s
  min_interval: 1s
  max_interval: 1h
  token_ttl: 2h
  token_refresh_before: 90m
admin_tokens: [global-admin-1]
tenants:
  - id: acme
    api_keys: [acme-key-1]
    admin_tokens: [acme-admin-1]
  - id: globex
    api_keys: [globex-key-1]
    admin_tokens: [globex-admin-1]
`

// newClock starts at a time with a nanosecond part, so that a restart that
// rounded timestamps would show.
func newClock() *testutil.Clock {
	return testutil.NewClock(time.Unix(1_700_000_000, 123_456_789).UTC())
}

// env is one storage directory and configuration file, on which apps are
// started and restarted.
type env struct {
	t       *testing.T
	dir     string
	storage string
	config  string
	clock   *testutil.Clock
	logs    *testutil.SyncBuffer
}

func newEnv(t *testing.T, cfg string) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{
		t: t, dir: dir,
		storage: filepath.Join(dir, "data"),
		config:  filepath.Join(dir, "sentinel.yml"),
		clock:   newClock(),
		logs:    &testutil.SyncBuffer{},
	}
	e.writeConfig(cfg)
	return e
}

func (e *env) writeConfig(cfg string) {
	e.t.Helper()
	require.NoError(e.t, os.WriteFile(e.config, []byte(cfg), 0o600))
}

func (e *env) options() app.Options {
	return app.Options{
		ConfigFile:  e.config,
		StoragePath: e.storage,
		Logger:      slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:         e.clock.Now,
	}
}

// running is an App served by an httptest server.
type running struct {
	*client
	app    *app.App
	server *httptest.Server
	closed bool
}

// start starts an App on the env's storage. It is closed at the end of the
// test unless the test closes it (or abandons it to simulate a crash).
func (e *env) start() *running {
	e.t.Helper()
	return e.startWith(e.options())
}

// startWith starts an App with options o (e.options(), changed).
func (e *env) startWith(o app.Options) *running {
	e.t.Helper()
	a, err := app.New(o)
	require.NoError(e.t, err)
	srv := httptest.NewServer(a.Handler())
	r := &running{client: &client{t: e.t, base: srv.URL}, app: a, server: srv}
	e.t.Cleanup(func() { r.close() })
	return r
}

// close shuts the server and closes the App gracefully (final snapshot).
func (r *running) close() {
	if r.closed {
		return
	}
	r.closed = true
	r.server.Close()
	require.NoError(r.t, r.app.Close())
}

// client speaks JSON to a sentinel.
type client struct {
	t    *testing.T
	base string
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(r.body, &m), "body: %s", r.body)
	return m
}

func (c *client) do(method, path, token string, body any) response {
	c.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		require.NoError(c.t, err)
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	require.NoError(c.t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(c.t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(c.t, err)
	return response{status: resp.StatusCode, header: resp.Header, body: raw}
}

// beat sends a Beacon heartbeat and requires a 200.
func (c *client) beat(id, token string, body any) map[string]any {
	c.t.Helper()
	r := c.do(http.MethodPost, "/api/v1/installations/"+id+"/heartbeat", token, body)
	require.Equal(c.t, http.StatusOK, r.status, "heartbeat of %s: %s", id, r.body)
	return r.json(c.t)
}

// register registers an agent with the tenant key and returns its runtime token.
func (c *client) register(id, tenantKey string, body any) string {
	c.t.Helper()
	m := c.beat(id, tenantKey, body)
	require.Equal(c.t, true, m["registered"], "%v", m)
	tok, ok := m["runtime_token"].(map[string]any)
	require.True(c.t, ok, "registration answer without runtime_token: %v", m)
	s, ok := tok["runtime_token"].(string)
	require.True(c.t, ok)
	require.True(c.t, strings.HasPrefix(s, "srt_"))
	return s
}

// installation returns GET /api/v1/installations/{id} for acme.
func (c *client) installation(id string) response {
	c.t.Helper()
	return c.do(http.MethodGet, "/api/v1/installations/"+id, acmeAdmin, nil)
}

func (c *client) metrics() string {
	c.t.Helper()
	r := c.do(http.MethodGet, "/metrics", "", nil)
	require.Equal(c.t, http.StatusOK, r.status)
	return string(r.body)
}

// seriesWithPrefix returns the sorted sample lines of the exposition text
// whose metric name starts with prefix.
func seriesWithPrefix(text, prefix string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	sort.Strings(out)
	return out
}

// sample returns the value of the series written exactly as series
// (name{labels} in exposition order), and whether it is present.
func sample(t *testing.T, text, series string) (float64, bool) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), series+" ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
		require.NoError(t, err)
		return v, true
	}
	return 0, false
}

func requireSample(t *testing.T, text, series string, want float64) {
	t.Helper()
	v, ok := sample(t, text, series)
	require.True(t, ok, "series %s missing", series)
	require.Equal(t, want, v, "series %s", series)
}

// mustNew starts an App that is closed at the end of the test.
func mustNew(t *testing.T, o app.Options) *app.App {
	t.Helper()
	a, err := app.New(o)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, a.Close()) })
	return a
}

// doHandler serves one request without a server.
func doHandler(h http.Handler, method, path string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec
}
