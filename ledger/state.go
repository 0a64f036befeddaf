package ledger

import (
	"fmt"
	"maps"
	"time"

	"github.com/agentsentinel/sentinel/fleet"
)

// Retentions of what the ledger prunes (see Prune).
const (
	// AlertKeyRetention is how long an alert's idempotency key is kept:
	// Alertmanager re-sends a firing alert every repeat_interval (4h by
	// default), far within it.
	AlertKeyRetention = 7 * 24 * time.Hour
	// TombstoneRetention is how long a forgotten agent's tombstone is kept:
	// longer than any snapshot interval, so no hot state of the agent from
	// before the forget can come back.
	TombstoneRetention = 7 * 24 * time.Hour
	// DeliveryRetention is how long a delivered or failed event is kept.
	DeliveryRetention = 7 * 24 * time.Hour
)

// Command is an agent's pending kill-switch command.
type Command struct {
	Command  fleet.Command `json:"command"`
	Seq      uint32        `json:"seq"`
	IssuedAt time.Time     `json:"issued_at"`
}

// State is the kill-switch part of the ledger's state, as Load returns it
// and as a cache rebuilds it with Apply. The maps are never nil, but for
// Registered in a cache that leaves registrations to the ledger (see
// Ledger.Registered): Apply then keeps none.
type State struct {
	Revision    Revision                       `json:"revision"`
	Revocations map[fleet.Key]fleet.Revocation `json:"-"`
	Commands    map[fleet.Key]Command          `json:"-"`
	// Forgotten holds tombstones: when each forgotten agent was forgotten.
	Forgotten map[fleet.Key]time.Time `json:"-"`
	// Registered holds every registration recorded and not forgotten.
	Registered map[fleet.Key]time.Time `json:"-"`
	// Announced holds announced states other than ACTIVE.
	Announced map[fleet.Key]fleet.State `json:"-"`
	// Sequences holds each agent's last event sequence.
	Sequences map[fleet.Key]uint64 `json:"-"`
	// AlertKeys holds the alert keys seen and when.
	AlertKeys map[string]time.Time `json:"-"`
	// Disabled holds the tenants whose endpoint a 410 disabled.
	Disabled map[string]bool `json:"-"`
	Pipeline PipelineState   `json:"pipeline"`
	// WatchdogAt is when the pipeline's Watchdog alert last arrived.
	WatchdogAt time.Time `json:"watchdog_at"`
	// CommandSeq is the last command sequence number assigned.
	CommandSeq uint32 `json:"command_seq"`
}

// NewState returns an empty state at revision 0.
func NewState() *State {
	return &State{
		Revocations: make(map[fleet.Key]fleet.Revocation),
		Commands:    make(map[fleet.Key]Command),
		Forgotten:   make(map[fleet.Key]time.Time),
		Registered:  make(map[fleet.Key]time.Time),
		Announced:   make(map[fleet.Key]fleet.State),
		Sequences:   make(map[fleet.Key]uint64),
		AlertKeys:   make(map[string]time.Time),
		Disabled:    make(map[string]bool),
	}
}

// Clone returns a deep copy.
func (s *State) Clone() *State {
	c := *s
	c.Revocations = maps.Clone(s.Revocations)
	c.Commands = maps.Clone(s.Commands)
	c.Forgotten = maps.Clone(s.Forgotten)
	c.Registered = maps.Clone(s.Registered)
	c.Announced = maps.Clone(s.Announced)
	c.Sequences = maps.Clone(s.Sequences)
	c.AlertKeys = maps.Clone(s.AlertKeys)
	c.Disabled = maps.Clone(s.Disabled)
	return &c
}

// AnnouncedState returns the agent's announced state, ACTIVE if none.
func (s *State) AnnouncedState(k fleet.Key) fleet.State { return s.Announced[k] }

// Apply applies a committed change. Changes must be applied in revision
// order, each exactly once: Apply returns an error, changing nothing, for a
// change that is not the next revision.
func (s *State) Apply(c Change) error {
	return machine{State: s}.applyChange(c)
}

// machine is the full state: the kill-switch State and the outbox. apply
// makes one unconditional op's change; with a non-nil undo it records how to
// revert it, which is how a failed commit leaves no trace.
type machine struct {
	*State
	outbox *outbox // nil for a cache that holds only State
}

// setMap sets m[k] = v (or deletes k when del), recording the revert.
func setMap[K comparable, V any](m map[K]V, k K, v V, del bool, undo *[]func()) {
	if undo != nil {
		old, had := m[k]
		*undo = append(*undo, func() {
			if had {
				m[k] = old
			} else {
				delete(m, k)
			}
		})
	}
	if del {
		delete(m, k)
	} else {
		m[k] = v
	}
}

func setVal[T any](p *T, v T, undo *[]func()) {
	if undo != nil {
		old := *p
		*undo = append(*undo, func() { *p = old })
	}
	*p = v
}

// applyChange applies a committed change, which must be the next revision:
// any other is an error, changing nothing. It is how a cache, a restart and
// another replica replay what was committed.
func (m machine) applyChange(c Change) error {
	if c.Revision != m.Revision+1 {
		return fmt.Errorf("%w: change %d applied to state at revision %d", ErrCorrupt, c.Revision, m.Revision)
	}
	for _, op := range c.Ops {
		m.apply(op, nil)
	}
	m.Revision = c.Revision
	return nil
}

// apply makes op's change. op is unconditional: resolve has checked it.
func (m machine) apply(op Op, undo *[]func()) {
	switch o := op.(type) {
	case Revoke:
		setMap(m.Revocations, o.Key, o.Revocation, false, undo)
		m.enqueue(o.Event, undo)
	case Reinstate:
		setMap(m.Revocations, o.Key, fleet.Revocation{}, true, undo)
	case SetCommand:
		setMap(m.Commands, o.Key, Command{Command: o.Command, Seq: o.Seq, IssuedAt: o.IssuedAt}, false, undo)
		if o.Seq > m.CommandSeq {
			setVal(&m.CommandSeq, o.Seq, undo)
		}
	case AckCommand:
		if c, ok := m.Commands[o.Key]; ok && c.Seq == o.Seq {
			setMap(m.Commands, o.Key, Command{}, true, undo)
		}
	case Forget:
		setMap(m.Revocations, o.Key, fleet.Revocation{}, true, undo)
		setMap(m.Commands, o.Key, Command{}, true, undo)
		setMap(m.Announced, o.Key, 0, true, undo)
		setMap(m.Registered, o.Key, time.Time{}, true, undo)
		setMap(m.Forgotten, o.Key, o.At, false, undo)
	case Register:
		if m.Registered != nil {
			setMap(m.Registered, o.Key, o.At, false, undo)
		}
	case Announce:
		setMap(m.Announced, o.Key, o.To, o.To == fleet.StateActive, undo)
		m.enqueue(o.Event, undo)
	case AlertSeen:
		setMap(m.AlertKeys, o.Key, o.At, false, undo)
	case Enqueue:
		m.enqueue(&o.Event, undo)
	case SetEndpointDisabled:
		setMap(m.Disabled, o.Tenant, true, !o.Disabled, undo)
	case Pipeline:
		setVal(&m.Pipeline, o.To, undo)
		for i := range o.Events {
			m.enqueue(&o.Events[i], undo)
		}
	case WatchdogSeen:
		setVal(&m.WatchdogAt, o.At, undo)
	case Prune:
		for k, at := range m.AlertKeys {
			if o.At.Sub(at) > AlertKeyRetention {
				setMap(m.AlertKeys, k, time.Time{}, true, undo)
			}
		}
		for k, at := range m.Forgotten {
			if o.At.Sub(at) > TombstoneRetention {
				setMap(m.Forgotten, k, time.Time{}, true, undo)
			}
		}
		if m.outbox != nil {
			m.outbox.prune(o.At, undo)
		}
	case Lease, RecordAttempt, RedeliverEvent:
		if m.outbox != nil {
			m.outbox.apply(op, undo)
		}
	}
}

// enqueue records an event's sequence and, in the full machine, adds it to
// the outbox. The event's sequence was assigned by resolve.
func (m machine) enqueue(e *Event, undo *[]func()) {
	if e == nil {
		return
	}
	if e.Sequence > m.Sequences[e.key()] {
		setMap(m.Sequences, e.key(), e.Sequence, false, undo)
	}
	if m.outbox != nil {
		m.outbox.add(*e, undo)
	}
}

// resolve checks op against the current state and returns the unconditional
// op to commit (nil if op does not apply) and its result. It assigns command
// and event sequence numbers. It does not change the state: the caller
// applies the returned op before resolving the next one.
func (m machine) resolve(op Op) (Op, OpResult, error) {
	var res OpResult
	event := func(e *Event) (*Event, error) {
		if e == nil {
			return nil, nil
		}
		if err := m.checkEvent(e); err != nil {
			return nil, err
		}
		c := e.clone()
		c.Sequence = m.Sequences[c.key()] + 1
		res.Events = append(res.Events, c)
		return &c, nil
	}
	switch o := op.(type) {
	case Revoke:
		if _, revoked := m.Revocations[o.Key]; revoked {
			return nil, res, nil
		}
		e, err := event(o.Event)
		if err != nil {
			return nil, res, err
		}
		o.Event = e
		res.Applied = true
		return o, res, nil
	case Reinstate:
		if _, revoked := m.Revocations[o.Key]; !revoked {
			return nil, res, nil
		}
		res.Applied = true
		return o, res, nil
	case SetCommand:
		if o.Command == fleet.CommandNone || o.Command.String() == "" {
			return nil, res, fmt.Errorf("%w: command %d", ErrInvalid, o.Command)
		}
		o.Seq = m.CommandSeq + 1
		res.Applied, res.CommandSeq = true, o.Seq
		return o, res, nil
	case AckCommand:
		if c, ok := m.Commands[o.Key]; !ok || c.Seq != o.Seq {
			return nil, res, nil
		}
		res.Applied = true
		return o, res, nil
	case Forget:
		_, revoked := m.Revocations[o.Key]
		_, cmd := m.Commands[o.Key]
		_, announced := m.Announced[o.Key]
		_, registered := m.Registered[o.Key]
		_, forgotten := m.Forgotten[o.Key]
		if !revoked && !cmd && !announced && !registered && forgotten {
			return nil, res, nil
		}
		res.Applied = true
		return o, res, nil
	case Register:
		if _, ok := m.Registered[o.Key]; ok {
			return nil, res, nil
		}
		// A registration from before the agent's last Forget is stale: it
		// was queued before the forget committed (registrations are
		// committed in batches, in the background) and must not bring the
		// forgotten agent back.
		if at, ok := m.Forgotten[o.Key]; ok && !o.At.After(at) {
			return nil, res, nil
		}
		res.Applied = true
		return o, res, nil
	case Announce:
		cur := m.Announced[o.Key]
		match := len(o.From) == 0 && cur != o.To
		for _, f := range o.From {
			match = match || f == cur
		}
		if !match {
			return nil, res, nil
		}
		e, err := event(o.Event)
		if err != nil {
			return nil, res, err
		}
		o.Event, o.From = e, nil
		res.Applied = true
		return o, res, nil
	case AlertSeen:
		if o.Key == "" {
			return nil, res, fmt.Errorf("%w: empty alert key", ErrInvalid)
		}
		if _, seen := m.AlertKeys[o.Key]; seen {
			return nil, res, nil
		}
		res.Applied = true
		return o, res, nil
	case Enqueue:
		e, err := event(&o.Event)
		if err != nil {
			return nil, res, err
		}
		o.Event = *e
		res.Applied = true
		return o, res, nil
	case SetEndpointDisabled:
		if m.Disabled[o.Tenant] == o.Disabled {
			return nil, res, nil
		}
		res.Applied = true
		return o, res, nil
	case Pipeline:
		if m.Pipeline != o.Expect || o.Expect == o.To {
			return nil, res, nil
		}
		events := make([]Event, 0, len(o.Events))
		seqs := map[fleet.Key]uint64{}
		for i := range o.Events {
			if err := m.checkEvent(&o.Events[i]); err != nil {
				return nil, res, err
			}
			c := o.Events[i].clone()
			k := c.key()
			if _, ok := seqs[k]; !ok {
				seqs[k] = m.Sequences[k]
			}
			seqs[k]++
			c.Sequence = seqs[k]
			events = append(events, c)
		}
		o.Events = events
		res.Applied, res.Events = true, events
		return o, res, nil
	case WatchdogSeen:
		if !o.At.After(m.WatchdogAt) {
			return nil, res, nil
		}
		res.Applied = true
		return o, res, nil
	case Prune, Lease, RecordAttempt, RedeliverEvent:
		// Written by the ledger itself, already resolved.
		res.Applied = true
		return o, res, nil
	}
	return nil, res, fmt.Errorf("%w: unknown op %T", ErrInvalid, op)
}

func (m machine) checkEvent(e *Event) error {
	switch {
	case e.ID == "":
		return fmt.Errorf("%w: event without id", ErrInvalid)
	case e.Tenant == "":
		return fmt.Errorf("%w: event %s without tenant", ErrInvalid, e.ID)
	case e.Type == "":
		return fmt.Errorf("%w: event %s without type", ErrInvalid, e.ID)
	}
	if m.outbox != nil && m.outbox.has(e.ID) {
		return fmt.Errorf("%w: event id %s already in the outbox", ErrInvalid, e.ID)
	}
	return nil
}
