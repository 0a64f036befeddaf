package killswitch

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/agentsentinel/sentinel/delivery"
	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/jsonapi"
	"github.com/agentsentinel/sentinel/ledger"
)

// WebhookTester sends a signed webhook.test to a tenant's endpoint
// (delivery.Sender).
type WebhookTester interface {
	Test(ctx context.Context, tenant string) (delivery.Result, error)
}

// DeliveriesAPI serves the webhook deliveries API of a tenant's admin:
// the outbox's deliveries, redelivery, a test event, and re-enabling an
// endpoint a 410 disabled.
type DeliveriesAPI struct {
	*API
	Ledger ledger.Ledger
	Tester WebhookTester
	// Wake, when set, tells the outbox that a delivery is due now.
	Wake func()
	// WithSequence renders a stored event body as it is delivered.
	WithSequence func(body []byte, seq uint64) ([]byte, error)
}

// Register adds the deliveries routes to mux.
func (d *DeliveriesAPI) Register(mux *http.ServeMux) {
	mux.HandleFunc("/api/v1/deliveries", d.serveList)
	mux.HandleFunc("/api/v1/deliveries/{eventId}/redeliver", d.serveRedeliver)
	mux.HandleFunc("/api/v1/webhook/test", d.serveTest)
	mux.HandleFunc("/api/v1/webhook/enable", d.serveEnable)
}

type deliveryJSON struct {
	EventID        string     `json:"event_id"`
	Event          string     `json:"event"`
	AgentID        string     `json:"agent_id,omitempty"`
	Sequence       uint64     `json:"sequence"`
	Status         string     `json:"status"`
	Attempts       int        `json:"attempts"`
	LastStatusCode int        `json:"last_status_code,omitempty"`
	LastError      string     `json:"last_error,omitempty"`
	LastAttemptAt  *time.Time `json:"last_attempt_at,omitempty"`
	NextAttemptAt  *time.Time `json:"next_attempt_at,omitempty"`
	CreatedAt      time.Time  `json:"created_at"`
	Payload        rawJSON    `json:"payload,omitempty"`
}

type rawJSON []byte

func (r rawJSON) MarshalJSON() ([]byte, error) { return r, nil }

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

func (d *DeliveriesAPI) toJSON(dl ledger.Delivery) deliveryJSON {
	j := deliveryJSON{
		EventID: dl.Event.ID, Event: dl.Event.Type, AgentID: dl.Event.AgentID, Sequence: dl.Event.Sequence,
		Status: string(dl.Status), Attempts: dl.Attempts, LastStatusCode: dl.LastStatusCode, LastError: dl.LastError,
		LastAttemptAt: timePtr(dl.LastAttemptAt), CreatedAt: dl.Event.CreatedAt.UTC(),
	}
	if dl.Status == ledger.StatusPending {
		j.NextAttemptAt = timePtr(dl.NextAttempt)
	}
	if d.WithSequence != nil {
		if body, err := d.WithSequence(dl.Event.Body, dl.Event.Sequence); err == nil {
			j.Payload = body
		}
	}
	return j
}

func (d *DeliveriesAPI) serveList(w http.ResponseWriter, r *http.Request) {
	if !jsonapi.AllowMethods(w, r, http.MethodGet, http.MethodHead) {
		return
	}
	tenant, _, ok := d.admin(w, r, true)
	if !ok {
		return
	}
	q := r.URL.Query()
	f := ledger.DeliveryFilter{Tenant: tenant, Limit: defaultListLimit, Cursor: q.Get("cursor")}
	if s := q.Get("status"); s != "" {
		st, ok := ledger.ParseDeliveryStatus(s)
		if !ok {
			jsonapi.Error(w, http.StatusBadRequest, "status must be one of pending, delivered, failed")
			return
		}
		f.Status = st
	}
	if id := q.Get("agent_id"); id != "" {
		if !fleet.ValidAgentID(id) {
			jsonapi.Error(w, http.StatusBadRequest, "invalid agent_id: must match ^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
			return
		}
		f.AgentID = id
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxListLimit {
			jsonapi.Errorf(w, http.StatusBadRequest, "limit must be an integer from 1 to %d", maxListLimit)
			return
		}
		f.Limit = n
	}
	if f.Cursor != "" {
		if _, err := strconv.ParseUint(f.Cursor, 10, 64); err != nil {
			jsonapi.Error(w, http.StatusBadRequest, "invalid cursor: pass the next_cursor of the previous page")
			return
		}
	}
	page, next, err := d.Ledger.Deliveries(r.Context(), f)
	if err != nil {
		d.persistFailed(w, err)
		return
	}
	out := struct {
		Deliveries []deliveryJSON `json:"deliveries"`
		NextCursor *string        `json:"next_cursor"`
	}{Deliveries: make([]deliveryJSON, 0, len(page))}
	for _, dl := range page {
		out.Deliveries = append(out.Deliveries, d.toJSON(dl))
	}
	if next != "" {
		out.NextCursor = &next
	}
	jsonapi.Write(w, http.StatusOK, out)
}

func (d *DeliveriesAPI) serveRedeliver(w http.ResponseWriter, r *http.Request) {
	if !jsonapi.AllowMethods(w, r, http.MethodPost) {
		return
	}
	tenant, _, ok := d.admin(w, r, true)
	if !ok {
		return
	}
	id := r.PathValue("eventId")
	found, _, err := d.Ledger.Deliveries(r.Context(), ledger.DeliveryFilter{ID: id, Tenant: tenant, Limit: 1})
	if err != nil {
		d.persistFailed(w, err)
		return
	}
	if len(found) == 0 {
		jsonapi.Error(w, http.StatusNotFound, "no delivery of this tenant has this event id")
		return
	}
	if err := d.Ledger.Redeliver(r.Context(), id, d.now()); err != nil {
		if errors.Is(err, ledger.ErrNotFound) {
			jsonapi.Error(w, http.StatusNotFound, "no delivery of this tenant has this event id")
			return
		}
		d.persistFailed(w, err)
		return
	}
	if d.Wake != nil {
		d.Wake()
	}
	d.logger().Info("webhook event redelivery requested", "tenant", tenant, "event_id", id)
	jsonapi.Write(w, http.StatusAccepted, map[string]string{"event_id": id, "status": string(ledger.StatusPending)})
}

func (d *DeliveriesAPI) serveTest(w http.ResponseWriter, r *http.Request) {
	if !jsonapi.AllowMethods(w, r, http.MethodPost) {
		return
	}
	tenant, _, ok := d.admin(w, r, true)
	if !ok {
		return
	}
	res, err := d.Tester.Test(r.Context(), tenant)
	if errors.Is(err, delivery.ErrNoEndpoint) {
		jsonapi.Error(w, http.StatusNotFound, "the tenant has no webhook configured")
		return
	}
	if err != nil {
		jsonapi.Error(w, http.StatusInternalServerError, "cannot build the test event")
		return
	}
	out := struct {
		Delivered  bool    `json:"delivered"`
		StatusCode int     `json:"status_code"`
		LatencyMs  float64 `json:"latency_ms"`
		Error      string  `json:"error,omitempty"`
	}{Delivered: res.Outcome == delivery.Delivered, StatusCode: res.StatusCode, LatencyMs: float64(res.Latency.Microseconds()) / 1000}
	if res.Err != nil {
		out.Error = res.Err.Error()
	}
	jsonapi.Write(w, http.StatusOK, out)
}

func (d *DeliveriesAPI) serveEnable(w http.ResponseWriter, r *http.Request) {
	if !jsonapi.AllowMethods(w, r, http.MethodPost) {
		return
	}
	tenant, _, ok := d.admin(w, r, true)
	if !ok {
		return
	}
	res, err := d.Control.Commit(r.Context(), ledger.SetEndpointDisabled{Tenant: tenant, Disabled: false})
	if err != nil {
		d.persistFailed(w, err)
		return
	}
	if res.Applied(0) {
		d.logger().Info("webhook endpoint re-enabled", "tenant", tenant)
		if d.Wake != nil {
			d.Wake()
		}
	}
	jsonapi.Write(w, http.StatusOK, map[string]bool{"enabled": true, "was_disabled": res.Applied(0)})
}
