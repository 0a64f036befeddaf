package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/agentsentinel/sentinel/delivery"
	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/heartbeat"
	"github.com/agentsentinel/sentinel/killswitch"
	"github.com/agentsentinel/sentinel/ledger"
)

// Tenants answers what the bridge needs of the running configuration.
// Implementations read the current configuration and never block.
type Tenants interface {
	// Known reports whether the tenant is configured.
	Known(tenant string) bool
	// HasWebhook reports whether the tenant has a webhook endpoint; events
	// are only enqueued for tenants that do.
	HasWebhook(tenant string) bool
	// WebhookTenants lists the tenants with a webhook endpoint.
	WebhookTenants() []string
	// Thresholds returns the agent's effective thresholds.
	Thresholds(k fleet.Key, a *heartbeat.Agent) fleet.Thresholds
}

// LedgerStore is the bridge's Store on the ledger: it reads the kill
// switch's cache of the ledger and this replica's hot store, and commits
// through the kill switch, whose cache then holds the change.
type LedgerStore struct {
	Control *killswitch.Control
	Agents  *heartbeat.Store
	Tenants Tenants
	// Wake, when set, is called after a commit that enqueued events.
	Wake func()
	// Logger, when set, logs each announcement made.
	Logger *slog.Logger
}

// Facts implements Store.
func (s *LedgerStore) Facts() Facts {
	return Facts{
		TenantKnown: s.Tenants.Known,
		AlertSeen:   s.Control.AlertSeen,
		Agent: func(k fleet.Key) (AgentFacts, bool) {
			a, inStore := s.Agents.Get(k)
			if !inStore && !s.Control.Known(k) {
				return AgentFacts{}, false
			}
			f := AgentFacts{}
			f.Announced, f.AnnouncedAt = s.Control.Announced(k)
			_, f.Revoked = s.Control.Revocation(k)
			if inStore {
				f.LastHeartbeat, f.Interval = a.LastHeartbeat, a.Interval
				f.Thresholds = s.Tenants.Thresholds(k, &a)
			} else {
				f.Thresholds = s.Tenants.Thresholds(k, nil)
			}
			return f, true
		},
	}
}

// Commit implements Store: the whole plan is one ledger Apply.
func (s *LedgerStore) Commit(ctx context.Context, plan Plan, now time.Time) error {
	var ops []ledger.Op
	for _, tr := range plan.Transitions {
		op := ledger.Announce{Key: tr.Key, From: tr.Expect, To: tr.To}
		if s.Tenants.HasWebhook(tr.Key.Tenant) {
			ev, err := StateChangeEvent(delivery.StateChangeInput{
				TenantID: tr.Key.Tenant, AgentID: tr.Key.AgentID, From: tr.From, To: tr.To,
				MissedBeats: tr.MissedBeats, LastSeenAt: tr.LastHeartbeat, LastHeartbeatAt: tr.LastHeartbeat,
				Alert: &delivery.Alert{Name: tr.Alert.Name, Fingerprint: tr.Alert.Fingerprint, StartsAt: tr.Alert.StartsAt, GeneratorURL: tr.Alert.GeneratorURL},
				At:    now,
			})
			if err != nil {
				return err
			}
			op.Event = ev
		}
		ops = append(ops, op)
	}
	for _, r := range plan.Revocations {
		op := ledger.Revoke{Key: r.Key, Revocation: r.Revocation}
		if s.Tenants.HasWebhook(r.Key.Tenant) {
			ev, err := RevokedEvent(r.Key, r.Revocation)
			if err != nil {
				return err
			}
			op.Event = ev
		}
		ops = append(ops, op)
	}
	for _, k := range plan.AlertKeys {
		ops = append(ops, ledger.AlertSeen{Key: k, At: now})
	}
	if !plan.WatchdogAt.IsZero() {
		ops = append(ops, ledger.WatchdogSeen{At: plan.WatchdogAt})
		if state, last := s.Control.Pipeline(); state == ledger.PipelineSilent {
			op, err := PipelineOp(s.Tenants.WebhookTenants(), ledger.PipelineSilent, ledger.PipelineOK, last, 0, now)
			if err != nil {
				return err
			}
			ops = append(ops, op)
		}
	}
	if len(ops) == 0 {
		return nil
	}
	res, err := s.Control.Commit(ctx, ops...)
	if err != nil {
		return fmt.Errorf("commit %d ledger operations: %w", len(ops), err)
	}
	// Transitions come first in ops. One that did not apply was announced
	// by a concurrent, identical notification (another Alertmanager).
	for i, tr := range plan.Transitions {
		if res.Applied(i) && s.Logger != nil {
			s.Logger.Info("agent state announced", "tenant", tr.Key.Tenant, "agent_id", tr.Key.AgentID,
				"from", tr.From.String(), "to", tr.To.String(), "alertname", tr.Alert.Name)
		}
	}
	if s.Wake != nil {
		s.Wake()
	}
	return nil
}

// ledgerEvent wraps an encoded delivery event for the outbox. Its body
// carries sequence 0: the ledger assigns the agent's next sequence when the
// event is committed, and the outbox writes it into the body it sends.
func ledgerEvent(tenant, agentID string, e delivery.Event, at time.Time) (*ledger.Event, error) {
	m, err := delivery.Encode(e)
	if err != nil {
		return nil, err
	}
	return &ledger.Event{ID: m.ID, Tenant: tenant, AgentID: agentID, Type: m.Event, CreatedAt: at.UTC(), Body: m.Body}, nil
}

// StateChangeEvent builds the outbox event of a heartbeat.state_change.
func StateChangeEvent(in delivery.StateChangeInput) (*ledger.Event, error) {
	return ledgerEvent(in.TenantID, in.AgentID, delivery.NewStateChange(in), in.At)
}

// RevokedEvent builds the outbox event of an agent.revoked.
func RevokedEvent(k fleet.Key, r fleet.Revocation) (*ledger.Event, error) {
	return ledgerEvent(k.Tenant, k.AgentID, delivery.NewAgentRevoked(k.Tenant, k.AgentID, 0, r.Reason, r.ShutdownTimeout, r.Source, r.RevokedAt), r.RevokedAt)
}

// PipelineOp is the compare-and-set of the pipeline's state from expect to
// to, with one pipeline.silent or pipeline.restored event per tenant that
// has a webhook. lastWatchdog is the last Watchdog's arrival; timeout the
// configured bridge.watchdog.timeout (for pipeline.silent).
func PipelineOp(tenants []string, expect, to ledger.PipelineState, lastWatchdog time.Time, timeout time.Duration, now time.Time) (ledger.Pipeline, error) {
	op := ledger.Pipeline{Expect: expect, To: to}
	for _, t := range tenants {
		var e delivery.Event
		if to == ledger.PipelineSilent {
			e = delivery.NewPipelineSilent(t, 0, lastWatchdog, timeout, now)
		} else {
			silentSince := lastWatchdog
			if silentSince.IsZero() || silentSince.After(now) {
				silentSince = now
			}
			e = delivery.NewPipelineRestored(t, 0, now.Sub(silentSince), now)
		}
		ev, err := ledgerEvent(t, "", e, now)
		if err != nil {
			return op, err
		}
		op.Events = append(op.Events, *ev)
	}
	return op, nil
}
