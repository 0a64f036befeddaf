package sdk

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/internal/testutil"
)

// server is a running sentinel binary.
type server struct {
	url    string
	client *http.Client
}

// startSentinel starts the sentinel binary on a free loopback port and waits
// until it is ready; it is stopped (SIGTERM) when the test ends.
func startSentinel(t *testing.T) *server {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sentinel.yml")
	require.NoError(t, os.WriteFile(cfg, []byte(sentinelConfig), 0o600))
	addr := testutil.FreeAddr(t)
	var log testutil.SyncBuffer
	cmd := exec.Command(sentinelBin, "--config.file="+cfg, "--storage.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=debug")
	cmd.Stdout, cmd.Stderr = &log, &log
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("sentinel log:\n%s", log.String())
		}
	})
	s := &server{url: "http://" + addr, client: &http.Client{Timeout: 10 * time.Second}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := s.client.Get(s.url + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		select {
		case <-done:
			t.Fatalf("sentinel exited at start:\n%s", log.String())
		case <-time.After(50 * time.Millisecond):
		}
		require.True(t, time.Now().Before(deadline), "sentinel not ready in 30s:\n%s", log.String())
	}
}

// do sends one request with a bearer credential and decodes the JSON answer.
func (s *server) do(t *testing.T, method, path, credential string, body any) (int, map[string]any) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(t, err)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.url+path, r)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+credential)
	resp, err := s.client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var doc map[string]any
	require.NoError(t, json.Unmarshal(raw, &doc), "%s %s: %s", method, path, raw)
	return resp.StatusCode, doc
}

// admin sends an admin API request that must succeed.
func (s *server) admin(t *testing.T, method, path string, body any) map[string]any {
	t.Helper()
	code, doc := s.do(t, method, path, adminToken, body)
	require.Equal(t, http.StatusOK, code, "%s %s: %v", method, path, doc)
	return doc
}

func (s *server) detail(t *testing.T, id string) map[string]any {
	t.Helper()
	return s.admin(t, http.MethodGet, "/api/v1/installations/"+id, nil)
}

// waitRegistered waits until sentinel knows the agent: on a loaded machine
// the first heartbeat may time out (the SDK then retries in the background),
// so an agent can be running before it is registered.
func (s *server) waitRegistered(t *testing.T, id string) {
	t.Helper()
	eventually(t, 30*time.Second, "agent "+id+" to register", func() bool {
		code, _ := s.do(t, http.MethodGet, "/api/v1/installations/"+id, adminToken, nil)
		return code == http.StatusOK
	})
}

// metric returns the value of the sample with exactly this name and labels.
func (s *server) metric(t *testing.T, series string) (float64, bool) {
	t.Helper()
	resp, err := s.client.Get(s.url + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(raw)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	require.NoError(t, err)
	return v, true
}

// eventually polls cond (an HTTP read of sentinel's state; nothing to wait
// on but the state itself) until it holds.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		require.True(t, time.Now().Before(deadline), "timed out after %s waiting for %s", timeout, what)
		time.Sleep(50 * time.Millisecond)
	}
}

// sdk runs an SDK's integration scenario script.
type sdk struct {
	name    string
	command func(t *testing.T) (dir string, argv []string, env []string)
}

func sdks() []sdk {
	return []sdk{
		{"python", func(t *testing.T) (string, []string, []string) {
			py := lookTool(t, "python3")
			dir := sdkDir(t, "python")
			return dir, []string{py, filepath.Join("integration", "scenario.py")}, []string{"PYTHONPATH=" + dir, "PYTHONDONTWRITEBYTECODE=1"}
		}},
		{"typescript", func(t *testing.T) (string, []string, []string) {
			dir := buildTypeScript(t)
			return dir, []string{lookTool(t, "node"), filepath.Join("dist", "integration", "scenario.js")}, nil
		}},
	}
}

// agent is one scenario process: the events it printed (one JSON object a
// line), its stdin for commands, and its end.
type agent struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	events chan map[string]any
	stderr testutil.SyncBuffer
	done   chan struct{}
	state  *os.ProcessState

	mu   sync.Mutex
	seen []map[string]any
}

// startAgent starts sdk's scenario script with env (KEY=value) on top of
// the test's environment, without any SENTINEL_* setting of its own.
func startAgent(t *testing.T, s sdk, env ...string) *agent {
	t.Helper()
	dir, argv, extra := s.command(t)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SENTINEL_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(append(append(cmd.Env, loopbackEnv...), extra...), env...)
	a := &agent{cmd: cmd, events: make(chan map[string]any, 4096), done: make(chan struct{})}
	cmd.Stderr = &a.stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	a.stdin, err = cmd.StdinPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var ev map[string]any
			if json.Unmarshal(sc.Bytes(), &ev) != nil {
				ev = map[string]any{"event": "garbage", "line": sc.Text()}
			}
			a.events <- ev
		}
		close(a.events)
		_ = cmd.Wait()
		a.state = cmd.ProcessState
		close(a.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-a.done
		if t.Failed() {
			a.mu.Lock()
			t.Logf("%s agent events: %v\nstderr:\n%s", s.name, a.seen, a.stderr.String())
			a.mu.Unlock()
		}
	})
	return a
}

// wait returns the next event named name, failing after timeout; the events
// passed over are kept in seen.
func (a *agent) wait(t *testing.T, name string, timeout time.Duration) map[string]any {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-a.events:
			require.True(t, ok, "the agent ended before %q; exit: %v\nstderr:\n%s", name, a.exitErr(), a.stderr.String())
			a.mu.Lock()
			a.seen = append(a.seen, ev)
			a.mu.Unlock()
			require.NotEqual(t, "garbage", ev["event"], "agent printed %v", ev["line"])
			if ev["event"] == name {
				return ev
			}
		case <-timer.C:
			t.Fatalf("no %q event from the agent within %s", name, timeout)
		}
	}
}

func (a *agent) exitErr() error {
	select {
	case <-a.done:
		if a.state != nil && !a.state.Success() {
			return errors.New(a.state.String())
		}
	default:
	}
	return nil
}

// count returns how many events named name were seen since index from.
func (a *agent) count(name string, from int) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, ev := range a.seen[min(from, len(a.seen)):] {
		if ev["event"] == name {
			n++
		}
	}
	return n
}

func (a *agent) mark() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.seen)
}

func (a *agent) send(t *testing.T, line string) {
	t.Helper()
	_, err := io.WriteString(a.stdin, line+"\n")
	require.NoError(t, err)
	require.NoError(t, a.stdin.Close())
}

// exit waits for the process to end and returns its state.
func (a *agent) exit(t *testing.T, timeout time.Duration) *os.ProcessState {
	t.Helper()
	// Drain the events the agent still prints, so it never blocks on stdout.
	deadline := time.After(timeout)
	for {
		select {
		case ev, ok := <-a.events:
			if ok {
				a.mu.Lock()
				a.seen = append(a.seen, ev)
				a.mu.Unlock()
				continue
			}
			select {
			case <-a.done:
				return a.state
			case <-deadline:
			}
		case <-deadline:
		}
		t.Fatalf("the agent did not exit within %s\nstderr:\n%s", timeout, a.stderr.String())
	}
}

func agentEnv(url, id string, extra ...string) []string {
	return append([]string{
		"SENTINEL_URL=" + url, "SENTINEL_TOKEN=" + apiKey, "SENTINEL_AGENT_ID=" + id,
		"INTERVAL_MS=" + strconv.FormatInt(interval.Milliseconds(), 10),
	}, extra...)
}

// TestIntegration runs each SDK's scenarios against one real sentinel.
func TestIntegration(t *testing.T) {
	t.Parallel()
	srv := startSentinel(t)
	for _, s := range sdks() {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			t.Run("RegistrationTokenRefreshAndFinalHeartbeat", func(t *testing.T) {
				t.Parallel()
				testRegistration(t, srv, s)
			})
			for _, proto := range []string{"beacon", "abs"} {
				t.Run("Revocation/"+proto, func(t *testing.T) {
					t.Parallel()
					testRevocation(t, srv, s, proto)
				})
			}
			t.Run("PauseResumeTerminate", func(t *testing.T) {
				t.Parallel()
				testPauseResumeTerminate(t, srv, s)
			})
			t.Run("Unreachable", func(t *testing.T) {
				t.Parallel()
				testUnreachable(t, s)
			})
			t.Run("ExitHook", func(t *testing.T) {
				t.Parallel()
				testExitHook(t, srv, s)
			})
			t.Run("DefaultStop/revoke-sigterm-ignored", func(t *testing.T) {
				t.Parallel()
				testDefaultStopRevoke(t, srv, s)
			})
			t.Run("DefaultStop/terminate", func(t *testing.T) {
				t.Parallel()
				testDefaultStopTerminate(t, srv, s)
			})
		})
	}
	t.Run("typescript/ExitHook/drain", func(t *testing.T) {
		t.Parallel()
		testDrain(t, srv)
	})
	t.Run("typescript/ABSClient", func(t *testing.T) {
		t.Parallel()
		testABSClient(t, srv)
	})
}

// testRegistration: the first heartbeat registers the agent with its
// platform, the runtime token lands in the token file (0600) and is
// refreshed, sentinel accepts the file's token, reported metrics arrive, and
// stop(3) sends the final heartbeat: STOPPED with exit code 3.
func testRegistration(t *testing.T, srv *server, s sdk) {
	id := "sdk-" + s.name + "-register"
	tokenFile := filepath.Join(t.TempDir(), "token")
	a := startAgent(t, s, agentEnv(srv.url, id, "SCENARIO=run", "SENTINEL_TOKEN_FILE="+tokenFile)...)
	started := a.wait(t, "started", 15*time.Second)
	require.Equal(t, id, started["agent_id"])
	srv.waitRegistered(t, id)

	d := srv.detail(t, id)
	require.Equal(t, "ACTIVE", d["state"])
	require.Equal(t, "sdk-it-"+s.name, d["version"])
	platform, _ := started["platform"].(map[string]any)
	require.NotEmpty(t, platform["type"])
	require.Equal(t, platform["type"], d["platform"].(map[string]any)["type"])

	// Each heartbeat after the first refreshes the token (see sentinelConfig).
	ev := a.wait(t, "token", 15*time.Second)
	for ev["version"] == nil || ev["version"].(float64) < 2 {
		ev = a.wait(t, "token", 15*time.Second)
	}
	fi, err := os.Stat(tokenFile)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	raw, err := os.ReadFile(tokenFile)
	require.NoError(t, err)
	tok := strings.TrimSpace(string(raw))
	require.True(t, strings.HasPrefix(tok, "srt_"), "token file holds %q", tok)
	code, answer := srv.do(t, http.MethodPost, "/api/v1/installations/"+id+"/heartbeat", tok, map[string]any{"status": "healthy"})
	require.Equal(t, http.StatusOK, code, "sentinel refused the token file's token: %v", answer)
	require.GreaterOrEqual(t, srv.detail(t, id)["token_version"].(float64), float64(2))

	eventually(t, 15*time.Second, "the reported metrics", func() bool {
		v, ok := srv.metric(t, `sentinel_agent_requests_handled_total{agent_id="`+id+`",tenant="`+tenant+`"}`)
		return ok && v > 0
	})

	a.send(t, "stop 3")
	stopped := a.wait(t, "stopped", 15*time.Second)
	require.Equal(t, true, stopped["final_sent"])
	require.Equal(t, "STOPPED", stopped["state"])
	require.True(t, a.exit(t, 10*time.Second).Success())
	d = srv.detail(t, id)
	require.Equal(t, "STOPPED", d["state"])
	require.Equal(t, float64(3), d["exit_code"])
}

// testRevocation: a revocation reaches checkpoint() within one interval (of
// the revoke's answer), with the reason and timeout, and the callback gets
// them too; stop() then sends no final heartbeat (the agent stays REVOKED).
func testRevocation(t *testing.T, srv *server, s sdk, proto string) {
	id := "sdk-" + s.name + "-revoke-" + proto
	a := startAgent(t, s, agentEnv(srv.url, id, "SCENARIO=run", "PROTOCOL="+proto)...)
	a.wait(t, "started", 15*time.Second)
	srv.waitRegistered(t, id)
	a.wait(t, "step", 5*time.Second)

	reason := "sdk test: revoked " + s.name
	srv.admin(t, http.MethodPost, "/api/v1/installations/"+id+"/revoke", map[string]any{"reason": reason, "shutdown_timeout_ms": 4321})
	revokedAt := time.Now()
	raised := a.wait(t, "checkpoint_raised", interval+slack)
	elapsed := time.Since(revokedAt)
	t.Logf("%s (%s): revocation reached checkpoint() %s after the revoke was answered (interval %s)", s.name, proto, elapsed.Round(time.Millisecond), interval)
	require.Equal(t, "revoked", raised["kind"])
	require.Equal(t, reason, raised["reason"])
	require.Equal(t, float64(4321), raised["timeout_ms"])
	a.mu.Lock()
	var cb map[string]any
	for _, ev := range a.seen {
		if ev["event"] == "revoke_callback" {
			cb = ev
		}
	}
	a.mu.Unlock()
	require.NotNil(t, cb, "the revoke callback was not called before checkpoint() raised")
	require.Equal(t, reason, cb["reason"])
	require.Equal(t, float64(4321), cb["timeout_ms"])

	a.send(t, "stop 0")
	stopped := a.wait(t, "stopped", 10*time.Second)
	require.Equal(t, false, stopped["final_sent"])
	require.True(t, a.exit(t, 10*time.Second).Success())
	require.Equal(t, "REVOKED", srv.detail(t, id)["state"])
}

// testPauseResumeTerminate: pause blocks checkpoint() until resume, across
// at least one heartbeat; terminate then ends the loop, and the final
// heartbeat makes the agent STOPPED.
func testPauseResumeTerminate(t *testing.T, srv *server, s sdk) {
	id := "sdk-" + s.name + "-pause"
	a := startAgent(t, s, agentEnv(srv.url, id, "SCENARIO=run")...)
	a.wait(t, "started", 15*time.Second)
	srv.waitRegistered(t, id)
	a.wait(t, "step", 5*time.Second)

	srv.admin(t, http.MethodPost, "/api/v1/installations/"+id+"/command", map[string]any{"command": "pause"})
	a.wait(t, "pause_callback", 15*time.Second)
	pausedAt := a.mark()
	// While paused the agent goes on beating: wait for a heartbeat after
	// the one that carried "pause" (sentinel's view, not a sleep).
	last := srv.detail(t, id)["last_heartbeat_at"].(string)
	eventually(t, 15*time.Second, "a heartbeat while paused", func() bool {
		return srv.detail(t, id)["last_heartbeat_at"].(string) != last
	})
	srv.admin(t, http.MethodPost, "/api/v1/installations/"+id+"/command", map[string]any{"command": "resume"})
	a.wait(t, "resume_callback", 15*time.Second)
	// At most the one step whose checkpoint() returned just before the pause
	// took effect; an agent not held would have done dozens (one per 20 ms).
	require.LessOrEqual(t, a.count("step", pausedAt), 1, "steps ran while paused")
	a.wait(t, "step", 5*time.Second)

	srv.admin(t, http.MethodPost, "/api/v1/installations/"+id+"/command", map[string]any{"command": "terminate"})
	raised := a.wait(t, "checkpoint_raised", 15*time.Second)
	require.Equal(t, "terminated", raised["kind"])
	require.Equal(t, 1, a.count("terminate_callback", 0))

	a.send(t, "stop 0")
	stopped := a.wait(t, "stopped", 10*time.Second)
	require.Equal(t, true, stopped["final_sent"])
	require.True(t, a.exit(t, 10*time.Second).Success())
	require.Equal(t, "STOPPED", srv.detail(t, id)["state"])
}

// testUnreachable: with nothing listening at the endpoint, the agent runs
// on: checkpoint() never blocks or raises, one warning for the whole
// failure streak, and stop() gives up on the final heartbeat in time.
func testUnreachable(t *testing.T, s sdk) {
	url := "http://" + testutil.FreeAddr(t) // nothing listens there
	a := startAgent(t, s, "SENTINEL_URL="+url, "SENTINEL_TOKEN="+apiKey, "SENTINEL_AGENT_ID=sdk-"+s.name+"-unreachable",
		"INTERVAL_MS=400", "RUN_MS=2500", "FINAL_TIMEOUT_MS=500", "SCENARIO=unreachable")
	done := a.wait(t, "done", 20*time.Second)
	require.Equal(t, float64(1), done["warnings"], "one warning per failure streak")
	require.Greater(t, done["steps"].(float64), float64(20), "the agent kept running")
	require.Equal(t, false, done["final_sent"])
	require.True(t, a.exit(t, 10*time.Second).Success())
}

// testExitHook: an agent that leaves through sys.exit/process.exit without
// calling stop() still sends the final heartbeat.
func testExitHook(t *testing.T, srv *server, s sdk) {
	id := "sdk-" + s.name + "-exit"
	a := startAgent(t, s, agentEnv(srv.url, id, "SCENARIO=exit")...)
	a.wait(t, "started", 15*time.Second)
	st := a.exit(t, 15*time.Second)
	require.Equal(t, 4, st.ExitCode())
	d := srv.detail(t, id)
	require.Equal(t, "STOPPED", d["state"])
	if s.name == "typescript" {
		// Node tells its exit handler the code; Python's atexit is not told.
		require.Equal(t, float64(4), d["exit_code"])
	}
}

// testDefaultStopRevoke: without a revoke callback, a revocation sends
// SIGTERM to the process and, since this agent ignores it, SIGKILL once
// shutdown_timeout_ms has passed.
func testDefaultStopRevoke(t *testing.T, srv *server, s sdk) {
	id := "sdk-" + s.name + "-default-revoke"
	a := startAgent(t, s, agentEnv(srv.url, id, "SCENARIO=default_stop", "HANDLE_SIGTERM=1")...)
	a.wait(t, "started", 15*time.Second)
	srv.waitRegistered(t, id)
	a.wait(t, "step", 5*time.Second)
	const timeoutMs = 800
	srv.admin(t, http.MethodPost, "/api/v1/installations/"+id+"/revoke", map[string]any{"reason": "default stop", "shutdown_timeout_ms": timeoutMs})
	a.wait(t, "sigterm", interval+slack)
	sigtermAt := time.Now()
	st := a.exit(t, timeoutMs*time.Millisecond+10*time.Second)
	took := time.Since(sigtermAt)
	t.Logf("%s: SIGKILL %s after SIGTERM (shutdown_timeout_ms %d)", s.name, took.Round(time.Millisecond), timeoutMs)
	ws, ok := st.Sys().(syscall.WaitStatus)
	require.True(t, ok)
	require.True(t, ws.Signaled() && ws.Signal() == syscall.SIGKILL, "exit: %s", st)
	require.GreaterOrEqual(t, took, timeoutMs*time.Millisecond-200*time.Millisecond, "killed before the shutdown timeout")
	require.Less(t, took, timeoutMs*time.Millisecond+slack)
	require.Equal(t, "REVOKED", srv.detail(t, id)["state"])
}

// testDefaultStopTerminate: without a terminate callback, "terminate" sends
// the final heartbeat (exit code 143) and SIGTERM, which ends this agent.
func testDefaultStopTerminate(t *testing.T, srv *server, s sdk) {
	id := "sdk-" + s.name + "-default-terminate"
	a := startAgent(t, s, agentEnv(srv.url, id, "SCENARIO=default_stop")...)
	a.wait(t, "started", 15*time.Second)
	srv.waitRegistered(t, id)
	a.wait(t, "step", 5*time.Second)
	srv.admin(t, http.MethodPost, "/api/v1/installations/"+id+"/command", map[string]any{"command": "terminate"})
	st := a.exit(t, 20*time.Second)
	ws, ok := st.Sys().(syscall.WaitStatus)
	require.True(t, ok)
	require.True(t, ws.Signaled() && ws.Signal() == syscall.SIGTERM, "exit: %s", st)
	d := srv.detail(t, id)
	require.Equal(t, "STOPPED", d["state"])
	require.Equal(t, float64(143), d["exit_code"])
}

// testABSClient: ABSClient.process (seed 003's call shape) over /v1/events; a
// repeated event_id is answered duplicate and counted once.
func testABSClient(t *testing.T, srv *server) {
	s := sdks()[1]
	id := "sdk-typescript-abs-events"
	a := startAgent(t, s, agentEnv(srv.url, id, "SCENARIO=abs", "TENANT="+tenant, "EVENT_ID=sdk-abs-"+strconv.FormatInt(time.Now().UnixNano(), 36))...)
	results := map[float64]map[string]any{}
	for i := 0; i < 3; i++ {
		ev := a.wait(t, "abs", 15*time.Second)
		results[ev["call"].(float64)] = ev["result"].(map[string]any)
	}
	require.True(t, a.exit(t, 10*time.Second).Success())
	require.Equal(t, false, results[1]["duplicate"])
	require.Equal(t, "ACTIVE", results[1]["status"])
	require.Equal(t, id, results[1]["agentId"])
	require.Equal(t, true, results[2]["duplicate"])
	require.Equal(t, false, results[3]["duplicate"])
	// Only this test speaks the events protocol to this sentinel.
	accepted, _ := srv.metric(t, `sentinel_heartbeats_total{protocol="events",result="accepted"}`)
	dup, _ := srv.metric(t, `sentinel_heartbeats_total{protocol="events",result="duplicate"}`)
	require.Equal(t, fmt.Sprint(2.0, 1.0), fmt.Sprint(accepted, dup), "events accepted, duplicates")
	require.Equal(t, "STOPPED", srv.detail(t, id)["state"])
}

// testDrain: a Node agent whose event loop runs empty (the heartbeat timer
// never keeps it alive) sends the final heartbeat from "beforeExit", with
// process.exitCode.
func testDrain(t *testing.T, srv *server) {
	id := "sdk-typescript-drain"
	a := startAgent(t, sdks()[1], agentEnv(srv.url, id, "SCENARIO=drain")...)
	a.wait(t, "started", 15*time.Second)
	st := a.exit(t, 15*time.Second)
	require.Equal(t, 5, st.ExitCode())
	d := srv.detail(t, id)
	require.Equal(t, "STOPPED", d["state"])
	require.Equal(t, float64(5), d["exit_code"])
}
