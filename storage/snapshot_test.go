package storage

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"
)

func writeBytes(p []byte) func(io.Writer) error {
	return func(w io.Writer) error {
		_, err := w.Write(p)
		return err
	}
}

func readAll(path, kind string) ([]byte, error) {
	var got []byte
	err := ReadSnapshot(path, kind, func(r io.Reader) error {
		var err error
		got, err = io.ReadAll(r)
		return err
	})
	return got, err
}

func TestSnapshotRoundTrip(t *testing.T) {
	for _, size := range []int{0, 1, 100, snapshotChunkSize - 1, snapshotChunkSize, snapshotChunkSize + 1, 3*snapshotChunkSize + 17} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			payload := make([]byte, size)
			_, _ = rand.Read(payload)
			dir := t.TempDir()
			path := filepath.Join(dir, "agents.snap")
			require.NoError(t, WriteSnapshot(path, "agents", writeBytes(payload)))
			fi, err := os.Stat(path)
			require.NoError(t, err)
			require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
			require.Empty(t, tempFiles(t, dir))

			got, err := readAll(path, "agents")
			require.NoError(t, err)
			require.True(t, bytes.Equal(payload, got), "payload differs")

			// Small reads and an early stop are fine too.
			err = ReadSnapshot(path, "agents", func(r io.Reader) error {
				return iotest.TestReader(r, payload)
			})
			require.NoError(t, err)
		})
	}

	t.Run("many small writes", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "s")
		var want bytes.Buffer
		require.NoError(t, WriteSnapshot(path, "agents", func(w io.Writer) error {
			for i := range 100000 {
				line := strconv.Itoa(i) + "\n"
				want.WriteString(line)
				if _, err := io.WriteString(w, line); err != nil {
					return err
				}
			}
			return nil
		}))
		got, err := readAll(path, "agents")
		require.NoError(t, err)
		require.Equal(t, want.String(), string(got))
	})
}

func smallSnapshot(t *testing.T) (string, []byte) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "orig")
	require.NoError(t, WriteSnapshot(path, "agents", writeBytes([]byte(`{"agent":"a1","last_heartbeat":"2024-01-01T00:00:00Z"}`))))
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	return dir, data
}

func TestSnapshotDamage(t *testing.T) {
	dir, data := smallSnapshot(t)
	headerLen := len(snapshotHeader("agents"))
	payloadStart := headerLen + chunkHeaderSize
	payloadEnd := len(data) - chunkHeaderSize - trailerSize

	t.Run("bit flip anywhere", func(t *testing.T) {
		for off := range data {
			damaged := bytes.Clone(data)
			damaged[off] ^= 0x04
			path := filepath.Join(dir, "flip"+strconv.Itoa(off))
			require.NoError(t, os.WriteFile(path, damaged, 0o600))
			called := false
			err := ReadSnapshot(path, "agents", func(io.Reader) error { called = true; return nil })
			require.Error(t, err, "flip at %d", off)
			require.False(t, called, "read must not see a damaged payload (flip at %d)", off)
			require.ErrorIs(t, err, ErrCorrupt, "flip at %d: %v", off, err)
			require.ErrorContains(t, err, path)
			if off >= payloadStart && off < payloadEnd {
				require.ErrorContains(t, err, "chunk 0 at offset "+strconv.Itoa(headerLen)+": checksum mismatch")
			}
		}
	})

	t.Run("truncated at every length", func(t *testing.T) {
		for n := range len(data) {
			path := filepath.Join(dir, "cut"+strconv.Itoa(n))
			require.NoError(t, os.WriteFile(path, data[:n], 0o600))
			_, err := readAll(path, "agents")
			require.ErrorIs(t, err, ErrCorrupt, "cut at %d", n)
			require.ErrorContains(t, err, path)
			require.ErrorContains(t, err, "truncated at offset "+strconv.Itoa(n))
		}
	})

	for _, tc := range []struct {
		name    string
		data    []byte
		kind    string
		wantErr string
		corrupt bool
	}{
		{"trailing garbage", append(bytes.Clone(data), 0), "agents", "trailing garbage after the end at offset " + strconv.Itoa(len(data)), true},
		{"bad magic", []byte("agent,last_heartbeat\na1,0\n"), "agents", "offset 0: bad magic", true},
		{"wrong kind", data, "signing-key", `holds "agents", want "signing-key"`, false},
		{"unsupported version", withVersion(data, 2), "agents", "unsupported format version 2 (this build reads 1)", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "snap")
			require.NoError(t, os.WriteFile(path, tc.data, 0o600))
			_, err := readAll(path, tc.kind)
			require.ErrorContains(t, err, "read snapshot "+path+": ")
			require.ErrorContains(t, err, tc.wantErr)
			require.Equal(t, tc.corrupt, errors.Is(err, ErrCorrupt), "%v", err)
		})
	}

	t.Run("missing file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "none")
		_, err := readAll(path, "agents")
		require.ErrorIs(t, err, fs.ErrNotExist)
		require.ErrorContains(t, err, path)
	})
}

// withVersion returns a copy of a snapshot claiming another format version,
// with a valid header checksum, as a future release would write it.
func withVersion(data []byte, v uint32) []byte {
	d := bytes.Clone(data)
	binary.LittleEndian.PutUint32(d[len(snapshotMagic):], v)
	n := len(snapshotHeader("agents")) - 4
	binary.LittleEndian.PutUint32(d[n:], crc32.Checksum(d[:n], castagnoli))
	return d
}

func TestSnapshotErrors(t *testing.T) {
	t.Run("read's error names the file", func(t *testing.T) {
		dir, data := smallSnapshot(t)
		path := filepath.Join(dir, "s")
		require.NoError(t, os.WriteFile(path, data, 0o600))
		boom := errors.New("decode: unexpected field")
		err := ReadSnapshot(path, "agents", func(io.Reader) error { return boom })
		require.ErrorIs(t, err, boom)
		require.ErrorContains(t, err, path)
	})

	t.Run("a failed write keeps the old snapshot", func(t *testing.T) {
		dir, data := smallSnapshot(t)
		path := filepath.Join(dir, "orig")
		boom := errors.New("store busy")
		err := WriteSnapshot(path, "agents", func(w io.Writer) error {
			_, _ = w.Write(make([]byte, 3*snapshotChunkSize))
			return boom
		})
		require.ErrorIs(t, err, boom)
		require.ErrorContains(t, err, path)
		after, rerr := os.ReadFile(path)
		require.NoError(t, rerr)
		require.Equal(t, data, after)
		require.Empty(t, tempFiles(t, dir))
	})

	t.Run("kind must be 1 to 255 bytes", func(t *testing.T) {
		dir := t.TempDir()
		for _, kind := range []string{"", string(make([]byte, 256))} {
			err := WriteSnapshot(filepath.Join(dir, "s"), kind, writeBytes(nil))
			require.ErrorContains(t, err, "kind must be 1 to 255 bytes")
		}
		require.NoFileExists(t, filepath.Join(dir, "s"))
	})
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "state")

	require.NoError(t, WriteFileAtomic(path, 0o640, writeBytes([]byte("v1"))))
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o640), fi.Mode().Perm(), "perm applied exactly")
	require.NoError(t, WriteFileAtomic(path, 0o600, writeBytes([]byte("v2"))))
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "v2", string(got))

	for _, tc := range []struct {
		name  string
		write func(io.Writer) error
	}{
		{"error", func(w io.Writer) error {
			_, _ = w.Write([]byte("half"))
			return errors.New("boom")
		}},
		{"panic", func(w io.Writer) error {
			_, _ = w.Write([]byte("half"))
			panic("boom")
		}},
	} {
		t.Run(tc.name+" keeps the old file", func(t *testing.T) {
			func() {
				defer func() { _ = recover() }()
				err := WriteFileAtomic(path, 0o600, tc.write)
				require.ErrorContains(t, err, "write "+path+": boom")
			}()
			got, err := os.ReadFile(path)
			require.NoError(t, err)
			require.Equal(t, "v2", string(got))
			require.Empty(t, tempFiles(t, filepath.Dir(path)))
		})
	}

	t.Run("removes leftovers of a crash", func(t *testing.T) {
		stale := filepath.Join(filepath.Dir(path), ".state.tmp-42")
		other := filepath.Join(filepath.Dir(path), ".other.tmp-42")
		require.NoError(t, os.WriteFile(stale, nil, 0o600))
		require.NoError(t, os.WriteFile(other, nil, 0o600))
		require.NoError(t, WriteFileAtomic(path, 0o600, writeBytes([]byte("v3"))))
		require.NoFileExists(t, stale)
		require.FileExists(t, other, "another file's temporary is not ours")
	})
}

func TestReadOrCreateKey(t *testing.T) {
	t.Run("created 0600 and stable", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "data", "token.key")
		k1, err := ReadOrCreateKey(path, 32)
		require.NoError(t, err)
		require.Len(t, k1, 32)
		require.NotEqual(t, make([]byte, 32), k1)
		fi, err := os.Stat(path)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
		k2, err := ReadOrCreateKey(path, 32)
		require.NoError(t, err)
		require.Equal(t, k1, k2)
	})

	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, path string)
		wantErr string
	}{
		{"wrong size", func(t *testing.T, path string) {
			require.NoError(t, writeSnapshot(path, 0o600, keyKind, writeBytes(make([]byte, 16))))
		}, "key is 16 bytes, want 32"},
		{"raw bytes", func(t *testing.T, path string) {
			require.NoError(t, os.WriteFile(path, make([]byte, 32), 0o600))
		}, "bad magic"},
		{"damaged", func(t *testing.T, path string) {
			_, err := ReadOrCreateKey(path, 32)
			require.NoError(t, err)
			data, err := os.ReadFile(path)
			require.NoError(t, err)
			data[len(snapshotHeader(keyKind))+chunkHeaderSize] ^= 1
			require.NoError(t, os.WriteFile(path, data, 0o600))
		}, "checksum mismatch"},
		{"another kind of file", func(t *testing.T, path string) {
			require.NoError(t, WriteSnapshot(path, "agents", writeBytes(make([]byte, 32))))
		}, `holds "agents"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "token.key")
			tc.prepare(t, path)
			before, err := os.ReadFile(path)
			require.NoError(t, err)
			key, err := ReadOrCreateKey(path, 32)
			require.Nil(t, key)
			require.ErrorContains(t, err, path)
			require.ErrorContains(t, err, tc.wantErr)
			after, err := os.ReadFile(path)
			require.NoError(t, err)
			require.Equal(t, before, after, "never silently regenerated")
		})
	}

	t.Run("size out of range", func(t *testing.T) {
		for _, size := range []int{0, -1, maxKeySize + 1} {
			_, err := ReadOrCreateKey(filepath.Join(t.TempDir(), "k"), size)
			require.ErrorContains(t, err, "out of range")
		}
	})
}
