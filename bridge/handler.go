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
	return h
}

// Reload swaps in new settings.
func (h *Handler) Reload(s *Settings) { h.settings.Store(s) }

// Errors of the bridge endpoint; statusOf maps them to HTTP.
var (
	errUnauthorized = errors.New("a bridge bearer token is required")
	errForbidden    = errors.New("this credential may not call the bridge")
	errTooLarge     = fmt.Errorf("notification larger than %d bytes", MaxNotificationBytes)
	errMethod       = errors.New("method not allowed: use POST")
	// ErrUnavailable wraps a failed commit: Alertmanager retries 5xx.
	ErrUnavailable = errors.New("cannot persist the notification now; retry")
)

func statusOf(err error) int {
	switch {
	case errors.Is(err, errUnauthorized):
		return http.StatusUnauthorized
	case errors.Is(err, errForbidden):
		return http.StatusForbidden
	case errors.Is(err, errTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, errMethod):
		return http.StatusMethodNotAllowed
	case errors.Is(err, ErrMalformed):
		return http.StatusBadRequest
	default:
		return http.StatusServiceUnavailable
	}
}

// answer is the bridge's 200 body: how many alerts had each result.
type answer struct {
	Status  string         `json:"status"`
	Results map[Result]int `json:"results"`
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a, err := h.serve(r)
	if err != nil {
		status := statusOf(err)
		switch status {
		case http.StatusMethodNotAllowed:
			w.Header().Set("Allow", http.MethodPost)
		case http.StatusServiceUnavailable:
			w.Header().Set("Retry-After", "5")
		}
		jsonapi.Error(w, status, err.Error())
		return
	}
	jsonapi.Write(w, http.StatusOK, a)
}

func (h *Handler) serve(r *http.Request) (*answer, error) {
	if r.Method != http.MethodPost {
		return nil, errMethod
	}
	s := h.settings.Load()
	p, err := auth.Authenticator{Credentials: s.Credentials}.Authenticate(r, time.Now())
	switch {
	case errors.Is(err, auth.ErrNoCredential):
		h.notifications.WithLabelValues("unauthorized").Inc()
		return nil, errUnauthorized
	case err != nil:
		h.notifications.WithLabelValues("unauthorized").Inc()
		return nil, fmt.Errorf("%w: unknown credential", errUnauthorized)
	}
	if p.Kind != auth.KindBridge {
		h.notifications.WithLabelValues("unauthorized").Inc()
		return nil, errForbidden
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxNotificationBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read body: %v", ErrMalformed, err)
	}
	if len(body) > MaxNotificationBytes {
		h.notifications.WithLabelValues("malformed").Inc()
		return nil, errTooLarge
	}
	n, err := DecodeNotification(body)
	if err != nil {
		h.notifications.WithLabelValues("malformed").Inc()
		h.logger.Warn("refused Alertmanager notification", "err", err)
		return nil, err
	}
	now := h.now().UTC()
	plan := Decide(n, h.store.Facts(), s.Policy, now)
	if !plan.Empty() {
		if err := h.store.Commit(r.Context(), plan, now); err != nil {
			h.notifications.WithLabelValues("unavailable").Inc()
			h.logger.Error("cannot commit Alertmanager notification; Alertmanager will retry", "err", err, "alerts", len(n.Alerts))
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
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
	for _, tr := range plan.Transitions {
		h.logger.Info("agent state announced", "tenant", tr.Key.Tenant, "agent_id", tr.Key.AgentID, "from", tr.From.String(), "to", tr.To.String(), "alertname", tr.Alert.Name)
	}
	return a, nil
}
