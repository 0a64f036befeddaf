package app_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/internal/testutil"
)

const (
	bridgeToken   = "bridge-token-1"
	webhookSecret = "whsec_" + "c2VjcmV0LWZvci10ZXN0cy0xMjM0NTY3OA==" // base64 of secret-for-tests-12345678
	rawSecret     = "secret-for-tests-12345678"
)

// customer is a webhook endpoint that verifies every delivery with its own
// HMAC code (not package webhook's) and keeps the events.
type customer struct {
	t      *testing.T
	srv    *httptest.Server
	mu     sync.Mutex
	events []map[string]any
	// status is what the endpoint answers; hang blocks until released.
	status int
	hang   chan struct{}
}

func newCustomer(t *testing.T) *customer {
	c := &customer{t: t, status: http.StatusOK}
	c.srv = httptest.NewServer(http.HandlerFunc(c.serve))
	t.Cleanup(func() {
		c.mu.Lock()
		if c.hang != nil {
			close(c.hang)
			c.hang = nil
		}
		c.mu.Unlock()
		c.srv.Close()
	})
	return c
}

func (c *customer) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	c.mu.Lock()
	hang, status := c.hang, c.status
	c.mu.Unlock()
	if hang != nil {
		<-hang
	}
	// X-ABS-Signature: t=<unix>,v1=<hex HMAC(secret as written, "<t>." + body)>.
	parts := map[string]string{}
	for _, p := range strings.Split(r.Header.Get("X-ABS-Signature"), ",") {
		k, v, _ := strings.Cut(p, "=")
		parts[k] = v
	}
	mac := hmac.New(sha256.New, []byte(webhookSecret))
	fmt.Fprintf(mac, "%s.%s", parts["t"], body)
	absOK := hex.EncodeToString(mac.Sum(nil)) == parts["v1"]
	// Standard Webhooks: base64 HMAC(base64-decoded whsec_ secret, "<id>.<ts>." + body).
	mac = hmac.New(sha256.New, []byte(rawSecret))
	fmt.Fprintf(mac, "%s.%s.%s", r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp"), body)
	stdOK := "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)) == r.Header.Get("webhook-signature")

	var ev map[string]any
	if !absOK || !stdOK || json.Unmarshal(body, &ev) != nil || ev["eventId"] != r.Header.Get("X-ABS-Delivery") || ev["event"] != r.Header.Get("X-ABS-Event") {
		c.t.Errorf("bad delivery: abs=%v std=%v headers=%v body=%s", absOK, stdOK, r.Header, body)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if status >= 200 && status < 300 {
		c.mu.Lock()
		c.events = append(c.events, ev)
		c.mu.Unlock()
	}
	w.WriteHeader(status)
}

func (c *customer) set(status int) {
	c.mu.Lock()
	c.status = status
	c.mu.Unlock()
}

// got returns the events received so far, optionally of one agent.
func (c *customer) got(agentID string) []map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []map[string]any
	for _, e := range c.events {
		if agentID == "" || e["agentId"] == agentID {
			out = append(out, e)
		}
	}
	return out
}

func (c *customer) waitFor(n int, agentID string) []map[string]any {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if evs := c.got(agentID); len(evs) >= n {
			return evs
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatalf("want %d events of %q, got %v", n, agentID, c.got(agentID))
	return nil
}

func bridgeConfig(acmeURL, globexURL string) string {
	return fmt.Sprintf(`
heartbeat:
  default_interval: 10s
  min_interval: 1s
  max_interval: 1h
  token_ttl: 2h
  token_refresh_before: 90m
admin_tokens: [global-admin-1]
tenants:
  - id: acme
    api_keys: [acme-key-1]
    admin_tokens: [acme-admin-1]
    webhook: {url: %q, secrets: [%q], timeout: 2s}
  - id: globex
    api_keys: [globex-key-1]
    admin_tokens: [globex-admin-1]
    webhook: {url: %q, secrets: [%q], timeout: 30s}
bridge:
  bearer_token: %s
  watchdog: {timeout: 0s}
`, acmeURL, webhookSecret, globexURL, webhookSecret, bridgeToken)
}

type amAlert struct {
	name, status, agent string
	startsAt            time.Time
	labels              map[string]string
}

func notification(alerts ...amAlert) string {
	var out []map[string]any
	for _, a := range alerts {
		labels := map[string]string{"alertname": a.name, "tenant": "acme", "agent_id": a.agent}
		for k, v := range a.labels {
			labels[k] = v
		}
		if a.agent == "" {
			delete(labels, "agent_id")
			delete(labels, "tenant")
		}
		out = append(out, map[string]any{
			"status": a.status, "labels": labels, "annotations": map[string]string{},
			"startsAt": a.startsAt.Format(time.RFC3339Nano), "endsAt": "0001-01-01T00:00:00Z",
			"generatorURL": "http://prometheus/graph", "fingerprint": fmt.Sprintf("%x", sha256.Sum256([]byte(a.name+a.agent)))[:16],
		})
	}
	b, _ := json.Marshal(map[string]any{"version": "4", "status": "firing", "receiver": "sentinel", "groupKey": "{}", "alerts": out, "truncatedAlerts": 0})
	return string(b)
}

func TestBridgeAnnouncesRevokesAndRecovers(t *testing.T) {
	acme, globex := newCustomer(t), newCustomer(t)
	e := newEnv(t, bridgeConfig(acme.srv.URL, globex.srv.URL))
	r := e.start()
	r.register("a1", acmeKey, map[string]any{"heartbeat_interval_seconds": 1})
	r.register("a2", acmeKey, map[string]any{"heartbeat_interval_seconds": 1})
	t0 := e.clock.Now()
	e.clock.Set(t0.Add(6 * time.Second))

	// Authentication and payload checks.
	require.Equal(t, http.StatusUnauthorized, r.do(http.MethodPost, "/api/v1/alertmanager", "", "{}").status)
	unauth := r.do(http.MethodPost, "/api/v1/alertmanager", "", "{}")
	require.Contains(t, unauth.header.Get("WWW-Authenticate"), "Bearer")
	require.Equal(t, http.StatusUnauthorized, r.do(http.MethodPost, "/api/v1/alertmanager", "nope", "{}").status)
	require.Equal(t, http.StatusForbidden, r.do(http.MethodPost, "/api/v1/alertmanager", acmeAdmin, "{}").status)
	require.Equal(t, http.StatusBadRequest, r.do(http.MethodPost, "/api/v1/alertmanager", bridgeToken, `{"version":"3"}`).status)
	require.Equal(t, http.StatusMethodNotAllowed, r.do(http.MethodGet, "/api/v1/alertmanager", bridgeToken, nil).status)

	// AgentSilent firing: one SILENT, however often Alertmanager repeats it,
	// also twice at the same moment (two clustered Alertmanagers).
	silent := notification(amAlert{name: "AgentSilent", status: "firing", agent: "a1", startsAt: t0.Add(5 * time.Second)})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := r.do(http.MethodPost, "/api/v1/alertmanager", bridgeToken, silent)
			require.Equal(t, http.StatusOK, res.status, "%s", res.body)
		}()
	}
	wg.Wait()
	evs := acme.waitFor(1, "a1")
	require.Equal(t, "heartbeat.state_change", evs[0]["event"])
	require.Equal(t, "ACTIVE", evs[0]["previousState"])
	require.Equal(t, "SILENT", evs[0]["newState"])
	require.EqualValues(t, 1, evs[0]["sequence"])
	require.EqualValues(t, 6, evs[0]["missedBeats"])
	require.Equal(t, "AgentSilent", evs[0]["alert"].(map[string]any)["name"])
	require.NotContains(t, evs[0], "outageSeconds")

	// A regrouped notification (a2 silent, a1 again) announces only a2.
	res := r.do(http.MethodPost, "/api/v1/alertmanager", bridgeToken, notification(
		amAlert{name: "AgentSilent", status: "firing", agent: "a1", startsAt: t0.Add(5 * time.Second)},
		amAlert{name: "AgentSilent", status: "firing", agent: "a2", startsAt: t0.Add(5 * time.Second)},
		amAlert{name: "AgentSilent", status: "firing", agent: "ghost", startsAt: t0},
		amAlert{name: "SomethingElse", status: "firing", agent: "", startsAt: t0},
	))
	require.Equal(t, http.StatusOK, res.status)
	results := res.json(t)["results"].(map[string]any)
	require.EqualValues(t, 1, results["applied"])
	require.EqualValues(t, 1, results["duplicate"])
	require.EqualValues(t, 1, results["unknown_agent"])
	require.EqualValues(t, 1, results["missing_labels"])
	acme.waitFor(1, "a2")

	// AgentZombie firing: ZOMBIE and agent.revoked, and the agent's next
	// heartbeat is answered "revoked".
	e.clock.Set(t0.Add(16 * time.Second))
	res = r.do(http.MethodPost, "/api/v1/alertmanager", bridgeToken, notification(
		amAlert{name: "AgentZombie", status: "firing", agent: "a1", startsAt: t0.Add(15 * time.Second)}))
	require.Equal(t, http.StatusOK, res.status)
	evs = acme.waitFor(3, "a1")
	require.Equal(t, "ZOMBIE", evs[1]["newState"])
	require.Equal(t, "SILENT", evs[1]["previousState"])
	require.Equal(t, "agent.revoked", evs[2]["event"])
	require.Equal(t, "alert:AgentZombie", evs[2]["source"])
	require.Equal(t, "Revoked by alert AgentZombie", evs[2]["reason"])
	require.EqualValues(t, 5000, evs[2]["shutdownTimeoutMs"])
	require.EqualValues(t, []any{1.0, 2.0, 3.0}, []any{evs[0]["sequence"], evs[1]["sequence"], evs[2]["sequence"]})
	beat := r.do(http.MethodPost, "/api/v1/installations/a1/heartbeat", acmeKey, map[string]any{"heartbeat_interval_seconds": 1})
	require.Equal(t, true, beat.json(t)["revoked"])
	requireSample(t, r.metrics(), `sentinel_revocations_total{source="alert"}`, 1)

	// A resolved alert never reinstates and announces nothing.
	res = r.do(http.MethodPost, "/api/v1/alertmanager", bridgeToken, notification(
		amAlert{name: "AgentZombie", status: "resolved", agent: "a1", startsAt: t0.Add(15 * time.Second)}))
	require.Equal(t, http.StatusOK, res.status)
	require.Equal(t, true, r.do(http.MethodPost, "/api/v1/installations/a1/heartbeat", acmeKey, nil).json(t)["revoked"])

	// a2 beats again: exactly one ACTIVE with its outage, however many beats.
	for range 5 {
		r.beat("a2", acmeKey, map[string]any{"heartbeat_interval_seconds": 1})
	}
	evs = acme.waitFor(2, "a2")
	time.Sleep(300 * time.Millisecond)
	evs = acme.got("a2")
	require.Len(t, evs, 2)
	require.Equal(t, "ACTIVE", evs[1]["newState"])
	require.Equal(t, "SILENT", evs[1]["previousState"])
	require.EqualValues(t, 16, evs[1]["outageSeconds"])
	require.EqualValues(t, 2, evs[1]["sequence"])
	// The stale firing alert of the outage that ended announces nothing.
	res = r.do(http.MethodPost, "/api/v1/alertmanager", bridgeToken, notification(
		amAlert{name: "AgentSilent", status: "firing", agent: "a2", startsAt: t0.Add(5*time.Second + time.Millisecond)}))
	require.Equal(t, http.StatusOK, res.status)
	require.EqualValues(t, 1, res.json(t)["results"].(map[string]any)["stale"])

	text := r.metrics()
	requireSample(t, text, `sentinel_webhook_deliveries_total{result="delivered"}`, 5)
	requireSample(t, text, `sentinel_alertmanager_notifications_total{result="unauthorized"}`, 4)
	require.Empty(t, globex.got(""), "another tenant hears nothing")

	// The deliveries API.
	list := r.do(http.MethodGet, "/api/v1/deliveries?status=delivered&agent_id=a1", acmeAdmin, nil)
	require.Equal(t, http.StatusOK, list.status, "%s", list.body)
	ds := list.json(t)["deliveries"].([]any)
	require.Len(t, ds, 3)
	first := ds[0].(map[string]any)
	require.Equal(t, "delivered", first["status"])
	require.EqualValues(t, 1, first["attempts"])
	require.EqualValues(t, 200, first["last_status_code"])
	require.EqualValues(t, 1, first["payload"].(map[string]any)["sequence"])
	id := first["event_id"].(string)
	require.Equal(t, http.StatusNotFound, r.do(http.MethodPost, "/api/v1/deliveries/"+id+"/redeliver", "globex-admin-1", nil).status)
	require.Equal(t, http.StatusAccepted, r.do(http.MethodPost, "/api/v1/deliveries/"+id+"/redeliver", acmeAdmin, nil).status)
	evs = acme.waitFor(4, "a1")
	require.Equal(t, id, evs[3]["eventId"], "a redelivery is the same event, same id")
	require.Equal(t, http.StatusBadRequest, r.do(http.MethodGet, "/api/v1/deliveries?status=lost", acmeAdmin, nil).status)

	test := r.do(http.MethodPost, "/api/v1/webhook/test", acmeAdmin, nil)
	require.Equal(t, http.StatusOK, test.status, "%s", test.body)
	require.Equal(t, true, test.json(t)["delivered"])
	require.EqualValues(t, 200, test.json(t)["status_code"])
	require.Equal(t, "webhook.test", acme.waitFor(5, "")[len(acme.got(""))-1]["event"])

	for _, secret := range []string{bridgeToken, webhookSecret, rawSecret, acmeKey, acmeAdmin} {
		require.NotContains(t, e.logs.String(), secret, "no secret in any log line")
	}
}

func TestBridgeOutboxSurvivesRestartAndIsolatesTenants(t *testing.T) {
	acme, globex := newCustomer(t), newCustomer(t)
	e := newEnv(t, bridgeConfig(acme.srv.URL, globex.srv.URL))
	r := e.start()
	r.register("a1", acmeKey, map[string]any{"heartbeat_interval_seconds": 1})
	r.register("g1", globexKey, map[string]any{"heartbeat_interval_seconds": 1})
	t0 := e.clock.Now()
	e.clock.Set(t0.Add(6 * time.Second))

	// globex's endpoint hangs: acme's deliveries go on.
	globex.mu.Lock()
	globex.hang = make(chan struct{})
	globex.mu.Unlock()
	acme.set(http.StatusServiceUnavailable)
	gNote := strings.ReplaceAll(notification(amAlert{name: "AgentSilent", status: "firing", agent: "g1", startsAt: t0}), `"tenant":"acme"`, `"tenant":"globex"`)
	require.Equal(t, http.StatusOK, r.do(http.MethodPost, "/api/v1/alertmanager", bridgeToken, gNote).status)
	require.Equal(t, http.StatusOK, r.do(http.MethodPost, "/api/v1/alertmanager", bridgeToken,
		notification(amAlert{name: "AgentSilent", status: "firing", agent: "a1", startsAt: t0})).status)

	// acme answers 503: the event is retried, not lost, across a restart.
	waitUntil(t, func() bool {
		res := r.do(http.MethodGet, "/api/v1/deliveries?status=pending", acmeAdmin, nil)
		ds := res.json(t)["deliveries"].([]any)
		return len(ds) == 1 && ds[0].(map[string]any)["attempts"].(float64) >= 1
	})
	r.close()
	acme.set(http.StatusOK)
	r = e.start()
	e.clock.Set(t0.Add(time.Minute)) // past the first retry delay
	evs := acme.waitFor(1, "a1")
	require.Equal(t, "SILENT", evs[0]["newState"])
	require.Empty(t, globex.got(""), "globex still hangs")

	// A 410 disables the endpoint until re-enabled.
	r.register("a9", acmeKey, map[string]any{"heartbeat_interval_seconds": 1})
	acme.set(http.StatusGone)
	e.clock.Set(t0.Add(2 * time.Minute))
	require.Equal(t, http.StatusOK, r.do(http.MethodPost, "/api/v1/alertmanager", bridgeToken,
		notification(amAlert{name: "AgentSilent", status: "firing", agent: "a9", startsAt: t0.Add(time.Minute)})).status)
	waitUntil(t, func() bool {
		v, ok := sample(t, r.metrics(), `sentinel_webhook_endpoint_disabled{tenant="acme"}`)
		return ok && v == 1
	})
	acme.set(http.StatusOK)
	en := r.do(http.MethodPost, "/api/v1/webhook/enable", acmeAdmin, nil)
	require.Equal(t, http.StatusOK, en.status)
	require.Equal(t, true, en.json(t)["was_disabled"])
	requireSample(t, r.metrics(), `sentinel_webhook_endpoint_disabled{tenant="acme"}`, 0)
	failed := r.do(http.MethodGet, "/api/v1/deliveries?status=failed", acmeAdmin, nil).json(t)["deliveries"].([]any)
	require.Len(t, failed, 1)
	require.EqualValues(t, 410, failed[0].(map[string]any)["last_status_code"])
}

func TestBridgeWatchdog(t *testing.T) {
	acme, globex := newCustomer(t), newCustomer(t)
	cfg := strings.Replace(bridgeConfig(acme.srv.URL, globex.srv.URL), "timeout: 0s", "timeout: 1m", 1)
	e := newEnv(t, cfg)
	r := e.start()
	t0 := e.clock.Now()
	e.clock.Set(t0.Add(61 * time.Second))
	evs := acme.waitFor(1, "")
	require.Equal(t, "pipeline.silent", evs[0]["event"])
	require.EqualValues(t, 60, evs[0]["timeoutSeconds"])
	require.Equal(t, "pipeline.silent", globex.waitFor(1, "")[0]["event"])

	res := r.do(http.MethodPost, "/api/v1/alertmanager", bridgeToken, notification(amAlert{name: "Watchdog", status: "firing", startsAt: t0}))
	require.Equal(t, http.StatusOK, res.status)
	evs = acme.waitFor(2, "")
	require.Equal(t, "pipeline.restored", evs[1]["event"])
	requireSample(t, r.metrics(), "sentinel_pipeline_watchdog_last_seen_timestamp_seconds",
		float64(t0.Add(61*time.Second).UnixNano())/1e9)
	time.Sleep(1500 * time.Millisecond)
	require.Len(t, acme.got(""), 2, "silent and restored are announced once each")
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// An agent ZOMBIE by sentinel's own clock for UnalertedGrace without an
// AgentZombie notification is counted and logged once: the alerting
// pipeline is failing it. An announced ZOMBIE clears it.
func TestBridgeUnalertedZombie(t *testing.T) {
	acme, globex := newCustomer(t), newCustomer(t)
	e := newEnv(t, bridgeConfig(acme.srv.URL, globex.srv.URL))
	r := e.start()
	r.register("z1", acmeKey, map[string]any{"heartbeat_interval_seconds": 1})
	t0 := e.clock.Now()
	e.clock.Set(t0.Add(15*time.Second + 6*time.Minute))
	waitUntil(t, func() bool {
		v, ok := sample(t, r.metrics(), `sentinel_agents_unalerted_zombie{tenant="acme"}`)
		return ok && v == 1
	})
	require.Equal(t, 1, strings.Count(e.logs.String(), "agent is ZOMBIE but no AgentZombie notification reached the bridge"))

	res := r.do(http.MethodPost, "/api/v1/alertmanager", bridgeToken, notification(
		amAlert{name: "AgentZombie", status: "firing", agent: "z1", startsAt: t0.Add(15 * time.Second)}))
	require.Equal(t, http.StatusOK, res.status)
	e.clock.Set(t0.Add(15*time.Second + 7*time.Minute))
	waitUntil(t, func() bool {
		v, ok := sample(t, r.metrics(), `sentinel_agents_unalerted_zombie{tenant="acme"}`)
		return ok && v == 0
	})
	require.Equal(t, 1, strings.Count(e.logs.String(), "agent is ZOMBIE but no AgentZombie notification reached the bridge"), "logged once per outage")
}

// On PostgreSQL, two replicas share the ledger: a notification sent twice,
// once to each (two clustered Alertmanagers behind a load balancer), is
// announced once; an event whose replica dies with it pending is delivered
// by the other once its lease runs out.
func TestBridgeReplicasOnPostgres(t *testing.T) {
	acme, globex := newCustomer(t), newCustomer(t)
	dsn := testutil.PostgresDSN(t)
	cfg := bridgeConfig(acme.srv.URL, globex.srv.URL) + fmt.Sprintf("storage:\n  postgres:\n    dsn: %q\n", dsn)
	e1 := newEnv(t, cfg)
	e2 := newEnv(t, cfg)
	e2.clock = e1.clock
	o1, o2 := e1.options(), e2.options()
	o1.Replica, o2.Replica = "replica-1", "replica-2"
	r1 := e1.startWith(o1)
	r2 := e2.startWith(o2)
	r1.register("p1", acmeKey, map[string]any{"heartbeat_interval_seconds": 1})
	// Replicas merge each other's hot state at every snapshot (Run takes
	// them every --storage.snapshot-interval).
	require.NoError(t, r1.app.Snapshot())
	require.NoError(t, r2.app.Snapshot())
	require.Equal(t, http.StatusOK, r2.installation("p1").status)
	t0 := e1.clock.Now()
	e1.clock.Set(t0.Add(6 * time.Second))

	silent := notification(amAlert{name: "AgentSilent", status: "firing", agent: "p1", startsAt: t0.Add(5 * time.Second)})
	var wg sync.WaitGroup
	for _, r := range []*running{r1, r2, r1, r2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := r.do(http.MethodPost, "/api/v1/alertmanager", bridgeToken, silent)
			require.Equal(t, http.StatusOK, res.status, "%s", res.body)
		}()
	}
	wg.Wait()
	acme.waitFor(1, "p1")
	time.Sleep(time.Second)
	require.Len(t, acme.got("p1"), 1, "announced once across replicas")

	// The endpoint fails while only replica 1 runs; replica 1 goes with
	// the events pending, and replica 2, started again, delivers them.
	acme.set(http.StatusServiceUnavailable)
	r2.close()
	e1.clock.Set(t0.Add(16 * time.Second))
	res := r1.do(http.MethodPost, "/api/v1/alertmanager", bridgeToken, notification(
		amAlert{name: "AgentZombie", status: "firing", agent: "p1", startsAt: t0.Add(15 * time.Second)}))
	require.Equal(t, http.StatusOK, res.status)
	waitUntil(t, func() bool {
		ds := r1.do(http.MethodGet, "/api/v1/deliveries?status=pending", acmeAdmin, nil).json(t)["deliveries"].([]any)
		return len(ds) == 2 && ds[0].(map[string]any)["attempts"].(float64) >= 1
	})
	r1.close()

	acme.set(http.StatusOK)
	r3 := e2.startWith(o2)
	e1.clock.Set(t0.Add(16*time.Second + 2*time.Minute)) // past the lease and the retry delay
	evs := acme.waitFor(3, "p1")
	require.Equal(t, []any{"SILENT", "ZOMBIE", nil}, []any{evs[0]["newState"], evs[1]["newState"], evs[2]["newState"]})
	require.Equal(t, "agent.revoked", evs[2]["event"])
	require.EqualValues(t, []any{1.0, 2.0, 3.0}, []any{evs[0]["sequence"], evs[1]["sequence"], evs[2]["sequence"]})
	require.Equal(t, true, r3.do(http.MethodPost, "/api/v1/installations/p1/heartbeat", acmeKey, nil).json(t)["revoked"])
}
