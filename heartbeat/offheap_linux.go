package heartbeat

import "syscall"

// mapBytes maps n bytes of anonymous, zeroed memory; false when the system
// refuses (the caller then falls back to the Go heap).
func mapBytes(n int) ([]byte, bool) {
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return nil, false
	}
	// With transparent huge pages "always", the untouched room of a region
	// would become resident 2 MiB at a time. Advice only: an error changes
	// nothing.
	_ = syscall.Madvise(b, syscall.MADV_NOHUGEPAGE)
	return b, true
}

// unmapBytes unmaps what mapBytes mapped. It fails only for a range that is
// not a mapping, which would be a bug in the store.
func unmapBytes(b []byte) {
	if err := syscall.Munmap(b); err != nil {
		panic("heartbeat: unmap store region: " + err.Error())
	}
}
