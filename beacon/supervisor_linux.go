package beacon

import (
	"bytes"
	"errors"
	"os"
	"strconv"
	"syscall"
)

// setParentDeathSignal has the kernel SIGKILL the child when its parent dies
// (a SIGKILL or a crash of beacon), so that no agent outlives its supervisor.
// Only the child itself gets it: what the child started in the background
// is reached by the process group's signals, which need beacon alive.
func setParentDeathSignal(attr *syscall.SysProcAttr) {
	if attr.Pdeathsig == 0 {
		attr.Pdeathsig = syscall.SIGKILL
	}
}

// groupRunning reports whether a process of group pgid is still running.
// kill(2) counts zombies too (an orphan its new parent has not reaped yet,
// which no signal can end), so /proc tells them apart.
func groupRunning(pgid int) bool {
	if pgid <= 0 {
		return false
	}
	if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	dir, err := os.Open("/proc")
	if err != nil {
		return true // no /proc: trust kill(2)
	}
	defer dir.Close()
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return true
	}
	for _, name := range names {
		if name[0] < '0' || name[0] > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + name + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		state, pgrp, ok := parseStat(b)
		if ok && pgrp == pgid && state != 'Z' && state != 'X' {
			return true
		}
	}
	return false
}

// parseStat returns the state and the process group of a /proc/<pid>/stat
// line: "pid (comm) state ppid pgrp …", where comm may hold anything.
func parseStat(b []byte) (state byte, pgrp int, ok bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 3 || len(f[0]) != 1 {
		return 0, 0, false
	}
	pgrp, err := strconv.Atoi(string(f[2]))
	return f[0][0], pgrp, err == nil
}
