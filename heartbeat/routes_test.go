package heartbeat_test

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestRoutesAnswerAsServeMux sends the same requests to sentinel behind the
// receiver's Routes and to one with ServeMux alone, in the same order from
// the same state, and requires the same answers: Routes only saves
// ServeMux's work, it never routes differently.
func TestRoutesAnswerAsServeMux(t *testing.T) {
	fast, plain := newEnv(t), newEnv(t)
	for _, tc := range []struct{ method, target string }{
		{"POST", "/api/v1/installations/b1/heartbeat"},
		{"POST", "/api/v1/installations/b1/heartbeat"},
		{"GET", "/api/v1/installations/b1/heartbeat"},
		{"CONNECT", "/api/v1/installations/b1/heartbeat"},
		{"POST", "/api/v1/installations/b%31/heartbeat"},
		{"POST", "/api/v1/installations/b%2F1/heartbeat"},
		{"POST", "/api/v1/installations/b%201/heartbeat"},
		{"POST", "/api/v1/installations/%2E%2E/heartbeat"},
		{"POST", "/api/v1/installations/../heartbeat"},
		{"POST", "/api/v1/installations/./heartbeat"},
		{"POST", "/api/v1/installations//heartbeat"},
		{"POST", "/api/v1/installations/a/b/heartbeat"},
		{"POST", "/api/v1/installations/b1/heartbeat/"},
		{"POST", "/api/v1/installations/heartbeat"},
		{"POST", "/api/v1/installations/b1/heartbeat?x=1"},
		{"POST", "/v1/heartbeat?agentId=a1"},
		{"POST", "/v1/heartbeat?agentId=a1"},
		{"PUT", "/v1/heartbeat?agentId=a1"},
		{"POST", "/v1/heartbeat"},
		{"POST", "/v1/heartbeat?agentId="},
		{"POST", "/v1/heartbeat?agentId=a%2F1"},
		{"POST", "/v1/heartbeat?agentId=a%3A2"},
		{"POST", "/v1/heartbeat?agentId=a+3"},
		{"POST", "/v1/heartbeat?agentId=a4&agentId=a5"},
		{"POST", "/v1/heartbeat?x=1&agentId=a6"},
		{"POST", "/v1/heartbeat?agentId=a7;x=1"},
		{"POST", "/v1/heartbeat?agentId=a8=9"},
		{"POST", "/v1/%68eartbeat?agentId=a9"},
		{"POST", "/v1%2Fheartbeat?agentId=a10"},
		{"POST", "/v1/heartbeat/?agentId=a11"},
		{"POST", "/v1/./heartbeat?agentId=a12"},
		{"POST", "/v1/events"},
	} {
		answers := make([]*httptest.ResponseRecorder, 2)
		for i, h := range []http.Handler{fast.handler, plain.mux} {
			req := httptest.NewRequest(tc.method, tc.target, strings.NewReader(`{"status":"healthy"}`))
			req.Header.Set("Authorization", "Bearer "+acmeKey)
			answers[i] = httptest.NewRecorder()
			h.ServeHTTP(answers[i], req)
		}
		require.Equal(t, answers[1].Code, answers[0].Code, "%s %s", tc.method, tc.target)
		require.Equal(t, answers[1].Header(), answers[0].Header(), "%s %s", tc.method, tc.target)
		require.Equal(t, answers[1].Body.String(), answers[0].Body.String(), "%s %s", tc.method, tc.target)
	}
	// The same agents in the same states (series order is the store's).
	sorted := func(e *env) []string { return slices.Sorted(strings.Lines(e.scrape())) }
	require.Equal(t, sorted(plain), sorted(fast))
}
