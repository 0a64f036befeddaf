package app_test

import (
	"encoding/binary"
	"hash/crc32"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/app"
	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/storage"

	"github.com/agentsentinel/sentinel/internal/testutil"
)

// Files under the storage path (app's constants, restated: they are part of
// what operators see on disk).
const (
	snapshotName = "agents.snapshot"
	journalName  = "killswitch.journal"
	keyName      = "token.key"
)

// corruptionFixture is a storage directory written by a gracefully stopped
// sentinel: four agents in the snapshot; a1 and a2 revoked and a3 told to
// pause, each in its own journal batch.
func corruptionFixture(t *testing.T) *env {
	t.Helper()
	e := newEnv(t, baseConfig)
	s := e.start()
	for _, id := range []string{"a1", "a2", "a3", "a4"} {
		s.register(id, acmeKey, nil)
	}
	for _, id := range []string{"a1", "a2"} {
		r := s.do(http.MethodPost, "/api/v1/installations/"+id+"/revoke", acmeAdmin, map[string]any{"reason": "revoked " + id})
		require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	}
	r := s.do(http.MethodPost, "/api/v1/installations/a3/command", acmeAdmin, map[string]any{"command": "pause"})
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	s.close()
	return e
}

// clone copies the fixture's storage into a fresh env sharing its config.
func (e *env) clone(t *testing.T) *env {
	t.Helper()
	c := *e
	c.t = t
	c.storage = filepath.Join(t.TempDir(), "data")
	c.logs = &testutil.SyncBuffer{}
	require.NoError(t, os.CopyFS(c.storage, os.DirFS(e.storage)))
	return &c
}

func (e *env) path(name string) string { return filepath.Join(e.storage, name) }

func (e *env) mutate(name string, fn func([]byte) []byte) {
	e.t.Helper()
	b, err := os.ReadFile(e.path(name))
	require.NoError(e.t, err)
	require.NoError(e.t, os.WriteFile(e.path(name), fn(b), 0o600))
}

func flipBit(at func(n int) int) func([]byte) []byte {
	return func(b []byte) []byte {
		b[at(len(b))] ^= 0x10
		return b
	}
}

// storageFiles reads every file of the storage directory.
func storageFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	require.NoError(t, fs.WalkDir(os.DirFS(dir), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(filepath.Join(dir, p))
		files[p] = b
		return err
	}))
	return files
}

// A damaged state file stops sentinel with an error that names the file, and
// nothing on disk is touched: never a silent reset.
func TestDamagedStateRefusesToStart(t *testing.T) {
	fixture := corruptionFixture(t)

	for _, tc := range []struct {
		name    string
		file    string
		damage  func([]byte) []byte
		corrupt bool // the error matches storage.ErrCorrupt
	}{
		{"snapshot truncated to half", snapshotName, func(b []byte) []byte { return b[:len(b)/2] }, true},
		{"snapshot missing its last byte", snapshotName, func(b []byte) []byte { return b[:len(b)-1] }, true},
		{"snapshot empty", snapshotName, func([]byte) []byte { return nil }, true},
		{"snapshot bit flipped in the middle", snapshotName, flipBit(func(n int) int { return n / 2 }), true},
		{"snapshot bit flipped in the header", snapshotName, flipBit(func(int) int { return 3 }), true},
		{"snapshot bit flipped in the trailer", snapshotName, flipBit(func(n int) int { return n - 2 }), true},
		{"snapshot with trailing garbage", snapshotName, func(b []byte) []byte { return append(b, "garbage"...) }, true},
		// Header (8 bytes), then the first record's header (8 bytes) and payload.
		{"journal record damaged before intact ones", journalName, flipBit(func(int) int { return 8 + 8 + 5 }), true},
		{"journal record header damaged before intact ones", journalName, flipBit(func(int) int { return 8 + 5 }), true},
		{"journal bad magic", journalName, flipBit(func(int) int { return 0 }), true},
		{"key of the wrong size", keyName, nil, false},
		{"key not in its container", keyName, func([]byte) []byte { return make([]byte, 32) }, true},
		{"key truncated", keyName, func(b []byte) []byte { return b[:len(b)-4] }, true},
		{"key bit flipped", keyName, flipBit(func(n int) int { return n - 20 }), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := fixture.clone(t)
			if tc.damage != nil {
				e.mutate(tc.file, tc.damage)
			} else {
				// A well-formed container holding a 16-byte key.
				require.NoError(t, storage.WriteSnapshot(e.path(keyName), "signing-key", func(w io.Writer) error {
					_, err := w.Write(make([]byte, 16))
					return err
				}))
			}
			before := storageFiles(t, e.storage)

			a, err := app.New(e.options())
			require.Error(t, err)
			require.Nil(t, a)
			require.ErrorContains(t, err, e.path(tc.file))
			if tc.corrupt {
				require.ErrorIs(t, err, storage.ErrCorrupt)
			}
			if tc.file == keyName && tc.damage == nil {
				require.ErrorContains(t, err, "key is 16 bytes, want 32")
			}
			if tc.file == journalName && tc.name != "journal bad magic" {
				require.ErrorContains(t, err, "an intact record follows")
			}
			require.Equal(t, before, storageFiles(t, e.storage), "a failed start must not change the state on disk")

			// It stays refused: a second attempt does not start from a reset.
			_, err = app.New(e.options())
			require.ErrorContains(t, err, e.path(tc.file))
		})
	}
}

// journalRecord encodes one journal record (storage's format: length word
// with the end-of-batch bit, CRC-32C of the word and the payload, payload).
func journalRecord(payload string, endOfBatch bool) []byte {
	word := uint32(len(payload))
	if endOfBatch {
		word |= 1 << 31
	}
	rec := binary.LittleEndian.AppendUint32(nil, word)
	crc := crc32.Update(0, crc32.MakeTable(crc32.Castagnoli), rec)
	crc = crc32.Update(crc, crc32.MakeTable(crc32.Castagnoli), []byte(payload))
	rec = binary.LittleEndian.AppendUint32(rec, crc)
	return append(rec, payload...)
}

const revokeA4 = `{"op":"revoke","tenant":"acme","agent":"a4","at":"2023-11-14T22:13:20Z","reason":"from the tail"}`

// A torn journal tail, the unfinished last write of a crash, which therefore
// was never acknowledged, is cut off and logged; every complete record is
// kept.
func TestTornJournalTail(t *testing.T) {
	fixture := corruptionFixture(t)

	for _, tc := range []struct {
		name string
		tail []byte
		torn bool
		// a4Revoked: the appended batch was complete, so it counts.
		a4Revoked bool
	}{
		{"text garbage", []byte("garbage!!"), true, false},
		{"incomplete record header", []byte{0x10, 0, 0}, true, false},
		{"half a record", journalRecord(revokeA4, true)[:30], true, false},
		{"record with a bad checksum", flipBit(func(n int) int { return n - 3 })(journalRecord(revokeA4, true)), true, false},
		{"batch without its end marker", journalRecord(revokeA4, false), true, false},
		{"complete batch (control)", journalRecord(revokeA4, true), false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := fixture.clone(t)
			e.mutate(journalName, func(b []byte) []byte { return append(b, tc.tail...) })

			s := e.start()
			if tc.torn {
				require.Contains(t, e.logs.String(), "truncating torn journal tail")
				require.Contains(t, e.logs.String(), e.path(journalName))
			} else {
				require.NotContains(t, e.logs.String(), "torn")
			}
			requireFixtureState(t, s, tc.a4Revoked)

			// What the start kept is durable: a second start sees the same
			// state and no torn tail.
			s.close()
			e.logs = &testutil.SyncBuffer{}
			s = e.start()
			require.NotContains(t, e.logs.String(), "torn")
			requireFixtureState(t, s, tc.a4Revoked)
		})
	}
}

func requireFixtureState(t *testing.T, s *running, a4Revoked bool) {
	t.Helper()
	require.Equal(t, 4, s.app.Store().Len())
	for _, id := range []string{"a1", "a2"} {
		a, ok := s.app.Store().Get(fleet.Key{Tenant: "acme", AgentID: id})
		require.True(t, ok)
		require.True(t, a.Revoked, id)
		d := s.installation(id).json(t)
		require.Equal(t, "revoked "+id, d["revocation"].(map[string]any)["reason"])
	}
	d := s.installation("a3").json(t)
	require.Equal(t, "pause", d["pending_command"].(map[string]any)["command"])
	require.Nil(t, d["revocation"])
	d = s.installation("a4").json(t)
	if a4Revoked {
		require.Equal(t, "from the tail", d["revocation"].(map[string]any)["reason"])
	} else {
		require.Nil(t, d["revocation"], "a batch never acknowledged must not be applied")
	}
}
