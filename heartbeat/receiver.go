package heartbeat

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentsentinel/sentinel/auth"
	"github.com/agentsentinel/sentinel/config"
	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/jsonapi"
)

// KillSwitch is the durable kill-switch state the receiver consults. Both
// methods are called on the heartbeat path and must not wait for a disk.
type KillSwitch interface {
	// Revocation returns the revocation of a revoked agent.
	Revocation(fleet.Key) (fleet.Revocation, bool)
	// CommandAcknowledged records that the agent acknowledged command seq.
	CommandAcknowledged(k fleet.Key, seq uint32)
	// AgentRegistered records a registration, so that the kill switch still
	// knows the agent if sentinel crashes before the next snapshot.
	AgentRegistered(k fleet.Key, at time.Time)
	// Forgotten returns when the agent was last forgotten: runtime tokens
	// issued before are refused.
	Forgotten(k fleet.Key) (time.Time, bool)
}

// Settings is the reloadable part of the configuration the receiver uses.
// It is immutable once built; a reload swaps in a new one.
type Settings struct {
	// Thresholds resolves the thresholds in force for each agent.
	Thresholds *fleet.ThresholdPolicy
	// MaxZombieAfter bounds the thresholds an agent may ask for.
	MaxZombieAfter     int
	DefaultInterval    time.Duration
	MinInterval        time.Duration
	MaxInterval        time.Duration
	TokenTTL           time.Duration
	TokenRefreshBefore time.Duration
	// DefaultShutdownTimeout is bridge.kill_switch.shutdown_timeout.
	DefaultShutdownTimeout time.Duration
	Credentials            *auth.Credentials
	// TenantMaxAgents is each tenant's max_agents (0: the global cap only).
	TenantMaxAgents map[string]int
}

// SettingsFromConfig derives receiver settings from a validated configuration.
func SettingsFromConfig(cfg *config.Config) *Settings {
	h := cfg.Heartbeat
	return &Settings{
		Thresholds:             PolicyOf(cfg),
		MaxZombieAfter:         h.MaxZombieAfter,
		DefaultInterval:        time.Duration(h.DefaultInterval),
		MinInterval:            time.Duration(h.MinInterval),
		MaxInterval:            time.Duration(h.MaxInterval),
		TokenTTL:               time.Duration(h.TokenTTL),
		TokenRefreshBefore:     time.Duration(h.TokenRefreshBefore),
		DefaultShutdownTimeout: time.Duration(cfg.Bridge.KillSwitch.ShutdownTimeout),
		Credentials:            auth.NewCredentials(cfg),
		TenantMaxAgents:        tenantMaxAgents(cfg),
	}
}

func tenantMaxAgents(cfg *config.Config) map[string]int {
	limits := make(map[string]int, len(cfg.Tenants))
	for _, t := range cfg.Tenants {
		limits[t.ID] = t.MaxAgents
	}
	return limits
}

// ReceiverOptions are the receiver's collaborators.
type ReceiverOptions struct {
	Store      *Store
	Signer     *auth.Signer
	KillSwitch KillSwitch
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// EventWindow is how many of its latest event ids each tenant's
	// duplicate filter remembers at least; DefaultEventWindow when 0.
	EventWindow int
	// Observer, when set, learns of every accepted heartbeat that is not
	// answered "revoked" (the bridge announces recoveries from it).
	Observer BeatObserver
}

// BeatObserver learns of accepted heartbeats. It is called on the heartbeat
// path and must not block or wait for storage.
type BeatObserver interface {
	// BeatAccepted reports a heartbeat of k at at; previous is the one
	// before it (zero for a new agent), interval the beat's interval.
	BeatAccepted(k fleet.Key, at, previous time.Time, interval time.Duration)
}

// Receiver serves the agent-facing API of SPEC 2: Beacon and ABS heartbeats
// and ABS events.
type Receiver struct {
	store  *Store
	signer *auth.Signer
	kill   KillSwitch
	// forgotten is kill.Forgotten, taken once: a method value made per
	// heartbeat for the Authenticator was an allocation of every heartbeat.
	forgotten func(fleet.Key) (time.Time, bool)
	observer  BeatObserver
	logger    *slog.Logger
	now       func() time.Time
	settings  atomic.Pointer[Settings]
	// events suppresses repeated event_ids, in one window per tenant.
	events *eventFilter

	// heartbeats holds every label set of sentinel_heartbeats_total,
	// resolved once: counting then takes no lock and hashes no labels.
	heartbeats [numProtocols][numResults]prometheus.Counter
	refused    *prometheus.CounterVec
	// eventLocks serialise the events of one event id, striped by the hash
	// events keeps it by (the same id of two tenants shares a stripe).
	eventLocks [64]sync.Mutex
	// lastRefusalLog is when a refusal was last logged (unix ns).
	lastRefusalLog atomic.Int64
	bufs           sync.Pool
}

// protocol is the protocol label of sentinel_heartbeats_total.
type protocol uint8

const (
	protoBeacon protocol = iota
	protoABS
	protoEvents
	numProtocols
)

var protocolNames = [numProtocols]string{"beacon", "abs", "events"}

func (p protocol) String() string { return protocolNames[p] }

// result is the result label of sentinel_heartbeats_total.
type result uint8

const (
	resultAccepted result = iota
	resultRevoked
	resultDuplicate
	resultBadRequest
	resultUnauthorized
	resultForbidden
	resultTooLarge
	resultUnsupported
	resultRefused
	numResults
)

var resultNames = [numResults]string{
	"accepted", "revoked", "duplicate", "bad_request", "unauthorized", "forbidden", "too_large", "unsupported", "refused",
}

// NewReceiver returns a receiver using s until SetSettings swaps it.
func NewReceiver(o ReceiverOptions, s *Settings) *Receiver {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	rc := &Receiver{
		store:     o.Store,
		signer:    o.Signer,
		kill:      o.KillSwitch,
		forgotten: o.KillSwitch.Forgotten,
		observer:  o.Observer,
		logger:    o.Logger,
		now:       o.Now,
		events:    newEventFilter(o.EventWindow),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sentinel_agents_refused_total",
			Help: "Registrations refused because heartbeat.max_agents or the tenant's max_agents was reached.",
		}, []string{"tenant"}),
	}
	rc.bufs.New = func() any { b := make([]byte, 0, 4096); return &b }
	heartbeats := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sentinel_heartbeats_total",
		Help: "Heartbeat requests received, by protocol (beacon, abs, events) and result.",
	}, []string{"protocol", "result"})
	for p := range numProtocols {
		for r := range numResults {
			rc.heartbeats[p][r] = heartbeats.WithLabelValues(p.String(), resultNames[r])
		}
	}
	if o.Registerer != nil {
		o.Registerer.MustRegister(heartbeats, rc.refused)
	}
	rc.SetSettings(s)
	return rc
}

// SetSettings swaps in new settings (config reload), and the tenants'
// agent limits with them.
func (rc *Receiver) SetSettings(s *Settings) {
	old := rc.settings.Swap(s)
	rc.store.SetTenantLimits(s.TenantMaxAgents)
	rc.events.retain(s.Credentials.HasTenant)
	for _, id := range s.Credentials.Tenants() {
		rc.refused.WithLabelValues(id)
	}
	if old != nil {
		// A removed tenant leaves /metrics entirely.
		for _, id := range old.Credentials.Tenants() {
			if !s.Credentials.HasTenant(id) {
				rc.refused.DeleteLabelValues(id)
			}
		}
	}
}

// beatBody is the heartbeat schema of SPEC 2.1. Every field is optional and
// unknown fields are ignored.
type beatBody struct {
	Status                   string        `json:"status"`
	UptimeSeconds            *float64      `json:"uptime_seconds"`
	HeartbeatIntervalSeconds *float64      `json:"heartbeat_interval_seconds"`
	Version                  string        `json:"version"`
	ExitCode                 *int64        `json:"exit_code"`
	SilentAfter              *int64        `json:"silent_after"`
	ZombieAfter              *int64        `json:"zombie_after"`
	Platform                 *platformBody `json:"platform"`
	Metrics                  *metricsBody  `json:"metrics"`
}

type platformBody struct {
	Type         string `json:"type"`
	ContainerID  string `json:"container_id"`
	Image        string `json:"image"`
	PodName      string `json:"pod_name"`
	Namespace    string `json:"namespace"`
	Node         string `json:"node"`
	FunctionName string `json:"function_name"`
	Region       string `json:"region"`
	Hostname     string `json:"hostname"`
	OS           string `json:"os"`
	PID          int64  `json:"pid"`
}

type metricsBody struct {
	RequestsHandled float64 `json:"requests_handled"`
	Errors          float64 `json:"errors"`
	AvgLatencyMs    float64 `json:"avg_latency_ms"`
}

// beat is one heartbeat on its way through the receiver.
type beat struct {
	proto     protocol
	principal auth.Principal
	key       fleet.Key
	body      beatBody
	shutdown  bool // agent.shutdown event: the final signal whatever the body says
	settings  *Settings
	now       time.Time

	res        BeatResult
	interval   time.Duration
	thresholds fleet.Thresholds // in force for the agent after this beat
	state      fleet.State
	token      string // runtime token issued by this beat
	tokenExp   time.Time
	tokenVer   uint32
}

func (rc *Receiver) count(p protocol, r result) { rc.heartbeats[p][r].Inc() }

// refuse answers the error that ended a request of protocol p, and counts
// the request in sentinel_heartbeats_total with the result its status
// means. It is the receiver's one place where an error becomes an answer; a
// 405 and an internal error have no result label and are not counted.
func (rc *Receiver) refuse(w http.ResponseWriter, p protocol, err error) {
	var e *jsonapi.Error
	if errors.As(err, &e) {
		if res, ok := resultOfStatus(e.Status); ok {
			rc.count(p, res)
		}
	}
	jsonapi.WriteError(w, rc.logger, err)
}

// resultOfStatus is the result label of a refused heartbeat's status.
func resultOfStatus(status int) (result, bool) {
	switch status {
	case http.StatusBadRequest:
		return resultBadRequest, true
	case http.StatusUnauthorized:
		return resultUnauthorized, true
	case http.StatusForbidden:
		return resultForbidden, true
	case http.StatusRequestEntityTooLarge:
		return resultTooLarge, true
	case http.StatusUnprocessableEntity:
		return resultUnsupported, true
	case http.StatusTooManyRequests:
		return resultRefused, true
	}
	return 0, false
}

// admit checks the method and resolves the bearer credential of a heartbeat.
func (rc *Receiver) admit(r *http.Request, b *beat) error {
	if err := jsonapi.CheckMethod(r, http.MethodPost); err != nil {
		return err
	}
	p, err := auth.Authenticator{
		Credentials: b.settings.Credentials, Signer: rc.signer,
		TokenTTL: b.settings.TokenTTL, Forgotten: rc.forgotten,
	}.Authenticate(r, b.now)
	switch {
	case errors.Is(err, auth.ErrTokenExpired):
		return jsonapi.Unauthorized("runtime token expired; register again with the tenant API key")
	case err != nil:
		return jsonapi.Unauthorized(err.Error())
	case p.Kind != auth.KindRuntimeToken && p.Kind != auth.KindTenantKey:
		return jsonapi.Forbidden("this credential cannot send heartbeats; use a tenant API key or the agent's runtime token")
	}
	b.principal = p
	return nil
}

// authorizeAgent checks that the principal may beat agent id and sets the key.
func (rc *Receiver) authorizeAgent(b *beat, id string) error {
	if !fleet.ValidAgentID(id) {
		return jsonapi.BadRequest("invalid agent id: must match ^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
	}
	if t := b.principal.Token; t != nil && t.AgentID != id {
		return jsonapi.Forbidden("runtime token is bound to another agent")
	}
	b.key = fleet.Key{Tenant: b.principal.Tenant, AgentID: id}
	return nil
}

// validate turns the body into a BeatRequest, or returns the 400 or 422.
// tenant are the thresholds of the agent's tenant.
func (rc *Receiver) validate(b *beat, tenant fleet.Thresholds, req *BeatRequest) error {
	bad := func(msg string) error { return jsonapi.BadRequest(msg) }
	// A value outside an enumeration is well-formed but unsupported: 422.
	unsupported := func(msg string) error { return jsonapi.Unprocessable(msg) }
	body := &b.body
	status, err := ParseStatus(body.Status)
	if err != nil {
		return unsupported(err.Error())
	}
	if b.shutdown {
		status = StatusShutdown
	}
	s := b.settings
	b.interval = s.DefaultInterval
	if v := body.HeartbeatIntervalSeconds; v != nil {
		if !(*v > 0) || math.IsInf(*v, 0) {
			return bad("heartbeat_interval_seconds must be a positive number")
		}
		// Clamp in float seconds first: a huge value would overflow Duration.
		secs := min(*v, s.MaxInterval.Seconds())
		b.interval = min(max(time.Duration(secs*float64(time.Second)), s.MinInterval), s.MaxInterval)
	}
	if !validString(body.Version) {
		return bad("version must be valid UTF-8 of at most 255 bytes")
	}
	*req = BeatRequest{Key: b.key, Time: b.now, Interval: b.interval, Status: status, Version: body.Version}
	b.thresholds = tenant
	if body.SilentAfter != nil || body.ZombieAfter != nil {
		// The agent's own thresholds, bounded by the configuration: a
		// compromised agent must not be able to postpone its own ZOMBIE
		// (and the kill switch) at will. The answer names the key, never its
		// value. A field left out is the tenant's, at this beat.
		own := tenant
		for _, f := range [...]struct {
			v   *int64
			dst *int
		}{{body.SilentAfter, &own.SilentAfter}, {body.ZombieAfter, &own.ZombieAfter}} {
			if f.v == nil {
				continue
			}
			if *f.v < 1 || *f.v > int64(s.MaxZombieAfter) {
				return unsupported("silent_after and zombie_after must lie between 1 and heartbeat.max_zombie_after")
			}
			*f.dst = int(*f.v)
		}
		if own.ZombieAfter <= own.SilentAfter {
			return unsupported("zombie_after must be greater than silent_after (a field the heartbeat leaves out is the tenant's)")
		}
		req.Thresholds, b.thresholds = own, own
	}
	if v := body.UptimeSeconds; v != nil {
		if *v < 0 {
			return bad("uptime_seconds must not be negative")
		}
		req.Uptime, req.HasUptime = *v, true
	}
	if v := body.ExitCode; v != nil {
		req.ExitCode, req.HasExitCode = *v, true
	}
	if m := body.Metrics; m != nil {
		if m.RequestsHandled < 0 || m.Errors < 0 || m.AvgLatencyMs < 0 {
			return bad("metrics.requests_handled, metrics.errors and metrics.avg_latency_ms must not be negative")
		}
		req.Metrics = ReportedMetrics(*m)
		req.HasMetrics = true
	}
	if p := body.Platform; p != nil {
		typ, err := ParsePlatformType(p.Type)
		if err != nil {
			return unsupported(err.Error())
		}
		for _, f := range [...]struct{ name, value string }{
			{"container_id", p.ContainerID}, {"image", p.Image}, {"pod_name", p.PodName},
			{"namespace", p.Namespace}, {"node", p.Node}, {"function_name", p.FunctionName},
			{"region", p.Region}, {"hostname", p.Hostname}, {"os", p.OS},
		} {
			if !validString(f.value) {
				return bad("platform." + f.name + " must be valid UTF-8 of at most 255 bytes")
			}
		}
		req.Platform = Platform{
			Type: typ, ContainerID: p.ContainerID, Image: p.Image, PodName: p.PodName,
			Namespace: p.Namespace, Node: p.Node, FunctionName: p.FunctionName, Region: p.Region,
			Hostname: p.Hostname, OS: p.OS, PID: p.PID,
		}
		req.HasPlatform = true
	}
	if t := b.principal.Token; t != nil {
		req.PresentedTokenVersion = t.Version
		// Only the Beacon answer has a refreshed_token field.
		req.IssueToken = b.proto == protoBeacon && t.ExpiresAt.Sub(b.now) <= s.TokenRefreshBefore
	} else {
		// Only the Beacon answer has room for the runtime token.
		req.IssueTokenOnRegister = b.proto == protoBeacon
	}
	return nil
}

// validString keeps agent-reported strings fit to be label values.
func validString(s string) bool { return len(s) <= MaxStringLen && utf8.ValidString(s) }

// process records the beat in the store and works out the answer's content,
// or returns the error to answer.
func (rc *Receiver) process(b *beat) error {
	// Resolved once: validate completes the agent's own thresholds with them,
	// and the store derives the state before the beat with them.
	tenant := b.settings.Thresholds.Tenant(b.key.Tenant)
	var req BeatRequest
	if err := rc.validate(b, tenant, &req); err != nil {
		return err
	}
	res, err := rc.store.Beat(&req, tenant)
	if errors.Is(err, ErrTooManyAgents) || errors.Is(err, ErrTenantTooManyAgents) {
		limit, msg := "heartbeat.max_agents", "agent limit reached (heartbeat.max_agents, shared by every tenant); no new agent is admitted"
		if errors.Is(err, ErrTenantTooManyAgents) {
			limit, msg = "tenants[].max_agents", "agent limit reached (this tenant's max_agents); no new agent of the tenant is admitted"
		}
		rc.refused.WithLabelValues(b.key.Tenant).Inc()
		// A fleet over the limit retries every interval: one line a minute
		// is enough, the counter has the rest.
		if last := rc.lastRefusalLog.Load(); b.now.UnixNano()-last >= int64(time.Minute) && rc.lastRefusalLog.CompareAndSwap(last, b.now.UnixNano()) {
			rc.logger.Warn("agent refused: max_agents reached (logged at most once a minute; see sentinel_agents_refused_total)",
				"limit", limit, "tenant", b.key.Tenant, "agent_id", b.key.AgentID,
				"agents", rc.store.Len(), "tenant_agents", rc.store.TenantLen(b.key.Tenant))
		}
		// Room appears only when an operator forgets agents or raises the
		// limit: asking again at the agent's own pace is soon enough.
		return jsonapi.TooMany(msg, b.interval)
	}
	b.res = res
	if res.AckedCommandSeq != 0 {
		rc.kill.CommandAcknowledged(b.key, res.AckedCommandSeq)
	}
	if res.Revoked {
		rc.count(b.proto, resultRevoked)
		b.state = fleet.StateRevoked
		return nil
	}
	rc.count(b.proto, resultAccepted)
	if rc.observer != nil {
		rc.observer.BeatAccepted(b.key, b.now, res.PreviousBeat, b.interval)
	}
	switch {
	case req.Status == StatusShutdown:
		b.state = fleet.StateStopped
		if req.HasExitCode {
			rc.logger.Info("agent stopped", "tenant", b.key.Tenant, "agent_id", b.key.AgentID, "exit_code", req.ExitCode)
		} else {
			rc.logger.Info("agent stopped", "tenant", b.key.Tenant, "agent_id", b.key.AgentID)
		}
	case res.Previous == fleet.StateZombie:
		b.state = fleet.StateRecovered
		rc.logger.Info("agent recovered", "tenant", b.key.Tenant, "agent_id", b.key.AgentID,
			"outage", b.now.Sub(res.PreviousBeat).Round(time.Millisecond), "last_heartbeat", res.PreviousBeat)
	default:
		b.state = fleet.StateActive
		if res.Previous == fleet.StateSilent {
			rc.logger.Info("agent active again", "tenant", b.key.Tenant, "agent_id", b.key.AgentID,
				"outage", b.now.Sub(res.PreviousBeat).Round(time.Millisecond))
		}
	}
	if res.Registered {
		rc.kill.AgentRegistered(b.key, b.now)
		rc.logger.Debug("agent registered", "tenant", b.key.Tenant, "agent_id", b.key.AgentID, "protocol", b.proto.String())
	}
	if res.TokenVersion != 0 {
		b.tokenVer = res.TokenVersion
		b.tokenExp = b.now.Add(b.settings.TokenTTL).Truncate(time.Second)
		if at, ok := rc.kill.Forgotten(b.key); ok && !b.tokenExp.Add(-b.settings.TokenTTL).After(at) {
			// Registered again in the second of its forget: the token
			// carries whole seconds, and stamped as issued in that second
			// it would be refused with the tokens from before the forget.
			b.tokenExp = b.tokenExp.Add(time.Second)
		}
		b.token = rc.signer.Issue(auth.RuntimeToken{Tenant: b.key.Tenant, AgentID: b.key.AgentID, Version: b.tokenVer, ExpiresAt: b.tokenExp})
	}
	return nil
}

func (rc *Receiver) newBeat(proto protocol) *beat {
	return &beat{proto: proto, settings: rc.settings.Load(), now: rc.now()}
}

// readBody reads and decodes the request body into into; w is only told to
// close the connection after a body over the limit.
func (rc *Receiver) readBody(w http.ResponseWriter, r *http.Request, into any) error {
	bufp := rc.bufs.Get().(*[]byte)
	defer rc.bufs.Put(bufp)
	body, err := jsonapi.ReadBody(w, r, *bufp)
	if err != nil {
		return err
	}
	*bufp = body[:0]
	return decodeRequest(body, into)
}

// readBeat reads the request body into buf and decodes it into into; it
// returns buf, grown to the body's size. The decoded strings do not borrow
// buf.
func readBeat(w http.ResponseWriter, r *http.Request, buf []byte, into *beatBody) ([]byte, error) {
	body, err := jsonapi.ReadBody(w, r, buf)
	if err != nil {
		return buf, err
	}
	return body[:0], decodeBeatRequest(body, into)
}

// Paths of the heartbeat routes.
const (
	absPath          = "/v1/heartbeat"
	beaconPathPrefix = "/api/v1/installations/"
	beaconPathSuffix = "/heartbeat"
)

// Register adds the agent-facing routes to mux.
func (rc *Receiver) Register(mux *http.ServeMux) {
	// Spelled out (Routes' fast path uses the same paths, and its test
	// checks that both agree): the documentation's test finds routes here.
	mux.HandleFunc("/api/v1/installations/{id}/heartbeat", rc.serveBeacon)
	mux.HandleFunc("/v1/heartbeat", rc.serveABS)
	mux.HandleFunc("/v1/events", rc.serveEvents)
}

// Routes serves the two heartbeat routes itself and hands every other
// request to mux, which must hold the routes of Register and no
// host-specific pattern. ServeMux's matching (and the request fields it
// fills in) was a tenth of a heartbeat's cost; the heartbeat routes are
// taken here only when ServeMux would give them the same handler and id: a
// path in the default escaping (a client's own escaping, such as %2F in an
// id, goes to mux) with an id of one segment that is not "." or "..".
func (rc *Receiver) Routes(mux http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.RawPath == "" {
			if p := r.URL.Path; p == absPath {
				rc.serveABS(w, r)
				return
			} else if id, ok := beaconID(p); ok {
				rc.serveBeat(w, r, protoBeacon, id)
				return
			}
		}
		mux.ServeHTTP(w, r)
	})
}

// beaconID returns the id of a Beacon heartbeat path, if p is one.
func beaconID(p string) (string, bool) {
	rest, ok := strings.CutPrefix(p, beaconPathPrefix)
	if !ok {
		return "", false
	}
	id, ok := strings.CutSuffix(rest, beaconPathSuffix)
	if !ok || id == "" || id == "." || id == ".." || strings.IndexByte(id, '/') >= 0 {
		return "", false
	}
	return id, true
}

func (rc *Receiver) serveBeacon(w http.ResponseWriter, r *http.Request) {
	rc.serveBeat(w, r, protoBeacon, r.PathValue("id"))
}

func (rc *Receiver) serveABS(w http.ResponseWriter, r *http.Request) {
	rc.serveBeat(w, r, protoABS, agentIDParam(r.URL))
}

// agentIDParam returns u.Query().Get("agentId") without parsing the query
// into a map when it is the usual one, agentId alone with nothing to
// unescape.
func agentIDParam(u *url.URL) string {
	if v, ok := strings.CutPrefix(u.RawQuery, "agentId="); ok && !strings.ContainsAny(v, "&;%+") {
		return v
	}
	return u.Query().Get("agentId")
}

// serveBeat serves a Beacon or ABS heartbeat of agent id.
func (rc *Receiver) serveBeat(w http.ResponseWriter, r *http.Request, proto protocol, id string) {
	b := rc.newBeat(proto)
	// One pooled buffer holds the body, then the answer.
	bufp := rc.bufs.Get().(*[]byte)
	defer rc.bufs.Put(bufp)
	err := rc.admit(r, b)
	if err == nil {
		err = rc.authorizeAgent(b, id)
	}
	if err == nil {
		*bufp, err = readBeat(w, r, (*bufp)[:0], &b.body)
	}
	if err == nil {
		err = rc.process(b)
	}
	if err != nil {
		rc.refuse(w, b.proto, err)
		return
	}
	out := (*bufp)[:0]
	if proto == protoBeacon {
		out = rc.appendBeaconAnswer(out, b)
	} else {
		out = append(rc.appendABSAnswer(out, b), '}')
	}
	// The newline jsonapi.Raw appends fits in the buffer kept.
	*bufp = append(out, '\n')[:0]
	jsonapi.Raw(w, http.StatusOK, out)
}

// eventBody is an ABS event (SPEC 2.2).
type eventBody struct {
	EventID   string          `json:"event_id"`
	TenantID  string          `json:"tenant_id"`
	EventType string          `json:"event_type"`
	Source    string          `json:"source"`
	Payload   json.RawMessage `json:"payload"`
}

func (rc *Receiver) serveEvents(w http.ResponseWriter, r *http.Request) {
	b := rc.newBeat(protoEvents)
	out, err := rc.event(w, r, b)
	if err != nil {
		rc.refuse(w, b.proto, err)
		return
	}
	jsonapi.Raw(w, http.StatusOK, out)
}

// event takes an ABS event from the request to the store and returns the
// answer's body; w is only told to close the connection after a body over
// the limit.
func (rc *Receiver) event(w http.ResponseWriter, r *http.Request, b *beat) ([]byte, error) {
	var ev eventBody
	if err := rc.admit(r, b); err != nil {
		return nil, err
	}
	if err := rc.readBody(w, r, &ev); err != nil {
		return nil, err
	}
	switch {
	case ev.EventID == "" || len(ev.EventID) > 128 || !utf8.ValidString(ev.EventID):
		return nil, jsonapi.BadRequest("event_id is required (at most 128 bytes)")
	case ev.TenantID == "":
		return nil, jsonapi.BadRequest("tenant_id is required")
	case ev.TenantID != b.principal.Tenant:
		return nil, jsonapi.Forbidden("tenant_id is not the credential's tenant")
	}
	switch ev.EventType {
	case "":
		return nil, jsonapi.BadRequest("event_type is required")
	case "agent.heartbeat":
	case "agent.shutdown":
		b.shutdown = true
	default:
		return nil, jsonapi.Unprocessable("unsupported event_type " + strconv.Quote(ev.EventType) + "; supported: agent.heartbeat, agent.shutdown")
	}
	if err := rc.authorizeAgent(b, ev.Source); err != nil {
		return nil, err
	}
	e := rc.events.event(b.key.Tenant, ev.EventID)
	// The check, the processing and the record are one step for each event
	// id: two copies of an event arriving together are processed once.
	mu := &rc.eventLocks[e.h%uint64(len(rc.eventLocks))]
	mu.Lock()
	defer mu.Unlock()
	if e.seen() {
		rc.count(b.proto, resultDuplicate)
		return json.Marshal(struct {
			EventID   string `json:"event_id"`
			AgentID   string `json:"agentId"`
			Duplicate bool   `json:"duplicate"`
		}{ev.EventID, ev.Source, true})
	}
	if len(ev.Payload) > 0 && string(ev.Payload) != "null" {
		// The heartbeat decoder: json.Unmarshal's result, at its fast
		// path's cost for the usual payload.
		if err := decodeBeatBody(ev.Payload, &b.body); err != nil {
			return nil, jsonapi.BadRequest("malformed payload: " + err.Error())
		}
	}
	if err := rc.process(b); err != nil {
		return nil, err
	}
	e.add()
	out := rc.appendABSAnswer(make([]byte, 0, 256), b)
	out = append(out, `,"event_id":`...)
	out = appendJSONString(out, ev.EventID)
	return append(out, `,"duplicate":false}`...), nil
}

// The answers are appended by hand: they are written for every heartbeat and
// reflection-based encoding would be most of a heartbeat's cost.

func (rc *Receiver) appendBeaconAnswer(out []byte, b *beat) []byte {
	out = append(out, `{"installation_id":`...)
	out = appendJSONString(out, b.key.AgentID)
	switch b.state {
	case fleet.StateRevoked:
		return rc.appendRevocation(out, b)
	case fleet.StateStopped:
		return append(out, `,"lease_renewed":false,"state":"STOPPED"}`...)
	}
	out = append(out, `,"lease_renewed":true,"state":"`...)
	out = append(out, b.state.String()...)
	out = append(out, `","lease_expires_at":"`...)
	out = appendTime(out, b.now.Add(b.interval*time.Duration(b.thresholds.SilentAfter)))
	out = append(out, `","next_heartbeat_at":"`...)
	out = appendTime(out, b.now.Add(b.interval))
	out = append(out, `","heartbeat_interval_seconds":`...)
	out = appendSeconds(out, b.interval)
	out = append(out, `,"command":`...)
	out = appendCommand(out, b.res.Command)
	// A token issued to a beat that came with a runtime token is a refresh,
	// even when the beat re-registered the agent (after a crash); only a
	// registration with the tenant key gets "runtime_token".
	refreshed := b.token != "" && b.principal.Token != nil
	if refreshed {
		out = append(out, `,"refreshed_token":`...)
		out = b.appendToken(out)
	} else {
		out = append(out, `,"refreshed_token":null`...)
	}
	if b.res.Registered {
		out = append(out, `,"registered":true,"lease_duration_seconds":`...)
		out = appendSeconds(out, b.interval*time.Duration(b.thresholds.SilentAfter))
		if b.token != "" && !refreshed {
			out = append(out, `,"runtime_token":`...)
			out = b.appendToken(out)
		}
	}
	return append(out, '}')
}

func (b *beat) appendToken(out []byte) []byte {
	out = append(out, `{"runtime_token":"`...)
	out = append(out, b.token...)
	out = append(out, `","expires_at":"`...)
	out = appendTime(out, b.tokenExp)
	out = append(out, `","token_version":`...)
	out = strconv.AppendUint(out, uint64(b.tokenVer), 10)
	return append(out, '}')
}

// appendABSAnswer appends the ABS answer without its closing brace, so the
// events endpoint can add its fields.
func (rc *Receiver) appendABSAnswer(out []byte, b *beat) []byte {
	out = append(out, `{"status":"`...)
	out = append(out, b.state.String()...)
	out = append(out, `","agentId":`...)
	out = appendJSONString(out, b.key.AgentID)
	switch b.state {
	case fleet.StateRevoked:
		return rc.appendRevocationFields(out, b)
	case fleet.StateStopped:
		return out
	}
	out = append(out, `,"nextDeadline":"`...)
	out = appendTime(out, b.now.Add(b.interval))
	out = append(out, '"')
	if b.res.Command != fleet.CommandNone {
		out = append(out, `,"command":`...)
		out = appendCommand(out, b.res.Command)
	}
	return out
}

// appendRevocation appends the revoked fields of the Beacon answer (SPEC
// 2.1) and the closing brace.
func (rc *Receiver) appendRevocation(out []byte, b *beat) []byte {
	out = append(out, `,"lease_renewed":false`...)
	return append(rc.appendRevocationFields(out, b), '}')
}

// appendRevocationFields appends "revoked", "reason" and "shutdown_timeout_ms".
func (rc *Receiver) appendRevocationFields(out []byte, b *beat) []byte {
	rev, ok := rc.kill.Revocation(b.key)
	if !ok {
		// Reinstated between the beat and this answer: still answer revoked,
		// with the configured grace; the next heartbeat renews the lease.
		rev = fleet.Revocation{Reason: "Revoked by the kill switch", ShutdownTimeout: b.settings.DefaultShutdownTimeout}
	}
	out = append(out, `,"revoked":true,"reason":`...)
	out = appendJSONString(out, rev.Reason)
	out = append(out, `,"shutdown_timeout_ms":`...)
	return strconv.AppendInt(out, rev.ShutdownTimeout.Milliseconds(), 10)
}

func appendCommand(out []byte, c fleet.Command) []byte {
	if c == fleet.CommandNone {
		return append(out, "null"...)
	}
	out = append(out, '"')
	out = append(out, c.String()...)
	return append(out, '"')
}

// appendTime appends t in UTC as time.RFC3339Nano does, by hand for the
// years of four digits: two of them are in every Beacon answer, and the
// layout interpreter cost more than the rest of the answer. The date comes
// from the Unix day in one step (time's Date and Clock each derive it
// again), the digits two at a time.
func appendTime(out []byte, t time.Time) []byte {
	secs := t.Unix()
	if secs < fourDigitYears[0] || secs >= fourDigitYears[1] {
		return t.UTC().AppendFormat(out, time.RFC3339Nano)
	}
	days, rem := secs/86400, secs%86400
	if rem < 0 {
		days, rem = days-1, rem+86400
	}
	year, month, day := civilDate(days)
	var b [30]byte // 2006-01-02T15:04:05.999999999Z
	put2(b[0:], year/100)
	put2(b[2:], year%100)
	b[4] = '-'
	put2(b[5:], month)
	b[7] = '-'
	put2(b[8:], day)
	b[10] = 'T'
	put2(b[11:], int(rem/3600))
	b[13] = ':'
	put2(b[14:], int(rem/60%60))
	b[16] = ':'
	put2(b[17:], int(rem%60))
	n := 19
	if ns := t.Nanosecond(); ns != 0 {
		// Nine digits, less the trailing zeros, as the layout's .999999999.
		b[19] = '.'
		b[20] = byte('0' + ns/100_000_000)
		put2(b[21:], ns/1_000_000%100)
		put2(b[23:], ns/10_000%100)
		put2(b[25:], ns/100%100)
		put2(b[27:], ns%100)
		n = 29
		for b[n-1] == '0' {
			n--
		}
	}
	b[n] = 'Z'
	return append(out, b[:n+1]...)
}

// appendSeconds appends d in seconds as strconv.AppendFloat(out,
// d.Seconds(), 'f', -1, 64) does; whole seconds, the usual interval, as an
// integer, which is that text at a fraction of the cost.
func appendSeconds(out []byte, d time.Duration) []byte {
	if d%time.Second == 0 {
		return strconv.AppendInt(out, int64(d/time.Second), 10)
	}
	return strconv.AppendFloat(out, d.Seconds(), 'f', -1, 64)
}

// fourDigitYears are the Unix seconds of 1000-01-01 and 10000-01-01, the
// range appendTime formats itself.
var fourDigitYears = [2]int64{
	time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC).Unix(),
	time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC).Unix(),
}

// civilDate returns the proleptic Gregorian date of the Unix day days
// (Howard Hinnant's days_from_civil inverse, in 400-year eras of 146097
// days counted from 0000-03-01, so that the leap day ends its year).
func civilDate(days int64) (year, month, day int) {
	z := days + 719468
	era := z / 146097
	if z < 0 {
		era = (z - 146096) / 146097
	}
	doe := z - era*146097                                  // day of era, [0, 146096]
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365 // year of era, [0, 399]
	doy := doe - (365*yoe + yoe/4 - yoe/100)               // day of the March-based year, [0, 365]
	mp := (5*doy + 2) / 153                                // March-based month, [0, 11]
	day = int(doy - (153*mp+2)/5 + 1)
	month = int(mp + 3)
	if mp >= 10 {
		month = int(mp - 9)
	}
	year = int(yoe + era*400)
	if month <= 2 {
		year++
	}
	return year, month, day
}

// put2 writes v, 0 <= v < 100, as two decimal digits at b[0:2].
func put2(b []byte, v int) {
	b[0], b[1] = byte('0'+v/10), byte('0'+v%10)
}

// appendJSONString appends s as a JSON string.
func appendJSONString(out []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x7f {
			q, _ := json.Marshal(s)
			return append(out, q...)
		}
	}
	out = append(out, '"')
	out = append(out, s...)
	return append(out, '"')
}

// decodeRequest parses a request body, with the fast heartbeat decoder when it is
// one, or returns the 400.
func decodeRequest(body []byte, into any) error {
	if bb, isBeat := into.(*beatBody); isBeat {
		return decodeBeatRequest(body, bb)
	}
	return jsonapi.Decode(body, into)
}

// decodeBeatRequest parses a heartbeat body, or returns the 400; an empty
// body leaves into as it is, as jsonapi.Decode does.
func decodeBeatRequest(body []byte, into *beatBody) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	if err := decodeBeatBody(body, into); err != nil {
		return jsonapi.BadRequest("malformed JSON body: " + err.Error())
	}
	return nil
}
