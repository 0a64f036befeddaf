package postgres_test

import (
	"context"
	"os"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

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
