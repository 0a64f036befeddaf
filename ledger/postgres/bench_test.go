package postgres_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/internal/testutil"
	"github.com/agentsentinel/sentinel/ledger"
	"github.com/agentsentinel/sentinel/ledger/ledgertest"
	"github.com/agentsentinel/sentinel/ledger/postgres"
)

func benchOpen(b *testing.B, dsn, replica string) *postgres.Ledger {
	l, err := postgres.Open(context.Background(), dsn, postgres.Options{Replica: replica})
	require.NoError(b, err)
	b.Cleanup(func() { _ = l.Close() })
	return l
}

// BenchmarkRevocations64: acknowledged (committed) revocations/s with 64
// concurrent clients.
func BenchmarkRevocations64(b *testing.B) {
	ledgertest.BenchmarkRevocations(b, benchOpen(b, testutil.PostgresDSN(b), "bench"), 64)
}

// BenchmarkRevokeAll100k: revoke-all of 100k agents in one transaction.
func BenchmarkRevokeAll100k(b *testing.B) {
	ledgertest.BenchmarkRevokeAll(b, func() ledger.Ledger { return benchOpen(b, testutil.PostgresDSN(b), "bench") }, 100_000)
}

// BenchmarkPropagation: the time from a revocation acknowledged by one
// replica (its commit returned) to its arrival at another replica's Watch,
// as p50 and p99 over b.N revocations (run with -benchtime=1000x).
func BenchmarkPropagation(b *testing.B) {
	dsn := testutil.PostgresDSN(b)
	l1, l2 := benchOpen(b, dsn, "one"), benchOpen(b, dsn, "two")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	seen := make(chan ledger.Revision, 64)
	s, err := l2.Load(ctx)
	require.NoError(b, err)
	go func() {
		_ = l2.Watch(ctx, s.Revision, func(c ledger.Change) error { seen <- c.Revision; return nil })
	}()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		res, err := l1.Apply(ctx, ledger.Revoke{
			Key:        fleet.Key{Tenant: "bench", AgentID: fmt.Sprintf("agent-%d", i)},
			Revocation: fleet.Revocation{Reason: "propagation", RevokedAt: time.Now(), Source: "admin"},
		})
		require.NoError(b, err)
		start := time.Now()
		for rev := range seen {
			if rev >= res.Revision {
				break
			}
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
}
