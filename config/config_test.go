package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	promconfig "github.com/prometheus/common/config"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/agentsentinel/sentinel/config"
)

// TestLoadBad pins the exact message of every rejected configuration: the
// message is what an operator reads after `--config.check` or a failed
// reload, so it must name the file, the field and, for unknown keys, the line.
func TestLoadBad(t *testing.T) {
	for _, tc := range []struct {
		file string
		want string
	}{
		{"unknown-key-top-bad.yml", "yaml: unmarshal errors:\n  line 4: unknown field in type config.Config (name not shown: it may be a secret); did you mean heartbeat?"},
		{"unknown-key-nested-bad.yml", "yaml: unmarshal errors:\n  line 4: unknown field in type config.HeartbeatConfig (name not shown: it may be a secret); did you mean zombie_after?"},
		{"unknown-key-tenant-bad.yml", "yaml: unmarshal errors:\n  line 7: unknown field in type config.WebhookConfig (name not shown: it may be a secret)"},
		{"empty-bad.yml", "the configuration is empty"},
		{"comments-only-bad.yml", "the configuration is empty"},
		{"no-tenants-bad.yml", "tenants: at least one tenant is required"},
		{"tenant-id-bad.yml", `tenants[0].id must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`},
		{"duplicate-tenant-bad.yml", "tenants[1].id is the id of an earlier tenant"},
		{"duplicate-secret-bad.yml", "tenants[1].api_keys[0]: the same secret is already used by admin_tokens[0]; every credential must be unique"},
		{"duplicate-secret-bridge-bad.yml", "bridge.bearer_token: the same secret is already used by tenants[0].admin_tokens[0]; every credential must be unique"},
		{"empty-secret-inline-bad.yml", "tenants[0].api_keys[0]: empty secret"},
		{"zombie-after-bad.yml", "heartbeat.zombie_after must be greater than heartbeat.silent_after"},
		{"default-interval-below-min-bad.yml", "heartbeat.default_interval must lie within [heartbeat.min_interval, heartbeat.max_interval]"},
		{"default-interval-above-max-bad.yml", "heartbeat.default_interval must lie within [heartbeat.min_interval, heartbeat.max_interval]"},
		{"token-refresh-bad.yml", "heartbeat.token_refresh_before must be below heartbeat.token_ttl"},
		{"max-agents-bad.yml", "heartbeat.max_agents must be at least 1"},
		{"webhook-no-secret-bad.yml", "tenants[0].webhook: at least one of secrets or secret_files is required to sign deliveries"},
		{"webhook-url-bad.yml", "tenants[0].webhook.url must be an absolute http or https URL"},
		{"webhook-url-scheme-bad.yml", "tenants[0].webhook.url must be an absolute http or https URL"},
		{"missing-file-bad.yml", "tenants[0].api_key_files: cannot read the file: no such file or directory"},
		{"bearer-file-missing-bad.yml", "bridge.bearer_token_file: cannot read the file: no such file or directory"},
		{"empty-secret-file-bad.yml", "tenants[0].webhook.secret_files: the file is empty"},
		{"bearer-both-bad.yml", "bridge: at most one of bearer_token and bearer_token_file may be set"},
		{"span-overflow-bad.yml", "heartbeat.max_interval times heartbeat.zombie_after must not exceed 100y, the longest span sentinel computes"},
		{"span-zombie-after-bad.yml", "heartbeat.max_interval times heartbeat.zombie_after must not exceed 100y, the longest span sentinel computes"},
		{"token-ttl-long-bad.yml", "heartbeat.token_ttl must not exceed 100y"},
		{"bad-duration-bad.yml", "line 2: not a duration (use e.g. 90s, 5m, 2160h)"},
		{"second-document-bad.yml", "a second YAML document follows the configuration (one document only): yaml: line 4: did not find expected ',' or '}'"},
		{"second-document-valid-bad.yml", "line 4: a second YAML document follows the configuration (one document only)"},
		// Type errors name the line and the types, never the value: it may be a secret.
		{"api-keys-scalar-bad.yml", "yaml: unmarshal errors:\n  line 3: cannot unmarshal !!str <redacted> into []config.Secret"},
		{"admin-tokens-scalar-bad.yml", "yaml: unmarshal errors:\n  line 1: cannot unmarshal !!str <redacted> into []config.Secret\n  line 7: cannot unmarshal !!map into []config.Secret"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join("testdata", tc.file)
			cfg, err := config.Load(path)
			require.Nil(t, cfg)
			require.EqualError(t, err, "config "+path+": "+tc.want)
		})
	}
}

// TestEveryBadFileIsTested keeps TestLoadBad honest: a new *-bad.yml without
// an expected message would otherwise never run.
func TestEveryBadFileIsTested(t *testing.T) {
	files, err := filepath.Glob("testdata/*-bad.yml")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		_, err := config.Load(f)
		require.Error(t, err, "%s must be rejected", f)
	}
}

// TestParseRedactsValues: yaml quotes the first characters of a value of the
// wrong type; the message goes to the reload's answer and the log, and the
// value may be a secret, so it is cut out, whatever it holds.
func TestParseRedactsValues(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want, secret string
	}{
		{"scalar api_keys", "tenants:\n  - id: acme\n    api_keys: ACMEKEY-SUPERSECRET-VALUE\n",
			"line 3: cannot unmarshal !!str <redacted> into []config.Secret", "ACMEKEY"},
		{"short value, shown whole by yaml", "admin_tokens: TOPSECRET\ntenants: [{id: acme}]\n",
			"line 1: cannot unmarshal !!str <redacted> into []config.Secret", "TOPSECRET"},
		{"backquotes and into in the value", "admin_tokens: \"Q` into Z\"\ntenants: [{id: acme}]\n",
			"line 1: cannot unmarshal !!str <redacted> into []config.Secret", "Q`"},
		{"newline in the value", "admin_tokens: \"SEC\\nRET\"\ntenants: [{id: acme}]\n",
			"line 1: cannot unmarshal !!str <redacted> into []config.Secret", "SEC"},
		{"integer field", "heartbeat:\n  max_agents: SECRETVAL\ntenants: [{id: acme}]\n",
			"line 2: cannot unmarshal !!str <redacted> into int", "SECRETV"},
		{"list of lists", "tenants:\n  - id: acme\n    api_keys: [[NESTED-SECRET]]\n",
			"line 3: cannot unmarshal !!seq into config.plain", "NESTED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse([]byte(tc.yaml), t.TempDir())
			require.EqualError(t, err, "yaml: unmarshal errors:\n  "+tc.want)
			require.NotContains(t, err.Error(), tc.secret)
			var te *yaml.TypeError
			require.ErrorAs(t, err, &te)
		})
	}
}

// The longest span that fits is accepted.
func TestParseMaxSpan(t *testing.T) {
	cfg, err := config.Parse([]byte("heartbeat:\n  max_interval: 50y\n  silent_after: 1\n  zombie_after: 2\n  token_ttl: 100y\ntenants: [{id: acme}]\n"), t.TempDir())
	require.NoError(t, err)
	require.Equal(t, config.MaxSpan, config.Duration(cfg.Heartbeat.ZombieAfter)*cfg.Heartbeat.MaxInterval)
	require.Equal(t, config.MaxSpan, cfg.Heartbeat.TokenTTL)
}

func TestLoadMissingConfigFile(t *testing.T) {
	_, err := config.Load("testdata/no-such-config.yml")
	require.EqualError(t, err, "read config testdata/no-such-config.yml: open testdata/no-such-config.yml: no such file or directory")
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestParseEmpty(t *testing.T) {
	for name, content := range map[string]string{"nil": "", "blank": "\n\n  \n", "comment": "# only\n"} {
		t.Run(name, func(t *testing.T) {
			_, err := config.Parse([]byte(content), t.TempDir())
			require.EqualError(t, err, "the configuration is empty")
		})
	}
}

func TestLoadMinimalAppliesDefaults(t *testing.T) {
	cfg, err := config.Load("testdata/minimal-good.yml")
	require.NoError(t, err)

	require.Equal(t, config.HeartbeatConfig{
		DefaultInterval:    config.Duration(60 * time.Second),
		MinInterval:        config.Duration(time.Second),
		MaxInterval:        config.Duration(time.Hour),
		SilentAfter:        5,
		ZombieAfter:        15,
		TokenTTL:           config.Duration(2160 * time.Hour),
		TokenRefreshBefore: config.Duration(168 * time.Hour),
		MaxAgents:          1000000,
	}, cfg.Heartbeat)
	require.Equal(t, config.DefaultHeartbeatConfig, cfg.Heartbeat)
	require.Empty(t, cfg.AdminTokens)
	require.Equal(t, []string{"acme"}, cfg.TenantIDs())

	tenant, ok := cfg.Tenant("acme")
	require.True(t, ok)
	require.Equal(t, []promconfig.Secret{"acme-key"}, tenant.APIKeys)
	require.NotNil(t, tenant.Webhook)
	require.Equal(t, "https://hooks.example.com/abs", tenant.Webhook.URL)
	require.Equal(t, []promconfig.Secret{"acme-webhook-secret"}, tenant.Webhook.Secrets)
	require.Equal(t, config.Duration(24*time.Hour), tenant.Webhook.MaxAge)
	_, ok = cfg.Tenant("globex")
	require.False(t, ok)

	require.Empty(t, cfg.Bridge.BearerToken)
	require.Equal(t, []string{"AgentZombie"}, cfg.Bridge.KillSwitch.Alertnames)
	require.Equal(t, config.Duration(5*time.Second), cfg.Bridge.KillSwitch.ShutdownTimeout)
	require.Equal(t, config.Duration(5*time.Minute), cfg.Bridge.Watchdog.Timeout)
}

// The defaults live in package variables; a loaded configuration must not
// share their slices, or a reload could change the next one's defaults.
func TestDefaultsAreNotShared(t *testing.T) {
	cfg, err := config.Load("testdata/minimal-good.yml")
	require.NoError(t, err)
	cfg.Bridge.KillSwitch.Alertnames[0] = "Mutated"
	require.Equal(t, []string{"AgentZombie"}, config.DefaultKillSwitchConfig.Alertnames)

	again, err := config.Load("testdata/minimal-good.yml")
	require.NoError(t, err)
	require.Equal(t, []string{"AgentZombie"}, again.Bridge.KillSwitch.Alertnames)
}

func requireFilesGood(t *testing.T, cfg *config.Config) {
	t.Helper()
	require.Equal(t, config.HeartbeatConfig{
		DefaultInterval:    config.Duration(30 * time.Second),
		MinInterval:        config.Duration(5 * time.Second),
		MaxInterval:        config.Duration(10 * time.Minute),
		SilentAfter:        3,
		ZombieAfter:        9,
		TokenTTL:           config.Duration(720 * time.Hour),
		TokenRefreshBefore: config.Duration(24 * time.Hour),
		MaxAgents:          500,
	}, cfg.Heartbeat)
	// Trailing newlines (and a CRLF) of secret files are trimmed.
	require.Equal(t, []promconfig.Secret{"global-admin-from-file"}, cfg.AdminTokens)
	require.Equal(t, []string{"acme", "globex.eu-1"}, cfg.TenantIDs())
	acme, ok := cfg.Tenant("acme")
	require.True(t, ok)
	require.Equal(t, []promconfig.Secret{"acme-inline-key", "acme-key-from-file"}, acme.APIKeys)
	require.Equal(t, []promconfig.Secret{"acme-admin-from-file"}, acme.AdminTokens)
	require.Equal(t, []promconfig.Secret{"whsec_c2lnbmluZy1zZWNyZXQ="}, acme.Webhook.Secrets)
	require.Equal(t, config.Duration(time.Hour), acme.Webhook.MaxAge)
	globex, ok := cfg.Tenant("globex.eu-1")
	require.True(t, ok)
	require.Nil(t, globex.Webhook)
	require.Equal(t, promconfig.Secret("bridge-token-from-file"), cfg.Bridge.BearerToken)
	require.Equal(t, []string{"AgentZombie", "AgentSilent"}, cfg.Bridge.KillSwitch.Alertnames)
	require.Equal(t, config.Duration(30*time.Second), cfg.Bridge.KillSwitch.ShutdownTimeout)
	require.Equal(t, config.Duration(0), cfg.Bridge.Watchdog.Timeout, "0 disables the watchdog")
}

func TestLoadSecretFiles(t *testing.T) {
	cfg, err := config.Load("testdata/files-good.yml")
	require.NoError(t, err)
	requireFilesGood(t, cfg)
}

// *_file paths are relative to the configuration's directory, not to the
// working directory: copy the whole set elsewhere and load it by absolute path.
func TestSecretFilesRelativeToConfigDir(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"files-good.yml", "admin.token", "acme-api.key", "acme-admin.token", "acme-webhook.secret", "bridge.token"} {
		b, err := os.ReadFile(filepath.Join("testdata", f))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, f), b, 0o600))
	}
	// A decoy in the working directory would be picked if paths were resolved
	// against it.
	_, err := os.Stat("admin.token")
	require.ErrorIs(t, err, os.ErrNotExist)

	cfg, err := config.Load(filepath.Join(dir, "files-good.yml"))
	require.NoError(t, err)
	requireFilesGood(t, cfg)

	content, err := os.ReadFile(filepath.Join(dir, "files-good.yml"))
	require.NoError(t, err)
	cfg, err = config.Parse(content, dir)
	require.NoError(t, err)
	requireFilesGood(t, cfg)
}

func TestSecretFileAbsolutePath(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "api.key")
	require.NoError(t, os.WriteFile(keyFile, []byte("absolute-key\n\n"), 0o600))
	content := "tenants:\n  - id: acme\n    api_key_files: [" + keyFile + "]\n"
	cfg, err := config.Parse([]byte(content), "/nonexistent-base-dir")
	require.NoError(t, err)
	acme, _ := cfg.Tenant("acme")
	require.Equal(t, []promconfig.Secret{"absolute-key"}, acme.APIKeys)
}

// Marshalled with yaml, as for logging or a /config endpoint, no secret
// appears: promconfig.Secret prints as <secret>.
func TestMarshalHidesSecrets(t *testing.T) {
	require.False(t, promconfig.MarshalSecretValue, "secrets must not be marshalled in clear by default")
	cfg, err := config.Load("testdata/files-good.yml")
	require.NoError(t, err)

	out, err := yaml.Marshal(cfg)
	require.NoError(t, err)
	text := string(out)
	for _, secret := range []string{
		"global-admin-from-file", "acme-inline-key", "acme-key-from-file", "acme-admin-from-file",
		"whsec_c2lnbmluZy1zZWNyZXQ=", "bridge-token-from-file",
	} {
		require.NotContains(t, text, secret)
	}
	// admin_tokens, acme api_keys (2), admin_tokens and secrets, globex api_keys, bridge.bearer_token.
	require.Equal(t, 7, strings.Count(text, "<secret>"), text)
	require.Contains(t, text, "bearer_token: <secret>")
	// The file names are not secrets and stay visible.
	require.Contains(t, text, "bridge.token")

	// The same holds for the example configuration, whose secrets are inline.
	example, err := config.Load("../deploy/sentinel.example.yml")
	require.NoError(t, err)
	out, err = yaml.Marshal(example)
	require.NoError(t, err)
	require.NotContains(t, string(out), "CHANGE-ME")
	require.NotContains(t, string(out), "whsec_")
	require.Equal(t, 5, strings.Count(string(out), "<secret>"), string(out))
}

func TestExampleConfigLoads(t *testing.T) {
	cfg, err := config.Load("../deploy/sentinel.example.yml")
	require.NoError(t, err)
	require.Equal(t, config.DefaultHeartbeatConfig, cfg.Heartbeat)
	require.Equal(t, []string{"demo"}, cfg.TenantIDs())
	demo, ok := cfg.Tenant("demo")
	require.True(t, ok)
	require.Len(t, demo.APIKeys, 1)
	require.Len(t, demo.AdminTokens, 1)
	require.Len(t, cfg.AdminTokens, 1)
	require.NotEmpty(t, cfg.Bridge.BearerToken)
	require.Equal(t, []string{"AgentZombie"}, cfg.Bridge.KillSwitch.Alertnames)
}

// TestErrorsNeverQuoteValues feeds configurations that put secrets where
// they do not belong (testdata/leak, shared with the binary's test of
// --config.check, start-up, SIGHUP and /-/reload): each is rejected, and the
// message holds no part of the secret, marked CANARY.
func TestErrorsNeverQuoteValues(t *testing.T) {
	files, err := filepath.Glob("testdata/leak/*.yml")
	require.NoError(t, err)
	require.Len(t, files, 11)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, err := config.Load(f)
			require.Error(t, err)
			require.NotContains(t, err.Error(), "CANARY")
			require.NotContains(t, strings.ToLower(err.Error()), "canary")
			require.NotContains(t, err.Error(), "password")
			t.Log(err)
		})
	}
}
