package ledger

import (
	"bufio"
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
// its revision. It holds the Core's lock while it writes (see encodeSnapshot).
func (c *Core) EncodeSnapshot(w io.Writer) (Revision, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m.Revision, c.m.encodeSnapshot(w)
}

// EncodeSnapshot writes the state within a batch (the Core's lock is held),
// for a backend that compacts while persisting.
func (t *Txn) EncodeSnapshot(w io.Writer) (Revision, error) {
	return t.c.m.Revision, t.c.m.encodeSnapshot(w)
}

// encodeSnapshot writes the document json.Marshal writes for the snapshot
// struct, one entry at a time, from the state itself: a state of a million
// registered agents compacts without a copy of its maps or a buffer of the
// whole document (json.Encoder marshals a value whole before it writes a
// byte), which at that size were a few hundred MB of garbage per compaction.
// The caller holds the Core's lock (or owns m): entries are read in place.
func (m machine) encodeSnapshot(w io.Writer) error {
	sw := &snapshotWriter{w: bufio.NewWriterSize(w, 64<<10)}
	sw.raw(`{"format":`)
	sw.value(snapshotFormat)
	sw.field("revision", m.Revision)
	writeKeyed(sw, "revocations", m.Revocations, func(k fleet.Key, v fleet.Revocation) any { return keyedRevocation{k, v} })
	writeKeyed(sw, "commands", m.Commands, func(k fleet.Key, v Command) any { return keyedCommand{k, v} })
	sw.keyedTimes("forgotten", m.Forgotten)
	sw.keyedTimes("registered", m.Registered)
	writeKeyed(sw, "announced", m.Announced, func(k fleet.Key, v fleet.State) any { return keyedState{k, v} })
	writeKeyed(sw, "sequences", m.Sequences, func(k fleet.Key, v uint64) any { return keyedSeq{k, v} })
	sw.field("alert_keys", m.AlertKeys)
	sw.field("disabled_endpoints", slices.Sorted(maps.Keys(m.Disabled)))
	sw.field("pipeline", m.Pipeline)
	if !m.WatchdogAt.IsZero() {
		sw.field("watchdog_at", m.WatchdogAt)
	}
	sw.field("command_seq", m.CommandSeq)
	sw.field("outbox_next", m.outbox.next)
	deliveries := slices.SortedFunc(maps.Values(m.outbox.byID), func(a, b *Delivery) int { return cmp.Compare(a.ordinal, b.ordinal) })
	sw.raw(`,"deliveries":`)
	sw.array(len(deliveries), func(i int) { sw.value(snapshotDelivery{Delivery: *deliveries[i], Ordinal: deliveries[i].ordinal}) })
	sw.raw("}\n")
	if sw.err != nil {
		return sw.err
	}
	return sw.w.Flush()
}

// snapshotWriter writes a JSON document piece by piece, keeping the first
// error.
type snapshotWriter struct {
	w   *bufio.Writer
	buf []byte
	err error
}

func (sw *snapshotWriter) raw(s string) {
	if sw.err == nil {
		_, sw.err = sw.w.WriteString(s)
	}
}

func (sw *snapshotWriter) bytes(b []byte) {
	if sw.err == nil {
		_, sw.err = sw.w.Write(b)
	}
}

func (sw *snapshotWriter) value(v any) {
	if sw.err != nil {
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		sw.err = err
		return
	}
	sw.bytes(b)
}

func (sw *snapshotWriter) field(name string, v any) {
	sw.raw(`,"` + name + `":`)
	sw.value(v)
}

// array writes n elements with elem, as encoding/json writes a slice: null
// when empty, as the nil slices of the snapshot struct were.
func (sw *snapshotWriter) array(n int, elem func(int)) {
	if n == 0 {
		sw.raw("null")
		return
	}
	for i := range n {
		if i == 0 {
			sw.raw("[")
		} else {
			sw.raw(",")
		}
		elem(i)
	}
	sw.raw("]")
}

// writeKeyed writes m's entries in key order as the elements wrap makes.
func writeKeyed[V any](sw *snapshotWriter, name string, m map[fleet.Key]V, wrap func(fleet.Key, V) any) {
	keys := sortedKeys(m)
	sw.raw(`,"` + name + `":`)
	sw.array(len(keys), func(i int) { sw.value(wrap(keys[i], m[keys[i]])) })
}

// keyedTimes is writeKeyed for the maps of times, registrations above all
// (one per agent), without reflection: the bytes json.Marshal writes for a
// keyedTime.
func (sw *snapshotWriter) keyedTimes(name string, m map[fleet.Key]time.Time) {
	keys := sortedKeys(m)
	sw.raw(`,"` + name + `":`)
	sw.array(len(keys), func(i int) {
		k := keys[i]
		b := append(sw.buf[:0], `{"key":{"Tenant":`...)
		b = appendString(b, k.Tenant)
		b = append(b, `,"AgentID":`...)
		b = appendString(b, k.AgentID)
		b = append(b, `},"at":`...)
		b, err := appendTime(b, m[k])
		if err != nil && sw.err == nil {
			sw.err = err
		}
		sw.buf = append(b, '}')
		sw.bytes(sw.buf)
	})
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
	c.log, c.logBase, c.logOps = nil, st.Revision, 0
	return st.Revision, nil
}
