// Package embedded is the ledger kept in files under one directory (sentinel's
// --storage.path), needing nothing installed. It is the default backend.
//
// Files, each written only by the sentinel holding the directory's lock:
//
//	LOCK             flock(2)ed while a sentinel uses the directory
//	token.key        the runtime-token signing key (checksummed)
//	ledger.state     the whole ledger at one revision (checksummed, versioned)
//	ledger.journal   every change after that revision, appended and fdatasynced
//	                 before Apply returns; concurrent Applies share one fsync
//	agents.snapshot  the hot state of the heartbeat store (SaveAgents)
//
// The state file is replaced atomically (temporary file, fsync, rename) by
// every SaveAgents (every snapshot interval, and soon after start) that
// finds changes in the journal, and whenever the journal outgrows
// CompactBytes; the journal is then emptied. Damage to the state file or the key, a missing or truncated
// journal next to a state file, or damage inside the journal followed by
// intact records is an error naming the file: sentinel refuses to start
// rather than forget acknowledged actions. Only a journal's torn tail, the
// unfinished last write of a crash and so never acknowledged, is dropped, with
// a warning.
package embedded

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentsentinel/sentinel/ledger"
	"github.com/agentsentinel/sentinel/storage"
)

// Files under the directory.
const (
	LockFile    = "LOCK"
	KeyFile     = "token.key"
	StateFile   = "ledger.state"
	JournalFile = "ledger.journal"
	AgentsFile  = "agents.snapshot"
	stateKind   = "ledger"
	agentsKind  = "agents"
	defaultKey  = 32
	// journalHeaderSize is the size of an empty journal.
	journalHeaderSize = 8
	opsPerRecord      = 2048
)

// CompactBytes is the journal size past which the state file is rewritten.
const CompactBytes = 16 << 20

// Options configure Open.
type Options struct {
	// KeySize is the size of the signing key created on a first start; 32
	// when 0.
	KeySize int
	// Logger discards when nil.
	Logger *slog.Logger
}

// Ledger is the embedded ledger.Ledger.
type Ledger struct {
	dir    string
	logger *slog.Logger
	*ledger.Core
	journal *storage.Journal
	lock    *os.File
	key     []byte

	agentsMu     sync.Mutex
	compactAsked atomic.Bool
	stop         chan struct{}
	stopped      chan struct{}
	closeOnce    sync.Once
	closeErr     error
}

var _ ledger.Ledger = (*Ledger)(nil)

// Open locks dir (creating it), verifies and loads the ledger in it, writes a
// fresh state file and returns the ledger ready for use. A second Open of the
// same directory, in this or another process, fails until Close.
func Open(dir string, o Options) (*Ledger, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.KeySize == 0 {
		o.KeySize = defaultKey
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open ledger in %s: %w", dir, err)
	}
	lock, err := lockDir(filepath.Join(dir, LockFile))
	if err != nil {
		return nil, err
	}
	l := &Ledger{dir: dir, logger: o.Logger, Core: ledger.NewCore(), lock: lock,
		stop: make(chan struct{}), stopped: make(chan struct{})}
	if err := l.open(o.KeySize); err != nil {
		if l.journal != nil {
			_ = l.journal.Close()
		}
		_ = lock.Close()
		return nil, err
	}
	go func() {
		defer close(l.stopped)
		l.Core.RunCommitter(l.stop, persister{l})
	}()
	return l, nil
}

func (l *Ledger) path(name string) string { return filepath.Join(l.dir, name) }

func exists(path string) (bool, int64, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, 0, nil
	}
	if err != nil {
		return false, 0, err
	}
	return true, fi.Size(), nil
}

func (l *Ledger) open(keySize int) error {
	statePath, journalPath, keyPath := l.path(StateFile), l.path(JournalFile), l.path(KeyFile)
	hasState, _, err := exists(statePath)
	if err != nil {
		return fmt.Errorf("open ledger: %w", err)
	}
	hasJournal, journalSize, err := exists(journalPath)
	if err != nil {
		return fmt.Errorf("open ledger: %w", err)
	}
	hasKey, _, err := exists(keyPath)
	if err != nil {
		return fmt.Errorf("open ledger: %w", err)
	}
	// The journal is created (header only) before the first state file and
	// only ever replaced by rename afterwards, so next to a state file it is
	// whole: missing or shorter than its header, it lost acknowledged
	// changes.
	if hasState && (!hasJournal || journalSize < journalHeaderSize) {
		what := "missing"
		if hasJournal {
			what = fmt.Sprintf("truncated to %d bytes", journalSize)
		}
		return fmt.Errorf("%w: ledger journal %s is %s next to the state file %s: acknowledged changes may be lost; restore the file from a backup",
			ledger.ErrCorrupt, journalPath, what, statePath)
	}
	if !hasState && hasJournal && journalSize > journalHeaderSize {
		return fmt.Errorf("%w: ledger state file %s is missing next to the journal %s: restore the file from a backup",
			ledger.ErrCorrupt, statePath, journalPath)
	}
	fresh := !hasState && !hasJournal
	legacy := false
	if fresh {
		if legacy, err = l.migrateLegacy(); err != nil {
			return err
		}
	}
	if !hasKey && !fresh {
		return fmt.Errorf("%w: signing key %s is missing next to the ledger in %s: every runtime token issued would be refused; restore the file from a backup",
			ledger.ErrCorrupt, keyPath, l.dir)
	}
	// The key is made before anything else on a first start, so a ledger is
	// never without one.
	if l.key, err = storage.ReadOrCreateKey(keyPath, keySize); err != nil {
		return corrupt(err)
	}
	if hasState {
		err := storage.ReadSnapshot(statePath, stateKind, func(r io.Reader) error {
			_, err := l.Core.DecodeSnapshot(r)
			return err
		})
		if err != nil {
			return corrupt(fmt.Errorf("load ledger state %s: %w", statePath, err))
		}
	}
	journal, recs, err := storage.OpenJournal(journalPath, l.logger)
	if err != nil {
		return corrupt(err)
	}
	l.journal = journal
	changes, err := decodeRecords(recs)
	if err != nil {
		return fmt.Errorf("%w: ledger journal %s: %v", ledger.ErrCorrupt, journalPath, err)
	}
	if err := l.Core.Catch(changes); err != nil {
		return fmt.Errorf("ledger journal %s does not continue the state file %s: %w", journalPath, statePath, err)
	}
	// A first start writes its state file at once (see above why a state
	// file needs its journal and the other way round). Otherwise the start
	// changes nothing (but a torn tail): the journal is compacted by the
	// first SaveAgents, soon after start, once the caller has verified the
	// rest of what it restores.
	if !hasState {
		if err := l.compact(l.Core.EncodeSnapshot); err != nil {
			return err
		}
	}
	if legacy {
		// Only now that the state file holds it; were the rename lost in
		// a crash, a start next to a state file ignores the legacy file.
		if err := os.Rename(l.path(LegacyJournalFile), l.path(LegacyJournalFile)+".migrated"); err != nil {
			return fmt.Errorf("retire the legacy journal: %w", err)
		}
	}
	l.logger.Info("ledger opened", "dir", l.dir, "revision", l.Core.Revision(), "journal_changes", len(changes))
	return nil
}

func corrupt(err error) error {
	if errors.Is(err, storage.ErrCorrupt) {
		return fmt.Errorf("%w: %w", ledger.ErrCorrupt, err)
	}
	return err
}

// compact writes the state file with encode and empties the journal. A
// crash in between leaves a journal whose changes the state already holds;
// they are skipped when it is read.
func (l *Ledger) compact(encode func(io.Writer) (ledger.Revision, error)) error {
	path := l.path(StateFile)
	err := storage.WriteSnapshot(path, stateKind, func(w io.Writer) error {
		_, err := encode(w)
		return err
	})
	if err != nil {
		return fmt.Errorf("write ledger state: %w", err)
	}
	if err := l.journal.Rewrite(nil); err != nil {
		return fmt.Errorf("compact ledger journal: %w", err)
	}
	return nil
}

// moreMark opens a journal record that a later record of the same change
// continues. It is written only in front of a record, so a record is marked
// exactly when it starts with it.
var moreMark = []byte(`{"more":true,`)

// encodeChange returns the journal records of c: one record per
// opsPerRecord ops, all but the last marked with moreMark. A journal batch is
// atomic, so a change is always read whole.
func encodeChange(c ledger.Change) ([][]byte, error) {
	var recs [][]byte
	for start := 0; ; start += opsPerRecord {
		end := min(start+opsPerRecord, len(c.Ops))
		b, err := ledger.EncodeChange(ledger.Change{Revision: c.Revision, Ops: c.Ops[start:end]})
		if err != nil {
			return nil, err
		}
		if end < len(c.Ops) {
			b = append(bytes.Clone(moreMark), b[1:]...)
		}
		recs = append(recs, b)
		if end == len(c.Ops) {
			return recs, nil
		}
	}
}

func decodeRecords(recs [][]byte) ([]ledger.Change, error) {
	var out []ledger.Change
	var cur *ledger.Change
	for i, rec := range recs {
		c, err := ledger.DecodeChange(rec)
		if err != nil {
			return nil, fmt.Errorf("record %d: %w", i, err)
		}
		// The prefix is the mark: parsing the record again for it would
		// double the replay of a large change.
		more := bytes.HasPrefix(rec, moreMark)
		if cur != nil {
			if c.Revision != cur.Revision {
				return nil, fmt.Errorf("record %d: change %d is incomplete", i, cur.Revision)
			}
			cur.Ops = append(cur.Ops, c.Ops...)
		} else {
			cur = &c
		}
		if !more {
			out = append(out, *cur)
			cur = nil
		}
	}
	if cur != nil {
		return nil, fmt.Errorf("change %d is incomplete", cur.Revision)
	}
	return out, nil
}

type persister struct{ l *Ledger }

func (persister) Prepare(context.Context, *ledger.Txn) error { return nil }

func (p persister) Persist(_ context.Context, t *ledger.Txn, changes []ledger.Change) error {
	if err := p.append(changes); err != nil {
		return err
	}
	if len(changes) > 0 && p.l.journal.Size() > CompactBytes {
		// Compact in a batch of its own, after this one is answered: the
		// callers waiting for these changes need not wait for the rewrite.
		p.l.compactAsked.Store(true)
		go func() { _, _ = p.l.Core.Apply(context.Background()) }()
		return nil
	}
	if p.l.compactAsked.Swap(false) {
		if err := p.l.compact(t.EncodeSnapshot); err != nil {
			// The changes are durable in the journal; a later compaction
			// tries again.
			p.l.logger.Error("compacting the ledger failed", "dir", p.l.dir, "err", err)
		}
	}
	return nil
}

func (p persister) append(changes []ledger.Change) error {
	if len(changes) == 0 {
		return nil
	}
	var recs [][]byte
	for _, c := range changes {
		r, err := encodeChange(c)
		if err != nil {
			return err
		}
		recs = append(recs, r...)
	}
	if err := p.l.journal.Append(recs...); err != nil {
		return fmt.Errorf("%w: %w", ledger.ErrUnavailable, err)
	}
	return nil
}

// SigningKey implements ledger.Ledger.
func (l *Ledger) SigningKey(_ context.Context, size int) ([]byte, error) {
	if len(l.key) != size {
		return nil, fmt.Errorf("signing key %s has %d bytes, want %d", l.path(KeyFile), len(l.key), size)
	}
	return bytes.Clone(l.key), nil
}

// SaveAgents implements ledger.Ledger: the hot state goes to agents.snapshot.
// A journal with changes is then compacted into the state file.
func (l *Ledger) SaveAgents(ctx context.Context, _ time.Time, write func(io.Writer) error) error {
	l.agentsMu.Lock()
	err := storage.WriteSnapshot(l.path(AgentsFile), agentsKind, write)
	l.agentsMu.Unlock()
	if err != nil {
		return err
	}
	if l.journal.Size() > journalHeaderSize {
		l.compactAsked.Store(true)
		if _, err := l.Core.Apply(ctx); err != nil && !errors.Is(err, ledger.ErrClosed) {
			return fmt.Errorf("compact ledger: %w", err)
		}
	}
	return nil
}

// LoadAgents implements ledger.Ledger. The embedded ledger has one replica,
// named "", and does not record the time a state was taken (the heartbeat
// store's encoding carries it).
func (l *Ledger) LoadAgents(_ context.Context, read func(string, time.Time, io.Reader) error) error {
	l.agentsMu.Lock()
	defer l.agentsMu.Unlock()
	path := l.path(AgentsFile)
	err := storage.ReadSnapshot(path, agentsKind, func(r io.Reader) error { return read("", time.Time{}, r) })
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return corrupt(fmt.Errorf("load agents from %s: %w", path, err))
	}
	return nil
}

// Healthy implements ledger.Ledger.
func (l *Ledger) Healthy() error {
	if err := l.journal.Healthy(); err != nil {
		if errors.Is(err, storage.ErrJournalClosed) {
			return ledger.ErrClosed
		}
		return fmt.Errorf("%w: %w", ledger.ErrUnavailable, err)
	}
	return nil
}

// Close stops the committer, closes the journal and releases the lock.
func (l *Ledger) Close() error {
	l.closeOnce.Do(func() {
		close(l.stop)
		<-l.stopped
		l.closeErr = l.journal.Close()
		if err := l.lock.Close(); err != nil && l.closeErr == nil {
			l.closeErr = err
		}
	})
	return l.closeErr
}

// Journal returns the journal, for its metrics.
func (l *Ledger) Journal() *storage.Journal { return l.journal }

// Dir returns the ledger's directory.
func (l *Ledger) Dir() string { return l.dir }
