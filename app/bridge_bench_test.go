package app_test

import (
	"fmt"
	"net/http"
	"testing"
)

// BenchmarkAlertmanagerNotification measures one Alertmanager notification
// of 100 firing AgentZombie alerts (each a transition, a revocation and two
// events), from request to the 200 that follows the durable (fsynced)
// commit on the embedded ledger; the goal is ≤ 50 ms, far under
// Alertmanager's 10 s webhook timeout. The baseline, in the same run, is one
// admin revocation: one agent, one fsynced commit.
func BenchmarkAlertmanagerNotification(b *testing.B) {
	acme, globex := newCustomer(&testing.T{}), newCustomer(&testing.T{})
	defer acme.srv.Close()
	defer globex.srv.Close()
	e := newEnv(&testing.T{}, bridgeConfig(acme.srv.URL, globex.srv.URL))
	r := e.start()
	defer r.close()
	n := 0
	agents := func(count int) []string {
		ids := make([]string, count)
		for j := range ids {
			n++
			ids[j] = fmt.Sprintf("bench-%d", n)
			r.register(ids[j], acmeKey, map[string]any{"heartbeat_interval_seconds": 1})
		}
		return ids
	}
	b.Run("alerts=100", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			var batch []amAlert
			for _, id := range agents(100) {
				batch = append(batch, amAlert{name: "AgentZombie", status: "firing", agent: id, startsAt: e.clock.Now()})
			}
			body := notification(batch...)
			b.StartTimer()
			if res := r.do(http.MethodPost, "/api/v1/alertmanager", bridgeToken, body); res.status != http.StatusOK {
				b.Fatalf("status %d: %s", res.status, res.body)
			}
		}
	})
	b.Run("baseline=admin-revoke", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			id := agents(1)[0]
			b.StartTimer()
			if res := r.do(http.MethodPost, "/api/v1/installations/"+id+"/revoke", acmeAdmin, nil); res.status != http.StatusOK {
				b.Fatalf("status %d: %s", res.status, res.body)
			}
		}
	})
}
