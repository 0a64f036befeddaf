package main

import (
	"net/http"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// --no-collector.<name> leaves the family out of /metrics; the families the
// alerting rules read stay.
func TestCollectorFlags(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sentinel.yml")
	writeFile(t, cfg, serveConfig)
	p := startSentinel(t, cfg, filepath.Join(dir, "data"), "--no-collector.agent-info", "--no-collector.agent-requests")
	p.register("agent-1", "acme-key-1", map[string]any{
		"uptime_seconds": 5, "metrics": map[string]any{"requests_handled": 7, "errors": 1},
	})
	r, err := p.request(http.MethodGet, "/metrics", "", nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, r.status)
	body := string(r.body)
	for _, gone := range []string{"sentinel_agent_info", "sentinel_agent_requests_handled_total"} {
		require.NotContains(t, body, gone+"{")
	}
	for _, kept := range []string{
		"sentinel_agent_last_heartbeat_timestamp_seconds", "sentinel_agent_heartbeat_interval_seconds",
		"sentinel_agent_lease_expiry_timestamp_seconds", "sentinel_agent_stopped", "sentinel_agent_revoked",
		"sentinel_agent_uptime_seconds", "sentinel_agent_errors_total",
	} {
		require.Contains(t, body, kept+`{agent_id="agent-1",tenant="acme"}`)
	}
}
