package killswitch

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
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
	Thresholds             fleet.Thresholds
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
	mux.HandleFunc("/api/v1/installations", a.serveList)
	mux.HandleFunc("/api/v1/installations/{id}", a.serveInstallation)
	mux.HandleFunc("/api/v1/installations/{id}/revoke", a.serveRevoke)
	mux.HandleFunc("/api/v1/installations/{id}/command", a.serveCommand)
	mux.HandleFunc("/api/v1/revoke-all", a.serveRevokeAll)
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
func (a *API) admin(w http.ResponseWriter, r *http.Request, tenantRequired bool) (string, *Settings, bool) {
	s := a.Settings()
	p, err := auth.Authenticator{Credentials: s.Credentials, Signer: a.Signer}.Authenticate(r, a.now())
	if p.Kind == auth.KindRuntimeToken {
		// A genuine runtime token, even expired, is a credential of the
		// wrong kind (403); a forged one is unknown (401).
		jsonapi.Error(w, http.StatusForbidden, "an admin token is required; runtime tokens only send heartbeats")
		return "", nil, false
	}
	if err != nil {
		jsonapi.Error(w, http.StatusUnauthorized, err.Error())
		return "", nil, false
	}
	query := r.URL.Query().Get("tenant")
	switch p.Kind {
	case auth.KindTenantAdmin:
		if query != "" && query != p.Tenant {
			jsonapi.Error(w, http.StatusForbidden, "this admin token belongs to another tenant")
			return "", nil, false
		}
		return p.Tenant, s, true
	case auth.KindGlobalAdmin:
		if query == "" {
			if tenantRequired {
				jsonapi.Error(w, http.StatusBadRequest, "a global admin token must name the tenant with ?tenant=")
				return "", nil, false
			}
			return "", s, true
		}
		if !s.Credentials.HasTenant(query) {
			jsonapi.Errorf(w, http.StatusNotFound, "unknown tenant %q", query)
			return "", nil, false
		}
		return query, s, true
	default:
		jsonapi.Error(w, http.StatusForbidden, "an admin token is required")
		return "", nil, false
	}
}

// agentRequest checks the method and the admin token of a request about
// the agent {id} of the path and resolves the agent's key, answering 405,
// 401, 403, 400 or 404 (unknown tenant) itself when it returns false.
func (a *API) agentRequest(w http.ResponseWriter, r *http.Request, methods ...string) (fleet.Key, *Settings, bool) {
	if !jsonapi.AllowMethods(w, r, methods...) {
		return fleet.Key{}, nil, false
	}
	tenant, s, ok := a.admin(w, r, true)
	if !ok {
		return fleet.Key{}, nil, false
	}
	id := r.PathValue("id")
	if !fleet.ValidAgentID(id) {
		jsonapi.Error(w, http.StatusBadRequest, "invalid agent id: must match ^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
		return fleet.Key{}, nil, false
	}
	return fleet.Key{Tenant: tenant, AgentID: id}, s, true
}

// decodeStrict reads an admin request body; unknown fields are errors here,
// because a misspelt "reason" silently ignored would be a surprise.
func decodeStrict(w http.ResponseWriter, r *http.Request, v any) bool {
	body, status := jsonapi.ReadBody(w, r, nil)
	if status != 0 {
		return false
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return true
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		jsonapi.Errorf(w, http.StatusBadRequest, "malformed JSON body: %v", err)
		return false
	}
	if dec.More() {
		jsonapi.Error(w, http.StatusBadRequest, "malformed JSON body: data after the object")
		return false
	}
	return true
}

func (a *API) persistFailed(w http.ResponseWriter, err error) {
	a.logger().Error("cannot persist kill-switch change", "err", err)
	jsonapi.Error(w, http.StatusServiceUnavailable, "cannot persist the change; nothing was changed, retry later")
}

type revokeRequest struct {
	Reason            string `json:"reason"`
	ShutdownTimeoutMs *int64 `json:"shutdown_timeout_ms"`
}

// revocation validates a revoke request body into a revocation.
func (a *API) revocation(w http.ResponseWriter, r *http.Request, s *Settings) (fleet.Revocation, bool) {
	var req revokeRequest
	if !decodeStrict(w, r, &req) {
		return fleet.Revocation{}, false
	}
	rev := fleet.Revocation{Reason: req.Reason, ShutdownTimeout: s.DefaultShutdownTimeout, RevokedAt: a.now(), Source: "admin"}
	if rev.Reason == "" {
		rev.Reason = DefaultRevokeReason
	}
	if len(rev.Reason) > 1024 {
		jsonapi.Error(w, http.StatusBadRequest, "reason is longer than 1024 bytes")
		return rev, false
	}
	if v := req.ShutdownTimeoutMs; v != nil {
		if *v < 0 || *v > int64(24*time.Hour/time.Millisecond) {
			jsonapi.Error(w, http.StatusBadRequest, "shutdown_timeout_ms must be between 0 and 86400000")
			return rev, false
		}
		rev.ShutdownTimeout = time.Duration(*v) * time.Millisecond
	}
	return rev, true
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

func (a *API) serveRevoke(w http.ResponseWriter, r *http.Request) {
	k, s, ok := a.agentRequest(w, r, http.MethodPost, http.MethodDelete)
	if !ok {
		return
	}
	if r.Method == http.MethodDelete {
		reinstated, err := a.Control.Reinstate(r.Context(), k)
		if err != nil {
			a.persistFailed(w, err)
			return
		}
		if !reinstated {
			if !a.Control.Known(k) {
				jsonapi.Errorf(w, http.StatusNotFound, "agent %q not found", k.AgentID)
				return
			}
		}
		jsonapi.Write(w, http.StatusOK, map[string]any{"installation_id": k.AgentID, "revoked": false, "reinstated": reinstated})
		return
	}
	rev, ok := a.revocation(w, r, s)
	if !ok {
		return
	}
	if !a.Control.Known(k) {
		if _, revoked := a.Control.Revocation(k); !revoked {
			jsonapi.Errorf(w, http.StatusNotFound, "agent %q not found", k.AgentID)
			return
		}
	}
	rev, _, err := a.Control.Revoke(r.Context(), k, rev)
	if err != nil {
		a.persistFailed(w, err)
		return
	}
	jsonapi.Write(w, http.StatusOK, struct {
		InstallationID string `json:"installation_id"`
		Revoked        bool   `json:"revoked"`
		*revocationJSON
	}{k.AgentID, true, toRevocationJSON(rev)})
}

func (a *API) serveRevokeAll(w http.ResponseWriter, r *http.Request) {
	if !jsonapi.AllowMethods(w, r, http.MethodPost) {
		return
	}
	tenant, s, ok := a.admin(w, r, true)
	if !ok {
		return
	}
	rev, ok := a.revocation(w, r, s)
	if !ok {
		return
	}
	n, err := a.Control.RevokeAll(r.Context(), a.Control.Keys(tenant), rev)
	if err != nil {
		a.persistFailed(w, err)
		return
	}
	jsonapi.Write(w, http.StatusOK, struct {
		Tenant  string `json:"tenant"`
		Revoked int    `json:"revoked"`
		*revocationJSON
	}{tenant, n, toRevocationJSON(rev)})
}

type commandRequest struct {
	Command string `json:"command"`
}

func (a *API) serveCommand(w http.ResponseWriter, r *http.Request) {
	k, _, ok := a.agentRequest(w, r, http.MethodPost)
	if !ok {
		return
	}
	var req commandRequest
	if !decodeStrict(w, r, &req) {
		return
	}
	if req.Command == "" {
		jsonapi.Error(w, http.StatusBadRequest, `"command" is required: pause, resume or terminate`)
		return
	}
	cmd, ok := fleet.ParseCommand(req.Command)
	if !ok {
		jsonapi.Errorf(w, http.StatusUnprocessableEntity, "unsupported command %q; supported: pause, resume, terminate", req.Command)
		return
	}
	if !a.Control.Known(k) {
		jsonapi.Errorf(w, http.StatusNotFound, "agent %q not found", k.AgentID)
		return
	}
	pc, err := a.Control.Command(r.Context(), k, cmd, a.now())
	if err != nil {
		a.persistFailed(w, err)
		return
	}
	jsonapi.Write(w, http.StatusOK, map[string]any{
		"installation_id": k.AgentID, "command": pc.Command.String(), "pending": true, "issued_at": pc.IssuedAt,
	})
}

func (a *API) serveInstallation(w http.ResponseWriter, r *http.Request) {
	k, s, ok := a.agentRequest(w, r, http.MethodGet, http.MethodDelete)
	if !ok {
		return
	}
	if r.Method == http.MethodDelete {
		forgotten, err := a.Control.Forget(r.Context(), k, a.now)
		if err != nil {
			a.persistFailed(w, err)
			return
		}
		if !forgotten {
			jsonapi.Errorf(w, http.StatusNotFound, "agent %q not found", k.AgentID)
			return
		}
		jsonapi.Write(w, http.StatusOK, map[string]any{"installation_id": k.AgentID, "forgotten": true})
		return
	}
	ag, ok := a.Store.Get(k)
	if !ok {
		jsonapi.Errorf(w, http.StatusNotFound, "agent %q not found", k.AgentID)
		return
	}
	jsonapi.Write(w, http.StatusOK, a.detail(&ag, s, a.now()))
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
	RegisteredAt   time.Time       `json:"registered_at"`
	LeaseExpiresAt time.Time       `json:"lease_expires_at"`
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
		LeaseExpiresAt: ag.LastHeartbeat.Add(ag.Interval * time.Duration(s.Thresholds.SilentAfter)),
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
func (a *API) serveList(w http.ResponseWriter, r *http.Request) {
	if !jsonapi.AllowMethods(w, r, http.MethodGet) {
		return
	}
	tenant, s, ok := a.admin(w, r, false)
	if !ok {
		return
	}
	q := r.URL.Query()
	limit := defaultListLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxListLimit {
			jsonapi.Errorf(w, http.StatusBadRequest, "limit must be an integer between 1 and %d", maxListLimit)
			return
		}
		limit = n
	}
	var filter *fleet.State
	if v := q.Get("state"); v != "" {
		st, ok := fleet.ParseState(strings.ToUpper(v))
		if !ok {
			jsonapi.Errorf(w, http.StatusBadRequest, "unknown state %q; use ACTIVE, SILENT, ZOMBIE, STOPPED or REVOKED", v)
			return
		}
		filter = &st
	}
	var after fleet.Key
	if v := q.Get("cursor"); v != "" {
		raw, err := base64.RawURLEncoding.DecodeString(v)
		t, id, found := strings.Cut(string(raw), "\x00")
		if err != nil || !found {
			jsonapi.Error(w, http.StatusBadRequest, "malformed cursor")
			return
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
	jsonapi.Write(w, http.StatusOK, struct {
		Installations []summary `json:"installations"`
		NextCursor    *string   `json:"next_cursor"`
		Total         int       `json:"total"`
	}{page, next, total})
}
