package storage

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// journalSeeds are journal files as the table tests make them: intact,
// torn in the last record or batch, and damaged in the middle.
func journalSeeds(f *testing.F) [][]byte {
	dir := f.TempDir()
	path := filepath.Join(dir, "journal")
	j, _, err := OpenJournal(path, nil)
	require.NoError(f, err)
	require.NoError(f, j.Append(bs(`{"op":"revoke","tenant":"acme","agent":"a1"}`)...))
	require.NoError(f, j.Append(bs("b", "", "c")...))
	require.NoError(f, j.Close())
	intact, err := os.ReadFile(path)
	require.NoError(f, err)
	flipped := bytes.Clone(intact)
	flipped[journalHeaderSize+recordHeaderSize+2] ^= 0x40
	return [][]byte{
		intact,
		intact[:journalHeaderSize],
		intact[:len(intact)-1],
		intact[:len(intact)-recordHeaderSize],
		flipped,
		intact[:journalHeaderSize-1],
		nil,
		[]byte("not a journal"),
	}
}

// FuzzOpenJournal opens arbitrary journal files: no panic; a file it
// accepts yields, after the recovery it performed, the same records when
// opened again (recovery is idempotent and never drops an accepted record).
func FuzzOpenJournal(f *testing.F) {
	for _, seed := range journalSeeds(f) {
		f.Add(seed)
	}
	logger := slog.New(slog.DiscardHandler)
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "journal")
		require.NoError(t, os.WriteFile(path, data, 0o600))
		j, recs, err := OpenJournal(path, logger)
		if err != nil {
			return
		}
		require.NoError(t, j.Close())
		j, again, err := OpenJournal(path, logger)
		require.NoError(t, err, "a journal accepted once is accepted again")
		require.NoError(t, j.Close())
		require.Equal(t, len(recs), len(again))
		for i := range recs {
			require.Equal(t, recs[i], again[i], "record %d", i)
		}
	})
}

// FuzzReadSnapshot reads arbitrary snapshot files: no panic; content it
// accepts, written again, reads back the same.
func FuzzReadSnapshot(f *testing.F) {
	dir := f.TempDir()
	for i, content := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte("agent"), 40000)} {
		path := filepath.Join(dir, "snap"+string(rune('0'+i)))
		require.NoError(f, WriteSnapshot(path, "agents", writeBytes(content)))
		file, err := os.ReadFile(path)
		require.NoError(f, err)
		f.Add(file)
		f.Add(file[:len(file)-1])
		f.Add(file[:len(file)/2])
		flipped := bytes.Clone(file)
		flipped[len(flipped)/2] ^= 1
		f.Add(flipped)
	}
	f.Add([]byte("not a snapshot"))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, "snap")
		require.NoError(t, os.WriteFile(path, data, 0o600))
		var got []byte
		err := ReadSnapshot(path, "agents", func(r io.Reader) error {
			var err error
			got, err = io.ReadAll(r)
			return err
		})
		if err != nil {
			return
		}
		again := filepath.Join(dir, "again")
		require.NoError(t, WriteSnapshot(again, "agents", writeBytes(got)))
		back, err := readAll(again, "agents")
		require.NoError(t, err)
		require.Equal(t, len(got), len(back))
		require.True(t, bytes.Equal(got, back))
	})
}
