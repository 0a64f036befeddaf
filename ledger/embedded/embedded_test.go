package embedded_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/ledger"
	"github.com/agentsentinel/sentinel/ledger/embedded"
	"github.com/agentsentinel/sentinel/ledger/ledgertest"
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
