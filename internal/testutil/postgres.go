package testutil

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// A throw-away PostgreSQL cluster, started once per test binary by the first
// PostgresDSN and removed by StopPostgres (call it from TestMain through
// MainWithPostgres). It runs as an unprivileged user when the tests run as
// root (postgres refuses root), listens on a free loopback port and a socket
// in its own directory, and dies with the test binary (parent-death signal).

var pg struct {
	once    sync.Once
	err     error
	dir     string
	port    int
	cmd     *exec.Cmd
	exited  chan struct{}
	next    atomic.Int64
	stopped atomic.Bool
}

// unprivileged is the user the cluster runs as when the tests run as root.
const unprivileged = 65534 // nobody

// postgresBin finds a PostgreSQL server binary: Debian keeps them in
// /usr/lib/postgresql/<version>/bin, off PATH.
func postgresBin(name string) (string, error) {
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	if len(matches) > 0 {
		return matches[len(matches)-1], nil
	}
	return exec.LookPath(name)
}

// MainWithPostgres is a TestMain body for packages that use PostgresDSN: it
// runs the tests and then stops and removes the cluster.
func MainWithPostgres(m *testing.M) int {
	code := m.Run()
	StopPostgres()
	return code
}

// PostgresAvailable reports whether PostgreSQL's server binaries are
// installed.
func PostgresAvailable() bool {
	_, err := postgresBin("initdb")
	return err == nil
}

// RequirePostgres skips t when PostgreSQL is not installed, and fails it
// instead under CI=true: a test that needs a tool never passes by skipping
// there.
func RequirePostgres(t testing.TB) {
	t.Helper()
	if PostgresAvailable() {
		return
	}
	msg := "PostgreSQL is not installed (Debian: apt-get install postgresql; make test-deps installs it)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// PostgresDSN returns the DSN of a new, empty database of the shared
// cluster, dropped when t ends. The cluster starts on first use.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	RequirePostgres(t)
	name := fmt.Sprintf("sentinel_test_%d_%d", os.Getpid(), pg.next.Add(1))
	dsn, err := NewPostgresDatabase(name)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() {
		if pg.stopped.Load() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if conn, err := pgx.Connect(ctx, AdminDSN("postgres")); err == nil {
			_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			_ = conn.Close(ctx)
		}
	})
	return dsn
}

// NewPostgresDatabase creates database name on the shared cluster, starting
// the cluster on first use, and returns its DSN. Outside tests (the
// benchmark), call StopPostgres when done.
func NewPostgresDatabase(name string) (string, error) {
	pg.once.Do(func() { pg.err = startPostgres() })
	if pg.err != nil {
		return "", fmt.Errorf("start PostgreSQL: %w", pg.err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, AdminDSN("postgres"))
	if err != nil {
		return "", fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return AdminDSN(name), nil
}

// PostgresPID is the shared cluster's server process (0 before it started).
func PostgresPID() int {
	if pg.cmd == nil || pg.cmd.Process == nil {
		return 0
	}
	return pg.cmd.Process.Pid
}

// AdminDSN is the DSN of database db on the shared cluster, as its
// superuser. PostgresDSN must have started the cluster.
func AdminDSN(db string) string {
	return fmt.Sprintf("postgres://sentinel@127.0.0.1:%d/%s?sslmode=disable", pg.port, db)
}

// PostgresPort is the shared cluster's port (0 before it started).
func PostgresPort() int { return pg.port }

func startPostgres() error {
	initdb, err := postgresBin("initdb")
	if err != nil {
		return err
	}
	postgres, err := postgresBin("postgres")
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "sentinel-pg-")
	if err != nil {
		return err
	}
	pg.dir = dir
	cred := (*syscall.Credential)(nil)
	if os.Geteuid() == 0 {
		cred = &syscall.Credential{Uid: unprivileged, Gid: unprivileged}
		if err := os.Chown(dir, unprivileged, unprivileged); err != nil {
			return err
		}
	}
	data := filepath.Join(dir, "data")
	init := exec.Command(initdb, "-D", data, "-U", "sentinel", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C")
	init.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	init.Dir = dir
	if out, err := init.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %v\n%s", err, out)
	}
	for attempt := 0; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		err = runPostgres(postgres, data, dir, port, cred)
		if err == nil || attempt == 3 {
			return err
		}
	}
}

func freePort() (int, error) {
	addr := FreeAddr(nopTB{})
	_, p, _ := strings.Cut(addr, ":")
	return strconv.Atoi(p)
}

// runPostgres starts the server and waits until it accepts connections.
func runPostgres(bin, data, dir string, port int, cred *syscall.Credential) error {
	log, err := os.Create(filepath.Join(dir, "postgres.log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, "-D", data, "-p", strconv.Itoa(port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200",
		"-c", "shared_buffers=32MB", "-c", "logging_collector=off")
	cmd.Stdout, cmd.Stderr = log, log
	// SIGQUIT is PostgreSQL's immediate shutdown: a test binary that dies
	// does not leave a server behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	pg.cmd, pg.port, pg.exited = cmd, port, make(chan struct{})
	go func() { _ = cmd.Wait(); close(pg.exited) }()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-pg.exited:
			b, _ := os.ReadFile(log.Name())
			return fmt.Errorf("postgres exited at start:\n%s", b)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, AdminDSN("postgres"))
		cancel()
		if err == nil {
			_ = conn.Close(context.Background())
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	return errors.New("postgres did not accept connections within 60s")
}

// StopPostgres stops the shared cluster, if it runs, and removes it.
func StopPostgres() {
	if pg.cmd == nil || !pg.stopped.CompareAndSwap(false, true) {
		return
	}
	_ = pg.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-pg.exited:
	case <-time.After(30 * time.Second):
		_ = pg.cmd.Process.Kill()
		<-pg.exited
	}
	_ = os.RemoveAll(pg.dir)
}

// PausePostgres stops the shared cluster's server (fast shutdown) without
// removing it, so that a test sees PostgreSQL unreachable; ResumePostgres
// starts it again on the same port.
func PausePostgres(t testing.TB) {
	t.Helper()
	_ = pg.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-pg.exited:
	case <-time.After(60 * time.Second):
		t.Fatal("postgres did not stop within 60s")
	}
}

// ResumePostgres restarts the server PausePostgres stopped.
func ResumePostgres(t testing.TB) {
	t.Helper()
	postgres, err := postgresBin("postgres")
	if err != nil {
		t.Fatal(err)
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		cred = &syscall.Credential{Uid: unprivileged, Gid: unprivileged}
	}
	if err := runPostgres(postgres, filepath.Join(pg.dir, "data"), pg.dir, pg.port, cred); err != nil {
		t.Fatal(err)
	}
}

// nopTB lets FreeAddr run outside a test.
type nopTB struct{ testing.TB }

func (nopTB) Helper()               {}
func (nopTB) Fatalf(string, ...any) { panic("no free port") }
