package storage

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// The crash test re-executes the test binary as a helper that appends to a
// journal and prints each acknowledged sequence number, then kills it with
// SIGKILL at a random moment: what was acknowledged must survive.
const (
	crashJournalEnv = "SENTINEL_STORAGE_CRASH_JOURNAL"
	crashStartEnv   = "SENTINEL_STORAGE_CRASH_START"
)

func TestJournalCrash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	acked := map[int]bool{}
	torn := 0
	const kills = 10
	for iter := range kills {
		var stderr bytes.Buffer
		cmd := exec.Command(os.Args[0], "-test.run=^TestJournalCrashHelper$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashJournalEnv+"="+path, crashStartEnv+"="+strconv.Itoa(iter*1_000_000))
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		t.Cleanup(func() { _ = cmd.Process.Kill() })

		// Kill after a random number of acknowledgements: the helper is then
		// somewhere in a write, an fsync or a rewrite.
		killAfter, seen := 1+rand.IntN(250), 0
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			seq, err := strconv.Atoi(sc.Text())
			if err != nil {
				continue // not an acknowledgement
			}
			acked[seq] = true
			if seen++; seen == killAfter {
				require.NoError(t, cmd.Process.Kill()) // SIGKILL
			}
		}
		err = cmd.Wait()
		require.GreaterOrEqual(t, seen, killAfter, "helper died by itself: %v\n%s", err, stderr.String())

		logger, logs := testLogger()
		j, recs, err := OpenJournal(path, logger)
		require.NoError(t, err, "iteration %d", iter)
		require.NoError(t, j.Close())
		if strings.Contains(logs.String(), "torn journal tail") {
			torn++
		}
		present := map[int]bool{}
		for _, r := range recs {
			seq, err := parseCrashRecord(r)
			require.NoError(t, err)
			present[seq] = true
		}
		for seq := range acked {
			require.True(t, present[seq], "acknowledged record %d lost (iteration %d)", seq, iter)
		}
	}
	t.Logf("%d acknowledged records survived %d kills; %d torn tails truncated", len(acked), kills, torn)
}

// TestJournalCrashHelper is the process TestJournalCrash kills.
func TestJournalCrashHelper(t *testing.T) {
	path := os.Getenv(crashJournalEnv)
	if path == "" {
		return // only runs as the helper process TestJournalCrash starts
	}
	start, err := strconv.Atoi(os.Getenv(crashStartEnv))
	if err != nil {
		t.Fatal(err)
	}
	j, recs, err := OpenJournal(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The caller's state, kept as Rewrite's contract asks: a record joins
	// the state before it is appended, and compaction writes the state.
	var mu sync.Mutex
	state := recs
	var seq atomic.Int64
	seq.Store(int64(start))
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				n := int(seq.Add(1))
				// Sizes vary so that batches, and a kill inside one, vary too.
				rec := []byte(fmt.Sprintf("rec-%d %s", n, strings.Repeat("x", rand.IntN(8<<10))))
				mu.Lock()
				state = append(state, rec)
				mu.Unlock()
				if err := j.Append(rec); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(1)
				}
				fmt.Printf("%d\n", n)
				if n%97 == 0 {
					// The state stays locked until the rewrite is done: an
					// Append acknowledged between the copy and the Rewrite
					// would otherwise be missing from recs, against
					// Rewrite's contract.
					mu.Lock()
					err := j.Rewrite(append([][]byte(nil), state...))
					mu.Unlock()
					if err != nil {
						fmt.Fprintln(os.Stderr, err)
						os.Exit(1)
					}
				}
			}
		})
	}
	wg.Wait()
}

func parseCrashRecord(r []byte) (int, error) {
	f, _, _ := bytes.Cut(r, []byte(" "))
	s, ok := strings.CutPrefix(string(f), "rec-")
	if !ok {
		return 0, fmt.Errorf("unexpected record %.40q", r)
	}
	return strconv.Atoi(s)
}
