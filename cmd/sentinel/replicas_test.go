package main

import (
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/internal/testutil"
)

func replicasConfig(dsn string) string {
	return `
heartbeat:
  default_interval: 1s
  min_interval: 1s
tenants:
  - id: acme
    api_keys: [acme-key-1]
    admin_tokens: [acme-admin]
storage:
  postgres:
    dsn: ` + dsn + `
`
}

// startReplicas starts n sentinel processes on one PostgreSQL database.
func startReplicas(t *testing.T, cfg string, n int) []*sentinelProc {
	t.Helper()
	ps := make([]*sentinelProc, n)
	for i := range ps {
		ps[i] = startReplica(t, cfg, i)
	}
	return ps
}

func startReplica(t *testing.T, cfg string, i int) *sentinelProc {
	t.Helper()
	return startSentinel(t, cfg, filepath.Join(t.TempDir(), "unused"),
		fmt.Sprintf("--storage.replica-name=replica-%d", i+1), "--storage.snapshot-interval=300ms")
}

// waitKnown waits until p's admin API knows agent id (registered through
// another replica: the registration reaches the others through the ledger).
func waitKnown(t *testing.T, p *sentinelProc, id string) {
	t.Helper()
	eventually(t, time.Second, func() bool {
		return p.mustRequest(http.MethodGet, "/api/v1/installations/"+id, "acme-admin", nil).status == http.StatusOK
	}, func() string { return id + " never known to " + p.base })
}

func listIDs(t *testing.T, p *sentinelProc) []string {
	t.Helper()
	r := p.mustRequest(http.MethodGet, "/api/v1/installations?limit=1000", "acme-admin", nil)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	var ids []string
	for _, it := range r.json(t)["installations"].([]any) {
		ids = append(ids, it.(map[string]any)["installation_id"].(string))
	}
	slices.Sort(ids)
	return ids
}

// TestReplicas checks the replicas contract with three real sentinel processes sharing one
// PostgreSQL, point by point.
func TestReplicas(t *testing.T) {
	dsn := testutil.PostgresDSN(t)
	cfg := filepath.Join(t.TempDir(), "sentinel.yml")
	writeFile(t, cfg, replicasConfig(dsn))
	ps := startReplicas(t, cfg, 3)
	r1, r2, r3 := ps[0], ps[1], ps[2]

	t.Run("a runtime token issued by one replica works on every other", func(t *testing.T) {
		tok := r2.register("token-agent", "acme-key-1", nil)
		for _, p := range []*sentinelProc{r1, r3} {
			m := p.beat("token-agent", tok, nil)
			require.Equal(t, true, m["lease_renewed"], "%v", m)
		}
	})

	t.Run("forgetting an agent invalidates its old runtime tokens on every replica", func(t *testing.T) {
		tok := r1.register("forgotten-agent", "acme-key-1", nil)
		waitKnown(t, r2, "forgotten-agent")
		r := r2.mustRequest(http.MethodPost, "/api/v1/installations/forgotten-agent/revoke", "acme-admin", map[string]any{"reason": "rogue"})
		require.Equal(t, http.StatusOK, r.status, "%s", r.body)
		r = r2.mustRequest(http.MethodDelete, "/api/v1/installations/forgotten-agent", "acme-admin", nil)
		require.Equal(t, http.StatusOK, r.status, "%s", r.body)
		for _, p := range ps {
			eventually(t, time.Second, func() bool {
				r := p.mustRequest(http.MethodPost, "/api/v1/installations/forgotten-agent/heartbeat", tok, nil)
				return r.status == http.StatusUnauthorized
			}, func() string { return "the old token still works on " + p.base })
		}
	})

	t.Run("a revocation through replica 1 is answered by replica 3 within 1s", func(t *testing.T) {
		tok := r3.register("revoked-agent", "acme-key-1", nil)
		waitKnown(t, r1, "revoked-agent")
		start := time.Now()
		r := r1.mustRequest(http.MethodPost, "/api/v1/installations/revoked-agent/revoke", "acme-admin", map[string]any{"reason": "through replica 1"})
		require.Equal(t, http.StatusOK, r.status, "%s", r.body)
		var m map[string]any
		eventually(t, time.Second, func() bool {
			m = r3.beat("revoked-agent", tok, nil)
			return m["revoked"] == true
		}, func() string { return fmt.Sprintf("replica 3 still answers %v after %s", m, time.Since(start)) })
		require.Equal(t, "through replica 1", m["reason"])
	})

	t.Run("a command through replica 2 reaches the agent on replica 1", func(t *testing.T) {
		tok := r1.register("commanded-agent", "acme-key-1", nil)
		waitKnown(t, r2, "commanded-agent")
		r := r2.mustRequest(http.MethodPost, "/api/v1/installations/commanded-agent/command", "acme-admin", map[string]any{"command": "pause"})
		require.Equal(t, http.StatusOK, r.status, "%s", r.body)
		var m map[string]any
		eventually(t, time.Second, func() bool {
			m = r1.beat("commanded-agent", tok, nil)
			return m["command"] == "pause"
		}, func() string { return fmt.Sprintf("replica 1 answers %v", m) })
	})

	t.Run("the admin API of replica 3 answers for agents that beat only on replica 1", func(t *testing.T) {
		r1.register("only-on-1", "acme-key-1", nil)
		eventually(t, 5*time.Second, func() bool {
			return slices.Contains(listIDs(t, r3), "only-on-1")
		}, func() string { return fmt.Sprintf("replica 3 lists %v", listIDs(t, r3)) })
		r := r3.mustRequest(http.MethodGet, "/api/v1/installations/only-on-1", "acme-admin", nil)
		require.Equal(t, http.StatusOK, r.status, "%s", r.body)
		// revoke-all on replica 3 reaches it.
		r = r3.mustRequest(http.MethodPost, "/api/v1/revoke-all", "acme-admin", map[string]any{"reason": "all"})
		require.Equal(t, http.StatusOK, r.status, "%s", r.body)
		// Undo, for the next subtests.
		for _, id := range listIDs(t, r3) {
			r = r3.mustRequest(http.MethodDelete, "/api/v1/installations/"+id+"/revoke", "acme-admin", nil)
			require.Equal(t, http.StatusOK, r.status, "%s", r.body)
		}
	})

	t.Run("kill -9 of a replica while admin clients write through all three loses no acknowledged action", func(t *testing.T) {
		const agents = 24
		toks := make([]string, agents)
		for i := range toks {
			toks[i] = ps[i%3].register(fmt.Sprintf("k9-%d", i), "acme-key-1", nil)
		}
		for i := range toks {
			for _, p := range ps {
				waitKnown(t, p, fmt.Sprintf("k9-%d", i))
			}
		}
		var acked sync.Map // agent id → reason acknowledged
		var stop atomic.Bool
		var wg sync.WaitGroup
		for w := range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; !stop.Load(); i = (i + 6) % agents {
					id := fmt.Sprintf("k9-%d", i)
					p := ps[(w+i)%3]
					reason := fmt.Sprintf("w%d-%d", w, i)
					r, err := p.request(http.MethodPost, "/api/v1/installations/"+id+"/revoke", "acme-admin", map[string]any{"reason": reason})
					if err == nil && r.status == http.StatusOK {
						acked.LoadOrStore(id, true)
					}
				}
			}()
		}
		time.Sleep(300 * time.Millisecond) // let writes flow through all three
		r2.kill()
		time.Sleep(200 * time.Millisecond)
		stop.Store(true)
		wg.Wait()
		n := 0
		acked.Range(func(k, _ any) bool {
			n++
			id := k.(string)
			for _, p := range []*sentinelProc{r1, r3} {
				eventually(t, time.Second, func() bool {
					d := p.mustRequest(http.MethodGet, "/api/v1/installations/"+id, "acme-admin", nil)
					return d.status == http.StatusOK && d.json(t)["revocation"] != nil
				}, func() string { return id + " lost its acknowledged revocation" })
			}
			return true
		})
		require.NotZero(t, n)
		// The killed replica comes back with everything.
		ps[1] = startReplica(t, cfg, 1)
		r2 = ps[1]
		acked.Range(func(k, _ any) bool {
			d := r2.mustRequest(http.MethodGet, "/api/v1/installations/"+k.(string), "acme-admin", nil)
			require.Equal(t, http.StatusOK, d.status, "%s", d.body)
			require.NotNil(t, d.json(t)["revocation"], k)
			return true
		})
	})

	t.Run("PostgreSQL down: admin writes answer 503 and change nothing, heartbeats go on, then it recovers", func(t *testing.T) {
		tok := r1.register("outage-agent", "acme-key-1", nil)
		eventually(t, 5*time.Second, func() bool { v, ok := r1.metric("sentinel_storage_healthy"); return ok && v == 1 },
			func() string { return "storage not healthy before the outage" })
		testutil.PausePostgres(t)
		eventually(t, 10*time.Second, func() bool { v, ok := r1.metric("sentinel_storage_healthy"); return ok && v == 0 },
			func() string { return "sentinel_storage_healthy did not drop to 0" })
		r := r1.mustRequest(http.MethodPost, "/api/v1/installations/outage-agent/revoke", "acme-admin", map[string]any{"reason": "during outage"})
		require.Equal(t, http.StatusServiceUnavailable, r.status, "%s", r.body)
		m := r1.beat("outage-agent", tok, nil)
		require.Equal(t, true, m["lease_renewed"], "heartbeats go on: %v", m)
		require.Equal(t, http.StatusOK, r1.mustRequest(http.MethodGet, "/-/healthy", "", nil).status)
		d := r1.mustRequest(http.MethodGet, "/api/v1/installations/outage-agent", "acme-admin", nil)
		require.Nil(t, d.json(t)["revocation"], "the refused write changed nothing")

		testutil.ResumePostgres(t)
		eventually(t, 20*time.Second, func() bool {
			r, err := r1.request(http.MethodPost, "/api/v1/installations/outage-agent/revoke", "acme-admin", map[string]any{"reason": "after outage"})
			return err == nil && r.status == http.StatusOK
		}, func() string { return "admin writes did not recover" })
		eventually(t, 5*time.Second, func() bool { v, ok := r1.metric("sentinel_storage_healthy"); return ok && v == 1 },
			func() string { return "sentinel_storage_healthy did not recover" })
		eventually(t, 2*time.Second, func() bool { return r3.beat("outage-agent", tok, nil)["revoked"] == true },
			func() string { return "replica 3 did not see the revocation after the outage" })
	})
}
