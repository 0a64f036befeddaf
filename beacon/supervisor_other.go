//go:build !linux

package beacon

import (
	"errors"
	"syscall"
)

// setParentDeathSignal does nothing: only Linux has a parent-death signal.
// A child whose beacon was killed with SIGKILL keeps running there.
func setParentDeathSignal(*syscall.SysProcAttr) {}

// groupRunning reports whether a process of group pgid still exists. Zombies
// count: a group whose orphans are not reaped is waited for until its
// deadline.
func groupRunning(pgid int) bool {
	if pgid <= 0 {
		return false
	}
	err := syscall.Kill(-pgid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
