package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/dashboards"
)

// emptyPanels may show no data on the test stack, with the reason.
var emptyPanels = map[string]string{
	"sentinel-fleet/Refused registrations": "the stack sets no heartbeat.max_agents, so nothing is refused",
}

// TestDashboards runs every query of the committed Grafana dashboards, the
// files users import, against the real Prometheus scraping the real
// sentinel: each must parse and evaluate, the variables' label_values
// queries must find the test's tenant, agent and instance, and but for
// emptyPanels every panel must show data, the key ones the right data.
func TestDashboards(t *testing.T) {
	t.Parallel()
	start := time.Now()
	boards := committedDashboards(t)
	s := startStack(t)

	// A kubernetes agent reporting everything, then silent; a revoked one;
	// a healthy one beating throughout.
	const silentID, revokedID, healthyID = "dash-silent", "dash-revoked", "dash-healthy"
	a := s.mustBeat(t, silentID, `{
		"status": "healthy", "heartbeat_interval_seconds": 1, "version": "2.0.1", "uptime_seconds": 300,
		"platform": {"type": "kubernetes", "pod_name": "agent-0", "namespace": "agents", "node": "node-1"},
		"metrics": {"requests_handled": 1200, "errors": 3, "avg_latency_ms": 80}}`)
	require.True(t, a.Registered, a.raw)
	lastBeat := time.Now()
	s.mustBeat(t, revokedID, `{"status":"healthy","heartbeat_interval_seconds":1}`)
	status, raw, err := s.post(s.sentinelURL+"/api/v1/installations/"+revokedID+"/revoke", adminToken, `{"reason":"e2e: dashboards"}`)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, status, raw)
	stop := s.beatEvery(healthyID, `{"status":"healthy","heartbeat_interval_seconds":1}`, time.Second)
	defer stop()

	waitFor(t, 20*time.Second, "AgentSilent to fire for "+silentID, func() bool {
		al, ok := s.alert(t, "AgentSilent", silentID)
		return ok && al.State == "firing"
	})
	t.Logf("stack up and %s silent after %s", silentID, time.Since(start).Round(time.Millisecond))

	values := map[string]string{
		"tenant":   tenant,
		"agent_id": silentID,
		"instance": s.sentinelAddr,
		// Grafana's own: any value Prometheus accepts and the stack's
		// seconds of data fill.
		"__rate_interval": "1m",
		"__interval":      "15s",
		"__range":         "1h",
	}
	seen := map[string]bool{}
	for _, d := range boards {
		t.Run(d.UID, func(t *testing.T) {
			for _, v := range d.Templating.List {
				if v.Type == "datasource" {
					continue
				}
				t.Run("variable "+v.Name, func(t *testing.T) {
					m := regexp.MustCompile(`^label_values\((.+), (\w+)\)$`).FindStringSubmatch(v.Query)
					require.NotNil(t, m, "%s: not label_values(series, label): %s", v.Name, v.Query)
					res := promInstant(t, s, substitute(t, m[1], values))
					var got []string
					for _, r := range res {
						got = append(got, r.Metric[m[2]])
					}
					require.Contains(t, got, values[v.Name], "%s lists no %q", v.Query, values[v.Name])
				})
			}
			for _, p := range d.Panels {
				panel := d.UID + "/" + p.Title
				seen[panel] = true
				t.Run(p.Type+" "+p.Title, func(t *testing.T) {
					for _, tg := range p.Targets {
						key := fmt.Sprintf("%s/%s/%s/%s", d.UID, p.Type, p.Title, tg.RefID)
						seen[key] = true
						// Parsed and evaluated by Prometheus in any case.
						res := promInstant(t, s, substitute(t, tg.Expr, values))
						if _, ok := emptyPanels[panel]; !ok && !readsBridgeMetrics(tg.Expr) {
							require.NotEmpty(t, res, "panel %q query %s shows no data: %s", p.Title, tg.RefID, tg.Expr)
						}
						if check, ok := keyPanels[key]; ok {
							check(t, res, silentID, lastBeat)
						}
					}
				})
			}
		})
	}
	for panel, why := range emptyPanels {
		require.True(t, seen[panel], "emptyPanels names %s (%s), which no dashboard has", panel, why)
	}
	for key := range keyPanels {
		require.True(t, seen[key], "keyPanels checks %s, which no dashboard has", key)
	}
	t.Logf("dashboards test took %s", time.Since(start).Round(time.Millisecond))
}

// readsBridgeMetrics reports whether q reads one of the bridge's metric
// families, which a sentinel without the bridge does not expose: such a
// query must parse and evaluate, but may find no data.
func readsBridgeMetrics(q string) bool {
	for _, m := range dashboards.BridgeMetrics {
		if strings.Contains(q, m) {
			return true
		}
	}
	return false
}

// keyPanels check the data of the panels a reader opens the dashboards
// for, by dashboard uid, panel type, panel title and refId.
var keyPanels = map[string]func(t *testing.T, res []promSample, silentID string, lastBeat time.Time){
	"sentinel-fleet/timeseries/Agents by state/A": func(t *testing.T, res []promSample, _ string, _ time.Time) {
		byState := map[string]float64{}
		for _, r := range res {
			byState[r.Metric["state"]] = r.Value
		}
		for _, state := range []string{"ACTIVE", "SILENT", "REVOKED"} {
			require.GreaterOrEqual(t, byState[state], 1.0, "agents by state: %v", byState)
		}
	},
	"sentinel-fleet/table/SILENT and ZOMBIE agents/A": func(t *testing.T, res []promSample, silentID string, _ time.Time) {
		r := only(t, res, silentID)
		require.Contains(t, []string{"SILENT", "ZOMBIE"}, r.Metric["state"], "%v", r.Metric)
		require.GreaterOrEqual(t, r.Value, 5.0, "missed heartbeats")
	},
	"sentinel-fleet/table/SILENT and ZOMBIE agents/B": func(t *testing.T, res []promSample, silentID string, lastBeat time.Time) {
		r := only(t, res, silentID)
		require.InDelta(t, float64(lastBeat.UnixMilli()), r.Value, 2000, "last heartbeat, in ms")
	},
	"sentinel-fleet/table/SILENT and ZOMBIE agents/C": func(t *testing.T, res []promSample, silentID string, _ time.Time) {
		require.Equal(t, 1.0, only(t, res, silentID).Value, "interval")
	},
	"sentinel-agent/stat/Missed heartbeats/A": func(t *testing.T, res []promSample, _ string, _ time.Time) {
		require.Len(t, res, 1)
		require.GreaterOrEqual(t, res[0].Value, 5.0)
	},
	"sentinel-agent/table/Agent info/A": func(t *testing.T, res []promSample, _ string, _ time.Time) {
		require.Len(t, res, 1)
		for label, want := range map[string]string{"platform": "kubernetes", "version": "2.0.1", "pod": "agent-0", "namespace": "agents", "node": "node-1"} {
			require.Equal(t, want, res[0].Metric[label], label)
		}
	},
}

// only returns the one sample of agentID in res.
func only(t *testing.T, res []promSample, agentID string) promSample {
	t.Helper()
	var out []promSample
	for _, r := range res {
		if r.Metric["agent_id"] == agentID {
			out = append(out, r)
		}
	}
	require.Len(t, out, 1, "samples of %s in %v", agentID, res)
	return out[0]
}

// committedDashboards reads the dashboards' JSON files as committed.
func committedDashboards(t *testing.T) []dashboards.Dashboard {
	t.Helper()
	var out []dashboards.Dashboard
	for _, d := range dashboards.All() {
		b, err := os.ReadFile(filepath.Join("..", "dashboards", d.FileName()))
		require.NoError(t, err, "run `make generate`")
		var c dashboards.Dashboard
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		require.NoError(t, dec.Decode(&c), d.FileName())
		out = append(out, c)
	}
	return out
}

var templateVariable = regexp.MustCompile(`\$(?:\{(\w+)(?::\w+)?\}|(\w+))`)

// substitute replaces the Grafana variables of q with values, failing on a
// variable without one.
func substitute(t *testing.T, q string, values map[string]string) string {
	t.Helper()
	return templateVariable.ReplaceAllStringFunc(q, func(ref string) string {
		m := templateVariable.FindStringSubmatch(ref)
		v, ok := values[m[1]+m[2]]
		require.True(t, ok, "no test value for the variable %s of %s", ref, q)
		return v
	})
}

// promInstant runs an instant query through Prometheus' HTTP API and
// returns its vector, failing with Prometheus' own error when the query
// does not parse or evaluate.
func promInstant(t *testing.T, s *stack, q string) []promSample {
	t.Helper()
	resp, err := s.client.Get(s.promURL + "/api/v1/query?query=" + url.QueryEscape(q))
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var env struct {
		Status    string `json:"status"`
		ErrorType string `json:"errorType"`
		Error     string `json:"error"`
		Data      struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal(body, &env), "%s: %s", q, body)
	require.Equal(t, "success", env.Status, "%s: %s: %s", q, env.ErrorType, env.Error)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", q, body)
	require.Equal(t, "vector", env.Data.ResultType, "%s: Grafana draws vectors", q)
	out := make([]promSample, 0, len(env.Data.Result))
	for _, r := range env.Data.Result {
		str, ok := r.Value[1].(string)
		require.True(t, ok, "%s: value %v", q, r.Value)
		v, err := strconv.ParseFloat(str, 64)
		require.NoError(t, err, q)
		out = append(out, promSample{Metric: r.Metric, Value: v})
	}
	return out
}
