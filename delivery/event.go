package delivery

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/agentsentinel/sentinel/fleet"
)

// The event names, also sent as the X-ABS-Event header.
const (
	EventStateChange      = "heartbeat.state_change"
	EventAgentRevoked     = "agent.revoked"
	EventPipelineSilent   = "pipeline.silent"
	EventPipelineRestored = "pipeline.restored"
	EventWebhookTest      = "webhook.test"
)

// Event is one of the event types below; Encode turns it into a Message.
type Event interface {
	envelope() Envelope
}

// Envelope holds the fields every event starts with.
type Envelope struct {
	Event    string `json:"event"`
	EventID  string `json:"eventId"`
	TenantID string `json:"tenantId"`
	// Sequence increases strictly per agent, so that a receiver can drop
	// an event that arrives after a newer one about the same agent. The
	// events not about one agent (pipeline.*, webhook.test) carry the
	// sequence their creator gives them, 0 for webhook.test.
	Sequence uint64 `json:"sequence"`
}

func (e Envelope) envelope() Envelope { return e }

func newEnvelope(event, tenant string, sequence uint64) Envelope {
	return Envelope{Event: event, EventID: NewEventID(), TenantID: tenant, Sequence: sequence}
}

// StateChange is heartbeat.state_change: an agent turned SILENT or ZOMBIE,
// or beat again (ACTIVE after SILENT, RECOVERED after ZOMBIE).
type StateChange struct {
	Envelope
	AgentID       string `json:"agentId"`
	PreviousState string `json:"previousState"`
	NewState      string `json:"newState"`
	MissedBeats   int64  `json:"missedBeats"`
	// LastSeenAt is when sentinel last heard from the agent at all;
	// LastHeartbeatAt when it last accepted a heartbeat from it.
	LastSeenAt      time.Time `json:"lastSeenAt"`
	LastHeartbeatAt time.Time `json:"lastHeartbeatAt"`
	Timestamp       time.Time `json:"timestamp"`
	// OutageSeconds is set on recoveries only: how long the agent was silent.
	OutageSeconds *int64 `json:"outageSeconds,omitempty"`
	// Alert is the alert that caused the change, when one did.
	Alert *Alert `json:"alert,omitempty"`
}

// Alert names the Alertmanager alert behind a state change.
type Alert struct {
	Name         string    `json:"name"`
	Fingerprint  string    `json:"fingerprint"`
	StartsAt     time.Time `json:"startsAt"`
	GeneratorURL string    `json:"generatorURL"`
}

// StateChangeInput is what the caller knows about a transition.
type StateChangeInput struct {
	TenantID, AgentID           string
	Sequence                    uint64
	From, To                    fleet.State
	MissedBeats                 int64
	LastSeenAt, LastHeartbeatAt time.Time
	// Outage is reported when To is ACTIVE or RECOVERED, ignored otherwise.
	Outage time.Duration
	Alert  *Alert
	At     time.Time
}

// NewStateChange builds a heartbeat.state_change event with a new eventId.
func NewStateChange(in StateChangeInput) *StateChange {
	e := &StateChange{
		Envelope:        newEnvelope(EventStateChange, in.TenantID, in.Sequence),
		AgentID:         in.AgentID,
		PreviousState:   in.From.String(),
		NewState:        in.To.String(),
		MissedBeats:     in.MissedBeats,
		LastSeenAt:      in.LastSeenAt.UTC(),
		LastHeartbeatAt: in.LastHeartbeatAt.UTC(),
		Timestamp:       in.At.UTC(),
	}
	if in.To == fleet.StateActive || in.To == fleet.StateRecovered {
		s := int64(in.Outage / time.Second)
		e.OutageSeconds = &s
	}
	if in.Alert != nil {
		a := *in.Alert
		a.StartsAt = a.StartsAt.UTC()
		e.Alert = &a
	}
	return e
}

// The sources of an agent.revoked event.
const SourceAdmin = "admin"

// SourceAlert is the source of a revocation by the alert named name.
func SourceAlert(name string) string { return "alert:" + name }

// AgentRevoked is agent.revoked: the kill switch revoked an agent.
type AgentRevoked struct {
	Envelope
	AgentID           string    `json:"agentId"`
	Reason            string    `json:"reason"`
	ShutdownTimeoutMs int64     `json:"shutdownTimeoutMs"`
	RevokedAt         time.Time `json:"revokedAt"`
	// Source is SourceAdmin or SourceAlert(name).
	Source string `json:"source"`
}

// NewAgentRevoked builds an agent.revoked event with a new eventId.
func NewAgentRevoked(tenant, agentID string, sequence uint64, reason string, shutdownTimeout time.Duration, source string, at time.Time) *AgentRevoked {
	return &AgentRevoked{
		Envelope:          newEnvelope(EventAgentRevoked, tenant, sequence),
		AgentID:           agentID,
		Reason:            reason,
		ShutdownTimeoutMs: shutdownTimeout.Milliseconds(),
		RevokedAt:         at.UTC(),
		Source:            source,
	}
}

// PipelineSilent is pipeline.silent: no Watchdog notification reached
// sentinel within bridge.watchdog.timeout, so alerts may not be flowing.
type PipelineSilent struct {
	Envelope
	// LastWatchdogAt is when the last Watchdog arrived; absent if none
	// arrived since sentinel started.
	LastWatchdogAt *time.Time `json:"lastWatchdogAt,omitempty"`
	TimeoutSeconds int64      `json:"timeoutSeconds"`
	Timestamp      time.Time  `json:"timestamp"`
}

// NewPipelineSilent builds a pipeline.silent event with a new eventId;
// lastWatchdog is zero when no Watchdog was ever seen.
func NewPipelineSilent(tenant string, sequence uint64, lastWatchdog time.Time, timeout time.Duration, at time.Time) *PipelineSilent {
	e := &PipelineSilent{
		Envelope:       newEnvelope(EventPipelineSilent, tenant, sequence),
		TimeoutSeconds: int64(timeout / time.Second),
		Timestamp:      at.UTC(),
	}
	if !lastWatchdog.IsZero() {
		t := lastWatchdog.UTC()
		e.LastWatchdogAt = &t
	}
	return e
}

// PipelineRestored is pipeline.restored: Watchdog notifications arrive again.
type PipelineRestored struct {
	Envelope
	// SilentSeconds is how long no Watchdog arrived.
	SilentSeconds int64     `json:"silentSeconds"`
	Timestamp     time.Time `json:"timestamp"`
}

// NewPipelineRestored builds a pipeline.restored event with a new eventId.
func NewPipelineRestored(tenant string, sequence uint64, silent time.Duration, at time.Time) *PipelineRestored {
	return &PipelineRestored{
		Envelope:      newEnvelope(EventPipelineRestored, tenant, sequence),
		SilentSeconds: int64(silent / time.Second),
		Timestamp:     at.UTC(),
	}
}

// WebhookTest is webhook.test, sent on demand to check an endpoint.
type WebhookTest struct {
	Envelope
	Message   string    `json:"message"`
	Timestamp time.Time `json:"timestamp"`
}

// NewWebhookTest builds a webhook.test event with a new eventId.
func NewWebhookTest(tenant string, at time.Time) *WebhookTest {
	return &WebhookTest{
		Envelope:  newEnvelope(EventWebhookTest, tenant, 0),
		Message:   "Test delivery from sentinel; verify its signature as you would any event.",
		Timestamp: at.UTC(),
	}
}

// Message is one event ready to deliver: encoded once, so that every
// attempt sends, and signs, the very same bytes.
type Message struct {
	Event string // the event name (X-ABS-Event)
	ID    string // the eventId (X-ABS-Delivery, webhook-id)
	Body  []byte
}

// Encode encodes e as the JSON body of its deliveries.
func Encode(e Event) (Message, error) {
	env := e.envelope()
	body, err := json.Marshal(e)
	if err != nil {
		return Message{}, fmt.Errorf("encode %s event %s: %w", env.Event, env.EventID, err)
	}
	return Message{Event: env.Event, ID: env.EventID, Body: body}, nil
}

// NewEventID returns a random (version 4) UUID.
func NewEventID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
