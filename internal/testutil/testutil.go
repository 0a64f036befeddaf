// Package testutil holds what the tests of several packages share: a
// settable clock, concurrent writers for a test, a buffer safe for
// concurrent writers, self-signed TLS
// certificates, and building the binaries under test.
package testutil

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// WriteWhile calls write with rounds 0, 1, … on a goroutine of its own
// until the stop function it returns is called, which waits for it: the
// writers of a test that reads concurrently. An error of write fails the
// test and ends the writes.
func WriteWhile(t testing.TB, write func(round int) error) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for round := 0; ; round++ {
			select {
			case <-done:
				return
			default:
			}
			if err := write(round); err != nil {
				t.Error(err)
				return
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// Clock is a clock the test moves instead of sleeping. Its Now is what
// the code under test takes as its clock.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock standing at t.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// Advance moves the clock by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// SyncBuffer collects output (logs, a process's stdout) while the test reads it.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// BuildBinary builds the main package pkg into dir and returns the binary's
// path. It builds with the race detector when the tests run with it, so a
// data race in the binary under test fails the test too (exit code 66).
func BuildBinary(dir, pkg string) (string, error) {
	bin := filepath.Join(dir, path.Base(pkg))
	args := []string{"build", "-o", bin}
	if RaceEnabled {
		args = append(args, "-race")
	}
	// go test puts its own GOROOT/bin first on PATH, so this is the same go.
	out, err := exec.Command("go", append(args, pkg)...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin, nil
}

// MainWithBinary is a TestMain body for packages that test a binary: it
// builds pkg into a temporary directory, sets *bin to its path, runs the
// tests and removes the directory. It returns the code for os.Exit.
func MainWithBinary(m *testing.M, pkg string, bin *string) int {
	dir, err := os.MkdirTemp("", "sentinel-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if *bin, err = BuildBinary(dir, pkg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// FreeAddr returns a loopback address whose port was free a moment ago and
// is handed out by no other FreeAddr call, in this process or another test
// process (go test runs packages at once), until this process ends.
//
// The port is taken below the kernel's ephemeral range: a port from that
// range, released and handed to a program a moment later, may meanwhile
// become the local port of some outgoing connection (a scrape, a webhook),
// and the program then fails to listen on it. And it is reserved (see
// reservePort): two tests that picked the same free port before either
// program listened on it made one of them fail to start.
func FreeAddr(t testing.TB) string {
	t.Helper()
	low := ephemeralLow()
	for range 100 {
		port := 10000 + rand.IntN(low-10000)
		if !reservePort(port) {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		addr := l.Addr().String()
		if err := l.Close(); err != nil {
			t.Fatalf("find a free port: %v", err)
		}
		return addr
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	return addr
}

// portLocks are the files whose locks reserve the ports FreeAddr handed
// out; kept open, so locked, until the process exits.
var portLocks struct {
	mu    sync.Mutex
	files []*os.File
}

// reservePort takes an exclusive lock on a file named after port in a
// directory every test process shares, and reports whether it got it: a
// lock held by another process, or by this one for an earlier call, means
// the port is spoken for. The kernel drops the locks when the process ends,
// however it ends. Where the directory cannot be used, every free port is
// taken as this call's, as before there were reservations.
func reservePort(port int) bool {
	dir := filepath.Join(os.TempDir(), "sentinel-test-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return true
	}
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return true
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return false
	}
	portLocks.mu.Lock()
	defer portLocks.mu.Unlock()
	portLocks.files = append(portLocks.files, f)
	return true
}

// ephemeralLow is the first port of the kernel's ephemeral range (32768 when
// it cannot be read, Linux's default).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	var low, high int
	if _, err := fmt.Sscan(string(b), &low, &high); err != nil || low <= 11000 {
		return 32768
	}
	return low
}
