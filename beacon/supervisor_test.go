package beacon

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// result is what Supervisor.Run returned.
type result struct {
	code int
	err  error
}

func startSupervisor(t *testing.T, ctx context.Context, s *Supervisor) <-chan result {
	t.Helper()
	if s.Logger == nil {
		s.Logger, _ = newTestLogger()
	}
	ch := make(chan result, 1)
	go func() {
		code, err := s.Run(ctx)
		ch <- result{code, err}
	}()
	return ch
}

func waitResult(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(15 * time.Second):
		t.Fatal("supervisor did not return")
		return result{}
	}
}

// waitPID waits for a child to write its pid to path.
func waitPID(t *testing.T, path string) int {
	t.Helper()
	var pid int
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(path)
		if err != nil || !strings.HasSuffix(string(b), "\n") {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	}, 10*time.Second, 5*time.Millisecond)
	return pid
}

// procState returns the state letter of /proc/<pid>/stat: R, S, T, Z, …
func procState(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	require.Positive(t, i)
	return strings.Fields(s[i+1:])[0]
}

func TestSupervisorExitCodes(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "not-executable")
	require.NoError(t, os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o600))
	for _, tc := range []struct {
		name string
		args []string
		code int
		err  string
	}{
		{"success", []string{"sh", "-c", "exit 0"}, 0, ""},
		{"failure", []string{"sh", "-c", "exit 7"}, 7, ""},
		{"killed by a signal", []string{"sh", "-c", "kill -KILL $$"}, 128 + 9, ""},
		{"terminated by a signal", []string{"sh", "-c", "kill -TERM $$"}, 128 + 15, ""},
		{"not found", []string{"no-such-command-beacon-test"}, ExitNotFound, "executable file not found"},
		{"not executable", []string{notExec}, ExitCannotExecute, "permission denied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Supervisor{Cmd: exec.Command(tc.args[0], tc.args[1:]...)}
			r := waitResult(t, startSupervisor(t, context.Background(), s))
			require.Equal(t, tc.code, r.code)
			if tc.err != "" {
				require.ErrorContains(t, r.err, tc.err)
			} else {
				require.NoError(t, r.err)
			}
		})
	}
}

func TestSupervisorFinalHeartbeatAndReport(t *testing.T) {
	srv := newScriptedServer(t, func(r request) answer { return okAnswer(0.02, "") })
	cfg, _ := testConfig(t, srv.URL)
	dir := t.TempDir()
	// The child reports through the file named by BEACON_METRICS_FILE and
	// exits once beacon has sent its figures.
	script := `printf '{"status":"degraded","requests_handled":12,"errors":1,"avg_latency_ms":9.5}' > "$BEACON_METRICS_FILE.tmp" &&
		mv "$BEACON_METRICS_FILE.tmp" "$BEACON_METRICS_FILE" &&
		while [ ! -f ` + dir + `/go ]; do sleep 0.01; done; exit 5`
	s := &Supervisor{
		Cmd:        exec.Command("sh", "-c", script),
		Beacon:     &cfg,
		ReportFile: filepath.Join(dir, "metrics.json"),
	}
	done := startSupervisor(t, context.Background(), s)
	for {
		r := srv.next(t)
		if r.Body.Metrics != nil {
			require.Equal(t, StatusDegraded, r.Body.Status)
			require.Equal(t, &Metrics{RequestsHandled: 12, Errors: 1, AvgLatencyMs: 9.5}, r.Body.Metrics)
			break
		}
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go"), nil, 0o600))
	res := waitResult(t, done)
	require.NoError(t, res.err)
	require.Equal(t, 5, res.code)
	var last request
	for len(srv.reqs) > 0 {
		last = <-srv.reqs
	}
	require.Equal(t, StatusShutdown, last.Body.Status)
	require.Equal(t, float64(5), last.Raw["exit_code"])
}

func TestSupervisorContextStopsChild(t *testing.T) {
	srv := newScriptedServer(t, func(r request) answer { return okAnswer(0.02, "") })
	cfg, _ := testConfig(t, srv.URL)
	ctx, cancel := context.WithCancel(context.Background())
	done := startSupervisor(t, ctx, &Supervisor{Cmd: exec.Command("sleep", "60"), Beacon: &cfg})
	srv.next(t)
	cancel()
	res := waitResult(t, done)
	require.Equal(t, 128+int(syscall.SIGTERM), res.code)
	var last request
	for len(srv.reqs) > 0 {
		last = <-srv.reqs
	}
	require.Equal(t, StatusShutdown, last.Body.Status)
	require.Equal(t, float64(143), last.Raw["exit_code"])
}

func TestSupervisorKillSwitch(t *testing.T) {
	for _, tc := range []struct {
		name    string
		answer  string
		timeout time.Duration // Supervisor.ShutdownTimeout
		code    int
		final   bool
	}{
		{"revoked", `{"lease_renewed":false,"revoked":true,"reason":"rogue","shutdown_timeout_ms":400}`, time.Hour, ExitRevoked, false},
		{"terminate", `{"lease_renewed":true,"heartbeat_interval_seconds":0.02,"command":"terminate"}`, 400 * time.Millisecond, ExitTerminated, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			go_ := filepath.Join(dir, "go")
			srv := newScriptedServer(t, func(r request) answer {
				if _, err := os.Stat(go_); err == nil && r.Body.Status != StatusShutdown {
					return answer{Body: tc.answer}
				}
				return okAnswer(0.02, "")
			})
			cfg, _ := testConfig(t, srv.URL)
			pidFile := filepath.Join(dir, "pid")
			// The child ignores SIGTERM: only SIGKILL ends it.
			cmd := exec.Command("sh", "-c", `trap '' TERM; echo $$ > `+pidFile+`; while :; do sleep 0.05; done`)
			done := startSupervisor(t, context.Background(), &Supervisor{Cmd: cmd, Beacon: &cfg, ShutdownTimeout: tc.timeout})
			pid := waitPID(t, pidFile)
			require.NoError(t, os.WriteFile(go_, nil, 0o600))
			start := time.Now()
			res := waitResult(t, done)
			elapsed := time.Since(start)
			require.Equal(t, tc.code, res.code)
			require.GreaterOrEqual(t, elapsed, 400*time.Millisecond, "killed before its shutdown timeout")
			require.Less(t, elapsed, 5*time.Second)
			require.Empty(t, procState(t, pid), "the child is gone")
			var sawFinal bool
			for len(srv.reqs) > 0 {
				sawFinal = sawFinal || (<-srv.reqs).Body.Status == StatusShutdown
			}
			require.Equal(t, tc.final, sawFinal)
		})
	}
}

func TestSupervisorPauseResume(t *testing.T) {
	dir := t.TempDir()
	cmdFile := filepath.Join(dir, "command")
	srv := newScriptedServer(t, func(r request) answer {
		b, _ := os.ReadFile(cmdFile)
		if len(b) > 0 {
			return okAnswer(0.02, `"command":"`+string(b)+`"`)
		}
		return okAnswer(0.02, "")
	})
	cfg, _ := testConfig(t, srv.URL)
	pidFile := filepath.Join(dir, "pid")
	ctx, cancel := context.WithCancel(context.Background())
	done := startSupervisor(t, ctx, &Supervisor{Cmd: exec.Command("sh", "-c", "echo $$ > "+pidFile+"; exec sleep 60"), Beacon: &cfg})
	pid := waitPID(t, pidFile)

	require.NoError(t, os.WriteFile(cmdFile, []byte("pause"), 0o600))
	require.Eventually(t, func() bool { return procState(t, pid) == "T" }, 10*time.Second, 5*time.Millisecond)
	require.NoError(t, os.WriteFile(cmdFile, []byte("resume"), 0o600))
	require.Eventually(t, func() bool { return procState(t, pid) == "S" }, 10*time.Second, 5*time.Millisecond)

	// A paused child still stops when asked to: beacon continues it.
	require.NoError(t, os.WriteFile(cmdFile, []byte("pause"), 0o600))
	require.Eventually(t, func() bool { return procState(t, pid) == "T" }, 10*time.Second, 5*time.Millisecond)
	cancel()
	require.Equal(t, 143, waitResult(t, done).code)
}

func TestSupervisorForwardsSignals(t *testing.T) {
	dir := t.TempDir()
	pidFile, got := filepath.Join(dir, "pid"), filepath.Join(dir, "got")
	sigs := make(chan os.Signal, 1)
	cmd := exec.Command("sh", "-c", `trap 'echo USR1 > `+got+`; exit 0' USR1; echo $$ > `+pidFile+`; while :; do sleep 0.05; done`)
	done := startSupervisor(t, context.Background(), &Supervisor{Cmd: cmd, Signals: sigs})
	waitPID(t, pidFile)
	sigs <- syscall.SIGUSR1
	require.Equal(t, 0, waitResult(t, done).code)
	b, err := os.ReadFile(got)
	require.NoError(t, err)
	require.Equal(t, "USR1\n", string(b))
}

// TestSupervisorPauseRacesSignal: a SIGTERM forwarded while a pause is being
// applied still gets its SIGCONT, or the agent would stay stopped with the
// signal it must act on pending.
func TestSupervisorPauseRacesSignal(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	sigs := make(chan os.Signal, 1)
	logger, _ := newTestLogger()
	s := &Supervisor{
		Cmd:     exec.Command("sh", "-c", `trap 'exit 0' TERM; echo $$ > `+pidFile+`; while :; do sleep 0.05; done`),
		Signals: sigs,
		Logger:  logger,
	}
	forwarded := make(chan struct{})
	s.hookPaused = func() {
		// SIGSTOP has reached the group; the SIGTERM comes now. Without the
		// lock it is forwarded (with no SIGCONT: not paused yet) before the
		// pause is recorded; with it, it waits for the pause to be recorded.
		go func() {
			s.forward(logger, syscall.SIGTERM)
			close(forwarded)
		}()
		select {
		case <-forwarded:
		case <-time.After(200 * time.Millisecond): // blocked by the lock, as it must be
		}
	}
	done := startSupervisor(t, context.Background(), s)
	pid := waitPID(t, pidFile)
	waitGroup(t, s, pid)
	s.apply(logger, CommandPause)
	select {
	case <-forwarded:
	case <-time.After(10 * time.Second):
		t.Fatal("the forwarded SIGTERM never completed")
	}
	select {
	case r := <-done:
		require.Equal(t, 0, r.code, "the agent acted on SIGTERM")
	case <-time.After(5 * time.Second):
		require.Equal(t, "T", procState(t, pid))
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-done
		t.Fatal("the agent stayed stopped with SIGTERM pending")
	}
}

// TestSupervisorLeftovers: what the child leaves running in its group is
// stopped before the final heartbeat; the exit code stays the child's.
func TestSupervisorLeftovers(t *testing.T) {
	srv := newScriptedServer(t, func(r request) answer { return okAnswer(0.02, "") })
	cfg, _ := testConfig(t, srv.URL)
	pidFile := filepath.Join(t.TempDir(), "pid")
	cmd := exec.Command("sh", "-c", `sleep 300 & echo $! > `+pidFile+`; exit 7`)
	res := waitResult(t, startSupervisor(t, context.Background(), &Supervisor{Cmd: cmd, Beacon: &cfg, ShutdownTimeout: time.Hour}))
	require.NoError(t, res.err)
	require.Equal(t, 7, res.code)
	pid := waitPID(t, pidFile)
	st := procState(t, pid)
	require.True(t, st == "" || st == "Z", "the background process is gone, not %q", st)
	var last request
	for len(srv.reqs) > 0 {
		last = <-srv.reqs
	}
	require.Equal(t, StatusShutdown, last.Body.Status)
	require.Equal(t, float64(7), last.Raw["exit_code"])
}

// With outputs that are not files (an SDK user capturing them), the child's
// exit is still seen at once, so its leftovers are stopped within the
// shutdown timeout instead of being waited for.
func TestSupervisorLeftoversWithPipedOutput(t *testing.T) {
	srv := newScriptedServer(t, func(r request) answer { return okAnswer(0.02, "") })
	cfg, _ := testConfig(t, srv.URL)
	cmd := exec.Command("sh", "-c", `sleep 300 & exit 7`)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	res := waitResult(t, startSupervisor(t, context.Background(), &Supervisor{Cmd: cmd, Beacon: &cfg, ShutdownTimeout: 500 * time.Millisecond}))
	require.NoError(t, res.err)
	require.Equal(t, 7, res.code)
	require.Less(t, time.Since(start), 30*time.Second, "the leftover sleep 300 was stopped, not waited for")
}

// A pause that arrives after the agent was asked to stop is ignored: it
// would freeze a stopping agent with nothing left to continue it.
func TestSupervisorNoPauseWhileStopping(t *testing.T) {
	logger, _ := newTestLogger()
	pidFile := filepath.Join(t.TempDir(), "pid")
	sigs := make(chan os.Signal, 1)
	s := &Supervisor{
		Cmd:     exec.Command("sh", "-c", `trap 'sleep 0.3; exit 0' TERM; echo $$ > `+pidFile+`; while :; do sleep 0.05; done`),
		Signals: sigs,
		Logger:  logger,
	}
	done := startSupervisor(t, context.Background(), s)
	pid := waitPID(t, pidFile)
	waitGroup(t, s, pid)
	s.forward(logger, syscall.SIGTERM)
	s.apply(logger, CommandPause)
	select {
	case r := <-done:
		require.Equal(t, 0, r.code, "the agent finished its SIGTERM handler")
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-done
		t.Fatal("the stopping agent was frozen by the pause")
	}
}

// waitGroup waits until Run has recorded the child's process group: the
// child can write its pid file before that.
func waitGroup(t *testing.T, s *Supervisor, pid int) {
	t.Helper()
	require.Eventually(t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.pgid == pid
	}, 10*time.Second, 5*time.Millisecond)
}
