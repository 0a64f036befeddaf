package ledger

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/agentsentinel/sentinel/fleet"
)

// Op is one operation of an Apply. The set is closed: the ops of this
// package are the only ones.
type Op interface {
	opName() string
}

// Event is an outgoing webhook event held in the outbox.
type Event struct {
	// ID is the event id (a UUID v4 chosen by the caller); it is also the
	// delivery's id.
	ID      string `json:"id"`
	Tenant  string `json:"tenant"`
	AgentID string `json:"agent_id,omitempty"`
	// Type is the event name, such as heartbeat.state_change or agent.revoked.
	Type string `json:"type"`
	// Sequence is assigned by the ledger: per (tenant, agent id), strictly
	// increasing across every replica, forgets included.
	Sequence  uint64          `json:"sequence"`
	CreatedAt time.Time       `json:"created_at"`
	Body      json.RawMessage `json:"body,omitempty"`
}

func (e *Event) key() fleet.Key { return fleet.Key{Tenant: e.Tenant, AgentID: e.AgentID} }

func (e Event) clone() Event {
	e.Body = append(json.RawMessage(nil), e.Body...)
	return e
}

// Revoke revokes an agent that is not revoked. Event, when set, is enqueued
// only if the revocation applied (agent.revoked), in the same commit.
type Revoke struct {
	Key        fleet.Key        `json:"key"`
	Revocation fleet.Revocation `json:"revocation"`
	Event      *Event           `json:"event,omitempty"`
}

// Reinstate lifts an agent's revocation; it applies if the agent is revoked.
type Reinstate struct {
	Key fleet.Key `json:"key"`
}

// SetCommand makes Command the agent's pending command, replacing an older
// one. It always applies; the ledger assigns Seq (OpResult.CommandSeq),
// increasing across every replica.
type SetCommand struct {
	Key      fleet.Key     `json:"key"`
	Command  fleet.Command `json:"command"`
	IssuedAt time.Time     `json:"issued_at"`
	// Seq is assigned by the ledger; a caller leaves it 0.
	Seq uint32 `json:"seq,omitempty"`
}

// AckCommand clears the agent's pending command if it is still command Seq.
type AckCommand struct {
	Key fleet.Key `json:"key"`
	Seq uint32    `json:"seq"`
}

// Forget erases the agent's revocation, pending command, announced state and
// registration, and leaves a tombstone stamped At: hot state of the agent
// from before At is not restored, and runtime tokens issued before At are
// refused (State.Forgotten). It applies if the ledger knows anything of the
// agent.
type Forget struct {
	Key fleet.Key `json:"key"`
	At  time.Time `json:"at"`
}

// Register records an agent's registration, so that the kill switch knows an
// agent registered after the last snapshot of a crashed replica. It applies
// if the agent was not registered, nor forgotten at or after At.
type Register struct {
	Key fleet.Key `json:"key"`
	At  time.Time `json:"at"`
}

// Announce is a compare-and-set of the agent's announced state (ACTIVE for an
// agent never announced): it applies if the announced state is one of From
// (any state but To when From is empty), sets it to To and enqueues Event
// with the next sequence of the agent.
type Announce struct {
	Key   fleet.Key     `json:"key"`
	From  []fleet.State `json:"from,omitempty"`
	To    fleet.State   `json:"to"`
	Event *Event        `json:"event,omitempty"`
}

// AlertSeen applies once per Key (an alert's idempotency key), until the key
// is pruned after AlertKeyRetention.
type AlertSeen struct {
	Key string    `json:"key"`
	At  time.Time `json:"at"`
}

// Enqueue adds Event to the outbox; it always applies.
type Enqueue struct {
	Event Event `json:"event"`
}

// SetEndpointDisabled disables (after a 410) or re-enables a tenant's
// webhook endpoint; it applies if the flag changes.
type SetEndpointDisabled struct {
	Tenant   string `json:"tenant"`
	Disabled bool   `json:"disabled"`
}

// PipelineState is the alerting pipeline's state as the watchdog announced
// it.
type PipelineState uint8

// Pipeline states; PipelineOK is the state of a new ledger.
const (
	PipelineOK PipelineState = iota
	PipelineSilent
)

func (p PipelineState) String() string {
	if p == PipelineSilent {
		return "silent"
	}
	return "ok"
}

// Pipeline is a compare-and-set of the pipeline's announced state, so that of
// several replicas' watchdogs exactly one announces pipeline.silent or
// pipeline.restored: it applies if the state is Expect, sets To and enqueues
// Events.
type Pipeline struct {
	Expect PipelineState `json:"expect"`
	To     PipelineState `json:"to"`
	Events []Event       `json:"events,omitempty"`
}

// WatchdogSeen records that the pipeline's Watchdog alert arrived at At, so
// that every replica's watchdog knows, whichever replica Alertmanager
// reached. It applies if At is after the last recorded time.
type WatchdogSeen struct {
	At time.Time `json:"at"`
}

// The ops below are never passed to Apply: the ledger writes them into its
// changes for the outbox's bookkeeping and for pruning.

// Lease records that Worker holds the listed deliveries until Until.
type Lease struct {
	IDs    []string  `json:"ids"`
	Worker string    `json:"worker"`
	Until  time.Time `json:"until"`
}

// RecordAttempt stores one delivery attempt's outcome and releases the lease.
type RecordAttempt struct {
	ID      string  `json:"id"`
	Attempt Attempt `json:"attempt"`
}

// Redeliver makes a delivered or failed event pending again.
type RedeliverEvent struct {
	ID string    `json:"id"`
	At time.Time `json:"at"`
}

// Prune drops alert keys, tombstones and finished deliveries that have
// outlived their retention at At.
type Prune struct {
	At time.Time `json:"at"`
}

func (Revoke) opName() string              { return "revoke" }
func (Reinstate) opName() string           { return "reinstate" }
func (SetCommand) opName() string          { return "command" }
func (AckCommand) opName() string          { return "ack" }
func (Forget) opName() string              { return "forget" }
func (Register) opName() string            { return "register" }
func (Announce) opName() string            { return "announce" }
func (AlertSeen) opName() string           { return "alert" }
func (Enqueue) opName() string             { return "enqueue" }
func (SetEndpointDisabled) opName() string { return "endpoint" }
func (Pipeline) opName() string            { return "pipeline" }
func (WatchdogSeen) opName() string        { return "watchdog" }
func (Lease) opName() string               { return "lease" }
func (RecordAttempt) opName() string       { return "attempt" }
func (RedeliverEvent) opName() string      { return "redeliver" }
func (Prune) opName() string               { return "prune" }

// decoders maps an op's wire name, the opName it is encoded with, to a
// decoder of its JSON. The names come from the ops themselves, so encoding
// and decoding cannot disagree on one.
var decoders = opDecoders(
	decoder[Revoke], decoder[Reinstate], decoder[SetCommand], decoder[AckCommand],
	decoder[Forget], decoder[Register], decoder[Announce], decoder[AlertSeen],
	decoder[Enqueue], decoder[SetEndpointDisabled], decoder[Pipeline], decoder[WatchdogSeen],
	decoder[Lease], decoder[RecordAttempt], decoder[RedeliverEvent], decoder[Prune],
)

type opDecoder = func([]byte) (Op, error)

func opDecoders(ds ...func() (string, opDecoder)) map[string]opDecoder {
	m := make(map[string]opDecoder, len(ds))
	for _, d := range ds {
		name, dec := d()
		m[name] = dec
	}
	return m
}

// decoder returns T's wire name and a decoder of its JSON.
func decoder[T Op]() (string, opDecoder) {
	var zero T
	return zero.opName(), func(b []byte) (Op, error) {
		var op T
		if err := json.Unmarshal(b, &op); err != nil {
			return nil, err
		}
		return op, nil
	}
}

// wireChange is a Change as backends store it: JSON, one object per change,
// each op tagged with its name. Unknown fields are ignored, so a newer field
// is not a format break; an unknown op is an error (a newer ledger wrote it).
type wireChange struct {
	Revision Revision `json:"rev"`
	Ops      []wireOp `json:"ops"`
}

type wireOp struct {
	Op   string          `json:"op"`
	Data json.RawMessage `json:"data"`
}

// EncodeChange returns the stored form of c. It writes the envelope itself:
// json.Marshal would validate and compact every op's JSON a second time, which
// is most of the cost of a revoke-all of 100k agents.
func EncodeChange(c Change) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString(`{"rev":`)
	buf.WriteString(strconv.FormatUint(uint64(c.Revision), 10))
	buf.WriteString(`,"ops":[`)
	enc := json.NewEncoder(&buf)
	for i, op := range c.Ops {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.WriteString(`{"op":"`)
		buf.WriteString(op.opName()) // names are plain ASCII: no escaping
		buf.WriteString(`","data":`)
		if r, ok := op.(Revoke); ok {
			b, err := r.appendJSON(buf.AvailableBuffer())
			if err != nil {
				return nil, fmt.Errorf("encode %s op: %w", op.opName(), err)
			}
			buf.Write(b)
		} else {
			if err := enc.Encode(op); err != nil {
				return nil, fmt.Errorf("encode %s op: %w", op.opName(), err)
			}
			buf.Truncate(buf.Len() - 1) // Encode's newline
		}
		buf.WriteByte('}')
		if i == 0 && len(c.Ops) > 1 {
			// A batch's ops are mostly alike (a revoke-all is 100k of one
			// kind): size the buffer once from the first, rather than
			// doubling and copying tens of MB on the way.
			buf.Grow((buf.Len()+buf.Len()/8)*(len(c.Ops)-1) + 2)
		}
	}
	buf.WriteString("]}")
	return buf.Bytes(), nil
}

// DecodeChange parses the stored form of a change.
func DecodeChange(b []byte) (Change, error) {
	var w wireChange
	if err := json.Unmarshal(b, &w); err != nil {
		return Change{}, fmt.Errorf("decode change: %w", err)
	}
	if w.Revision == 0 {
		return Change{}, fmt.Errorf("decode change: no revision")
	}
	c := Change{Revision: w.Revision, Ops: make([]Op, len(w.Ops))}
	for i, o := range w.Ops {
		dec, ok := decoders[o.Op]
		if !ok {
			return Change{}, fmt.Errorf("decode change %d: unknown op %q (written by a newer sentinel?)", w.Revision, o.Op)
		}
		op, err := dec(o.Data)
		if err != nil {
			return Change{}, fmt.Errorf("decode change %d: %s op: %w", w.Revision, o.Op, err)
		}
		c.Ops[i] = op
	}
	return c, nil
}

// DeliveryStatus is where an outbox event stands.
type DeliveryStatus string

// Delivery statuses, as the deliveries API filters them (?status=).
const (
	StatusPending   DeliveryStatus = "pending"
	StatusDelivered DeliveryStatus = "delivered"
	StatusFailed    DeliveryStatus = "failed"
)

// ParseDeliveryStatus parses a status name.
func ParseDeliveryStatus(s string) (DeliveryStatus, bool) {
	switch DeliveryStatus(s) {
	case StatusPending, StatusDelivered, StatusFailed:
		return DeliveryStatus(s), true
	}
	return "", false
}

// Delivery is an outbox event with its delivery state.
type Delivery struct {
	Event          Event          `json:"event"`
	Status         DeliveryStatus `json:"status"`
	Attempts       int            `json:"attempts"`
	LastStatusCode int            `json:"last_status_code,omitempty"`
	LastError      string         `json:"last_error,omitempty"`
	LastAttemptAt  time.Time      `json:"last_attempt_at,omitzero"`
	// NextAttempt is when a pending delivery is due.
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	// Worker and LeaseUntil name the lease of a claimed delivery.
	Worker     string    `json:"worker,omitempty"`
	LeaseUntil time.Time `json:"lease_until,omitzero"`
	// ordinal orders the outbox: the revision that enqueued the event, then
	// its place in that change.
	ordinal uint64
}

// Outcome is the result of one delivery attempt.
type Outcome uint8

// Outcomes of an attempt.
const (
	// OutcomeDelivered: the endpoint answered 2xx.
	OutcomeDelivered Outcome = iota + 1
	// OutcomeRetry: try again at Attempt.NextAttempt.
	OutcomeRetry
	// OutcomeFailed: a permanent failure; the event is not retried.
	OutcomeFailed
)

// Attempt is one delivery attempt's outcome.
type Attempt struct {
	Worker     string    `json:"worker"`
	At         time.Time `json:"at"`
	Outcome    Outcome   `json:"outcome"`
	StatusCode int       `json:"status_code,omitempty"`
	Error      string    `json:"error,omitempty"`
	// NextAttempt is when to retry, for OutcomeRetry.
	NextAttempt time.Time `json:"next_attempt,omitzero"`
}

// DeliveryFilter selects deliveries; zero fields match everything.
type DeliveryFilter struct {
	// ID selects one event by its id.
	ID      string
	Tenant  string
	AgentID string
	Status  DeliveryStatus
	// Limit caps the page; 100 when 0.
	Limit int
	// Cursor is the previous page's next cursor.
	Cursor string
}
