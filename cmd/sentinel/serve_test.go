package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/internal/testutil"
)

const serveConfig = `
heartbeat:
  default_interval: 1s
  min_interval: 1s
tenants:
  - id: acme
    api_keys: [acme-key-1]
    admin_tokens: [acme-admin]
`

// SIGHUP reloads the configuration: a broken file is refused and logged
// while the old configuration keeps serving; a fixed one is then swapped
// in. SIGTERM shuts down gracefully, writes the snapshot and exits 0.
func TestSignals(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sentinel.yml")
	storage := filepath.Join(dir, "data")
	writeFile(t, cfg, serveConfig)
	p := startSentinel(t, cfg, storage, "--web.shutdown-timeout=5s")

	tok := p.register("agent-1", "acme-key-1", map[string]any{
		"heartbeat_interval_seconds": 1, "version": "0.1.0",
		"metrics": map[string]any{"requests_handled": 7},
	})
	v, ok := p.metric("sentinel_config_last_reload_successful")
	require.True(t, ok)
	require.Equal(t, 1.0, v)

	// Broken configuration: refused, logged, the old one keeps serving.
	writeFile(t, cfg, serveConfig+"    bogus_field: 1\n")
	p.signal(syscall.SIGHUP)
	eventually(t, 10*time.Second, func() bool {
		return strings.Contains(p.logs.String(), "configuration reload failed")
	}, func() string { return "no reload failure logged:\n" + p.logs.String() })
	require.Contains(t, p.logs.String(), "unknown field in type config.TenantConfig")
	v, _ = p.metric("sentinel_config_last_reload_successful")
	require.Equal(t, 0.0, v)
	p.beat("agent-1", "acme-key-1", map[string]any{"heartbeat_interval_seconds": 1})
	p.beat("agent-1", tok, map[string]any{"heartbeat_interval_seconds": 1})

	// Fixed configuration with a rotated key: reloaded.
	writeFile(t, cfg, strings.Replace(serveConfig, "acme-key-1", "acme-key-2", 1))
	p.signal(syscall.SIGHUP)
	eventually(t, 10*time.Second, func() bool {
		return strings.Contains(p.logs.String(), "configuration reloaded")
	}, func() string { return "configuration not reloaded:\n" + p.logs.String() })
	v, _ = p.metric("sentinel_config_last_reload_successful")
	require.Equal(t, 1.0, v)
	p.beat("agent-1", "acme-key-2", map[string]any{"heartbeat_interval_seconds": 1})
	r := p.mustRequest(http.MethodPost, "/api/v1/installations/agent-1/heartbeat", "acme-key-1", nil)
	require.Equal(t, http.StatusUnauthorized, r.status)
	p.beat("agent-1", tok, map[string]any{"heartbeat_interval_seconds": 1, "version": "0.2.0"})

	before := p.mustRequest(http.MethodGet, "/api/v1/installations/agent-1", "acme-admin", nil)
	require.Equal(t, http.StatusOK, before.status, "%s", before.body)

	// Graceful shutdown. The snapshot interval is the default minute, so the
	// snapshot on disk can only be the one written at shutdown.
	_, err := os.Stat(filepath.Join(storage, "agents.snapshot"))
	require.ErrorIs(t, err, os.ErrNotExist)
	start := time.Now()
	p.signal(syscall.SIGTERM)
	require.Equal(t, 0, p.wait(10*time.Second), p.logs.String())
	require.Less(t, time.Since(start), 5*time.Second, "shutdown must not wait for its deadline when idle")
	logs := p.logs.String()
	i := strings.Index(logs, "shutting down")
	require.GreaterOrEqual(t, i, 0, logs)
	shutdown := logs[i:]
	require.Contains(t, shutdown, "snapshot of agents written")
	require.Contains(t, shutdown, "sentinel stopped")
	require.NotContains(t, shutdown, "level=ERROR")
	require.NotContains(t, shutdown, "did not finish in time")
	st, err := os.Stat(filepath.Join(storage, "agents.snapshot"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	// The restarted sentinel has the agent exactly as it was.
	p2 := startSentinel(t, cfg, storage)
	after := p2.mustRequest(http.MethodGet, "/api/v1/installations/agent-1", "acme-admin", nil)
	require.Equal(t, http.StatusOK, after.status, "%s", after.body)
	b, a := before.json(t), after.json(t)
	for _, field := range []string{"last_heartbeat_at", "registered_at", "version", "metrics", "token_version", "heartbeat_interval_seconds"} {
		require.Equal(t, b[field], a[field], field)
	}
	p2.beat("agent-1", tok, nil)

	// SIGINT is a graceful shutdown too.
	p2.signal(os.Interrupt)
	require.Equal(t, 0, p2.wait(10*time.Second), p2.logs.String())
	require.Contains(t, p2.logs.String(), "sentinel stopped")
}

// A damaged state file keeps the binary from starting: exit 1 and a log
// line naming the file.
func TestRefusesDamagedState(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sentinel.yml")
	storage := filepath.Join(dir, "data")
	writeFile(t, cfg, serveConfig)
	require.NoError(t, os.MkdirAll(storage, 0o700))
	snapshot := filepath.Join(storage, "agents.snapshot")
	writeFile(t, snapshot, "not a snapshot")

	code, stdout, stderr := runSentinel(t, "--config.file="+cfg, "--storage.path="+storage, "--web.listen-address="+testutil.FreeAddr(t))
	require.Equal(t, 1, code, stdout+stderr)
	require.Contains(t, stderr, "cannot start")
	require.Contains(t, stderr, snapshot)
	b, err := os.ReadFile(snapshot)
	require.NoError(t, err)
	require.Equal(t, "not a snapshot", string(b))
}

// SIGTERM lets a request in flight finish, waits for a stuck connection
// only until --web.shutdown-timeout, and still writes the final snapshot
// (with the agent that the finished request registered) and exits 0.
func TestShutdownDeadline(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sentinel.yml")
	storage := filepath.Join(dir, "data")
	writeFile(t, cfg, serveConfig)
	const deadline = 1500 * time.Millisecond
	p := startSentinel(t, cfg, storage, "--web.shutdown-timeout="+deadline.String())
	addr := strings.TrimPrefix(p.base, "http://")

	// Two heartbeats whose bodies are still on their way when SIGTERM comes.
	// "Expect: 100-continue" tells when the handler is reading the body: the
	// server has accepted the connection and the request is active.
	beginBeat := func(agent string, length int) (net.Conn, *bufio.Reader) {
		t.Helper()
		conn, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		t.Cleanup(func() { conn.Close() })
		_, err = fmt.Fprintf(conn, "POST /api/v1/installations/%s/heartbeat HTTP/1.1\r\nHost: sentinel\r\n"+
			"Authorization: Bearer acme-key-1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"+
			"Expect: 100-continue\r\n\r\n", agent, length)
		require.NoError(t, err)
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		require.Equal(t, http.StatusContinue, resp.StatusCode)
		return conn, br
	}
	body := `{"heartbeat_interval_seconds":1}`
	inflight, inflightReader := beginBeat("late-agent", len(body))
	// This one never sends its body: only the deadline ends it.
	beginBeat("stuck-agent", 100)

	start := time.Now()
	p.signal(syscall.SIGTERM)
	eventually(t, 5*time.Second, func() bool { return strings.Contains(p.logs.String(), "shutting down") },
		func() string { return "no shutdown logged:\n" + p.logs.String() })

	// The request in flight completes.
	_, err := io.WriteString(inflight, body)
	require.NoError(t, err)
	resp, err := http.ReadResponse(inflightReader, nil)
	require.NoError(t, err)
	answer, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", answer)
	require.Contains(t, string(answer), `"registered":true`)

	code := p.wait(10 * time.Second)
	elapsed := time.Since(start)
	require.Equal(t, 0, code, p.logs.String())
	require.GreaterOrEqual(t, elapsed, deadline, "the stuck connection is waited for until the deadline")
	require.Less(t, elapsed, deadline+3*time.Second, "but not much longer")
	logs := p.logs.String()
	require.Contains(t, logs, "graceful shutdown did not finish in time")
	require.Regexp(t, `msg="snapshot of agents written" .* agents=1 `, logs)
	require.Contains(t, logs, "sentinel stopped")

	p2 := startSentinel(t, cfg, storage)
	r := p2.mustRequest(http.MethodGet, "/api/v1/installations/late-agent", "acme-admin", nil)
	require.Equal(t, http.StatusOK, r.status, "the final snapshot holds the agent registered during shutdown: %s", r.body)
}
