package dashboards

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
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
	rulesPath  = "../alerts/sentinel.rules.yml"
	readmePath = "../docs/metrics.md"
)

// exposedMetrics mirrors README.md's Metrics section: every metric sentinel
// exposes (TestMetricListMirrorsREADME keeps the two in step).
var exposedMetrics = []string{
	// Per agent.
	"sentinel_agent_last_heartbeat_timestamp_seconds",
	"sentinel_agent_heartbeat_interval_seconds",
	"sentinel_agent_lease_expiry_timestamp_seconds",
	"sentinel_agent_stopped",
	"sentinel_agent_revoked",
	"sentinel_agent_paused",
	"sentinel_agent_uptime_seconds",
	"sentinel_agent_requests_handled_total",
	"sentinel_agent_errors_total",
	"sentinel_agent_latency_average_seconds",
	"sentinel_agent_info",
	// Fleet and self.
	"sentinel_agents",
	"sentinel_heartbeats_total",
	"sentinel_agents_refused_total",
	"sentinel_revocations_total",
	"sentinel_config_last_reload_successful",
	"sentinel_config_last_reload_success_timestamp_seconds",
	"sentinel_snapshot_last_success_timestamp_seconds",
	"sentinel_snapshot_failures_total",
	"sentinel_snapshot_duration_seconds",
	"sentinel_build_info",
}

// prometheusSeries are the series Prometheus makes itself: per scrape
// target, and of its alerting rules.
var prometheusSeries = []string{"up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS"}

// collectorPrefixes are the Go and process collectors' metrics.
var collectorPrefixes = []string{"go_", "process_"}

// grafanaVariables are Grafana's built-in variables a query may use.
var grafanaVariables = []string{"__rate_interval", "__interval", "__range"}

// TestCommittedUpToDate fails when a committed dashboard no longer matches
// its Go source.
func TestCommittedUpToDate(t *testing.T) {
	for _, d := range All() {
		t.Run(d.FileName(), func(t *testing.T) {
			want, err := d.JSON()
			require.NoError(t, err)
			got, err := os.ReadFile(d.FileName())
			require.NoError(t, err, "run `make generate`")
			if string(want) != string(got) {
				// The whole file would bury the message; the first
				// difference is enough to see what changed.
				t.Fatalf("dashboards/%s is out of date with its Go source: run `make generate`\n%s",
					d.FileName(), firstDifference(string(want), string(got)))
			}
		})
	}
}

// firstDifference describes the first line where want and got differ.
func firstDifference(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := range max(len(w), len(g)) {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return fmt.Sprintf("line %d:\n  generated: %q\n  committed: %q", i+1, wl, gl)
		}
	}
	return ""
}

// TestNoStaleFiles fails on a JSON file no dashboard generates any more,
// which users would go on importing.
func TestNoStaleFiles(t *testing.T) {
	files, err := filepath.Glob("*.json")
	require.NoError(t, err)
	var want []string
	for _, d := range All() {
		want = append(want, d.FileName())
	}
	slices.Sort(want)
	require.Equal(t, want, files, "dashboards/ holds JSON files no dashboard generates: delete them or run `make generate`")
}

// TestJSON checks the rendering: deterministic, newline-terminated, and
// read back by the model without loss, so that a reader of the files (the
// e2e test) sees all that was generated.
func TestJSON(t *testing.T) {
	for i, d := range All() {
		t.Run(d.FileName(), func(t *testing.T) {
			b, err := d.JSON()
			require.NoError(t, err)
			again, err := All()[i].JSON() // built anew
			require.NoError(t, err)
			require.Equal(t, string(b), string(again), "output must be deterministic")
			require.True(t, bytes.HasSuffix(b, []byte("}\n")), "the file must end with a newline")
			require.NotContains(t, string(b), `\u003c`, "PromQL must stay readable, not HTML-escaped")

			var decoded Dashboard
			dec := json.NewDecoder(bytes.NewReader(b))
			dec.DisallowUnknownFields()
			require.NoError(t, dec.Decode(&decoded))
			round, err := decoded.JSON()
			require.NoError(t, err)
			// Override values are untyped: read back, their keys come sorted.
			require.JSONEq(t, string(b), string(round), "the model must read its own output back")
		})
	}
}

func TestDashboards(t *testing.T) {
	uids, titles := map[string]bool{}, map[string]bool{}
	for _, d := range All() {
		require.NotEmpty(t, d.UID)
		require.False(t, uids[d.UID], "duplicate uid %s", d.UID)
		require.False(t, titles[d.Title], "duplicate title %s", d.Title)
		uids[d.UID], titles[d.Title] = true, true
		require.Equal(t, SchemaVersion, d.SchemaVersion, d.UID)
		require.Contains(t, d.Tags, Tag, d.UID)
		require.NotEmpty(t, d.Description, d.UID)
		require.NotEmpty(t, d.Panels, d.UID)
	}
	// Data links between dashboards name their target by uid.
	for _, d := range All() {
		b, err := d.JSON()
		require.NoError(t, err)
		for _, m := range regexp.MustCompile(`/d/([^/"?]+)`).FindAllStringSubmatch(string(b), -1) {
			require.True(t, uids[m[1]], "%s links to a dashboard uid %s that does not exist", d.UID, m[1])
		}
	}
}

// TestPanels checks what Grafana needs of every panel: a title, the
// datasource variable, a unique id, a place on the 24-column grid shared
// with no other panel, and queries with unique refIds.
func TestPanels(t *testing.T) {
	for _, d := range All() {
		t.Run(d.UID, func(t *testing.T) {
			ids := map[int]bool{}
			for i, p := range d.Panels {
				t.Run(fmt.Sprintf("%d %s", p.ID, p.Title), func(t *testing.T) {
					require.NotEmpty(t, strings.TrimSpace(p.Title), "panel %d has no title", i)
					require.NotEmpty(t, p.Description, "describe what the panel shows")
					require.Contains(t, []string{"stat", "timeseries", "table", "state-timeline"}, p.Type)
					require.Equal(t, &Datasource{Type: "prometheus", UID: "${datasource}"}, p.Datasource)

					require.Positive(t, p.ID)
					require.False(t, ids[p.ID], "duplicate panel id %d", p.ID)
					ids[p.ID] = true

					g := p.GridPos
					require.Positive(t, g.W, "width")
					require.Positive(t, g.H, "height")
					require.GreaterOrEqual(t, g.X, 0)
					require.GreaterOrEqual(t, g.Y, 0)
					require.LessOrEqual(t, g.X+g.W, GridWidth, "the panel overflows the %d columns", GridWidth)
					for _, o := range d.Panels[:i] {
						require.False(t, overlap(g, o.GridPos), "overlaps panel %d %q", o.ID, o.Title)
					}

					require.NotEmpty(t, p.Targets, "a panel without a query")
					refIDs := map[string]bool{}
					for _, tg := range p.Targets {
						require.NotEmpty(t, strings.TrimSpace(tg.Expr), "target %s has no expression", tg.RefID)
						require.NotEmpty(t, tg.RefID)
						require.False(t, refIDs[tg.RefID], "duplicate refId %s", tg.RefID)
						refIDs[tg.RefID] = true
						require.Equal(t, p.Datasource, tg.Datasource, "target %s", tg.RefID)
						require.True(t, tg.Instant != tg.Range, "target %s must be instant or range", tg.RefID)
						if p.Type == "table" {
							require.Equal(t, "table", tg.Format, "target %s", tg.RefID)
						}
					}
				})
			}
		})
	}
}

func overlap(a, b GridPos) bool {
	return a.X < b.X+b.W && b.X < a.X+a.W && a.Y < b.Y+b.H && b.Y < a.Y+a.H
}

// TestVariables checks the template variables: the datasource variable
// comes first, every variable a query uses is defined (or one of
// Grafana's), and every defined one is used.
func TestVariables(t *testing.T) {
	for _, d := range All() {
		t.Run(d.UID, func(t *testing.T) {
			vars := d.Templating.List
			require.NotEmpty(t, vars)
			require.Equal(t, Variable{Name: "datasource", Label: "Data source", Type: "datasource", Query: "prometheus", Refresh: 1}, vars[0])

			defined := map[string]bool{}
			for _, v := range vars[1:] {
				require.Equal(t, "query", v.Type, v.Name)
				require.Equal(t, promDatasource, v.Datasource, v.Name)
				_, _, err := parseLabelValues(v.Query)
				require.NoError(t, err, v.Name)
				require.Equal(t, v.Query, v.Definition, v.Name)
				require.Equal(t, v.Multi, v.IncludeAll, "%s: multi-value variables include All", v.Name)
				defined[v.Name] = true
			}
			used := map[string]bool{}
			var queries []string
			for _, v := range vars[1:] {
				queries = append(queries, v.Query)
			}
			for _, p := range d.Panels {
				for _, tg := range p.Targets {
					queries = append(queries, tg.Expr)
				}
			}
			for _, q := range queries {
				for _, name := range variablesIn(q) {
					used[name] = true
					require.True(t, defined[name] || slices.Contains(grafanaVariables, name),
						"%q uses $%s, which the dashboard does not define", q, name)
				}
			}
			for name := range defined {
				require.True(t, used[name], "variable %s is defined but never used", name)
			}
		})
	}
}

var variableRef = regexp.MustCompile(`\$(?:\{(\w+)(?::\w+)?\}|(\w+))`)

// variablesIn returns the names of the template variables q refers to.
func variablesIn(q string) []string {
	var names []string
	for _, m := range variableRef.FindAllStringSubmatch(q, -1) {
		names = append(names, m[1]+m[2])
	}
	return names
}

var labelValuesQuery = regexp.MustCompile(`^label_values\((.+), (\w+)\)$`)

// parseLabelValues splits a label_values(series, label) variable query.
func parseLabelValues(q string) (series, label string, err error) {
	m := labelValuesQuery.FindStringSubmatch(q)
	if m == nil {
		return "", "", fmt.Errorf("%q is not label_values(series, label)", q)
	}
	return m[1], m[2], nil
}

// TestMetricNames checks that every metric a dashboard reads exists: one
// sentinel exposes, one Prometheus makes, or a recording rule of
// alerts/sentinel.rules.yml. A renamed metric or rule fails here, not as
// an empty panel in production.
func TestMetricNames(t *testing.T) {
	records := recordingRules(t)
	known := func(name string) bool {
		return slices.Contains(exposedMetrics, name) || slices.Contains(prometheusSeries, name) ||
			slices.Contains(BridgeMetrics, name) ||
			slices.Contains(records, name) ||
			slices.ContainsFunc(collectorPrefixes, func(p string) bool { return strings.HasPrefix(name, p) })
	}
	for _, d := range All() {
		t.Run(d.UID, func(t *testing.T) {
			var queries []string
			for _, v := range d.Templating.List[1:] {
				series, _, err := parseLabelValues(v.Query)
				require.NoError(t, err)
				queries = append(queries, series)
			}
			for _, p := range d.Panels {
				for _, tg := range p.Targets {
					queries = append(queries, tg.Expr)
				}
			}
			for _, q := range queries {
				names, err := metricNames(q)
				require.NoError(t, err)
				require.NotEmpty(t, names, "%q reads no metric", q)
				for _, n := range names {
					require.True(t, known(n), "%q reads %s, which neither sentinel (README.md, Metrics) nor Prometheus exposes, "+
						"and which is no recording rule of alerts/sentinel.rules.yml", q, n)
				}
			}
		})
	}
}

// recordingRules returns the record: names of alerts/sentinel.rules.yml.
func recordingRules(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(rulesPath)
	require.NoError(t, err)
	var f struct {
		Groups []struct {
			Rules []struct {
				Record string `yaml:"record"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	require.NoError(t, yaml.Unmarshal(b, &f))
	var records []string
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				records = append(records, r.Record)
			}
		}
	}
	require.NotEmpty(t, records, "no recording rule in %s", rulesPath)
	return records
}

// TestMetricListMirrorsREADME keeps exposedMetrics honest: README.md names
// each of them (the per-agent ones may be shortened to their suffix).
func TestMetricListMirrorsMetricsDoc(t *testing.T) {
	readme, err := os.ReadFile(readmePath)
	require.NoError(t, err)
	for _, name := range exposedMetrics {
		full := regexp.MustCompile("`" + regexp.QuoteMeta(name) + "[`{]")
		short := "`_" + strings.TrimPrefix(name, "sentinel_agent_") + "`"
		require.True(t, full.Match(readme) || strings.HasPrefix(name, "sentinel_agent_") && bytes.Contains(readme, []byte(short)),
			"docs/metrics.md does not list %s", name)
	}
}

// What metricNames strips before it looks for metric names.
var (
	stringLiteral = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'` + "|`[^`]*`")
	labelMatchers = regexp.MustCompile(`\{[^}]*\}`)
	rangeOrStep   = regexp.MustCompile(`\[[^\]]*\]`)
	labelList     = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promqlToken   = regexp.MustCompile(`[0-9.][0-9a-zA-Z_.]*|([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?`)
	promqlWords   = []string{"and", "or", "unless", "bool", "offset", "inf", "nan", "Inf", "NaN"}
)

// metricNames returns the metric names a PromQL expression reads, in
// order. It is a lexer, not a parser (the e2e test has real Prometheus
// parse every query): strings, label matchers, ranges and label lists go,
// what is left and not a call, keyword or number is a metric name.
func metricNames(expr string) ([]string, error) {
	s := stringLiteral.ReplaceAllString(expr, `""`)
	s = labelMatchers.ReplaceAllString(s, "{}")
	s = rangeOrStep.ReplaceAllString(s, "[]")
	s = labelList.ReplaceAllString(s, " ")
	if strings.ContainsAny(s, "$") {
		return nil, fmt.Errorf("%q: a variable outside a string or a range", expr)
	}
	var names []string
	for _, m := range promqlToken.FindAllStringSubmatch(s, -1) {
		name, call := m[1], m[2] != ""
		if name == "" || call || slices.Contains(promqlWords, name) {
			continue
		}
		names = append(names, name)
	}
	return names, nil
}

func TestMetricNamesLexer(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`sentinel_agents`, []string{"sentinel_agents"}},
		{`sum by (state) (sentinel_agents{tenant=~"$tenant"})`, []string{"sentinel_agents"}},
		{`time() - sentinel:agent_last_heartbeat_timestamp_seconds:max{a="b"}`, []string{"sentinel:agent_last_heartbeat_timestamp_seconds:max"}},
		{`rate(x_total[$__rate_interval]) * 1e3 > bool 0.5 offset 5m`, []string{"x_total"}},
		{`a and on (tenant, agent_id) b unless ignoring(x) c or d`, []string{"a", "b", "c", "d"}},
		{`label_replace(up, "dst", "}{ [x] no_metric", "src", "(.*)")`, []string{"up"}},
		{`max by (alertname) (ALERTS{alertname=~"A|B"}) * on (t) group_left (state) y`, []string{"ALERTS", "y"}},
		{`sum(z{a='}'}) without (instance)`, []string{"z"}},
		{`count(v) or vector(0)`, []string{"v"}},
		{`max_over_time(m[5m:1m])`, []string{"m"}},
	} {
		t.Run(tc.expr, func(t *testing.T) {
			got, err := metricNames(tc.expr)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	_, err := metricNames(`rate(x[5m]) > $threshold`)
	require.ErrorContains(t, err, "variable outside a string")
}

// TestBridgeMetricsShown checks that every family of BridgeMetrics has a
// panel, and that no other dashboard than Self reads them.
func TestBridgeMetricsShown(t *testing.T) {
	read := map[string][]string{}
	for _, d := range All() {
		for _, p := range d.Panels {
			for _, tg := range p.Targets {
				names, err := metricNames(tg.Expr)
				require.NoError(t, err)
				for _, n := range names {
					read[n] = append(read[n], d.UID)
				}
			}
		}
	}
	for _, m := range BridgeMetrics {
		require.NotEmpty(t, read[m], "no panel shows %s", m)
		for _, uid := range read[m] {
			require.Equal(t, Self().UID, uid, "%s is read by %s", m, uid)
		}
	}
}
