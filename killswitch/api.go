package killswitch

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/agentsentinel/sentinel/auth"
	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/heartbeat"
	"github.com/agentsentinel/sentinel/jsonapi"
)

// Settings is the reloadable configuration of the admin API.
type Settings struct {
	Credentials            *auth.Credentials
	Thresholds             *fleet.ThresholdPolicy
	DefaultShutdownTimeout time.Duration
}

// API serves the kill switch and read APIs of SPEC 3 to admin tokens.
type API struct {
	Control  *Control
	Store    *heartbeat.Store
	Settings func() *Settings
	// Signer tells runtime tokens (403 here) from unknown credentials (401).
	Signer *auth.Signer
	Logger *slog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// DefaultRevokeReason is the reason of a revocation that gives none.
const DefaultRevokeReason = "Emergency shutdown initiated by admin"

// Page sizes of the list endpoint.
const (
	defaultListLimit = 100
	maxListLimit     = 1000
)

// Register adds the admin routes to mux.
func (a *API) Register(mux *http.ServeMux) {
	mux.Handle("/api/v1/installations", a.handle(a.serveList))
	mux.Handle("/api/v1/installations/{id}", a.handle(a.serveInstallation))
	mux.Handle("/api/v1/installations/{id}/revoke", a.handle(a.serveRevoke))
	mux.Handle("/api/v1/installations/{id}/command", a.handle(a.serveCommand))
	mux.Handle("/api/v1/revoke-all", a.handle(a.serveRevokeAll))
}

// errPersist is the message of every failure to read or commit the durable
// kill-switch state.
const errPersist = "cannot persist the change; nothing was changed, retry later"

// handle adapts an endpoint of the admin API. It is the one place its
// errors are mapped: an *jsonapi.Error is answered as it is; every other
// error an endpoint returns comes from Control or the Ledger (ErrUnavailable,
// ErrUnknownOutcome, a failed journal, a cancelled wait for the commit), a
// failure to read or commit durable state after which nothing changed and a
// retry may succeed: a 503, logged with its cause, which the client never
// sees.
func (a *API) handle(f jsonapi.Func) http.Handler {
	logger := a.logger()
	return jsonapi.Handle(logger, func(r *http.Request) (any, error) {
		v, err := f(r)
		var apiErr *jsonapi.Error
		if err != nil && !errors.As(err, &apiErr) {
			logger.Error("cannot persist kill-switch change", "err", err)
			return nil, jsonapi.Unavailable(errPersist, 0, err)
		}
		return v, err
	})
}

func (a *API) logger() *slog.Logger {
	if a.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Logger
}

func (a *API) now() time.Time {
	if a.Now != nil {
		return a.Now().UTC()
	}
	return time.Now().UTC()
}

// admin authenticates an admin token and resolves the tenant it acts on:
// a tenant admin acts on its own tenant; a global admin names it with
// ?tenant=, which only the list may omit (all tenants, returned as "").
func (a *API) admin(r *http.Request, tenantRequired bool) (string, *Settings, error) {
	s := a.Settings()
	p, err := auth.Authenticator{Credentials: s.Credentials, Signer: a.Signer}.Authenticate(r, a.now())
	if p.Kind == auth.KindRuntimeToken {
		// A genuine runtime token, even expired, is a credential of the
		// wrong kind (403); a forged one is unknown (401).
		return "", nil, jsonapi.Forbidden("an admin token is required; runtime tokens only send heartbeats")
	}
	if err != nil {
		return "", nil, jsonapi.Unauthorized(err.Error())
	}
	query := r.URL.Query().Get("tenant")
	switch p.Kind {
	case auth.KindTenantAdmin:
		if query != "" && query != p.Tenant {
			return "", nil, jsonapi.Forbidden("this admin token belongs to another tenant")
		}
		return p.Tenant, s, nil
	case auth.KindGlobalAdmin:
		if query == "" {
			if tenantRequired {
				return "", nil, jsonapi.BadRequest("a global admin token must name the tenant with ?tenant=")
			}
			return "", s, nil
		}
		if !s.Credentials.HasTenant(query) {
			return "", nil, jsonapi.NotFound(fmt.Sprintf("unknown tenant %q", query))
		}
		return query, s, nil
	default:
		return "", nil, jsonapi.Forbidden("an admin token is required")
	}
}

// agentRequest checks the method and the admin token of a request about
// the agent {id} of the path and resolves the agent's key, or returns the
// 405, 401, 403, 400 or 404 (unknown tenant) to answer.
func (a *API) agentRequest(r *http.Request, methods ...string) (fleet.Key, *Settings, error) {
	if err := jsonapi.CheckMethod(r, methods...); err != nil {
		return fleet.Key{}, nil, err
	}
	tenant, s, err := a.admin(r, true)
	if err != nil {
		return fleet.Key{}, nil, err
	}
	id := r.PathValue("id")
	if !fleet.ValidAgentID(id) {
		return fleet.Key{}, nil, jsonapi.BadRequest("invalid agent id: must match ^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
	}
	return fleet.Key{Tenant: tenant, AgentID: id}, s, nil
}

// decodeStrict reads an admin request body; unknown fields are errors here,
// because a misspelt "reason" silently ignored would be a surprise.
func decodeStrict(r *http.Request, v any) error {
	// No ResponseWriter: the server drains or closes after a body over the limit.
	body, err := jsonapi.ReadBody(nil, r, nil)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonapi.BadRequest("malformed JSON body: " + err.Error())
	}
	if dec.More() {
		return jsonapi.BadRequest("malformed JSON body: data after the object")
	}
	return nil
}

type revokeRequest struct {
	Reason            string `json:"reason"`
	ShutdownTimeoutMs *int64 `json:"shutdown_timeout_ms"`
}

// revocation validates a revoke request body into a revocation.
func (a *API) revocation(r *http.Request, s *Settings) (fleet.Revocation, error) {
	var req revokeRequest
	if err := decodeStrict(r, &req); err != nil {
		return fleet.Revocation{}, err
	}
	rev := fleet.Revocation{Reason: req.Reason, ShutdownTimeout: s.DefaultShutdownTimeout, RevokedAt: a.now(), Source: "admin"}
	if rev.Reason == "" {
		rev.Reason = DefaultRevokeReason
	}
	if len(rev.Reason) > 1024 {
		return rev, jsonapi.BadRequest("reason is longer than 1024 bytes")
	}
	if v := req.ShutdownTimeoutMs; v != nil {
		if *v < 0 || *v > int64(24*time.Hour/time.Millisecond) {
			return rev, jsonapi.BadRequest("shutdown_timeout_ms must be between 0 and 86400000")
		}
		rev.ShutdownTimeout = time.Duration(*v) * time.Millisecond
	}
	return rev, nil
}

type revocationJSON struct {
	Reason            string    `json:"reason"`
	ShutdownTimeoutMs int64     `json:"shutdown_timeout_ms"`
	RevokedAt         time.Time `json:"revoked_at"`
	Source            string    `json:"source"`
}

func toRevocationJSON(r fleet.Revocation) *revocationJSON {
	return &revocationJSON{Reason: r.Reason, ShutdownTimeoutMs: r.ShutdownTimeout.Milliseconds(), RevokedAt: r.RevokedAt.UTC(), Source: r.Source}
}

// notFound is the 404 of an agent sentinel does not know.
func notFound(k fleet.Key) error {
	return jsonapi.NotFound(fmt.Sprintf("agent %q not found", k.AgentID))
}

func (a *API) serveRevoke(r *http.Request) (any, error) {
	k, s, err := a.agentRequest(r, http.MethodPost, http.MethodDelete)
	if err != nil {
		return nil, err
	}
	if r.Method == http.MethodDelete {
		reinstated, err := a.Control.Reinstate(r.Context(), k)
		if err != nil {
			return nil, err
		}
		if !reinstated && !a.Control.Known(k) {
			return nil, notFound(k)
		}
		return map[string]any{"installation_id": k.AgentID, "revoked": false, "reinstated": reinstated}, nil
	}
	rev, err := a.revocation(r, s)
	if err != nil {
		return nil, err
	}
	if !a.Control.Known(k) {
		if _, revoked := a.Control.Revocation(k); !revoked {
			return nil, notFound(k)
		}
	}
	rev, _, err = a.Control.Revoke(r.Context(), k, rev)
	if err != nil {
		return nil, err
	}
	return struct {
		InstallationID string `json:"installation_id"`
		Revoked        bool   `json:"revoked"`
		*revocationJSON
	}{k.AgentID, true, toRevocationJSON(rev)}, nil
}

func (a *API) serveRevokeAll(r *http.Request) (any, error) {
	if err := jsonapi.CheckMethod(r, http.MethodPost); err != nil {
		return nil, err
	}
	tenant, s, err := a.admin(r, true)
	if err != nil {
		return nil, err
	}
	rev, err := a.revocation(r, s)
	if err != nil {
		return nil, err
	}
	n, err := a.Control.RevokeAll(r.Context(), a.Control.Keys(tenant), rev)
	if err != nil {
		return nil, err
	}
	return struct {
		Tenant  string `json:"tenant"`
		Revoked int    `json:"revoked"`
		*revocationJSON
	}{tenant, n, toRevocationJSON(rev)}, nil
}

type commandRequest struct {
	Command string `json:"command"`
}

func (a *API) serveCommand(r *http.Request) (any, error) {
	k, _, err := a.agentRequest(r, http.MethodPost)
	if err != nil {
		return nil, err
	}
	var req commandRequest
	if err := decodeStrict(r, &req); err != nil {
		return nil, err
	}
	if req.Command == "" {
		return nil, jsonapi.BadRequest(`"command" is required: pause, resume or terminate`)
	}
	cmd, ok := fleet.ParseCommand(req.Command)
	if !ok {
		return nil, jsonapi.Unprocessable(fmt.Sprintf("unsupported command %q; supported: pause, resume, terminate", req.Command))
	}
	if !a.Control.Known(k) {
		return nil, notFound(k)
	}
	pc, err := a.Control.Command(r.Context(), k, cmd, a.now())
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"installation_id": k.AgentID, "command": pc.Command.String(), "pending": true, "issued_at": pc.IssuedAt,
	}, nil
}

func (a *API) serveInstallation(r *http.Request) (any, error) {
	k, s, err := a.agentRequest(r, http.MethodGet, http.MethodDelete)
	if err != nil {
		return nil, err
	}
	if r.Method == http.MethodDelete {
		forgotten, err := a.Control.Forget(r.Context(), k, a.now)
		if err != nil {
			return nil, err
		}
		if !forgotten {
			return nil, notFound(k)
		}
		return map[string]any{"installation_id": k.AgentID, "forgotten": true}, nil
	}
	ag, ok := a.Store.Get(k)
	if !ok {
		return nil, notFound(k)
	}
	return a.detail(&ag, s, a.now()), nil
}

// summary is one agent in the list.
type summary struct {
	InstallationID string `json:"installation_id"`
	Tenant         string `json:"tenant"`
	State          string `json:"state"`
	Paused         bool   `json:"paused"`
	// MissedBeats is null for a STOPPED or REVOKED agent: it raises no
	// liveness alert, so a count of missed beats would mean nothing.
	MissedBeats     *int64    `json:"missed_beats"`
	LastHeartbeatAt time.Time `json:"last_heartbeat_at"`
	IntervalSeconds float64   `json:"heartbeat_interval_seconds"`
	Status          string    `json:"status"`
	Platform        string    `json:"platform"`
}

func newSummary(ag *heartbeat.Agent, s *Settings, now time.Time) summary {
	state := ag.State(now, s.Thresholds)
	sm := summary{
		InstallationID: ag.AgentID, Tenant: ag.Tenant, State: state.String(), Paused: ag.Paused,
		LastHeartbeatAt: ag.LastHeartbeat, IntervalSeconds: ag.Interval.Seconds(),
		Status: ag.Status.String(), Platform: ag.Platform.Type.String(),
	}
	if state != fleet.StateStopped && state != fleet.StateRevoked {
		missed := ag.MissedBeats(now)
		sm.MissedBeats = &missed
	}
	return sm
}

type platformJSON struct {
	Type         string `json:"type"`
	ContainerID  string `json:"container_id,omitempty"`
	Image        string `json:"image,omitempty"`
	PodName      string `json:"pod_name,omitempty"`
	Namespace    string `json:"namespace,omitempty"`
	Node         string `json:"node,omitempty"`
	FunctionName string `json:"function_name,omitempty"`
	Region       string `json:"region,omitempty"`
	Hostname     string `json:"hostname,omitempty"`
	OS           string `json:"os,omitempty"`
	PID          int64  `json:"pid,omitempty"`
}

type metricsJSON struct {
	RequestsHandled float64 `json:"requests_handled"`
	Errors          float64 `json:"errors"`
	AvgLatencyMs    float64 `json:"avg_latency_ms"`
}

type commandJSON struct {
	Command  string    `json:"command"`
	IssuedAt time.Time `json:"issued_at"`
}

// detail is the answer of GET /api/v1/installations/{id}.
type detail struct {
	summary
	RegisteredAt   time.Time `json:"registered_at"`
	LeaseExpiresAt time.Time `json:"lease_expires_at"`
	// ZombieAt is when the agent turns ZOMBIE without another heartbeat;
	// SilentAfter and ZombieAfter are the thresholds in force for it (its
	// own, else its tenant's, else the global ones).
	ZombieAt       time.Time       `json:"zombie_at"`
	SilentAfter    int             `json:"silent_after"`
	ZombieAfter    int             `json:"zombie_after"`
	Version        string          `json:"version"`
	UptimeSeconds  *float64        `json:"uptime_seconds"`
	ExitCode       *int64          `json:"exit_code"`
	Platform       platformJSON    `json:"platform"` // shadows the summary's platform type
	Metrics        *metricsJSON    `json:"metrics"`
	Revocation     *revocationJSON `json:"revocation"`
	PendingCommand *commandJSON    `json:"pending_command"`
	TokenVersion   uint32          `json:"token_version"`
}

func (a *API) detail(ag *heartbeat.Agent, s *Settings, now time.Time) detail {
	p := ag.Platform
	d := detail{
		summary:        newSummary(ag, s, now),
		RegisteredAt:   ag.RegisteredAt,
		LeaseExpiresAt: ag.LeaseExpiry(s.Thresholds),
		ZombieAt:       ag.ZombieDeadline(s.Thresholds),
		SilentAfter:    ag.Thresholds(s.Thresholds).SilentAfter,
		ZombieAfter:    ag.Thresholds(s.Thresholds).ZombieAfter,
		Version:        ag.Version,
		Platform: platformJSON{
			Type: p.Type.String(), ContainerID: p.ContainerID, Image: p.Image, PodName: p.PodName,
			Namespace: p.Namespace, Node: p.Node, FunctionName: p.FunctionName, Region: p.Region,
			Hostname: p.Hostname, OS: p.OS, PID: p.PID,
		},
		TokenVersion: ag.TokenVersion,
	}
	if ag.HasUptime {
		d.UptimeSeconds = &ag.UptimeSeconds
	}
	if ag.HasExitCode {
		d.ExitCode = &ag.ExitCode
	}
	if ag.HasMetrics {
		d.Metrics = &metricsJSON{ag.Metrics.RequestsHandled, ag.Metrics.Errors, ag.Metrics.AvgLatencyMs}
	}
	if rev, ok := a.Control.Revocation(ag.Key); ok {
		d.Revocation = toRevocationJSON(rev)
	}
	if pc, ok := a.Control.PendingCommand(ag.Key); ok {
		d.PendingCommand = &commandJSON{Command: pc.Command.String(), IssuedAt: pc.IssuedAt.UTC()}
	}
	return d
}

// serveList lists agents ordered by (tenant, agent id); the cursor is the
// opaque position after the last agent of the previous page, so pages stay
// stable while agents come and go.
func (a *API) serveList(r *http.Request) (any, error) {
	if err := jsonapi.CheckMethod(r, http.MethodGet); err != nil {
		return nil, err
	}
	tenant, s, err := a.admin(r, false)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	limit := defaultListLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxListLimit {
			return nil, jsonapi.BadRequest(fmt.Sprintf("limit must be an integer between 1 and %d", maxListLimit))
		}
		limit = n
	}
	var filter *fleet.State
	if v := q.Get("state"); v != "" {
		st, ok := fleet.ParseState(strings.ToUpper(v))
		if !ok {
			return nil, jsonapi.BadRequest(fmt.Sprintf("unknown state %q; use ACTIVE, SILENT, ZOMBIE, STOPPED or REVOKED", v))
		}
		filter = &st
	}
	var after fleet.Key
	if v := q.Get("cursor"); v != "" {
		raw, err := base64.RawURLEncoding.DecodeString(v)
		t, id, found := strings.Cut(string(raw), "\x00")
		if err != nil || !found {
			return nil, jsonapi.BadRequest("malformed cursor")
		}
		after = fleet.Key{Tenant: t, AgentID: id}
	}
	now := a.now()
	var page []summary
	less := func(x, y fleet.Key) int {
		if c := strings.Compare(x.Tenant, y.Tenant); c != 0 {
			return c
		}
		return strings.Compare(x.AgentID, y.AgentID)
	}
	total := 0
	// One pass keeps only the limit+1 smallest keys after the cursor, so a
	// page of a large fleet costs O(n log limit) and little memory.
	a.Store.Each(func(ag *heartbeat.Agent) bool {
		if tenant != "" && ag.Tenant != tenant {
			return true
		}
		if filter != nil && ag.State(now, s.Thresholds) != *filter {
			return true
		}
		total++
		if after.AgentID != "" && less(ag.Key, after) <= 0 {
			return true
		}
		if len(page) > limit && less(ag.Key, fleet.Key{Tenant: page[limit].Tenant, AgentID: page[limit].InstallationID}) >= 0 {
			return true
		}
		sm := newSummary(ag, s, now)
		sm.InstallationID, sm.Tenant = strings.Clone(sm.InstallationID), strings.Clone(sm.Tenant)
		i, _ := slices.BinarySearchFunc(page, sm, func(e, t summary) int {
			return less(fleet.Key{Tenant: e.Tenant, AgentID: e.InstallationID}, fleet.Key{Tenant: t.Tenant, AgentID: t.InstallationID})
		})
		page = slices.Insert(page, i, sm)
		if len(page) > limit+1 {
			page = page[:limit+1]
		}
		return true
	})
	var next *string
	if len(page) > limit {
		page = page[:limit]
		last := page[limit-1]
		c := base64.RawURLEncoding.EncodeToString([]byte(last.Tenant + "\x00" + last.InstallationID))
		next = &c
	}
	if page == nil {
		page = []summary{}
	}
	return struct {
		Installations []summary `json:"installations"`
		NextCursor    *string   `json:"next_cursor"`
		Total         int       `json:"total"`
	}{page, next, total}, nil
}
