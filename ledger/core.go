package ledger

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// maxBatch bounds the Applies committed together in one durable write.
const maxBatch = 1024

// defaultMaxLog is how many changes Core keeps in memory for Watch.
const defaultMaxLog = 1 << 16

// Core is the part every backend shares: the state machine, the in-memory log
// of recent changes that Watch serves, and the group commit of Applies. A
// backend only makes changes durable (Persist) and, when shared, brings in
// the changes of other replicas (Catch).
//
// Concurrency: one committer goroutine (RunCommitter) changes the machine;
// Catch, Load, Deliveries and Watch may run concurrently with it. All state
// is guarded by one mutex, held by a commit from the resolution of its first
// op until its durable write returned, so no reader sees an uncommitted
// change.
type Core struct {
	mu      sync.Mutex
	m       machine
	log     []Change // changes after logBase, in order
	logBase Revision
	maxLog  int
	notify  chan struct{} // closed and replaced when changes are published
	reqs    chan *request
	// stopped is closed when RunCommitter returns: a request no committer
	// will take is refused with ErrClosed instead of waiting forever.
	stopped chan struct{}
	// healthy is separate from mu: backends report health from within a
	// commit, which holds mu.
	healthy atomic.Pointer[error]
}

type request struct {
	ctx context.Context
	ops []Op
	// build, when set, makes the ops from the state at commit time (claims
	// and attempts, which depend on leases another replica may have taken).
	build func(*machine) ([]Op, error)
	// after, when set, reads the state once the ops are applied.
	after func(*machine)
	done  chan reply
}

type reply struct {
	res Result
	err error
}

// NewCore returns a core with an empty state at revision 0.
func NewCore() *Core {
	return &Core{
		m:       machine{State: NewState(), outbox: newOutbox()},
		maxLog:  defaultMaxLog,
		notify:  make(chan struct{}),
		reqs:    make(chan *request),
		stopped: make(chan struct{}),
	}
}

// Revision returns the revision of the state.
func (c *Core) Revision() Revision {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m.Revision
}

// Load implements Ledger.Load: a copy of the kill-switch state as of the
// last change this Core applied.
func (c *Core) Load(context.Context) (*State, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m.State.Clone(), nil
}

// Deliveries implements Ledger.Deliveries from the outbox this Core holds.
func (c *Core) Deliveries(_ context.Context, f DeliveryFilter) ([]Delivery, string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, next := c.m.outbox.list(f)
	return d, next, nil
}

// PendingDeliveries implements Ledger.PendingDeliveries.
func (c *Core) PendingDeliveries(context.Context) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m.outbox.pending, nil
}

// Catch applies changes committed elsewhere (by another replica), skipping
// those already applied; a gap is an error. It publishes them to watchers.
func (c *Core) Catch(changes []Change) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ch := range changes {
		if ch.Revision <= c.m.Revision {
			continue
		}
		if err := c.m.applyChange(ch); err != nil {
			return err
		}
		c.publish(ch)
	}
	return nil
}

// publish appends ch to the watch log; c.mu is held.
func (c *Core) publish(chs ...Change) {
	if len(chs) == 0 {
		return
	}
	c.log = append(c.log, chs...)
	if len(c.log) > c.maxLog {
		drop := len(c.log) - c.maxLog/2
		c.logBase = c.log[drop-1].Revision
		c.log = append([]Change(nil), c.log[drop:]...)
	}
	close(c.notify)
	c.notify = make(chan struct{})
}

// Watch implements Ledger.Watch over the in-memory log.
func (c *Core) Watch(ctx context.Context, after Revision, fn func(Change) error) error {
	for {
		c.mu.Lock()
		if after < c.logBase {
			c.mu.Unlock()
			return fmt.Errorf("%w: watch from revision %d, the oldest kept is %d", ErrCompacted, after, c.logBase+1)
		}
		if after > c.m.Revision {
			rev := c.m.Revision
			c.mu.Unlock()
			return fmt.Errorf("watch from revision %d: the ledger is at %d", after, rev)
		}
		pending := c.log[after-c.logBase:]
		wait := c.notify
		c.mu.Unlock()
		for _, ch := range pending {
			if err := fn(ch); err != nil {
				return err
			}
			after = ch.Revision
		}
		if len(pending) > 0 {
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wait:
		}
	}
}

// Apply implements Ledger.Apply: it queues ops for the committer and waits
// for the outcome.
func (c *Core) Apply(ctx context.Context, ops ...Op) (Result, error) {
	return c.submit(ctx, &request{ops: ops})
}

func (c *Core) submit(ctx context.Context, r *request) (Result, error) {
	r.ctx, r.done = ctx, make(chan reply, 1)
	select {
	case c.reqs <- r:
	case <-ctx.Done():
		return Result{}, ctx.Err()
	case <-c.stopped:
		return Result{}, ErrClosed
	}
	// Once queued, the commit runs to its end: leaving earlier would report
	// failure for a change that may yet become durable.
	rep := <-r.done
	return rep.res, rep.err
}

// Claim implements Ledger.Claim through the committer.
func (c *Core) Claim(ctx context.Context, r ClaimRequest) ([]Delivery, error) {
	worker, now, lease, max := r.Worker, r.Now, r.Lease, r.Max
	if worker == "" || lease <= 0 || max <= 0 {
		return nil, fmt.Errorf("%w: claim needs a worker, a positive lease and max", ErrInvalid)
	}
	var ids []string
	var out []Delivery
	_, err := c.submit(ctx, &request{
		build: func(m *machine) ([]Op, error) {
			ids = ids[:0]
			for _, d := range m.outbox.claimable(now, max, r.Tenant, m.Disabled) {
				ids = append(ids, d.Event.ID)
			}
			if len(ids) == 0 {
				return nil, nil
			}
			return []Op{Lease{IDs: ids, Worker: worker, Until: now.Add(lease)}}, nil
		},
		after: func(m *machine) {
			out = out[:0]
			for _, id := range ids {
				d := *m.outbox.byID[id]
				d.Event = d.Event.clone()
				out = append(out, d)
			}
		},
	})
	return out, err
}

// Record implements Ledger.Record through the committer.
func (c *Core) Record(ctx context.Context, id string, a Attempt) error {
	switch a.Outcome {
	case OutcomeDelivered, OutcomeFailed, OutcomeRetry:
	default:
		return fmt.Errorf("%w: attempt outcome %d", ErrInvalid, a.Outcome)
	}
	_, err := c.submit(ctx, &request{build: func(m *machine) ([]Op, error) {
		d, ok := m.outbox.byID[id]
		switch {
		case !ok:
			return nil, fmt.Errorf("record attempt of event %s: %w", id, ErrNotFound)
		case d.Status != StatusPending || d.Worker != a.Worker:
			return nil, fmt.Errorf("record attempt of event %s by %s: %w", id, a.Worker, ErrLeaseLost)
		}
		return []Op{RecordAttempt{ID: id, Attempt: a}}, nil
	}})
	return err
}

// Redeliver implements Ledger.Redeliver through the committer.
func (c *Core) Redeliver(ctx context.Context, id string, now time.Time) error {
	_, err := c.submit(ctx, &request{build: func(m *machine) ([]Op, error) {
		d, ok := m.outbox.byID[id]
		if !ok {
			return nil, fmt.Errorf("redeliver event %s: %w", id, ErrNotFound)
		}
		if d.Status == StatusPending {
			return nil, nil // already on its way
		}
		return []Op{RedeliverEvent{ID: id, At: now}}, nil
	}})
	return err
}

// SetHealth records why the backend cannot commit (nil: it can).
func (c *Core) SetHealth(err error) {
	if err == nil {
		c.healthy.Store(nil)
		return
	}
	c.healthy.Store(&err)
}

// Healthy returns what SetHealth recorded.
func (c *Core) Healthy() error {
	if p := c.healthy.Load(); p != nil {
		return *p
	}
	return nil
}

// Txn is a batch of Applies being committed: the state is locked from Begin
// to Commit or Abort.
type Txn struct {
	c       *Core
	undo    []func()
	changes []Change
	caught  []Change
}

// Persister makes a batch durable for a backend.
type Persister interface {
	// Prepare starts the durable write, before the batch is resolved; a
	// shared backend locks the ledger for the batch and catches up with
	// Txn.Catch. An error fails the whole batch.
	Prepare(ctx context.Context, t *Txn) error
	// Persist makes changes durable (or fails, and then nothing of them may
	// become durable). It is called once per prepared batch, also with no
	// changes, so that a backend can end what Prepare began.
	Persist(ctx context.Context, t *Txn, changes []Change) error
}

// Catch applies changes other replicas committed, within the batch.
func (t *Txn) Catch(changes []Change) error {
	for _, ch := range changes {
		if ch.Revision <= t.c.m.Revision {
			continue
		}
		if err := t.c.m.applyChange(ch); err != nil {
			return err
		}
		t.caught = append(t.caught, ch)
	}
	return nil
}

// Revision is the revision of the state the batch started from (after Catch).
func (t *Txn) Revision() Revision { return t.c.m.Revision - Revision(len(t.changes)) }

// apply resolves and applies one request; on error the request leaves no
// trace.
func (t *Txn) apply(r *request) (Result, error) {
	m := &t.c.m
	ops := r.ops
	if r.build != nil {
		var err error
		if ops, err = r.build(m); err != nil {
			return Result{}, err
		}
	}
	mark := len(t.undo)
	res := Result{Ops: make([]OpResult, len(ops))}
	var effective []Op
	for i, op := range ops {
		eff, or, err := m.resolve(op)
		if err != nil {
			t.rollback(mark)
			return Result{}, fmt.Errorf("op %d (%s): %w", i, opName(op), err)
		}
		res.Ops[i] = or
		if eff != nil {
			m.apply(eff, &t.undo)
			effective = append(effective, eff)
		}
	}
	if len(effective) > 0 {
		rev := m.Revision + 1
		setVal(&m.Revision, rev, &t.undo)
		res.Revision = rev
		t.changes = append(t.changes, Change{Revision: rev, Ops: effective})
	}
	if r.after != nil {
		r.after(m)
	}
	return res, nil
}

func opName(op Op) string {
	if op == nil {
		return "nil"
	}
	return op.opName()
}

func (t *Txn) rollback(mark int) {
	for i := len(t.undo) - 1; i >= mark; i-- {
		t.undo[i]()
	}
	t.undo = t.undo[:mark]
}

// RunCommitter commits queued Applies in batches through p until stop is
// closed; then it fails every later Apply with ErrClosed. It runs once per
// Core.
func (c *Core) RunCommitter(stop <-chan struct{}, p Persister) {
	defer close(c.stopped)
	for {
		var batch []*request
		select {
		case r := <-c.reqs:
			batch = append(batch, r)
		case <-stop:
			return
		}
	more:
		for len(batch) < maxBatch {
			select {
			case r := <-c.reqs:
				batch = append(batch, r)
			default:
				break more
			}
		}
		c.commit(batch, p)
	}
}

func (c *Core) commit(batch []*request, p Persister) {
	ctx := context.Background()
	c.mu.Lock()
	t := &Txn{c: c}
	replies := make([]reply, len(batch))
	err := p.Prepare(ctx, t)
	if err == nil {
		for i, r := range batch {
			if r.ctx.Err() != nil {
				replies[i].err = r.ctx.Err() // gave up before its commit began
				continue
			}
			replies[i].res, replies[i].err = t.apply(r)
		}
		err = p.Persist(ctx, t, t.changes)
	}
	if err != nil {
		t.rollback(0)
		for i := range replies {
			if replies[i].err == nil {
				replies[i] = reply{err: err}
			}
		}
		c.publish(t.caught...)
	} else {
		c.publish(append(t.caught, t.changes...)...)
	}
	c.mu.Unlock()
	for i, r := range batch {
		r.done <- replies[i]
	}
}
