package main

import (
	"fmt"
	"net/http"
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

// End-to-end tests of what beacon does to processes: what the child may see,
// and that nothing of it outlives beacon or its own exit.

// TestE2EChildEnvironment: the child never gets beacon's credentials, neither
// from its environment nor from beacon's /proc/<pid>/environ.
func TestE2EChildEnvironment(t *testing.T) {
	t.Parallel()
	s := startSentinel(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	env := cleanEnv("SENTINEL_URL="+s.URL, "SENTINEL_TOKEN="+testAPIKey, "SENTINEL_TOKEN_FILE="+tokenFile,
		"SENTINEL_AGENT_ID=from-env", "AGENT_SETTING=kept")
	// The child shows its environment, then tries its parent's.
	child := `env | sed 's/^/child-env: /'; cat /proc/$PPID/environ | tr '\0' '\n' | sed 's/^/parent-env: /'; echo child-done`
	p := startBeaconWith(t, asUnprivilegedUser(t), env, "run", "--id", "env-agent", "--", "sh", "-c", child)
	require.Equal(t, 0, p.wait(t))
	out := p.stderr.String()
	require.Contains(t, out, "child-done")
	require.Contains(t, out, "child-env: AGENT_SETTING=kept", "the rest of the environment is inherited")
	require.Contains(t, out, "child-env: SENTINEL_AGENT_ID=env-agent", "the child learns the agent id in use")
	require.NotContains(t, out, "child-env: SENTINEL_AGENT_ID=from-env")
	for _, name := range []string{"SENTINEL_TOKEN=", "SENTINEL_TOKEN_FILE=", "SENTINEL_URL="} {
		require.NotContains(t, out, "child-env: "+name)
	}
	require.NotContains(t, out, testAPIKey, "the agent cannot read the tenant API key")
	s.waitValue(t, "sentinel_agent_stopped", map[string]string{"agent_id": "env-agent"}, 1)
}

// asUnprivilegedUser runs beacon, and so its child, as nobody when the tests
// run as root, who may read any process's environment: the protection is
// against an agent of beacon's own, unprivileged, user.
func asUnprivilegedUser(t *testing.T) func(*exec.Cmd) {
	t.Helper()
	if os.Geteuid() != 0 {
		return nil
	}
	// nobody must reach the binary: the build directory and t.TempDir are
	// private.
	dir, err := os.MkdirTemp("", "beacon-e2e-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	bin := filepath.Join(dir, "beacon")
	b, err := os.ReadFile(beaconBin)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(bin, b, 0o755))
	return func(cmd *exec.Cmd) {
		cmd.Path = bin
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
}

// TestE2EBeaconKilled: the agent does not outlive beacon, even when beacon
// is killed with SIGKILL: it would run on out of the kill switch's reach.
func TestE2EBeaconKilled(t *testing.T) {
	t.Parallel()
	s := startSentinel(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	p := startBeacon(t, cleanEnv(), agentArgs(s, "orphan", "--", "sh", "-c", "echo $$ > "+pidFile+"; exec sleep 60")...)
	pid := waitFile(t, pidFile)
	s.waitValue(t, "sentinel_agent_stopped", map[string]string{"agent_id": "orphan"}, 0)
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGKILL))
	p.wait(t)
	require.Eventually(t, func() bool { return gone(pid) }, 10*time.Second, 10*time.Millisecond, "the agent outlived beacon")
}

// TestE2EClosedOutput: beacon survives its stdout and stderr being closed
// (SIGPIPE), keeps supervising, and does not pass SIGPIPE ignored on to the
// child.
func TestE2EClosedOutput(t *testing.T) {
	t.Parallel()
	s := startSentinel(t)
	dir := t.TempDir()
	stop, status := filepath.Join(dir, "stop"), filepath.Join(dir, "status")
	r, w, err := os.Pipe()
	require.NoError(t, err)
	child := `grep '^SigIgn:' /proc/self/status > ` + status + `.tmp && mv ` + status + `.tmp ` + status + `; ` + waitUntilStopFile(stop) + `; exit 5`
	p := startBeaconWith(t, func(cmd *exec.Cmd) { cmd.Stdout, cmd.Stderr = w, w }, cleanEnv(), agentArgs(s, "deaf", "--cmd", child)...)
	require.NoError(t, w.Close())
	require.NoError(t, r.Close()) // every write to beacon's stdout or stderr now raises SIGPIPE

	sigIgn := waitFile(t, status)
	mask, err := strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(sigIgn, "SigIgn:")), 16, 64)
	require.NoError(t, err)
	require.Zero(t, mask&(1<<(int(syscall.SIGPIPE)-1)), "the child must not inherit SIGPIPE ignored")
	s.waitValue(t, "sentinel_agent_stopped", map[string]string{"agent_id": "deaf"}, 0)
	touch(t, stop)
	require.Equal(t, 5, p.wait(t), "beacon survived and passed the child's code on")
	s.waitValue(t, "sentinel_agent_stopped", map[string]string{"agent_id": "deaf"}, 1)
}

// TestE2ELeftovers: what the child leaves running when it exits is stopped
// before the agent is reported STOPPED; the exit code stays the child's.
func TestE2ELeftovers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		background string // runs in the background of the child
		minLived   time.Duration
	}{
		// The background writes its pid once its trap is set, and the child
		// exits only then: otherwise beacon's SIGTERM could reach the inner
		// shell before its trap and the test would race.
		{"ends on SIGTERM", `echo \$\$ > PIDFILE; exec sleep 300`, 0},
		{"ignores SIGTERM", `trap '' TERM; echo \$\$ > PIDFILE; while :; do sleep 0.05; done`, 500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := startSentinel(t)
			pidFile := filepath.Join(t.TempDir(), "pid")
			id := "leaver-" + strings.ReplaceAll(tc.name, " ", "-")
			background := strings.ReplaceAll(tc.background, "PIDFILE", pidFile)
			child := fmt.Sprintf(`sh -c "%s" & until [ -s %s ]; do sleep 0.01; done; exit 7`, background, pidFile)
			p := startBeacon(t, cleanEnv(), agentArgs(s, id, "--shutdown-timeout", "500ms", "--cmd", child)...)
			started := time.Now()
			require.Equal(t, 7, p.wait(t), "the exit code is the child's")
			pid := waitFile(t, pidFile)
			require.True(t, gone(pid), "the background process outlived beacon")
			require.GreaterOrEqual(t, p.ended.Sub(started), tc.minLived, "SIGKILL came before the shutdown timeout")
			require.Equal(t, 1, p.stderr.count("left processes running"))
			s.waitValue(t, "sentinel_agent_stopped", map[string]string{"agent_id": id}, 1)
		})
	}
}

// TestE2EFinalHeartbeatRetried: a 503 to the final heartbeat is retried, so
// that the agent still ends STOPPED rather than SILENT.
func TestE2EFinalHeartbeatRetried(t *testing.T) {
	t.Parallel()
	s := startFakeSentinel(t)
	stop := filepath.Join(t.TempDir(), "stop")
	p := startBeacon(t, cleanEnv(), agentArgs(s, "persistent", "--cmd", waitUntilStopFile(stop))...)
	s.waitValue(t, "sentinel_agent_stopped", map[string]string{"agent_id": "persistent"}, 0)
	s.fake.failShutdowns(http.StatusServiceUnavailable, 1)
	touch(t, stop)
	require.Equal(t, 0, p.wait(t))
	require.Zero(t, p.stderr.count("Final shutdown heartbeat failed"))
	require.Equal(t, 1, p.stderr.count("Sent the final shutdown heartbeat", "attempts=2"))
	s.waitValue(t, "sentinel_agent_stopped", map[string]string{"agent_id": "persistent"}, 1)
}

// TestE2ERefusedTokenForgotten: a runtime token sentinel refuses is removed
// from the token file once beacon fell back to --token, so that the next
// start does not present it again.
func TestE2ERefusedTokenForgotten(t *testing.T) {
	t.Parallel()
	s := startSentinel(t)
	// Registered already: falling back to the API key earns no new token.
	p := startBeacon(t, cleanEnv(), agentArgs(s, "forgetful", "--", "true")...)
	require.Equal(t, 0, p.wait(t))

	tokenFile := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte("srt_refused\n"), 0o600))
	p = startBeacon(t, cleanEnv(), agentArgs(s, "forgetful", "--token-file", tokenFile, "--", "true")...)
	require.Equal(t, 0, p.wait(t))
	require.Equal(t, 1, p.stderr.count("Sentinel refused the runtime token"))
	_, err := os.Stat(tokenFile)
	require.ErrorIs(t, err, os.ErrNotExist, "the refused token is still in the token file")

	p = startBeacon(t, cleanEnv(), agentArgs(s, "forgetful", "--token-file", tokenFile, "--", "true")...)
	require.Equal(t, 0, p.wait(t))
	require.Zero(t, p.stderr.count("Sentinel refused"), "the next start goes straight to --token")
	require.Zero(t, p.stderr.count("Final shutdown heartbeat failed"))
}
