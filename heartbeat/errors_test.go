package heartbeat_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/jsonapi"
)

// TestReceiverErrorAnswers: every kind of refusal of the receiver, with its
// exact status, headers and body, counted once under the result its status
// means (a 405 under none).
func TestReceiverErrorAnswers(t *testing.T) {
	e := newEnv(t, withAcmeMaxAgents(1))
	token := e.register("agent-1")
	results := []string{"accepted", "revoked", "duplicate", "bad_request", "unauthorized", "forbidden", "too_large", "unsupported", "refused"}
	oversized := `{"version":"` + strings.Repeat("x", jsonapi.MaxBodyBytes) + `"}`
	tests := []struct {
		name     string
		req      request
		protocol string
		status   int
		msg      string
		result   string            // "" counts nothing
		headers  map[string]string // "" is absent
	}{
		{"method", request{method: http.MethodGet, path: "/v1/heartbeat?agentId=agent-1", token: token}, "abs",
			http.StatusMethodNotAllowed, "method GET not allowed; use POST", "", map[string]string{"Allow": "POST"}},
		{"no credential", request{path: "/api/v1/installations/agent-1/heartbeat"}, "beacon",
			http.StatusUnauthorized, "", "unauthorized", map[string]string{"WWW-Authenticate": `Bearer realm="sentinel"`}},
		{"admin token", request{path: "/api/v1/installations/agent-1/heartbeat", token: acmeAdmin}, "beacon",
			http.StatusForbidden, "this credential cannot send heartbeats; use a tenant API key or the agent's runtime token", "forbidden", nil},
		{"token of another agent", request{path: "/v1/heartbeat?agentId=agent-9", token: token}, "abs",
			http.StatusForbidden, "runtime token is bound to another agent", "forbidden", nil},
		{"invalid agent id", request{path: "/v1/heartbeat?agentId=-x", token: acmeKey}, "abs",
			http.StatusBadRequest, "invalid agent id: must match ^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$", "bad_request", nil},
		{"malformed body", request{path: "/api/v1/installations/agent-1/heartbeat", token: token, body: strings.NewReader(`{"status":`)}, "beacon",
			http.StatusBadRequest, "", "bad_request", nil},
		{"too large", request{path: "/api/v1/installations/agent-1/heartbeat", token: token, body: strings.NewReader(oversized)}, "beacon",
			http.StatusRequestEntityTooLarge, "request body over 65536 bytes", "too_large", nil},
		{"unsupported status", request{path: "/api/v1/installations/agent-1/heartbeat", token: token, body: strings.NewReader(`{"status":"sleepy"}`)}, "beacon",
			http.StatusUnprocessableEntity, "", "unsupported", nil},
		{"event without id", request{path: "/v1/events", token: token, body: strings.NewReader(`{"tenant_id":"acme"}`)}, "events",
			http.StatusBadRequest, "event_id is required (at most 128 bytes)", "bad_request", nil},
		{"event of another tenant", request{path: "/v1/events", token: token, body: strings.NewReader(`{"event_id":"e1","tenant_id":"globex"}`)}, "events",
			http.StatusForbidden, "tenant_id is not the credential's tenant", "forbidden", nil},
		{"tenant full", request{path: "/v1/heartbeat?agentId=agent-2", token: acmeKey, body: strings.NewReader(`{"heartbeat_interval_seconds":30}`)}, "abs",
			http.StatusTooManyRequests, "agent limit reached (this tenant's max_agents); no new agent of the tenant is admitted", "refused",
			map[string]string{"Retry-After": "30"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := map[string]float64{}
			for _, r := range results {
				before[r] = e.heartbeats(tt.protocol, r)
			}
			a := e.do(tt.req)
			requireError(t, a, tt.status, tt.msg)
			if tt.msg != "" {
				require.Equal(t, tt.msg, a.body["error"])
			}
			require.Equal(t, "no-store", a.header.Get("Cache-Control"))
			for _, h := range []string{"Allow", "WWW-Authenticate", "Retry-After"} {
				require.Equal(t, tt.headers[h], a.header.Get(h), h)
			}
			for _, r := range results {
				want := before[r]
				if r == tt.result {
					want++
				}
				require.Equal(t, want, e.heartbeats(tt.protocol, r), r)
			}
		})
	}
}
