package alerts

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// Paths relative to the package directory, where `go test` runs.
const (
	rulesPath          = "sentinel.rules.yml"
	runbookPath        = "runbook.md"
	prometheusConfig   = "../deploy/prometheus/prometheus.yml"
	alertmanagerConfig = "../deploy/alertmanager/alertmanager.yml"
	prometheusRulePath = "../deploy/kubernetes/prometheusrule.yaml"
	runbookURL         = "https://github.com/agentsentinel/sentinel/blob/main/alerts/runbook.md"
)

// requireTool finds a real Prometheus or Alertmanager tool. A missing tool
// fails rather than skips: a CI run without it would prove nothing.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	require.NoError(t, err, "%s not found: run `make test-deps`", name)
	return path
}

// runTool runs a tool and returns its standard output, failing the test
// with everything it printed when it exits non-zero.
func runTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), requireTool(t, name), args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	require.NoError(t, err, "%s %s:\n%s%s", name, strings.Join(args, " "), stdout.String(), stderr.String())
	return stdout.String()
}

func TestRealTools(t *testing.T) {
	ruleTests, err := filepath.Glob("tests/*.yml")
	require.NoError(t, err)
	require.NotEmpty(t, ruleTests, "no promtool tests under tests/")

	for _, tc := range []struct {
		name string
		tool string
		args []string
	}{
		{"rules are valid", "promtool", []string{"check", "rules", "--lint=all", "--lint-fatal", rulesPath}},
		{"rule unit tests pass", "promtool", append([]string{"test", "rules"}, ruleTests...)},
		// promtool resolves rule_files against the config file's directory,
		// so this also loads ../alerts/sentinel.rules.yml through the config.
		{"Prometheus config is valid", "promtool", []string{"check", "config", "--lint=all", "--lint-fatal", prometheusConfig}},
		// Alertmanager reads *_file secrets when it sends, not when it loads
		// the config, so the check needs no secret files.
		{"Alertmanager config is valid", "amtool", []string{"check-config", alertmanagerConfig}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runTool(t, tc.tool, tc.args...)
		})
	}
}

// TestAlertmanagerRouting checks who hears about what, with amtool's own
// routing tree evaluation of the example config.
func TestAlertmanagerRouting(t *testing.T) {
	for _, tc := range []struct {
		labels    []string
		receivers string
	}{
		{[]string{"alertname=AgentZombie", "severity=critical", "state=ZOMBIE", "tenant=acme", "agent_id=a1"}, "sentinel-bridge,pagerduty"},
		{[]string{"alertname=AgentSilent", "severity=warning", "state=SILENT", "tenant=acme", "agent_id=a1"}, "sentinel-bridge,slack"},
		{[]string{"alertname=Watchdog", "severity=none"}, "sentinel-bridge"},
		{[]string{"alertname=SentinelDown", "severity=critical", "job=sentinel"}, "pagerduty"},
		{[]string{"alertname=SentinelConfigReloadFailed", "severity=critical", "job=sentinel"}, "pagerduty"},
		{[]string{"alertname=SentinelWebhookDeliveryFailing", "severity=warning", "job=sentinel"}, "slack"},
		{[]string{"alertname=SentinelAgentsRefused", "severity=warning", "job=sentinel", "tenant=acme"}, "slack"},
	} {
		t.Run(tc.labels[0], func(t *testing.T) {
			t.Parallel()
			args := append([]string{"config", "routes", "test", "--config.file=" + alertmanagerConfig}, tc.labels...)
			got := runTool(t, "amtool", args...)
			require.Equal(t, tc.receivers, strings.TrimSpace(got), "receivers of %v", tc.labels)
		})
	}
}

// TestPrometheusRuleUpToDate fails when the committed manifest no longer
// matches the rule file.
func TestPrometheusRuleUpToDate(t *testing.T) {
	rules, err := os.ReadFile(rulesPath)
	require.NoError(t, err)
	want, err := PrometheusRule(rules)
	require.NoError(t, err)
	got, err := os.ReadFile(prometheusRulePath)
	require.NoError(t, err, "run `make generate`")
	require.Equal(t, string(want), string(got),
		"deploy/kubernetes/prometheusrule.yaml is out of date with alerts/sentinel.rules.yml: run `make generate`")
}

// TestPrometheusRuleKeepsGroups decodes both sides: whatever the encoder
// does to layout, every group and rule must mean the same.
func TestPrometheusRuleKeepsGroups(t *testing.T) {
	rules, err := os.ReadFile(rulesPath)
	require.NoError(t, err)
	manifest, err := PrometheusRule(rules)
	require.NoError(t, err)

	var src struct {
		Groups []any `yaml:"groups"`
	}
	require.NoError(t, yaml.Unmarshal(rules, &src))
	var pr struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Metadata   struct {
			Name   string            `yaml:"name"`
			Labels map[string]string `yaml:"labels"`
		} `yaml:"metadata"`
		Spec struct {
			Groups []any `yaml:"groups"`
		} `yaml:"spec"`
	}
	require.NoError(t, yaml.Unmarshal(manifest, &pr))

	require.Equal(t, "monitoring.coreos.com/v1", pr.APIVersion)
	require.Equal(t, "PrometheusRule", pr.Kind)
	require.Equal(t, "sentinel-rules", pr.Metadata.Name)
	require.Equal(t, "sentinel", pr.Metadata.Labels["app.kubernetes.io/name"])
	require.Equal(t, src.Groups, pr.Spec.Groups)

	again, err := PrometheusRule(rules)
	require.NoError(t, err)
	require.Equal(t, string(manifest), string(again), "output must be deterministic")
}

func TestPrometheusRuleRejectsBadInput(t *testing.T) {
	for _, tc := range []struct {
		name  string
		input string
		err   string
	}{
		{"empty", "", "not a YAML mapping"},
		{"not YAML", "groups: [", "parse rule file: yaml"},
		{"a list", "- name: x\n", "not a YAML mapping"},
		{"no groups", "rules: []\n", "groups must be a non-empty list"},
		{"groups not a list", "groups: {name: x}\n", "groups must be a non-empty list"},
		{"no group", "groups: []\n", "groups must be a non-empty list"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := PrometheusRule([]byte(tc.input))
			require.ErrorContains(t, err, tc.err)
		})
	}
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Record      string            `yaml:"record"`
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func loadRules(t *testing.T) (alerts, records []rule) {
	t.Helper()
	b, err := os.ReadFile(rulesPath)
	require.NoError(t, err)
	var f ruleFile
	require.NoError(t, yaml.Unmarshal(b, &f))
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				alerts = append(alerts, r)
			} else {
				records = append(records, r)
			}
		}
	}
	return alerts, records
}

// TestAlertContract pins the names and labels SPEC section 5 promises: the
// bridge, Alertmanager routes and users' silences are written against them.
func TestAlertContract(t *testing.T) {
	alerts, _ := loadRules(t)
	byName := map[string]rule{}
	for _, a := range alerts {
		byName[a.Alert] = a
	}
	for _, tc := range []struct {
		alert  string
		labels map[string]string
	}{
		{"AgentSilent", map[string]string{"severity": "warning", "state": "SILENT"}},
		{"AgentZombie", map[string]string{"severity": "critical", "state": "ZOMBIE"}},
		{"SentinelDown", map[string]string{"severity": "critical"}},
		{"Watchdog", map[string]string{"severity": "none"}},
		{"SentinelWebhookDeliveryFailing", map[string]string{"severity": "warning"}},
	} {
		t.Run(tc.alert, func(t *testing.T) {
			a, ok := byName[tc.alert]
			require.True(t, ok, "alert %s is missing", tc.alert)
			require.Equal(t, tc.labels, a.Labels)
		})
	}
	// The missed-beat count is the delay: a for: would shift the thresholds
	// by a fixed time and break their ratio to the agent's interval.
	for _, name := range []string{"AgentSilent", "AgentZombie"} {
		require.Empty(t, byName[name].For, "%s must have no for:", name)
		require.Contains(t, byName[name].Expr, "sentinel:agent_stopped_or_revoked", "%s must exempt stopped and revoked agents", name)
	}
}

// TestRuleConventions applies mixtool's conventions to every rule.
func TestRuleConventions(t *testing.T) {
	alerts, records := loadRules(t)
	runbook, err := os.ReadFile(runbookPath)
	require.NoError(t, err)
	camelCase := regexp.MustCompile(`^[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]+)*$`)
	// level:metric:operations, https://prometheus.io/docs/practices/rules/
	recordName := regexp.MustCompile(`^[a-z_]+:[a-z_]+(?::[a-z_]+)?$`)

	for _, a := range alerts {
		t.Run(a.Alert, func(t *testing.T) {
			require.Regexp(t, camelCase, a.Alert)
			require.Contains(t, []string{"critical", "warning", "info", "none"}, a.Labels["severity"])
			require.NotEmpty(t, a.Annotations["summary"])
			require.True(t, strings.HasSuffix(a.Annotations["summary"], "."), "summary must end with a period")
			require.NotContains(t, a.Annotations["summary"], "{{", "summary must be plain text")
			require.NotEmpty(t, a.Annotations["description"])
			if a.Alert != "Watchdog" { // nothing about it varies
				require.Contains(t, a.Annotations["description"], "{{", "description must be templated")
			}
			anchor := strings.ToLower(a.Alert)
			require.Equal(t, runbookURL+"#"+anchor, a.Annotations["runbook_url"])
			require.Contains(t, string(runbook), "\n## "+a.Alert+"\n", "runbook.md needs a section for %s", a.Alert)
		})
	}
	for _, r := range records {
		t.Run(r.Record, func(t *testing.T) {
			require.Regexp(t, recordName, r.Record)
		})
	}
}

// TestEveryRuleIsTested requires, per alert, a promtool case where it fires
// and one where it must not (but for Watchdog, which always fires), and a
// promql_expr_test of every recording rule.
func TestEveryRuleIsTested(t *testing.T) {
	alerts, records := loadRules(t)
	files, err := filepath.Glob("tests/*.yml")
	require.NoError(t, err)

	fires, quiet := map[string]bool{}, map[string]bool{}
	var exprs []string
	for _, file := range files {
		b, err := os.ReadFile(file)
		require.NoError(t, err)
		var f struct {
			Tests []struct {
				AlertRuleTest []struct {
					Alertname string `yaml:"alertname"`
					ExpAlerts []any  `yaml:"exp_alerts"`
				} `yaml:"alert_rule_test"`
				PromQLExprTest []struct {
					Expr string `yaml:"expr"`
				} `yaml:"promql_expr_test"`
			} `yaml:"tests"`
		}
		require.NoError(t, yaml.Unmarshal(b, &f), file)
		for _, tc := range f.Tests {
			for _, at := range tc.AlertRuleTest {
				if len(at.ExpAlerts) > 0 {
					fires[at.Alertname] = true
				} else {
					quiet[at.Alertname] = true
				}
			}
			for _, pt := range tc.PromQLExprTest {
				exprs = append(exprs, pt.Expr)
			}
		}
	}

	for _, a := range alerts {
		require.True(t, fires[a.Alert], "no promtool case where %s fires", a.Alert)
		if a.Alert != "Watchdog" {
			require.True(t, quiet[a.Alert], "no promtool case where %s must not fire", a.Alert)
		}
	}
	for _, r := range records {
		require.True(t, slices.ContainsFunc(exprs, func(e string) bool { return strings.Contains(e, r.Record) }),
			"no promql_expr_test of %s", r.Record)
	}
}

// TestNoThresholdConstants fails when a liveness threshold is written into
// the rules again: the thresholds are the agent's, its tenant's or the
// global ones, and reach the rules only through sentinel's lease expiry and
// zombie deadline series. A constant here would be a second source of truth
// that disagrees with the admin API as soon as a threshold is configured.
func TestNoThresholdConstants(t *testing.T) {
	b, err := os.ReadFile(rulesPath)
	require.NoError(t, err)
	var f ruleFile
	require.NoError(t, yaml.Unmarshal(b, &f))

	rangeSelector := regexp.MustCompile(`\[[0-9]+[smhdwy]\]`)
	// A number not part of a name, a label value or a range.
	number := regexp.MustCompile(`(^|[^A-Za-z0-9_:."\-])(-?[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)`)
	missedCompared := regexp.MustCompile(`agent_missed_heartbeats\s*(>=|<=|==|!=|>|<)`)
	// The deadlines-passed levels (0 ACTIVE, 1 SILENT, 2 ZOMBIE) and the
	// truth values of up, stopped and revoked are the only numbers a
	// liveness rule may hold.
	allowed := map[string]bool{"0": true, "1": true, "2": true}

	var checked int
	for _, g := range f.Groups {
		if g.Name != "sentinel-agents" {
			continue
		}
		for _, r := range g.Rules {
			name := r.Record + r.Alert
			expr := rangeSelector.ReplaceAllString(r.Expr, "")
			for _, m := range number.FindAllStringSubmatch(expr, -1) {
				require.True(t, allowed[m[2]], "%s: the number %s in its expression looks like a threshold; use the deadline series", name, m[2])
			}
			require.NotRegexp(t, missedCompared, r.Expr, "%s compares the missed count with a constant; compare with the deadlines", name)
			for key, text := range r.Annotations {
				if key == "runbook_url" {
					continue
				}
				for _, m := range number.FindAllStringSubmatch(rangeSelector.ReplaceAllString(text, ""), -1) {
					require.True(t, allowed[m[2]], "%s: annotation %s states the number %s; the thresholds differ per agent", name, key, m[2])
				}
			}
			checked++
		}
	}
	require.GreaterOrEqual(t, checked, 6, "the sentinel-agents group is missing")

	// The check itself catches what it is for.
	for _, bad := range []string{"sentinel:agent_missed_heartbeats >= 5", "x < 15", "sentinel:agent_deadlines_passed == 3"} {
		found := false
		for _, m := range number.FindAllStringSubmatch(bad, -1) {
			found = found || !allowed[m[2]]
		}
		require.True(t, found || missedCompared.MatchString(bad), "the check misses %q", bad)
	}
}
