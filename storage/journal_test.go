package storage

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestJournalRoundTrip(t *testing.T) {
	big := make([]byte, 1<<20)
	_, _ = rand.Read(big)
	for _, tc := range []struct {
		name    string
		batches [][]string
	}{
		{"empty", nil},
		{"one record", [][]string{{`{"op":"revoke"}`}}},
		{"batches", [][]string{{"a"}, {"b", "c"}, {"d"}}},
		{"empty record", [][]string{{""}, {"x", ""}}},
		{"large record", [][]string{{"a"}, {string(big)}, {"z"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "journal")
			j, recs := openJournal(t, path)
			require.Empty(t, recs)
			var want []string
			for _, b := range tc.batches {
				require.NoError(t, j.Append(bs(b...)...))
				want = append(want, b...)
			}
			require.Equal(t, fileSize(t, path), j.Size())
			got := reopen(t, j)
			require.Equal(t, len(want), len(got))
			for i := range want {
				require.Equal(t, want[i], got[i], "record %d", i)
			}
		})
	}
}

func TestJournalCreate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := filepath.Join(dir, "journal")
	stale := filepath.Join(dir, ".journal.tmp-123")
	require.NoError(t, os.MkdirAll(dir, 0o700))
	require.NoError(t, os.WriteFile(stale, []byte("half a rewrite"), 0o600))

	j, recs := openJournal(t, path)
	require.Empty(t, recs)
	require.NoError(t, j.Close())
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	require.Equal(t, int64(journalHeaderSize), fi.Size())
	require.NoFileExists(t, stale, "leftover of an interrupted rewrite")

	t.Run("missing directories", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "x", "y", "journal")
		j, _ := openJournal(t, path)
		require.NoError(t, j.Append([]byte("r")))
		require.Equal(t, []string{"r"}, reopen(t, j))
	})
}

func TestJournalConcurrentAppend(t *testing.T) {
	const goroutines, perG = 16, 40
	path := filepath.Join(t.TempDir(), "journal")
	j, _ := openJournal(t, path)

	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range perG {
				rec := []byte(fmt.Sprintf("%d-%d", g, i))
				if g%4 == 3 {
					j.AppendAsync(rec)
					continue
				}
				if err := j.Append(rec); err != nil {
					t.Errorf("append %s: %v", rec, err)
				}
			}
		})
	}
	wg.Wait()
	st := j.Stats()
	t.Logf("records=%d fsyncs=%d", st.Records, st.Syncs)

	got := reopen(t, j)
	require.Len(t, got, goroutines*perG)
	next := make(map[int]int) // per goroutine, records must come back in order
	for _, r := range got {
		var g, i int
		_, err := fmt.Sscanf(r, "%d-%d", &g, &i)
		require.NoError(t, err)
		require.Equal(t, next[g], i, "goroutine %d out of order", g)
		next[g]++
	}
}

// buildJournal appends each batch in turn and returns the file's bytes and
// the offset where the last batch starts.
func buildJournal(t *testing.T, path string, batches ...[]string) ([]byte, int) {
	t.Helper()
	j, _ := openJournal(t, path)
	lastStart := 0
	for _, b := range batches {
		lastStart = int(j.Size())
		require.NoError(t, j.Append(bs(b...)...))
	}
	require.NoError(t, j.Close())
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	return data, lastStart
}

func TestJournalTornTail(t *testing.T) {
	for _, tc := range []struct {
		name string
		last []string
	}{
		{"single record", []string{`{"op":"command","seq":3}`}},
		{"batch of three", []string{"x1", "x2-longer", "x3"}}, // Append is all or nothing
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			full, lastStart := buildJournal(t, filepath.Join(dir, "orig"), []string{"first"}, []string{"second"}, tc.last)
			for cut := lastStart; cut < len(full); cut++ {
				path := filepath.Join(dir, "cut"+strconv.Itoa(cut))
				require.NoError(t, os.WriteFile(path, full[:cut], 0o600))
				logger, logs := testLogger()
				j, recs, err := OpenJournal(path, logger)
				require.NoError(t, err, "cut at %d", cut)
				require.Equal(t, []string{"first", "second"}, strs(recs), "cut at %d", cut)
				require.Equal(t, int64(lastStart), fileSize(t, path), "torn tail truncated")
				if cut > lastStart {
					require.Contains(t, logs.String(), "truncating torn journal tail")
					require.Contains(t, logs.String(), "file="+path)
					require.Contains(t, logs.String(), fmt.Sprintf("offset=%d bytes_dropped=%d", lastStart, cut-lastStart))
				}
				// New records go where the torn ones were.
				require.NoError(t, j.Append([]byte("after")))
				require.Equal(t, []string{"first", "second", "after"}, reopen(t, j))
			}
		})
	}

	t.Run("bad checksum in the last record", func(t *testing.T) {
		dir := t.TempDir()
		full, lastStart := buildJournal(t, filepath.Join(dir, "orig"), []string{"first"}, []string{"second"}, []string{"third"})
		for off := lastStart; off < len(full); off++ {
			damaged := bytes.Clone(full)
			damaged[off] ^= 0x10
			path := filepath.Join(dir, "flip"+strconv.Itoa(off))
			require.NoError(t, os.WriteFile(path, damaged, 0o600))
			j, recs := openJournal(t, path)
			require.NoError(t, j.Close())
			require.Equal(t, []string{"first", "second"}, recs, "flip at %d", off)
		}
	})

	t.Run("incomplete header", func(t *testing.T) {
		for _, content := range []string{"", "SN", "SNTJ\x01"} {
			path := filepath.Join(t.TempDir(), "journal")
			require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
			j, recs := openJournal(t, path)
			require.Empty(t, recs)
			require.NoError(t, j.Append([]byte("a")))
			require.Equal(t, []string{"a"}, reopen(t, j))
		}
	})
}

func TestJournalCorruption(t *testing.T) {
	dir := t.TempDir()
	// Records are 8-byte header + payload; "second" starts at 8+8+5 = 21.
	full, _ := buildJournal(t, filepath.Join(dir, "orig"), []string{"first"}, []string{"second"}, []string{"third"}, []string{"fourth"})
	const second = journalHeaderSize + recordHeaderSize + len("first")
	fullBatch, _ := buildJournal(t, filepath.Join(dir, "batch"), []string{"a1", "a2", "a3"})

	for _, tc := range []struct {
		name    string
		data    []byte
		off     int // byte to flip, -1 for none
		wantErr string
		corrupt bool
	}{
		{"middle record payload", full, second + recordHeaderSize + 2, fmt.Sprintf("record 1 at offset %d: checksum mismatch, and an intact record follows at offset %d", second, second+14), true},
		{"middle record length", full, second, fmt.Sprintf("record 1 at offset %d:", second), true},
		{"middle record length high byte", full, second + 3, fmt.Sprintf("record 1 at offset %d: implausible length", second), true},
		{"middle record checksum", full, second + 5, fmt.Sprintf("record 1 at offset %d: checksum mismatch", second), true},
		{"first record of the last batch", fullBatch, journalHeaderSize + recordHeaderSize, "record 0 at offset 8: checksum mismatch", true},
		{"bad magic", []byte("{\"op\":\"revoke\"}\n"), -1, "offset 0: bad magic", true},
		{"unsupported version", []byte("SNTJ\x02\x00\x00\x00"), -1, "unsupported format version 2", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := bytes.Clone(tc.data)
			if tc.off >= 0 {
				data[tc.off] ^= 0x40
			}
			path := filepath.Join(t.TempDir(), "journal")
			require.NoError(t, os.WriteFile(path, data, 0o600))
			j, recs, err := OpenJournal(path, nil)
			require.Error(t, err)
			require.Nil(t, j)
			require.Nil(t, recs)
			require.Contains(t, err.Error(), path)
			require.Contains(t, err.Error(), tc.wantErr)
			require.Equal(t, tc.corrupt, errors.Is(err, ErrCorrupt))
			after, rerr := os.ReadFile(path)
			require.NoError(t, rerr)
			require.Equal(t, data, after, "a corrupt journal is never modified")
		})
	}
}

func TestJournalRewrite(t *testing.T) {
	t.Run("then append then reopen", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "journal")
		j, _ := openJournal(t, path)
		for i := range 100 {
			require.NoError(t, j.Append([]byte(fmt.Sprintf("revoke %d", i))))
		}
		before := j.Size()
		require.NoError(t, j.Rewrite(bs("state-1", "state-2")))
		require.Less(t, j.Size(), before)
		require.Equal(t, fileSize(t, path), j.Size())
		require.NoError(t, j.Append([]byte("after")))
		require.Equal(t, []string{"state-1", "state-2", "after"}, reopen(t, j))
		require.Empty(t, tempFiles(t, dir))
	})

	t.Run("to nothing", func(t *testing.T) {
		j, _ := openJournal(t, filepath.Join(t.TempDir(), "journal"))
		require.NoError(t, j.Append([]byte("a")))
		require.NoError(t, j.Rewrite(nil))
		require.Equal(t, int64(journalHeaderSize), j.Size())
		require.Empty(t, reopen(t, j))
	})

	t.Run("appends queued before the rewrite land after it", func(t *testing.T) {
		j, _ := openJournal(t, filepath.Join(t.TempDir(), "journal"))
		j.mu.Lock()
		j.asyncDelay = time.Hour
		j.mu.Unlock()
		j.AppendAsync([]byte("queued"))
		require.NoError(t, j.Rewrite(bs("compacted")))
		require.Equal(t, []string{"compacted", "queued"}, reopen(t, j))
	})

	// The contract of Rewrite: a caller that records a change in its state
	// before appending it, and compacts from that state, loses nothing.
	t.Run("concurrent appends are not lost", func(t *testing.T) {
		j, _ := openJournal(t, filepath.Join(t.TempDir(), "journal"))
		var mu sync.Mutex
		state := map[string]bool{}
		snapshot := func() [][]byte {
			mu.Lock()
			defer mu.Unlock()
			out := make([][]byte, 0, len(state))
			for r := range state {
				out = append(out, []byte(r))
			}
			return out
		}
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				for i := range 50 {
					r := fmt.Sprintf("%d-%d", g, i)
					mu.Lock()
					state[r] = true
					mu.Unlock()
					if err := j.Append([]byte(r)); err != nil {
						t.Errorf("append: %v", err)
					}
				}
			})
		}
		wg.Go(func() {
			for range 10 {
				if err := j.Rewrite(snapshot()); err != nil {
					t.Errorf("rewrite: %v", err)
				}
			}
		})
		wg.Wait()
		got := map[string]bool{}
		for _, r := range reopen(t, j) {
			got[r] = true
		}
		require.Equal(t, state, got)
	})
}

func TestJournalAppendAsync(t *testing.T) {
	t.Run("flushed by close", func(t *testing.T) {
		j, _ := openJournal(t, filepath.Join(t.TempDir(), "journal"))
		var want []string
		for i := range 100 {
			r := fmt.Sprintf("ack %d", i)
			j.AppendAsync([]byte(r))
			want = append(want, r)
		}
		require.Equal(t, want, reopen(t, j))
	})

	t.Run("flushed soon without help", func(t *testing.T) {
		j, _ := openJournal(t, filepath.Join(t.TempDir(), "journal"))
		j.AppendAsync([]byte("ack"))
		require.Eventually(t, func() bool { return j.Size() > journalHeaderSize }, 5*time.Second, 5*time.Millisecond)
		require.Equal(t, uint64(1), j.Stats().Syncs)
		require.Equal(t, []string{"ack"}, reopen(t, j))
	})

	t.Run("flushed by the next append, in order", func(t *testing.T) {
		j, _ := openJournal(t, filepath.Join(t.TempDir(), "journal"))
		j.mu.Lock()
		j.asyncDelay = time.Hour
		j.mu.Unlock()
		j.AppendAsync([]byte("ack"))
		require.NoError(t, j.Append([]byte("revoke")))
		require.Equal(t, uint64(1), j.Stats().Syncs, "one fsync for both")
		require.NoError(t, j.Append(), "an empty Append is a flush")
		require.Equal(t, []string{"ack", "revoke"}, reopen(t, j))
	})

	t.Run("the caller's buffer is copied", func(t *testing.T) {
		j, _ := openJournal(t, filepath.Join(t.TempDir(), "journal"))
		buf := []byte("one")
		j.AppendAsync(buf)
		copy(buf, "two")
		require.Equal(t, []string{"one"}, reopen(t, j))
	})

	t.Run("a full queue drops instead of blocking", func(t *testing.T) {
		logger, logs := testLogger()
		j, _, err := OpenJournal(filepath.Join(t.TempDir(), "journal"), logger)
		require.NoError(t, err)
		j.mu.Lock()
		j.asyncLimit, j.asyncDelay = 4, time.Hour
		j.mu.Unlock()
		for i := range 10 {
			j.AppendAsync([]byte(strconv.Itoa(i)))
		}
		require.Equal(t, uint64(6), j.Stats().AsyncDropped)
		require.Contains(t, logs.String(), "reason=\"queue full\"")
		require.Equal(t, []string{"0", "1", "2", "3"}, reopen(t, j))
	})

	t.Run("after close", func(t *testing.T) {
		j, _ := openJournal(t, filepath.Join(t.TempDir(), "journal"))
		require.NoError(t, j.Close())
		j.AppendAsync([]byte("late"))
		require.Equal(t, uint64(1), j.Stats().AsyncDropped)
	})
}

func TestJournalRefusals(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	j, _ := openJournal(t, path)
	require.NoError(t, j.Healthy())

	err := j.Append([]byte("ok"), make([]byte, MaxRecordSize+1))
	require.ErrorContains(t, err, "record 1 is 16777217 bytes")
	require.ErrorContains(t, err, path)
	require.NoError(t, j.Healthy(), "a refused record does not harm the journal")
	j.AppendAsync(make([]byte, MaxRecordSize+1))
	require.Equal(t, uint64(1), j.Stats().AsyncDropped)

	require.NoError(t, j.Close())
	require.NoError(t, j.Close(), "Close is idempotent")
	require.ErrorIs(t, j.Healthy(), ErrJournalClosed)
	for _, err := range []error{j.Append([]byte("x")), j.Rewrite(nil)} {
		require.ErrorIs(t, err, ErrJournalClosed)
		require.ErrorContains(t, err, path)
	}
	require.Empty(t, reopen(t, j))
}
