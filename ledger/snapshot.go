package ledger

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/agentsentinel/sentinel/fleet"
)

// snapshotFormat versions the snapshot of the whole state. Fields are added
// without a new format (readers ignore unknown fields); a change that an
// older reader would misread gets a new format, which older readers refuse.
const snapshotFormat = 1

type snapshot struct {
	Format      int                  `json:"format"`
	Revision    Revision             `json:"revision"`
	Revocations []keyedRevocation    `json:"revocations"`
	Commands    []keyedCommand       `json:"commands"`
	Forgotten   []keyedTime          `json:"forgotten"`
	Registered  []keyedTime          `json:"registered"`
	Announced   []keyedState         `json:"announced"`
	Sequences   []keyedSeq           `json:"sequences"`
	AlertKeys   map[string]time.Time `json:"alert_keys"`
	Disabled    []string             `json:"disabled_endpoints"`
	Pipeline    PipelineState        `json:"pipeline"`
	WatchdogAt  time.Time            `json:"watchdog_at,omitzero"`
	CommandSeq  uint32               `json:"command_seq"`
	OutboxNext  uint64               `json:"outbox_next"`
	Deliveries  []snapshotDelivery   `json:"deliveries"`
}

type keyedRevocation struct {
	Key        fleet.Key        `json:"key"`
	Revocation fleet.Revocation `json:"revocation"`
}
type keyedCommand struct {
	Key     fleet.Key `json:"key"`
	Command Command   `json:"command"`
}
type keyedTime struct {
	Key fleet.Key `json:"key"`
	At  time.Time `json:"at"`
}
type keyedState struct {
	Key   fleet.Key   `json:"key"`
	State fleet.State `json:"state"`
}
type keyedSeq struct {
	Key fleet.Key `json:"key"`
	Seq uint64    `json:"seq"`
}
type snapshotDelivery struct {
	Delivery
	Ordinal uint64 `json:"ordinal"`
}

func sortedKeys[V any](m map[fleet.Key]V) []fleet.Key {
	return slices.SortedFunc(maps.Keys(m), func(a, b fleet.Key) int {
		return cmp.Or(cmp.Compare(a.Tenant, b.Tenant), cmp.Compare(a.AgentID, b.AgentID))
	})
}

// EncodeSnapshot writes the whole state (outbox included) to w and returns
// its revision.
func (c *Core) EncodeSnapshot(w io.Writer) (Revision, error) {
	c.mu.Lock()
	s := c.encodable()
	c.mu.Unlock()
	return s.encode(w)
}

// EncodeSnapshot writes the state within a batch (the Core's lock is held),
// for a backend that compacts while persisting.
func (t *Txn) EncodeSnapshot(w io.Writer) (Revision, error) {
	return t.c.encodable().encode(w)
}

func (s *snapshot) encode(w io.Writer) (Revision, error) {
	return s.Revision, json.NewEncoder(w).Encode(s)
}

// encodable copies the state into its stored form; c.mu is held.
func (c *Core) encodable() *snapshot {
	m := c.m
	s := &snapshot{Format: snapshotFormat, Revision: m.Revision, AlertKeys: maps.Clone(m.AlertKeys),
		Pipeline: m.Pipeline, WatchdogAt: m.WatchdogAt, CommandSeq: m.CommandSeq, OutboxNext: m.outbox.next}
	for _, k := range sortedKeys(m.Revocations) {
		s.Revocations = append(s.Revocations, keyedRevocation{k, m.Revocations[k]})
	}
	for _, k := range sortedKeys(m.Commands) {
		s.Commands = append(s.Commands, keyedCommand{k, m.Commands[k]})
	}
	for _, k := range sortedKeys(m.Forgotten) {
		s.Forgotten = append(s.Forgotten, keyedTime{k, m.Forgotten[k]})
	}
	for _, k := range sortedKeys(m.Registered) {
		s.Registered = append(s.Registered, keyedTime{k, m.Registered[k]})
	}
	for _, k := range sortedKeys(m.Announced) {
		s.Announced = append(s.Announced, keyedState{k, m.Announced[k]})
	}
	for _, k := range sortedKeys(m.Sequences) {
		s.Sequences = append(s.Sequences, keyedSeq{k, m.Sequences[k]})
	}
	s.Disabled = slices.Sorted(maps.Keys(m.Disabled))
	for _, d := range m.outbox.byID {
		v := *d
		v.Event = d.Event.clone()
		s.Deliveries = append(s.Deliveries, snapshotDelivery{Delivery: v, Ordinal: d.ordinal})
	}
	slices.SortFunc(s.Deliveries, func(a, b snapshotDelivery) int { return cmp.Compare(a.Ordinal, b.Ordinal) })
	return s
}

// DecodeSnapshot replaces the state with the one EncodeSnapshot wrote, and
// drops the watch log: a Watch from before the snapshot's revision then gets
// ErrCompacted. Backends call it at start and, when a shared backend pruned
// the changes a replica was behind on, while the core is in use.
func (c *Core) DecodeSnapshot(r io.Reader) (Revision, error) {
	var s snapshot
	if err := json.NewDecoder(r).Decode(&s); err != nil {
		return 0, fmt.Errorf("decode ledger snapshot: %w", err)
	}
	if s.Format != snapshotFormat {
		return 0, fmt.Errorf("ledger snapshot format %d is not the format %d this sentinel reads (written by a newer sentinel?)", s.Format, snapshotFormat)
	}
	st := NewState()
	st.Revision, st.Pipeline, st.WatchdogAt, st.CommandSeq = s.Revision, s.Pipeline, s.WatchdogAt, s.CommandSeq
	for _, x := range s.Revocations {
		st.Revocations[x.Key] = x.Revocation
	}
	for _, x := range s.Commands {
		st.Commands[x.Key] = x.Command
	}
	for _, x := range s.Forgotten {
		st.Forgotten[x.Key] = x.At
	}
	for _, x := range s.Registered {
		st.Registered[x.Key] = x.At
	}
	for _, x := range s.Announced {
		st.Announced[x.Key] = x.State
	}
	for _, x := range s.Sequences {
		st.Sequences[x.Key] = x.Seq
	}
	maps.Copy(st.AlertKeys, s.AlertKeys)
	for _, t := range s.Disabled {
		st.Disabled[t] = true
	}
	ob := newOutbox()
	ob.next = s.OutboxNext
	for _, x := range s.Deliveries {
		d := x.Delivery
		d.ordinal = x.Ordinal
		if d.Event.ID == "" || ob.has(d.Event.ID) {
			return 0, fmt.Errorf("decode ledger snapshot: delivery without id or twice: %q", d.Event.ID)
		}
		ob.byID[d.Event.ID] = &d
		if d.Status == StatusPending {
			ob.enqueue(&d)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m = machine{State: st, outbox: ob}
	c.log, c.logBase = nil, st.Revision
	return st.Revision, nil
}
