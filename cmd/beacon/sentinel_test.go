package main

import (
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/app"
)

// sentinelConfig is the real sentinel's configuration for the end-to-end
// tests: one tenant, intervals down to a second.
const sentinelConfig = `heartbeat:
  default_interval: 60s
  min_interval: 1s
  max_interval: 1h
tenants:
  - id: acme
    api_keys: [` + testAPIKey + `]
    admin_tokens: [` + testAdminToken + `]
`

// startRealSentinel starts the real sentinel app in-process.
func startRealSentinel(t *testing.T) *sentinelServer {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sentinel.yml")
	require.NoError(t, os.WriteFile(cfg, []byte(sentinelConfig), 0o600))
	storage := filepath.Join(dir, "data")
	require.NoError(t, os.Mkdir(storage, 0o700))
	a, err := app.New(app.Options{ConfigFile: cfg, StoragePath: storage, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	require.NoError(t, err)
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(func() {
		srv.Close()
		require.NoError(t, a.Close())
	})
	return &sentinelServer{URL: srv.URL}
}
