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
func TestREADMEWalkthrough(t *testing.T) {
	t.Parallel()
	bash := lookTool(t, "bash")
	lookTool(t, "curl")
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	require.NoError(t, err)
	walk := regexp.MustCompile("(?s)## Walk-through.*?```sh\n(.*?)```").FindSubmatch(readme)
	require.NotNil(t, walk, "README.md has no ```sh block under ## Walk-through")
	script := string(walk[1])
	require.Contains(t, script, "S=http://localhost:9464")

	config, err := filepath.Abs(filepath.Join("..", "deploy", "sentinel.example.yml"))
	require.NoError(t, err)
	dir := t.TempDir()
	addr := testutil.FreeAddr(t)
	s := &stack{dir: dir, client: &http.Client{Timeout: 10 * time.Second}}
	p := startProcess(t, dir, "sentinel-readme", sentinelBin,
		"--config.file="+config, "--storage.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr)
	s.waitReady(t, p, "http://"+addr+"/-/ready")

	script = strings.Replace(script, "S=http://localhost:9464", "S=http://"+addr, 1)
	prelude := "set -euo pipefail\ncurl() { command curl --fail-with-body \"$@\"; echo; }\n"
	cmd := exec.Command(bash, "-c", prelude+script)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "the README walk-through failed:\n%s", out)

	got := string(out)
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
		require.Contains(t, got, want, "walk-through output:\n%s", got)
	}
	require.False(t, p.exited(), "sentinel exited during the walk-through:\n%s", p.tail(40))

	// What the walk-through left on /metrics passes promtool's linter.
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/metrics", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer demo-metrics-token-CHANGE-ME") // metrics.bearer_token of the example
	resp, err := s.client.Do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	defer resp.Body.Close()
	exposition, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Contains(t, string(exposition), "sentinel_journal_records_total")
	lint := exec.Command(lookTool(t, "promtool"), "check", "metrics")
	lint.Stdin = bytes.NewReader(exposition)
	out, err = lint.CombinedOutput()
	require.NoError(t, err, "promtool check metrics:\n%s", out)
	require.Empty(t, strings.TrimSpace(string(out)), "promtool check metrics found problems")
}
