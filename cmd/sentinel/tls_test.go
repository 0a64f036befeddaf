package main

import (
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/internal/testutil"
)

// tlsWebConfig writes a certificate and a web configuration serving TLS with
// it into dir, and returns the configuration's path.
func tlsWebConfig(t *testing.T, dir string) string {
	t.Helper()
	certFile, keyFile := testutil.WriteCert(t, dir, 1)
	webConfig := filepath.Join(dir, "web.yml")
	writeFile(t, webConfig, "tls_server_config:\n  cert_file: "+certFile+"\n  key_file: "+keyFile+"\nhttp_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n")
	return webConfig
}

// --web.config.file (exporter-toolkit's format) serves every endpoint over
// TLS: heartbeats with bearer credentials, the admin API and /metrics.
func TestWebConfigTLS(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sentinel.yml")
	writeFile(t, cfg, serveConfig)
	p := startSentinel(t, cfg, filepath.Join(dir, "data"), "--web.config.file="+tlsWebConfig(t, dir))
	require.True(t, strings.HasPrefix(p.base, "https://"))
	tok := p.register("agent-1", "acme-key-1", map[string]any{"heartbeat_interval_seconds": 1})
	require.True(t, strings.HasPrefix(tok, "srt_"))
	b := p.beat("agent-1", tok, nil)
	require.Equal(t, true, b["lease_renewed"], "%v", b)
	r := p.mustRequest(http.MethodGet, "/api/v1/installations/agent-1", "acme-admin", nil)
	require.Equal(t, http.StatusOK, r.status, r.body)
	_, ok := p.metric(`sentinel_agent_last_heartbeat_timestamp_seconds{agent_id="agent-1",tenant="acme"}`)
	require.True(t, ok)
	require.Contains(t, p.logs.String(), "TLS is enabled.")

	// Plain HTTP is not served: a JSON 400 says why.
	plain := &http.Client{Timeout: 5 * time.Second}
	resp, err := plain.Get("http://" + strings.TrimPrefix(p.base, "https://") + "/-/healthy")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, "an HTTP request to the TLS port is refused")
	var body struct{ Error string }
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	require.Equal(t, "bad request: client sent an HTTP request to an HTTPS server", body.Error)
}

// tlsAnswer sends req on a new TLS connection to addr and reads the answer.
func tlsAnswer(t *testing.T, addr, req string) (*http.Response, string) {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	require.NoError(t, err)
	defer conn.Close()
	return testutil.Exchange(t, conn, req)
}

// With --web.systemd-socket, sentinel serves on the socket systemd passes
// (LISTEN_FDS), through the same stack as its own listeners: TLS, and
// net/http's own errors in JSON.
func TestSystemdSocketTLS(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sentinel.yml")
	writeFile(t, cfg, serveConfig)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	f, err := l.(*net.TCPListener).File()
	require.NoError(t, err)
	defer f.Close()

	// LISTEN_PID must be sentinel's own pid: the shell sets it to its own
	// and execs sentinel, which keeps the pid and the passed socket (fd 3).
	logs := &testutil.SyncBuffer{}
	cmd := exec.Command("sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"`, sentinelBin,
		"--config.file="+cfg, "--storage.path="+filepath.Join(dir, "data"), "--web.systemd-socket",
		"--web.config.file="+tlsWebConfig(t, dir))
	cmd.ExtraFiles = []*os.File{f}
	cmd.Stdout, cmd.Stderr = logs, logs
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	addr := l.Addr().String()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	eventually(t, 20*time.Second, func() bool {
		res, err := client.Get("https://" + addr + "/-/ready")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	}, func() string { return "not ready on the systemd socket:\n" + logs.String() })

	res, body := tlsAnswer(t, addr, "GET /-/healthy HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 20<<10)+"\r\n\r\n")
	require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, res.StatusCode, body)
	require.Equal(t, "application/json", res.Header.Get("Content-Type"))
	require.Equal(t, "nosniff", res.Header.Get("X-Content-Type-Options"))
	require.JSONEq(t, `{"error":"request header fields too large: the request line and headers exceed --web.max-header-bytes"}`, body)

	res, body = tlsAnswer(t, addr, "GET /-/healthy HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n")
	require.Equal(t, http.StatusBadRequest, res.StatusCode, body)
	require.JSONEq(t, `{"error":"bad request"}`, body)
}

// --config.check checks the web configuration too, and a start refuses one
// sentinel cannot serve; the errors name the file and the key, never a
// value.
func TestWebConfigRefused(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sentinel.yml")
	writeFile(t, cfg, serveConfig)
	good := tlsWebConfig(t, dir)
	basic := filepath.Join(dir, "basic.yml")
	writeFile(t, basic, "basic_auth_users:\n  canary-user: $2y$10$canarycanarycanarycanarycanarycanarycanarycanarycanar\n")
	badCert := filepath.Join(dir, "bad-cert.yml")
	writeFile(t, badCert, "tls_server_config:\n  cert_file: canary-cert.pem\n  key_file: canary-key.pem\n")

	code, stdout, stderr := runSentinel(t, "--config.check", "--config.file="+cfg, "--web.config.file="+good)
	require.Equal(t, 0, code, stderr)
	require.Equal(t, "SUCCESS: "+cfg+" is valid sentinel configuration\nSUCCESS: "+good+" is valid web configuration\n", stdout)

	for _, tc := range []struct {
		file, error string
	}{
		{basic, "web config " + basic + ": basic_auth_users is not supported"},
		{badCert, "web config " + badCert + ": failed to read cert_file"},
	} {
		code, stdout, stderr = runSentinel(t, "--config.check", "--config.file="+cfg, "--web.config.file="+tc.file)
		require.Equal(t, 1, code, stderr)
		require.Contains(t, stderr, "FAILED: "+tc.error)
		requireNoCanary(t, "--config.check", stdout+stderr)

		code, stdout, stderr = runSentinel(t, "--config.file="+cfg, "--storage.path="+filepath.Join(dir, "data"),
			"--web.listen-address=127.0.0.1:0", "--web.config.file="+tc.file)
		require.Equal(t, 1, code, stderr)
		require.Contains(t, stderr, "cannot start")
		require.Contains(t, stderr, tc.error)
		requireNoCanary(t, "start-up", stdout+stderr)
	}
	// Refused before the ledger was opened.
	_, err := os.Stat(filepath.Join(dir, "data"))
	require.ErrorIs(t, err, os.ErrNotExist)
}
