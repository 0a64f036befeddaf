package delivery_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/agentsentinel/sentinel/config"
	"github.com/agentsentinel/sentinel/delivery"
)

// BenchmarkSend is one signed delivery to a loopback endpoint that answers
// 204 at once: sentinel's own cost per attempt, connection reused.
func BenchmarkSend(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	cfg, err := config.Parse([]byte("tenants:\n"+tenantYAML("acme", srv.URL, []string{"s3cret", "older"}, "")), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	s := delivery.NewSender(delivery.Options{})
	if err := s.ApplyConfig(cfg); err != nil {
		b.Fatal(err)
	}
	m, err := delivery.Encode(delivery.NewAgentRevoked("acme", "agent-01", 1, "bench", time.Second, delivery.SourceAdmin, time.Now()))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if r := s.Send(b.Context(), "acme", m); r.Outcome != delivery.Delivered {
			b.Fatal(r.Err)
		}
	}
}
