// Package ledger is sentinel's durable state: everything that must survive a
// restart, a crash or the loss of a replica (revocations, reinstatements,
// pending commands, forgotten agents, announced states, alert idempotency
// keys, the webhook outbox, the token-signing key) goes through one Ledger.
//
// Callers keep caches fed by it (Load, then Watch) and change it only through
// Apply; no state lives in two places kept in step by hand.
//
// Two backends implement the interface and pass the same conformance suite
// (package ledgertest): ledger/embedded, files under --storage.path needing
// nothing installed, and ledger/postgres, shared by any number of replicas.
// Both run the same deterministic state machine (Core): an Apply resolves its
// conditional operations against the current state, and what it changed is
// recorded as one Change of unconditional operations, numbered by a Revision.
// Replaying the changes in revision order rebuilds the state exactly, which
// is how a restarted sentinel and every other replica arrive at the same
// state.
package ledger

import (
	"context"
	"errors"
	"io"
	"time"
)

// Revision numbers the changes of a ledger: 1 for the first Apply that changed
// anything, then consecutive. It is the same on every replica.
type Revision uint64

// Ledger is sentinel's durable state.
//
// Durability: a method that changes state returns nil only once the change is
// durable (fsynced by the embedded backend, committed by PostgreSQL). A call
// that returns an error changed nothing that a later Load or Watch could see,
// unless the error says the outcome is unknown (ErrUnknownOutcome: the commit
// was sent to PostgreSQL and the answer lost).
//
// Atomicity: the operations of one Apply are committed together or not at
// all; conditional operations see the effect of the earlier operations of the
// same Apply.
//
// Concurrency: every method is safe for concurrent use. Applies are totally
// ordered (by Revision) across every replica sharing the ledger.
//
// Ownership: values passed in are not retained after the call returns
// (events are copied); values returned belong to the caller.
type Ledger interface {
	// Apply commits ops atomically and durably, and reports for each op, in
	// order, whether it applied and what the ledger assigned (command and
	// event sequence numbers). An Apply none of whose ops applied changes
	// nothing and has no revision. A failed Apply changes nothing.
	Apply(ctx context.Context, ops ...Op) (Result, error)

	// Load returns a copy of the whole durable kill-switch state and its
	// revision. The outbox is read with Deliveries.
	Load(ctx context.Context) (*State, error)

	// Watch calls fn with every change after revision after, this replica's
	// and other replicas', in revision order, until ctx ends (then it returns
	// ctx.Err()) or fn returns an error (returned as is). Changes committed by
	// another replica arrive within a second. A Watch that asks for, or falls
	// behind to, a revision the ledger no longer keeps in memory returns
	// ErrCompacted: the caller then Loads and watches again. fn must not
	// call Apply and wait for its revision to be watched.
	Watch(ctx context.Context, after Revision, fn func(Change) error) error

	// Claim leases up to r.Max pending deliveries due at r.Now to r.Worker
	// for r.Lease: for each agent (tenant, agent id) only its lowest-sequence
	// pending event is eligible, so one agent's events go out in sequence
	// order; an event of a tenant whose endpoint is disabled is not handed
	// out; with r.Tenant set, only that tenant's events are (so that one
	// tenant's slow endpoint never holds up another's claims). A delivery
	// leased to a worker is not handed to another until the lease runs out
	// (the worker died) or Record releases it. The lease is durable like any
	// other change; a Claim that finds nothing writes nothing.
	Claim(ctx context.Context, r ClaimRequest) ([]Delivery, error)
	// Record stores the outcome of one delivery attempt by the worker that
	// holds the lease, and releases it. ErrNotFound when the event is
	// unknown, ErrLeaseLost when the worker does not hold the lease (it ran
	// out and another worker claimed the event, or the event is no longer
	// pending).
	Record(ctx context.Context, eventID string, a Attempt) error
	// Deliveries lists deliveries matching f, oldest first, and the cursor
	// of the next page ("" at the end).
	Deliveries(ctx context.Context, f DeliveryFilter) ([]Delivery, string, error)
	// PendingDeliveries counts the deliveries waiting (due or retrying),
	// every replica's, as of the last change this replica applied. It does
	// not walk the outbox: the count is kept as changes apply.
	PendingDeliveries(ctx context.Context) (int, error)
	// Redeliver makes a delivered or failed event pending again, due at once,
	// its attempts kept. ErrNotFound when the event is unknown.
	Redeliver(ctx context.Context, eventID string, now time.Time) error

	// SigningKey returns the key that signs runtime tokens, created once and
	// shared by every replica. A missing key next to existing state is
	// damage: an error naming where the key should be, never a new key.
	SigningKey(ctx context.Context, size int) ([]byte, error)

	// SaveAgents stores this replica's hot state (the heartbeat store's
	// snapshot encoding, written by write) durably and atomically, replacing
	// its previous one. It is called every snapshot interval, never on the
	// heartbeat path.
	SaveAgents(ctx context.Context, takenAt time.Time, write func(io.Writer) error) error
	// LoadAgents calls read with every stored hot state: this replica's and,
	// with a shared backend, every other replica's, each with the time it
	// was taken. No stored state is no call and no error.
	LoadAgents(ctx context.Context, read func(replica string, takenAt time.Time, r io.Reader) error) error

	// Healthy returns nil while the ledger can commit, and why not otherwise.
	Healthy() error
	// Close releases the ledger; Applies waiting to commit fail with
	// ErrClosed. Close is idempotent.
	Close() error
}

// ClaimRequest asks for deliveries to attempt.
type ClaimRequest struct {
	Worker string
	// Tenant restricts the claim to one tenant's events; "" claims any.
	Tenant string
	Now    time.Time
	Lease  time.Duration
	Max    int
}

// Result reports an Apply.
type Result struct {
	// Revision of the change, 0 when no op applied.
	Revision Revision
	// Ops holds one entry per op passed to Apply, in the same order.
	Ops []OpResult
}

// Applied reports whether op i applied.
func (r Result) Applied(i int) bool { return i < len(r.Ops) && r.Ops[i].Applied }

// OpResult is the outcome of one op.
type OpResult struct {
	// Applied is false for a conditional op whose condition did not hold
	// (Revoke of a revoked agent, an Announce that found another state, an
	// AlertSeen key already seen, ...).
	Applied bool
	// CommandSeq is the sequence number a SetCommand was given.
	CommandSeq uint32
	// Events are the events an applied op enqueued, with their assigned
	// sequence numbers.
	Events []Event
}

// Change is one committed Apply: the unconditional operations it made, in
// order, with every number the ledger assigned filled in. Applying the
// changes of a ledger in revision order to an empty State rebuilds its State.
type Change struct {
	Revision Revision
	Ops      []Op
}

// Errors of the ledger. Backends wrap them with context; match with errors.Is.
var (
	// ErrUnavailable: the backend cannot commit now (PostgreSQL unreachable,
	// the journal failed). Nothing changed; the request may be retried.
	ErrUnavailable = errors.New("ledger unavailable")
	// ErrUnknownOutcome: the commit may or may not have happened.
	ErrUnknownOutcome = errors.New("ledger commit outcome unknown")
	// ErrClosed: the ledger was closed.
	ErrClosed = errors.New("ledger closed")
	// ErrCompacted: Watch was asked for changes the ledger no longer keeps.
	ErrCompacted = errors.New("ledger revision compacted")
	// ErrNotFound: no such event.
	ErrNotFound = errors.New("not found")
	// ErrLeaseLost: the worker does not hold the delivery's lease.
	ErrLeaseLost = errors.New("delivery lease lost")
	// ErrCorrupt: durable data failed verification. Sentinel must not start
	// over it: it may be the only copy of acknowledged actions.
	ErrCorrupt = errors.New("corrupt ledger data")
	// ErrInvalid: an op is malformed (an unknown command, an event without
	// id). Nothing changed.
	ErrInvalid = errors.New("invalid ledger operation")
)
