package heartbeat

import (
	"errors"
	"fmt"
	"hash/maphash"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/agentsentinel/sentinel/fleet"
)

// ErrTooManyAgents is returned when registering one more agent would exceed
// the configured heartbeat.max_agents. Existing agents are never evicted to
// make room.
var ErrTooManyAgents = errors.New("agent limit reached")

// ErrTenantTooManyAgents is returned when registering one more agent would
// exceed its tenant's max_agents. Existing agents are never evicted.
var ErrTenantTooManyAgents = errors.New("tenant agent limit reached")

// numShards spreads agents over independently locked shards. 256 keeps
// contention negligible on small machines while a shard of a 1M fleet (~4k
// agents) is still cheap to copy for a scrape or a snapshot.
const numShards = 256

// MaxStringLen bounds every agent-reported string (version, platform fields):
// each becomes a label value, and a bounded size keeps records small.
const MaxStringLen = 255

// Record flags.
const (
	flagUsed uint16 = 1 << iota
	flagStopped
	flagRevoked
	flagHasUptime
	flagHasMetrics
	flagHasExitCode
	flagCommandCarried
	flagPaused
)

// Indexes of the strings kept in a record's blob, in blob order.
const (
	strTenant = iota
	strAgentID
	strVersion
	strContainerID
	strImage
	strPodName
	strNamespace
	strNode
	strFunctionName
	strRegion
	strHostname
	strOS
	numStrings
)

// maxBlobLen bounds an encoded blob: every string with its length byte. A
// buffer of this size keeps appendBlob off the heap.
const maxBlobLen = numStrings * (1 + MaxStringLen)

// record is one agent's hot state. It holds no pointers: its strings live in
// the shard's arena as one length-prefixed blob, so slices of records are
// never scanned by the garbage collector.
type record struct {
	hash         uint64
	next         uint32 // slot+1 of the next record with the same hash; 0 ends the chain
	blobOff      uint32
	blobLen      uint32
	tokenVersion uint32
	commandSeq   uint32
	flags        uint16
	status       Status
	platform     PlatformType
	command      fleet.Command
	silentAfter  uint32 // the agent's own thresholds, 0 when it set none
	zombieAfter  uint32
	noticed      fleet.State // the liveness state SweepLiveness last reported
	registered   int64       // unix nanoseconds
	lastBeat     int64       // unix nanoseconds
	interval     int64       // nanoseconds
	pid          int64
	exitCode     int64
	uptime       float64
	requests     float64
	errors       float64
	latencyMs    float64
}

type shard struct {
	mu sync.RWMutex
	// index maps a key hash to the first record of its chain: its slot+1
	// in the low 32 bits, its blobOff in the high ones (indexEntry), so
	// that find reads the record and the key in its blob at once rather
	// than one after the other: two cache misses overlapped instead of
	// chained. Every change of a head's blobOff updates its entry.
	index map[uint64]uint64
	// records and arena live in mem's regions, outside the Go heap (see
	// offheap.go): grown only through reserve, never with append past
	// their capacity.
	records []record
	free    []uint32 // unused slots, reused before records grows
	arena   []byte
	garbage int // arena bytes no record refers to any more
	mem     *shardMem
	// changes counts the writes that changed agents, by kind (Change).
	changes ChangeCounts
	// rewritten is set when a record's strings were rewritten, until
	// noteChanges counts it.
	rewritten bool
}

// shardMem is the memory behind a shard's records and arena. The shards'
// are allocated apart from the Store, so that the cleanup freeing them when
// the store is unreachable does not keep it reachable.
type shardMem struct{ records, arena region }

// NewAgentHook is consulted, under the agent's shard lock, when an agent is
// created by a heartbeat: it returns the durable kill-switch state the new
// record must start with (a revocation or command issued before the agent's
// registration was snapshotted survives a crash this way).
type NewAgentHook func(fleet.Key) (revoked bool, cmd fleet.Command, cmdSeq uint32)

// Store holds the hot state of every agent in memory.
//
// Concurrency: every method is safe for concurrent use. Agents are spread
// over fixed shards by a seeded hash of their key; a method locks only the
// shard of the agent it touches, so heartbeats of different agents rarely
// contend and no store-wide lock is taken on the heartbeat path. Snapshot
// locks one shard at a time.
//
// Ownership: the store owns its records. Callers get copies (Agent values and
// Views) and change state only through the store's methods. Records are
// pointer-free and strings live in per-shard arenas, both mapped outside the
// Go heap (offheap.go): a million agents cost the garbage collector nothing
// to scan and the process no heap headroom, and the memory is unmapped once
// the store is unreachable.
type Store struct {
	seed    maphash.Seed
	shards  [numShards]shard
	count   atomic.Int64
	limit   atomic.Int64
	tenants tenantCounts
	onNewAg NewAgentHook
}

// NewStore returns an empty store admitting at most maxAgents agents.
func NewStore(maxAgents int, hook NewAgentHook) *Store {
	s := &Store{seed: maphash.MakeSeed(), onNewAg: hook}
	mem := new([numShards]shardMem)
	for i := range s.shards {
		s.shards[i].index = make(map[uint64]uint64)
		s.shards[i].mem = &mem[i]
	}
	// Nothing refers to a store's memory once the store is unreachable:
	// every method holds the store (a shard is part of it) while it uses
	// the memory, and hands out copies only.
	runtime.AddCleanup(s, func(mem *[numShards]shardMem) {
		for i := range mem {
			mem[i].records.free()
			mem[i].arena.free()
		}
	}, mem)
	s.limit.Store(int64(maxAgents))
	return s
}

// Release unmaps the store's memory now rather than once the store is
// unreachable, for a short-lived store (another replica's saved state, read
// to be merged): the collector, which does not see that memory, may run
// much later. The store must not be used afterwards.
func (s *Store) Release() {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		sh.mem.records.free()
		sh.mem.arena.free()
		sh.records, sh.arena, sh.free, sh.index = nil, nil, nil, nil
		sh.mu.Unlock()
	}
}

// SetLimit changes max_agents (on config reload). Lowering it below the
// current count evicts nobody; it only refuses new agents.
func (s *Store) SetLimit(maxAgents int) { s.limit.Store(int64(maxAgents)) }

// Len returns the number of agents.
func (s *Store) Len() int { return int(s.count.Load()) }

func (s *Store) hash(k fleet.Key) uint64 {
	var h maphash.Hash
	h.SetSeed(s.seed)
	h.WriteString(k.Tenant)
	h.WriteByte(0)
	h.WriteString(k.AgentID)
	return h.Sum64()
}

func (s *Store) shardOf(h uint64) *shard { return &s.shards[h>>56] }

// find returns the slot of k, or -1. The shard lock must be held.
//
// The index and the record's hash settle all but the rarest lookups (a
// 64-bit hash shared by two keys); the arena is read only to confirm the
// key, in place, at the offset the index keeps, which does not wait for the
// record to arrive from memory.
func (sh *shard) find(h uint64, k fleet.Key) int {
	e := sh.index[h]
	if e == 0 {
		return -1
	}
	head, off := uint32(e)-1, uint32(e>>32)
	match := blobHasKey(sh.arena[min(int(off), len(sh.arena)):], k)
	if r := &sh.records[head]; match && r.blobOff == off && r.hash == h {
		return int(head)
	}
	for next := head + 1; next != 0; {
		slot := next - 1
		r := &sh.records[slot]
		if r.hash == h && blobHasKey(sh.arena[r.blobOff:r.blobOff+r.blobLen], k) {
			return int(slot)
		}
		next = r.next
	}
	return -1
}

// indexEntry is the index's entry for the chain starting at slot.
func (sh *shard) indexEntry(slot uint32) uint64 {
	return uint64(slot+1) | uint64(sh.records[slot].blobOff)<<32
}

// reindex updates the index entry of r's chain after r's blob moved, if r
// heads the chain.
func (sh *shard) reindex(r *record) {
	if e := sh.index[r.hash]; e != 0 && &sh.records[uint32(e)-1] == r {
		sh.index[r.hash] = uint64(uint32(e)) | uint64(r.blobOff)<<32
	}
}

// blobHasKey reports whether blob starts with k's tenant and agent id, its
// first two strings, comparing in place.
func blobHasKey(blob []byte, k fleet.Key) bool {
	nt, na := len(k.Tenant), len(k.AgentID)
	if len(blob) < 2+nt+na || int(blob[0]) != nt || int(blob[1+nt]) != na {
		return false
	}
	return string(blob[1:1+nt]) == k.Tenant && string(blob[2+nt:2+nt+na]) == k.AgentID
}

// str returns string i of r's blob without copying; it is valid while the
// shard lock is held and the arena is not rewritten.
func (sh *shard) str(r *record, i int) string {
	return blobString(sh.arena[r.blobOff:r.blobOff+r.blobLen], i)
}

func blobString(blob []byte, i int) string {
	pos := 0
	for ; i > 0; i-- {
		pos += 1 + int(blob[pos])
	}
	n := int(blob[pos])
	if n == 0 {
		return ""
	}
	return unsafe.String(&blob[pos+1], n)
}

// blobStrings returns every string of blob in one forward pass, without
// copying: reading them one by one with blobString walks the blob again
// for each. An empty blob (a record not yet written) gives empty strings.
func blobStrings(blob []byte) (strs [numStrings]string) {
	pos := 0
	for i := range strs {
		if pos >= len(blob) {
			break
		}
		n := int(blob[pos])
		if n > 0 {
			strs[i] = unsafe.String(&blob[pos+1], n)
		}
		pos += 1 + n
	}
	return strs
}

// clipString cuts s to MaxStringLen bytes at a rune boundary. The protocol
// layer refuses longer strings; this only guards the encoding, and a split
// rune would be invalid UTF-8, which no label value may be.
func clipString(s string) string {
	if len(s) <= MaxStringLen {
		return s
	}
	n := MaxStringLen
	for n > MaxStringLen-utf8.UTFMax && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// appendStrings encodes strs, already clipped, as a blob.
func appendStrings(b []byte, strs *[numStrings]string) []byte {
	for _, s := range strs {
		b = append(b, byte(len(s)))
		b = append(b, s...)
	}
	return b
}

// appendBlob encodes the strings of an agent in blob order.
func appendBlob(b []byte, k fleet.Key, version string, p *Platform) []byte {
	strs := [numStrings]string{
		k.Tenant, k.AgentID, version, p.ContainerID, p.Image, p.PodName, p.Namespace,
		p.Node, p.FunctionName, p.Region, p.Hostname, p.OS,
	}
	for i := range strs {
		strs[i] = clipString(strs[i])
	}
	return appendStrings(b, &strs)
}

// setPlatformStrings sets the platform strings of strs from p, clipped.
func setPlatformStrings(strs *[numStrings]string, p *Platform) {
	for i, s := range [...]string{
		p.ContainerID, p.Image, p.PodName, p.Namespace, p.Node, p.FunctionName, p.Region, p.Hostname, p.OS,
	} {
		strs[strContainerID+i] = clipString(s)
	}
}

// setBlob stores blob as r's strings, reusing the current space when equal.
func (sh *shard) setBlob(r *record, blob []byte) {
	if r.blobLen > 0 && string(sh.arena[r.blobOff:r.blobOff+r.blobLen]) == string(blob) {
		return
	}
	sh.writeBlob(r, blob)
}

// writeBlob stores blob as r's strings in new space of the arena. Callers
// write only strings that differ from r's (or a new record's first ones).
func (sh *shard) writeBlob(r *record, blob []byte) {
	if r.blobLen > 0 {
		// Compaction may put the new blob where the old one was: the
		// offsets cannot tell noteChanges that the strings changed.
		sh.rewritten = true
	}
	sh.garbage += int(r.blobLen)
	r.blobOff, r.blobLen = uint32(len(sh.arena)), uint32(len(blob))
	sh.arena = append(reserve(&sh.mem.arena, sh.arena, len(blob)), blob...)
	sh.reindex(r)
	if sh.garbage > 64<<10 && sh.garbage > len(sh.arena)/2 {
		sh.compact()
	}
}

// compact rewrites the arena with only the blobs records still refer to.
func (sh *shard) compact() {
	var mem region
	arena := reserve(&mem, []byte(nil), len(sh.arena)-sh.garbage)
	for i := range sh.records {
		r := &sh.records[i]
		if r.flags&flagUsed == 0 {
			continue
		}
		off := len(arena)
		arena = append(arena, sh.arena[r.blobOff:r.blobOff+r.blobLen]...)
		r.blobOff = uint32(off)
		sh.reindex(r)
	}
	sh.mem.arena.free()
	sh.arena, sh.garbage, sh.mem.arena = arena, 0, mem
}

// BeatRequest is an accepted heartbeat, already validated by its protocol.
type BeatRequest struct {
	Key      fleet.Key
	Time     time.Time
	Interval time.Duration
	// Thresholds are the agent's own, validated and complete, or zero: the
	// tenant's apply. Like Interval, every beat sets them anew.
	Thresholds fleet.Thresholds
	Status     Status
	// Version, when not empty, replaces the reported version.
	Version string
	// Platform replaces the reported platform when HasPlatform is set.
	Platform    Platform
	HasPlatform bool
	Uptime      float64
	HasUptime   bool
	Metrics     ReportedMetrics
	HasMetrics  bool
	ExitCode    int64
	HasExitCode bool
	// IssueToken asks for a new runtime-token version (registration with a
	// tenant key, or a refresh); BeatResult.TokenVersion carries it.
	IssueToken bool
	// IssueTokenOnRegister issues a token only if this beat registers the agent.
	IssueTokenOnRegister bool
	// PresentedTokenVersion is the version of the runtime token the beat came
	// with, 0 for a tenant key. An agent re-created after a crash adopts it so
	// that versions never go backwards.
	PresentedTokenVersion uint32
}

// BeatResult tells the protocol layer how to answer a heartbeat.
type BeatResult struct {
	// Previous is the agent's state just before this beat (ACTIVE for a new agent).
	Previous fleet.State
	// PreviousBeat is the last heartbeat before this one (zero for a new agent).
	PreviousBeat time.Time
	Registered   bool
	// Revoked is set when the agent is revoked: the beat was recorded, but the
	// answer is the revocation, with no token and no command.
	Revoked bool
	// Command is carried by this answer (CommandNone if none), with its sequence.
	Command    fleet.Command
	CommandSeq uint32
	// AckedCommandSeq is the sequence of a command this beat acknowledged (it
	// arrived after the answer that carried it), 0 if none.
	AckedCommandSeq uint32
	// TokenVersion is the newly issued runtime-token version when IssueToken was set.
	TokenVersion uint32
}

// Beat records a heartbeat, registering the agent if it is new. tenant are
// the thresholds of the agent's tenant, which the agent's state before the
// beat is derived with when it had none of its own. It returns
// ErrTooManyAgents when a new agent would exceed heartbeat.max_agents, and
// ErrTenantTooManyAgents when it would exceed its tenant's max_agents. It is
// O(1) and touches only the agent's shard.
func (s *Store) Beat(req *BeatRequest, tenant fleet.Thresholds) (BeatResult, error) {
	h := s.hash(req.Key)
	sh := s.shardOf(h)
	var res BeatResult

	sh.mu.Lock()
	defer sh.mu.Unlock()
	slot := sh.find(h, req.Key)
	var r *record
	if slot < 0 {
		tc := s.tenants.get(req.Key.Tenant)
		if lim := tc.limit.Load(); tc.n.Add(1) > lim && lim > 0 {
			tc.n.Add(-1)
			return res, ErrTenantTooManyAgents
		}
		if s.count.Add(1) > s.limit.Load() {
			s.count.Add(-1)
			tc.n.Add(-1)
			return res, ErrTooManyAgents
		}
		r = sh.insert(h)
		r.registered = req.Time.UnixNano()
		r.tokenVersion = req.PresentedTokenVersion
		if s.onNewAg != nil {
			revoked, cmd, seq := s.onNewAg(req.Key)
			if revoked {
				r.flags |= flagRevoked
			}
			r.command, r.commandSeq = cmd, seq
		}
		res.Registered = true
		res.Previous = fleet.StateActive
	} else {
		r = &sh.records[slot]
		prev := r.agentState(req.Time, tenant)
		res.Previous = prev
		res.PreviousBeat = time.Unix(0, r.lastBeat).UTC()
		// A new agent counts as a change of members alone (insert).
		before := *r
		defer sh.noteChanges(&before, r)
	}
	if r.tokenVersion < req.PresentedTokenVersion {
		r.tokenVersion = req.PresentedTokenVersion
	}
	// A revoked agent's beats are still recorded (it is alive, and a
	// reinstatement must not find it falsely ZOMBIE); its answer is the
	// revocation, with no token and no command.
	revoked := r.flags&flagRevoked != 0
	if revoked {
		res.Revoked = true
		res.Previous = fleet.StateRevoked
	}

	r.lastBeat = req.Time.UnixNano()
	r.interval = int64(req.Interval)
	r.silentAfter, r.zombieAfter = uint32(req.Thresholds.SilentAfter), uint32(req.Thresholds.ZombieAfter)
	if req.Status != StatusUnknown || r.status == StatusShutdown {
		r.status = req.Status
	}
	if req.Status == StatusShutdown {
		r.flags |= flagStopped
	} else {
		r.flags &^= flagStopped
	}
	if req.HasUptime {
		r.uptime, r.flags = req.Uptime, r.flags|flagHasUptime
	}
	if req.HasMetrics {
		r.requests, r.errors, r.latencyMs = req.Metrics.RequestsHandled, req.Metrics.Errors, req.Metrics.AvgLatencyMs
		r.flags |= flagHasMetrics
	}
	if req.HasExitCode {
		r.exitCode, r.flags = req.ExitCode, r.flags|flagHasExitCode
	}
	// The strings change rarely: compare them with the stored ones in one
	// pass over the blob and write a new blob only when one differs (a new
	// agent's has none yet).
	if res.Registered || req.HasPlatform || req.Version != "" {
		cur := blobStrings(sh.arena[r.blobOff : r.blobOff+r.blobLen])
		next := cur
		if res.Registered {
			next[strTenant], next[strAgentID] = clipString(req.Key.Tenant), clipString(req.Key.AgentID)
		}
		if req.Version != "" {
			next[strVersion] = clipString(req.Version)
		}
		if req.HasPlatform {
			r.platform, r.pid = req.Platform.Type, req.Platform.PID
			setPlatformStrings(&next, &req.Platform)
		}
		if res.Registered || next != cur {
			var buf [maxBlobLen]byte
			sh.writeBlob(r, appendStrings(buf[:0], &next))
		}
	}
	if revoked {
		return res, nil
	}
	if req.IssueToken || (res.Registered && req.IssueTokenOnRegister) {
		r.tokenVersion++
		res.TokenVersion = r.tokenVersion
	}

	// At-least-once delivery: a command stays pending until a beat arrives
	// after the answer that carried it.
	if r.command != fleet.CommandNone {
		if r.flags&flagCommandCarried != 0 {
			res.AckedCommandSeq = r.commandSeq
			// Paused once the agent beats after being handed pause: the
			// beat proves it got the answer (SPEC 3).
			if r.command == fleet.CommandPause {
				r.flags |= flagPaused
			}
			r.command, r.commandSeq = fleet.CommandNone, 0
			r.flags &^= flagCommandCarried
		} else {
			res.Command, res.CommandSeq = r.command, r.commandSeq
			r.flags |= flagCommandCarried
			// Handing resume or terminate ends the pause at once.
			if r.command != fleet.CommandPause {
				r.flags &^= flagPaused
			}
		}
	}
	return res, nil
}

// agentState derives r's state at now; tenant applies when r has no
// thresholds of its own.
func (r *record) agentState(now time.Time, tenant fleet.Thresholds) fleet.State {
	switch {
	case r.flags&flagRevoked != 0:
		return fleet.StateRevoked
	case r.flags&flagStopped != 0:
		return fleet.StateStopped
	}
	return r.ownThresholds().Or(tenant).Liveness(fleet.MissedBeats(now, time.Unix(0, r.lastBeat), time.Duration(r.interval)))
}

func (r *record) ownThresholds() fleet.Thresholds {
	return fleet.Thresholds{SilentAfter: int(r.silentAfter), ZombieAfter: int(r.zombieAfter)}
}

// insert adds an empty used record for hash h and returns it. The caller
// holds the shard lock and fills the record.
func (sh *shard) insert(h uint64) *record {
	var slot uint32
	if n := len(sh.free); n > 0 {
		slot = sh.free[n-1]
		sh.free = sh.free[:n-1]
	} else {
		slot = uint32(len(sh.records))
		sh.records = append(reserve(&sh.mem.records, sh.records, 1), record{})
	}
	r := &sh.records[slot]
	// The new record, with no blob yet (blobOff 0), heads the chain.
	*r = record{hash: h, flags: flagUsed, next: uint32(sh.index[h])}
	sh.index[h] = uint64(slot + 1)
	sh.changes[ChangeMembers]++
	return r
}

// decode fills a from r. Strings borrow from arena: the caller copies them
// when a must outlive the arena.
func decode(a *Agent, r *record, arena []byte) {
	strs := blobStrings(arena[r.blobOff : r.blobOff+r.blobLen])
	*a = Agent{
		Key:     fleet.Key{Tenant: strs[strTenant], AgentID: strs[strAgentID]},
		Status:  r.status,
		Version: strs[strVersion],
		Platform: Platform{
			Type:         r.platform,
			ContainerID:  strs[strContainerID],
			Image:        strs[strImage],
			PodName:      strs[strPodName],
			Namespace:    strs[strNamespace],
			Node:         strs[strNode],
			FunctionName: strs[strFunctionName],
			Region:       strs[strRegion],
			Hostname:     strs[strHostname],
			OS:           strs[strOS],
			PID:          r.pid,
		},
		RegisteredAt:  time.Unix(0, r.registered).UTC(),
		LastHeartbeat: time.Unix(0, r.lastBeat).UTC(),
		Interval:      time.Duration(r.interval),
		OwnThresholds: r.ownThresholds(),
		UptimeSeconds: r.uptime,
		HasUptime:     r.flags&flagHasUptime != 0,
		Metrics:       ReportedMetrics{RequestsHandled: r.requests, Errors: r.errors, AvgLatencyMs: r.latencyMs},
		HasMetrics:    r.flags&flagHasMetrics != 0,
		ExitCode:      r.exitCode,
		HasExitCode:   r.flags&flagHasExitCode != 0,
		Stopped:       r.flags&flagStopped != 0,
		Revoked:       r.flags&flagRevoked != 0,
		Paused:        r.flags&flagPaused != 0,
		Command:       r.command,
		TokenVersion:  r.tokenVersion,
	}
}

// cloneStrings makes a's strings independent of the arena they borrow from.
func (a *Agent) cloneStrings() {
	for _, s := range []*string{
		&a.Tenant, &a.AgentID, &a.Version, &a.Platform.ContainerID, &a.Platform.Image,
		&a.Platform.PodName, &a.Platform.Namespace, &a.Platform.Node, &a.Platform.FunctionName,
		&a.Platform.Region, &a.Platform.Hostname, &a.Platform.OS,
	} {
		*s = string([]byte(*s))
	}
}

// Get returns a copy of the agent's state.
func (s *Store) Get(k fleet.Key) (Agent, bool) {
	h := s.hash(k)
	sh := s.shardOf(h)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	slot := sh.find(h, k)
	if slot < 0 {
		return Agent{}, false
	}
	var a Agent
	decode(&a, &sh.records[slot], sh.arena)
	a.cloneStrings()
	return a, true
}

// Delete forgets an agent; its series disappear from the next scrape.
func (s *Store) Delete(k fleet.Key) bool {
	h := s.hash(k)
	sh := s.shardOf(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	prevNext := uint32(0) // slot+1 of the chain predecessor, 0 for the index head
	for next := uint32(sh.index[h]); next != 0; {
		slot := next - 1
		r := &sh.records[slot]
		if r.hash == h && blobHasKey(sh.arena[r.blobOff:r.blobOff+r.blobLen], k) {
			if prevNext == 0 {
				if r.next == 0 {
					delete(sh.index, h)
				} else {
					sh.index[h] = sh.indexEntry(r.next - 1)
				}
			} else {
				sh.records[prevNext-1].next = r.next
			}
			sh.garbage += int(r.blobLen)
			*r = record{}
			sh.free = append(sh.free, slot)
			sh.changes[ChangeMembers]++
			s.count.Add(-1)
			s.tenants.get(k.Tenant).n.Add(-1)
			return true
		}
		prevNext, next = next, r.next
	}
	return false
}

// update applies fn to the agent's record under its shard lock.
func (s *Store) update(k fleet.Key, fn func(*record)) bool {
	h := s.hash(k)
	sh := s.shardOf(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	slot := sh.find(h, k)
	if slot < 0 {
		return false
	}
	r := &sh.records[slot]
	before := *r
	fn(r)
	sh.noteChanges(&before, r)
	return true
}

// SetRevoked marks the agent revoked or reinstated; false if it is unknown.
func (s *Store) SetRevoked(k fleet.Key, revoked bool) bool {
	return s.update(k, func(r *record) {
		if revoked {
			r.flags |= flagRevoked
		} else {
			r.flags &^= flagRevoked
		}
	})
}

// SetCommand makes cmd the agent's pending command, replacing any older one;
// false if the agent is unknown.
func (s *Store) SetCommand(k fleet.Key, cmd fleet.Command, seq uint32) bool {
	return s.update(k, func(r *record) {
		r.command, r.commandSeq = cmd, seq
		r.flags &^= flagCommandCarried
	})
}

// Restore puts a fully formed agent into the store, as read from a snapshot.
// It replaces an agent with the same key and ignores max_agents, because
// agents admitted before a restart are never evicted.
func (s *Store) Restore(a *Agent) { s.restore(a, false) }

// Merge restores a like Restore unless the store holds the agent with a
// heartbeat as recent or more; it reports whether it restored. Replicas
// sharing a ledger merge each other's hot state with it: the newest
// heartbeat wins.
func (s *Store) Merge(a *Agent) bool { return s.restore(a, true) }

func (s *Store) restore(a *Agent, onlyNewer bool) bool {
	h := s.hash(a.Key)
	sh := s.shardOf(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	var r *record
	if slot := sh.find(h, a.Key); slot >= 0 {
		r = &sh.records[slot]
		if onlyNewer && r.lastBeat >= a.LastHeartbeat.UnixNano() {
			return false
		}
		before := *r
		defer sh.noteChanges(&before, r)
	} else {
		r = sh.insert(h) // a change of members
		s.count.Add(1)
		s.tenants.get(a.Key.Tenant).n.Add(1)
	}
	r.registered = a.RegisteredAt.UnixNano()
	r.lastBeat = a.LastHeartbeat.UnixNano()
	r.interval = int64(a.Interval)
	r.silentAfter, r.zombieAfter = uint32(a.OwnThresholds.SilentAfter), uint32(a.OwnThresholds.ZombieAfter)
	r.status, r.platform, r.pid = a.Status, a.Platform.Type, a.Platform.PID
	r.uptime, r.exitCode = a.UptimeSeconds, a.ExitCode
	r.requests, r.errors, r.latencyMs = a.Metrics.RequestsHandled, a.Metrics.Errors, a.Metrics.AvgLatencyMs
	r.tokenVersion, r.command = a.TokenVersion, a.Command
	r.flags = flagUsed
	for _, f := range []struct {
		set  bool
		flag uint16
	}{
		{a.Stopped, flagStopped}, {a.Revoked, flagRevoked}, {a.HasUptime, flagHasUptime},
		{a.HasMetrics, flagHasMetrics}, {a.HasExitCode, flagHasExitCode}, {a.Paused, flagPaused},
	} {
		if f.set {
			r.flags |= f.flag
		}
	}
	var buf [maxBlobLen]byte
	sh.setBlob(r, appendBlob(buf[:0], a.Key, a.Version, &a.Platform))
	return true
}

// View is a copy of the store taken by Snapshot: consistent per shard, owned
// by the caller, and reusable across snapshots to save allocations.
type View struct {
	shards [numShards]viewShard
	count  int
}

type viewShard struct {
	records []record
	arena   []byte
}

// Snapshot copies the store into v (allocating one if v is nil) and returns
// it. It holds each shard's read lock only while copying that shard.
func (s *Store) Snapshot(v *View) *View {
	if v == nil {
		v = new(View)
	}
	v.count = 0
	for i := range s.shards {
		sh, vs := &s.shards[i], &v.shards[i]
		sh.mu.RLock()
		vs.records = append(vs.records[:0], sh.records...)
		vs.arena = append(vs.arena[:0], sh.arena...)
		sh.mu.RUnlock()
		for j := range vs.records {
			if vs.records[j].flags&flagUsed != 0 {
				v.count++
			}
		}
	}
	return v
}

// Each calls fn for every agent until fn returns false, copying one shard
// at a time: it holds a shard's read lock only while copying it, so fn may
// take its time, and it needs memory for one shard, not the whole store.
// Unlike a View, the agents of different shards are seen at slightly
// different moments. The *Agent is reused and its strings borrow from the
// copy: they are valid until fn returns.
func (s *Store) Each(fn func(*Agent) bool) { s.EachRun(1, nil, nil, fn) }

// RunCopies holds the copies of shards EachRun makes, so that a caller that
// iterates again and again reuses their memory. The zero value is ready to
// use; one RunCopies serves one EachRun at a time.
type RunCopies struct{ shards []viewShard }

// EachRun is Each over runs of perRun shards (perRun divides NumShards): it
// copies a run's shards into copies (new ones when nil), each under its read
// lock only while copying it, then calls run, when not nil, with the run's
// index and the change counts of those copies summed, then fn for the run's
// agents. A reader that keeps something derived from a run of shards can so
// tell, from the copies themselves, what is still current. The copies take
// the memory of the largest run.
func (s *Store) EachRun(perRun int, copies *RunCopies, run func(i int, changes *ChangeCounts), fn func(*Agent) bool) {
	if perRun < 1 || numShards%perRun != 0 {
		panic(fmt.Sprintf("heartbeat: EachRun over runs of %d shards, which does not divide %d", perRun, numShards))
	}
	if copies == nil {
		copies = new(RunCopies)
	}
	if len(copies.shards) < perRun {
		copies.shards = append(copies.shards, make([]viewShard, perRun-len(copies.shards))...)
	}
	views := copies.shards[:perRun]
	var (
		a       Agent
		changes ChangeCounts // one for every run: run's pointer escapes
	)
	for first := 0; first < numShards; first += perRun {
		changes = ChangeCounts{}
		for j := range views {
			sh, vs := &s.shards[first+j], &views[j]
			sh.mu.RLock()
			vs.records = append(vs.records[:0], sh.records...)
			vs.arena = append(vs.arena[:0], sh.arena...)
			for k, n := range sh.changes {
				changes[k] += n
			}
			sh.mu.RUnlock()
		}
		if run != nil {
			run(first/perRun, &changes)
		}
		for j := range views {
			if !views[j].each(&a, fn) {
				return
			}
		}
	}
}

// Len returns the number of agents in the view.
func (v *View) Len() int { return v.count }

// Each calls fn for every agent of the view until fn returns false. The
// *Agent is reused between calls and its strings borrow from the view: copy
// what must outlive the view or the next Snapshot into it.
func (v *View) Each(fn func(*Agent) bool) {
	var a Agent
	for i := range v.shards {
		if !v.shards[i].each(&a, fn) {
			return
		}
	}
}

// each calls fn for every agent of the copied shard, decoded into a, until
// fn returns false; it reports whether fn never did.
func (vs *viewShard) each(a *Agent, fn func(*Agent) bool) bool {
	for i := range vs.records {
		r := &vs.records[i]
		if r.flags&flagUsed == 0 {
			continue
		}
		decode(a, r, vs.arena)
		if !fn(a) {
			return false
		}
	}
	return true
}
