package killswitch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	mux.Handle("/api/v1/deliveries", d.handle(d.serveList))
	mux.Handle("/api/v1/deliveries/{eventId}/redeliver", d.handle(d.serveRedeliver))
	mux.Handle("/api/v1/webhook/test", d.handle(d.serveTest))
	mux.Handle("/api/v1/webhook/enable", d.handle(d.serveEnable))
}

type deliveryJSON struct {
	EventID        string          `json:"event_id"`
	Event          string          `json:"event"`
	AgentID        string          `json:"agent_id,omitempty"`
	Sequence       uint64          `json:"sequence"`
	Status         string          `json:"status"`
	Attempts       int             `json:"attempts"`
	LastStatusCode int             `json:"last_status_code,omitempty"`
	LastError      string          `json:"last_error,omitempty"`
	LastAttemptAt  time.Time       `json:"last_attempt_at,omitzero"`
	NextAttemptAt  time.Time       `json:"next_attempt_at,omitzero"`
	CreatedAt      time.Time       `json:"created_at"`
	Payload        json.RawMessage `json:"payload,omitempty"`
}

func (d *DeliveriesAPI) toJSON(dl ledger.Delivery) deliveryJSON {
	j := deliveryJSON{
		EventID: dl.Event.ID, Event: dl.Event.Type, AgentID: dl.Event.AgentID, Sequence: dl.Event.Sequence,
		Status: string(dl.Status), Attempts: dl.Attempts, LastStatusCode: dl.LastStatusCode, LastError: dl.LastError,
		LastAttemptAt: dl.LastAttemptAt.UTC(), CreatedAt: dl.Event.CreatedAt.UTC(),
	}
	if dl.Status == ledger.StatusPending {
		j.NextAttemptAt = dl.NextAttempt.UTC()
	}
	if d.WithSequence != nil {
		if body, err := d.WithSequence(dl.Event.Body, dl.Event.Sequence); err == nil {
			j.Payload = body
		}
	}
	return j
}

func (d *DeliveriesAPI) serveList(r *http.Request) (any, error) {
	if err := jsonapi.CheckMethod(r, http.MethodGet, http.MethodHead); err != nil {
		return nil, err
	}
	tenant, _, err := d.admin(r, true)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	f := ledger.DeliveryFilter{Tenant: tenant, Limit: defaultListLimit, Cursor: q.Get("cursor")}
	if s := q.Get("status"); s != "" {
		st, ok := ledger.ParseDeliveryStatus(s)
		if !ok {
			return nil, jsonapi.BadRequest("status must be one of pending, delivered, failed")
		}
		f.Status = st
	}
	if id := q.Get("agent_id"); id != "" {
		if !fleet.ValidAgentID(id) {
			return nil, jsonapi.BadRequest("invalid agent_id: must match ^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
		}
		f.AgentID = id
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxListLimit {
			return nil, jsonapi.BadRequest(fmt.Sprintf("limit must be an integer from 1 to %d", maxListLimit))
		}
		f.Limit = n
	}
	if f.Cursor != "" {
		if _, err := strconv.ParseUint(f.Cursor, 10, 64); err != nil {
			return nil, jsonapi.BadRequest("invalid cursor: pass the next_cursor of the previous page")
		}
	}
	page, next, err := d.Ledger.Deliveries(r.Context(), f)
	if err != nil {
		return nil, err
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
	return out, nil
}

// errNoDelivery is the 404 of an event id the tenant has no delivery of.
const errNoDelivery = "no delivery of this tenant has this event id"

func (d *DeliveriesAPI) serveRedeliver(r *http.Request) (any, error) {
	if err := jsonapi.CheckMethod(r, http.MethodPost); err != nil {
		return nil, err
	}
	tenant, _, err := d.admin(r, true)
	if err != nil {
		return nil, err
	}
	id := r.PathValue("eventId")
	found, _, err := d.Ledger.Deliveries(r.Context(), ledger.DeliveryFilter{ID: id, Tenant: tenant, Limit: 1})
	if err != nil {
		return nil, err
	}
	if len(found) == 0 {
		return nil, jsonapi.NotFound(errNoDelivery)
	}
	if err := d.Ledger.Redeliver(r.Context(), id, d.now()); err != nil {
		if errors.Is(err, ledger.ErrNotFound) {
			return nil, jsonapi.NotFound(errNoDelivery)
		}
		return nil, err
	}
	if d.Wake != nil {
		d.Wake()
	}
	d.logger().Info("webhook event redelivery requested", "tenant", tenant, "event_id", id)
	return jsonapi.Response{Status: http.StatusAccepted, Body: map[string]string{"event_id": id, "status": string(ledger.StatusPending)}}, nil
}

func (d *DeliveriesAPI) serveTest(r *http.Request) (any, error) {
	if err := jsonapi.CheckMethod(r, http.MethodPost); err != nil {
		return nil, err
	}
	tenant, _, err := d.admin(r, true)
	if err != nil {
		return nil, err
	}
	res, err := d.Tester.Test(r.Context(), tenant)
	if errors.Is(err, delivery.ErrNoEndpoint) {
		return nil, jsonapi.NotFound("the tenant has no webhook configured")
	}
	if err != nil {
		return nil, jsonapi.Internal("cannot build the test event", err)
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
	return out, nil
}

func (d *DeliveriesAPI) serveEnable(r *http.Request) (any, error) {
	if err := jsonapi.CheckMethod(r, http.MethodPost); err != nil {
		return nil, err
	}
	tenant, _, err := d.admin(r, true)
	if err != nil {
		return nil, err
	}
	res, err := d.Control.Commit(r.Context(), ledger.SetEndpointDisabled{Tenant: tenant, Disabled: false})
	if err != nil {
		return nil, err
	}
	if res.Applied(0) {
		d.logger().Info("webhook endpoint re-enabled", "tenant", tenant)
		if d.Wake != nil {
			d.Wake()
		}
	}
	return map[string]bool{"enabled": true, "was_disabled": res.Applied(0)}, nil
}
