// Package postgres is the ledger in a PostgreSQL database shared by any
// number of sentinel replicas (storage.postgres).
//
// The ledger's changes are rows of ledger_changes, numbered by revision; a
// commit locks the single row of ledger_head (SELECT … FOR UPDATE), catches
// up with the changes other replicas committed, resolves its Applies against
// that state, inserts its changes, moves the head and NOTIFYs the other
// replicas, all in one transaction. Every replica replays the same changes in
// the same order into the same state machine (ledger.Core), so conditions
// (revoke if not revoked, announce-if-changed, alert key once), command and
// event sequence numbers and outbox leases hold across replicas: the head
// lock gives one total order, which is also why outbox claims need no SKIP
// LOCKED of their own — a claim is a change like any other, and two replicas
// cannot lease the same event.
//
// Replicas follow each other with LISTEN/NOTIFY as a doorbell and polling
// every PollInterval, so a change arrives within a second even when a
// notification is lost. The schema is migrated at start by versioned
// migrations embedded in the binary; a schema newer than the binary is an
// error. The signing key, the ledger snapshot that bounds replay, and each
// replica's hot heartbeat state are tables too.
//
// PostgreSQL unreachable: Apply fails with ledger.ErrUnavailable within
// CommitTimeout and changes nothing, reads are answered from the replica's
// state as of the last change it saw, Healthy reports the failure, and the
// connection pool reconnects by itself.
package postgres

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/agentsentinel/sentinel/ledger"
)

const (
	notifyChannel = "ledger_changes"
	// DefaultPollInterval bounds how late a change seen only by polling
	// arrives.
	DefaultPollInterval = 500 * time.Millisecond
	// DefaultCommitTimeout bounds one commit, so that an unreachable
	// database answers 503 quickly rather than hanging admin requests.
	DefaultCommitTimeout = 5 * time.Second
	// keepChanges is how many changes before the snapshot stay in
	// ledger_changes, for replicas a little behind.
	keepChanges = 10000
	// agentStateRetention is how long a replica's hot state is kept after
	// its last write (a replica gone for good).
	agentStateRetention = 24 * time.Hour
	pollBatch           = 1000
)

// Options configure Open.
type Options struct {
	// Replica names this replica's hot state (SaveAgents); unique among the
	// replicas sharing the database, stable across its restarts.
	Replica string
	// Logger discards when nil.
	Logger *slog.Logger
	// PollInterval is DefaultPollInterval when 0.
	PollInterval time.Duration
	// CommitTimeout is DefaultCommitTimeout when 0.
	CommitTimeout time.Duration
	// KeySize is the size of the signing key a first Open creates; 32 when
	// 0.
	KeySize int
}

// Ledger is the PostgreSQL ledger.Ledger.
type Ledger struct {
	pool *pgxpool.Pool
	cfg  *pgxpool.Config
	*ledger.Core
	o      Options
	logger *slog.Logger

	tx pgx.Tx // the committer's transaction, between Prepare and Persist

	mu            sync.Mutex
	snapshotRev   ledger.Revision
	lastPruneTime time.Time

	stop      chan struct{}
	done      sync.WaitGroup
	closeOnce sync.Once
}

var _ ledger.Ledger = (*Ledger)(nil)

// Open connects to the database of dsn, migrates its schema, loads the
// ledger and starts following the other replicas.
func Open(ctx context.Context, dsn string, o Options) (*Ledger, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.CommitTimeout <= 0 {
		o.CommitTimeout = DefaultCommitTimeout
	}
	if o.KeySize <= 0 {
		o.KeySize = 32
	}
	if o.Replica == "" {
		return nil, errors.New("open PostgreSQL ledger: a replica name is required")
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// The parser's message may quote parts of the DSN: a secret.
		return nil, errors.New("storage.postgres.dsn is not a valid PostgreSQL connection string")
	}
	cfg.MaxConns = 8
	cfg.ConnConfig.ConnectTimeout = o.CommitTimeout
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open PostgreSQL ledger: %w", describe(err))
	}
	l := &Ledger{pool: pool, cfg: cfg, Core: ledger.NewCore(), o: o, logger: o.Logger, stop: make(chan struct{})}
	if err := l.load(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	l.done.Add(2)
	go func() { defer l.done.Done(); l.Core.RunCommitter(l.stop, persister{l}) }()
	go func() { defer l.done.Done(); l.follow() }()
	return l, nil
}

func (l *Ledger) load(ctx context.Context) error {
	if err := migrate(ctx, l.pool, l.logger); err != nil {
		return fmt.Errorf("open PostgreSQL ledger: %w", describe(err))
	}
	// The key comes first on a fresh database, so that ledger state never
	// exists without one.
	if _, err := l.SigningKey(ctx, l.o.KeySize); err != nil {
		return err
	}
	rev, err := l.loadSnapshot(ctx)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return fmt.Errorf("load ledger snapshot: %w", err)
	default:
		l.snapshotRev = rev
	}
	for {
		n, err := l.poll(ctx, l.pool)
		if err != nil {
			return err
		}
		if n < pollBatch {
			break
		}
	}
	l.logger.Info("ledger opened", "backend", "postgres", "revision", l.Core.Revision(), "replica", l.o.Replica)
	return nil
}

// querier is a pool, a connection or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// readChanges returns the changes after rev, at most pollBatch.
func readChanges(ctx context.Context, q querier, after ledger.Revision, upto int64) ([]ledger.Change, error) {
	rows, err := q.Query(ctx, "SELECT revision, change FROM ledger_changes WHERE revision > $1 AND revision <= $2 ORDER BY revision LIMIT $3",
		int64(after), upto, pollBatch)
	if err != nil {
		return nil, describe(err)
	}
	defer rows.Close()
	var out []ledger.Change
	for rows.Next() {
		var rev int64
		var b []byte
		if err := rows.Scan(&rev, &b); err != nil {
			return nil, describe(err)
		}
		c, err := ledger.DecodeChange(b)
		if err != nil || c.Revision != ledger.Revision(rev) {
			return nil, fmt.Errorf("%w: table ledger_changes, revision %d: %v", ledger.ErrCorrupt, rev, err)
		}
		out = append(out, c)
	}
	return out, describe(rows.Err())
}

// poll brings the core up to date with the database and returns how many
// changes it applied. A gap (changes pruned while this replica was behind)
// reloads the snapshot.
func (l *Ledger) poll(ctx context.Context, q querier) (int, error) {
	cur := l.Core.Revision()
	changes, err := readChanges(ctx, q, cur, 1<<62)
	if err != nil {
		return 0, err
	}
	if len(changes) > 0 && changes[0].Revision != cur+1 {
		l.logger.Warn("ledger changes pruned while this replica was behind; reloading the snapshot", "revision", cur)
		if _, err := l.loadSnapshot(ctx); err != nil {
			return 0, fmt.Errorf("reload ledger snapshot: %w", err)
		}
		return 1, nil
	}
	return len(changes), l.Core.Catch(changes)
}

// loadSnapshot replaces the core's state with the ledger snapshot and
// returns its revision; pgx.ErrNoRows when there is none yet.
func (l *Ledger) loadSnapshot(ctx context.Context) (ledger.Revision, error) {
	var state []byte
	if err := l.pool.QueryRow(ctx, "SELECT state FROM ledger_snapshot").Scan(&state); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return 0, err
		}
		return 0, describe(err)
	}
	rev, err := l.Core.DecodeSnapshot(bytes.NewReader(state))
	if err != nil {
		return 0, fmt.Errorf("%w: table ledger_snapshot: %v", ledger.ErrCorrupt, err)
	}
	return rev, nil
}

// follow applies other replicas' changes as they come: woken by NOTIFY,
// polling every PollInterval regardless.
func (l *Ledger) follow() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-l.stop; cancel() }()
	backoff := l.o.PollInterval
	for ctx.Err() == nil {
		err := l.listen(ctx)
		if ctx.Err() != nil {
			return
		}
		l.Core.SetHealth(fmt.Errorf("%w: %w", ledger.ErrUnavailable, err))
		l.logger.Warn("following the PostgreSQL ledger failed; retrying", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (l *Ledger) listen(ctx context.Context) error {
	connCtx, cancel := context.WithTimeout(ctx, l.o.CommitTimeout)
	conn, err := pgx.ConnectConfig(connCtx, l.cfg.ConnConfig)
	cancel()
	if err != nil {
		return describe(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return describe(err)
	}
	for {
		pollCtx, cancel := context.WithTimeout(ctx, l.o.CommitTimeout)
		n, err := l.poll(pollCtx, conn)
		cancel()
		if err != nil {
			return err
		}
		l.Core.SetHealth(nil)
		if n >= pollBatch {
			continue
		}
		waitCtx, cancel := context.WithTimeout(ctx, l.o.PollInterval)
		_, err = conn.WaitForNotification(waitCtx)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) && !pgconn.Timeout(err) {
			return describe(err)
		}
	}
}

type persister struct{ l *Ledger }

func (p persister) Prepare(_ context.Context, t *ledger.Txn) error {
	l := p.l
	ctx, cancel := context.WithTimeout(context.Background(), l.o.CommitTimeout)
	defer cancel()
	tx, err := l.pool.Begin(ctx)
	if err != nil {
		err = fmt.Errorf("%w: %w", ledger.ErrUnavailable, describe(err))
		l.Core.SetHealth(err)
		return err
	}
	fail := func(err error) error {
		_ = tx.Rollback(context.Background())
		l.Core.SetHealth(err)
		return err
	}
	var head int64
	if err := tx.QueryRow(ctx, "SELECT revision FROM ledger_head FOR UPDATE").Scan(&head); err != nil {
		return fail(fmt.Errorf("%w: lock the ledger: %w", ledger.ErrUnavailable, describe(err)))
	}
	for ledger.Revision(head) > t.Revision() {
		changes, err := readChanges(ctx, tx, t.Revision(), head)
		if err != nil {
			return fail(fmt.Errorf("%w: %w", ledger.ErrUnavailable, err))
		}
		if len(changes) == 0 || changes[0].Revision != t.Revision()+1 {
			// Pruned while this replica was behind: let the follower
			// reload the snapshot, and fail this batch.
			return fail(fmt.Errorf("%w: this replica is behind the ledger; retry", ledger.ErrUnavailable))
		}
		if err := t.Catch(changes); err != nil {
			return fail(err)
		}
	}
	if ledger.Revision(head) < t.Revision() {
		return fail(fmt.Errorf("%w: the database's ledger is at revision %d, behind the %d this replica has seen (restored from an older backup?)",
			ledger.ErrCorrupt, head, t.Revision()))
	}
	l.tx = tx
	return nil
}

func (p persister) Persist(_ context.Context, _ *ledger.Txn, changes []ledger.Change) error {
	l := p.l
	tx := l.tx
	l.tx = nil
	if len(changes) == 0 {
		return describe(tx.Rollback(context.Background()))
	}
	batch := &pgx.Batch{}
	size := 0
	for _, c := range changes {
		b, err := ledger.EncodeChange(c)
		if err != nil {
			_ = tx.Rollback(context.Background())
			return err
		}
		size += len(b)
		batch.Queue("INSERT INTO ledger_changes (revision, change) VALUES ($1, $2)", int64(c.Revision), b)
	}
	// A revoke-all of a large fleet is tens of MB: give it time to travel
	// (a second per 4 MB) on top of the timeout that detects a dead server.
	ctx, cancel := context.WithTimeout(context.Background(), l.o.CommitTimeout+time.Duration(size/(4<<20))*time.Second)
	defer cancel()
	last := int64(changes[len(changes)-1].Revision)
	batch.Queue("UPDATE ledger_head SET revision = $1", last)
	batch.Queue("SELECT pg_notify($1, $2)", notifyChannel, strconv.FormatInt(last, 10))
	if err := tx.SendBatch(ctx, batch).Close(); err != nil {
		_ = tx.Rollback(context.Background())
		err = fmt.Errorf("%w: %w", ledger.ErrUnavailable, describe(err))
		l.Core.SetHealth(err)
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		// The commit may have reached the database: if it did, the
		// follower brings it back from there.
		err = fmt.Errorf("%w: %w", ledger.ErrUnknownOutcome, describe(err))
		l.Core.SetHealth(err)
		return err
	}
	l.Core.SetHealth(nil)
	return nil
}

// describe turns a driver error into one that names no configuration value:
// connection errors of pgx quote the host, user and database.
func describe(err error) error {
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	var netErr net.Error
	var connErr *pgconn.ConnectError
	switch {
	case errors.As(err, &pgErr):
		switch pgErr.Code[:2] {
		case "28", "3D": // authentication, unknown database: they name them
			return fmt.Errorf("PostgreSQL refused the connection (SQLSTATE %s)", pgErr.Code)
		}
		return fmt.Errorf("PostgreSQL error SQLSTATE %s: %s", pgErr.Code, pgErr.Message)
	case errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err):
		return errors.New("PostgreSQL did not answer in time")
	case errors.As(err, &connErr), errors.As(err, &netErr):
		return errors.New("cannot reach PostgreSQL")
	}
	var parseErr *pgconn.ParseConfigError
	if errors.As(err, &parseErr) {
		return errors.New("invalid PostgreSQL connection settings")
	}
	// The ledger's own errors (a schema too new, damaged rows) name no
	// configuration value.
	return err
}

// SigningKey implements ledger.Ledger: the key lives in table signing_key,
// created by the first replica that asks for it.
func (l *Ledger) SigningKey(ctx context.Context, size int) ([]byte, error) {
	var key []byte
	err := l.pool.QueryRow(ctx, "SELECT key FROM signing_key").Scan(&key)
	if errors.Is(err, pgx.ErrNoRows) {
		var head int64
		if err := l.pool.QueryRow(ctx, "SELECT revision FROM ledger_head").Scan(&head); err != nil {
			return nil, fmt.Errorf("signing key: %w", describe(err))
		}
		if head > 0 {
			return nil, fmt.Errorf("%w: the signing key is missing from table signing_key of a database that holds ledger state: every runtime token issued would be refused; restore it from a backup",
				ledger.ErrCorrupt)
		}
		fresh := make([]byte, size)
		if _, err := rand.Read(fresh); err != nil {
			return nil, fmt.Errorf("generate signing key: %w", err)
		}
		// Replicas starting together: the first insert wins, every one
		// reads it back.
		if _, err := l.pool.Exec(ctx, "INSERT INTO signing_key (key) VALUES ($1) ON CONFLICT DO NOTHING", fresh); err != nil {
			return nil, fmt.Errorf("signing key: %w", describe(err))
		}
		err = l.pool.QueryRow(ctx, "SELECT key FROM signing_key").Scan(&key)
	}
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", describe(err))
	}
	if len(key) != size {
		return nil, fmt.Errorf("%w: the signing key in table signing_key has %d bytes, want %d", ledger.ErrCorrupt, len(key), size)
	}
	return key, nil
}

// SaveAgents implements ledger.Ledger: this replica's row of
// agent_snapshots. It also writes the ledger snapshot and prunes old
// changes, old replicas' rows and, once an hour, expired keys.
func (l *Ledger) SaveAgents(ctx context.Context, takenAt time.Time, write func(io.Writer) error) error {
	var buf bytes.Buffer
	if err := write(&buf); err != nil {
		return err
	}
	_, err := l.pool.Exec(ctx, `INSERT INTO agent_snapshots (replica, taken_at, state) VALUES ($1, $2, $3)
		ON CONFLICT (replica) DO UPDATE SET taken_at = excluded.taken_at, state = excluded.state`,
		l.o.Replica, takenAt, buf.Bytes())
	if err != nil {
		return fmt.Errorf("save agents: %w", describe(err))
	}
	if _, err := l.pool.Exec(ctx, "DELETE FROM agent_snapshots WHERE taken_at < $1", takenAt.Add(-agentStateRetention)); err != nil {
		return fmt.Errorf("prune agent states: %w", describe(err))
	}
	return l.compact(ctx, takenAt)
}

// compact writes the ledger snapshot at this replica's revision (unless a
// newer one is there) and prunes the changes it makes unneeded.
func (l *Ledger) compact(ctx context.Context, now time.Time) error {
	l.mu.Lock()
	prune := now.Sub(l.lastPruneTime) >= time.Hour
	if prune {
		l.lastPruneTime = now
	}
	l.mu.Unlock()
	if prune {
		if _, err := l.Core.Apply(ctx, ledger.Prune{At: now}); err != nil {
			return fmt.Errorf("prune the ledger: %w", err)
		}
	}
	// Decide before encoding: the whole state is encoded only when a
	// snapshot is due, not every snapshot interval. The revision only
	// grows, so the encoded one is due too.
	cur := l.Core.Revision()
	l.mu.Lock()
	due := cur > l.snapshotRev+keepChanges/10
	l.mu.Unlock()
	if !due {
		return nil
	}
	var buf bytes.Buffer
	rev, err := l.Core.EncodeSnapshot(&buf)
	if err != nil {
		return err
	}
	_, err = l.pool.Exec(ctx, `INSERT INTO ledger_snapshot (revision, state) VALUES ($1, $2)
		ON CONFLICT (id) DO UPDATE SET revision = excluded.revision, state = excluded.state
		WHERE ledger_snapshot.revision < excluded.revision`, int64(rev), buf.Bytes())
	if err != nil {
		return fmt.Errorf("write ledger snapshot: %w", describe(err))
	}
	if _, err := l.pool.Exec(ctx, "DELETE FROM ledger_changes WHERE revision <= (SELECT revision FROM ledger_snapshot) - $1", keepChanges); err != nil {
		return fmt.Errorf("prune ledger changes: %w", describe(err))
	}
	l.mu.Lock()
	l.snapshotRev = rev
	l.mu.Unlock()
	return nil
}

// LoadAgents implements ledger.Ledger: every replica's hot state.
func (l *Ledger) LoadAgents(ctx context.Context, read func(string, time.Time, io.Reader) error) error {
	rows, err := l.pool.Query(ctx, "SELECT replica, taken_at, state FROM agent_snapshots ORDER BY taken_at")
	if err != nil {
		return fmt.Errorf("load agents: %w", describe(err))
	}
	type row struct {
		replica string
		at      time.Time
		state   []byte
	}
	var all []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.replica, &r.at, &r.state); err != nil {
			rows.Close()
			return fmt.Errorf("load agents: %w", describe(err))
		}
		all = append(all, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load agents: %w", describe(err))
	}
	for _, r := range all {
		if err := read(r.replica, r.at.UTC(), bytes.NewReader(r.state)); err != nil {
			return fmt.Errorf("agents of replica %s in table agent_snapshots: %w", r.replica, err)
		}
	}
	return nil
}

// Close stops following, fails later Applies and closes the connections.
func (l *Ledger) Close() error {
	l.closeOnce.Do(func() {
		close(l.stop)
		l.done.Wait()
		l.pool.Close()
	})
	return nil
}
