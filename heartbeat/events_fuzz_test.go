package heartbeat_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

// FuzzEvents posts arbitrary bodies to /v1/events, seeded from the table
// tests: every answer is JSON with a status of SPEC 2 (never a 5xx), and an
// accepted event answers a duplicate the second time.
func FuzzEvents(f *testing.F) {
	for _, seed := range []string{
		eventJSON("e1", "acme", "agent.heartbeat", "agent-1", ""),
		eventJSON("e2", "acme", "agent.shutdown", "agent-1", `{"exit_code":3}`),
		eventJSON("e3", "acme", "agent.heartbeat", "agent-1", `{"status":"degraded","heartbeat_interval_seconds":30,"platform":{"type":"kubernetes","pod_name":"p"},"metrics":{"requests_handled":1}}`),
		`{"tenant_id":"acme","event_type":"agent.heartbeat","source":"agent-1"}`,
		eventJSON(strings.Repeat("e", 129), "acme", "agent.heartbeat", "agent-1", ""),
		`{"event_id":"e3","event_type":"agent.heartbeat","source":"agent-1"}`,
		eventJSON("e4", "globex", "agent.heartbeat", "agent-1", ""),
		`{"event_id":"e6","tenant_id":"acme","source":"agent-1"}`,
		eventJSON("e5", "acme", "agent.crashed", "agent-1", ""),
		eventJSON("e6", "acme", "agent.heartbeat", "", ""),
		eventJSON("e7", "acme", "agent.heartbeat", "agent-1", `"healthy"`),
		eventJSON("e8", "acme", "agent.heartbeat", "agent-1", `{"status":"dead"}`),
		eventJSON("e9", "acme", "agent.heartbeat", "agent-1", `{"uptime_seconds":-3}`),
		`{"event_id":`, eventJSON("e10", "acme", "agent.heartbeat", "agent-1", "") + "]", "", "null", "[]",
	} {
		f.Add([]byte(seed))
	}
	allowed := []int{http.StatusOK, http.StatusBadRequest, http.StatusForbidden, http.StatusRequestEntityTooLarge,
		http.StatusUnprocessableEntity, http.StatusTooManyRequests}
	// One sentinel for every input, as in production: state accumulates.
	e := newEnv(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		post := func() *answer {
			req := httptest.NewRequest(http.MethodPost, "/v1/events", bytes.NewReader(data))
			req.Header.Set("Authorization", "Bearer "+acmeKey)
			rec := httptest.NewRecorder()
			e.handler.ServeHTTP(rec, req)
			return decodeAnswer(t, rec.Code, rec.Header(), rec.Body.Bytes())
		}
		a := post() // decodeAnswer requires JSON
		if !slices.Contains(allowed, a.status) {
			t.Fatalf("status %d: %s", a.status, a.raw)
		}
		if a.status != http.StatusOK || a.body["duplicate"] == true {
			return
		}
		if again := post(); again.status != http.StatusOK || again.body["duplicate"] != true {
			t.Fatalf("an accepted event sent again: %d %s", again.status, again.raw)
		}
	})
}
