package embedded_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/ledger"
	"github.com/agentsentinel/sentinel/ledger/embedded"
	"github.com/agentsentinel/sentinel/ledger/ledgertest"
)

// BenchmarkRevocations64: acknowledged revocations/s with 64 concurrent
// clients, each durable (fdatasync) before it returns.
func BenchmarkRevocations64(b *testing.B) {
	l, err := embedded.Open(b.TempDir(), embedded.Options{})
	require.NoError(b, err)
	defer l.Close()
	ledgertest.BenchmarkRevocations(b, l, 64)
	st := l.Journal().Stats()
	b.ReportMetric(float64(st.Records)/float64(max(st.Syncs, 1)), "records/fsync")
}

// BenchmarkRevokeAll100k: revoke-all of 100k agents in one durable write.
func BenchmarkRevokeAll100k(b *testing.B) {
	ledgertest.BenchmarkRevokeAll(b, func() ledger.Ledger {
		l, err := embedded.Open(b.TempDir(), embedded.Options{})
		require.NoError(b, err)
		b.Cleanup(func() { _ = l.Close() })
		return l
	}, 100_000)
}
