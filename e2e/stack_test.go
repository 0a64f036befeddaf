package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/agentsentinel/sentinel/internal/testutil"
)

// Credentials of the test tenant.
const (
	tenant      = "acme"
	apiKey      = "e2e-acme-api-key"
	adminToken  = "e2e-acme-admin-token"
	bridgeToken = "e2e-bridge-token"
	// metricsToken is sentinel's metrics.bearer_token: every scraper sends it.
	metricsToken = "e2e-metrics-token"
)

// Tools the stack needs besides sentinel; scripts/install-test-deps.sh
// installs them. Debian names Alertmanager's binary prometheus-alertmanager.
var (
	prometheusTools   = []string{"prometheus"}
	alertmanagerTools = []string{"prometheus-alertmanager", "alertmanager"}
)

// poll is how often waitFor and friends look again.
const poll = 250 * time.Millisecond

// stack is one running pipeline: sentinel → Prometheus → Alertmanager → hook.
type stack struct {
	dir          string
	sentinelAddr string
	sentinelURL  string
	promURL      string
	amURL        string
	sentinel     *process
	prometheus   *process
	alertmanager *process
	hook         *fakeWebhook
	client       *http.Client
}

// lookTool finds the first of names on PATH, or fails the test: the project
// runs every test, so a missing tool is an error, never a skip.
func lookTool(t *testing.T, names ...string) string {
	t.Helper()
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	t.Fatalf("%s not found on PATH: run `make test-deps` (scripts/install-test-deps.sh) to install the real Prometheus and Alertmanager tools", strings.Join(names, " or "))
	return ""
}

// stackOptions change the stack's sentinel configuration.
type stackOptions struct {
	// TenantHeartbeat is the YAML flow mapping of the tenant's heartbeat
	// section (its own thresholds), none when empty.
	TenantHeartbeat string
}

// startStack starts Alertmanager, sentinel and Prometheus and waits until
// Prometheus scrapes sentinel and the Watchdog alert has crossed the whole
// pipeline to the fake webhook.
func startStack(t *testing.T, opts ...func(*stackOptions)) *stack {
	t.Helper()
	var o stackOptions
	for _, f := range opts {
		f(&o)
	}
	promBin := lookTool(t, prometheusTools...)
	amBin := lookTool(t, alertmanagerTools...)
	promtool := lookTool(t, "promtool")
	amtool := lookTool(t, "amtool")

	rulesFile, err := filepath.Abs(filepath.Join("..", "alerts", "sentinel.rules.yml"))
	require.NoError(t, err)
	require.FileExists(t, rulesFile)

	s := &stack{dir: t.TempDir(), client: &http.Client{Timeout: 10 * time.Second}}
	s.hook = newFakeWebhook(t)
	amAddr, promAddr := testutil.FreeAddr(t), testutil.FreeAddr(t)
	s.sentinelAddr = testutil.FreeAddr(t)
	s.sentinelURL = "http://" + s.sentinelAddr
	s.promURL = "http://" + promAddr
	s.amURL = "http://" + amAddr

	amConfig := s.render(t, "alertmanager.yml", map[string]string{
		"WebhookURL":   s.hook.server.URL + "/hook",
		"InhibitRules": deployedInhibitRules(t),
	})
	promConfig := s.render(t, "prometheus.yml", map[string]string{
		"RulesFile":        rulesFile,
		"AlertmanagerAddr": amAddr,
		"SentinelAddr":     s.sentinelAddr,
		"MetricsToken":     metricsToken,
	})
	sentinelConfig := s.render(t, "sentinel.yml", map[string]string{
		"Tenant": tenant, "APIKey": apiKey, "AdminToken": adminToken, "BridgeToken": bridgeToken,
		"MetricsToken":    metricsToken,
		"TenantHeartbeat": o.TenantHeartbeat,
	})
	// The tools' own checks give a far better message than a process that
	// exits at start.
	s.check(t, amtool, "check-config", amConfig)
	s.check(t, promtool, "check", "config", promConfig)
	s.check(t, sentinelBin, "--config.check", "--config.file="+sentinelConfig)

	s.alertmanager = startProcess(t, s.dir, "alertmanager", amBin,
		"--config.file="+amConfig,
		"--storage.path="+s.mkdir(t, "alertmanager-data"),
		"--web.listen-address="+amAddr,
		"--cluster.listen-address=", // no gossip: a single, isolated instance
	)
	s.sentinel = startProcess(t, s.dir, "sentinel", sentinelBin,
		"--config.file="+sentinelConfig,
		"--storage.path="+s.mkdir(t, "sentinel-data"),
		"--web.listen-address="+s.sentinelAddr,
		"--storage.snapshot-interval=5s",
	)
	s.prometheus = startProcess(t, s.dir, "prometheus", promBin,
		"--config.file="+promConfig,
		"--storage.tsdb.path="+s.mkdir(t, "prometheus-data"),
		"--web.listen-address="+promAddr,
		"--web.enable-lifecycle",
		// Resend firing alerts every evaluation: Alertmanager resolves an
		// alert that is not resent within 4 × max(resend delay, evaluation
		// interval), and the default 1m resend delay would be far too slow.
		"--rules.alert.resend-delay=1s",
	)

	s.waitReady(t, s.alertmanager, s.amURL+"/-/ready")
	s.waitReady(t, s.sentinel, s.sentinelURL+"/-/ready")
	s.waitReady(t, s.prometheus, s.promURL+"/-/ready")

	waitFor(t, 20*time.Second, "Prometheus to scrape sentinel (up{job=\"sentinel\"} == 1)", func() bool {
		r := s.query(t, `up{job="sentinel"}`)
		return len(r) == 1 && r[0].Value == 1
	})
	// Prometheus 2.42 hands discovered targets to the scrape manager at most
	// every 5 s, so the first scrape takes that long.
	// Until the first scrape absent(up) holds, so SentinelDown is pending at
	// start; once scraped only Watchdog may be active.
	waitFor(t, 20*time.Second, "only Watchdog to be active in Prometheus", func() bool {
		alerts := s.alerts(t)
		return len(alerts) == 1 && alerts[0].Labels["alertname"] == "Watchdog" && alerts[0].State == "firing"
	})
	waitFor(t, 20*time.Second, "the Watchdog alert to reach the fake webhook through Alertmanager", func() bool {
		return s.hook.has("Watchdog", "", "firing")
	})
	return s
}

func (s *stack) mkdir(t *testing.T, name string) string {
	t.Helper()
	dir := filepath.Join(s.dir, name)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	return dir
}

// render fills testdata/<name>.tmpl into the stack's directory.
func (s *stack) render(t *testing.T, name string, data map[string]string) string {
	t.Helper()
	tmpl, err := template.ParseFiles(filepath.Join("testdata", name+".tmpl"))
	require.NoError(t, err)
	var buf bytes.Buffer
	require.NoError(t, tmpl.Execute(&buf, data))
	path := filepath.Join(s.dir, name)
	require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o600))
	return path
}

func (s *stack) check(t *testing.T, bin string, args ...string) {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	require.NoError(t, err, "%s %s:\n%s", filepath.Base(bin), strings.Join(args, " "), out)
}

// deployedInhibitRules returns the inhibit_rules of
// deploy/alertmanager/alertmanager.yml as JSON, after checking that the
// ZOMBIE-inhibits-SILENT rule is among them.
func deployedInhibitRules(t *testing.T) string {
	t.Helper()
	content, err := os.ReadFile(filepath.Join("..", "deploy", "alertmanager", "alertmanager.yml"))
	require.NoError(t, err)
	var cfg struct {
		InhibitRules []map[string]any `yaml:"inhibit_rules"`
	}
	require.NoError(t, yaml.Unmarshal(content, &cfg))
	found := false
	for _, r := range cfg.InhibitRules {
		if fmt.Sprint(r["source_matchers"]) == `[alertname="AgentZombie"]` &&
			fmt.Sprint(r["target_matchers"]) == `[alertname="AgentSilent"]` &&
			fmt.Sprint(r["equal"]) == "[tenant agent_id]" {
			found = true
		}
	}
	require.True(t, found, "deploy/alertmanager/alertmanager.yml has no inhibit rule AgentZombie → AgentSilent on [tenant, agent_id]: %v", cfg.InhibitRules)
	out, err := json.Marshal(cfg.InhibitRules)
	require.NoError(t, err)
	return string(out)
}

func (s *stack) waitReady(t *testing.T, p *process, url string) {
	t.Helper()
	waitFor(t, 30*time.Second, p.name+" to be ready at "+url, func() bool {
		if p.exited() {
			t.Fatalf("%s exited at start: %v\n%s", p.name, p.err, p.tail(40))
		}
		resp, err := s.client.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// process is one of the stack's programs.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error // of Wait, once done is closed
}

// startProcess runs bin with its output in dir/<name>.log and stops it at the
// end of the test (SIGTERM, SIGKILL after 10 s), printing the end of its log
// when the test failed.
func startProcess(t *testing.T, dir, name, bin string, args ...string) *process {
	t.Helper()
	return startCommand(t, dir, name, exec.Command(bin, args...))
}

// startCommand is startProcess for a command the caller prepared (its
// environment, say).
func startCommand(t *testing.T, dir, name string, cmd *exec.Cmd) *process {
	t.Helper()
	p := &process{name: name, log: filepath.Join(dir, name+".log"), done: make(chan struct{}), cmd: cmd}
	f, err := os.Create(p.log)
	require.NoError(t, err)
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(10 * time.Second)
		if t.Failed() {
			t.Logf("--- end of the %s log (%s):\n%s", name, p.log, p.tail(60))
		}
	})
	return p
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits up to timeout for the exit, then kills. It
// reports whether the process exited on its own.
func (p *process) stop(timeout time.Duration) bool {
	if p.exited() {
		return true
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return true
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		return false
	}
}

func (p *process) output() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

func (p *process) tail(lines int) string {
	all := strings.Split(strings.TrimRight(p.output(), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// waitFor polls cond every 250 ms until it holds, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// --- Prometheus' HTTP API

type promAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	State       string            `json:"state"`
	ActiveAt    time.Time         `json:"activeAt"`
	Value       string            `json:"value"`
}

type promSample struct {
	Metric map[string]string
	Value  float64
}

type promRule struct {
	Name      string  `json:"name"`
	Type      string  `json:"type"`
	Health    string  `json:"health"`
	LastError string  `json:"lastError"`
	Duration  float64 `json:"duration"` // the alert's for:, in seconds
}

type promRuleGroup struct {
	Name  string     `json:"name"`
	File  string     `json:"file"`
	Rules []promRule `json:"rules"`
}

// promGet calls a Prometheus API endpoint and decodes its data.
func (s *stack) promGet(t *testing.T, path string, data any) {
	t.Helper()
	apiGet(t, s.client, s.promURL+path, data)
}

// apiGet calls an endpoint of the Prometheus HTTP API, or of an API that
// answers in its form (VictoriaMetrics, vmalert), and decodes its data: the
// answer must be 200 with status "success".
func apiGet(t *testing.T, client *http.Client, u string, data any) {
	t.Helper()
	resp, err := client.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "GET %s: %s", u, body)
	var env struct {
		Status string          `json:"status"`
		Data   json.RawMessage `json:"data"`
	}
	require.NoError(t, json.Unmarshal(body, &env), "GET %s: %s", u, body)
	require.Equal(t, "success", env.Status, "GET %s: %s", u, body)
	require.NoError(t, json.Unmarshal(env.Data, data), "GET %s: %s", u, body)
}

// alerts returns the pending and firing alerts of Prometheus.
func (s *stack) alerts(t *testing.T) []promAlert {
	t.Helper()
	var data struct {
		Alerts []promAlert `json:"alerts"`
	}
	s.promGet(t, "/api/v1/alerts", &data)
	return data.Alerts
}

// agentAlerts returns the active alerts of one agent.
func (s *stack) agentAlerts(t *testing.T, agentID string) []promAlert {
	t.Helper()
	var out []promAlert
	for _, a := range s.alerts(t) {
		if a.Labels["agent_id"] == agentID {
			out = append(out, a)
		}
	}
	return out
}

// alert returns the active alert named name (of agentID, when not empty).
func (s *stack) alert(t *testing.T, name, agentID string) (promAlert, bool) {
	t.Helper()
	for _, a := range s.alerts(t) {
		if a.Labels["alertname"] == name && (agentID == "" || a.Labels["agent_id"] == agentID) {
			return a, true
		}
	}
	return promAlert{}, false
}

// query runs an instant query returning a vector.
func (s *stack) query(t *testing.T, q string) []promSample {
	t.Helper()
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	}
	s.promGet(t, "/api/v1/query?query="+url.QueryEscape(q), &data)
	require.Equal(t, "vector", data.ResultType, q)
	out := make([]promSample, 0, len(data.Result))
	for _, r := range data.Result {
		str, ok := r.Value[1].(string)
		require.True(t, ok, "%s: value %v", q, r.Value)
		v, err := strconv.ParseFloat(str, 64)
		require.NoError(t, err, q)
		out = append(out, promSample{Metric: r.Metric, Value: v})
	}
	return out
}

// missed returns sentinel:agent_missed_heartbeats of an agent, if Prometheus has it.
func (s *stack) missed(t *testing.T, agentID string) (float64, bool) {
	t.Helper()
	r := s.query(t, fmt.Sprintf(`sentinel:agent_missed_heartbeats{tenant=%q,agent_id=%q}`, tenant, agentID))
	if len(r) == 0 {
		return 0, false
	}
	require.Len(t, r, 1)
	return r[0].Value, true
}

func (s *stack) rules(t *testing.T) []promRuleGroup {
	t.Helper()
	var data struct {
		Groups []promRuleGroup `json:"groups"`
	}
	s.promGet(t, "/api/v1/rules", &data)
	return data.Groups
}

// --- sentinel's APIs

// beatAnswer is sentinel's Beacon heartbeat answer (SPEC 2.1).
type beatAnswer struct {
	InstallationID           string    `json:"installation_id"`
	LeaseRenewed             *bool     `json:"lease_renewed"`
	State                    string    `json:"state"`
	LeaseExpiresAt           time.Time `json:"lease_expires_at"`
	HeartbeatIntervalSeconds float64   `json:"heartbeat_interval_seconds"`
	Registered               bool      `json:"registered"`
	Revoked                  bool      `json:"revoked"`
	Reason                   string    `json:"reason"`
	ShutdownTimeoutMs        int64     `json:"shutdown_timeout_ms"`

	raw string
}

// beat sends one Beacon heartbeat with the tenant API key; body is the JSON request.
func (s *stack) beat(agentID, body string) (beatAnswer, error) {
	var a beatAnswer
	status, raw, err := s.post(s.sentinelURL+"/api/v1/installations/"+agentID+"/heartbeat", apiKey, body)
	if err != nil {
		return a, err
	}
	a.raw = raw
	if status != http.StatusOK {
		return a, fmt.Errorf("heartbeat of %s: status %d: %s", agentID, status, raw)
	}
	if err := json.Unmarshal([]byte(raw), &a); err != nil {
		return a, fmt.Errorf("heartbeat of %s: %w: %s", agentID, err, raw)
	}
	return a, nil
}

// mustBeat is beat that fails the test on an error.
func (s *stack) mustBeat(t *testing.T, agentID, body string) beatAnswer {
	t.Helper()
	a, err := s.beat(agentID, body)
	require.NoError(t, err)
	require.Equal(t, agentID, a.InstallationID, a.raw)
	return a
}

func (s *stack) post(u, token, body string) (int, string, error) {
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw), err
}

// beatEvery beats agentID with body every interval until the returned stop
// is called; stop returns the number of accepted beats and the first error.
func (s *stack) beatEvery(agentID, body string, interval time.Duration) (stop func() (int, error)) {
	done := make(chan struct{})
	var (
		wg       sync.WaitGroup
		n        int
		firstErr error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			a, err := s.beat(agentID, body)
			if err == nil && a.State != "ACTIVE" {
				err = fmt.Errorf("heartbeat of %s: state %q, want ACTIVE: %s", agentID, a.State, a.raw)
			}
			if err != nil && firstErr == nil {
				firstErr = err
			}
			if err == nil {
				n++
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	var once sync.Once
	return func() (int, error) {
		once.Do(func() { close(done); wg.Wait() })
		return n, firstErr
	}
}

// --- the fake customer webhook

// hookAlert is one alert of an Alertmanager webhook notification (version 4).
type hookAlert struct {
	Status      string            `json:"status"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	StartsAt    time.Time         `json:"startsAt"`
	EndsAt      time.Time         `json:"endsAt"`
}

type hookNotification struct {
	Version  string      `json:"version"`
	GroupKey string      `json:"groupKey"`
	Status   string      `json:"status"`
	Receiver string      `json:"receiver"`
	Alerts   []hookAlert `json:"alerts"`

	received time.Time
}

// fakeWebhook is the customer endpoint Alertmanager notifies.
type fakeWebhook struct {
	server *httptest.Server
	mu     sync.Mutex
	got    []hookNotification
	bad    []string
}

func newFakeWebhook(t *testing.T) *fakeWebhook {
	h := &fakeWebhook{}
	h.server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var n hookNotification
		h.mu.Lock()
		defer h.mu.Unlock()
		if r.Method != http.MethodPost || r.URL.Path != "/hook" || json.Unmarshal(body, &n) != nil || n.Version != "4" {
			h.bad = append(h.bad, fmt.Sprintf("%s %s: %s", r.Method, r.URL.Path, body))
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		n.received = time.Now()
		h.got = append(h.got, n)
	}))
	t.Cleanup(func() {
		h.server.Close()
		h.mu.Lock()
		defer h.mu.Unlock()
		if len(h.bad) > 0 {
			t.Errorf("the fake webhook got malformed requests: %q", h.bad)
		}
	})
	return h
}

// alerts returns every received alert named name (of agentID, when not
// empty), in order of arrival.
func (h *fakeWebhook) alerts(name, agentID string) []hookAlert {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []hookAlert
	for _, n := range h.got {
		for _, a := range n.Alerts {
			if (name == "" || a.Labels["alertname"] == name) && (agentID == "" || a.Labels["agent_id"] == agentID) {
				out = append(out, a)
			}
		}
	}
	return out
}

// has reports whether an alert named name (of agentID, when not empty) was
// received with status.
func (h *fakeWebhook) has(name, agentID, status string) bool {
	for _, a := range h.alerts(name, agentID) {
		if a.Status == status {
			return true
		}
	}
	return false
}
