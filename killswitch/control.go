// Package killswitch keeps the durable kill-switch state (SPEC 3 and 9):
// revocations, pending commands and forgotten agents, each journaled before
// the request that changed it is answered, and serves the admin API.
package killswitch

import (
	"encoding/json"
	"fmt"
	"hash/maphash"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/heartbeat"
)

// Journal is where admin actions become durable (storage.Journal).
type Journal interface {
	// Append returns once recs are on disk.
	Append(recs ...[]byte) error
	// AppendAsync queues rec without waiting for the disk.
	AppendAsync(rec []byte)
	// Rewrite atomically replaces the journal's content with recs.
	Rewrite(recs [][]byte) error
	// Size is the journal's size in bytes.
	Size() int64
}

// entry is one journal record.
type entry struct {
	Op        string    `json:"op"` // revoke, reinstate, command, ack, forget, register
	Tenant    string    `json:"tenant"`
	Agent     string    `json:"agent"`
	At        time.Time `json:"at"`
	Reason    string    `json:"reason,omitempty"`
	TimeoutMs int64     `json:"shutdown_timeout_ms,omitempty"`
	Source    string    `json:"source,omitempty"`
	Command   string    `json:"command,omitempty"`
	Seq       uint32    `json:"seq,omitempty"`
}

const (
	opRevoke    = "revoke"
	opReinstate = "reinstate"
	opCommand   = "command"
	opAck       = "ack"
	opForget    = "forget"
	opRegister  = "register"
)

// PendingCommand is a command waiting for its acknowledgement.
type PendingCommand struct {
	Command  fleet.Command
	Seq      uint32
	IssuedAt time.Time
}

// Control is the durable kill-switch state.
//
// Concurrency: safe for concurrent use. Changes to one agent are serialized
// by a lock striped on the agent's key, so its journal order is its memory
// order; changes to different agents journal concurrently and share fsyncs.
// The heartbeat path only reads (Revocation) or queues without waiting
// (CommandAcknowledged).
//
// Ownership: Control owns the maps; the store's revoked and command bits are
// a cache of them that Control keeps in step (the store never calls back
// into Control except through the NewAgent hook, which only reads).
type Control struct {
	journal Journal
	store   *heartbeat.Store
	logger  *slog.Logger

	stripes [64]sync.Mutex
	seed    maphash.Seed
	// compact excludes journal writes (read side) while the journal is rewritten.
	compact sync.RWMutex

	mu          sync.RWMutex
	revocations map[fleet.Key]fleet.Revocation
	commands    map[fleet.Key]PendingCommand
	forgotten   map[fleet.Key]time.Time
	// lost holds agents whose registration is journaled but who are not in
	// the store: registered after the last snapshot of a crashed sentinel
	// and not back yet. The kill switch still knows them: revoke, command
	// and revoke-all reach them, and take effect when they beat again.
	lost map[fleet.Key]time.Time
	seq  uint32

	revocationsTotal *prometheus.CounterVec
}

// New returns an empty Control journaling to j. Call Replay before use.
func New(j Journal, logger *slog.Logger, reg prometheus.Registerer) *Control {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &Control{
		journal:     j,
		logger:      logger,
		seed:        maphash.MakeSeed(),
		revocations: make(map[fleet.Key]fleet.Revocation),
		commands:    make(map[fleet.Key]PendingCommand),
		forgotten:   make(map[fleet.Key]time.Time),
		lost:        make(map[fleet.Key]time.Time),
		revocationsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sentinel_revocations_total",
			Help: "Agents revoked by the kill switch, by source (admin, alert).",
		}, []string{"source"}),
	}
	c.revocationsTotal.WithLabelValues("admin")
	c.revocationsTotal.WithLabelValues("alert")
	if reg != nil {
		reg.MustRegister(c.revocationsTotal)
	}
	return c
}

// Replay rebuilds the state from journal records, in order.
func (c *Control) Replay(recs [][]byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, rec := range recs {
		var e entry
		if err := json.Unmarshal(rec, &e); err != nil {
			return fmt.Errorf("journal record %d: %w", i, err)
		}
		if err := c.apply(&e); err != nil {
			return fmt.Errorf("journal record %d: %w", i, err)
		}
	}
	return nil
}

// apply changes the maps for e; c.mu is held.
func (c *Control) apply(e *entry) error {
	k := fleet.Key{Tenant: e.Tenant, AgentID: e.Agent}
	switch e.Op {
	case opRevoke:
		c.revocations[k] = fleet.Revocation{
			Reason: e.Reason, ShutdownTimeout: time.Duration(e.TimeoutMs) * time.Millisecond,
			RevokedAt: e.At, Source: e.Source,
		}
	case opReinstate:
		delete(c.revocations, k)
	case opCommand:
		cmd, ok := fleet.ParseCommand(e.Command)
		if !ok {
			return fmt.Errorf("unknown command %q", e.Command)
		}
		c.commands[k] = PendingCommand{Command: cmd, Seq: e.Seq, IssuedAt: e.At}
		c.seq = max(c.seq, e.Seq)
	case opAck:
		if pc, ok := c.commands[k]; ok && pc.Seq == e.Seq {
			delete(c.commands, k)
		}
	case opForget:
		delete(c.revocations, k)
		delete(c.commands, k)
		delete(c.lost, k)
		c.forgotten[k] = e.At
	case opRegister:
		// Until SyncStore sorts them out, every journaled registration is
		// a candidate for lost.
		c.lost[k] = e.At
	default:
		return fmt.Errorf("unknown op %q", e.Op)
	}
	return nil
}

// SyncStore makes the store agree with the journaled state after a restart:
// revoked bits and pending commands are set, and agents forgotten after the
// snapshot they were restored from are deleted again.
func (c *Control) SyncStore(store *heartbeat.Store) {
	// The store is called without c.mu held: its NewAgent hook takes c.mu
	// under a shard lock, so the other order could deadlock.
	c.mu.Lock()
	c.store = store
	forgotten := maps.Clone(c.forgotten)
	revoked := slices.Collect(maps.Keys(c.revocations))
	commands := maps.Clone(c.commands)
	lost := slices.Collect(maps.Keys(c.lost))
	c.mu.Unlock()

	for k, at := range forgotten {
		if a, ok := store.Get(k); ok && !a.LastHeartbeat.After(at) {
			store.Delete(k)
		}
	}
	for _, k := range revoked {
		store.SetRevoked(k, true)
	}
	for k, pc := range commands {
		store.SetCommand(k, pc.Command, pc.Seq)
	}
	var back []fleet.Key
	for _, k := range lost {
		if _, ok := store.Get(k); ok {
			back = append(back, k)
		}
	}
	c.mu.Lock()
	for _, k := range back {
		delete(c.lost, k)
	}
	c.mu.Unlock()
}

// Compact rewrites the journal as the current state. Tombstones of agents
// forgotten before snapshotAt are dropped: that snapshot no longer has them.
func (c *Control) Compact(snapshotAt time.Time) error {
	c.compact.Lock()
	defer c.compact.Unlock()
	c.mu.Lock()
	// Forgets come first: a revocation or command still held was issued
	// after its agent's forget, so a replay must apply the forget before it.
	var recs [][]byte
	add := func(e entry) {
		b, _ := json.Marshal(e)
		recs = append(recs, b)
	}
	for k, at := range c.forgotten {
		if at.Before(snapshotAt) {
			delete(c.forgotten, k)
			continue
		}
		add(entry{Op: opForget, Tenant: k.Tenant, Agent: k.AgentID, At: at})
	}
	for k, r := range c.revocations {
		add(entry{Op: opRevoke, Tenant: k.Tenant, Agent: k.AgentID, At: r.RevokedAt, Reason: r.Reason,
			TimeoutMs: r.ShutdownTimeout.Milliseconds(), Source: r.Source})
	}
	for k, pc := range c.commands {
		add(entry{Op: opCommand, Tenant: k.Tenant, Agent: k.AgentID, At: pc.IssuedAt, Command: pc.Command.String(), Seq: pc.Seq})
	}
	for k, at := range c.lost {
		add(entry{Op: opRegister, Tenant: k.Tenant, Agent: k.AgentID, At: at})
	}
	store := c.store
	c.mu.Unlock()
	// Registrations newer than the snapshot are only in the journal: keep them.
	if store != nil {
		store.Each(func(a *heartbeat.Agent) bool {
			if !a.RegisteredAt.Before(snapshotAt) {
				add(entry{Op: opRegister, Tenant: a.Tenant, Agent: a.AgentID, At: a.RegisteredAt})
			}
			return true
		})
	}
	if err := c.journal.Rewrite(recs); err != nil {
		return fmt.Errorf("compact kill-switch journal: %w", err)
	}
	return nil
}

// JournalSize is the journal's size in bytes.
func (c *Control) JournalSize() int64 { return c.journal.Size() }

func (c *Control) stripe(k fleet.Key) *sync.Mutex {
	return &c.stripes[maphash.String(c.seed, k.Tenant+"\x00"+k.AgentID)%uint64(len(c.stripes))]
}

// commit journals entries durably and then applies them, holding each
// agent's stripe so that per-agent order on disk is the order in memory.
func (c *Control) commit(entries ...entry) error {
	c.compact.RLock()
	defer c.compact.RUnlock()
	recs := make([][]byte, len(entries))
	for i := range entries {
		b, err := json.Marshal(&entries[i])
		if err != nil {
			return fmt.Errorf("encode journal entry: %w", err)
		}
		recs[i] = b
	}
	if err := c.journal.Append(recs...); err != nil {
		return fmt.Errorf("journal %s: %w", entries[0].Op, err)
	}
	c.mu.Lock()
	for i := range entries {
		_ = c.apply(&entries[i]) // entries are built here and always apply
	}
	c.mu.Unlock()
	return nil
}

// NewAgent is the store's NewAgentHook: an agent re-created after a restart
// starts with its journaled revocation and command.
func (c *Control) NewAgent(k fleet.Key) (bool, fleet.Command, uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.lost, k) // back in the store
	_, revoked := c.revocations[k]
	pc := c.commands[k]
	return revoked, pc.Command, pc.Seq
}

// Revocation implements heartbeat.KillSwitch.
func (c *Control) Revocation(k fleet.Key) (fleet.Revocation, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	r, ok := c.revocations[k]
	return r, ok
}

// PendingCommand returns the agent's pending command.
func (c *Control) PendingCommand(k fleet.Key) (PendingCommand, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	pc, ok := c.commands[k]
	return pc, ok
}

// CommandAcknowledged implements heartbeat.KillSwitch. Losing the
// acknowledgement in a crash only redelivers the command (at least once), so
// it is journaled without waiting.
func (c *Control) CommandAcknowledged(k fleet.Key, seq uint32) {
	e := entry{Op: opAck, Tenant: k.Tenant, Agent: k.AgentID, Seq: seq, At: time.Now().UTC()}
	c.mu.Lock()
	_ = c.apply(&e)
	c.mu.Unlock()
	b, _ := json.Marshal(&e)
	c.journal.AppendAsync(b)
}

// AgentRegistered implements heartbeat.KillSwitch. It never waits for the
// disk: a registration lost in a crash only means the agent is unknown until
// its next heartbeat, as SPEC 9 allows.
func (c *Control) AgentRegistered(k fleet.Key, at time.Time) {
	b, _ := json.Marshal(&entry{Op: opRegister, Tenant: k.Tenant, Agent: k.AgentID, At: at.UTC()})
	c.journal.AppendAsync(b)
}

// Known reports whether the agent is in the store or lost (see Control.lost).
func (c *Control) Known(k fleet.Key) bool {
	if _, ok := c.storeOf().Get(k); ok {
		return true
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	_, ok := c.lost[k]
	return ok
}

// Keys returns every agent of tenant the kill switch knows: those in the
// store and the lost ones.
func (c *Control) Keys(tenant string) []fleet.Key {
	var keys []fleet.Key
	c.storeOf().Each(func(a *heartbeat.Agent) bool {
		if a.Tenant == tenant {
			keys = append(keys, fleet.Key{Tenant: strings.Clone(a.Tenant), AgentID: strings.Clone(a.AgentID)})
		}
		return true
	})
	c.mu.RLock()
	defer c.mu.RUnlock()
	for k := range c.lost {
		if k.Tenant == tenant {
			keys = append(keys, k)
		}
	}
	return keys
}

// Revoke revokes an agent; an agent already revoked keeps its first
// revocation (idempotent), reported by the false second result.
func (c *Control) Revoke(k fleet.Key, r fleet.Revocation) (fleet.Revocation, bool, error) {
	mu := c.stripe(k)
	mu.Lock()
	defer mu.Unlock()
	if old, ok := c.Revocation(k); ok {
		return old, false, nil
	}
	if err := c.commit(revokeEntry(k, r)); err != nil {
		return fleet.Revocation{}, false, err
	}
	c.storeOf().SetRevoked(k, true)
	c.revocationsTotal.WithLabelValues(sourceLabel(r.Source)).Inc()
	c.logger.Warn("agent revoked", "tenant", k.Tenant, "agent_id", k.AgentID, "reason", r.Reason, "revoked_by", r.Source)
	return r, true, nil
}

func revokeEntry(k fleet.Key, r fleet.Revocation) entry {
	return entry{Op: opRevoke, Tenant: k.Tenant, Agent: k.AgentID, At: r.RevokedAt, Reason: r.Reason,
		TimeoutMs: r.ShutdownTimeout.Milliseconds(), Source: r.Source}
}

func sourceLabel(source string) string {
	if source == "admin" {
		return "admin"
	}
	return "alert"
}

// RevokeAll revokes every given agent not revoked yet, in one durable
// journal write, and returns how many it revoked.
func (c *Control) RevokeAll(keys []fleet.Key, r fleet.Revocation) (int, error) {
	// Stripes are taken in index order to avoid deadlocks with single revokes.
	for i := range c.stripes {
		c.stripes[i].Lock()
		defer c.stripes[i].Unlock()
	}
	var entries []entry
	var revoked []fleet.Key
	c.mu.RLock()
	for _, k := range keys {
		if _, ok := c.revocations[k]; !ok {
			entries = append(entries, revokeEntry(k, r))
			revoked = append(revoked, k)
		}
	}
	c.mu.RUnlock()
	if len(entries) == 0 {
		return 0, nil
	}
	if err := c.commit(entries...); err != nil {
		return 0, err
	}
	store := c.storeOf()
	for _, k := range revoked {
		store.SetRevoked(k, true)
	}
	c.revocationsTotal.WithLabelValues(sourceLabel(r.Source)).Add(float64(len(revoked)))
	c.logger.Warn("all agents of tenant revoked", "agents", len(revoked), "reason", r.Reason, "revoked_by", r.Source)
	return len(revoked), nil
}

// Reinstate lifts a revocation; false if the agent was not revoked.
func (c *Control) Reinstate(k fleet.Key) (bool, error) {
	mu := c.stripe(k)
	mu.Lock()
	defer mu.Unlock()
	if _, ok := c.Revocation(k); !ok {
		return false, nil
	}
	// The store's bit goes first: were the revocation gone from c first, a
	// beat in between would be answered revoked with no reason to give. The
	// price, accepted: if the journal then fails, beats in that moment were
	// answered as reinstated while the revocation stands (it applies again
	// from the next beat).
	store := c.storeOf()
	store.SetRevoked(k, false)
	if err := c.commit(entry{Op: opReinstate, Tenant: k.Tenant, Agent: k.AgentID, At: time.Now().UTC()}); err != nil {
		store.SetRevoked(k, true)
		return false, err
	}
	c.logger.Info("agent reinstated", "tenant", k.Tenant, "agent_id", k.AgentID)
	return true, nil
}

// Command makes cmd the agent's pending command, replacing an older one.
func (c *Control) Command(k fleet.Key, cmd fleet.Command, at time.Time) (PendingCommand, error) {
	mu := c.stripe(k)
	mu.Lock()
	defer mu.Unlock()
	c.mu.Lock()
	c.seq++
	seq := c.seq
	c.mu.Unlock()
	if err := c.commit(entry{Op: opCommand, Tenant: k.Tenant, Agent: k.AgentID, At: at, Command: cmd.String(), Seq: seq}); err != nil {
		return PendingCommand{}, err
	}
	c.storeOf().SetCommand(k, cmd, seq)
	c.logger.Info("command issued", "tenant", k.Tenant, "agent_id", k.AgentID, "command", cmd.String())
	return PendingCommand{Command: cmd, Seq: seq, IssuedAt: at}, nil
}

// Forget erases everything about an agent: its hot state, revocation and
// pending command. A forgotten agent that beats again registers afresh.
//
// The agent leaves the store before now() stamps the tombstone: a snapshot
// stamped later than the tombstone then cannot hold the agent, which is what
// lets Compact drop tombstones older than the snapshot. If the journal write
// fails, the agent is put back.
func (c *Control) Forget(k fleet.Key, now func() time.Time) (bool, error) {
	mu := c.stripe(k)
	mu.Lock()
	defer mu.Unlock()
	store := c.storeOf()
	ag, known := store.Get(k)
	if !known && !c.Known(k) {
		if _, revoked := c.Revocation(k); !revoked {
			return false, nil
		}
	}
	if known {
		store.Delete(k)
	}
	if err := c.commit(entry{Op: opForget, Tenant: k.Tenant, Agent: k.AgentID, At: now().UTC()}); err != nil {
		if known {
			// Never call the store holding c.mu: the store's NewAgent hook
			// takes c.mu under a shard lock.
			_, revoked := c.Revocation(k)
			pc, pending := c.PendingCommand(k)
			store.Restore(&ag)
			store.SetRevoked(k, revoked)
			if pending {
				store.SetCommand(k, pc.Command, pc.Seq)
			}
		}
		return false, err
	}
	// A beat between the delete and the commit re-created the agent with the
	// revocation and command the commit has just erased: clear them.
	if _, back := store.Get(k); back {
		store.SetRevoked(k, false)
		store.SetCommand(k, fleet.CommandNone, 0)
	}
	c.logger.Info("agent forgotten", "tenant", k.Tenant, "agent_id", k.AgentID)
	return true, nil
}

func (c *Control) storeOf() *heartbeat.Store {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.store
}
