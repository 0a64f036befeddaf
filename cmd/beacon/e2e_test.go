package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/internal/testutil"
)

// The end-to-end tests build the real beacon binary and run it against a
// sentinel served in-process (startSentinel).

var beaconBin string

func TestMain(m *testing.M) {
	os.Exit(testutil.MainWithBinary(m, "github.com/agentsentinel/sentinel/cmd/beacon", &beaconBin))
}

const (
	testAPIKey     = "acme-api-key-0123456789"
	testAdminToken = "acme-admin-token-0123456789"
)

// sentinelServer is a sentinel under test: heartbeats, the admin API and
// /metrics over HTTP.
type sentinelServer struct {
	URL  string
	fake *fakeSentinel // the scriptable fake; nil when testing the real app
}

// startSentinel starts the sentinel the end-to-end tests run against, with a
// tenant "acme" holding testAPIKey and testAdminToken.
func startSentinel(t *testing.T) *sentinelServer {
	t.Helper()
	return startRealSentinel(t)
}

// startFakeSentinel starts the scriptable fake, for what the real app cannot
// be made to do (answer 5xx on demand).
func startFakeSentinel(t *testing.T) *sentinelServer {
	t.Helper()
	f := newFakeSentinel(testAPIKey, testAdminToken)
	srv := httptest.NewServer(f.Handler())
	t.Cleanup(srv.Close)
	return &sentinelServer{URL: srv.URL, fake: f}
}

// admin calls the admin API and requires a 2xx answer.
func (s *sentinelServer) admin(t *testing.T, method, path string, body any) {
	t.Helper()
	b, err := json.Marshal(body)
	require.NoError(t, err)
	req, err := http.NewRequest(method, s.URL+path, bytes.NewReader(b))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+testAdminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var out bytes.Buffer
	_, _ = out.ReadFrom(resp.Body)
	require.True(t, resp.StatusCode/100 == 2, "%s %s: %d %s", method, path, resp.StatusCode, out.String())
}

func (s *sentinelServer) revoke(t *testing.T, id string, timeout time.Duration) {
	t.Helper()
	s.admin(t, http.MethodPost, "/api/v1/installations/"+id+"/revoke",
		map[string]any{"reason": "e2e kill switch", "shutdown_timeout_ms": timeout.Milliseconds()})
}

func (s *sentinelServer) command(t *testing.T, id, command string) {
	t.Helper()
	s.admin(t, http.MethodPost, "/api/v1/installations/"+id+"/command", map[string]any{"command": command})
}

// value returns the value of the first series of metric name whose labels
// include want, and whether there is one.
func (s *sentinelServer) value(t *testing.T, name string, want map[string]string) (float64, bool) {
	t.Helper()
	resp, err := http.Get(s.URL + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	var body bytes.Buffer
	_, err = body.ReadFrom(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	for _, line := range strings.Split(body.String(), "\n") {
		n, labels, v, ok := parseSample(line)
		if !ok || n != name {
			continue
		}
		match := true
		for k, w := range want {
			match = match && labels[k] == w
		}
		if match {
			return v, true
		}
	}
	return 0, false
}

// waitValue waits until metric name with labels want has value v.
func (s *sentinelServer) waitValue(t *testing.T, name string, want map[string]string, v float64) {
	t.Helper()
	require.Eventually(t, func() bool {
		got, ok := s.value(t, name, want)
		return ok && got == v
	}, 15*time.Second, 20*time.Millisecond, "%s%v never became %v", name, want, v)
}

// parseSample parses one line of the text exposition format.
func parseSample(line string) (name string, labels map[string]string, v float64, ok bool) {
	line = strings.TrimSpace(line)
	if line == "" || line[0] == '#' {
		return "", nil, 0, false
	}
	labels = map[string]string{}
	rest := line
	if i := strings.IndexAny(line, "{ "); i < 0 {
		return "", nil, 0, false
	} else if line[i] == '{' {
		name, rest = line[:i], line[i+1:]
		for {
			rest = strings.TrimLeft(rest, ", ")
			if strings.HasPrefix(rest, "}") {
				rest = rest[1:]
				break
			}
			eq := strings.Index(rest, `="`)
			if eq < 0 {
				return "", nil, 0, false
			}
			key := rest[:eq]
			rest = rest[eq+1:]
			val, err := strconv.QuotedPrefix(rest)
			if err != nil {
				return "", nil, 0, false
			}
			rest = rest[len(val):]
			labels[key], _ = strconv.Unquote(val)
		}
	} else {
		name, rest = line[:i], line[i:]
	}
	fields := strings.Fields(rest)
	if len(fields) == 0 {
		return "", nil, 0, false
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	return name, labels, v, err == nil
}

// syncBuffer collects a process's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// count returns how many lines contain all of subs.
func (s *syncBuffer) count(subs ...string) int {
	n := 0
	for _, line := range strings.Split(s.String(), "\n") {
		ok := line != ""
		for _, sub := range subs {
			ok = ok && strings.Contains(line, sub)
		}
		if ok {
			n++
		}
	}
	return n
}

// beaconProc is a running beacon binary.
type beaconProc struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{}
	code   int
	ended  time.Time
}

// cleanEnv is the test's environment without anything beacon reads.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "SENTINEL_"), strings.HasPrefix(k, "KUBERNETES_"), strings.HasPrefix(k, "AWS_"),
			strings.HasPrefix(k, "POD_"), strings.HasPrefix(k, "BEACON_"), k == "NODE_NAME", k == "IMAGE":
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// startBeacon runs the beacon binary with args in env (see cleanEnv).
func startBeacon(t *testing.T, env []string, args ...string) *beaconProc {
	t.Helper()
	return startBeaconWith(t, nil, env, args...)
}

// startBeaconWith is startBeacon with setup applied to the command before it
// starts.
func startBeaconWith(t *testing.T, setup func(*exec.Cmd), env []string, args ...string) *beaconProc {
	t.Helper()
	p := &beaconProc{cmd: exec.Command(beaconBin, args...), stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Env = env
	p.cmd.Stdout = p.stderr
	p.cmd.Stderr = p.stderr
	// A process left behind holding the output pipe must fail the test, not
	// hang it.
	p.cmd.WaitDelay = 5 * time.Second
	if setup != nil {
		setup(p.cmd)
	}
	require.NoError(t, p.cmd.Start())
	go func() {
		_ = p.cmd.Wait()
		p.ended = time.Now()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("beacon output:\n%s", p.stderr.String())
		}
	})
	return p
}

// wait waits for beacon to exit and returns its exit code.
func (p *beaconProc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(20 * time.Second):
		t.Fatalf("beacon did not exit; output:\n%s", p.stderr.String())
		return -1
	}
}

func (p *beaconProc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// agentArgs are the flags of a beacon heartbeating every second to s as id.
func agentArgs(s *sentinelServer, id string, more ...string) []string {
	args := []string{"run", "--endpoint", s.URL, "--token", testAPIKey, "--heartbeat-interval", "1"}
	if id != "" {
		args = append(args, "--id", id)
	}
	return append(args, more...)
}

// waitFile waits until the child wrote path and returns its content.
func waitFile(t *testing.T, path string) string {
	t.Helper()
	var s string
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(path)
		s = string(b)
		return err == nil && strings.HasSuffix(s, "\n")
	}, 15*time.Second, 10*time.Millisecond, "%s never written", path)
	return strings.TrimSpace(s)
}

// gone reports whether process pid has ended (a zombie has: no signal
// reaches it, and its new parent may not reap it soon).
func gone(pid string) bool {
	st := procState(pid)
	return st == "" || st == "Z" || st == "X"
}

// procState is the state letter of /proc/<pid>/stat ("" when gone).
func procState(pid string) string {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// waitUntilStopFile is a child script fragment that idles until file exists.
func waitUntilStopFile(file string) string {
	return `while [ ! -f '` + file + `' ]; do sleep 0.02; done`
}

func touch(t *testing.T, path string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, nil, 0o600))
}

func TestE2EPlatformLabelsAndMetrics(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		env    []string
		id     string
		labels map[string]string
	}{
		{
			name: "kubernetes",
			env:  []string{"KUBERNETES_SERVICE_HOST=10.0.0.1", "POD_NAME=my-agent-7f8a9b-xyz", "POD_NAMESPACE=production", "NODE_NAME=node-pool-1-abc"},
			id:   "my-agent-7f8a9b-xyz", // derived from the pod name
			labels: map[string]string{"platform": "kubernetes", "pod": "my-agent-7f8a9b-xyz", "namespace": "production", "node": "node-pool-1-abc",
				"version": "2.0.1", "status": "degraded"},
		},
		{
			name:   "lambda",
			env:    []string{"AWS_LAMBDA_FUNCTION_NAME=summarise-tickets", "AWS_REGION=eu-west-1"},
			id:     "summarise-tickets",
			labels: map[string]string{"platform": "lambda", "function": "summarise-tickets", "region": "eu-west-1", "version": "2.0.1", "status": "degraded"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := startSentinel(t)
			stop := filepath.Join(t.TempDir(), "stop")
			// The child reports through BEACON_METRICS_FILE (temp file + rename).
			script := `printf '{"status":"degraded","requests_handled":1500,"errors":2,"avg_latency_ms":145}' > "$BEACON_METRICS_FILE.tmp" &&
				mv "$BEACON_METRICS_FILE.tmp" "$BEACON_METRICS_FILE"; ` + waitUntilStopFile(stop)
			p := startBeacon(t, cleanEnv(tc.env...), append(agentArgs(s, ""), "--agent-version", "2.0.1", "--cmd", script)...)

			agent := map[string]string{"tenant": "acme", "agent_id": tc.id}
			s.waitValue(t, "sentinel_agent_requests_handled_total", agent, 1500)
			s.waitValue(t, "sentinel_agent_errors_total", agent, 2)
			s.waitValue(t, "sentinel_agent_latency_average_seconds", agent, 0.145)
			labels := map[string]string{"tenant": "acme", "agent_id": tc.id}
			for k, v := range tc.labels {
				labels[k] = v
			}
			s.waitValue(t, "sentinel_agent_info", labels, 1)
			s.waitValue(t, "sentinel_agent_stopped", agent, 0)

			touch(t, stop)
			require.Equal(t, 0, p.wait(t))
			s.waitValue(t, "sentinel_agent_stopped", agent, 1)
		})
	}
}

// TestE2EPauseResume: the kill switch's pause and resume reach the child in
// either protocol.
func TestE2EPauseResume(t *testing.T) {
	t.Parallel()
	for _, protocol := range []string{"beacon", "abs"} {
		t.Run(protocol, func(t *testing.T) {
			t.Parallel()
			s := startSentinel(t)
			id := "pausable-" + protocol
			pidFile := filepath.Join(t.TempDir(), "pid")
			p := startBeacon(t, cleanEnv(), agentArgs(s, id, "--protocol", protocol, "--", "sh", "-c", "echo $$ > "+pidFile+"; exec sleep 60")...)
			pid := waitFile(t, pidFile)
			s.waitValue(t, "sentinel_agent_stopped", map[string]string{"agent_id": id}, 0)

			s.command(t, id, "pause")
			require.Eventually(t, func() bool { return procState(pid) == "T" }, 10*time.Second, 10*time.Millisecond, "not stopped")
			s.command(t, id, "resume")
			require.Eventually(t, func() bool { st := procState(pid); return st == "S" || st == "R" }, 10*time.Second, 10*time.Millisecond, "not resumed")

			// SIGTERM to beacon reaches the child, and the final heartbeat follows.
			require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
			require.Equal(t, 128+int(syscall.SIGTERM), p.wait(t))
			s.waitValue(t, "sentinel_agent_stopped", map[string]string{"agent_id": id}, 1)
		})
	}
}

func TestE2EKillSwitch(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		protocol string
		child    string // %[1]s: pid file, %[2]s: file the TERM trap writes
		timeout  time.Duration
		killed   bool // the child only ends by SIGKILL
	}{
		{"ignores SIGTERM", "beacon", `trap 'date +%%s.%%N > %[2]s' TERM; echo $$ > %[1]s; while :; do sleep 0.05; done`, 800 * time.Millisecond, true},
		{"exits on SIGTERM", "beacon", `trap 'date +%%s.%%N > %[2]s; exit 0' TERM; echo $$ > %[1]s; while :; do sleep 0.05; done`, 10 * time.Second, false},
		{"abs protocol", "abs", `trap 'date +%%s.%%N > %[2]s' TERM; echo $$ > %[1]s; while :; do sleep 0.05; done`, 500 * time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := startSentinel(t)
			dir := t.TempDir()
			pidFile, termFile := filepath.Join(dir, "pid"), filepath.Join(dir, "term")
			id := "rogue-" + strings.ReplaceAll(tc.name, " ", "-")
			p := startBeacon(t, cleanEnv(), agentArgs(s, id, "--protocol", tc.protocol, "--cmd", fmt.Sprintf(tc.child, pidFile, termFile))...)
			pid := waitFile(t, pidFile)
			s.waitValue(t, "sentinel_agent_revoked", map[string]string{"agent_id": id}, 0)

			s.revoke(t, id, tc.timeout)
			require.Equal(t, 3, p.wait(t), "exit code for a revocation")
			term := waitFile(t, termFile)
			sec, err := strconv.ParseFloat(term, 64)
			require.NoError(t, err)
			termAt := time.Unix(0, int64(sec*1e9))
			lived := p.ended.Sub(termAt)
			if tc.killed {
				// The trap runs up to one sleep (50 ms) after SIGTERM arrives.
				require.GreaterOrEqual(t, lived, tc.timeout-100*time.Millisecond, "SIGKILL came before the shutdown timeout")
				require.Less(t, lived, tc.timeout+2*time.Second)
			} else {
				require.Less(t, lived, 2*time.Second, "beacon waited for the timeout although the child had exited")
			}
			require.Empty(t, procState(pid), "the child is gone")
			require.Contains(t, p.stderr.String(), "e2e kill switch", "the reason is logged")
			s.waitValue(t, "sentinel_agent_revoked", map[string]string{"agent_id": id}, 1)
		})
	}
}

// TestE2ERevokeWithoutGrace: "shutdown_timeout_ms": 0 is no grace at all,
// not "use the default".
func TestE2ERevokeWithoutGrace(t *testing.T) {
	t.Parallel()
	s := startSentinel(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	p := startBeacon(t, cleanEnv(), agentArgs(s, "no-grace", "--shutdown-timeout", "1h",
		"--cmd", `trap '' TERM; echo $$ > `+pidFile+`; while :; do sleep 0.05; done`)...)
	pid := waitFile(t, pidFile)
	s.waitValue(t, "sentinel_agent_revoked", map[string]string{"agent_id": "no-grace"}, 0)
	revoked := time.Now()
	s.revoke(t, "no-grace", 0)
	require.Equal(t, 3, p.wait(t), "exit code for a revocation")
	require.Less(t, p.ended.Sub(revoked), 5*time.Second, "beacon waited for a grace period sentinel did not give")
	require.Empty(t, procState(pid), "the child is gone")
}

func TestE2ETerminateCommand(t *testing.T) {
	t.Parallel()
	for _, protocol := range []string{"beacon", "abs"} {
		t.Run(protocol, func(t *testing.T) {
			t.Parallel()
			s := startSentinel(t)
			id := "terminated-" + protocol
			p := startBeacon(t, cleanEnv(), agentArgs(s, id, "--protocol", protocol, "--shutdown-timeout", "500ms", "--", "sleep", "60")...)
			s.waitValue(t, "sentinel_agent_stopped", map[string]string{"agent_id": id}, 0)
			s.command(t, id, "terminate")
			require.Equal(t, 4, p.wait(t), "exit code for a terminate command")
			s.waitValue(t, "sentinel_agent_stopped", map[string]string{"agent_id": id}, 1)
			s.waitValue(t, "sentinel_agent_revoked", map[string]string{"agent_id": id}, 0)
		})
	}
}

func TestE2EExitCodes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		code int
	}{
		{"success", []string{"--", "true"}, 0},
		{"failure", []string{"--", "sh", "-c", "exit 7"}, 7},
		{"--cmd through /bin/sh", []string{"--cmd", "exit 9"}, 9},
		{"killed by SIGKILL", []string{"--", "sh", "-c", "kill -KILL $$"}, 137},
		{"not found", []string{"--", "no-such-command-beacon-e2e"}, 127},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := startSentinel(t)
			id := "exit-" + strconv.Itoa(tc.code)
			p := startBeacon(t, cleanEnv(), agentArgs(s, id, tc.args...)...)
			require.Equal(t, tc.code, p.wait(t))
			if tc.code != 127 {
				s.waitValue(t, "sentinel_agent_stopped", map[string]string{"agent_id": id}, 1)
			}
		})
	}
	t.Run("no heartbeat", func(t *testing.T) {
		t.Parallel()
		p := startBeacon(t, cleanEnv(), "run", "--no-heartbeat", "--", "sh", "-c", "exit 5")
		require.Equal(t, 5, p.wait(t))
	})
}

// TestE2EUnreachable: sentinel accepts connections and drops them; the child
// keeps running, beacon keeps retrying and warns once.
func TestE2EUnreachable(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	attempts := make(chan struct{}, 100)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
			attempts <- struct{}{}
		}
	}()
	stop := filepath.Join(t.TempDir(), "stop")
	p := startBeacon(t, cleanEnv(), "run", "--endpoint", "http://"+ln.Addr().String(), "--token", testAPIKey,
		"--id", "lonely", "--heartbeat-interval", "1", "--cmd", waitUntilStopFile(stop)+"; exit 6")
	for range 3 {
		select {
		case <-attempts:
		case <-time.After(15 * time.Second):
			t.Fatal("beacon stopped retrying")
		}
	}
	require.True(t, p.running(), "the agent keeps running while sentinel is unreachable")
	touch(t, stop)
	require.Equal(t, 6, p.wait(t))
	require.Equal(t, 1, p.stderr.count("level=WARN", "Sentinel unreachable"), "one warning per failure streak")
	require.NotContains(t, p.stderr.String(), testAPIKey)

	t.Run("nothing listening", func(t *testing.T) {
		t.Parallel()
		p := startBeacon(t, cleanEnv(), "run", "--endpoint", "http://127.0.0.1:1", "--token", testAPIKey,
			"--id", "lonely", "--", "sh", "-c", "exit 0")
		require.Equal(t, 0, p.wait(t))
	})
}

// TestE2EFailingSentinel: 503 answers are a failure streak, logged once, and
// the recovery once; the child never notices.
func TestE2EFailingSentinel(t *testing.T) {
	t.Parallel()
	s := startFakeSentinel(t)
	s.fake.setFail(http.StatusServiceUnavailable)
	stop := filepath.Join(t.TempDir(), "stop")
	p := startBeacon(t, cleanEnv(), agentArgs(s, "flaky", "--cmd", waitUntilStopFile(stop))...)
	require.Eventually(t, func() bool { return p.stderr.count("Sentinel unreachable") == 1 }, 15*time.Second, 10*time.Millisecond)
	s.fake.setFail(0)
	require.Eventually(t, func() bool { return p.stderr.count("Sentinel reachable again") == 1 }, 15*time.Second, 10*time.Millisecond)
	require.True(t, p.running())
	touch(t, stop)
	require.Equal(t, 0, p.wait(t))
	require.Equal(t, 1, p.stderr.count("Sentinel unreachable"))

	t.Run("401 is an error, the child keeps running", func(t *testing.T) {
		t.Parallel()
		stop := filepath.Join(t.TempDir(), "stop")
		p := startBeacon(t, cleanEnv(), "run", "--endpoint", s.URL, "--token", "wrong-key", "--id", "refused",
			"--heartbeat-interval", "1", "--cmd", waitUntilStopFile(stop))
		require.Eventually(t, func() bool { return p.stderr.count("level=ERROR", "Sentinel refused the heartbeat", "401") == 1 }, 15*time.Second, 10*time.Millisecond)
		require.True(t, p.running())
		touch(t, stop)
		require.Equal(t, 0, p.wait(t))
		require.NotContains(t, p.stderr.String(), "wrong-key")
	})
}

func TestE2ETokenFile(t *testing.T) {
	t.Parallel()
	s := startSentinel(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	stop := filepath.Join(t.TempDir(), "stop")
	p := startBeacon(t, cleanEnv(), agentArgs(s, "tokened", "--token-file", tokenFile, "--cmd", waitUntilStopFile(stop))...)
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(tokenFile)
		return err == nil && strings.HasPrefix(string(b), "srt_")
	}, 15*time.Second, 10*time.Millisecond)
	fi, err := os.Stat(tokenFile)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	touch(t, stop)
	require.Equal(t, 0, p.wait(t))
	require.NotContains(t, p.stderr.String(), "srt_", "tokens are never logged")

	// A second run uses the stored runtime token: no API key needed.
	b, err := os.ReadFile(tokenFile)
	require.NoError(t, err)
	srt := strings.TrimSpace(string(b))
	before, _ := s.value(t, "sentinel_agent_last_heartbeat_timestamp_seconds", map[string]string{"agent_id": "tokened"})
	p = startBeacon(t, cleanEnv(), "run", "--endpoint", s.URL, "--token-file", tokenFile, "--id", "tokened", "--", "sh", "-c", "exit 0")
	require.Equal(t, 0, p.wait(t))
	require.Zero(t, p.stderr.count("level=ERROR"), "the runtime token was accepted")
	require.Zero(t, p.stderr.count("Final shutdown heartbeat failed"))
	after, _ := s.value(t, "sentinel_agent_last_heartbeat_timestamp_seconds", map[string]string{"agent_id": "tokened"})
	require.Greater(t, after, before)
	if s.fake != nil {
		auths := s.fake.auths("tokened")
		require.Equal(t, srt, auths[len(auths)-1])
	}
}

func TestE2EUsage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		code int
		msg  string
	}{
		{"help", nil, []string{"run", "--help"}, 0, "--heartbeat-interval"},
		{"no command", nil, []string{"run", "--endpoint", "http://x", "--token", "k"}, 2, "no command to run"},
		{"both --cmd and command", nil, []string{"run", "--no-heartbeat", "--cmd", "true", "--", "true"}, 2, "either --cmd or COMMAND"},
		{"no endpoint", nil, []string{"run", "--token", "k", "--", "true"}, 2, "no sentinel endpoint"},
		{"no credential", []string{"SENTINEL_URL=http://x"}, []string{"run", "--", "true"}, 2, "no credential"},
		{"bad id", nil, []string{"run", "--endpoint", "http://x", "--token", "k", "--id", "bad id!", "--", "true"}, 2, "not a valid agent id"},
		{"bad endpoint", nil, []string{"run", "--endpoint", "sentinel:8080", "--token", "k", "--id", "a", "--", "true"}, 2, "scheme must be http or https"},
		{"bad interval", nil, []string{"run", "--heartbeat-interval", "soon", "--", "true"}, 2, "not a duration"},
		{"bad protocol", nil, []string{"run", "--protocol", "grpc", "--", "true"}, 2, "grpc"},
		{"bad silent-after", nil, []string{"run", "--silent-after", "three", "--", "true"}, 2, "three"},
		{"negative zombie-after", nil, []string{"run", "--endpoint", "http://x", "--token", "k", "--id", "a", "--zombie-after=-1", "--", "true"}, 2, "must be positive"},
		{"zombie-after not above silent-after", []string{"SENTINEL_SILENT_AFTER=5"}, []string{"run", "--endpoint", "http://x", "--token", "k", "--id", "a", "--zombie-after", "5", "--", "true"}, 2, "--zombie-after (5) must be greater than --silent-after (5)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := startBeacon(t, cleanEnv(tc.env...), tc.args...)
			require.Equal(t, tc.code, p.wait(t), p.stderr.String())
			require.Contains(t, p.stderr.String(), tc.msg)
		})
	}
}

// TestE2EEnvironment: flags come from SENTINEL_* too, an interval of "30"
// is thirty seconds, and the agent's thresholds reach sentinel's deadlines.
func TestE2EEnvironment(t *testing.T) {
	t.Parallel()
	s := startSentinel(t)
	env := cleanEnv("SENTINEL_URL="+s.URL, "SENTINEL_TOKEN="+testAPIKey, "SENTINEL_AGENT_ID=from-env", "SENTINEL_SILENT_AFTER=3")
	p := startBeacon(t, env, "run", "--heartbeat-interval", "30", "--zombie-after", "7", "--", "sh", "-c", "exit 0")
	require.Equal(t, 0, p.wait(t))
	agent := map[string]string{"agent_id": "from-env"}
	s.waitValue(t, "sentinel_agent_heartbeat_interval_seconds", agent, 30)
	s.waitValue(t, "sentinel_agent_stopped", agent, 1)
	last, ok := s.value(t, "sentinel_agent_last_heartbeat_timestamp_seconds", agent)
	require.True(t, ok)
	lease, ok := s.value(t, "sentinel_agent_lease_expiry_timestamp_seconds", agent)
	require.True(t, ok)
	zombie, ok := s.value(t, "sentinel_agent_zombie_deadline_timestamp_seconds", agent)
	require.True(t, ok)
	require.InDelta(t, 3*30, lease-last, 1e-3, "silent_after from SENTINEL_SILENT_AFTER")
	require.InDelta(t, 7*30, zombie-last, 1e-3, "zombie_after from --zombie-after")
}
