package heartbeat

import (
	"hash/maphash"
	"sync"
)

// DefaultEventWindow is how many of a tenant's latest event ids are
// remembered at least (ReceiverOptions.EventWindow when 0).
const DefaultEventWindow = 100_000

// eventFilter remembers recent event ids, per tenant, to answer repeated
// events as duplicates (SPEC 2.2).
//
// Each tenant has its own window, so one tenant's traffic never evicts
// another's ids: a tenant can only flush its own. A window holds two
// generations of at most size ids each; when the current one is full the
// older one is dropped, so a tenant's last size ids are always remembered,
// and at most 2×size (a few MB) are kept per tenant. Ids are kept as 64-bit
// seeded hashes: two ids of a tenant collide with a probability of about
// 2×size / 2^64 per event, which would answer a new event as a duplicate.
//
// Concurrency: safe for concurrent use; each window has its own lock. The
// receiver serialises the check and the record of one event id itself.
type eventFilter struct {
	seed maphash.Seed
	size int

	mu      sync.RWMutex
	tenants map[string]*eventWindow
}

type eventWindow struct {
	mu       sync.Mutex
	cur, old map[uint64]struct{}
}

func newEventFilter(size int) *eventFilter {
	if size <= 0 {
		size = DefaultEventWindow
	}
	return &eventFilter{seed: maphash.MakeSeed(), size: size, tenants: map[string]*eventWindow{}}
}

func (f *eventFilter) window(tenant string) *eventWindow {
	f.mu.RLock()
	w := f.tenants[tenant]
	f.mu.RUnlock()
	if w != nil {
		return w
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if w = f.tenants[tenant]; w == nil {
		w = &eventWindow{cur: map[uint64]struct{}{}}
		f.tenants[tenant] = w
	}
	return w
}

// event is one tenant's event id as the filter keeps it: the tenant's
// window and the id's hash, found once for the check and the record.
type event struct {
	w    *eventWindow
	h    uint64
	size int
}

func (f *eventFilter) event(tenant, id string) event {
	return event{w: f.window(tenant), h: maphash.String(f.seed, id), size: f.size}
}

// seen reports whether the event id is in its tenant's window.
func (e event) seen() bool {
	e.w.mu.Lock()
	defer e.w.mu.Unlock()
	_, inCur := e.w.cur[e.h]
	_, inOld := e.w.old[e.h]
	return inCur || inOld
}

// add records the event id in its tenant's window.
func (e event) add() {
	e.w.mu.Lock()
	defer e.w.mu.Unlock()
	if len(e.w.cur) >= e.size {
		e.w.old, e.w.cur = e.w.cur, make(map[uint64]struct{}, e.size)
	}
	e.w.cur[e.h] = struct{}{}
}

// retain drops the windows of tenants keep rejects (removed by a reload).
func (f *eventFilter) retain(keep func(tenant string) bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for t := range f.tenants {
		if !keep(t) {
			delete(f.tenants, t)
		}
	}
}
