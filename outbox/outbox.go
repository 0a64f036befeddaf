// Package outbox delivers the webhook events held in the ledger's outbox:
// one worker per tenant claims that tenant's due deliveries under a lease,
// sends each through package delivery, and records the outcome, so that a
// slow or dead endpoint only ever holds up its own tenant.
package outbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentsentinel/sentinel/delivery"
	"github.com/agentsentinel/sentinel/killswitch"
	"github.com/agentsentinel/sentinel/ledger"
)

// Tunables of the dispatcher.
const (
	// pollInterval is how often an idle tenant's worker looks for due
	// deliveries, also those enqueued by other replicas.
	pollInterval = 500 * time.Millisecond
	// claimBatch is how many deliveries (of distinct agents) a worker
	// claims at once; they are sent concurrently.
	claimBatch = 8
	// leaseMargin is added to the endpoint's timeout for a claim's lease, so
	// that a lease never runs out while its attempt is still in flight (the
	// sender enforces the timeout); it is also about how long the events a
	// crashed replica had claimed wait before another worker takes them.
	leaseMargin = 5 * time.Second
)

// Config is the reloadable part of the configuration the dispatcher uses.
type Config struct {
	// Timeouts maps each tenant with a webhook to its webhook.timeout.
	Timeouts map[string]time.Duration
}

// Dispatcher runs the tenants' delivery workers.
//
// Concurrency: one worker per tenant at a time; a worker's claimed batch is
// sent concurrently (the batch holds at most one event per agent, so each
// agent's events still go out in sequence order). Every method is safe for
// concurrent use.
type Dispatcher struct {
	ledger  ledger.Ledger
	control *killswitch.Control
	sender  *delivery.Sender
	worker  string
	logger  *slog.Logger
	now     func() time.Time

	mu     sync.Mutex
	cfg    Config
	busy   map[string]bool
	wakeCh chan struct{}

	cancel context.CancelFunc
	done   sync.WaitGroup

	deliveries *prometheus.CounterVec
	pending    *pendingGauge
}

// Options are the dispatcher's collaborators.
type Options struct {
	Ledger  ledger.Ledger
	Control *killswitch.Control
	Sender  *delivery.Sender
	// Worker names this replica in leases; unique among replicas.
	Worker     string
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Now        func() time.Time
}

// New returns a dispatcher; Start runs it.
func New(o Options, cfg Config) *Dispatcher {
	if o.Now == nil {
		o.Now = time.Now
	}
	d := &Dispatcher{
		ledger: o.Ledger, control: o.Control, sender: o.Sender, worker: o.Worker, logger: o.Logger, now: o.Now,
		cfg: cfg, busy: map[string]bool{}, wakeCh: make(chan struct{}, 1),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sentinel_webhook_deliveries_total",
			Help: "Webhook delivery attempts by result: delivered (2xx), retried (will be tried again), failed (permanent, or retried past max_age), disabled (410: the endpoint is disabled until re-enabled).",
		}, []string{"result"}),
	}
	for _, r := range []string{"delivered", "retried", "failed", "disabled"} {
		d.deliveries.WithLabelValues(r)
	}
	d.pending = &pendingGauge{ledger: o.Ledger, desc: prometheus.NewDesc("sentinel_webhook_outbox_pending",
		"Webhook events waiting for delivery (due or retrying), every replica's.", nil, nil)}
	if o.Registerer != nil {
		o.Registerer.MustRegister(d.deliveries, d.pending, &disabledCollector{d: d})
	}
	return d
}

// Start runs the workers until Stop.
func (d *Dispatcher) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	d.done.Add(1)
	go func() { defer d.done.Done(); d.run(ctx) }()
}

// Stop stops the workers; attempts in flight end with their context.
func (d *Dispatcher) Stop() {
	if d.cancel != nil {
		d.cancel()
	}
	d.done.Wait()
}

// ApplyConfig swaps in a new configuration.
func (d *Dispatcher) ApplyConfig(cfg Config) {
	d.mu.Lock()
	d.cfg = cfg
	d.mu.Unlock()
	d.Wake()
}

// Wake makes idle workers look for deliveries now rather than at their next
// poll (after this replica enqueued an event).
func (d *Dispatcher) Wake() {
	select {
	case d.wakeCh <- struct{}{}:
	default:
	}
}

func (d *Dispatcher) run(ctx context.Context) {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		d.mu.Lock()
		for tenant, timeout := range d.cfg.Timeouts {
			if d.busy[tenant] {
				continue
			}
			d.busy[tenant] = true
			d.done.Add(1)
			go func() {
				defer d.done.Done()
				for d.deliverTenant(ctx, tenant, timeout) {
				}
				d.mu.Lock()
				delete(d.busy, tenant)
				d.mu.Unlock()
			}()
		}
		d.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-d.wakeCh:
		}
	}
}

// deliverTenant claims and attempts one batch of tenant's deliveries, and
// reports whether a full batch was found (there may be more due now).
func (d *Dispatcher) deliverTenant(ctx context.Context, tenant string, timeout time.Duration) bool {
	if ctx.Err() != nil || d.control.EndpointDisabled(tenant) {
		return false
	}
	now := d.now().UTC()
	batch, err := d.ledger.Claim(ctx, ledger.ClaimRequest{Worker: d.worker, Tenant: tenant, Now: now, Lease: timeout + leaseMargin, Max: claimBatch})
	if err != nil {
		if ctx.Err() == nil {
			d.logger.Warn("cannot claim webhook deliveries", "tenant", tenant, "err", err)
		}
		return false
	}
	var wg sync.WaitGroup
	for _, dl := range batch {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.attempt(ctx, dl)
		}()
	}
	wg.Wait()
	return len(batch) == claimBatch
}

// attempt sends one delivery and records its outcome.
func (d *Dispatcher) attempt(ctx context.Context, dl ledger.Delivery) {
	ev := dl.Event
	body, err := WithSequence(ev.Body, ev.Sequence)
	if err != nil {
		d.record(ctx, dl, ledger.Attempt{Outcome: ledger.OutcomeFailed, Error: err.Error()}, "failed")
		return
	}
	res := d.sender.Send(ctx, ev.Tenant, delivery.Message{Event: ev.Type, ID: ev.ID, Body: body})
	if ctx.Err() != nil {
		// Stopping: the lease runs out and a replica (or this one, when it
		// is back) attempts the event again.
		return
	}
	now := d.now().UTC()
	a := ledger.Attempt{StatusCode: res.StatusCode}
	if res.Err != nil {
		a.Error = res.Err.Error()
	}
	policy, ok := d.sender.Policy(ev.Tenant)
	if !ok {
		// The tenant's webhook went away in a reload: keep the event and try
		// again later, until a configuration has an endpoint for it.
		a.Outcome, a.NextAttempt = ledger.OutcomeRetry, now.Add(delivery.DefaultBackoff.NextDelay(dl.Attempts+1))
		d.record(ctx, dl, a, "retried")
		return
	}
	dec := policy.Decide(res, dl.Attempts+1, ev.CreatedAt, now)
	switch dec.Outcome {
	case delivery.Delivered:
		a.Outcome = ledger.OutcomeDelivered
		d.record(ctx, dl, a, "delivered")
	case delivery.Retry:
		a.Outcome, a.NextAttempt = ledger.OutcomeRetry, dec.Next
		d.record(ctx, dl, a, "retried")
	case delivery.Disabled:
		a.Outcome = ledger.OutcomeFailed
		if _, err := d.control.Commit(ctx, ledger.SetEndpointDisabled{Tenant: ev.Tenant, Disabled: true}); err != nil {
			d.logger.Error("cannot disable webhook endpoint after 410", "tenant", ev.Tenant, "err", err)
		} else {
			d.logger.Warn("webhook endpoint answered 410 Gone: disabled until POST /api/v1/webhook/enable", "tenant", ev.Tenant)
		}
		d.record(ctx, dl, a, "disabled")
	default:
		a.Outcome = ledger.OutcomeFailed
		if dec.GaveUp {
			a.Error = fmt.Sprintf("gave up after %d attempts (webhook.max_age): %s", dl.Attempts+1, a.Error)
		}
		d.record(ctx, dl, a, "failed")
	}
}

func (d *Dispatcher) record(ctx context.Context, dl ledger.Delivery, a ledger.Attempt, result string) {
	a.Worker = d.worker
	if a.At.IsZero() {
		a.At = d.now().UTC()
	}
	if err := d.ledger.Record(ctx, dl.Event.ID, a); err != nil {
		if errors.Is(err, ledger.ErrLeaseLost) {
			d.logger.Warn("webhook delivery lease lost; another replica attempts it", "event_id", dl.Event.ID)
		} else if ctx.Err() == nil {
			d.logger.Error("cannot record webhook delivery attempt; it is attempted again after its lease", "event_id", dl.Event.ID, "err", err)
		}
		return
	}
	d.deliveries.WithLabelValues(result).Inc()
	level := slog.LevelDebug
	if result != "delivered" {
		level = slog.LevelWarn
	}
	d.logger.Log(context.Background(), level, "webhook delivery attempt", "tenant", dl.Event.Tenant, "agent_id", dl.Event.AgentID,
		"event", dl.Event.Type, "event_id", dl.Event.ID, "result", result, "status_code", a.StatusCode, "attempt", dl.Attempts+1, "err", a.Error)
}

// WithSequence returns an event body with its "sequence" field set to seq:
// the ledger assigns the sequence when it commits the event, after the body
// was encoded. The result is the same for the same input, so every attempt
// sends (and signs) the same bytes.
func WithSequence(body []byte, seq uint64) ([]byte, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return nil, fmt.Errorf("event body is not a JSON object: %w", err)
	}
	fields["sequence"] = json.RawMessage(fmt.Appendf(nil, "%d", seq))
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(fields); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// pendingGauge counts pending deliveries at scrape time.
type pendingGauge struct {
	ledger ledger.Ledger
	desc   *prometheus.Desc
}

func (p *pendingGauge) Describe(ch chan<- *prometheus.Desc) { ch <- p.desc }

func (p *pendingGauge) Collect(ch chan<- prometheus.Metric) {
	n, err := p.ledger.PendingDeliveries(context.Background())
	if err != nil {
		ch <- prometheus.NewInvalidMetric(p.desc, fmt.Errorf("count pending deliveries: %w", err))
		return
	}
	ch <- prometheus.MustNewConstMetric(p.desc, prometheus.GaugeValue, float64(n))
}

// disabledCollector exposes sentinel_webhook_endpoint_disabled per tenant
// with a webhook.
type disabledCollector struct{ d *Dispatcher }

var disabledDesc = prometheus.NewDesc("sentinel_webhook_endpoint_disabled",
	"1 while the tenant's webhook endpoint is disabled after answering 410 Gone (re-enable with POST /api/v1/webhook/enable).",
	[]string{"tenant"}, nil)

func (c *disabledCollector) Describe(ch chan<- *prometheus.Desc) { ch <- disabledDesc }

func (c *disabledCollector) Collect(ch chan<- prometheus.Metric) {
	c.d.mu.Lock()
	tenants := make([]string, 0, len(c.d.cfg.Timeouts))
	for t := range c.d.cfg.Timeouts {
		tenants = append(tenants, t)
	}
	c.d.mu.Unlock()
	for _, t := range tenants {
		v := 0.0
		if c.d.control.EndpointDisabled(t) {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(disabledDesc, prometheus.GaugeValue, v, t)
	}
}
