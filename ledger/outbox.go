package ledger

import (
	"cmp"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/agentsentinel/sentinel/fleet"
)

// outbox holds the webhook events and their delivery state. It is part of the
// machine: changed only by applying ops, so every replica holds the same.
type outbox struct {
	byID map[string]*Delivery
	// queues holds each agent's pending deliveries in sequence order: only
	// the first may be handed out.
	queues map[fleet.Key][]*Delivery
	// next is the last ordinal given; ordinals order the outbox.
	next uint64
	// pending counts the deliveries in queues, kept in step by enqueue and
	// dequeue so that counting them costs nothing.
	pending int
}

func newOutbox() *outbox {
	return &outbox{byID: make(map[string]*Delivery), queues: make(map[fleet.Key][]*Delivery)}
}

func (o *outbox) has(id string) bool { _, ok := o.byID[id]; return ok }

func (o *outbox) add(e Event, undo *[]func()) {
	o.next++
	d := &Delivery{Event: e.clone(), Status: StatusPending, NextAttempt: e.CreatedAt, ordinal: o.next}
	o.byID[e.ID] = d
	o.enqueue(d)
	if undo != nil {
		*undo = append(*undo, func() {
			o.dequeue(d)
			delete(o.byID, e.ID)
			o.next--
		})
	}
}

func (o *outbox) enqueue(d *Delivery) {
	k := d.Event.key()
	q := o.queues[k]
	i := sort.Search(len(q), func(i int) bool { return q[i].Event.Sequence > d.Event.Sequence })
	o.queues[k] = slices.Insert(q, i, d)
	o.pending++
}

func (o *outbox) dequeue(d *Delivery) {
	k := d.Event.key()
	before := len(o.queues[k])
	q := slices.DeleteFunc(o.queues[k], func(x *Delivery) bool { return x == d })
	o.pending -= before - len(q)
	if len(q) == 0 {
		delete(o.queues, k)
		return
	}
	o.queues[k] = q
}

// set replaces d's value with v, keeping the queues in step with the status.
func (o *outbox) set(d *Delivery, v Delivery, undo *[]func()) {
	old := *d
	v.ordinal = d.ordinal
	wasPending, isPending := d.Status == StatusPending, v.Status == StatusPending
	*d = v
	switch {
	case wasPending && !isPending:
		o.dequeue(d)
	case !wasPending && isPending:
		o.enqueue(d)
	}
	if undo != nil {
		*undo = append(*undo, func() { o.set(d, old, nil) })
	}
}

func (o *outbox) apply(op Op, undo *[]func()) {
	switch x := op.(type) {
	case Lease:
		for _, id := range x.IDs {
			if d, ok := o.byID[id]; ok {
				v := *d
				v.Worker, v.LeaseUntil = x.Worker, x.Until
				o.set(d, v, undo)
			}
		}
	case RecordAttempt:
		d, ok := o.byID[x.ID]
		if !ok {
			return
		}
		v := *d
		a := x.Attempt
		v.Attempts++
		v.LastStatusCode, v.LastError, v.LastAttemptAt = a.StatusCode, a.Error, a.At
		v.Worker, v.LeaseUntil = "", time.Time{}
		switch a.Outcome {
		case OutcomeDelivered:
			v.Status, v.NextAttempt = StatusDelivered, time.Time{}
		case OutcomeFailed:
			v.Status, v.NextAttempt = StatusFailed, time.Time{}
		default:
			v.Status, v.NextAttempt = StatusPending, a.NextAttempt
		}
		o.set(d, v, undo)
	case RedeliverEvent:
		if d, ok := o.byID[x.ID]; ok {
			v := *d
			v.Status, v.NextAttempt, v.Worker, v.LeaseUntil = StatusPending, x.At, "", time.Time{}
			o.set(d, v, undo)
		}
	}
}

// prune drops finished deliveries older than DeliveryRetention at now.
func (o *outbox) prune(now time.Time, undo *[]func()) {
	for id, d := range o.byID {
		if d.Status == StatusPending {
			continue
		}
		at := d.LastAttemptAt
		if at.IsZero() {
			at = d.Event.CreatedAt
		}
		if now.Sub(at) <= DeliveryRetention {
			continue
		}
		delete(o.byID, id)
		if undo != nil {
			d := d
			*undo = append(*undo, func() { o.byID[d.Event.ID] = d })
		}
	}
}

// claimable returns up to max deliveries that worker may be handed at now:
// the head of each agent's queue, due, not leased, of an enabled endpoint
// (of tenant only, unless it is empty);
// oldest first.
func (o *outbox) claimable(now time.Time, max int, tenant string, disabled map[string]bool) []*Delivery {
	var heads []*Delivery
	for k, q := range o.queues {
		if disabled[k.Tenant] || len(q) == 0 || (tenant != "" && k.Tenant != tenant) {
			continue
		}
		d := q[0]
		if d.NextAttempt.After(now) || d.LeaseUntil.After(now) {
			continue
		}
		heads = append(heads, d)
	}
	slices.SortFunc(heads, func(a, b *Delivery) int { return cmp.Compare(a.ordinal, b.ordinal) })
	if len(heads) > max {
		heads = heads[:max]
	}
	return heads
}

// list returns the page of deliveries matching f after its cursor.
func (o *outbox) list(f DeliveryFilter) ([]Delivery, string) {
	after, _ := strconv.ParseUint(f.Cursor, 10, 64)
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	var match []*Delivery
	candidates := o.byID
	if f.ID != "" {
		candidates = nil
		if d, ok := o.byID[f.ID]; ok {
			candidates = map[string]*Delivery{f.ID: d}
		}
	}
	for _, d := range candidates {
		if d.ordinal <= after ||
			(f.ID != "" && d.Event.ID != f.ID) ||
			(f.Tenant != "" && d.Event.Tenant != f.Tenant) ||
			(f.AgentID != "" && d.Event.AgentID != f.AgentID) ||
			(f.Status != "" && d.Status != f.Status) {
			continue
		}
		match = append(match, d)
	}
	slices.SortFunc(match, func(a, b *Delivery) int { return cmp.Compare(a.ordinal, b.ordinal) })
	next := ""
	if len(match) > limit {
		match = match[:limit]
		next = strconv.FormatUint(match[limit-1].ordinal, 10)
	}
	out := make([]Delivery, len(match))
	for i, d := range match {
		out[i] = *d
		out[i].Event = d.Event.clone()
	}
	return out, next
}
