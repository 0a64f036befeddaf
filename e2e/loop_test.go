package e2e

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/agentsentinel/sentinel/internal/testutil"
)

// The loop's own settings: the customer's webhook secret (a Standard
// Webhooks whsec_ secret, so both signature formats use different keys),
// and a watchdog timeout short enough for the test.
var loopWebhookSecret = "whsec_" + base64.StdEncoding.EncodeToString([]byte("e2e-loop-webhook-secret-0123456789"))

const (
	loopWatchdogTimeout = 8 * time.Second
	// detectionSlack is how far past the ideal (5 and 15 missed beats of
	// 1 s) a detection may arrive: up to a scrape and an evaluation
	// interval (1 s each), Alertmanager, the bridge and one delivery, on a
	// loaded machine with the race detector.
	detectionSlack = 5 * time.Second
)

// loopStack is the whole loop: sentinel with its bridge and the tenant's
// webhook, Prometheus, Alertmanager routed to the bridge, and the
// customer's endpoint.
type loopStack struct {
	*stack
	// top is the test that owns the processes: one restarted in a subtest
	// must outlive it.
	top          *testing.T
	customer     *customer
	sentinelArgs []string
	sentinelRuns int
	amBin        string
	amArgs       []string
	amRuns       int
}

// newLoopStack finds the tools of a loop and returns an empty one, with the
// customer's endpoint running, Prometheus' binary and the rules' file.
func newLoopStack(t *testing.T) (s *loopStack, promBin, rulesFile string) {
	t.Helper()
	promBin = lookTool(t, prometheusTools...)
	amBin := lookTool(t, alertmanagerTools...)
	rulesFile, err := filepath.Abs(filepath.Join("..", "alerts", "sentinel.rules.yml"))
	require.NoError(t, err)
	s = &loopStack{
		stack:    &stack{dir: t.TempDir(), client: &http.Client{Timeout: 10 * time.Second}},
		customer: newCustomer(t, loopWebhookSecret),
		amBin:    amBin,
		top:      t,
	}
	return s, promBin, rulesFile
}

// startLoopStack starts the loop and waits until the Watchdog has crossed
// it: Prometheus → Alertmanager → the bridge.
func startLoopStack(t *testing.T) *loopStack {
	t.Helper()
	s, promBin, rulesFile := newLoopStack(t)
	amAddr, promAddr := testutil.FreeAddr(t), testutil.FreeAddr(t)
	s.sentinelAddr = testutil.FreeAddr(t)
	s.sentinelURL = "http://" + s.sentinelAddr
	s.promURL = "http://" + promAddr
	s.amURL = "http://" + amAddr

	tokenFile := filepath.Join(s.dir, "bridge-token")
	require.NoError(t, os.WriteFile(tokenFile, []byte(bridgeToken+"\n"), 0o600))
	sentinelConfig := s.render(t, "loop-sentinel.yml", map[string]string{
		"Tenant": tenant, "APIKey": apiKey, "AdminToken": adminToken,
		"WebhookURL": s.customer.server.URL + "/hook", "WebhookSecret": loopWebhookSecret,
		"BridgeTokenFile": tokenFile, "WatchdogTimeout": loopWatchdogTimeout.String(),
	})
	amConfig := loopAlertmanagerConfig(t, s.dir, "alertmanager.yml",
		[]string{s.sentinelURL + "/api/v1/alertmanager"}, tokenFile, s.customer.server.URL+"/alertmanager")
	promConfig := s.render(t, "prometheus.yml", map[string]string{
		"RulesFile": rulesFile, "AlertmanagerAddr": amAddr, "SentinelAddr": s.sentinelAddr,
	})
	s.check(t, lookTool(t, "amtool"), "check-config", amConfig)
	s.check(t, sentinelBin, "--config.check", "--config.file="+sentinelConfig)

	s.amArgs = []string{
		"--config.file=" + amConfig,
		"--storage.path=" + s.mkdir(t, "alertmanager-data"),
		"--web.listen-address=" + amAddr,
		"--cluster.listen-address=",
	}
	s.startAlertmanager(t)
	s.sentinelArgs = []string{
		"--config.file=" + sentinelConfig,
		"--storage.path=" + s.mkdir(t, "sentinel-data"),
		"--web.listen-address=" + s.sentinelAddr,
		// A crash loses at most a second of last heartbeats: a healthy
		// agent must not look SILENT to the restarted sentinel.
		"--storage.snapshot-interval=1s",
	}
	s.startSentinel(t)
	s.prometheus = startProcess(t, s.dir, "prometheus", promBin,
		"--config.file="+promConfig,
		"--storage.tsdb.path="+s.mkdir(t, "prometheus-data"),
		"--web.listen-address="+promAddr,
		"--rules.alert.resend-delay=1s",
	)
	s.waitReady(t, s.prometheus, s.promURL+"/-/ready")
	waitFor(t, 30*time.Second, `Prometheus to scrape sentinel (up{job="sentinel"} == 1)`, func() bool {
		r := s.query(t, `up{job="sentinel"}`)
		return len(r) == 1 && r[0].Value == 1
	})
	waitFor(t, 30*time.Second, "the Watchdog to reach the bridge", func() bool {
		r := s.sentinelMetric(t, "sentinel_pipeline_watchdog_last_seen_timestamp_seconds")
		return r > 0
	})
	return s
}

func (s *loopStack) startSentinel(t *testing.T) {
	t.Helper()
	s.sentinelRuns++
	s.sentinel = startProcess(s.top, s.dir, fmt.Sprintf("sentinel-%d", s.sentinelRuns), sentinelBin, s.sentinelArgs...)
	s.waitReady(t, s.sentinel, s.sentinelURL+"/-/ready")
}

func (s *loopStack) startAlertmanager(t *testing.T) {
	t.Helper()
	s.amRuns++
	s.alertmanager = startProcess(s.top, s.dir, fmt.Sprintf("alertmanager-%d", s.amRuns), s.amBin, s.amArgs...)
	s.waitReady(t, s.alertmanager, s.amURL+"/-/ready")
}

// sentinelMetric reads one unlabelled sample from sentinel's /metrics.
func (s *loopStack) sentinelMetric(t *testing.T, name string) float64 {
	t.Helper()
	resp, err := s.client.Get(s.sentinelURL + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			require.NoError(t, err, line)
			return f
		}
	}
	return 0
}

// fired reports whether Prometheus has had the alert firing for the agent
// within the last minute. AgentZombie fires only briefly here: the
// revocation it causes resolves it at the next scrape, faster than polling
// the active alerts would reliably see.
func (s *loopStack) fired(t *testing.T, alertname, agentID string) bool {
	t.Helper()
	return len(s.query(t, fmt.Sprintf(`max_over_time(ALERTS{alertname=%q,agent_id=%q,alertstate="firing"}[1m])`, alertname, agentID))) > 0
}

// installationState asks sentinel's admin API for an agent's state.
func (s *loopStack) installationState(t *testing.T, id string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.sentinelURL+"/api/v1/installations/"+id, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := s.client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return ""
	}
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "GET installation %s: %s", id, body)
	var a struct {
		State string `json:"state"`
	}
	require.NoError(t, json.Unmarshal(body, &a), string(body))
	return a.State
}

// deliveries lists the tenant's outbox through sentinel's deliveries API:
// event id → status.
func (s *loopStack) deliveries(t *testing.T) map[string]string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.sentinelURL+"/api/v1/deliveries?limit=100", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := s.client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "GET /api/v1/deliveries: %s", body)
	var page struct {
		Deliveries []struct {
			EventID string `json:"event_id"`
			Status  string `json:"status"`
		} `json:"deliveries"`
		NextCursor *string `json:"next_cursor"`
	}
	require.NoError(t, json.Unmarshal(body, &page), string(body))
	require.Nil(t, page.NextCursor, "more than a page of deliveries")
	out := map[string]string{}
	for _, d := range page.Deliveries {
		out[d.EventID] = d.Status
	}
	return out
}

// loopAlertmanagerConfig writes deploy/alertmanager/alertmanager.local.yml,
// the shipped laptop configuration, with the test's addresses: the bridge
// at bridgeURLs (one webhook_config each) with the token from tokenFile, the
// local receiver at localURL, and the Watchdog repeated every 2 s for the
// test's short bridge.watchdog.timeout.
func loopAlertmanagerConfig(t *testing.T, dir, name string, bridgeURLs []string, tokenFile, localURL string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "deploy", "alertmanager", "alertmanager.local.yml"))
	require.NoError(t, err)
	var cfg map[string]any
	require.NoError(t, yaml.Unmarshal(raw, &cfg))

	var bridge, local bool
	for _, r := range cfg["receivers"].([]any) {
		r := r.(map[string]any)
		hooks := r["webhook_configs"].([]any)
		require.Len(t, hooks, 1, "receiver %v", r["name"])
		hook := hooks[0].(map[string]any)
		switch r["name"] {
		case "sentinel-bridge":
			bridge = true
			auth := hook["http_config"].(map[string]any)["authorization"].(map[string]any)
			require.Equal(t, "Bearer", auth["type"])
			delete(auth, "credentials")
			auth["credentials_file"] = tokenFile
			var out []any
			for _, u := range bridgeURLs {
				h := map[string]any{}
				for k, v := range hook {
					h[k] = v
				}
				h["url"] = u
				out = append(out, h)
			}
			r["webhook_configs"] = out
		case "local":
			local = true
			hook["url"] = localURL
		}
	}
	require.True(t, bridge && local, "alertmanager.local.yml has the sentinel-bridge and local receivers")

	watchdog := false
	for _, r := range cfg["route"].(map[string]any)["routes"].([]any) {
		r := r.(map[string]any)
		if fmt.Sprint(r["matchers"]) == `[alertname="Watchdog"]` {
			watchdog = true
			r["group_interval"], r["repeat_interval"] = "1s", "2s"
		}
	}
	require.True(t, watchdog, "alertmanager.local.yml routes the Watchdog")
	out, err := yaml.Marshal(cfg)
	require.NoError(t, err)
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, out, 0o600))
	return path
}

// --- the customer's endpoint

// event is one delivery the customer accepted.
type event struct {
	Event           string    `json:"event"`
	EventID         string    `json:"eventId"`
	TenantID        string    `json:"tenantId"`
	Sequence        uint64    `json:"sequence"`
	AgentID         string    `json:"agentId"`
	PreviousState   string    `json:"previousState"`
	NewState        string    `json:"newState"`
	MissedBeats     int64     `json:"missedBeats"`
	LastHeartbeatAt time.Time `json:"lastHeartbeatAt"`
	OutageSeconds   *int64    `json:"outageSeconds"`
	Alert           *struct {
		Name string `json:"name"`
	} `json:"alert"`
	RevokedAt time.Time `json:"revokedAt"`
	Source    string    `json:"source"`
	Reason    string    `json:"reason"`

	received time.Time
}

func (e event) String() string {
	return e.name() + fmt.Sprintf(" #%d", e.Sequence)
}

// name says what happened, without the sequence.
func (e event) name() string {
	switch e.Event {
	case "heartbeat.state_change":
		return fmt.Sprintf("%s %s→%s", e.AgentID, e.PreviousState, e.NewState)
	case "agent.revoked":
		return fmt.Sprintf("%s revoked by %s", e.AgentID, e.Source)
	}
	return e.Event
}

// customer is the tenant's webhook endpoint. It checks both signatures of
// every delivery with its own HMAC code (not sentinel's webhook package, so
// that a bug shared by signer and verifier cannot hide), refuses what does
// not verify, and keeps every accepted delivery.
type customer struct {
	server *httptest.Server
	secret string // X-ABS-Signature: the secret as written
	key    []byte // Standard Webhooks: the whsec_ secret's decoded key

	mu        sync.Mutex
	got       []event
	bad       []string
	amNotices int // notifications of Alertmanager's local receiver
}

func newCustomer(t *testing.T, secret string) *customer {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	require.NoError(t, err)
	c := &customer{secret: secret, key: key}
	c.server = httptest.NewServer(http.HandlerFunc(c.serve))
	t.Cleanup(func() {
		c.server.Close()
		c.mu.Lock()
		defer c.mu.Unlock()
		if len(c.bad) > 0 {
			t.Errorf("the customer refused deliveries: %q", c.bad)
		}
		if t.Failed() {
			var lines []string
			for _, e := range c.got {
				lines = append(lines, e.received.Format("15:04:05.000")+" "+e.String())
			}
			t.Logf("the customer received:\n%s", strings.Join(lines, "\n"))
		}
	})
	return c
}

func (c *customer) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if r.URL.Path == "/alertmanager" {
		c.mu.Lock()
		c.amNotices++
		c.mu.Unlock()
		return
	}
	e, err := c.verify(r, body)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.bad = append(c.bad, fmt.Sprintf("%s %s: %v: %s", r.Method, r.URL.Path, err, body))
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	e.received = time.Now()
	c.got = append(c.got, e)
	w.WriteHeader(http.StatusNoContent)
}

func hmacSHA256(key []byte, parts ...string) []byte {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write([]byte(p))
	}
	return m.Sum(nil)
}

// verify checks a delivery as a customer following the documentation would.
func (c *customer) verify(r *http.Request, body []byte) (event, error) {
	var e event
	if r.Method != http.MethodPost || r.URL.Path != "/hook" {
		return e, errors.New("not a POST to /hook")
	}
	now := time.Now()
	fresh := func(ts string) error {
		sec, err := strconv.ParseInt(ts, 10, 64)
		if err != nil {
			return fmt.Errorf("timestamp %q", ts)
		}
		if d := now.Sub(time.Unix(sec, 0)); d > 5*time.Minute || d < -5*time.Minute {
			return fmt.Errorf("timestamp %q is %s away", ts, d)
		}
		return nil
	}

	// X-ABS-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]
	var ts string
	var v1s []string
	for _, part := range strings.Split(r.Header.Get("X-ABS-Signature"), ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			v1s = append(v1s, v)
		}
	}
	if err := fresh(ts); err != nil {
		return e, fmt.Errorf("X-ABS-Signature: %w", err)
	}
	want := hex.EncodeToString(hmacSHA256([]byte(c.secret), ts, ".", string(body)))
	if !anyEqual(want, v1s) {
		return e, fmt.Errorf("X-ABS-Signature %q does not match", r.Header.Get("X-ABS-Signature"))
	}

	// Standard Webhooks: v1,<base64>[ v1,<base64>…] over id.timestamp.body.
	id, wts := r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp")
	if err := fresh(wts); err != nil {
		return e, fmt.Errorf("webhook-timestamp: %w", err)
	}
	var sigs []string
	for _, s := range strings.Fields(r.Header.Get("webhook-signature")) {
		if v, ok := strings.CutPrefix(s, "v1,"); ok {
			sigs = append(sigs, v)
		}
	}
	want = base64.StdEncoding.EncodeToString(hmacSHA256(c.key, id, ".", wts, ".", string(body)))
	if !anyEqual(want, sigs) {
		return e, fmt.Errorf("webhook-signature %q does not match", r.Header.Get("webhook-signature"))
	}

	if err := json.Unmarshal(body, &e); err != nil {
		return e, fmt.Errorf("body: %w", err)
	}
	if e.EventID == "" || e.EventID != id || e.EventID != r.Header.Get("X-ABS-Delivery") {
		return e, fmt.Errorf("eventId %q, webhook-id %q, X-ABS-Delivery %q differ", e.EventID, id, r.Header.Get("X-ABS-Delivery"))
	}
	if e.Event == "" || e.Event != r.Header.Get("X-ABS-Event") {
		return e, fmt.Errorf("event %q, X-ABS-Event %q differ", e.Event, r.Header.Get("X-ABS-Event"))
	}
	if e.TenantID != tenant {
		return e, fmt.Errorf("tenantId %q", e.TenantID)
	}
	return e, nil
}

func anyEqual(want string, got []string) bool {
	ok := false
	for _, g := range got {
		ok = hmac.Equal([]byte(want), []byte(g)) || ok
	}
	return ok
}

// events returns the distinct events (by eventId, first arrival) that
// match, in order of arrival.
func (c *customer) events(match func(event) bool) []event {
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := map[string]bool{}
	var out []event
	for _, e := range c.got {
		if !seen[e.EventID] && match(e) {
			out = append(out, e)
		}
		seen[e.EventID] = true
	}
	return out
}

// redeliveries counts deliveries of an eventId already delivered: allowed
// (delivery is at least once), but worth knowing.
func (c *customer) redeliveries() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := map[string]bool{}
	n := 0
	for _, e := range c.got {
		if seen[e.EventID] {
			n++
		}
		seen[e.EventID] = true
	}
	return n
}

// wait returns the first event that matches, waiting up to timeout.
func (c *customer) wait(t *testing.T, timeout time.Duration, what string, match func(event) bool) event {
	t.Helper()
	var found event
	waitFor(t, timeout, what, func() bool {
		es := c.events(match)
		if len(es) > 0 {
			found = es[0]
		}
		return len(es) > 0
	})
	return found
}

func ofAgent(id string) func(event) bool {
	return func(e event) bool { return e.AgentID == id }
}

func stateChange(id, to string) func(event) bool {
	return func(e event) bool {
		return e.Event == "heartbeat.state_change" && e.AgentID == id && e.NewState == to
	}
}

func revoked(id string) func(event) bool {
	return func(e event) bool { return e.Event == "agent.revoked" && e.AgentID == id }
}

func pipeline(name string, after time.Time) func(event) bool {
	return func(e event) bool { return e.Event == name && !e.received.Before(after) }
}

// --- agents under the real beacon

// beaconAgent is the beacon binary running a shell script as its agent,
// heartbeating every second with the tenant API key.
type beaconAgent struct {
	id      string
	p       *process
	pidFile string // the child's pid, which is also its process group
}

// workScript is an agent that works forever, reporting a counter.
const workScript = `n=0; while :; do n=$((n+1)); printf '{"requests_handled":%d}' $n > "$BEACON_METRICS_FILE.tmp" && mv "$BEACON_METRICS_FILE.tmp" "$BEACON_METRICS_FILE"; sleep 1; done`

func startAgent(t *testing.T, dir, endpoint, id, script string) *beaconAgent {
	t.Helper()
	a := &beaconAgent{id: id, pidFile: filepath.Join(dir, id+".child.pid")}
	// Cleanups run last first: thaw the beacon, stop it (startCommand's
	// cleanup), then kill whatever of the agent's group is left.
	t.Cleanup(func() {
		if pid, ok := a.childPID(); ok {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	})
	cmd := exec.Command(beaconBin, "run", "--endpoint", endpoint, "--id", id,
		"--heartbeat-interval", "1s", "--shutdown-timeout", "2s",
		"--", "/bin/sh", "-c", "echo $$ > "+a.pidFile+"; "+script)
	cmd.Env = append(os.Environ(), "SENTINEL_TOKEN="+apiKey)
	a.p = startCommand(t, dir, "beacon-"+id, cmd)
	t.Cleanup(func() { _ = a.p.cmd.Process.Signal(syscall.SIGCONT) })
	return a
}

func (a *beaconAgent) childPID() (int, bool) {
	b, err := os.ReadFile(a.pidFile)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid, err == nil && pid > 0
}

// freeze stops the beacon (SIGSTOP): the agent hangs and stops beating. Its
// child runs on, as a hung agent's would.
func (a *beaconAgent) freeze(t *testing.T) time.Time {
	t.Helper()
	require.NoError(t, a.p.cmd.Process.Signal(syscall.SIGSTOP))
	return time.Now()
}

func (a *beaconAgent) thaw(t *testing.T) {
	t.Helper()
	require.NoError(t, a.p.cmd.Process.Signal(syscall.SIGCONT))
}

// exit waits for the beacon to exit and returns its code and when.
func (a *beaconAgent) exit(t *testing.T, timeout time.Duration) (int, time.Time) {
	t.Helper()
	select {
	case <-a.p.done:
	case <-time.After(timeout):
		t.Fatalf("beacon of %s did not exit within %s\n%s", a.id, timeout, a.p.tail(20))
	}
	return a.p.cmd.ProcessState.ExitCode(), time.Now()
}

// groupAlive reports whether a process of group pgid still runs: exited
// members may linger as zombies until init reaps them.
func groupAlive(t *testing.T, pgid int) bool {
	t.Helper()
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	require.NoError(t, err)
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid pgrp …; comm may hold spaces and parentheses.
		i := strings.LastIndexByte(string(b), ')')
		f := strings.Fields(string(b[i+1:]))
		if len(f) >= 3 && f[2] == strconv.Itoa(pgid) && f[0] != "Z" {
			return true
		}
	}
	return false
}

// waitRegistered waits until sentinel knows each agent as ACTIVE.
func (s *loopStack) waitRegistered(t *testing.T, agents ...*beaconAgent) {
	t.Helper()
	for _, a := range agents {
		waitFor(t, 20*time.Second, a.id+" to register", func() bool {
			if a.p.exited() {
				t.Fatalf("beacon of %s exited: %v\n%s", a.id, a.p.err, a.p.tail(20))
			}
			return s.installationState(t, a.id) == "ACTIVE"
		})
	}
}

// --- the test

// TestLoop proves the product's loop with the real programs: agents under
// beacon → sentinel → Prometheus (alerts/sentinel.rules.yml as is) →
// Alertmanager (deploy/alertmanager/alertmanager.local.yml) → the bridge →
// signed webhooks to the customer and the kill switch back to beacon. It
// measures detection latency, restarts sentinel (SIGTERM and SIGKILL) and
// stops Alertmanager mid-run, and checks that the customer saw every
// transition exactly once.
func TestLoop(t *testing.T) {
	t.Parallel()
	start := time.Now()
	s := startLoopStack(t)
	t.Logf("loop up in %s", time.Since(start).Round(time.Millisecond))

	dir := s.mkdir(t, "agents")
	steady := startAgent(t, dir, s.sentinelURL, "steady", workScript)
	hangs := startAgent(t, dir, s.sentinelURL, "hangs", workScript)
	naps := startAgent(t, dir, s.sentinelURL, "naps", workScript)
	restarts := startAgent(t, dir, s.sentinelURL, "restarts", workScript)
	stops := startAgent(t, dir, s.sentinelURL, "stops", "sleep 3; exit 0")
	s.waitRegistered(t, steady, hangs, naps, restarts)
	// A beat or two more, so that Prometheus has each agent's series.
	time.Sleep(2 * time.Second)

	t.Run("agents", func(t *testing.T) {
		t.Run("hangs: SILENT, ZOMBIE, revoked, killed by beacon", func(t *testing.T) {
			t.Parallel()
			testHangs(t, s, hangs)
		})
		t.Run("naps: SILENT, then one ACTIVE", func(t *testing.T) {
			t.Parallel()
			frozen := naps.freeze(t)
			silent := s.customer.wait(t, 5*time.Second+detectionSlack+5*time.Second, "SILENT of naps", stateChange("naps", "SILENT"))
			naps.thaw(t)
			active := s.customer.wait(t, 10*time.Second, "ACTIVE of naps", stateChange("naps", "ACTIVE"))
			require.Equal(t, "SILENT", active.PreviousState)
			require.NotNil(t, active.OutageSeconds, "ACTIVE carries outageSeconds")
			require.GreaterOrEqual(t, *active.OutageSeconds, int64(5))
			require.Less(t, *active.OutageSeconds, int64(15))
			require.Nil(t, silent.OutageSeconds, "SILENT carries no outageSeconds")
			t.Logf("naps: frozen %s, SILENT after %s, ACTIVE %s after the thaw, outageSeconds %d",
				frozen.Format("15:04:05.000"), silent.received.Sub(silent.LastHeartbeatAt).Round(time.Millisecond),
				time.Since(silent.received).Round(time.Millisecond), *active.OutageSeconds)
		})
		t.Run("stops: STOPPED, no event", func(t *testing.T) {
			t.Parallel()
			code, _ := stops.exit(t, 30*time.Second)
			require.Zero(t, code, stops.p.tail(20))
			require.Equal(t, "STOPPED", s.installationState(t, "stops"))
		})
	})

	t.Run("sentinel restarted mid-run: SIGTERM, then SIGKILL", func(t *testing.T) {
		restarts.freeze(t)
		// SIGTERM while AgentSilent is on its way to the bridge.
		waitFor(t, 20*time.Second, "AgentSilent of restarts to fire in Prometheus", func() bool {
			return s.fired(t, "AgentSilent", "restarts")
		})
		require.True(t, s.sentinel.stop(20*time.Second), "sentinel did not stop on SIGTERM")
		require.NoError(t, s.sentinel.err, "sentinel's exit after SIGTERM\n%s", s.sentinel.tail(30))
		s.startSentinel(t)
		// SIGKILL while AgentZombie, and with it the revocation, is.
		waitFor(t, 30*time.Second, "AgentZombie of restarts to fire in Prometheus", func() bool {
			return s.fired(t, "AgentZombie", "restarts")
		})
		require.NoError(t, s.sentinel.cmd.Process.Kill())
		<-s.sentinel.done
		killed := time.Now()
		s.startSentinel(t)
		t.Logf("sentinel back %s after SIGKILL", time.Since(killed).Round(time.Millisecond))

		// An event committed but not yet delivered when sentinel was killed
		// is claimed by the dead process: it goes out once that claim's
		// lease (webhook.timeout 5 s + 30 s) has run out.
		rev := s.customer.wait(t, 55*time.Second, "agent.revoked of restarts", revoked("restarts"))
		t.Logf("agent.revoked of restarts delivered %s after the SIGKILL", rev.received.Sub(killed).Round(time.Millisecond))
		restarts.thaw(t)
		code, _ := restarts.exit(t, 15*time.Second)
		require.Equal(t, 3, code, "beacon exits 3 when revoked\n%s", restarts.p.tail(20))
	})

	t.Run("Alertmanager stopped: pipeline.silent, then pipeline.restored", func(t *testing.T) {
		// Start from a healthy pipeline: a Watchdog that arrived after the
		// restarts above (with this short timeout they may have cost a
		// pipeline.silent and its pipeline.restored of their own), and no
		// pipeline.silent outstanding.
		begin := time.Now()
		waitFor(t, 20*time.Second, "a fresh Watchdog at the bridge", func() bool {
			return s.sentinelMetric(t, "sentinel_pipeline_watchdog_last_seen_timestamp_seconds") >= float64(begin.Unix())
		})
		waitFor(t, 20*time.Second, "no pipeline.silent outstanding", func() bool {
			es := s.customer.events(func(e event) bool { return strings.HasPrefix(e.Event, "pipeline.") })
			return len(es) == 0 || es[len(es)-1].Event == "pipeline.restored"
		})

		stopped := time.Now()
		require.True(t, s.alertmanager.stop(20*time.Second))
		silent := s.customer.wait(t, loopWatchdogTimeout+15*time.Second, "pipeline.silent", pipeline("pipeline.silent", stopped))
		started := time.Now()
		s.startAlertmanager(t)
		restored := s.customer.wait(t, 45*time.Second, "pipeline.restored", pipeline("pipeline.restored", started))
		t.Logf("pipeline.silent %s after Alertmanager stopped (bridge.watchdog.timeout %s), pipeline.restored %s after it was started again",
			silent.received.Sub(stopped).Round(time.Millisecond), loopWatchdogTimeout, restored.received.Sub(started).Round(time.Millisecond))
		// The last Watchdog came at most a repeat (2 s) and a group
		// interval (1 s) before the stop.
		require.GreaterOrEqual(t, silent.received.Sub(stopped), loopWatchdogTimeout-3*time.Second,
			"pipeline.silent before the watchdog timeout could have passed")
		require.Less(t, silent.received.Sub(stopped), loopWatchdogTimeout+detectionSlack)
	})

	t.Run("every transition announced exactly once", func(t *testing.T) {
		// Late duplicates would arrive within a delivery or two.
		time.Sleep(2 * time.Second)
		for id, want := range map[string][]string{
			"steady":   nil,
			"stops":    nil,
			"hangs":    {"hangs ACTIVE→SILENT", "hangs SILENT→ZOMBIE", "hangs revoked by alert:AgentZombie"},
			"naps":     {"naps ACTIVE→SILENT", "naps SILENT→ACTIVE"},
			"restarts": {"restarts ACTIVE→SILENT", "restarts SILENT→ZOMBIE", "restarts revoked by alert:AgentZombie"},
		} {
			got := s.customer.events(ofAgent(id))
			var names []string
			for i, e := range got {
				names = append(names, e.name())
				if i > 0 {
					require.Greater(t, e.Sequence, got[i-1].Sequence, "%s: sequence must increase: %v", id, got)
				}
			}
			require.Equal(t, want, names, "the events of %s", id)
		}
		// The pipeline's own events alternate, whatever happened at start.
		var last string
		for _, e := range s.customer.events(func(e event) bool { return strings.HasPrefix(e.Event, "pipeline.") }) {
			require.NotEqual(t, last, e.Event, "two %s in a row", e.Event)
			last = e.Event
		}
		require.Equal(t, "pipeline.restored", last)
		// Sentinel's side agrees: every event it queued was delivered, and
		// the customer got each of them.
		got := map[string]string{}
		for _, e := range s.customer.events(func(event) bool { return true }) {
			got[e.EventID] = "delivered"
		}
		require.Equal(t, got, s.deliveries(t), "sentinel's deliveries and what the customer received")
		require.False(t, steady.p.exited(), "the steady agent's beacon exited\n%s", steady.p.tail(20))
		require.Equal(t, "ACTIVE", s.installationState(t, "steady"))
		for i := 1; i <= s.sentinelRuns; i++ {
			log, err := os.ReadFile(filepath.Join(s.dir, fmt.Sprintf("sentinel-%d.log", i)))
			require.NoError(t, err)
			require.NotContains(t, string(log), "DATA RACE")
		}
		t.Logf("%d deliveries, %d of them repeated (at least once), %d Alertmanager notifications to the local receiver",
			len(s.customer.events(func(event) bool { return true })), s.customer.redeliveries(), s.customer.amNotices)
	})
	t.Logf("loop test took %s", time.Since(start).Round(time.Millisecond))
}

// testHangs freezes the agent's beacon: its heartbeats stop while its child
// hangs on. It measures the detection latency from the last heartbeat (as
// sentinel recorded it) to the SILENT and ZOMBIE webhooks and to the
// revocation, then wakes the beacon: its next heartbeat is answered
// revoked, and beacon kills the child and exits 3.
func testHangs(t *testing.T, s *loopStack, a *beaconAgent) {
	frozen := a.freeze(t)
	silent := s.customer.wait(t, 5*time.Second+detectionSlack+5*time.Second, "SILENT of hangs", stateChange("hangs", "SILENT"))
	zombie := s.customer.wait(t, 15*time.Second+detectionSlack, "ZOMBIE of hangs", stateChange("hangs", "ZOMBIE"))
	rev := s.customer.wait(t, 10*time.Second, "agent.revoked of hangs", revoked("hangs"))

	last := silent.LastHeartbeatAt
	require.Equal(t, last, zombie.LastHeartbeatAt)
	require.WithinDuration(t, frozen, last, 1500*time.Millisecond, "the last heartbeat is the one before the freeze")
	toSilent, toZombie, toRevoked := silent.received.Sub(last), zombie.received.Sub(last), rev.RevokedAt.Sub(last)
	require.Equal(t, "ACTIVE", silent.PreviousState)
	require.Equal(t, "AgentSilent", silent.Alert.Name)
	require.Equal(t, "SILENT", zombie.PreviousState)
	require.Equal(t, "AgentZombie", zombie.Alert.Name)
	require.Equal(t, "alert:AgentZombie", rev.Source)
	require.Equal(t, "Revoked by alert AgentZombie", rev.Reason)

	a.thaw(t)
	code, exited := a.exit(t, 15*time.Second)
	require.Equal(t, 3, code, "beacon exits 3 when revoked\n%s", a.p.tail(20))
	pid, ok := a.childPID()
	require.True(t, ok)
	require.False(t, groupAlive(t, pid), "the hung agent's process group survived its beacon")

	t.Logf("detection latency from the last heartbeat: SILENT webhook %s (ideal 5s), ZOMBIE webhook %s (ideal 15s), revoked %s; "+
		"woken at the revocation webhook, the beacon killed the agent and exited %s after the last heartbeat",
		toSilent.Round(time.Millisecond), toZombie.Round(time.Millisecond), toRevoked.Round(time.Millisecond), exited.Sub(last).Round(time.Millisecond))
	require.GreaterOrEqual(t, toSilent, 5*time.Second)
	require.Less(t, toSilent, 5*time.Second+detectionSlack)
	require.GreaterOrEqual(t, toZombie, 15*time.Second)
	require.Less(t, toZombie, 15*time.Second+detectionSlack)
	require.GreaterOrEqual(t, toRevoked, 15*time.Second)
	require.Less(t, toRevoked, 15*time.Second+detectionSlack)
}
