package heartbeat_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/auth"
	"github.com/agentsentinel/sentinel/collector"
	"github.com/agentsentinel/sentinel/config"
	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/heartbeat"
	"github.com/agentsentinel/sentinel/killswitch"
	"github.com/agentsentinel/sentinel/ledger/embedded"

	"github.com/agentsentinel/sentinel/internal/testutil"
)

// Credentials of the test configuration.
const (
	acmeKey     = "acme-api-key"
	globexKey   = "globex-api-key"
	acmeAdmin   = "acme-admin-token"
	globexAdmin = "globex-admin-token"
	globalAdmin = "global-admin-token"
	bridgeToken = "bridge-token"
)

// t0 is the fake clock's start, on a whole second so that token expiries
// (whole seconds) are exactly now + token_ttl.
var t0 = time.Date(2026, 2, 3, 12, 0, 0, 0, time.UTC)

var thresholds = &fleet.ThresholdPolicy{Global: fleet.Thresholds{SilentAfter: 5, ZombieAfter: 15}}

// testConfig is the YAML configuration of the test environment: two tenants,
// a global admin and a bridge token. Intervals are clamped to [10s, 10m].
func testConfig(o envOptions) string {
	globexHeartbeat := ""
	if o.globexThresholds != "" {
		globexHeartbeat = "\n    heartbeat: " + o.globexThresholds
	}
	return fmt.Sprintf(`
heartbeat:
  min_interval: 10s
  max_interval: 10m
  max_agents: %d
  max_zombie_after: 40
admin_tokens: [%s]
tenants:
  - id: acme
    api_keys: [%s]
    admin_tokens: [%s]
    max_agents: %d
  - id: globex
    api_keys: [%s]
    admin_tokens: [%s]%s
bridge:
  bearer_token: %s
`, o.maxAgents, globalAdmin, acmeKey, acmeAdmin, o.acmeMaxAgents, globexKey, globexAdmin, globexHeartbeat, bridgeToken)
}

// env is sentinel assembled as app.routes does it: configuration, store,
// journal, kill-switch control, receiver, admin API and /metrics on one mux,
// behind the receiver's own routing of heartbeats.
type env struct {
	t       testing.TB
	clock   *testutil.Clock
	cfg     *config.Config
	key     []byte
	signer  *auth.Signer
	dir     string
	ledger  *embedded.Ledger
	control *killswitch.Control
	store   *heartbeat.Store
	recv    *heartbeat.Receiver
	reg     *prometheus.Registry
	mux     *http.ServeMux
	handler http.Handler // the receiver's Routes in front of mux
	opts    envOptions
}

type envOptions struct {
	maxAgents     int
	acmeMaxAgents int
	eventWindow   int
	// globexThresholds is the YAML of globex's heartbeat section, if any.
	globexThresholds string
}

func newEnv(t testing.TB, opts ...func(*envOptions)) *env {
	t.Helper()
	o := envOptions{maxAgents: 1000}
	for _, f := range opts {
		f(&o)
	}
	cfg, err := config.Parse([]byte(testConfig(o)), t.TempDir())
	require.NoError(t, err)
	key := bytes.Repeat([]byte{0x5e}, auth.KeySize)
	signer, err := auth.NewSigner(key)
	require.NoError(t, err)
	e := &env{t: t, clock: testutil.NewClock(t0), cfg: cfg, key: key, signer: signer, dir: t.TempDir(), opts: o}
	e.start(nil)
	t.Cleanup(e.stop)
	return e
}

func withMaxAgents(n int) func(*envOptions) { return func(o *envOptions) { o.maxAgents = n } }

// withGlobexThresholds gives tenant globex a heartbeat section (YAML).
func withGlobexThresholds(yaml string) func(*envOptions) {
	return func(o *envOptions) { o.globexThresholds = yaml }
}

// withEventWindow sets ReceiverOptions.EventWindow.
func withEventWindow(n int) func(*envOptions) { return func(o *envOptions) { o.eventWindow = n } }

// withAcmeMaxAgents sets tenant acme's own max_agents.
func withAcmeMaxAgents(n int) func(*envOptions) { return func(o *envOptions) { o.acmeMaxAgents = n } }

// start opens the ledger and builds everything else; snapshot, when not
// nil, is restored into the new store first, as app.New does.
func (e *env) start(snapshot []byte) {
	t := e.t
	t.Helper()
	l, err := embedded.Open(e.dir, embedded.Options{})
	require.NoError(t, err)
	e.ledger = l
	e.reg = prometheus.NewPedanticRegistry()
	logger := slog.New(slog.DiscardHandler)
	e.control, err = killswitch.New(context.Background(), l, logger, e.reg)
	require.NoError(t, err)
	e.store = heartbeat.NewStore(e.cfg.Heartbeat.MaxAgents, e.control.NewAgent)
	if snapshot != nil {
		_, _, err := e.store.DecodeSnapshot(bytes.NewReader(snapshot))
		require.NoError(t, err)
	}
	e.control.SyncStore(e.store)
	e.recv = heartbeat.NewReceiver(heartbeat.ReceiverOptions{
		Store: e.store, Signer: e.signer, KillSwitch: e.control, Registerer: e.reg,
		Logger: logger, Now: e.clock.Now, EventWindow: e.opts.eventWindow,
	}, heartbeat.SettingsFromConfig(e.cfg))
	adminSettings := &killswitch.Settings{
		Credentials:            auth.NewCredentials(e.cfg),
		Thresholds:             heartbeat.PolicyOf(e.cfg),
		DefaultShutdownTimeout: time.Duration(e.cfg.Bridge.KillSwitch.ShutdownTimeout),
	}
	e.mux = http.NewServeMux()
	e.recv.Register(e.mux)
	(&killswitch.API{
		Control: e.control, Store: e.store, Logger: logger, Now: e.clock.Now, Signer: e.signer,
		Settings: func() *killswitch.Settings { return adminSettings },
	}).Register(e.mux)
	metrics := collector.New(e.store, collector.Options{
		Thresholds: func() *fleet.ThresholdPolicy { return heartbeat.PolicyOf(e.cfg) },
		Tenants:    func() []string { return e.cfg.TenantIDs() },
		Now:        e.clock.Now,
	})
	e.mux.Handle("/metrics", metrics.Handler(e.reg, logger))
	e.handler = e.recv.Routes(e.mux)
}

// stop closes the kill switch and the ledger.
func (e *env) stop() {
	e.control.Close()
	_ = e.ledger.Close()
}

// restart simulates a crash and a restart as app.New does it: the ledger is
// closed (queued acknowledgements are flushed; a real crash may lose them,
// which only redelivers a command) and a new Control loads it; the
// store is carried over as the last snapshot when withSnapshot, otherwise
// the new store starts empty.
func (e *env) restart(withSnapshot bool) {
	e.t.Helper()
	var snap []byte
	if withSnapshot {
		var buf bytes.Buffer
		_, err := e.store.EncodeSnapshot(&buf, e.clock.Now())
		require.NoError(e.t, err)
		snap = buf.Bytes()
	}
	e.stop()
	e.start(snap)
}

// answer is a recorded HTTP answer with its JSON body decoded.
type answer struct {
	status int
	header http.Header
	raw    string
	body   map[string]any
}

// keys returns the sorted top-level keys of the JSON body.
func (a *answer) keys() []string { return slices.Sorted(maps.Keys(a.body)) }

func (a *answer) str(key string) string {
	s, _ := a.body[key].(string)
	return s
}

func (a *answer) obj(key string) map[string]any {
	o, _ := a.body[key].(map[string]any)
	return o
}

type request struct {
	method string
	path   string
	token  string // Authorization: Bearer <token> unless empty
	auth   string // a raw Authorization header, instead of token
	body   io.Reader
}

func (e *env) do(r request) *answer {
	e.t.Helper()
	if r.method == "" {
		r.method = http.MethodPost
	}
	req := httptest.NewRequest(r.method, r.path, r.body)
	switch {
	case r.auth != "":
		req.Header.Set("Authorization", r.auth)
	case r.token != "":
		req.Header.Set("Authorization", "Bearer "+r.token)
	}
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req)
	return decodeAnswer(e.t, rec.Code, rec.Header(), rec.Body.Bytes())
}

func decodeAnswer(t testing.TB, status int, h http.Header, raw []byte) *answer {
	t.Helper()
	a := &answer{status: status, header: h, raw: string(raw)}
	if strings.HasPrefix(h.Get("Content-Type"), "application/json") {
		require.NoError(t, json.Unmarshal(raw, &a.body), "answer %d is not JSON: %s", status, raw)
	}
	return a
}

// beacon sends a Beacon heartbeat of id with body (may be empty).
func (e *env) beacon(id, token, body string) *answer {
	e.t.Helper()
	return e.do(request{path: "/api/v1/installations/" + id + "/heartbeat", token: token, body: strings.NewReader(body)})
}

// abs sends an ABS heartbeat of id with body (may be empty).
func (e *env) abs(id, token, body string) *answer {
	e.t.Helper()
	return e.do(request{path: "/v1/heartbeat?agentId=" + id, token: token, body: strings.NewReader(body)})
}

// event sends an ABS event.
func (e *env) event(token string, ev map[string]any) *answer {
	e.t.Helper()
	b, err := json.Marshal(ev)
	require.NoError(e.t, err)
	return e.do(request{path: "/v1/events", token: token, body: bytes.NewReader(b)})
}

// register registers id with acme's API key and returns its runtime token.
func (e *env) register(id string) string {
	e.t.Helper()
	a := e.beacon(id, acmeKey, `{"status":"healthy"}`)
	require.Equal(e.t, http.StatusOK, a.status, a.raw)
	require.Equal(e.t, true, a.body["registered"], a.raw)
	tok, _ := a.obj("runtime_token")["runtime_token"].(string)
	require.NotEmpty(e.t, tok, a.raw)
	return tok
}

func (e *env) agent(tenant, id string) (heartbeat.Agent, bool) {
	return e.store.Get(fleet.Key{Tenant: tenant, AgentID: id})
}

// counter returns the value of the counter name{labels} in the registry, or
// -1 when the series does not exist.
func (e *env) counter(name string, labels map[string]string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	require.NoError(e.t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return -1
}

func (e *env) heartbeats(protocol, result string) float64 {
	e.t.Helper()
	return e.counter("sentinel_heartbeats_total", map[string]string{"protocol": protocol, "result": result})
}

// scrape returns the /metrics exposition.
func (e *env) scrape() string {
	e.t.Helper()
	rec := httptest.NewRecorder()
	e.mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Equal(e.t, http.StatusOK, rec.Code)
	return rec.Body.String()
}

// rfc3339 formats t as the answers do.
func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
