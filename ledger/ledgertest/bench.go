package ledgertest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/internal/testutil"
	"github.com/agentsentinel/sentinel/ledger"
)

// BenchmarkRevocations measures acknowledged revocations with clients
// concurrent callers, each Apply one revocation of its own agent; it reports
// revocations/s.
func BenchmarkRevocations(b *testing.B, l ledger.Ledger, clients int) {
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				_, err := l.Apply(context.Background(), ledger.Revoke{
					Key:        fleet.Key{Tenant: "bench", AgentID: fmt.Sprintf("agent-%d", i)},
					Revocation: fleet.Revocation{Reason: "benchmark", ShutdownTimeout: 5 * time.Second, RevokedAt: t0, Source: "admin"},
				})
				if err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "revocations/s")
}

// BenchmarkRevokeAll measures one Apply revoking agents agents (a tenant's
// revoke-all), each with its agent.revoked event; it reports seconds per
// revoke-all, and the CPU seconds the process spent meanwhile (the wall
// time of a loaded machine says little).
func BenchmarkRevokeAll(b *testing.B, open func() ledger.Ledger, agents int) {
	var cpu time.Duration
	for i := range b.N {
		b.StopTimer()
		l := open()
		ops := make([]ledger.Op, agents)
		for j := range ops {
			id := fmt.Sprintf("agent-%d", j)
			ops[j] = ledger.Revoke{
				Key:        fleet.Key{Tenant: "bench", AgentID: id},
				Revocation: fleet.Revocation{Reason: "revoke-all", ShutdownTimeout: 5 * time.Second, RevokedAt: t0, Source: "admin"},
				Event:      &ledger.Event{ID: fmt.Sprintf("%d-%d", i, j), Tenant: "bench", AgentID: id, Type: "agent.revoked", CreatedAt: t0},
			}
		}
		b.StartTimer()
		before := testutil.ProcessCPU()
		res, err := l.Apply(context.Background(), ops...)
		cpu += testutil.ProcessCPU() - before
		if err != nil {
			b.Fatal(err)
		}
		if !res.Applied(agents - 1) {
			b.Fatal("not applied")
		}
		b.StopTimer()
		// Whatever the ledger does after (compaction) is not this
		// iteration's, nor the next's.
		if err := l.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/revoke-all")
	b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/revoke-all")
}
