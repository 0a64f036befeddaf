package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentsentinel/sentinel/auth"
	"github.com/agentsentinel/sentinel/config"
	"github.com/agentsentinel/sentinel/jsonapi"
)

// MaxNotificationBytes bounds a notification body. Alertmanager sends every
// alert of a group in one request; 100 alerts are about 100 KB.
const MaxNotificationBytes = 16 << 20

// Store is the durable state the bridge reads and commits to.
type Store interface {
	// Facts answers Decide's questions from memory (caches fed by the
	// ledger); it never waits for storage.
	Facts() Facts
	// Commit makes every change of plan durable in one atomic write, or
	// none of them. It returns only once the write is durable; an error
	// means nothing changed and the notification may be retried.
	Commit(ctx context.Context, plan Plan, now time.Time) error
}

// Settings is the reloadable part of the configuration the bridge uses.
type Settings struct {
	Credentials *auth.Credentials
	Policy      Policy
}

// SettingsFromConfig derives the bridge settings from a validated configuration.
func SettingsFromConfig(cfg *config.Config) *Settings {
	return &Settings{
		Credentials: auth.NewCredentials(cfg),
		Policy: Policy{
			KillSwitchAlertnames: append([]string(nil), cfg.Bridge.KillSwitch.Alertnames...),
			ShutdownTimeout:      time.Duration(cfg.Bridge.KillSwitch.ShutdownTimeout),
		},
	}
}

// Handler serves POST /api/v1/alertmanager.
type Handler struct {
	store    Store
	logger   *slog.Logger
	now      func() time.Time
	settings atomic.Pointer[Settings]
	// serveHTTP is serve adapted to HTTP; its errors are answered in one place.
	serveHTTP http.Handler

	notifications *prometheus.CounterVec
}

// NewHandler returns the bridge's receiver.
func NewHandler(store Store, s *Settings, logger *slog.Logger, reg prometheus.Registerer, now func() time.Time) *Handler {
	if now == nil {
		now = time.Now
	}
	h := &Handler{
		store: store, logger: logger, now: now,
		notifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sentinel_alertmanager_notifications_total",
			Help: "Alertmanager notifications received by the bridge, by result: per notification accepted, malformed, unauthorized, unavailable or truncated; per alert applied, no_change, duplicate, stale, watchdog, missing_labels, unknown_tenant, unknown_agent, invalid_agent_id.",
		}, []string{"result"}),
	}
	for _, r := range []string{"accepted", "malformed", "unauthorized", "unavailable", string(ResultTruncated),
		string(ResultApplied), string(ResultNoChange), string(ResultDuplicate), string(ResultStale), string(ResultWatchdog),
		string(ResultMissingLabels), string(ResultUnknownTenant), string(ResultUnknownAgent), string(ResultInvalidAgent)} {
		h.notifications.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(h.notifications)
	}
	h.settings.Store(s)
	h.serveHTTP = jsonapi.Handle(logger, h.serve)
	return h
}

// Reload swaps in new settings.
func (h *Handler) Reload(s *Settings) { h.settings.Store(s) }

// ErrUnavailable is the cause of the 503 of a failed commit, which
// Alertmanager retries.
var ErrUnavailable = errors.New("cannot persist the notification now; retry")

// unavailableRetryAfter is the Retry-After of a 503. Alertmanager keeps its
// own backoff; the header is for other callers.
const unavailableRetryAfter = 5 * time.Second

// The refusals of the bridge endpoint. Alertmanager retries 5xx only, so
// everything but a failed commit is a 4xx.
const errUnauthorized = "a bridge bearer token is required"

var (
	errForbidden = jsonapi.Forbidden("this credential may not call the bridge")
	errTooLarge  = &jsonapi.Error{Status: http.StatusRequestEntityTooLarge, Msg: fmt.Sprintf("notification larger than %d bytes", MaxNotificationBytes)}
	errMethod    = &jsonapi.Error{Status: http.StatusMethodNotAllowed, Msg: "method not allowed: use POST", Allow: []string{http.MethodPost}}
)

// answer is the bridge's 200 body: how many alerts had each result.
type answer struct {
	Status  string         `json:"status"`
	Results map[Result]int `json:"results"`
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.serveHTTP.ServeHTTP(w, r)
}

// serve handles a notification; every error it returns is an *jsonapi.Error.
func (h *Handler) serve(r *http.Request) (any, error) {
	if r.Method != http.MethodPost {
		return nil, errMethod
	}
	s := h.settings.Load()
	p, err := auth.Authenticator{Credentials: s.Credentials}.Authenticate(r, h.now())
	switch {
	case errors.Is(err, auth.ErrNoCredential):
		h.notifications.WithLabelValues("unauthorized").Inc()
		return nil, jsonapi.Unauthorized(errUnauthorized)
	case err != nil:
		h.notifications.WithLabelValues("unauthorized").Inc()
		return nil, jsonapi.Unauthorized(errUnauthorized + ": unknown credential")
	}
	if p.Kind != auth.KindBridge {
		h.notifications.WithLabelValues("unauthorized").Inc()
		return nil, errForbidden
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxNotificationBytes+1))
	if err != nil {
		return nil, &jsonapi.Error{Status: http.StatusBadRequest, Msg: fmt.Sprintf("%v: read body: %v", ErrMalformed, err), Err: ErrMalformed}
	}
	if len(body) > MaxNotificationBytes {
		h.notifications.WithLabelValues("malformed").Inc()
		return nil, errTooLarge
	}
	n, err := DecodeNotification(body)
	if err != nil {
		h.notifications.WithLabelValues("malformed").Inc()
		h.logger.Warn("refused Alertmanager notification", "err", err)
		return nil, &jsonapi.Error{Status: http.StatusBadRequest, Msg: err.Error(), Err: err}
	}
	now := h.now().UTC()
	plan := Decide(n, h.store.Facts(), s.Policy, now)
	if !plan.Empty() {
		if err := h.store.Commit(r.Context(), plan, now); err != nil {
			h.notifications.WithLabelValues("unavailable").Inc()
			h.logger.Error("cannot commit Alertmanager notification; Alertmanager will retry", "err", err, "alerts", len(n.Alerts))
			return nil, jsonapi.Unavailable(ErrUnavailable.Error(), unavailableRetryAfter, fmt.Errorf("%w: %w", ErrUnavailable, err))
		}
	}
	h.notifications.WithLabelValues("accepted").Inc()
	if plan.Truncated > 0 {
		h.notifications.WithLabelValues(string(ResultTruncated)).Inc()
		h.logger.Warn("Alertmanager truncated a notification: set max_alerts to 0 on the bridge receiver", "truncated_alerts", plan.Truncated, "group_key", n.GroupKey)
	}
	a := &answer{Status: "ok", Results: map[Result]int{}}
	for _, o := range plan.Outcomes {
		h.notifications.WithLabelValues(string(o.Result)).Inc()
		a.Results[o.Result]++
		switch o.Result {
		case ResultMissingLabels, ResultUnknownTenant, ResultUnknownAgent, ResultInvalidAgent:
			h.logger.Warn("Alertmanager alert ignored", "alertname", o.Name, "result", string(o.Result), "tenant", o.Key.Tenant, "agent_id", o.Key.AgentID)
		}
	}
	return a, nil
}
