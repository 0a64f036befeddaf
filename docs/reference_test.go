package docs

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/agentsentinel/sentinel/config"
)

// The reference pages must keep up with the code: these tests fail when a
// configuration key, a flag, a metric or a rule exists that its page does
// not name. (A page may name more: features it describes may be on their
// way.)

func readDoc(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	require.NoError(t, err)
	return string(b)
}

// TestConfigurationKeysDocumented checks that docs/configuration.md names
// every key of the configuration file, as `key` or in its example.
func TestConfigurationKeysDocumented(t *testing.T) {
	doc := readDoc(t, "configuration.md")
	keys := configKeys(reflect.TypeOf(config.Config{}))
	require.Contains(t, keys, "max_agents")
	require.Contains(t, keys, "alertnames")
	var missing []string
	for _, k := range keys {
		// `key`, `section.key`, or "key:" in the example.
		named := regexp.MustCompile("`(?:[a-z0-9_\\[\\]]+\\.)*" + regexp.QuoteMeta(k) + "`|(?m)^\\s*" + regexp.QuoteMeta(k) + ":")
		if !named.MatchString(doc) {
			missing = append(missing, k)
		}
	}
	require.Empty(t, missing, "docs/configuration.md does not name these configuration keys")
}

// configKeys returns the YAML keys of t and of the structs of package config
// it holds. Types of other packages (prometheus/common's http_config) are
// documented where they come from.
func configKeys(t reflect.Type) []string {
	var keys []string
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t.PkgPath() != reflect.TypeOf(config.Config{}).PkgPath() {
		return nil
	}
	if reflect.PointerTo(t).Implements(reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()) {
		return nil
	}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		keys = append(keys, name)
		keys = append(keys, configKeys(f.Type)...)
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

// flagPattern finds the flags cmd/sentinel defines itself.
var flagPattern = regexp.MustCompile(`\.Flag\("([a-z0-9.-]+)"`)

// TestFlagsDocumented checks that docs/configuration.md names every flag of
// sentinel, with the flags exporter-toolkit and promslog add.
func TestFlagsDocumented(t *testing.T) {
	doc := readDoc(t, "configuration.md")
	flags := []string{"web.listen-address", "web.config.file", "web.systemd-socket", "log.level", "log.format", "version"}
	files, err := filepath.Glob(filepath.Join("..", "cmd", "sentinel", "*.go"))
	require.NoError(t, err)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		for _, m := range flagPattern.FindAllStringSubmatch(readDoc(t, f), -1) {
			flags = append(flags, m[1])
		}
	}
	require.Contains(t, flags, "storage.path")
	var missing []string
	for _, f := range flags {
		// A flag built from a prefix ("collector."+name) is named as a pattern.
		if !strings.Contains(doc, "`--"+f+"`") && !(strings.HasSuffix(f, ".") && strings.Contains(doc, "`--[no-]"+f+"<")) {
			missing = append(missing, "--"+f)
		}
	}
	require.Empty(t, missing, "docs/configuration.md has no row for these flags of sentinel")
}

// metricName finds metric names in Go string literals.
var metricName = regexp.MustCompile("[\"`](sentinel_[a-z0-9_]*[a-z0-9])[\"`{]")

// ruleName finds the recording rules and alerts of a rules file.
var ruleName = regexp.MustCompile(`(?m)^\s*-\s*(?:record|alert):\s*(\S+)\s*$`)

// TestMetricsDocumented checks that docs/metrics.md names every metric the
// code mentions, and every recording rule and alert of the rules file.
func TestMetricsDocumented(t *testing.T) {
	doc := readDoc(t, "metrics.md")
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	var names []string
	for _, f := range repoFiles(t, root, ".go") {
		if strings.HasSuffix(f, "_test.go") || strings.HasPrefix(f, "docs/") {
			continue
		}
		for _, m := range metricName.FindAllStringSubmatch(readDoc(t, filepath.Join(root, filepath.FromSlash(f))), -1) {
			names = append(names, m[1])
		}
	}
	require.Contains(t, names, "sentinel_agent_last_heartbeat_timestamp_seconds")
	rules := ruleName.FindAllStringSubmatch(readDoc(t, filepath.Join(root, "alerts", "sentinel.rules.yml")), -1)
	require.NotEmpty(t, rules)
	for _, m := range rules {
		names = append(names, m[1])
	}
	slices.Sort(names)
	names = slices.Compact(names)
	var missing []string
	for _, n := range names {
		if !strings.Contains(doc, "`"+n+"`") {
			missing = append(missing, n)
		}
	}
	require.Empty(t, missing, "docs/metrics.md does not name these metrics, recording rules or alerts")
}

// routePattern finds the routes registered on a ServeMux.
var routePattern = regexp.MustCompile(`\.Handle(?:Func)?\("(?:[A-Z]+ )?(/[^"]*)"`)

// TestRoutesDocumented checks that docs/api.md names every path sentinel
// serves.
func TestRoutesDocumented(t *testing.T) {
	doc := readDoc(t, "api.md")
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	var routes []string
	for _, f := range repoFiles(t, root, ".go") {
		if strings.HasSuffix(f, "_test.go") || strings.HasPrefix(f, "docs/") {
			continue
		}
		for _, m := range routePattern.FindAllStringSubmatch(readDoc(t, filepath.Join(root, filepath.FromSlash(f))), -1) {
			routes = append(routes, m[1])
		}
	}
	require.Contains(t, routes, "/api/v1/installations/{id}/heartbeat")
	slices.Sort(routes)
	var missing []string
	for _, r := range slices.Compact(routes) {
		// The path as a whole: followed by the end of a word, a query or a backquote.
		if !regexp.MustCompile("(?m)(?:^|[\\s`])" + regexp.QuoteMeta(r) + "(?:$|[\\s`?])").MatchString(doc) {
			missing = append(missing, r)
		}
	}
	require.Empty(t, missing, "docs/api.md does not document these routes")
}

// TestConfigurationExampleParses decodes the complete example of
// docs/configuration.md strictly into the configuration's types, so that a
// misspelt or moved key in it fails here rather than for a reader. (Secrets
// and files are placeholders: the example is not validated as a whole.)
func TestConfigurationExampleParses(t *testing.T) {
	doc := readDoc(t, "configuration.md")
	m := regexp.MustCompile("(?s)### Complete example\n.*?```yaml\n(.*?)```").FindStringSubmatch(doc)
	require.NotNil(t, m, "docs/configuration.md has no ```yaml block under ### Complete example")
	dec := yaml.NewDecoder(strings.NewReader(m[1]))
	dec.KnownFields(true)
	var cfg config.Config
	require.NoError(t, dec.Decode(&cfg))
	require.Len(t, cfg.Tenants, 1)
	require.NotNil(t, cfg.Tenants[0].Webhook)
	require.NotNil(t, cfg.Storage.Postgres)
	require.Equal(t, []string{"AgentZombie"}, cfg.Bridge.KillSwitch.Alertnames)
}
