package postgres_test

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/internal/testutil"
	"github.com/agentsentinel/sentinel/ledger"
	"github.com/agentsentinel/sentinel/ledger/ledgertest"
	"github.com/agentsentinel/sentinel/ledger/postgres"
)

func TestMain(m *testing.M) { os.Exit(testutil.MainWithPostgres(m)) }

var replicas atomic.Int64

type opened struct {
	*postgres.Ledger
	dsn string
}

func open(t *testing.T, dsn string) *opened {
	t.Helper()
	l, err := postgres.Open(context.Background(), dsn, postgres.Options{Replica: "r" + string(rune('a'+replicas.Add(1)%26))})
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	return &opened{Ledger: l, dsn: dsn}
}

func TestConformance(t *testing.T) {
	ledgertest.Run(t, ledgertest.Backend{
		Open: func(t *testing.T) ledger.Ledger { return open(t, testutil.PostgresDSN(t)) },
		Reopen: func(t *testing.T, l ledger.Ledger) ledger.Ledger {
			o := l.(*opened)
			require.NoError(t, o.Close())
			return open(t, o.dsn)
		},
		Second: func(t *testing.T, l ledger.Ledger) ledger.Ledger { return open(t, l.(*opened).dsn) },
	})
}

// A schema newer than this build is refused with a clear error, and nothing
// is changed.
func TestNewerSchemaRefused(t *testing.T) {
	dsn := testutil.PostgresDSN(t)
	l := open(t, dsn)
	require.NoError(t, l.Close())
	conn, err := pgx.Connect(context.Background(), dsn)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	_, err = conn.Exec(context.Background(), "INSERT INTO sentinel_schema_migrations (version) VALUES ($1)", postgres.SchemaVersion()+1)
	require.NoError(t, err)
	_, err = postgres.Open(context.Background(), dsn, postgres.Options{Replica: "x"})
	require.ErrorContains(t, err, fmt.Sprintf("schema is at version %d, newer than the version %d this sentinel knows", postgres.SchemaVersion()+1, postgres.SchemaVersion()))
}

// A DSN that does not parse is refused without quoting it: it may hold a
// password.
func TestBadDSNNotQuoted(t *testing.T) {
	_, err := postgres.Open(context.Background(), "postgres://user:s3cret@host:notaport/db", postgres.Options{Replica: "x"})
	require.Error(t, err)
	require.NotContains(t, err.Error(), "s3cret")
	require.NotContains(t, err.Error(), "host")
}

// An unreachable database fails the start with an error that names no
// configuration value.
func TestUnreachableNotQuoted(t *testing.T) {
	testutil.RequirePostgres(t)
	addr := testutil.FreeAddr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := postgres.Open(ctx, "postgres://sentinel_user:s3cret@"+addr+"/sentinel_db?sslmode=disable", postgres.Options{Replica: "x", CommitTimeout: time.Second})
	require.Error(t, err)
	for _, s := range []string{"s3cret", "sentinel_user", "sentinel_db", addr} {
		require.NotContains(t, err.Error(), s)
	}
}

// A large change (a revoke-all) is stored compressed with lz4, and another
// replica reads it back whole.
func TestLargeChangeCompressed(t *testing.T) {
	dsn := testutil.PostgresDSN(t)
	l := open(t, dsn)
	ops := make([]ledger.Op, 2000)
	for i := range ops {
		id := fmt.Sprintf("agent-%d", i)
		ops[i] = ledger.Revoke{
			Key:        fleet.Key{Tenant: "t", AgentID: id},
			Revocation: fleet.Revocation{Reason: "revoke-all", RevokedAt: time.Unix(1e9, 0).UTC(), Source: "admin"},
			Event:      &ledger.Event{ID: fmt.Sprintf("ev-%d", i), Tenant: "t", AgentID: id, Type: "agent.revoked", CreatedAt: time.Unix(1e9, 0).UTC()},
		}
	}
	res, err := l.Apply(context.Background(), ops...)
	require.NoError(t, err)

	conn, err := pgx.Connect(context.Background(), dsn)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var method string
	var stored, raw int64
	require.NoError(t, conn.QueryRow(context.Background(),
		"SELECT pg_column_compression(change), pg_column_size(change), octet_length(change) FROM ledger_changes WHERE revision = $1",
		int64(res.Revision)).Scan(&method, &stored, &raw))
	require.Equal(t, "lz4", method)
	require.Less(t, stored, raw/4, "a revoke-all's alike ops compress well")

	s, err := open(t, dsn).Load(context.Background())
	require.NoError(t, err)
	require.Equal(t, res.Revision, s.Revision)
	require.Len(t, s.Revocations, len(ops))
}
