package e2e

import (
	"bytes"
	"io"
	"net/http"
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

// TestREADMEWalkthrough runs the curl walk-through of README.md, as written,
// against the real binary started with deploy/sentinel.example.yml (what
// `make run` does), so the README keeps working. Every curl fails the script
// on an HTTP error.
//
// It runs the walk-through three times on the same --storage.path, as a
// reader does who runs `make run` again with its ./data: after a graceful
// restart, and after a crash (SIGKILL, no final snapshot). Every run must
// show the same outcome as the first.
func TestREADMEWalkthrough(t *testing.T) {
	t.Parallel()
	bash := lookTool(t, "bash")
	lookTool(t, "curl")
	promtool := lookTool(t, "promtool")
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	require.NoError(t, err)
	walk := regexp.MustCompile("(?s)## Walk-through.*?```sh\n(.*?)```").FindSubmatch(readme)
	require.NotNil(t, walk, "README.md has no ```sh block under ## Walk-through")
	script := string(walk[1])
	require.Contains(t, script, "S=http://localhost:9464")

	config, err := filepath.Abs(filepath.Join("..", "deploy", "sentinel.example.yml"))
	require.NoError(t, err)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	s := &stack{dir: dir, client: &http.Client{Timeout: 10 * time.Second}}

	for i, run := range []string{"first", "second", "third"} {
		addr := testutil.FreeAddr(t)
		p := startProcess(t, dir, "sentinel-readme-"+run, sentinelBin,
			"--config.file="+config, "--storage.path="+data, "--web.listen-address="+addr)
		s.waitReady(t, p, "http://"+addr+"/-/ready")

		got := runWalkthrough(t, run, bash, strings.Replace(script, "S=http://localhost:9464", "S=http://"+addr, 1), dir)
		for _, want := range []string{
			`"registered":true`,
			`"runtime_token":{"runtime_token":"srt_`,
			`"status":"ACTIVE","agentId":"agent-02"`,
			`sentinel_agent_last_heartbeat_timestamp_seconds{agent_id="agent-01",tenant="demo"}`,
			`sentinel_agent_info{agent_id="agent-01"`,
			`"lease_renewed":false,"revoked":true,"reason":"Emergency shutdown initiated by admin","shutdown_timeout_ms":5000`,
			`"state":"REVOKED"`,
			`"command":"pause"`,
			`"reinstated":true`,
			`"forgotten":true`,
		} {
			require.Contains(t, got, want, "%s walk-through, output:\n%s", run, got)
		}
		require.False(t, p.exited(), "sentinel exited during the %s walk-through:\n%s", run, p.tail(40))

		// What the walk-through left on /metrics passes promtool's linter.
		req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/metrics", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer demo-metrics-token-CHANGE-ME") // metrics.bearer_token of the example
		resp, err := s.client.Do(req)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		exposition, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		require.Contains(t, string(exposition), "sentinel_journal_records_total")
		lint := exec.Command(promtool, "check", "metrics")
		lint.Stdin = bytes.NewReader(exposition)
		out, err := lint.CombinedOutput()
		require.NoError(t, err, "promtool check metrics:\n%s", out)
		require.Empty(t, strings.TrimSpace(string(out)), "promtool check metrics found problems")

		// The walk-through cleans up after itself: the fleet it leaves is empty,
		// so a second run starts as the first did.
		left := regexp.MustCompile(`(?m)^sentinel_agent_last_heartbeat_timestamp_seconds\{.*$`).FindAllString(string(exposition), -1)
		require.Empty(t, left, "the %s walk-through left agents behind", run)

		if i == 0 {
			require.True(t, p.stop(15*time.Second), "sentinel did not stop on SIGTERM after the %s walk-through:\n%s", run, p.tail(40))
			require.NoError(t, p.err, "sentinel exited with an error after the %s walk-through:\n%s", run, p.tail(40))
		} else {
			require.NoError(t, p.cmd.Process.Kill())
			<-p.done
		}
	}
}

// runWalkthrough runs the script of the run'th walk-through with bash, every
// curl failing on an HTTP error, and returns its output.
func runWalkthrough(t *testing.T, run, bash, script, dir string) string {
	t.Helper()
	prelude := "set -euo pipefail\ncurl() { command curl --fail-with-body \"$@\"; echo; }\n"
	cmd := exec.Command(bash, "-c", prelude+script)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "the %s README walk-through failed:\n%s", run, out)
	return string(out)
}
