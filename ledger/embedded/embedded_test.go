package embedded_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/ledger"
	"github.com/agentsentinel/sentinel/ledger/embedded"
	"github.com/agentsentinel/sentinel/ledger/ledgertest"
	"github.com/agentsentinel/sentinel/storage"
)

func open(t *testing.T, dir string) *embedded.Ledger {
	t.Helper()
	l, err := embedded.Open(dir, embedded.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func TestConformance(t *testing.T) {
	ledgertest.Run(t, ledgertest.Backend{
		Open: func(t *testing.T) ledger.Ledger { return open(t, t.TempDir()) },
		Reopen: func(t *testing.T, l ledger.Ledger) ledger.Ledger {
			e := l.(*embedded.Ledger)
			require.NoError(t, e.Close())
			return open(t, e.Dir())
		},
	})
}

// A second sentinel on the same directory refuses to start, with an error
// naming the lock; once the first closes, it starts.
func TestLockedDirectory(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir)
	_, err := embedded.Open(dir, embedded.Options{})
	require.ErrorContains(t, err, filepath.Join(dir, embedded.LockFile))
	require.ErrorContains(t, err, "in use by another sentinel")
	require.NoError(t, l.Close())
	open(t, dir)
}

// The kill-switch journal of sentinel before the ledger is taken over by the
// first start, then retired.
func TestLegacyJournalMigrated(t *testing.T) {
	dir := t.TempDir()
	j, _, err := storage.OpenJournal(filepath.Join(dir, embedded.LegacyJournalFile), nil)
	require.NoError(t, err)
	require.NoError(t, j.Append(
		[]byte(`{"op":"register","tenant":"acme","agent":"a","at":"2026-01-01T00:00:00Z"}`),
		[]byte(`{"op":"revoke","tenant":"acme","agent":"a","at":"2026-01-01T00:00:00Z","reason":"old","shutdown_timeout_ms":1500,"source":"admin"}`),
		[]byte(`{"op":"command","tenant":"acme","agent":"b","at":"2026-01-01T00:00:00Z","command":"pause","seq":7}`),
	))
	require.NoError(t, j.Close())
	_, err = storage.ReadOrCreateKey(filepath.Join(dir, embedded.KeyFile), 32)
	require.NoError(t, err)

	l := open(t, dir)
	s, err := l.Load(context.Background())
	require.NoError(t, err)
	a := fleet.Key{Tenant: "acme", AgentID: "a"}
	require.Equal(t, "old", s.Revocations[a].Reason)
	require.Equal(t, 1500*time.Millisecond, s.Revocations[a].ShutdownTimeout)
	require.Equal(t, uint32(7), s.Commands[fleet.Key{Tenant: "acme", AgentID: "b"}].Seq)
	require.Contains(t, s.Registered, a)
	require.NoFileExists(t, filepath.Join(dir, embedded.LegacyJournalFile))
	require.FileExists(t, filepath.Join(dir, embedded.LegacyJournalFile+".migrated"))
	// Command sequence numbers go on from the legacy ones.
	res, err := l.Apply(context.Background(), ledger.SetCommand{Key: a, Command: fleet.CommandResume, IssuedAt: time.Now()})
	require.NoError(t, err)
	require.Equal(t, uint32(8), res.Ops[0].CommandSeq)
	require.NoError(t, l.Close())
	l = open(t, dir)
	s2, err := l.Load(context.Background())
	require.NoError(t, err)
	require.Equal(t, "old", s2.Revocations[a].Reason)
}

// A change of more ops than fit one journal record spans several records of
// one batch and comes back whole.
func TestLargeChangeSpansRecords(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir)
	ops := make([]ledger.Op, 5000)
	for i := range ops {
		ops[i] = ledger.Register{Key: fleet.Key{Tenant: "acme", AgentID: fmt.Sprint(i)}, At: time.Unix(0, 0)}
	}
	_, err := l.Apply(context.Background(), ops...)
	require.NoError(t, err)
	require.NoError(t, l.Close())
	s, err := open(t, dir).Load(context.Background())
	require.NoError(t, err)
	require.Len(t, s.Registered, 5000)
}
