package app_test

import (
	"context"
	"encoding/binary"
	"hash/crc32"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/app"
	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/ledger"
	"github.com/agentsentinel/sentinel/storage"

	"github.com/agentsentinel/sentinel/internal/testutil"
)

// Files under the storage path (app's constants, restated: they are part of
// what operators see on disk).
const (
	snapshotName = "agents.snapshot"
	journalName  = "ledger.journal"
	stateName    = "ledger.state"
	keyName      = "token.key"
)

// corruptionFixture is a storage directory written by a sentinel that
// crashed: four agents in the snapshot; then a1 and a2 revoked and a3 told
// to pause, each in its own journal batch. It returns the ledger's revision.
func corruptionFixture(t *testing.T) (*env, ledger.Revision) {
	t.Helper()
	e := newEnv(t, baseConfig)
	s := e.start()
	for _, id := range []string{"a1", "a2", "a3", "a4"} {
		s.register(id, acmeKey, nil)
	}
	// Registrations are committed in the background, batched: wait for
	// them, so that the revision read below is the journal's last.
	require.Eventually(t, func() bool {
		for _, id := range []string{"a1", "a2", "a3", "a4"} {
			if !s.app.Ledger().Registered(fleet.Key{Tenant: "acme", AgentID: id}) {
				return false
			}
		}
		return true
	}, 5*time.Second, time.Millisecond)
	require.NoError(t, s.app.Snapshot())
	for _, id := range []string{"a1", "a2"} {
		r := s.do(http.MethodPost, "/api/v1/installations/"+id+"/revoke", acmeAdmin, map[string]any{"reason": "revoked " + id})
		require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	}
	r := s.do(http.MethodPost, "/api/v1/installations/a3/command", acmeAdmin, map[string]any{"command": "pause"})
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	st, err := s.app.Ledger().Load(context.Background())
	require.NoError(t, err)
	s.server.Close()
	s.app.Crash()
	return e, st.Revision
}

// compactedFixture is corruptionFixture restarted twice: its whole state is
// in the state file, the journal holds only its header.
func compactedFixture(t *testing.T) *env {
	t.Helper()
	e, _ := corruptionFixture(t)
	for range 2 {
		e.start().close()
	}
	b, err := os.ReadFile(e.path(journalName))
	require.NoError(t, err)
	require.Len(t, b, 8, "the journal holds only its header")
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

type damage struct {
	name   string
	file   string
	damage func([]byte) []byte // nil: remove the file
	// msg is a further part of the error, besides the file's path.
	msg string
	// other: the error need not match ledger.ErrCorrupt (a format version
	// this build does not know may be a newer sentinel's).
	other bool
}

func truncate(n int) func([]byte) []byte {
	return func(b []byte) []byte { return b[:min(n, len(b))] }
}

func dropLast(n int) func([]byte) []byte {
	return func(b []byte) []byte { return b[:len(b)-n] }
}

// requireRefused checks that sentinel refuses to start on e with an error
// naming the damaged file and changes nothing on disk, twice.
func requireRefused(t *testing.T, e *env, file, msg string, other bool) {
	t.Helper()
	before := storageFiles(t, e.storage)
	a, err := app.New(e.options())
	require.Error(t, err)
	require.Nil(t, a)
	require.ErrorContains(t, err, e.path(file))
	if !other {
		require.ErrorIs(t, err, ledger.ErrCorrupt)
	}
	if msg != "" {
		require.ErrorContains(t, err, msg)
	}
	require.Equal(t, before, storageFiles(t, e.storage), "a failed start must not change the state on disk")
	// It stays refused: a second attempt does not start from a reset.
	_, err = app.New(e.options())
	require.ErrorContains(t, err, e.path(file))
}

func applyDamage(t *testing.T, e *env, d damage) {
	t.Helper()
	if d.damage == nil {
		require.NoError(t, os.Remove(e.path(d.file)))
		return
	}
	e.mutate(d.file, d.damage)
}

// Damage to anything that may hold an acknowledged action stops sentinel
// with an error that names the file, and nothing on disk is touched: never
// a silent reset.
func TestDamagedStateRefusesToStart(t *testing.T) {
	fixture, _ := corruptionFixture(t)
	for _, tc := range []damage{
		{"snapshot truncated to half", snapshotName, func(b []byte) []byte { return b[:len(b)/2] }, "", false},
		{"snapshot missing its last byte", snapshotName, dropLast(1), "", false},
		{"snapshot empty", snapshotName, truncate(0), "", false},
		{"snapshot bit flipped in the middle", snapshotName, flipBit(func(n int) int { return n / 2 }), "", false},
		{"snapshot bit flipped in the header", snapshotName, flipBit(func(int) int { return 3 }), "", false},
		{"snapshot bit flipped in the trailer", snapshotName, flipBit(func(n int) int { return n - 2 }), "", false},
		{"snapshot with trailing garbage", snapshotName, func(b []byte) []byte { return append(b, "garbage"...) }, "", false},
		{"state missing its last byte", stateName, dropLast(1), "", false},
		{"state bit flipped in the middle", stateName, flipBit(func(n int) int { return n / 2 }), "", false},
		{"state empty", stateName, truncate(0), "", false},
		{"state deleted next to a journal", stateName, nil, "missing next to the journal", false},
		// Header (8 bytes), then the first record's header (8 bytes) and payload.
		{"journal record damaged before intact ones", journalName, flipBit(func(int) int { return 8 + 8 + 5 }), "an intact record follows", false},
		{"journal record header damaged before intact ones", journalName, flipBit(func(int) int { return 8 + 5 }), "an intact record follows", false},
		{"journal bad magic", journalName, flipBit(func(int) int { return 0 }), "", false},
		{"journal deleted", journalName, nil, "missing next to the state file", false},
		{"journal empty", journalName, truncate(0), "truncated to 0 bytes", false},
		{"journal of 3 bytes", journalName, truncate(3), "truncated to 3 bytes", false},
		{"key deleted", keyName, nil, "signing key", false},
		{"key not in its container", keyName, func([]byte) []byte { return make([]byte, 32) }, "", false},
		{"key truncated", keyName, dropLast(4), "", false},
		{"key bit flipped", keyName, flipBit(func(n int) int { return n - 20 }), "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := fixture.clone(t)
			applyDamage(t, e, tc)
			requireRefused(t, e, tc.file, tc.msg, tc.other)
		})
	}

	t.Run("key of the wrong size", func(t *testing.T) {
		e := fixture.clone(t)
		// A well-formed container holding a 16-byte key.
		require.NoError(t, storage.WriteSnapshot(e.path(keyName), "signing-key", func(w io.Writer) error {
			_, err := w.Write(make([]byte, 16))
			return err
		}))
		_, err := app.New(e.options())
		require.ErrorContains(t, err, e.path(keyName))
		require.ErrorContains(t, err, "key is 16 bytes, want 32")
	})
}

// The case of the issue that made the ledger: revocations and a pending
// command, two restarts (each compacts the whole state into one file), then
// the last bytes of the state or the journal damaged. Sentinel refuses to
// start instead of taking the damage for a torn write.
func TestDamagedCompactedStateRefusesToStart(t *testing.T) {
	fixture := compactedFixture(t)
	for _, tc := range []damage{
		{"state: one byte truncated", stateName, dropLast(1), "", false},
		{"state: one bit flipped in the last record", stateName, flipBit(func(n int) int { return n - 1 }), "", false},
		{"state: bit flipped in the payload's last chunk", stateName, flipBit(func(n int) int { return n - 40 }), "", false},
		{"journal: one byte truncated", journalName, dropLast(1), "truncated to 7 bytes", false},
		{"journal: one bit flipped in its last byte", journalName, flipBit(func(n int) int { return n - 1 }), "unsupported format version", true},
		{"journal: empty", journalName, truncate(0), "", false},
		{"journal: deleted", journalName, nil, "", false},
		{"key: deleted", keyName, nil, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := fixture.clone(t)
			applyDamage(t, e, tc)
			requireRefused(t, e, tc.file, tc.msg, tc.other)
		})
	}
	// And undamaged, it starts with everything.
	s := fixture.clone(t).start()
	requireFixtureState(t, s, false)
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

// revokeA4 is the journal payload of the change after rev: a4 revoked.
func revokeA4(t *testing.T, rev ledger.Revision) string {
	t.Helper()
	b, err := ledger.EncodeChange(ledger.Change{Revision: rev + 1, Ops: []ledger.Op{ledger.Revoke{
		Key:        fleet.Key{Tenant: "acme", AgentID: "a4"},
		Revocation: fleet.Revocation{Reason: "from the tail", RevokedAt: time.Unix(1_700_000_000, 0).UTC(), Source: "admin"},
	}}})
	require.NoError(t, err)
	return string(b)
}

// A torn journal tail, the unfinished last write of a crash, which therefore
// was never acknowledged, is cut off and logged; every complete record is
// kept.
func TestTornJournalTail(t *testing.T) {
	fixture, rev := corruptionFixture(t)
	revokeA4 := revokeA4(t, rev)

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
