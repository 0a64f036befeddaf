package storage

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// Journal file format, all integers little-endian:
//
//	header  "SNTJ" | version u32 (1)
//	record  word u32 | crc u32 | payload
//
// word holds the payload length in its low 31 bits; its top bit marks the
// last record of a batch (the records of one write call). crc is the CRC-32C
// of word's four bytes followed by the payload, so a damaged length is caught
// as surely as a damaged payload. A batch without its end marker was never
// acknowledged, so replay drops it whole: Append(a, b) is all or nothing.
const (
	journalMagic      = "SNTJ"
	journalVersion    = 1
	journalHeaderSize = 8
	recordHeaderSize  = 8
	endOfBatch        = uint32(1) << 31
)

// MaxRecordSize bounds one journal record. Besides keeping a damaged length
// from allocating gigabytes, it makes any four bytes of printable text
// (≥ 0x20202020) an implausible length, so looking for intact records inside
// the JSON of a damaged one never mistakes text for a record header.
const MaxRecordSize = 16 << 20

const (
	// asyncFlushDelay is how long an AppendAsync record may wait for company
	// before it is written on its own.
	asyncFlushDelay = 100 * time.Millisecond
	// asyncQueueLimit bounds the AppendAsync records waiting for the disk.
	asyncQueueLimit = 1 << 16
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Journal is an append-only log of opaque records in one file, for changes
// that must be on disk before the request that made them is answered.
//
// Ownership: the Journal owns its file from OpenJournal to Close and must be
// its only writer; the records handed to Append and Rewrite stay the caller's
// and are not retained after the call returns.
//
// Concurrency: all methods are safe for concurrent use. A single writer
// goroutine does all I/O: Appends that arrive while it waits for the disk are
// written together and share one fsync (group commit), so N concurrent
// requests cost about one fsync, not N. Records are written in the order their
// calls were queued.
//
// Failure: a failed fsync leaves the state of the page cache unknown, so the
// journal then refuses every further write (Healthy reports why) until it is
// reopened, which re-verifies the file.
type Journal struct {
	path   string
	dir    string
	logger *slog.Logger

	size    atomic.Int64
	records atomic.Uint64
	syncs   atomic.Uint64
	dropped atomic.Uint64

	mu         sync.Mutex
	queue      []*journalOp // FIFO of Appends, AppendAsyncs and Rewrites not yet taken by the writer
	waiting    int          // ops in queue whose caller waits (done != nil)
	async      int          // AppendAsync records in queue
	asyncLimit int
	asyncDelay time.Duration
	closing    bool
	err        error // sticky: set when the file can no longer be trusted

	wake     chan struct{} // capacity 1: "look at the queue"
	stopped  chan struct{} // closed when the writer has flushed and closed the file
	closeErr error         // written by the writer before stopped is closed

	// Owned by the writer goroutine once it runs.
	f   *os.File
	off int64 // end of the last durable batch; the next batch goes here
	buf []byte
}

type journalOp struct {
	recs    [][]byte
	rewrite bool
	done    chan error // nil for an AppendAsync record
}

// JournalStats are counters since OpenJournal, for metrics and tests.
type JournalStats struct {
	Records      uint64 // records made durable (Append, AppendAsync and Rewrite)
	Syncs        uint64 // fsyncs of journal data; Records/Syncs is the group-commit factor
	AsyncDropped uint64 // AppendAsync records dropped: queue full, too large, closed, or failed
}

// OpenJournal opens the journal at path, creating it (and its directory) if
// missing, and returns it with every intact record in append order. The
// records share one buffer that is the caller's to keep.
//
// A torn tail, the unfinished last batch left by a crash during a write that
// was therefore never acknowledged, is truncated away and logged as a warning
// with the file, offset and bytes dropped. Damage anywhere else (a bad record
// followed by an intact one) is an error matching ErrCorrupt that names the
// file and offset, and the file is left untouched for an operator to inspect.
// A nil logger discards.
func OpenJournal(path string, logger *slog.Logger) (*Journal, [][]byte, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	j := &Journal{
		path:       path,
		dir:        filepath.Dir(path),
		logger:     logger,
		asyncLimit: asyncQueueLimit,
		asyncDelay: asyncFlushDelay,
		wake:       make(chan struct{}, 1),
		stopped:    make(chan struct{}),
	}
	recs, err := j.open()
	if err != nil {
		return nil, nil, err
	}
	go j.run()
	return j, recs, nil
}

func (j *Journal) open() ([][]byte, error) {
	if err := mkdirAll(j.dir); err != nil {
		return nil, fmt.Errorf("open journal %s: %w", j.path, err)
	}
	// Leftovers of a Rewrite interrupted by a crash; the journal itself is
	// intact because the rename had not happened.
	removeStaleTemps(j.dir, filepath.Base(j.path), j.logger)

	f, err := os.OpenFile(j.path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, j.create()
	}
	if err != nil {
		return nil, fmt.Errorf("open journal %s: %w", j.path, err)
	}
	j.f = f
	recs, err := j.recover()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return recs, nil
}

func (j *Journal) create() error {
	f, err := os.OpenFile(j.path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create journal %s: %w", j.path, err)
	}
	j.f = f
	if err := j.writeHeader(); err != nil {
		_ = f.Close()
		return fmt.Errorf("create journal %s: %w", j.path, err)
	}
	// Without this a crash could forget the file, and with it every record
	// appended before the crash.
	if err := syncDir(j.dir); err != nil {
		_ = f.Close()
		return fmt.Errorf("create journal %s: %w", j.path, err)
	}
	return nil
}

func journalHeader() []byte {
	h := make([]byte, journalHeaderSize)
	copy(h, journalMagic)
	binary.LittleEndian.PutUint32(h[4:], journalVersion)
	return h
}

func (j *Journal) writeHeader() error {
	if _, err := j.f.WriteAt(journalHeader(), 0); err != nil {
		return err
	}
	if err := j.f.Truncate(journalHeaderSize); err != nil {
		return err
	}
	if err := j.f.Sync(); err != nil {
		return err
	}
	j.off = journalHeaderSize
	j.size.Store(j.off)
	return nil
}

// recover reads the whole file, verifies it and cuts off a torn tail. The
// journal is compacted by its owner, so it is small enough to read at once.
func (j *Journal) recover() ([][]byte, error) {
	data, err := io.ReadAll(j.f)
	if err != nil {
		return nil, fmt.Errorf("read journal %s: %w", j.path, err)
	}
	if len(data) < journalHeaderSize && bytes.HasPrefix(journalHeader(), data) {
		// A crash between creating the file and syncing its header: no
		// record was ever appended, so starting afresh loses nothing.
		j.logger.Warn("journal header incomplete, rewriting it", "file", j.path, "offset", 0, "bytes_dropped", len(data))
		if err := j.writeHeader(); err != nil {
			return nil, fmt.Errorf("repair journal %s: %w", j.path, err)
		}
		return nil, nil
	}
	if len(data) < journalHeaderSize || string(data[:len(journalMagic)]) != journalMagic {
		return nil, corruptf("read journal %s: offset 0: bad magic, not a sentinel journal", j.path)
	}
	if v := binary.LittleEndian.Uint32(data[len(journalMagic):]); v != journalVersion {
		return nil, fmt.Errorf("read journal %s: unsupported format version %d (this build reads %d)", j.path, v, journalVersion)
	}
	recs, end, torn, err := scanJournal(j.path, data)
	if err != nil {
		return nil, err
	}
	if end < len(data) {
		j.logger.Warn("truncating torn journal tail",
			"file", j.path, "offset", end, "bytes_dropped", len(data)-end,
			"records_dropped", torn.records, "reason", torn.reason)
		if err := j.f.Truncate(int64(end)); err != nil {
			return nil, fmt.Errorf("truncate journal %s to offset %d: %w", j.path, end, err)
		}
		// Make the cut durable before appending behind it: otherwise a
		// crash could bring the torn bytes back in front of new records.
		if err := fdatasync(j.f); err != nil {
			return nil, fmt.Errorf("truncate journal %s to offset %d: %w", j.path, end, err)
		}
	}
	j.off = int64(end)
	j.size.Store(j.off)
	return recs, nil
}

// tornTail describes what replay dropped.
type tornTail struct {
	records int // intact records of the unfinished batch, dropped with it
	reason  string
}

// scanJournal decodes a whole journal file and returns the records of every
// complete batch and the offset where the last complete batch ends. What
// follows that offset is a torn tail if no intact record comes after the
// first damaged one; otherwise acknowledged data is damaged, and that is an
// error.
func scanJournal(path string, data []byte) ([][]byte, int, tornTail, error) {
	var recs [][]byte
	batchStart, pending := journalHeaderSize, 0
	for off, index := journalHeaderSize, 0; off < len(data); index++ {
		rec, next, last, problem := decodeRecord(data, off)
		if problem != "" {
			if at := findIntactRecord(data, off+1); at >= 0 {
				return nil, 0, tornTail{}, corruptf(
					"read journal %s: record %d at offset %d: %s, and an intact record follows at offset %d",
					path, index, off, problem, at)
			}
			reason := fmt.Sprintf("record %d at offset %d: %s", index, off, problem)
			return recs[:len(recs)-pending], batchStart, tornTail{records: pending, reason: reason}, nil
		}
		recs = append(recs, rec)
		pending++
		off = next
		if last {
			batchStart, pending = off, 0
		}
	}
	if pending > 0 {
		return recs[:len(recs)-pending], batchStart, tornTail{records: pending, reason: "last batch has no end marker"}, nil
	}
	return recs, batchStart, tornTail{}, nil
}

// decodeRecord decodes the record at off. problem is empty for an intact
// record and says what is wrong otherwise.
func decodeRecord(data []byte, off int) (rec []byte, next int, last bool, problem string) {
	rest := data[off:]
	if len(rest) < recordHeaderSize {
		return nil, 0, false, fmt.Sprintf("incomplete header (%d of %d bytes)", len(rest), recordHeaderSize)
	}
	word := binary.LittleEndian.Uint32(rest)
	n := int(word &^ endOfBatch)
	if n > MaxRecordSize {
		return nil, 0, false, fmt.Sprintf("implausible length %d", n)
	}
	if len(rest)-recordHeaderSize < n {
		return nil, 0, false, fmt.Sprintf("incomplete payload (%d of %d bytes)", len(rest)-recordHeaderSize, n)
	}
	crc := crc32.Update(0, castagnoli, rest[:4])
	crc = crc32.Update(crc, castagnoli, rest[recordHeaderSize:recordHeaderSize+n])
	if crc != binary.LittleEndian.Uint32(rest[4:]) {
		return nil, 0, false, "checksum mismatch"
	}
	start, end := off+recordHeaderSize, off+recordHeaderSize+n
	// Capacity capped so a caller appending to one record cannot overwrite
	// the next in the shared buffer.
	return data[start:end:end], end, word&endOfBatch != 0, ""
}

// findIntactRecord returns the offset of the first intact record at or after
// from, or -1. It tries every offset: after damage nothing says where the next
// record starts. A false match needs a plausible length and a matching
// CRC-32C, about one chance in 2^32 per offset.
func findIntactRecord(data []byte, from int) int {
	for off := from; off+recordHeaderSize <= len(data); off++ {
		if _, _, _, problem := decodeRecord(data, off); problem == "" {
			return off
		}
	}
	return -1
}

func recordHeader(rec []byte, last bool) [recordHeaderSize]byte {
	var h [recordHeaderSize]byte
	word := uint32(len(rec))
	if last {
		word |= endOfBatch
	}
	binary.LittleEndian.PutUint32(h[:], word)
	crc := crc32.Update(0, castagnoli, h[:4])
	binary.LittleEndian.PutUint32(h[4:], crc32.Update(crc, castagnoli, rec))
	return h
}

// Append writes recs as one batch and returns once they are durable (written
// and fdatasynced). The batch is atomic: after a crash, replay returns all of
// recs or none. Append with no records waits until every record queued before
// it, AppendAsync ones included, is durable. On error the records may or may
// not be on disk. Concurrent Appends share fsyncs (see Journal).
func (j *Journal) Append(recs ...[]byte) error {
	if err := checkRecords(recs); err != nil {
		return fmt.Errorf("append journal %s: %w", j.path, err)
	}
	return j.submit(&journalOp{recs: recs, done: make(chan error, 1)}, "append")
}

// AppendAsync queues rec (copied) to be written and fsynced with the next
// Append or within about 100 ms, for bookkeeping whose loss in a crash only
// costs a redelivery. It never blocks on the disk: when 65536 records are
// already waiting, when rec exceeds MaxRecordSize, or once the journal is
// closed or has failed, rec is dropped, counted in JournalStats.AsyncDropped
// and logged (sampled). Dropping rather than blocking is deliberate: a caller
// on the heartbeat path must never wait for a slow disk.
func (j *Journal) AppendAsync(rec []byte) {
	if len(rec) > MaxRecordSize {
		j.drop("record too large")
		return
	}
	op := &journalOp{recs: [][]byte{bytes.Clone(rec)}}
	j.mu.Lock()
	reason := ""
	switch {
	case j.closing:
		reason = "journal closed"
	case j.err != nil:
		reason = "journal failed"
	case j.async >= j.asyncLimit:
		reason = "queue full"
	}
	if reason != "" {
		j.mu.Unlock()
		j.drop(reason)
		return
	}
	j.queue = append(j.queue, op)
	j.async++
	first := j.async == 1
	j.mu.Unlock()
	if first {
		j.signal() // so the writer arms its flush timer
	}
}

// Rewrite compacts the journal: it atomically replaces the content with recs
// (temporary file, fsync, rename over, fsync directory), and appends continue
// in the new file. After a crash the journal holds either the old content or
// recs, never a mix.
//
// recs are expected to reflect every Append that returned before Rewrite was
// called. Appends not yet written when the rewrite runs, including those made
// while it runs, are written after recs in the new file and are not lost. An
// Append racing with the caller's snapshot of its state may therefore appear
// both in recs and after them, so replaying a record must be idempotent.
func (j *Journal) Rewrite(recs [][]byte) error {
	if err := checkRecords(recs); err != nil {
		return fmt.Errorf("rewrite journal %s: %w", j.path, err)
	}
	return j.submit(&journalOp{recs: recs, rewrite: true, done: make(chan error, 1)}, "rewrite")
}

// Size returns the journal's size on disk in bytes, up to the last durable
// batch, so that its owner can decide when to Rewrite.
func (j *Journal) Size() int64 { return j.size.Load() }

// Stats returns the journal's counters.
func (j *Journal) Stats() JournalStats {
	return JournalStats{Records: j.records.Load(), Syncs: j.syncs.Load(), AsyncDropped: j.dropped.Load()}
}

// Healthy returns nil while the journal accepts writes, ErrJournalClosed after
// Close, and the failure that stopped it otherwise.
func (j *Journal) Healthy() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.err != nil {
		return j.err
	}
	if j.closing {
		return ErrJournalClosed
	}
	return nil
}

// Close writes and fsyncs every queued record, AppendAsync ones included, and
// closes the file. Later calls to Append and Rewrite fail with
// ErrJournalClosed. Close is idempotent and returns the failure, if any, that
// made the journal refuse writes.
func (j *Journal) Close() error {
	j.mu.Lock()
	j.closing = true
	j.mu.Unlock()
	j.signal()
	<-j.stopped
	return j.closeErr
}

func checkRecords(recs [][]byte) error {
	for i, r := range recs {
		if len(r) > MaxRecordSize {
			return fmt.Errorf("record %d is %d bytes, more than the limit of %d", i, len(r), MaxRecordSize)
		}
	}
	return nil
}

func (j *Journal) submit(op *journalOp, verb string) error {
	j.mu.Lock()
	if j.closing {
		j.mu.Unlock()
		return fmt.Errorf("%s journal %s: %w", verb, j.path, ErrJournalClosed)
	}
	if err := j.err; err != nil {
		j.mu.Unlock()
		return fmt.Errorf("%s journal %s: refusing writes after an earlier failure: %w", verb, j.path, err)
	}
	j.queue = append(j.queue, op)
	j.waiting++
	j.mu.Unlock()
	j.signal()
	return <-op.done
}

func (j *Journal) signal() {
	select {
	case j.wake <- struct{}{}:
	default: // a wake-up is already pending; the writer will see the queue
	}
}

// drop counts a lost AppendAsync record and logs at powers of two, so a full
// queue under load cannot flood the log.
func (j *Journal) drop(reason string) {
	if n := j.dropped.Add(1); n&(n-1) == 0 {
		j.logger.Warn("journal dropped an asynchronous record", "file", j.path, "reason", reason, "dropped_total", n)
	}
}

// fail makes err sticky and returns it.
func (j *Journal) fail(err error) error {
	j.mu.Lock()
	if j.err == nil {
		j.err = err
	}
	j.mu.Unlock()
	j.logger.Error("journal refuses further writes", "file", j.path, "err", err)
	return err
}

func (j *Journal) failed() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.err
}

// run is the writer goroutine: the only code that touches the file after
// OpenJournal.
func (j *Journal) run() {
	defer close(j.stopped)
	var timer <-chan time.Time // armed while AppendAsync records wait alone
	flushAsync := false
	for {
		j.mu.Lock()
		batch := j.takeBatch(flushAsync || j.closing)
		finished := j.closing && len(j.queue) == 0
		asyncWaiting := j.async > 0
		delay := j.asyncDelay
		j.mu.Unlock()
		flushAsync = false

		if len(batch) > 0 {
			// Whatever queues while this batch is on its way to disk goes
			// out together in the next one: that is the group commit.
			j.commit(batch)
			continue
		}
		if finished {
			j.closeErr = j.closeFile()
			return
		}
		if asyncWaiting && timer == nil {
			timer = time.After(delay)
		}
		select {
		case <-j.wake:
		case <-timer:
			timer = nil
			flushAsync = true
		}
	}
}

// takeBatch removes the next batch from the queue: nothing while only
// AppendAsync records wait (unless force), else every op up to and including
// the first Rewrite, so that the ops queued before a Rewrite land after its
// records in the new file. Called with j.mu held.
func (j *Journal) takeBatch(force bool) []*journalOp {
	if len(j.queue) == 0 || (!force && j.waiting == 0) {
		return nil
	}
	n := len(j.queue)
	for i, op := range j.queue {
		if op.rewrite {
			n = i + 1
			break
		}
	}
	batch := j.queue[:n]
	if n == len(j.queue) {
		j.queue = nil // a fresh array: batch is read without the lock
	} else {
		j.queue = append([]*journalOp(nil), j.queue[n:]...)
	}
	for _, op := range batch {
		if op.done != nil {
			j.waiting--
		} else {
			j.async--
		}
	}
	return batch
}

// commit performs one batch: at most one Rewrite, then one write and one
// fsync for all the other records, then answers every waiting caller.
func (j *Journal) commit(batch []*journalOp) {
	var recs [][]byte
	asyncRecs := 0
	for _, op := range batch {
		if op.rewrite {
			continue
		}
		recs = append(recs, op.recs...)
		if op.done == nil {
			asyncRecs++
		}
	}
	err := j.failed()
	if last := batch[len(batch)-1]; last.rewrite {
		if err == nil {
			// A rewrite that fails before its rename leaves the old file in
			// use and healthy; the appends below then go there.
			last.done <- j.rewrite(last.recs)
			err = j.failed()
		} else {
			last.done <- err
		}
	}
	if err == nil && len(recs) > 0 {
		err = j.write(recs)
	}
	for _, op := range batch {
		if op.done != nil && !op.rewrite {
			op.done <- err
		}
	}
	if err != nil && asyncRecs > 0 {
		j.dropped.Add(uint64(asyncRecs))
		j.logger.Warn("journal lost asynchronous records", "file", j.path, "records", asyncRecs, "err", err)
	}
}

// write appends recs as one batch and fdatasyncs.
func (j *Journal) write(recs [][]byte) error {
	buf := j.buf[:0]
	for i, r := range recs {
		h := recordHeader(r, i == len(recs)-1)
		buf = append(buf, h[:]...)
		buf = append(buf, r...)
	}
	if cap(buf) <= 1<<20 {
		j.buf = buf // reuse, but do not pin the buffer of a rare huge batch
	}
	if _, err := j.f.WriteAt(buf, j.off); err != nil {
		err = fmt.Errorf("append journal %s at offset %d: %w", j.path, j.off, err)
		// Cut off the part of the batch that reached the file, or the next
		// batch would land behind a damaged record and replay would have to
		// call that corruption. If even that fails, stop writing.
		if terr := j.f.Truncate(j.off); terr != nil {
			return j.fail(fmt.Errorf("%w; truncating back failed: %v", err, terr))
		}
		return err
	}
	if err := fdatasync(j.f); err != nil {
		// After a failed fsync the kernel may have dropped the dirty pages
		// and cleared the error, so a retry could report success for data
		// that is gone: refuse all further writes instead.
		return j.fail(fmt.Errorf("sync journal %s: %w", j.path, err))
	}
	j.off += int64(len(buf))
	j.size.Store(j.off)
	j.syncs.Add(1)
	j.records.Add(uint64(len(recs)))
	return nil
}

// rewrite replaces the file with one holding recs and switches to it.
func (j *Journal) rewrite(recs [][]byte) error {
	f, err := os.CreateTemp(j.dir, tempPattern(filepath.Base(j.path)))
	if err != nil {
		return fmt.Errorf("rewrite journal %s: %w", j.path, err)
	}
	renamed := false
	defer func() {
		if !renamed {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	size, err := writeJournalFile(f, recs)
	if err != nil {
		return fmt.Errorf("rewrite journal %s: write %s: %w", j.path, f.Name(), err)
	}
	if err := os.Rename(f.Name(), j.path); err != nil {
		return fmt.Errorf("rewrite journal %s: %w", j.path, err)
	}
	renamed = true
	old := j.f
	j.f, j.off = f, size
	j.size.Store(size)
	j.syncs.Add(1)
	j.records.Add(uint64(len(recs)))
	if err := old.Close(); err != nil {
		j.logger.Warn("cannot close replaced journal file", "file", j.path, "err", err)
	}
	if err := syncDir(j.dir); err != nil {
		// The new file is in place, but after a crash the directory may
		// still name the old one, and appends made from now on would
		// vanish with it.
		return j.fail(fmt.Errorf("rewrite journal %s: %w", j.path, err))
	}
	return nil
}

// writeJournalFile writes a complete journal holding recs as one batch to the
// new file f and fsyncs it.
func writeJournalFile(f *os.File, recs [][]byte) (int64, error) {
	bw := bufio.NewWriterSize(f, writeBufferSize)
	size := int64(journalHeaderSize)
	_, _ = bw.Write(journalHeader()) // bufio keeps the first error for Flush
	for i, r := range recs {
		h := recordHeader(r, i == len(recs)-1)
		_, _ = bw.Write(h[:])
		_, _ = bw.Write(r)
		size += int64(len(h) + len(r))
	}
	if err := bw.Flush(); err != nil {
		return 0, err
	}
	// A full fsync: the new inode's metadata must be durable before the
	// rename publishes it.
	if err := f.Sync(); err != nil {
		return 0, err
	}
	return size, nil
}

func (j *Journal) closeFile() error {
	err := j.failed()
	if cerr := j.f.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("close journal %s: %w", j.path, cerr)
	}
	return err
}
