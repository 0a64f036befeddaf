package e2e

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/internal/testutil"
)

// TestDemo runs `make demo`'s script, as written, in the mode that stops by
// itself, on free loopback ports with the binaries under test: the sink
// must print verified SILENT, ZOMBIE and revoked events for the agent that
// hangs, one recovery for the one that naps, nothing for the healthy and
// the crashed ones, and the script must leave no process or file behind.
func TestDemo(t *testing.T) {
	t.Parallel()
	bash := lookTool(t, "bash")
	lookTool(t, "curl")
	lookTool(t, "setsid")
	lookTool(t, prometheusTools...)
	lookTool(t, alertmanagerTools...)

	bin := t.TempDir()
	for _, b := range []string{sentinelBin, beaconBin, sinkBin} {
		require.NoError(t, os.Symlink(b, filepath.Join(bin, filepath.Base(b))))
	}
	port := func() string {
		_, p, err := net.SplitHostPort(testutil.FreeAddr(t))
		require.NoError(t, err)
		return p
	}
	tmp := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bash, filepath.Join("..", "scripts", "demo.sh"))
	cmd.Env = append(os.Environ(),
		"BIN="+bin, "TMPDIR="+tmp,
		// As short as it gets: the script ends once the story is told.
		"DEMO_DURATION=1s",
		"SENTINEL_PORT="+port(), "PROMETHEUS_PORT="+port(), "ALERTMANAGER_PORT="+port(), "SINK_PORT="+port(),
	)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	got := out.String()
	require.NoError(t, err, "the demo failed:\n%s", got)
	t.Logf("the demo ran for %s:\n%s", time.Since(start).Round(time.Second), got)

	verified := func(agent string) []string {
		return regexp.MustCompile(`(?m)^\S+ verified \S+ +tenant=demo agent=`+agent+` .*$`).FindAllString(got, -1)
	}
	one := func(agent, what string) {
		t.Helper()
		n := 0
		for _, l := range verified(agent) {
			if strings.Contains(l, what) {
				n++
			}
		}
		require.Equal(t, 1, n, "%s: %q printed %d times, want once:\n%s", agent, what, n, got)
	}
	for _, agent := range []string{"hangs", "killed"} {
		one(agent, "heartbeat.state_change tenant=demo agent="+agent+" ACTIVE -> SILENT missed=")
		one(agent, "heartbeat.state_change tenant=demo agent="+agent+" SILENT -> ZOMBIE missed=")
		one(agent, " source=alert:AgentZombie reason=\"Revoked by alert AgentZombie\"")
		require.Len(t, verified(agent), 3, "%s: exactly SILENT, ZOMBIE, revoked:\n%s", agent, got)
	}
	one("naps", "ACTIVE -> SILENT missed=")
	one("naps", "SILENT -> ACTIVE missed=")
	require.Regexp(t, `agent=naps SILENT -> ACTIVE missed=\d+ outage=\d+s `, got)
	require.Empty(t, verified("steady"), "an event about the healthy agent")
	require.Empty(t, verified("crashes"), "an event about the agent that exited (STOPPED)")
	require.NotContains(t, got, "REJECTED")

	require.Contains(t, got, "hangs: beacon exited with code 3 (revoked: it stopped the agent)")
	require.Contains(t, got, "crashes: beacon exited with the agent's code 1")
	for _, url := range []string{"/alerts", "/api/v1/installations", "/api/v1/deliveries"} {
		require.Contains(t, got, url, "the demo prints where to look")
	}

	// Nothing left behind: the temporary directory is gone and no process
	// still names it.
	m := regexp.MustCompile(`removed (\S+)`).FindStringSubmatch(got)
	require.NotNil(t, m, "the demo did not say it removed its directory:\n%s", got)
	require.True(t, strings.HasPrefix(m[1], tmp), m[1])
	require.NoDirExists(t, m[1])
	procs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	require.NoError(t, err)
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(m[1])) {
			t.Errorf("%s still runs: %s", p, bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
	}
}
