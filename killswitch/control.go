// Package killswitch serves the kill switch: revocations, pending
// commands and forgotten agents, made durable by the ledger before the
// request that changed them is answered, and the admin API.
package killswitch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/heartbeat"
	"github.com/agentsentinel/sentinel/ledger"
)

// asyncQueue bounds the registrations and acknowledgements waiting to be
// committed; asyncBatch is how many go in one Apply; asyncLinger is how long
// the first of a batch waits for company. Every Apply is a journal write and
// an fsync, and a blocking fsync holds the runtime's processor until sysmon
// takes it back (up to 10 ms): committed a few at a time, a fleet's
// registrations stalled its own heartbeats. Nothing waits on these commits,
// and the wait loses nothing a crash would not (see AgentRegistered).
const (
	asyncQueue  = 1 << 16
	asyncBatch  = 4096
	asyncLinger = 100 * time.Millisecond
)

// PendingCommand is a command waiting for its acknowledgement.
type PendingCommand = ledger.Command

// Control is the kill switch: a cache of the ledger's kill-switch state for
// the heartbeat path, fed by the ledger (Load, then Watch), and the one way
// the admin API changes that state (through ledger.Apply).
//
// Consistency: every change, this replica's and other replicas', reaches the
// cache through the ledger's Watch, in revision order. A change made here
// returns once the ledger committed it and the cache has caught up with it,
// so the next heartbeat on this replica already sees it; other replicas see
// it within their ledger's watch delay (≤ 1 s).
//
// Concurrency: safe for concurrent use. The heartbeat path only reads
// (Revocation, NewAgent) or queues without waiting (CommandAcknowledged,
// AgentRegistered).
//
// Ownership: Control owns the cache; the store's revoked and command bits
// are a copy Control keeps in step when it applies a change. The store never
// calls back into Control except through the NewAgent hook, which only reads,
// so Control never calls the store while holding its own lock.
type Control struct {
	ledger ledger.Ledger
	logger *slog.Logger
	// Event, when set, makes the agent.revoked event a revocation enqueues
	// in the same commit (the webhook outbox); nil enqueues none.
	Event func(fleet.Key, fleet.Revocation) *ledger.Event

	mu    sync.RWMutex
	state *ledger.State
	// applied is the revision whose change is in the cache and the store:
	// the store's bits follow the cache outside mu, so state.Revision runs
	// ahead of it for a moment.
	applied ledger.Revision
	// announcedAt is when each announced state in state.Announced was
	// committed, as far as this replica watched it (zero after a restart).
	announcedAt map[fleet.Key]time.Time
	store       *heartbeat.Store
	notify      chan struct{} // closed and replaced when applied moves on

	async        chan ledger.Op
	asyncPending atomic.Int64 // queued and not yet committed (or dropped)
	asyncDropped atomic.Uint64
	// closing orders queue against Close: an op queued once writeAsync has
	// flushed and returned would sit in async, lost and never counted.
	closing sync.RWMutex
	closed  bool // under closing

	cancel context.CancelFunc
	done   sync.WaitGroup

	revocationsTotal *prometheus.CounterVec
}

// New loads the kill-switch state from l and keeps it up to date until Close.
func New(ctx context.Context, l ledger.Ledger, logger *slog.Logger, reg prometheus.Registerer) (*Control, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	state, err := l.Load(ctx)
	if err != nil {
		return nil, fmt.Errorf("load kill-switch state: %w", err)
	}
	state.Registered = nil // asked of the ledger: see Known
	c := &Control{
		ledger:      l,
		logger:      logger,
		state:       state,
		applied:     state.Revision,
		announcedAt: make(map[fleet.Key]time.Time),
		notify:      make(chan struct{}),
		async:       make(chan ledger.Op, asyncQueue),
		revocationsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sentinel_revocations_total",
			Help: "Agents revoked by the kill switch, by source (admin, alert).",
		}, []string{"source"}),
	}
	c.revocationsTotal.WithLabelValues("admin")
	c.revocationsTotal.WithLabelValues("alert")
	if reg != nil {
		reg.MustRegister(c.revocationsTotal, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sentinel_killswitch_async_dropped_total",
			Help: "Registrations and command acknowledgements not recorded because the queue was full, the ledger failed or the kill switch was closed; they only matter after a crash.",
		}, func() float64 { return float64(c.asyncDropped.Load()) }))
	}
	runCtx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.done.Add(2)
	go func() { defer c.done.Done(); c.watch(runCtx) }()
	go func() { defer c.done.Done(); c.writeAsync(runCtx) }()
	return c, nil
}

// Close stops following the ledger. Registrations and acknowledgements
// still queued are committed first; later ones are dropped (counted).
func (c *Control) Close() {
	c.closing.Lock()
	c.closed = true
	c.closing.Unlock()
	c.cancel()
	c.done.Wait()
}

// watch applies the ledger's changes to the cache until ctx ends. A watch
// that fell behind what the ledger keeps starts again from a fresh Load.
func (c *Control) watch(ctx context.Context) {
	for {
		c.mu.RLock()
		rev := c.state.Revision
		c.mu.RUnlock()
		err := c.ledger.Watch(ctx, rev, c.apply)
		if ctx.Err() != nil {
			return
		}
		c.logger.Warn("kill-switch watch of the ledger restarts", "err", err)
		if errors.Is(err, ledger.ErrCompacted) {
			if s, lerr := c.ledger.Load(ctx); lerr == nil {
				c.reset(s)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// reset replaces the cache with s, after a watch lost track.
func (c *Control) reset(s *ledger.State) {
	s.Registered = nil // asked of the ledger: see Known
	c.mu.Lock()
	old := c.state
	c.state = s
	store := c.store
	c.mu.Unlock()
	if store != nil {
		// syncStore sets what s holds; what it no longer holds (lifted or
		// acknowledged during the gap, maybe on another replica) is
		// cleared here.
		for k := range old.Revocations {
			if _, ok := s.Revocations[k]; !ok {
				store.SetRevoked(k, false)
			}
		}
		for k := range old.Commands {
			if _, ok := s.Commands[k]; !ok {
				store.SetCommand(k, fleet.CommandNone, 0)
			}
		}
		c.syncStore(store, s)
	}
	c.mu.Lock()
	c.applied = s.Revision
	c.wake()
	c.mu.Unlock()
}

func (c *Control) wake() {
	close(c.notify)
	c.notify = make(chan struct{})
}

// apply brings one committed change into the cache and the store.
func (c *Control) apply(ch ledger.Change) error {
	c.mu.Lock()
	// For acks: was the command pending? Made only for a change with one,
	// not for every batch of registrations.
	var before []bool
	for i, op := range ch.Ops {
		if a, ok := op.(ledger.AckCommand); ok {
			if before == nil {
				before = make([]bool, len(ch.Ops))
			}
			pc, pending := c.state.Commands[a.Key]
			before[i] = pending && pc.Seq == a.Seq
		}
	}
	if err := c.state.Apply(ch); err != nil {
		c.mu.Unlock()
		return err
	}
	for _, op := range ch.Ops {
		switch o := op.(type) {
		case ledger.Announce:
			at := time.Now()
			if o.Event != nil {
				at = o.Event.CreatedAt
			}
			c.announcedAt[o.Key] = at
		case ledger.Forget:
			delete(c.announcedAt, o.Key)
		}
	}
	store := c.store
	c.mu.Unlock()

	// The store's bits follow; never with c.mu held (see Control).
	if store != nil {
		for i, op := range ch.Ops {
			switch o := op.(type) {
			case ledger.Revoke:
				store.SetRevoked(o.Key, true)
			case ledger.Reinstate:
				store.SetRevoked(o.Key, false)
			case ledger.SetCommand:
				store.SetCommand(o.Key, o.Command, o.Seq)
			case ledger.AckCommand:
				if before[i] {
					store.SetCommand(o.Key, fleet.CommandNone, 0)
				}
			case ledger.Forget:
				if a, ok := store.Get(o.Key); ok {
					if a.LastHeartbeat.After(o.At) {
						// It beat again after the forget: a new agent,
						// without the revocation and command just erased.
						store.SetRevoked(o.Key, false)
						store.SetCommand(o.Key, fleet.CommandNone, 0)
					} else {
						store.Delete(o.Key)
					}
				}
			}
		}
	}
	c.mu.Lock()
	c.applied = ch.Revision
	c.wake()
	c.mu.Unlock()
	return nil
}

// Announced returns the agent's announced state (ACTIVE when none) and
// when it was announced, zero if not since this replica started.
func (c *Control) Announced(k fleet.Key) (fleet.State, time.Time) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.state.Announced[k], c.announcedAt[k]
}

// AlertSeen reports whether an alert's idempotency key was recorded.
func (c *Control) AlertSeen(key string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	_, ok := c.state.AlertKeys[key]
	return ok
}

// Pipeline returns the pipeline's announced state and when the Watchdog
// last arrived (zero if never).
func (c *Control) Pipeline() (ledger.PipelineState, time.Time) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.state.Pipeline, c.state.WatchdogAt
}

// EndpointDisabled reports whether a 410 disabled the tenant's endpoint.
func (c *Control) EndpointDisabled(tenant string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.state.Disabled[tenant]
}

// DisabledEndpoints returns the tenants whose endpoint a 410 disabled.
func (c *Control) DisabledEndpoints() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return slices.Sorted(maps.Keys(c.state.Disabled))
}

// Commit applies ops through the ledger in one durable write and returns
// once this replica's cache holds the change: the bridge's and the
// outbox's way to change the ledger, so that what they read next from
// Control reflects what they wrote.
func (c *Control) Commit(ctx context.Context, ops ...ledger.Op) (ledger.Result, error) {
	res, err := c.commit(ctx, ops...)
	if err != nil {
		return res, err
	}
	for i, op := range ops {
		if r, ok := op.(ledger.Revoke); ok && res.Applied(i) {
			c.revocationsTotal.WithLabelValues(sourceLabel(r.Revocation.Source)).Inc()
			c.logger.Warn("agent revoked", "tenant", r.Key.Tenant, "agent_id", r.Key.AgentID, "reason", r.Revocation.Reason, "revoked_by", r.Revocation.Source)
		}
	}
	return res, nil
}

// waitFor returns once the cache and the store hold revision rev.
func (c *Control) waitFor(ctx context.Context, rev ledger.Revision) error {
	for {
		c.mu.RLock()
		cur, wait := c.applied, c.notify
		c.mu.RUnlock()
		if cur >= rev {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("committed revision %d not seen yet: %w", rev, ctx.Err())
		case <-wait:
		}
	}
}

// commit applies ops through the ledger and waits until the cache has them.
func (c *Control) commit(ctx context.Context, ops ...ledger.Op) (ledger.Result, error) {
	res, err := c.ledger.Apply(ctx, ops...)
	if err != nil {
		return res, err
	}
	if res.Revision != 0 {
		if err := c.waitFor(ctx, res.Revision); err != nil {
			return res, err
		}
	}
	return res, nil
}

// writeAsync commits queued registrations and acknowledgements in batches.
func (c *Control) writeAsync(ctx context.Context) {
	for {
		var batch []ledger.Op
		select {
		case op := <-c.async:
			batch = append(batch, op)
		case <-ctx.Done():
			// Flush what is queued: a clean shutdown loses nothing. This
			// goroutine is the only receiver, so a non-empty queue never
			// blocks it.
			for len(c.async) > 0 {
				batch = append(batch, <-c.async)
			}
			if len(batch) > 0 {
				c.writeBatch(context.Background(), batch)
			}
			return
		}
		linger := time.NewTimer(asyncLinger)
	more:
		for len(batch) < asyncBatch {
			select {
			case op := <-c.async:
				batch = append(batch, op)
			case <-linger.C:
				break more
			case <-ctx.Done():
				break more // written now; the loop then flushes the rest
			}
		}
		linger.Stop()
		c.writeBatch(ctx, batch)
	}
}

func (c *Control) writeBatch(ctx context.Context, batch []ledger.Op) {
	// Not cancelled by Close: a batch taken from the queue is written, so
	// that a clean shutdown loses nothing.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if _, err := c.ledger.Apply(ctx, batch...); err != nil {
		c.drop(len(batch), err.Error())
	}
	c.asyncPending.Add(-int64(len(batch)))
}

// drop counts lost asynchronous records and logs at powers of two, so a
// failing ledger under load cannot flood the log.
func (c *Control) drop(n int, reason string) {
	total := c.asyncDropped.Add(uint64(n))
	if prev := total - uint64(n); prev == 0 || total&(total-1) == 0 || (prev^total) > prev {
		c.logger.Warn("registrations or command acknowledgements not recorded", "reason", reason, "dropped_total", total)
	}
}

func (c *Control) queue(op ledger.Op) {
	c.closing.RLock()
	defer c.closing.RUnlock()
	if c.closed {
		c.drop(1, "the kill switch is closed")
		return
	}
	c.asyncPending.Add(1)
	select {
	case c.async <- op:
	default:
		c.asyncPending.Add(-1)
		c.drop(1, "queue full")
	}
}

// SyncStore makes the store agree with the ledger after a restore: revoked
// bits and pending commands are set, and agents forgotten after their last
// heartbeat in the restored state are deleted again. From then on, Control
// keeps the store in step.
func (c *Control) SyncStore(store *heartbeat.Store) {
	c.mu.Lock()
	c.store = store
	s := c.state.Clone()
	c.mu.Unlock()
	c.syncStore(store, s)
}

func (c *Control) syncStore(store *heartbeat.Store, s *ledger.State) {
	for k, at := range s.Forgotten {
		if a, ok := store.Get(k); ok && !a.LastHeartbeat.After(at) {
			store.Delete(k)
		}
	}
	for k := range s.Revocations {
		store.SetRevoked(k, true)
	}
	for k, pc := range s.Commands {
		store.SetCommand(k, pc.Command, pc.Seq)
	}
}

// NewAgent is the store's NewAgentHook: an agent (re-)created in the store
// starts with its revocation and command.
func (c *Control) NewAgent(k fleet.Key) (bool, fleet.Command, uint32) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	_, revoked := c.state.Revocations[k]
	pc := c.state.Commands[k]
	return revoked, pc.Command, pc.Seq
}

// Revocation implements heartbeat.KillSwitch.
func (c *Control) Revocation(k fleet.Key) (fleet.Revocation, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	r, ok := c.state.Revocations[k]
	return r, ok
}

// PendingCommand returns the agent's pending command.
func (c *Control) PendingCommand(k fleet.Key) (PendingCommand, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	pc, ok := c.state.Commands[k]
	return pc, ok
}

// Forgotten returns when the agent was last forgotten, if it was.
func (c *Control) Forgotten(k fleet.Key) (time.Time, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	at, ok := c.state.Forgotten[k]
	return at, ok
}

// CommandAcknowledged implements heartbeat.KillSwitch. Losing the
// acknowledgement in a crash only redelivers the command (at least once), so
// it is committed without waiting. The store already cleared its copy and
// the cache does so at once, ahead of the ledger: when the commit comes back
// through Watch, it finds nothing left to do.
func (c *Control) CommandAcknowledged(k fleet.Key, seq uint32) {
	c.mu.Lock()
	if pc, ok := c.state.Commands[k]; ok && pc.Seq == seq {
		delete(c.state.Commands, k)
	}
	c.mu.Unlock()
	c.queue(ledger.AckCommand{Key: k, Seq: seq})
}

// AgentRegistered implements heartbeat.KillSwitch. It never waits for the
// ledger: a registration lost in a crash only means the agent is unknown
// until its next heartbeat, which the durability contract allows.
func (c *Control) AgentRegistered(k fleet.Key, at time.Time) {
	// The id may share the memory of the request (its path or query), and
	// the registration is kept as long as the agent: cloned, it keeps its
	// own few bytes alive, not the whole request line (~50 MB at 1M agents).
	k.AgentID = strings.Clone(k.AgentID)
	c.queue(ledger.Register{Key: k, At: at.UTC()})
}

// Known reports whether the agent is in the store or registered in the
// ledger (by a replica, or before a crash lost it from the snapshot). The
// cache keeps no registrations: at one per agent they would double the
// ledger's largest part in memory, so the ledger's own copy answers.
func (c *Control) Known(k fleet.Key) bool {
	if store := c.storeOf(); store != nil {
		if _, ok := store.Get(k); ok {
			return true
		}
	}
	return c.ledger.Registered(k)
}

// Keys returns every agent of tenant the kill switch knows: those in the
// store and those registered in the ledger.
func (c *Control) Keys(tenant string) []fleet.Key {
	seen := make(map[fleet.Key]struct{})
	var keys []fleet.Key
	if store := c.storeOf(); store != nil {
		store.Each(func(a *heartbeat.Agent) bool {
			if a.Tenant == tenant {
				k := fleet.Key{Tenant: strings.Clone(a.Tenant), AgentID: strings.Clone(a.AgentID)}
				seen[k] = struct{}{}
				keys = append(keys, k)
			}
			return true
		})
	}
	for _, k := range c.ledger.RegisteredKeys(tenant) {
		if _, ok := seen[k]; !ok {
			keys = append(keys, k)
		}
	}
	return keys
}

func (c *Control) revokeOp(k fleet.Key, r fleet.Revocation) ledger.Revoke {
	op := ledger.Revoke{Key: k, Revocation: r}
	if c.Event != nil {
		op.Event = c.Event(k, r)
	}
	return op
}

// Revoke revokes an agent; an agent already revoked keeps its first
// revocation (idempotent), returned with a false second result.
func (c *Control) Revoke(ctx context.Context, k fleet.Key, r fleet.Revocation) (fleet.Revocation, bool, error) {
	res, err := c.Commit(ctx, c.revokeOp(k, r)) // counts and logs the revocation
	if err != nil {
		return fleet.Revocation{}, false, fmt.Errorf("revoke %s: %w", k, err)
	}
	if !res.Applied(0) {
		old, _ := c.Revocation(k)
		return old, false, nil
	}
	return r, true, nil
}

func sourceLabel(source string) string {
	if source == "admin" {
		return "admin"
	}
	return "alert"
}

// RevokeAll revokes every given agent not revoked yet, in one durable
// commit, and returns how many it revoked.
func (c *Control) RevokeAll(ctx context.Context, keys []fleet.Key, r fleet.Revocation) (int, error) {
	var todo []fleet.Key
	c.mu.RLock()
	for _, k := range keys {
		if _, ok := c.state.Revocations[k]; !ok {
			todo = append(todo, k)
		}
	}
	c.mu.RUnlock()
	ops := make([]ledger.Op, len(todo))
	for i, k := range todo {
		ops[i] = c.revokeOp(k, r)
	}
	if len(ops) == 0 {
		return 0, nil
	}
	res, err := c.commit(ctx, ops...)
	if err != nil {
		return 0, fmt.Errorf("revoke all: %w", err)
	}
	n := 0
	for i := range ops {
		if res.Applied(i) {
			n++
		}
	}
	c.revocationsTotal.WithLabelValues(sourceLabel(r.Source)).Add(float64(n))
	c.logger.Warn("all agents of tenant revoked", "agents", n, "reason", r.Reason, "revoked_by", r.Source)
	return n, nil
}

// Reinstate lifts a revocation; false if the agent was not revoked.
func (c *Control) Reinstate(ctx context.Context, k fleet.Key) (bool, error) {
	res, err := c.commit(ctx, ledger.Reinstate{Key: k})
	if err != nil {
		return false, fmt.Errorf("reinstate %s: %w", k, err)
	}
	if res.Applied(0) {
		c.logger.Info("agent reinstated", "tenant", k.Tenant, "agent_id", k.AgentID)
	}
	return res.Applied(0), nil
}

// Command makes cmd the agent's pending command, replacing an older one.
func (c *Control) Command(ctx context.Context, k fleet.Key, cmd fleet.Command, at time.Time) (PendingCommand, error) {
	res, err := c.commit(ctx, ledger.SetCommand{Key: k, Command: cmd, IssuedAt: at})
	if err != nil {
		return PendingCommand{}, fmt.Errorf("command %s: %w", k, err)
	}
	c.logger.Info("command issued", "tenant", k.Tenant, "agent_id", k.AgentID, "command", cmd.String())
	return PendingCommand{Command: cmd, Seq: res.Ops[0].CommandSeq, IssuedAt: at}, nil
}

// Forget erases everything about an agent: its hot state, revocation,
// pending command and announced state. A forgotten agent that beats again
// registers afresh. False if nothing was known of the agent.
func (c *Control) Forget(ctx context.Context, k fleet.Key, now func() time.Time) (bool, error) {
	if !c.Known(k) {
		if _, revoked := c.Revocation(k); !revoked {
			return false, nil
		}
	}
	if _, err := c.commit(ctx, ledger.Forget{Key: k, At: now().UTC()}); err != nil {
		return false, fmt.Errorf("forget %s: %w", k, err)
	}
	// The ledger may hold nothing of an agent that only the store knew:
	// the store's copy goes all the same (apply did it if the Forget
	// applied).
	if store := c.storeOf(); store != nil {
		if a, ok := store.Get(k); ok && !a.LastHeartbeat.After(now()) {
			store.Delete(k)
		}
	}
	c.logger.Info("agent forgotten", "tenant", k.Tenant, "agent_id", k.AgentID)
	return true, nil
}

func (c *Control) storeOf() *heartbeat.Store {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.store
}
