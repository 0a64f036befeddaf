package killswitch

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
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/auth"
	"github.com/agentsentinel/sentinel/config"
	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/heartbeat"
	"github.com/agentsentinel/sentinel/ledger"
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

// ctx is the context of the tests' calls.
var ctx = context.Background()

// t0 is the fake clock's start.
var t0 = time.Date(2026, 2, 3, 12, 0, 0, 0, time.UTC)

var thresholds = fleet.Thresholds{SilentAfter: 5, ZombieAfter: 15}

func testConfig(shutdownTimeout string) string {
	return fmt.Sprintf(`
admin_tokens: [%s]
tenants:
  - id: acme
    api_keys: [%s]
    admin_tokens: [%s]
  - id: globex
    api_keys: [%s]
    admin_tokens: [%s]
bridge:
  bearer_token: %s
  kill_switch:
    shutdown_timeout: %s
`, globalAdmin, acmeKey, acmeAdmin, globexKey, globexAdmin, bridgeToken, shutdownTimeout)
}

// errDiskFull is what a failing ledger answers.
var errDiskFull = fmt.Errorf("%w: no space left on device", ledger.ErrUnavailable)

// flakyLedger is the real embedded ledger with commits that fail on demand,
// to check that a change that cannot be made durable is not made at all.
type flakyLedger struct {
	*embedded.Ledger
	fail atomic.Bool
	// beforeApply, when set, runs once inside Apply before the commit: what
	// happens while a change waits for the disk.
	beforeApply func()
}

func (l *flakyLedger) Apply(ctx context.Context, ops ...ledger.Op) (ledger.Result, error) {
	if l.fail.Load() {
		return ledger.Result{}, errDiskFull
	}
	if f := l.beforeApply; f != nil {
		l.beforeApply = nil
		f()
	}
	return l.Ledger.Apply(ctx, ops...)
}

// env is sentinel assembled as app.routes does it: configuration, store,
// journal, kill-switch control, receiver, admin API on one mux.
type env struct {
	t       *testing.T
	clock   *testutil.Clock
	cfg     *config.Config
	signer  *auth.Signer
	dir     string
	ledger  *flakyLedger
	control *Control
	store   *heartbeat.Store
	recv    *heartbeat.Receiver
	api     *API
	reg     *prometheus.Registry
	mux     *http.ServeMux
}

func newEnv(t *testing.T) *env { return newEnvTimeout(t, "5s") }

// newEnvTimeout sets bridge.kill_switch.shutdown_timeout, the default of
// revocations.
func newEnvTimeout(t *testing.T, shutdownTimeout string) *env {
	t.Helper()
	cfg, err := config.Parse([]byte(testConfig(shutdownTimeout)), t.TempDir())
	require.NoError(t, err)
	signer, err := auth.NewSigner(bytes.Repeat([]byte{0x5e}, auth.KeySize))
	require.NoError(t, err)
	e := &env{t: t, clock: testutil.NewClock(t0), cfg: cfg, signer: signer, dir: t.TempDir()}
	e.start(nil)
	t.Cleanup(e.stop)
	return e
}

// start opens the ledger, restores snapshot (when not nil) and builds the
// rest, in app.New's order.
func (e *env) start(snapshot []byte) {
	t := e.t
	t.Helper()
	l, err := embedded.Open(e.dir, embedded.Options{})
	require.NoError(t, err)
	e.ledger = &flakyLedger{Ledger: l}
	e.reg = prometheus.NewPedanticRegistry()
	logger := slog.New(slog.DiscardHandler)
	e.control, err = New(context.Background(), e.ledger, logger, e.reg)
	require.NoError(t, err)
	e.store = heartbeat.NewStore(e.cfg.Heartbeat.MaxAgents, e.control.NewAgent)
	if snapshot != nil {
		_, _, err := e.store.DecodeSnapshot(bytes.NewReader(snapshot))
		require.NoError(t, err)
	}
	e.control.SyncStore(e.store)
	e.recv = heartbeat.NewReceiver(heartbeat.ReceiverOptions{
		Store: e.store, Signer: e.signer, KillSwitch: e.control, Registerer: e.reg,
		Logger: logger, Now: e.clock.Now,
	}, heartbeat.SettingsFromConfig(e.cfg))
	settings := &Settings{
		Credentials:            auth.NewCredentials(e.cfg),
		Thresholds:             heartbeat.PolicyOf(e.cfg),
		DefaultShutdownTimeout: time.Duration(e.cfg.Bridge.KillSwitch.ShutdownTimeout),
	}
	e.api = &API{
		Control: e.control, Store: e.store, Logger: logger, Now: e.clock.Now, Signer: e.signer,
		Settings: func() *Settings { return settings },
	}
	e.mux = http.NewServeMux()
	e.recv.Register(e.mux)
	e.api.Register(e.mux)
}

// snapshot encodes the store as the app's periodic snapshot does.
func (e *env) snapshot() []byte {
	e.t.Helper()
	var buf bytes.Buffer
	_, err := e.store.EncodeSnapshot(&buf, e.clock.Now())
	require.NoError(e.t, err)
	return buf.Bytes()
}

// stop closes the control and the ledger.
func (e *env) stop() {
	if e.control != nil {
		e.control.Close()
	}
	if e.ledger != nil {
		_ = e.ledger.Close()
	}
}

// restart closes the ledger (what was acknowledged is durable) and starts
// again from it and snapshot (nil: an empty store).
func (e *env) restart(snapshot []byte) {
	e.t.Helper()
	e.stop()
	e.start(snapshot)
}

// settle waits until the queued registrations and acknowledgements are
// committed and back in the cache.
func (e *env) settle() {
	e.t.Helper()
	require.Eventually(e.t, func() bool {
		return e.control.asyncPending.Load() == 0 && e.control.ledger.(*flakyLedger).Ledger.Healthy() == nil
	}, 5*time.Second, time.Millisecond)
	s, err := e.ledger.Load(context.Background())
	require.NoError(e.t, err)
	require.NoError(e.t, e.control.waitFor(context.Background(), s.Revision))
}

func key(tenant, id string) fleet.Key { return fleet.Key{Tenant: tenant, AgentID: id} }

// beat records a heartbeat of tenant/id at the clock's time directly in the
// store (interval 1 m), registering the agent if needed.
func (e *env) beat(tenant, id string) {
	e.t.Helper()
	_, err := e.store.Beat(&heartbeat.BeatRequest{
		Key: key(tenant, id), Time: e.clock.Now(), Interval: time.Minute, Status: heartbeat.StatusHealthy,
	}, thresholds)
	require.NoError(e.t, err)
}

func (e *env) agent(tenant, id string) (heartbeat.Agent, bool) { return e.store.Get(key(tenant, id)) }

// controlState is a deep copy of a Control's durable state.
type controlState struct {
	Revocations map[fleet.Key]fleet.Revocation
	Commands    map[fleet.Key]PendingCommand
	Forgotten   map[fleet.Key]time.Time
}

func stateOf(c *Control) controlState {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return controlState{maps.Clone(c.state.Revocations), maps.Clone(c.state.Commands), maps.Clone(c.state.Forgotten)}
}

// answer is a recorded HTTP answer with its JSON body decoded.
type answer struct {
	status int
	header http.Header
	raw    string
	body   map[string]any
}

func (a *answer) keys() []string { return slices.Sorted(maps.Keys(a.body)) }

func (a *answer) str(key string) string {
	s, _ := a.body[key].(string)
	return s
}

func (a *answer) obj(key string) map[string]any {
	o, _ := a.body[key].(map[string]any)
	return o
}

// do sends method path with an optional bearer token and body.
func (e *env) do(method, path, token, body string) *answer {
	e.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, r)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	e.mux.ServeHTTP(rec, req)
	a := &answer{status: rec.Code, header: rec.Header(), raw: rec.Body.String()}
	if strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
		require.NoError(e.t, json.Unmarshal(rec.Body.Bytes(), &a.body), "answer %d is not JSON: %s", rec.Code, rec.Body.String())
	}
	return a
}

// requireError checks an error answer of SPEC 2.
func requireError(t *testing.T, a *answer, status int, msg string) {
	t.Helper()
	require.Equal(t, status, a.status, a.raw)
	require.Equal(t, "application/json", a.header.Get("Content-Type"))
	require.Equal(t, []string{"error"}, a.keys(), a.raw)
	require.Contains(t, a.str("error"), msg)
	if status == http.StatusUnauthorized {
		require.True(t, strings.HasPrefix(a.header.Get("WWW-Authenticate"), "Bearer"), a.header.Get("WWW-Authenticate"))
	}
}

// register registers id in acme through the Beacon protocol and returns its
// runtime token.
func (e *env) register(tenantKey, id string) string {
	e.t.Helper()
	a := e.do(http.MethodPost, "/api/v1/installations/"+id+"/heartbeat", tenantKey, `{"status":"healthy"}`)
	require.Equal(e.t, http.StatusOK, a.status, a.raw)
	tok, _ := a.obj("runtime_token")["runtime_token"].(string)
	require.NotEmpty(e.t, tok, a.raw)
	return tok
}

// counter returns the value of name{labels} in the registry, -1 if absent.
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

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
