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

// seen reports whether the tenant's event id is in its window.
func (f *eventFilter) seen(tenant, id string) bool {
	h := maphash.String(f.seed, id)
	w := f.window(tenant)
	w.mu.Lock()
	defer w.mu.Unlock()
	_, inCur := w.cur[h]
	_, inOld := w.old[h]
	return inCur || inOld
}

// add records the tenant's event id.
func (f *eventFilter) add(tenant, id string) {
	h := maphash.String(f.seed, id)
	w := f.window(tenant)
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.cur) >= f.size {
		w.old, w.cur = w.cur, make(map[uint64]struct{}, f.size)
	}
	w.cur[h] = struct{}{}
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
