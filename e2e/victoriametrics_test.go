package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/internal/testutil"
)

// vmAlert is one alert of vmalert's /api/v1/alerts.
type vmAlert struct {
	Name        string            `json:"name"`
	State       string            `json:"state"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

// TestVictoriaMetrics runs VictoriaMetrics as the downstream instead of
// Prometheus: single-node VictoriaMetrics scrapes the real sentinel (with
// the scrape token, gzip), vmalert evaluates alerts/sentinel.rules.yml as is
// against it, writing the recording rules back, and an agent that stops
// beating raises AgentSilent, then AgentZombie, while one that keeps beating
// raises nothing.
//
// VictoriaMetrics answers an instant query as of -search.latencyOffset ago
// (30 s by default, so that late samples are in): every alert would come
// that much later. The test sets 1 s; docs/sizing.md says what to set.
func TestVictoriaMetrics(t *testing.T) {
	t.Parallel()
	vmBin := lookTool(t, "victoria-metrics")
	vmalertBin := lookTool(t, "vmalert")
	rulesFile, err := filepath.Abs(filepath.Join("..", "alerts", "sentinel.rules.yml"))
	require.NoError(t, err)

	s := &stack{dir: t.TempDir(), client: &http.Client{Timeout: 10 * time.Second}}
	s.sentinelAddr = testutil.FreeAddr(t)
	s.sentinelURL = "http://" + s.sentinelAddr
	vmAddr, vmalertAddr := testutil.FreeAddr(t), testutil.FreeAddr(t)
	vmURL, vmalertURL := "http://"+vmAddr, "http://"+vmalertAddr
	notifier := newFakeNotifier(t)

	sentinelConfig := s.render(t, "sentinel.yml", map[string]string{
		"Tenant": tenant, "APIKey": apiKey, "AdminToken": adminToken, "BridgeToken": bridgeToken,
		"MetricsToken": metricsToken,
	})
	scrapeConfig := s.render(t, "victoriametrics.yml", map[string]string{
		"SentinelAddr": s.sentinelAddr, "MetricsToken": metricsToken,
	})
	s.check(t, vmalertBin, "-dryRun", "-rule="+rulesFile)

	s.sentinel = startProcess(t, s.dir, "sentinel", sentinelBin,
		"--config.file="+sentinelConfig,
		"--storage.path="+s.mkdir(t, "sentinel-data"),
		"--web.listen-address="+s.sentinelAddr,
	)
	vm := startProcess(t, s.dir, "victoria-metrics", vmBin,
		"-storageDataPath="+s.mkdir(t, "vm-data"),
		"-httpListenAddr="+vmAddr,
		"-promscrape.config="+scrapeConfig,
		"-search.latencyOffset=1s",
		"-retentionPeriod=1d",
	)
	vmalert := startProcess(t, s.dir, "vmalert", vmalertBin,
		"-rule="+rulesFile,
		"-datasource.url="+vmURL,
		"-remoteWrite.url="+vmURL, // the recording rules, read back by the alerts
		"-remoteWrite.flushInterval=500ms",
		"-notifier.url="+notifier.server.URL,
		"-evaluationInterval=1s",
		"-httpListenAddr="+vmalertAddr,
	)
	s.waitReady(t, s.sentinel, s.sentinelURL+"/-/ready")
	s.waitReady(t, vm, vmURL+"/health")
	s.waitReady(t, vmalert, vmalertURL+"/health")

	waitFor(t, 30*time.Second, `VictoriaMetrics to scrape sentinel (up{job="sentinel"} == 1)`, func() bool {
		r := vmQuery(t, s.client, vmURL, `up{job="sentinel"}`)
		return len(r) == 1 && r[0] == "1"
	})

	// One agent keeps beating every second. The other beats until vmalert's
	// recording rules for it are visible in VictoriaMetrics, then stops:
	// VictoriaMetrics makes a new series searchable only seconds after it
	// is written (8-20 s measured on the 2-core box), and an agent that died
	// before its missed count was visible would skip AgentSilent.
	const body = `{"status":"healthy","heartbeat_interval_seconds":1}`
	stopHealthy := s.beatEvery("vm-healthy", body, time.Second)
	defer stopHealthy()
	stopDying := s.beatEvery("vm-dies", body, time.Second)
	if !eventually(45*time.Second, func() bool {
		return len(vmQuery(t, s.client, vmURL, `sentinel:agent_missed_heartbeats{agent_id="vm-dies"}`)) == 1
	}) {
		// The missed count is kept only for the replica the holder rule
		// picks; show what VictoriaMetrics has of both.
		t.Fatalf("vmalert's sentinel:agent_missed_heartbeats of the agent never became visible in VictoriaMetrics; its holder series: %v, its raw last heartbeat: %v",
			vmQuery(t, s.client, vmURL, `sentinel:agent_last_heartbeat_timestamp_seconds:holder{agent_id="vm-dies"}`),
			vmQuery(t, s.client, vmURL, `sentinel_agent_last_heartbeat_timestamp_seconds{agent_id="vm-dies"}`))
	}
	_, err = stopDying()
	require.NoError(t, err)
	stopped := time.Now()

	alertsOf := func(agentID string) map[string]vmAlert {
		var data struct {
			Alerts []vmAlert `json:"alerts"`
		}
		apiGet(t, s.client, vmalertURL+"/api/v1/alerts", &data)
		out := map[string]vmAlert{}
		for _, a := range data.Alerts {
			require.NotEqual(t, "vm-healthy", a.Labels["agent_id"], "an agent that keeps beating raised %s", a.Name)
			if a.Labels["agent_id"] == agentID && a.State == "firing" {
				out[a.Name] = a
			}
		}
		return out
	}
	var silent vmAlert
	waitFor(t, 30*time.Second, "AgentSilent to fire in vmalert", func() bool {
		active := alertsOf("vm-dies")
		require.NotContains(t, active, "AgentZombie", "ZOMBIE before SILENT")
		var ok bool
		silent, ok = active["AgentSilent"]
		return ok
	})
	silentAfter := time.Since(stopped)
	require.Equal(t, map[string]string{
		"alertname": "AgentSilent", "severity": "warning", "state": "SILENT", "tenant": tenant, "agent_id": "vm-dies",
	}, without(silent.Labels, "alertgroup"))
	require.Contains(t, silent.Annotations["description"], "Agent vm-dies of tenant "+tenant+" has missed")
	require.NotContains(t, silent.Annotations["description"], "an unknown time", "the template's query reached VictoriaMetrics")

	waitFor(t, 40*time.Second, "AgentZombie to fire in vmalert", func() bool {
		_, ok := alertsOf("vm-dies")["AgentZombie"]
		return ok
	})
	zombieAfter := time.Since(stopped)
	t.Logf("after the last heartbeat: AgentSilent fired in %s (5 missed beats of 1 s), AgentZombie in %s (15)", silentAfter.Round(time.Second), zombieAfter.Round(time.Second))
	require.GreaterOrEqual(t, silentAfter, 5*time.Second)
	require.GreaterOrEqual(t, zombieAfter, 15*time.Second)
	waitFor(t, 10*time.Second, "AgentSilent to resolve once the agent is a zombie", func() bool {
		_, ok := alertsOf("vm-dies")["AgentSilent"]
		return !ok
	})
	waitFor(t, 10*time.Second, "vmalert to send AgentZombie to its notifier", func() bool {
		return notifier.has("AgentZombie", "vm-dies")
	})
	n, err := stopHealthy()
	require.NoError(t, err)
	require.Greater(t, n, 20)
}

// eventually polls cond until it holds or timeout passes.
func eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(poll)
	}
	return true
}

// without returns m without the keys.
func without(m map[string]string, keys ...string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	for _, k := range keys {
		delete(out, k)
	}
	return out
}

// vmQuery runs an instant query against VictoriaMetrics and returns the
// values of the vector.
func vmQuery(t *testing.T, client *http.Client, vmURL, q string) []string {
	t.Helper()
	var data struct {
		Result []struct {
			Value [2]any `json:"value"`
		} `json:"result"`
	}
	apiGet(t, client, vmURL+"/api/v1/query?query="+url.QueryEscape(q), &data)
	out := make([]string, 0, len(data.Result))
	for _, r := range data.Result {
		out = append(out, fmt.Sprint(r.Value[1]))
	}
	return out
}

// fakeNotifier is the Alertmanager API (v2) vmalert sends its alerts to.
type fakeNotifier struct {
	server *httptest.Server
	mu     sync.Mutex
	got    []map[string]string // labels of every alert received
}

func newFakeNotifier(t *testing.T) *fakeNotifier {
	n := &fakeNotifier{}
	n.server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var alerts []struct {
			Labels map[string]string `json:"labels"`
		}
		if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/api/v2/alerts") || json.NewDecoder(r.Body).Decode(&alerts) != nil {
			t.Errorf("the fake notifier got %s %s", r.Method, r.URL.Path)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		n.mu.Lock()
		defer n.mu.Unlock()
		for _, a := range alerts {
			n.got = append(n.got, a.Labels)
		}
	}))
	t.Cleanup(n.server.Close)
	return n
}

func (n *fakeNotifier) has(alertname, agentID string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, l := range n.got {
		if l["alertname"] == alertname && l["agent_id"] == agentID {
			return true
		}
	}
	return false
}
