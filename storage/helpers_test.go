package storage

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/internal/testutil"
)

func testLogger() (*slog.Logger, *testutil.SyncBuffer) {
	b := &testutil.SyncBuffer{}
	return slog.New(slog.NewTextHandler(b, nil)), b
}

func openJournal(t *testing.T, path string) (*Journal, []string) {
	t.Helper()
	j, recs, err := OpenJournal(path, nil)
	require.NoError(t, err)
	return j, strs(recs)
}

// reopen closes j and returns the records a fresh OpenJournal replays.
func reopen(t *testing.T, j *Journal) []string {
	t.Helper()
	require.NoError(t, j.Close())
	j2, recs := openJournal(t, j.path)
	require.NoError(t, j2.Close())
	return recs
}

func strs(recs [][]byte) []string {
	out := make([]string, 0, len(recs))
	for _, r := range recs {
		out = append(out, string(r))
	}
	return out
}

func bs(ss ...string) [][]byte {
	out := make([][]byte, 0, len(ss))
	for _, s := range ss {
		out = append(out, []byte(s))
	}
	return out
}

// tempFiles lists the temporary files left in dir.
func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, ".*.tmp-*"))
	require.NoError(t, err)
	return m
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	return fi.Size()
}
