package app_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

// BenchmarkAlertmanagerNotification100 measures one Alertmanager
// notification of 100 firing AgentZombie alerts, each a transition, a
// revocation and two events, from request to the 200 that follows the
// durable (fsynced) commit on the embedded ledger. Alertmanager's webhook
// timeout is 10 s by default; the goal is ≤ 50 ms.
func BenchmarkAlertmanagerNotification100(b *testing.B) {
	acme, globex := newCustomer(&testing.T{}), newCustomer(&testing.T{})
	defer acme.srv.Close()
	defer globex.srv.Close()
	t := &testing.T{}
	e := newEnv(t, bridgeConfig(acme.srv.URL, globex.srv.URL))
	r := e.start()
	defer r.close()
	const alerts = 100
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		batch := make([]amAlert, alerts)
		for j := range batch {
			id := fmt.Sprintf("bench-%d-%d", i, j)
			r.register(id, acmeKey, map[string]any{"heartbeat_interval_seconds": 1})
			batch[j] = amAlert{name: "AgentZombie", status: "firing", agent: id, startsAt: e.clock.Now()}
		}
		body := notification(batch...)
		b.StartTimer()
		res := r.do(http.MethodPost, "/api/v1/alertmanager", bridgeToken, body)
		if res.status != http.StatusOK {
			b.Fatalf("status %d: %s", res.status, res.body)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/notification")
	_ = time.Second
}
