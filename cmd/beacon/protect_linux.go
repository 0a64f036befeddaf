package main

import (
	"fmt"
	"syscall"
)

// protectCredentials makes beacon non-dumpable: /proc/<pid>/environ, /mem
// and ptrace are then closed to processes of the same user without
// CAP_SYS_PTRACE, such as the agent it runs (whose own dumpable flag is reset
// by exec). The command line stays public: prefer SENTINEL_TOKEN to --token.
func protectCredentials() error {
	const prSetDumpable = 4 // PR_SET_DUMPABLE of <linux/prctl.h>
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetDumpable, 0, 0); errno != 0 {
		return fmt.Errorf("prctl(PR_SET_DUMPABLE, 0): %w", errno)
	}
	return nil
}
