package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// leakConfigs are the configurations of config/testdata/leak: each puts a
// secret, marked CANARY, where it does not belong.
func leakConfigs(t *testing.T) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob("../../config/testdata/leak/*.yml")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	m := map[string][]byte{}
	for _, f := range files {
		content, err := os.ReadFile(f)
		require.NoError(t, err)
		m[filepath.Base(f)] = content
	}
	return m
}

func requireNoCanary(t *testing.T, where, output string) {
	t.Helper()
	if strings.Contains(strings.ToLower(output), "canary") || strings.Contains(output, "password") {
		t.Fatalf("%s shows a configuration value:\n%s", where, output)
	}
}

// TestNoConfigValueInOutput feeds each leak configuration through
// --config.check, a start-up, SIGHUP and POST /-/reload of the real binary,
// and greps everything it wrote and answered for the secrets.
func TestNoConfigValueInOutput(t *testing.T) {
	configs := leakConfigs(t)
	dir := t.TempDir()

	t.Run("config.check and start-up", func(t *testing.T) {
		for name, content := range configs {
			cfg := filepath.Join(dir, name)
			writeFile(t, cfg, string(content))
			code, stdout, stderr := runSentinel(t, "--config.check", "--config.file="+cfg)
			require.Equal(t, 1, code, name)
			requireNoCanary(t, name+" --config.check", stdout+stderr)
			require.Contains(t, stderr, "FAILED: config "+cfg+": ")

			code, stdout, stderr = runSentinel(t, "--config.file="+cfg, "--storage.path="+filepath.Join(dir, "data-"+name),
				"--web.listen-address=127.0.0.1:0")
			require.Equal(t, 1, code, name)
			requireNoCanary(t, name+" start-up", stdout+stderr)
			require.Contains(t, stderr, "cannot start")
		}
	})

	t.Run("SIGHUP and reload", func(t *testing.T) {
		good := "admin_tokens: [global-admin]\n" + serveConfig
		cfg := filepath.Join(dir, "sentinel.yml")
		writeFile(t, cfg, good)
		p := startSentinel(t, cfg, filepath.Join(dir, "data"))
		for name, content := range configs {
			writeFile(t, cfg, string(content))
			before := strings.Count(p.logs.String(), "configuration reload failed")
			p.signal(syscall.SIGHUP)
			eventually(t, 10*time.Second, func() bool {
				return strings.Count(p.logs.String(), "configuration reload failed") > before
			}, func() string { return name + ": no reload failure logged:\n" + p.logs.String() })

			r := p.mustRequest(http.MethodPost, "/-/reload", "global-admin", nil)
			require.Equal(t, http.StatusInternalServerError, r.status, name)
			requireNoCanary(t, name+" /-/reload answer", string(r.body))
			require.Contains(t, r.json(t)["error"], "reload failed, the running configuration is kept")
		}
		requireNoCanary(t, "the log", p.logs.String())
		// The running configuration was kept through all of it.
		writeFile(t, cfg, good)
		require.Equal(t, http.StatusOK, p.mustRequest(http.MethodPost, "/-/reload", "global-admin", nil).status)
		p.beat("agent-1", "acme-key-1", nil)
	})
}
