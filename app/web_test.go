package app_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/app"
	"github.com/agentsentinel/sentinel/internal/testutil"
)

// serve runs the App of o with Run on a loopback listener until the end of
// the test, and returns its address.
func serve(t testing.TB, o app.Options) string {
	t.Helper()
	return serveWeb(t, o, "")
}

// rawRequest sends req on a new connection and reads one answer.
func rawRequest(t *testing.T, addr, req string) (*http.Response, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	return testutil.Exchange(t, conn, req)
}

// TestServerErrorsAreJSON: the answers net/http writes itself, before any
// handler, are JSON like every other error: oversized headers (431, at
// --web.max-header-bytes) and malformed requests (400).
func TestServerErrorsAreJSON(t *testing.T) {
	e := newEnv(t, baseConfig)
	o := e.options()
	o.MaxHeaderBytes = 4096
	addr := serve(t, o)

	for _, tc := range []struct {
		name, req string
		status    int
		error     string
	}{
		{"header over the limit", "GET /-/healthy HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 9000) + "\r\n\r\n",
			http.StatusRequestHeaderFieldsTooLarge, "request header fields too large: the request line and headers exceed --web.max-header-bytes"},
		{"many headers over the limit", "GET /-/healthy HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X-H: 0123456789\r\n", 600) + "\r\n",
			http.StatusRequestHeaderFieldsTooLarge, "request header fields too large: the request line and headers exceed --web.max-header-bytes"},
		{"no host", "GET /-/healthy HTTP/1.1\r\n\r\n", http.StatusBadRequest, "bad request: missing required Host header"},
		{"malformed header", "GET /-/healthy HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n", http.StatusBadRequest, "bad request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, body := rawRequest(t, addr, tc.req)
			require.Equal(t, tc.status, res.StatusCode, body)
			require.Equal(t, "application/json", res.Header.Get("Content-Type"))
			require.JSONEq(t, fmt.Sprintf(`{"error":%q}`, tc.error), body)
		})
	}
	// Within the limit: served.
	res, body := rawRequest(t, addr, "GET /-/healthy HTTP/1.1\r\nHost: x\r\nX-Ok: "+strings.Repeat("a", 3000)+"\r\nConnection: close\r\n\r\n")
	require.Equal(t, http.StatusOK, res.StatusCode, body)
}

// idleConn opens a connection, makes one keep-alive request on it and leaves
// it idle.
func idleConn(t testing.TB, addr string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	res, body := testutil.Exchange(t, conn, "GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
	require.Equal(t, http.StatusOK, res.StatusCode, body)
	require.NoError(t, conn.SetDeadline(time.Time{}))
	return conn
}

// closedByServer waits until the server closes conn and reports whether it
// did within timeout.
func closedByServer(conn net.Conn, timeout time.Duration) bool {
	_ = conn.SetReadDeadline(time.Now().Add(timeout))
	_, err := conn.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// heartbeatOnce sends one heartbeat on a connection of its own.
func heartbeatOnce(addr string) (int, error) {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/api/v1/installations/agent-1/heartbeat", strings.NewReader(`{"status":"healthy"}`))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+acmeKey)
	res, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	_, err = io.Copy(io.Discard, res.Body)
	return res.StatusCode, err
}

// TestConnectionCap is issue 11's attack: connections parked by clients
// that sent one request (idle) or nothing at all fill the server. At
// --web.max-connections a new connection replaces the longest-idle one, or
// one that has sent nothing for a grace period; when neither exists it is
// closed at once rather than left waiting.
func TestConnectionCap(t *testing.T) {
	e := newEnv(t, baseConfig)
	o := e.options()
	o.MaxConnections = 8
	addr := serve(t, o)
	defer app.SetNewConnGrace(time.Hour)()

	idle := make([]net.Conn, 8)
	for i := range idle {
		idle[i] = idleConn(t, addr)
	}
	// A heartbeat on a new connection gets through: the longest-idle
	// connection made room.
	status, err := heartbeatOnce(addr)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, status)
	// The longest-idle one by the server's clock: on a loaded machine the
	// server may mark the connections idle in another order than the test
	// opened them.
	made := -1
	for deadline := time.Now().Add(10 * time.Second); made < 0 && time.Now().Before(deadline); {
		for i, conn := range idle {
			if closedByServer(conn, 50*time.Millisecond) {
				made = i
				break
			}
		}
	}
	require.NotEqual(t, -1, made, "an idle connection was closed to make room")
	idle = append(idle[:made:made], idle[made+1:]...)

	// Connections that send nothing replace the idle ones, then, at the cap
	// and within their grace, a new connection is closed at once.
	refused := false
	for range 12 {
		conn, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		t.Cleanup(func() { conn.Close() })
		// Refused means closed at once; a connection that made room stays
		// open (the window allows for a busy machine).
		if closedByServer(conn, 500*time.Millisecond) {
			refused = true
			break
		}
	}
	require.True(t, refused, "a connection beyond the cap is refused")
	for _, conn := range idle {
		require.True(t, closedByServer(conn, 5*time.Second), "every idle connection made room")
	}

	// Past their grace, silent connections make room for a heartbeat.
	app.SetNewConnGrace(0)
	status, err = heartbeatOnce(addr)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, status)

	res, body := rawRequest(t, addr, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	require.Equal(t, http.StatusOK, res.StatusCode)
	v, ok := sample(t, body, "sentinel_http_connections_refused_total")
	require.True(t, ok)
	require.GreaterOrEqual(t, v, 1.0)
	v, ok = sample(t, body, "sentinel_http_connections_evicted_total")
	require.True(t, ok)
	require.GreaterOrEqual(t, v, 9.0) // 8 idle, 1 silent
	v, ok = sample(t, body, "sentinel_http_connections")
	require.True(t, ok)
	require.LessOrEqual(t, v, 8.0)
}

// TestIdleTimeout: an idle keep-alive connection is closed after
// --web.idle-timeout.
func TestIdleTimeout(t *testing.T) {
	e := newEnv(t, baseConfig)
	o := e.options()
	o.IdleTimeout = 300 * time.Millisecond
	conn := idleConn(t, serve(t, o))
	start := time.Now()
	require.True(t, closedByServer(conn, 10*time.Second))
	require.GreaterOrEqual(t, time.Since(start), 200*time.Millisecond)
}

// TestSlowClientsCutOff: with the server's far deadlines kept lazily (here
// every deadline over 100 ms), a client that stops halfway through its
// request head, and one that goes idle, are still cut off at
// --web.read-header-timeout and --web.idle-timeout, a sweep late at most.
func TestSlowClientsCutOff(t *testing.T) {
	defer app.SetLazyDeadlines(20*time.Millisecond, 100*time.Millisecond)()
	e := newEnv(t, baseConfig)
	o := e.options()
	o.ReadHeaderTimeout = 400 * time.Millisecond
	o.IdleTimeout = 600 * time.Millisecond
	addr := serve(t, o)

	slow, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { slow.Close() })
	start := time.Now()
	_, err = io.WriteString(slow, "POST /v1/heartbeat?agentId=a1 HTTP/1.1\r\nHost: x\r\n")
	require.NoError(t, err)
	require.True(t, closedByServer(slow, 10*time.Second), "a stalled request head is cut off")
	require.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond)

	idle := idleConn(t, addr)
	start = time.Now()
	require.True(t, closedByServer(idle, 10*time.Second), "an idle connection is closed")
	require.GreaterOrEqual(t, time.Since(start), 500*time.Millisecond)
}

// TestMetricsBearerToken: with metrics.bearer_token set, /metrics answers
// 401 with a challenge to a scraper without it (or with another
// credential), before taking a scrape slot; a reload that removes it opens
// /metrics again.
func TestMetricsBearerToken(t *testing.T) {
	const scrapeToken = "scrape-token-1"
	e := newEnv(t, baseConfig+"metrics:\n  bearer_token: "+scrapeToken+"\n")
	r := e.start()
	for _, tc := range []struct {
		name, auth string
		status     int
	}{
		{"none", "", http.StatusUnauthorized},
		{"wrong", "Bearer scrape-token-2", http.StatusUnauthorized},
		{"prefix", "Bearer scrape-token-", http.StatusUnauthorized},
		{"admin token", "Bearer " + globalAdmin, http.StatusUnauthorized},
		{"basic", "Basic c2NyYXBlLXRva2VuLTE=", http.StatusUnauthorized},
		{"right", "Bearer " + scrapeToken, http.StatusOK},
		{"scheme case", "bearer " + scrapeToken, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, method := range []string{http.MethodGet, http.MethodHead} {
				req, err := http.NewRequest(method, r.base+"/metrics", nil)
				require.NoError(t, err)
				if tc.auth != "" {
					req.Header.Set("Authorization", tc.auth)
				}
				res, err := http.DefaultClient.Do(req)
				require.NoError(t, err)
				body, err := io.ReadAll(res.Body)
				res.Body.Close()
				require.NoError(t, err)
				require.Equal(t, tc.status, res.StatusCode)
				if tc.status == http.StatusUnauthorized {
					require.Equal(t, `Bearer realm="sentinel"`, res.Header.Get("WWW-Authenticate"))
					if method == http.MethodGet {
						require.JSONEq(t, `{"error":"the metrics need the scrape bearer token (metrics.bearer_token of the configuration)"}`, string(body))
						require.NotContains(t, string(body), scrapeToken)
					}
				}
			}
		})
	}
	// The probes stay open.
	require.Equal(t, http.StatusOK, r.do(http.MethodGet, "/-/healthy", "", nil).status)

	e.writeConfig(baseConfig)
	require.NoError(t, r.app.Reload())
	require.Contains(t, r.metrics(), "sentinel_build_info")
	require.NotContains(t, e.logs.String(), scrapeToken)
}

// BenchmarkIdleConnection measures what an idle keep-alive connection costs
// (heap and goroutine stacks; the client's side of a raw connection adds a
// few hundred bytes), the figure DefaultMaxConnections is sized from.
func BenchmarkIdleConnection(b *testing.B) {
	const n = 1000
	dir := b.TempDir()
	config := filepath.Join(dir, "sentinel.yml")
	require.NoError(b, os.WriteFile(config, []byte(baseConfig), 0o600))
	addr := serve(b, app.Options{ConfigFile: config, StoragePath: filepath.Join(dir, "data"), MaxConnections: 2 * n})
	var used uint64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		conns := make([]net.Conn, n)
		for i := range conns {
			conns[i] = idleConn(b, addr)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		used += (after.HeapInuse + after.StackInuse) - (before.HeapInuse + before.StackInuse)
		for _, c := range conns {
			c.Close()
		}
	}
	b.ReportMetric(float64(used)/float64(n*b.N), "bytes/conn")
}
