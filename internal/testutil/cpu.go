package testutil

import (
	"syscall"
	"time"
)

// ProcessCPU is the user and system CPU time of this process so far; the
// difference of two readings is what a benchmark cost the machine, goroutines
// of every core included (wall time hides work done in parallel).
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
