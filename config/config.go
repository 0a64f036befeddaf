// Package config loads and validates sentinel's YAML configuration (SPEC 8).
//
// Loading is strict: unknown keys are errors, defaults are applied while
// unmarshalling, every *_file secret is read, and the whole configuration is
// validated before a caller may swap it in. Secrets are config.Secret values
// that print as <secret>.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	promconfig "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"
)

// Duration is a Prometheus duration ("90s", "2160h", "1d") whose parse
// errors name the line of the configuration file.
type Duration model.Duration

// UnmarshalYAML parses a duration.
func (d *Duration) UnmarshalYAML(node *yaml.Node) error {
	v, err := model.ParseDuration(node.Value)
	if err != nil || node.Kind != yaml.ScalarNode {
		// Never the value: it may be a secret typed into the wrong field.
		return fmt.Errorf("line %d: not a duration (use e.g. 90s, 5m, 2160h)", node.Line)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML prints the duration as it would be written.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

func (d Duration) String() string { return model.Duration(d).String() }

// Config is sentinel's configuration file.
type Config struct {
	Heartbeat       HeartbeatConfig     `yaml:"heartbeat"`
	AdminTokens     []promconfig.Secret `yaml:"admin_tokens,omitempty"`
	AdminTokenFiles []string            `yaml:"admin_token_files,omitempty"`
	Tenants         []TenantConfig      `yaml:"tenants"`
	Storage         StorageConfig       `yaml:"storage"`
	Metrics         MetricsConfig       `yaml:"metrics"`
	Bridge          BridgeConfig        `yaml:"bridge"`
}

// StorageConfig chooses where durable state lives (SPEC 9, 10).
type StorageConfig struct {
	// Postgres, when set, replaces the embedded store under --storage.path
	// with a PostgreSQL database that any number of replicas share.
	Postgres *PostgresConfig `yaml:"postgres,omitempty"`
}

// PostgresConfig is the shared PostgreSQL database of SPEC 10.
type PostgresConfig struct {
	DSN     promconfig.Secret `yaml:"dsn,omitempty"`
	DSNFile string            `yaml:"dsn_file,omitempty"`
}

// MetricsConfig protects /metrics (SPEC 8).
type MetricsConfig struct {
	// BearerToken, when set, is required from scrapers; absent, /metrics is open.
	BearerToken     promconfig.Secret `yaml:"bearer_token,omitempty"`
	BearerTokenFile string            `yaml:"bearer_token_file,omitempty"`
}

// HeartbeatConfig sets the liveness rules of SPEC 2.3.
type HeartbeatConfig struct {
	DefaultInterval    Duration `yaml:"default_interval"`
	MinInterval        Duration `yaml:"min_interval"`
	MaxInterval        Duration `yaml:"max_interval"`
	SilentAfter        int      `yaml:"silent_after"`
	ZombieAfter        int      `yaml:"zombie_after"`
	TokenTTL           Duration `yaml:"token_ttl"`
	TokenRefreshBefore Duration `yaml:"token_refresh_before"`
	MaxAgents          int      `yaml:"max_agents"`
}

// DefaultHeartbeatConfig holds the defaults of SPEC 8.
var DefaultHeartbeatConfig = HeartbeatConfig{
	DefaultInterval:    Duration(60 * time.Second),
	MinInterval:        Duration(time.Second),
	MaxInterval:        Duration(time.Hour),
	SilentAfter:        5,
	ZombieAfter:        15,
	TokenTTL:           Duration(2160 * time.Hour),
	TokenRefreshBefore: Duration(168 * time.Hour),
	MaxAgents:          1000000,
}

// TenantConfig is one tenant: its agents' API keys, its admin tokens, its webhook.
type TenantConfig struct {
	ID              string              `yaml:"id"`
	APIKeys         []promconfig.Secret `yaml:"api_keys,omitempty"`
	APIKeyFiles     []string            `yaml:"api_key_files,omitempty"`
	AdminTokens     []promconfig.Secret `yaml:"admin_tokens,omitempty"`
	AdminTokenFiles []string            `yaml:"admin_token_files,omitempty"`
	Webhook         *WebhookConfig      `yaml:"webhook,omitempty"`
	// MaxAgents caps the tenant's agents; 0 means only the global
	// heartbeat.max_agents applies.
	MaxAgents int `yaml:"max_agents,omitempty"`
	// Heartbeat overrides the global thresholds for the tenant's agents.
	Heartbeat *TenantHeartbeatConfig `yaml:"heartbeat,omitempty"`
}

// TenantHeartbeatConfig holds a tenant's own thresholds; a zero field takes
// the global value.
type TenantHeartbeatConfig struct {
	SilentAfter int `yaml:"silent_after,omitempty"`
	ZombieAfter int `yaml:"zombie_after,omitempty"`
}

// WebhookConfig is where a tenant's signed webhooks go (SPEC 6.1).
type WebhookConfig struct {
	URL         string              `yaml:"url"`
	Secrets     []promconfig.Secret `yaml:"secrets,omitempty"`
	SecretFiles []string            `yaml:"secret_files,omitempty"`
	MaxAge      Duration            `yaml:"max_age"`
	Timeout     Duration            `yaml:"timeout"`
	// HTTPConfig is the client's TLS, proxy and authorization settings.
	HTTPConfig promconfig.HTTPClientConfig `yaml:"http_config,omitempty"`
}

// BridgeConfig configures the Alertmanager bridge (SPEC 6).
type BridgeConfig struct {
	BearerToken     promconfig.Secret `yaml:"bearer_token,omitempty"`
	BearerTokenFile string            `yaml:"bearer_token_file,omitempty"`
	KillSwitch      KillSwitchConfig  `yaml:"kill_switch"`
	Watchdog        WatchdogConfig    `yaml:"watchdog"`
}

// KillSwitchConfig says which alerts revoke agents, and how long they get to stop.
type KillSwitchConfig struct {
	Alertnames      []string `yaml:"alertnames"`
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
}

// DefaultKillSwitchConfig holds the defaults of SPEC 8.
var DefaultKillSwitchConfig = KillSwitchConfig{
	Alertnames:      []string{"AgentZombie"},
	ShutdownTimeout: Duration(5 * time.Second),
}

// Defaults of SPEC 8 for sections that have no defaults struct.
const (
	DefaultWebhookMaxAge   = Duration(24 * time.Hour)
	DefaultWebhookTimeout  = Duration(10 * time.Second)
	DefaultWatchdogTimeout = Duration(5 * time.Minute)
)

// WatchdogConfig configures the pipeline's own heartbeat (SPEC 6.2).
type WatchdogConfig struct {
	Timeout Duration `yaml:"timeout"`
}

// MaxSpan bounds the spans sentinel computes from the configuration (an
// agent's interval times zombie_after, the token lifetime): time.Duration
// overflows at 292 years, into leases in the past and negative seconds.
const MaxSpan = Duration(100 * 365 * 24 * time.Hour)

// tenantIDPattern keeps tenant ids usable as label values and URL parts.
var tenantIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Load reads, defaults and validates the configuration file at path.
// Relative *_file paths are resolved against the file's directory.
func Load(path string) (*Config, error) {
	content, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config %s: %w", path, err)
	}
	cfg, err := Parse(content, filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse parses and validates a configuration; baseDir resolves relative *_file paths.
//
// No error quotes a value of the configuration: any of them may be a secret
// in the wrong place, and the message goes to --config.check's output, the
// reload's answer and the log. Errors name the line and the field instead.
func Parse(content []byte, baseDir string) (*Config, error) {
	cfg, err := parse(content, baseDir)
	if err != nil {
		return nil, redact(err, content)
	}
	return cfg, nil
}

func parse(content []byte, baseDir string) (*Config, error) {
	// Defaults are filled in first: the decoder only overwrites the keys the
	// file sets, and one strict decoder for the whole document keeps the line
	// numbers of unknown-key errors right.
	cfg := &Config{
		Heartbeat: DefaultHeartbeatConfig,
		Bridge: BridgeConfig{
			KillSwitch: KillSwitchConfig{
				Alertnames:      append([]string(nil), DefaultKillSwitchConfig.Alertnames...),
				ShutdownTimeout: DefaultKillSwitchConfig.ShutdownTimeout,
			},
			Watchdog: WatchdogConfig{Timeout: DefaultWatchdogTimeout},
		},
	}
	dec := yaml.NewDecoder(bytes.NewReader(content))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the configuration is empty")
		}
		return nil, err
	}
	// yaml reads one document; a second one, broken or not, would be
	// ignored silently: a configuration is one document (empty ones after
	// it, as a trailing "---" makes, are harmless).
	for {
		var extra yaml.Node
		err := dec.Decode(&extra)
		switch {
		case errors.Is(err, io.EOF):
		case err != nil:
			return nil, fmt.Errorf("a second YAML document follows the configuration (one document only): %w", err)
		case len(extra.Content) == 0 || extra.Content[0].Tag == "!!null":
			continue
		default:
			return nil, fmt.Errorf("line %d: a second YAML document follows the configuration (one document only)", extra.Line)
		}
		break
	}
	for i := range cfg.Tenants {
		if w := cfg.Tenants[i].Webhook; w != nil {
			if w.MaxAge == 0 {
				w.MaxAge = DefaultWebhookMaxAge
			}
			if w.Timeout == 0 {
				w.Timeout = DefaultWebhookTimeout
			}
		}
	}
	if err := cfg.resolveFiles(baseDir); err != nil {
		return nil, err
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func (c *Config) resolveFiles(baseDir string) error {
	var err error
	if c.AdminTokens, err = appendSecretFiles(c.AdminTokens, c.AdminTokenFiles, baseDir, "admin_token_files"); err != nil {
		return err
	}
	for i := range c.Tenants {
		t := &c.Tenants[i]
		where := fmt.Sprintf("tenants[%d]", i)
		if t.APIKeys, err = appendSecretFiles(t.APIKeys, t.APIKeyFiles, baseDir, where+".api_key_files"); err != nil {
			return err
		}
		if t.AdminTokens, err = appendSecretFiles(t.AdminTokens, t.AdminTokenFiles, baseDir, where+".admin_token_files"); err != nil {
			return err
		}
		if t.Webhook != nil {
			if t.Webhook.Secrets, err = appendSecretFiles(t.Webhook.Secrets, t.Webhook.SecretFiles, baseDir, where+".webhook.secret_files"); err != nil {
				return err
			}
		}
	}
	if c.Bridge.BearerTokenFile != "" {
		if c.Bridge.BearerToken != "" {
			return errors.New("bridge: at most one of bearer_token and bearer_token_file may be set")
		}
		s, err := readSecretFile(c.Bridge.BearerTokenFile, baseDir, "bridge.bearer_token_file")
		if err != nil {
			return err
		}
		c.Bridge.BearerToken = s
	}
	if c.Metrics.BearerTokenFile != "" {
		if c.Metrics.BearerToken != "" {
			return errors.New("metrics: at most one of bearer_token and bearer_token_file may be set")
		}
		s, err := readSecretFile(c.Metrics.BearerTokenFile, baseDir, "metrics.bearer_token_file")
		if err != nil {
			return err
		}
		c.Metrics.BearerToken = s
	}
	if pg := c.Storage.Postgres; pg != nil && pg.DSNFile != "" {
		if pg.DSN != "" {
			return errors.New("storage.postgres: at most one of dsn and dsn_file may be set")
		}
		s, err := readSecretFile(pg.DSNFile, baseDir, "storage.postgres.dsn_file")
		if err != nil {
			return err
		}
		pg.DSN = s
	}
	return nil
}

func appendSecretFiles(secrets []promconfig.Secret, files []string, baseDir, field string) ([]promconfig.Secret, error) {
	for _, f := range files {
		s, err := readSecretFile(f, baseDir, field)
		if err != nil {
			return nil, err
		}
		secrets = append(secrets, s)
	}
	return secrets, nil
}

func readSecretFile(file, baseDir, field string) (promconfig.Secret, error) {
	if !filepath.IsAbs(file) {
		file = filepath.Join(baseDir, file)
	}
	content, err := os.ReadFile(file)
	if err != nil {
		// The path is a value of the configuration: name the field only.
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return "", fmt.Errorf("%s: cannot read the file: %w", field, err)
	}
	s := strings.TrimSpace(string(content))
	if s == "" {
		return "", fmt.Errorf("%s: the file is empty", field)
	}
	return promconfig.Secret(s), nil
}

func (c *Config) validate() error {
	h := &c.Heartbeat
	switch {
	case h.MinInterval <= 0:
		return errors.New("heartbeat.min_interval must be positive")
	case h.MaxInterval < h.MinInterval:
		return errors.New("heartbeat.max_interval must not be below heartbeat.min_interval")
	case h.DefaultInterval < h.MinInterval || h.DefaultInterval > h.MaxInterval:
		return errors.New("heartbeat.default_interval must lie within [heartbeat.min_interval, heartbeat.max_interval]")
	case h.SilentAfter < 1:
		return errors.New("heartbeat.silent_after must be at least 1")
	case h.ZombieAfter <= h.SilentAfter:
		return errors.New("heartbeat.zombie_after must be greater than heartbeat.silent_after")
	case h.MaxInterval > MaxSpan/Duration(h.ZombieAfter):
		return fmt.Errorf("heartbeat.max_interval times heartbeat.zombie_after must not exceed %s, the longest span sentinel computes", MaxSpan)
	case h.TokenTTL <= 0:
		return errors.New("heartbeat.token_ttl must be positive")
	case h.TokenTTL > MaxSpan:
		return fmt.Errorf("heartbeat.token_ttl must not exceed %s", MaxSpan)
	case h.TokenRefreshBefore < 0 || h.TokenRefreshBefore >= h.TokenTTL:
		return errors.New("heartbeat.token_refresh_before must be below heartbeat.token_ttl")
	case h.MaxAgents < 1:
		return errors.New("heartbeat.max_agents must be at least 1")
	}
	if len(c.Tenants) == 0 {
		return errors.New("tenants: at least one tenant is required")
	}
	owners := map[promconfig.Secret]string{}
	claim := func(s promconfig.Secret, field string) error {
		if s == "" {
			return fmt.Errorf("%s: empty secret", field)
		}
		if strings.HasPrefix(string(s), "srt_") {
			return fmt.Errorf("%s: secrets must not start with srt_, the prefix of runtime tokens", field)
		}
		if prev, ok := owners[s]; ok {
			return fmt.Errorf("%s: the same secret is already used by %s; every credential must be unique", field, prev)
		}
		owners[s] = field
		return nil
	}
	for i, s := range c.AdminTokens {
		if err := claim(s, fmt.Sprintf("admin_tokens[%d]", i)); err != nil {
			return err
		}
	}
	seen := map[string]bool{}
	for i, t := range c.Tenants {
		where := fmt.Sprintf("tenants[%d]", i)
		if !tenantIDPattern.MatchString(t.ID) {
			return fmt.Errorf("%s.id must match %s", where, tenantIDPattern)
		}
		if seen[t.ID] {
			return fmt.Errorf("%s.id is the id of an earlier tenant", where)
		}
		seen[t.ID] = true
		for j, s := range t.APIKeys {
			if err := claim(s, fmt.Sprintf("%s.api_keys[%d]", where, j)); err != nil {
				return err
			}
		}
		for j, s := range t.AdminTokens {
			if err := claim(s, fmt.Sprintf("%s.admin_tokens[%d]", where, j)); err != nil {
				return err
			}
		}
		if w := t.Webhook; w != nil {
			u, err := url.Parse(w.URL)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fmt.Errorf("%s.webhook.url must be an absolute http or https URL", where)
			}
			if len(w.Secrets) == 0 {
				return fmt.Errorf("%s.webhook: at least one of secrets or secret_files is required to sign deliveries", where)
			}
			if w.MaxAge <= 0 {
				return fmt.Errorf("%s.webhook.max_age must be positive", where)
			}
			if w.Timeout <= 0 {
				return fmt.Errorf("%s.webhook.timeout must be positive", where)
			}
			if err := w.HTTPConfig.Validate(); err != nil {
				return fmt.Errorf("%s.webhook.http_config: %w", where, err)
			}
		}
		if t.MaxAgents < 0 {
			return fmt.Errorf("%s.max_agents must not be negative (0: only heartbeat.max_agents applies)", where)
		}
		if th := t.Heartbeat; th != nil {
			silent, zombie := c.Heartbeat.SilentAfter, c.Heartbeat.ZombieAfter
			if th.SilentAfter != 0 {
				silent = th.SilentAfter
			}
			if th.ZombieAfter != 0 {
				zombie = th.ZombieAfter
			}
			switch {
			case th.SilentAfter < 0 || th.ZombieAfter < 0:
				return fmt.Errorf("%s.heartbeat: silent_after and zombie_after must be positive", where)
			case zombie <= silent:
				return fmt.Errorf("%s.heartbeat: zombie_after must be greater than silent_after", where)
			case c.Heartbeat.MaxInterval > MaxSpan/Duration(zombie):
				return fmt.Errorf("%s.heartbeat: heartbeat.max_interval times zombie_after must not exceed %s", where, MaxSpan)
			}
		}
	}
	if c.Metrics.BearerToken != "" {
		if err := claim(c.Metrics.BearerToken, "metrics.bearer_token"); err != nil {
			return err
		}
	}
	if pg := c.Storage.Postgres; pg != nil && pg.DSN == "" {
		return errors.New("storage.postgres: one of dsn or dsn_file is required")
	}
	if c.Bridge.BearerToken != "" {
		if err := claim(c.Bridge.BearerToken, "bridge.bearer_token"); err != nil {
			return err
		}
	}
	if c.Bridge.KillSwitch.ShutdownTimeout < 0 {
		return errors.New("bridge.kill_switch.shutdown_timeout must not be negative")
	}
	if c.Bridge.Watchdog.Timeout < 0 {
		return errors.New("bridge.watchdog.timeout must not be negative (0 disables it)")
	}
	return nil
}

// Tenant returns the tenant with the given id.
func (c *Config) Tenant(id string) (*TenantConfig, bool) {
	for i := range c.Tenants {
		if c.Tenants[i].ID == id {
			return &c.Tenants[i], true
		}
	}
	return nil, false
}

// TenantIDs returns the configured tenant ids in file order.
func (c *Config) TenantIDs() []string {
	ids := make([]string, len(c.Tenants))
	for i, t := range c.Tenants {
		ids[i] = t.ID
	}
	return ids
}
