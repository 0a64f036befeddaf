package heartbeat

import (
	"sync/atomic"
	"unsafe"
)

// The store keeps its records and string arenas in memory mapped outside the
// Go heap, for the process's resident size: the runtime lets the heap grow
// to twice its live size before it collects (GOGC=100), and a slice of
// records is live heap like any other, so in ordinary slices a million
// agents' records and strings would cost about twice their size. Mapped
// memory costs what is touched: the pages a region has but never used (its
// room to grow) are not resident either.
//
// Safety: records and arenas hold no Go pointers, so the collector need
// not see them. Nothing may point into a region once it is unmapped: the
// store hands out no reference into its memory (Get, Each and Snapshot copy
// under the shard lock), unmaps a region only under its shard's write lock
// when it moves the contents to a larger one, and unmaps the rest when the
// store itself is unreachable (a cleanup that NewStore registers).
//
// Off Linux, or when a mapping fails, regions are ordinary Go slices and the
// store works as before.

// minRegion is the smallest mapping: a page, below which mapping is waste.
const minRegion = 4096

// offHeapBytes is what every store of the process has mapped (of which
// only the used part is resident); the runtime's memory statistics do not
// see it.
var offHeapBytes atomic.Int64

// region is the memory behind one growable slice of a shard. It is owned by
// its shard (changed under the shard's write lock) and, once the store is
// unreachable, by the store's cleanup.
type region struct {
	mem    []byte
	mapped bool // mem was mapped (else it is a Go slice and the collector frees it)
}

// free unmaps the region's memory.
func (r *region) free() {
	if r.mapped {
		unmapBytes(r.mem)
		offHeapBytes.Add(-int64(len(r.mem)))
	}
	r.mem, r.mapped = nil, false
}

// reserve returns s with room for n more elements, moving it into a larger
// region r when it has none: twice its capacity, at least what is needed.
// The old region is freed: the caller holds the write lock of the shard
// that owns r, and nothing else refers to its memory.
func reserve[T any](r *region, s []T, n int) []T {
	if cap(s)-len(s) >= n {
		return s
	}
	size := int(unsafe.Sizeof(*new(T)))
	need := max(2*cap(s), len(s)+n) * size
	need = (max(need, minRegion) + minRegion - 1) / minRegion * minRegion
	mem, mapped := mapBytes(need)
	if !mapped {
		mem = make([]byte, need)
	} else {
		offHeapBytes.Add(int64(len(mem)))
	}
	ns := unsafe.Slice((*T)(unsafe.Pointer(unsafe.SliceData(mem))), len(mem)/size)[:len(s)]
	copy(ns, s)
	r.free()
	r.mem, r.mapped = mem, mapped
	return ns
}
