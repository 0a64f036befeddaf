package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/internal/testutil"
)

// The tests of this package run the real binary, built once by TestMain
// (with the race detector when the tests have it).

var sentinelBin string

func TestMain(m *testing.M) {
	code := testutil.MainWithBinary(m, "github.com/agentsentinel/sentinel/cmd/sentinel", &sentinelBin)
	testutil.StopPostgres() // started by the replica tests' first PostgresDSN
	os.Exit(code)
}

// runSentinel runs the binary to completion and returns its exit code and
// its stdout and stderr.
func runSentinel(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(sentinelBin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		require.NoError(t, err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

func TestVersion(t *testing.T) {
	code, stdout, stderr := runSentinel(t, "--version")
	require.Equal(t, 0, code, stderr)
	out := stdout + stderr
	require.Contains(t, out, "sentinel, version")
	require.Contains(t, out, "go version:")
	require.Contains(t, out, "platform:")
}

func TestHelp(t *testing.T) {
	code, stdout, stderr := runSentinel(t, "-h")
	require.Equal(t, 0, code, stderr)
	out := stdout + stderr
	for _, flag := range []string{
		"--config.file", "config.check", "--web.listen-address", "--web.config.file",
		"--web.telemetry-path", "--web.max-requests", "--web.max-connections", "--web.idle-timeout",
		"--web.read-header-timeout", "--web.max-header-bytes", "--storage.path", "--log.level", "--log.format", "version",
	} {
		require.Contains(t, out, flag)
	}
}

func TestBadFlag(t *testing.T) {
	for _, tc := range []struct {
		arg, want string
	}{
		{"--no-such-flag", "no-such-flag"},
		{"--web.max-requests=0", "sentinel: --web.max-requests must be at least 1, got 0\n"},
		{"--web.max-requests=-3", "sentinel: --web.max-requests must be at least 1, got -3\n"},
		{"--web.max-requests=many", `parsing "many": invalid syntax`},
		{"--web.max-connections=0", "sentinel: --web.max-connections must be at least 1, got 0\n"},
		{"--web.idle-timeout=0s", "sentinel: --web.idle-timeout must be positive, got 0s\n"},
		{"--web.read-header-timeout=0s", "sentinel: --web.read-header-timeout must be positive, got 0s\n"},
		{"--web.max-header-bytes=100B", "sentinel: --web.max-header-bytes must be between 1KiB and 1MiB, got 100B\n"},
		{"--web.max-header-bytes=2MiB", "sentinel: --web.max-header-bytes must be between 1KiB and 1MiB, got 2MiB\n"},
	} {
		t.Run(tc.arg, func(t *testing.T) {
			code, _, stderr := runSentinel(t, tc.arg)
			require.Equal(t, 2, code)
			require.Contains(t, stderr, tc.want)
		})
	}
}

func TestConfigCheck(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yml")
	require.NoError(t, os.WriteFile(bad, []byte("tenants:\n  - id: acme\n    api_keys: [k]\n    webhok: {}\n"), 0o600))
	invalid := filepath.Join(dir, "invalid.yml")
	require.NoError(t, os.WriteFile(invalid, []byte("heartbeat:\n  silent_after: 20\ntenants:\n  - id: acme\n"), 0o600))
	missing := filepath.Join(dir, "missing.yml")
	example := "../../deploy/sentinel.example.yml"

	for _, tc := range []struct {
		name   string
		file   string
		code   int
		stdout string
		stderr string
	}{
		{"example", example, 0, "SUCCESS: " + example + " is valid sentinel configuration\n", ""},
		{"unknown key", bad, 1, "", "FAILED: config " + bad + ": yaml: unmarshal errors:\n  line 4: unknown field in type config.TenantConfig (name not shown: it may be a secret); did you mean webhook?\n"},
		{"invalid", invalid, 1, "", "FAILED: config " + invalid + ": heartbeat.zombie_after must be greater than heartbeat.silent_after\n"},
		{"missing", missing, 1, "", "FAILED: read config " + missing + ": open " + missing + ": no such file or directory\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// --storage.path points nowhere useful: a check must not touch it.
			storage := filepath.Join(t.TempDir(), "never-created")
			code, stdout, stderr := runSentinel(t, "--config.check", "--config.file="+tc.file, "--storage.path="+storage)
			require.Equal(t, tc.code, code, "stdout %q stderr %q", stdout, stderr)
			require.Equal(t, tc.stdout, stdout)
			require.Equal(t, tc.stderr, stderr)
			_, err := os.Stat(storage)
			require.ErrorIs(t, err, os.ErrNotExist)
		})
	}
}

// sentinelProc is a running sentinel binary.
type sentinelProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	base   string
	logs   *testutil.SyncBuffer
	exited chan struct{}
	client *http.Client
}

// startSentinel starts the binary on a free loopback port and waits until
// it is ready. It is killed at the end of the test if still running.
func startSentinel(t *testing.T, configFile, storage string, extra ...string) *sentinelProc {
	t.Helper()
	for attempt := 0; ; attempt++ {
		addr := testutil.FreeAddr(t)
		args := append([]string{
			"--config.file=" + configFile, "--storage.path=" + storage,
			"--web.listen-address=" + addr, "--log.level=debug",
		}, extra...)
		p := &sentinelProc{
			t: t, cmd: exec.Command(sentinelBin, args...), base: "http://" + addr,
			logs: &testutil.SyncBuffer{}, exited: make(chan struct{}),
			client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}},
		}
		if slices.ContainsFunc(extra, func(a string) bool { return strings.HasPrefix(a, "--web.config.file=") }) {
			// The tests' web configurations serve TLS with a self-signed certificate.
			p.base = "https://" + addr
			p.client.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
		}
		p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
		require.NoError(t, p.cmd.Start())
		go func() {
			_ = p.cmd.Wait()
			close(p.exited)
		}()
		t.Cleanup(p.kill)
		if p.waitReady(20 * time.Second) {
			return p
		}
		// Someone took the port between FreeAddr and the start: try another.
		if attempt < 3 && strings.Contains(p.logs.String(), "address already in use") {
			continue
		}
		t.Fatalf("sentinel did not become ready; exit %v; output:\n%s", p.cmd.ProcessState, p.logs.String())
	}
}

// waitReady polls /-/ready until it answers 200 or the process exits.
func (p *sentinelProc) waitReady(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		resp, err := p.client.Get(p.base + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
		select {
		case <-p.exited:
			return false
		case <-tick.C:
		}
	}
	return false
}

// kill sends SIGKILL (a crash) and waits for the process to be gone.
func (p *sentinelProc) kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
	p.client.CloseIdleConnections()
}

func (p *sentinelProc) signal(sig os.Signal) {
	p.t.Helper()
	require.NoError(p.t, p.cmd.Process.Signal(sig))
}

// wait waits for the process to exit and returns its exit code.
func (p *sentinelProc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.exited:
	case <-time.After(timeout):
		p.t.Fatalf("sentinel did not exit within %s; output:\n%s", timeout, p.logs.String())
	}
	return p.cmd.ProcessState.ExitCode()
}

// eventually polls cond every 10 ms until it holds, or fails with what
// describe says when timeout passes.
func eventually(t *testing.T, timeout time.Duration, cond func() bool, describe func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(describe())
		}
		<-tick.C
	}
}

type reply struct {
	status int
	body   []byte
}

func (r reply) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(r.body, &m), "body %q", r.body)
	return m
}

// request sends one request; an error is returned, not fatal, because the
// durability test expects them once it has killed the process.
func (p *sentinelProc) request(method, path, token string, body any) (reply, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return reply{}, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, p.base+path, rd)
	if err != nil {
		return reply{}, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, err
	}
	return reply{status: resp.StatusCode, body: b}, nil
}

func (p *sentinelProc) mustRequest(method, path, token string, body any) reply {
	p.t.Helper()
	r, err := p.request(method, path, token, body)
	require.NoError(p.t, err)
	return r
}

// beat sends a Beacon heartbeat and requires a 200.
func (p *sentinelProc) beat(id, token string, body any) map[string]any {
	p.t.Helper()
	r := p.mustRequest(http.MethodPost, "/api/v1/installations/"+id+"/heartbeat", token, body)
	require.Equal(p.t, http.StatusOK, r.status, "heartbeat of %s: %s", id, r.body)
	return r.json(p.t)
}

// register registers an agent with a tenant key and returns its runtime token.
func (p *sentinelProc) register(id, key string, body any) string {
	p.t.Helper()
	m := p.beat(id, key, body)
	require.Equal(p.t, true, m["registered"], "%v", m)
	return m["runtime_token"].(map[string]any)["runtime_token"].(string)
}

// metric returns the value of an unlabelled or exactly written series.
func (p *sentinelProc) metric(series string) (float64, bool) {
	r, err := p.request(http.MethodGet, "/metrics", "", nil)
	if err != nil || r.status != http.StatusOK {
		return 0, false
	}
	for _, line := range strings.Split(string(r.body), "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
}
