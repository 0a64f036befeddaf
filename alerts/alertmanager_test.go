package alerts

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/internal/testutil"
)

// webhookCall is one notification Alertmanager sent to the fake receivers.
type webhookCall struct {
	path          string
	authorization string
	receiver      string
	alerts        []map[string]string // labels of each alert
}

// fakeReceivers stands in for the sentinel bridge, Slack and PagerDuty.
type fakeReceivers struct {
	mu    sync.Mutex
	calls []webhookCall
	added chan struct{}
}

func (f *fakeReceivers) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var msg struct {
		Receiver string `json:"receiver"`
		Alerts   []struct {
			Labels map[string]string `json:"labels"`
		} `json:"alerts"`
	}
	_ = json.NewDecoder(r.Body).Decode(&msg) // Slack and PagerDuty bodies differ; only the path matters for them.
	call := webhookCall{path: r.URL.Path, authorization: r.Header.Get("Authorization"), receiver: msg.Receiver}
	for _, a := range msg.Alerts {
		call.alerts = append(call.alerts, a.Labels)
	}
	f.mu.Lock()
	f.calls = append(f.calls, call)
	f.mu.Unlock()
	select {
	case f.added <- struct{}{}:
	default:
	}
	w.WriteHeader(http.StatusOK)
}

// waitFor blocks until a call satisfies match, or fails the test.
func (f *fakeReceivers) waitFor(t *testing.T, what string, match func(webhookCall) bool) webhookCall {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		f.mu.Lock()
		for _, c := range f.calls {
			if match(c) {
				f.mu.Unlock()
				return c
			}
		}
		f.mu.Unlock()
		select {
		case <-f.added:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func (f *fakeReceivers) all() []webhookCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]webhookCall(nil), f.calls...)
}

// bridgeAlert matches a bridge notification carrying the alert with these labels.
func bridgeAlert(alertname, agentID string) func(webhookCall) bool {
	return func(c webhookCall) bool {
		if c.path != "/api/v1/alertmanager" {
			return false
		}
		for _, a := range c.alerts {
			if a["alertname"] == alertname && a["agent_id"] == agentID {
				return true
			}
		}
		return false
	}
}

// TestAlertmanagerDelivers runs the real Alertmanager with the example
// config, its secret files and receiver URLs pointed at a local fake, and
// checks what amtool cannot: the bridge gets the bearer token from
// credentials_file, the Watchdog and agent alerts reach it at once, an
// AgentZombie inhibits the same agent's AgentSilent, and a SentinelDown
// inhibits no agent alert (it names one replica; the others still watch).
func TestAlertmanagerDelivers(t *testing.T) {
	bin := requireAlertmanager(t)

	fake := &fakeReceivers{added: make(chan struct{}, 1)}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)

	cfg, err := os.ReadFile(alertmanagerConfig)
	require.NoError(t, err)
	dir := t.TempDir()
	secrets := map[string]string{
		"sentinel-bridge-token": "bridge-secret",
		"pagerduty-routing-key": "pd-routing-key",
		"slack-webhook-url":     srv.URL + "/slack",
	}
	for name, value := range secrets {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(value), 0o600))
	}
	cfgText := string(cfg)
	for _, r := range []struct{ old, new string }{
		{"http://localhost:9464/api/v1/alertmanager", srv.URL + "/api/v1/alertmanager"},
		{"/etc/alertmanager/secrets/", dir + "/"},
		{"global:\n", "global:\n  pagerduty_url: " + srv.URL + "/pagerduty\n"},
	} {
		require.Contains(t, cfgText, r.old, "the example config changed: update this test")
		cfgText = strings.ReplaceAll(cfgText, r.old, r.new)
	}
	cfgPath := filepath.Join(dir, "alertmanager.yml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(cfgText), 0o600))

	addr := testutil.FreeAddr(t)
	var logs bytes.Buffer
	cmd := exec.Command(bin,
		"--config.file="+cfgPath,
		"--storage.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--cluster.listen-address=", // no gossip: a single, isolated instance
	)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("alertmanager output:\n%s", logs.String())
		}
	})
	base := "http://" + addr
	require.Eventually(t, func() bool {
		resp, err := http.Get(base + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 20*time.Second, 50*time.Millisecond, "alertmanager did not become ready")

	zombie := map[string]string{"alertname": "AgentZombie", "severity": "critical", "state": "ZOMBIE", "tenant": "acme", "agent_id": "a1"}
	// Alerts are taken in order: once the zombie inhibits, the inhibitor has
	// seen SentinelDown too.
	postAlerts(t, base,
		map[string]string{"alertname": "Watchdog", "severity": "none"},
		map[string]string{"alertname": "SentinelDown", "severity": "critical", "job": "sentinel", "instance": "sentinel-1:9464"},
		zombie,
	)
	watchdog := fake.waitFor(t, "Watchdog at the bridge", bridgeAlert("Watchdog", ""))
	require.Equal(t, "Bearer bridge-secret", watchdog.authorization)
	require.Equal(t, "sentinel-bridge", watchdog.receiver)
	fake.waitFor(t, "AgentZombie at the bridge", bridgeAlert("AgentZombie", "a1"))

	// Posted after the zombie is known, so the inhibition is certain to apply.
	postAlerts(t, base,
		map[string]string{"alertname": "AgentSilent", "severity": "warning", "state": "SILENT", "tenant": "acme", "agent_id": "a1"},
		map[string]string{"alertname": "AgentSilent", "severity": "warning", "state": "SILENT", "tenant": "acme", "agent_id": "a2"},
	)
	fake.waitFor(t, "AgentSilent of a2 at the bridge", bridgeAlert("AgentSilent", "a2"))

	status := alertStates(t, base)
	require.Equal(t, "suppressed", status["AgentSilent/a1"], "AgentZombie must inhibit the same agent's AgentSilent")
	require.Equal(t, "active", status["AgentSilent/a2"])
	require.Equal(t, "active", status["AgentZombie/a1"])
	require.Equal(t, "active", status["SentinelDown/"], "SentinelDown must be known to the inhibitor")
	for _, c := range fake.all() {
		require.False(t, bridgeAlert("AgentSilent", "a1")(c), "inhibited AgentSilent reached the bridge")
	}
}

// requireAlertmanager finds the Alertmanager binary under its Debian or its
// upstream name.
func requireAlertmanager(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"prometheus-alertmanager", "alertmanager"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	return requireTool(t, "prometheus-alertmanager") // fails with the hint
}

func postAlerts(t *testing.T, base string, labelSets ...map[string]string) {
	t.Helper()
	type alert struct {
		Labels   map[string]string `json:"labels"`
		StartsAt time.Time         `json:"startsAt"`
		EndsAt   time.Time         `json:"endsAt"`
	}
	now := time.Now()
	var body []alert
	for _, ls := range labelSets {
		body = append(body, alert{Labels: ls, StartsAt: now, EndsAt: now.Add(time.Hour)})
	}
	b, err := json.Marshal(body)
	require.NoError(t, err)
	resp, err := http.Post(base+"/api/v2/alerts", "application/json", bytes.NewReader(b))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

// alertStates maps "alertname/agent_id" to the alert's state in
// Alertmanager's API: active, suppressed (silenced or inhibited).
func alertStates(t *testing.T, base string) map[string]string {
	t.Helper()
	resp, err := http.Get(base + "/api/v2/alerts")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var got []struct {
		Labels map[string]string `json:"labels"`
		Status struct {
			State string `json:"state"`
		} `json:"status"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))
	states := map[string]string{}
	for _, a := range got {
		states[fmt.Sprintf("%s/%s", a.Labels["alertname"], a.Labels["agent_id"])] = a.Status.State
	}
	return states
}
