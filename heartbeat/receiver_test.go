package heartbeat_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/auth"
	"github.com/agentsentinel/sentinel/config"
	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/heartbeat"
	"github.com/agentsentinel/sentinel/jsonapi"
)

// requireError checks an error answer of SPEC 2: the status, a JSON body
// that is exactly {"error": "<message>"} containing msg, and the Bearer
// challenge on every 401.
func requireError(t *testing.T, a *answer, status int, msg string) {
	t.Helper()
	require.Equal(t, status, a.status, a.raw)
	require.Equal(t, "application/json", a.header.Get("Content-Type"))
	require.Equal(t, []string{"error"}, a.keys(), a.raw)
	require.NotEmpty(t, a.str("error"))
	require.Contains(t, a.str("error"), msg)
	if status == http.StatusUnauthorized {
		require.True(t, strings.HasPrefix(a.header.Get("WWW-Authenticate"), "Bearer"),
			"401 without a Bearer challenge: %q", a.header.Get("WWW-Authenticate"))
	} else {
		require.Empty(t, a.header.Get("WWW-Authenticate"))
	}
}

func beaconPath(id string) string {
	return "/api/v1/installations/" + url.PathEscape(id) + "/heartbeat"
}

func absPath(id string) string { return "/v1/heartbeat?agentId=" + url.QueryEscape(id) }

func body(s string) io.Reader { return strings.NewReader(s) }

// chunked hides the length of s, as a body sent with chunked encoding.
func chunked(s string) io.Reader { return io.MultiReader(strings.NewReader(s)) }

func eventJSON(id, tenant, typ, source, payload string) string {
	s := `{"event_id":"` + id + `","tenant_id":"` + tenant + `","event_type":"` + typ + `","source":"` + source + `"`
	if payload != "" {
		s += `,"payload":` + payload
	}
	return s + "}"
}

// tamper flips one character of part (0 prefix, 1 payload, 2 signature) of
// a runtime token.
func tamper(t *testing.T, token string, part int) string {
	t.Helper()
	rest, ok := strings.CutPrefix(token, auth.RuntimeTokenPrefix)
	require.True(t, ok)
	payload, sig, ok := strings.Cut(rest, ".")
	require.True(t, ok)
	flip := func(s string) string {
		b := []byte(s)
		i := len(b) / 2
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	switch part {
	case 0:
		return "srx_" + rest
	case 1:
		return auth.RuntimeTokenPrefix + flip(payload) + "." + sig
	default:
		return auth.RuntimeTokenPrefix + payload + "." + flip(sig)
	}
}

func TestReceiverErrors(t *testing.T) {
	e := newEnv(t)
	agentToken := e.register("agent-1")
	e.register("agent-2")
	gx := e.beacon("gx-1", globexKey, "")
	require.Equal(t, http.StatusOK, gx.status, gx.raw)
	globexToken := gx.obj("runtime_token")["runtime_token"].(string)

	other, err := auth.NewSigner(bytes.Repeat([]byte{1}, auth.KeySize))
	require.NoError(t, err)
	now := e.clock.Now()
	rt := func(s *auth.Signer, tenant, id string, exp time.Time) string {
		return s.Issue(auth.RuntimeToken{Tenant: tenant, AgentID: id, Version: 1, ExpiresAt: exp})
	}
	oversized := `{"version":"` + strings.Repeat("x", jsonapi.MaxBodyBytes) + `"}`
	long := strings.Repeat("v", heartbeat.MaxStringLen+1)

	tests := []struct {
		name   string
		req    request
		status int
		msg    string
	}{
		// Credentials.
		{"missing credential", request{path: beaconPath("agent-1")}, 401, "missing bearer credential"},
		{"missing credential abs", request{path: absPath("agent-1")}, 401, "missing bearer credential"},
		{"missing credential events", request{path: "/v1/events", body: body(eventJSON("e", "acme", "agent.heartbeat", "agent-1", ""))}, 401, "missing bearer credential"},
		{"basic scheme", request{path: beaconPath("agent-1"), auth: "Basic YWNtZTprZXk="}, 401, "missing bearer credential"},
		{"scheme only", request{path: beaconPath("agent-1"), auth: "Bearer"}, 401, "missing bearer credential"},
		{"blank token", request{path: beaconPath("agent-1"), auth: "Bearer    "}, 401, "missing bearer credential"},
		{"no scheme", request{path: beaconPath("agent-1"), auth: acmeKey}, 401, "missing bearer credential"},
		{"scheme with colon", request{path: beaconPath("agent-1"), auth: "Bearer:" + acmeKey}, 401, "missing bearer credential"},
		{"unknown credential", request{path: beaconPath("agent-1"), token: "not-a-key"}, 401, "unknown credential"},
		{"unknown credential abs", request{path: absPath("agent-1"), token: "not-a-key"}, 401, "unknown credential"},
		{"bare runtime prefix", request{path: beaconPath("agent-1"), token: "srt_"}, 401, "unknown credential"},
		{"expired runtime token", request{path: beaconPath("agent-1"), token: rt(e.signer, "acme", "agent-1", now.Add(-time.Hour))}, 401, "expired"},
		{"runtime token expiring now", request{path: beaconPath("agent-1"), token: rt(e.signer, "acme", "agent-1", now)}, 401, "expired"},
		{"expired runtime token abs", request{path: absPath("agent-1"), token: rt(e.signer, "acme", "agent-1", now.Add(-time.Second))}, 401, "expired"},
		{"forged runtime token", request{path: beaconPath("agent-1"), token: rt(other, "acme", "agent-1", now.Add(time.Hour))}, 401, "unknown credential"},
		{"tampered prefix", request{path: beaconPath("agent-1"), token: tamper(t, agentToken, 0)}, 401, "unknown credential"},
		{"tampered payload", request{path: beaconPath("agent-1"), token: tamper(t, agentToken, 1)}, 401, "unknown credential"},
		{"tampered signature", request{path: beaconPath("agent-1"), token: tamper(t, agentToken, 2)}, 401, "unknown credential"},
		{"truncated runtime token", request{path: beaconPath("agent-1"), token: agentToken[:len(agentToken)-5]}, 401, "unknown credential"},
		{"runtime token without signature", request{path: beaconPath("agent-1"), token: strings.Split(agentToken, ".")[0]}, 401, "unknown credential"},
		{"runtime token of an unknown tenant", request{path: beaconPath("agent-1"), token: rt(e.signer, "initech", "agent-1", now.Add(time.Hour))}, 401, "unknown credential"},
		{"runtime token of another agent", request{path: beaconPath("agent-2"), token: agentToken}, 403, "another agent"},
		{"runtime token of another agent abs", request{path: absPath("agent-2"), token: agentToken}, 403, "another agent"},
		{"runtime token of another agent events", request{path: "/v1/events", token: agentToken, body: body(eventJSON("e1", "acme", "agent.heartbeat", "agent-2", ""))}, 403, "another agent"},
		{"runtime token of another tenant's agent", request{path: beaconPath("agent-1"), token: globexToken}, 403, "another agent"},
		{"runtime token of another tenant's agent abs", request{path: absPath("agent-1"), token: globexToken}, 403, "another agent"},
		{"global admin token", request{path: beaconPath("agent-1"), token: globalAdmin}, 403, "cannot send heartbeats"},
		{"tenant admin token", request{path: beaconPath("agent-1"), token: acmeAdmin}, 403, "cannot send heartbeats"},
		{"tenant admin token abs", request{path: absPath("agent-1"), token: acmeAdmin}, 403, "cannot send heartbeats"},
		{"bridge token", request{path: beaconPath("agent-1"), token: bridgeToken}, 403, "cannot send heartbeats"},
		{"bridge token events", request{path: "/v1/events", token: bridgeToken, body: body(eventJSON("e2", "acme", "agent.heartbeat", "agent-1", ""))}, 403, "cannot send heartbeats"},

		// Methods.
		{"GET beacon", request{method: http.MethodGet, path: beaconPath("agent-1"), token: acmeKey}, 405, "method GET not allowed"},
		{"PUT beacon", request{method: http.MethodPut, path: beaconPath("agent-1"), token: acmeKey}, 405, "method PUT not allowed"},
		{"GET abs", request{method: http.MethodGet, path: absPath("agent-1"), token: acmeKey}, 405, "method GET not allowed"},
		{"GET events", request{method: http.MethodGet, path: "/v1/events", token: acmeKey}, 405, "method GET not allowed"},

		// Agent ids.
		{"abs without agentId", request{path: "/v1/heartbeat", token: acmeKey}, 400, "invalid agent id"},

		// Bodies.
		{"truncated JSON", request{path: beaconPath("agent-1"), token: acmeKey, body: body(`{"status":`)}, 400, "malformed JSON"},
		{"trailing garbage", request{path: beaconPath("agent-1"), token: acmeKey, body: body(`{"status":"healthy"} x`)}, 400, "malformed JSON"},
		{"two objects", request{path: beaconPath("agent-1"), token: acmeKey, body: body(`{}{}`)}, 400, "malformed JSON"},
		{"array body", request{path: beaconPath("agent-1"), token: acmeKey, body: body(`[]`)}, 400, "malformed JSON"},
		{"string body", request{path: absPath("agent-1"), token: acmeKey, body: body(`"healthy"`)}, 400, "malformed JSON"},
		{"status of wrong type", request{path: beaconPath("agent-1"), token: acmeKey, body: body(`{"status":5}`)}, 400, "malformed JSON"},
		{"uptime of wrong type", request{path: beaconPath("agent-1"), token: acmeKey, body: body(`{"uptime_seconds":"10"}`)}, 400, "malformed JSON"},
		{"platform of wrong type", request{path: beaconPath("agent-1"), token: acmeKey, body: body(`{"platform":"docker"}`)}, 400, "malformed JSON"},
		{"metrics of wrong type", request{path: absPath("agent-1"), token: acmeKey, body: body(`{"metrics":{"errors":"2"}}`)}, 400, "malformed JSON"},
		{"fractional exit code", request{path: beaconPath("agent-1"), token: acmeKey, body: body(`{"exit_code":1.5}`)}, 400, "malformed JSON"},
		{"unknown status", request{path: beaconPath("agent-1"), token: acmeKey, body: body(`{"status":"dead"}`)}, 422, `status "dead"`},
		{"status in capitals", request{path: absPath("agent-1"), token: acmeKey, body: body(`{"status":"HEALTHY"}`)}, 422, `status "HEALTHY"`},
		{"unknown platform type", request{path: beaconPath("agent-1"), token: acmeKey, body: body(`{"platform":{"type":"vm"}}`)}, 422, `platform.type "vm"`},
		{"negative uptime", request{path: beaconPath("agent-1"), token: acmeKey, body: body(`{"uptime_seconds":-1}`)}, 400, "uptime_seconds"},
		{"negative interval", request{path: beaconPath("agent-1"), token: acmeKey, body: body(`{"heartbeat_interval_seconds":-60}`)}, 400, "heartbeat_interval_seconds"},
		{"zero interval", request{path: absPath("agent-1"), token: acmeKey, body: body(`{"heartbeat_interval_seconds":0}`)}, 400, "heartbeat_interval_seconds"},
		{"negative requests", request{path: beaconPath("agent-1"), token: acmeKey, body: body(`{"metrics":{"requests_handled":-1}}`)}, 400, "must not be negative"},
		{"negative errors", request{path: beaconPath("agent-1"), token: acmeKey, body: body(`{"metrics":{"errors":-2}}`)}, 400, "must not be negative"},
		{"negative latency", request{path: absPath("agent-1"), token: acmeKey, body: body(`{"metrics":{"avg_latency_ms":-0.5}}`)}, 400, "must not be negative"},
		{"version too long", request{path: beaconPath("agent-1"), token: acmeKey, body: body(`{"version":"` + long + `"}`)}, 400, "version"},
		{"hostname too long", request{path: beaconPath("agent-1"), token: acmeKey, body: body(`{"platform":{"hostname":"` + long + `"}}`)}, 400, "platform.hostname"},
		{"body over 64 KiB", request{path: beaconPath("agent-1"), token: acmeKey, body: body(oversized)}, 413, "request body over 65536 bytes"},
		{"body over 64 KiB chunked", request{path: beaconPath("agent-1"), token: acmeKey, body: chunked(oversized)}, 413, "request body over 65536 bytes"},
		{"body over 64 KiB abs", request{path: absPath("agent-1"), token: acmeKey, body: body(oversized)}, 413, "request body over 65536 bytes"},
		{"body over 64 KiB events chunked", request{path: "/v1/events", token: acmeKey, body: chunked(oversized)}, 413, "request body over 65536 bytes"},

		// Events.
		{"event without event_id", request{path: "/v1/events", token: acmeKey, body: body(`{"tenant_id":"acme","event_type":"agent.heartbeat","source":"agent-1"}`)}, 400, "event_id is required"},
		{"event_id too long", request{path: "/v1/events", token: acmeKey, body: body(eventJSON(strings.Repeat("e", 129), "acme", "agent.heartbeat", "agent-1", ""))}, 400, "event_id"},
		{"event without tenant_id", request{path: "/v1/events", token: acmeKey, body: body(`{"event_id":"e3","event_type":"agent.heartbeat","source":"agent-1"}`)}, 400, "tenant_id is required"},
		{"event of another tenant", request{path: "/v1/events", token: acmeKey, body: body(eventJSON("e4", "globex", "agent.heartbeat", "agent-1", ""))}, 403, "tenant_id"},
		{"event of another tenant with a runtime token", request{path: "/v1/events", token: agentToken, body: body(eventJSON("e4", "globex", "agent.heartbeat", "agent-1", ""))}, 403, "tenant_id"},
		{"event without event_type", request{path: "/v1/events", token: acmeKey, body: body(`{"event_id":"e6","tenant_id":"acme","source":"agent-1"}`)}, 400, "event_type is required"},
		{"event with an empty event_type", request{path: "/v1/events", token: acmeKey, body: body(eventJSON("e7", "acme", "", "agent-1", ""))}, 400, "event_type is required"},
		{"unsupported event type", request{path: "/v1/events", token: acmeKey, body: body(eventJSON("e5", "acme", "agent.crashed", "agent-1", ""))}, 422, `unsupported event_type "agent.crashed"`},
		{"event without source", request{path: "/v1/events", token: acmeKey, body: body(eventJSON("e6", "acme", "agent.heartbeat", "", ""))}, 400, "invalid agent id"},
		{"event with a malformed payload", request{path: "/v1/events", token: acmeKey, body: body(eventJSON("e7", "acme", "agent.heartbeat", "agent-1", `"healthy"`))}, 400, "malformed payload"},
		{"event with a bad payload status", request{path: "/v1/events", token: acmeKey, body: body(eventJSON("e8", "acme", "agent.heartbeat", "agent-1", `{"status":"dead"}`))}, 422, `status "dead"`},
		{"event with a negative payload metric", request{path: "/v1/events", token: acmeKey, body: body(eventJSON("e9", "acme", "agent.heartbeat", "agent-1", `{"uptime_seconds":-3}`))}, 400, "uptime_seconds"},
		{"event body malformed", request{path: "/v1/events", token: acmeKey, body: body(`{"event_id":`)}, 400, "malformed JSON"},
		{"event body trailing garbage", request{path: "/v1/events", token: acmeKey, body: body(eventJSON("e10", "acme", "agent.heartbeat", "agent-1", "") + "]")}, 400, "malformed JSON"},
	}
	before := map[string]heartbeat.Agent{}
	for _, id := range []string{"agent-1", "agent-2"} {
		a, ok := e.agent("acme", id)
		require.True(t, ok)
		before[id] = a
	}
	e.clock.Advance(time.Second)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := e.do(tt.req)
			requireError(t, a, tt.status, tt.msg)
			if tt.status == http.StatusMethodNotAllowed {
				require.Equal(t, "POST", a.header.Get("Allow"))
			}
		})
	}
	// No error changed an agent or created one.
	require.Equal(t, 3, e.store.Len())
	for id, want := range before {
		got, ok := e.agent("acme", id)
		require.True(t, ok)
		require.Equal(t, want, got, id)
	}
	require.Equal(t, float64(2), e.heartbeats("beacon", "too_large"))
	require.Equal(t, float64(1), e.heartbeats("abs", "too_large"))
	require.Equal(t, float64(1), e.heartbeats("events", "too_large"))
	require.Equal(t, float64(2), e.heartbeats("events", "unsupported"), "an event type and a payload status")
	require.Equal(t, float64(3), e.heartbeats("beacon", "accepted"), "the registrations of the setup")
	require.Zero(t, e.heartbeats("abs", "accepted"))
	require.Zero(t, e.heartbeats("events", "accepted"))
}

// TestReceiverBodyLimitOverHTTP sends the oversized bodies through a real
// server, with a Content-Length and chunked without one.
func TestReceiverBodyLimitOverHTTP(t *testing.T) {
	e := newEnv(t)
	var lengths []int64
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		lengths = append(lengths, r.ContentLength)
		mu.Unlock()
		e.handler.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	oversized := `{"version":"` + strings.Repeat("x", jsonapi.MaxBodyBytes) + `"}`
	for _, tt := range []struct {
		name   string
		body   io.Reader
		length int64
	}{
		{"content-length", strings.NewReader(oversized), int64(len(oversized))},
		{"chunked", chunked(oversized), -1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, srv.URL+beaconPath("agent-1"), tt.body)
			require.NoError(t, err)
			req.ContentLength = tt.length
			req.Header.Set("Authorization", "Bearer "+acmeKey)
			resp, err := srv.Client().Do(req)
			require.NoError(t, err)
			raw, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			require.NoError(t, resp.Body.Close())
			requireError(t, decodeAnswer(t, resp.StatusCode, resp.Header, raw), http.StatusRequestEntityTooLarge, "request body over 65536 bytes")
		})
	}
	require.Equal(t, []int64{int64(len(oversized)), -1}, lengths, "the second body came chunked, without a length")
	require.Zero(t, e.store.Len())
}

// TestReceiverBodyAtLimit accepts a body of exactly 64 KiB.
func TestReceiverBodyAtLimit(t *testing.T) {
	e := newEnv(t)
	b := `{"status":"healthy"}`
	b += strings.Repeat(" ", jsonapi.MaxBodyBytes-len(b))
	require.Len(t, b, jsonapi.MaxBodyBytes)
	for _, r := range []io.Reader{strings.NewReader(b), chunked(b)} {
		a := e.do(request{path: beaconPath("agent-1"), token: acmeKey, body: r})
		require.Equal(t, http.StatusOK, a.status, a.raw)
	}
}

// TestReceiverUnknownFieldsIgnored: every field is optional and unknown ones
// are ignored (SPEC 2.1).
func TestReceiverUnknownFieldsIgnored(t *testing.T) {
	e := newEnv(t)
	a := e.beacon("agent-1", acmeKey, `{"status":"degraded","future":{"x":[1,2]},"platform":{"type":"lambda","new_field":true}}`)
	require.Equal(t, http.StatusOK, a.status, a.raw)
	ag, ok := e.agent("acme", "agent-1")
	require.True(t, ok)
	require.Equal(t, heartbeat.StatusDegraded, ag.Status)
	require.Equal(t, heartbeat.PlatformLambda, ag.Platform.Type)
}

// TestReceiverBadAgentID answers 400 to every id outside the pattern, by every
// protocol, and such an id never reaches the store or /metrics.
func TestReceiverBadAgentID(t *testing.T) {
	e := newEnv(t)
	bad := []struct{ name, id string }{
		{"empty", ""},
		{"129 characters", strings.Repeat("a", 129)},
		{"space", "agent 1"},
		{"slash", "team/agent"},
		{"leading dot", ".agent"},
		{"leading dash", "-agent"},
		{"leading underscore", "_agent"},
		{"hash", "agent#1"},
		{"quote", `agent"1`},
		{"brace", "agent{1}"},
		{"newline", "agent\n1"},
		{"non-ASCII", "agënt"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if tt.id != "" { // an empty path segment never reaches the handler
				requireError(t, e.do(request{path: beaconPath(tt.id), token: acmeKey}), 400, "invalid agent id")
			}
			requireError(t, e.do(request{path: absPath(tt.id), token: acmeKey}), 400, "invalid agent id")
			ev := `{"event_id":"ev","tenant_id":"acme","event_type":"agent.heartbeat","source":` + jsonString(tt.id) + `}`
			requireError(t, e.do(request{path: "/v1/events", token: acmeKey, body: body(ev)}), 400, "invalid agent id")
		})
	}
	require.Zero(t, e.store.Len())
	require.NotContains(t, e.scrape(), "agent_id=")
	require.Equal(t, float64(len(bad)*3-1), e.heartbeats("beacon", "bad_request")+e.heartbeats("abs", "bad_request")+e.heartbeats("events", "bad_request"))

	// The boundaries of the pattern are accepted.
	for _, id := range []string{strings.Repeat("a", 128), "A", "0.9_x:y@z-w", "agent.with.dots"} {
		a := e.beacon(url.PathEscape(id), acmeKey, "")
		require.Equal(t, http.StatusOK, a.status, a.raw)
		require.Equal(t, id, a.str("installation_id"))
	}
	require.Contains(t, e.scrape(), `agent_id="`+strings.Repeat("a", 128)+`"`)
}

func jsonString(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return strings.TrimSpace(b.String())
}

func TestBeaconRegistration(t *testing.T) {
	e := newEnv(t)
	a := e.beacon("agent-1", acmeKey, `{"status":"healthy","heartbeat_interval_seconds":30,"version":"1.4.2"}`)
	require.Equal(t, http.StatusOK, a.status, a.raw)
	require.Equal(t, "application/json", a.header.Get("Content-Type"))
	require.Equal(t, []string{
		"command", "heartbeat_interval_seconds", "installation_id", "lease_duration_seconds", "lease_expires_at",
		"lease_renewed", "next_heartbeat_at", "refreshed_token", "registered", "runtime_token", "state",
	}, a.keys())
	require.Equal(t, "agent-1", a.str("installation_id"))
	require.Equal(t, true, a.body["lease_renewed"])
	require.Equal(t, "ACTIVE", a.str("state"))
	require.Equal(t, true, a.body["registered"])
	require.Equal(t, float64(30*5), a.body["lease_duration_seconds"])
	require.Equal(t, float64(30), a.body["heartbeat_interval_seconds"])
	require.Equal(t, rfc3339(t0.Add(30*time.Second)), a.str("next_heartbeat_at"))
	require.Equal(t, rfc3339(t0.Add(5*30*time.Second)), a.str("lease_expires_at"))
	require.Nil(t, a.body["command"])
	require.Nil(t, a.body["refreshed_token"])

	tokenTTL := time.Duration(e.cfg.Heartbeat.TokenTTL)
	require.Equal(t, 2160*time.Hour, tokenTTL)
	rt := a.obj("runtime_token")
	require.Len(t, rt, 3, a.raw)
	require.Equal(t, float64(1), rt["token_version"])
	require.Equal(t, rfc3339(t0.Add(tokenTTL)), rt["expires_at"])
	token, _ := rt["runtime_token"].(string)
	require.True(t, strings.HasPrefix(token, "srt_"), token)
	got, err := e.signer.Verify(token, t0)
	require.NoError(t, err)
	require.Equal(t, auth.RuntimeToken{Tenant: "acme", AgentID: "agent-1", Version: 1, ExpiresAt: t0.Add(tokenTTL)}, *got)

	ag, ok := e.agent("acme", "agent-1")
	require.True(t, ok)
	require.Equal(t, t0, ag.RegisteredAt)
	require.Equal(t, t0, ag.LastHeartbeat)
	require.Equal(t, 30*time.Second, ag.Interval)
	require.Equal(t, uint32(1), ag.TokenVersion)
	require.Equal(t, "1.4.2", ag.Version)

	// The runtime token heartbeats the agent; no registration fields any more.
	e.clock.Advance(30 * time.Second)
	a = e.beacon("agent-1", token, `{"heartbeat_interval_seconds":30}`)
	require.Equal(t, http.StatusOK, a.status, a.raw)
	require.Equal(t, []string{
		"command", "heartbeat_interval_seconds", "installation_id", "lease_expires_at",
		"lease_renewed", "next_heartbeat_at", "refreshed_token", "state",
	}, a.keys())
	require.Equal(t, "ACTIVE", a.str("state"))
	require.Nil(t, a.body["refreshed_token"])
	require.Equal(t, rfc3339(t0.Add(60*time.Second)), a.str("next_heartbeat_at"))
	ag, _ = e.agent("acme", "agent-1")
	require.Equal(t, t0.Add(30*time.Second), ag.LastHeartbeat)
	require.Equal(t, uint32(1), ag.TokenVersion)

	// The tenant key heartbeats it too, without a new token.
	a = e.beacon("agent-1", acmeKey, "")
	require.Equal(t, http.StatusOK, a.status, a.raw)
	require.NotContains(t, a.body, "runtime_token")
	require.NotContains(t, a.body, "registered")
	require.Equal(t, float64(3), e.heartbeats("beacon", "accepted"))
}

func TestABSRegistration(t *testing.T) {
	e := newEnv(t)
	a := e.abs("agent-1", acmeKey, "")
	require.Equal(t, http.StatusOK, a.status, a.raw)
	require.Equal(t, []string{"agentId", "nextDeadline", "status"}, a.keys())
	require.Equal(t, "ACTIVE", a.str("status"))
	require.Equal(t, "agent-1", a.str("agentId"))
	require.Equal(t, rfc3339(t0.Add(time.Minute)), a.str("nextDeadline"))
	ag, ok := e.agent("acme", "agent-1")
	require.True(t, ok)
	require.Equal(t, uint32(0), ag.TokenVersion, "the ABS answer has no room for a runtime token")

	// The same agent id through Beacon is the same agent (SPEC 1).
	b := e.beacon("agent-1", acmeKey, "")
	require.Equal(t, http.StatusOK, b.status, b.raw)
	require.NotContains(t, b.body, "registered")
	require.Equal(t, 1, e.store.Len())
	require.Equal(t, float64(1), e.heartbeats("abs", "accepted"))
}

// TestTenantsAreSeparate: the tenant comes from the credential; the same
// agent id in two tenants is two agents.
func TestTenantsAreSeparate(t *testing.T) {
	e := newEnv(t)
	acmeTok := e.register("agent-1")
	g := e.beacon("agent-1", globexKey, `{"version":"g"}`)
	require.Equal(t, http.StatusOK, g.status, g.raw)
	require.Equal(t, true, g.body["registered"])
	globexTok := g.obj("runtime_token")["runtime_token"].(string)
	require.Equal(t, 2, e.store.Len())

	e.clock.Advance(time.Second)
	require.Equal(t, http.StatusOK, e.beacon("agent-1", globexTok, "").status)
	ga, _ := e.agent("globex", "agent-1")
	aa, _ := e.agent("acme", "agent-1")
	require.Equal(t, t0.Add(time.Second), ga.LastHeartbeat)
	require.Equal(t, t0, aa.LastHeartbeat, "globex's beat must not touch acme's agent")
	require.Equal(t, "g", ga.Version)
	require.Empty(t, aa.Version)
	require.Equal(t, http.StatusOK, e.beacon("agent-1", acmeTok, "").status)
}

func TestIntervalClamping(t *testing.T) {
	tests := []struct {
		name string
		body string
		want time.Duration
	}{
		{"absent, empty body", "", time.Minute},
		{"absent", `{"status":"healthy"}`, time.Minute},
		{"within", `{"heartbeat_interval_seconds":30}`, 30 * time.Second},
		{"fractional", `{"heartbeat_interval_seconds":12.5}`, 12500 * time.Millisecond},
		{"at min", `{"heartbeat_interval_seconds":10}`, 10 * time.Second},
		{"below min", `{"heartbeat_interval_seconds":1}`, 10 * time.Second},
		{"tiny", `{"heartbeat_interval_seconds":0.001}`, 10 * time.Second},
		{"at max", `{"heartbeat_interval_seconds":600}`, 10 * time.Minute},
		{"above max", `{"heartbeat_interval_seconds":3600}`, 10 * time.Minute},
		{"far above max", `{"heartbeat_interval_seconds":1e9}`, 10 * time.Minute},
		{"beyond Duration range", `{"heartbeat_interval_seconds":1e10}`, 10 * time.Minute},
		{"huge", `{"heartbeat_interval_seconds":1e300}`, 10 * time.Minute},
	}
	e := newEnv(t)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := t0.Add(time.Duration(i) * time.Hour)
			e.clock.Set(now)
			id := "agent-" + strings.ReplaceAll(tt.name, " ", "-")
			id = strings.ReplaceAll(id, ",", "")
			a := e.beacon(id, acmeKey, tt.body)
			require.Equal(t, http.StatusOK, a.status, a.raw)
			require.Equal(t, tt.want.Seconds(), a.body["heartbeat_interval_seconds"])
			require.Equal(t, (5 * tt.want).Seconds(), a.body["lease_duration_seconds"])
			require.Equal(t, rfc3339(now.Add(tt.want)), a.str("next_heartbeat_at"))
			require.Equal(t, rfc3339(now.Add(5*tt.want)), a.str("lease_expires_at"))
			ag, ok := e.agent("acme", id)
			require.True(t, ok)
			require.Equal(t, tt.want, ag.Interval)

			b := e.abs(id, acmeKey, tt.body)
			require.Equal(t, http.StatusOK, b.status, b.raw)
			require.Equal(t, rfc3339(now.Add(tt.want)), b.str("nextDeadline"))
		})
	}
}

func TestTokenRefresh(t *testing.T) {
	e := newEnv(t)
	token := e.register("agent-1")
	ttl := time.Duration(e.cfg.Heartbeat.TokenTTL)
	before := time.Duration(e.cfg.Heartbeat.TokenRefreshBefore)
	require.Equal(t, 7*24*time.Hour, before)
	expires := t0.Add(ttl)

	// Just outside the refresh window: no new token.
	e.clock.Set(expires.Add(-before - time.Second))
	a := e.beacon("agent-1", token, "")
	require.Equal(t, http.StatusOK, a.status, a.raw)
	require.Nil(t, a.body["refreshed_token"])
	require.NotContains(t, a.body, "runtime_token")

	// Expiring within token_refresh_before: a new token, next version.
	now := expires.Add(-before)
	e.clock.Set(now)
	a = e.beacon("agent-1", token, "")
	require.Equal(t, http.StatusOK, a.status, a.raw)
	require.Equal(t, "ACTIVE", a.str("state"))
	require.NotContains(t, a.body, "runtime_token")
	ref := a.obj("refreshed_token")
	require.Len(t, ref, 3, a.raw)
	require.Equal(t, float64(2), ref["token_version"])
	require.Equal(t, rfc3339(now.Add(ttl)), ref["expires_at"])
	fresh, _ := ref["runtime_token"].(string)
	require.True(t, strings.HasPrefix(fresh, "srt_"))
	got, err := e.signer.Verify(fresh, now)
	require.NoError(t, err)
	require.Equal(t, auth.RuntimeToken{Tenant: "acme", AgentID: "agent-1", Version: 2, ExpiresAt: now.Add(ttl)}, *got)
	ag, _ := e.agent("acme", "agent-1")
	require.Equal(t, uint32(2), ag.TokenVersion)

	// The new token works and is not refreshed again.
	e.clock.Advance(time.Minute)
	a = e.beacon("agent-1", fresh, "")
	require.Equal(t, http.StatusOK, a.status, a.raw)
	require.Nil(t, a.body["refreshed_token"])

	// The old token expires on time: 401, whatever the refresh window says.
	e.clock.Set(expires)
	requireError(t, e.beacon("agent-1", token, ""), http.StatusUnauthorized, "expired")
	e.clock.Set(expires.Add(-time.Nanosecond))
	a = e.beacon("agent-1", token, "")
	require.Equal(t, http.StatusOK, a.status, a.raw)
	require.NotNil(t, a.body["refreshed_token"])
	require.Equal(t, float64(3), a.obj("refreshed_token")["token_version"])
}

// TestTokenRefreshOnlyWhereAnswered: ABS and event answers have no
// refreshed_token field, so beats through them must not use up versions.
func TestTokenRefreshOnlyWhereAnswered(t *testing.T) {
	e := newEnv(t)
	token := e.register("agent-1")
	e.clock.Set(t0.Add(time.Duration(e.cfg.Heartbeat.TokenTTL) - time.Hour))
	for range 3 {
		a := e.abs("agent-1", token, "")
		require.Equal(t, http.StatusOK, a.status, a.raw)
		require.NotContains(t, a.body, "refreshed_token")
	}
	ag, _ := e.agent("acme", "agent-1")
	require.Equal(t, uint32(1), ag.TokenVersion)
	a := e.beacon("agent-1", token, "")
	require.Equal(t, float64(2), a.obj("refreshed_token")["token_version"], a.raw)
}

func TestStateTransitions(t *testing.T) {
	for _, proto := range []struct {
		name  string
		field string
		beat  func(e *env, id, token string) *answer
	}{
		{"beacon", "state", func(e *env, id, token string) *answer { return e.beacon(id, token, "") }},
		{"abs", "status", func(e *env, id, token string) *answer { return e.abs(id, token, "") }},
		{"events", "status", func(e *env, id, token string) *answer {
			return e.event(token, map[string]any{"event_id": e.clock.Now().String(), "tenant_id": "acme", "event_type": "agent.heartbeat", "source": id})
		}},
	} {
		t.Run(proto.name, func(t *testing.T) {
			e := newEnv(t)
			token := e.register("agent-1") // interval 60 s at t0
			state := func() fleet.State {
				ag, ok := e.agent("acme", "agent-1")
				require.True(t, ok)
				return ag.State(e.clock.Now(), thresholds)
			}
			beat := func(want string) {
				t.Helper()
				a := proto.beat(e, "agent-1", token)
				require.Equal(t, http.StatusOK, a.status, a.raw)
				require.Equal(t, want, a.str(proto.field), a.raw)
				ag, _ := e.agent("acme", "agent-1")
				require.Equal(t, e.clock.Now(), ag.LastHeartbeat)
			}
			last := t0
			at := func(d time.Duration) { e.clock.Set(last.Add(d)) }

			at(4*time.Minute + 59*time.Second)
			require.Equal(t, fleet.StateActive, state(), "4 missed")
			at(5 * time.Minute)
			require.Equal(t, fleet.StateSilent, state(), "5 missed")
			beat("ACTIVE") // SILENT → ACTIVE
			last = e.clock.Now()
			require.Equal(t, fleet.StateActive, state())

			at(14*time.Minute + 59*time.Second)
			require.Equal(t, fleet.StateSilent, state(), "14 missed")
			at(15 * time.Minute)
			require.Equal(t, fleet.StateZombie, state(), "15 missed")
			at(3 * time.Hour)
			require.Equal(t, fleet.StateZombie, state())
			beat("RECOVERED") // ZOMBIE → RECOVERED
			last = e.clock.Now()
			at(time.Minute)
			beat("ACTIVE")
		})
	}
}

func TestShutdown(t *testing.T) {
	e := newEnv(t)
	token := e.register("agent-1")
	e.clock.Advance(time.Minute)
	a := e.beacon("agent-1", token, `{"status":"shutdown","exit_code":3}`)
	require.Equal(t, http.StatusOK, a.status, a.raw)
	require.JSONEq(t, `{"installation_id":"agent-1","lease_renewed":false,"state":"STOPPED"}`, a.raw)
	ag, _ := e.agent("acme", "agent-1")
	require.True(t, ag.Stopped)
	require.Equal(t, heartbeat.StatusShutdown, ag.Status)
	require.True(t, ag.HasExitCode)
	require.Equal(t, int64(3), ag.ExitCode)

	// A stopped agent raises no liveness state however long it stays away.
	e.clock.Advance(24 * time.Hour)
	ag, _ = e.agent("acme", "agent-1")
	require.Equal(t, fleet.StateStopped, ag.State(e.clock.Now(), thresholds))

	// A later heartbeat starts it again, as ACTIVE, not RECOVERED.
	a = e.beacon("agent-1", token, `{"status":"starting"}`)
	require.Equal(t, http.StatusOK, a.status, a.raw)
	require.Equal(t, "ACTIVE", a.str("state"))
	require.Equal(t, true, a.body["lease_renewed"])
	ag, _ = e.agent("acme", "agent-1")
	require.False(t, ag.Stopped)
	require.Equal(t, fleet.StateActive, ag.State(e.clock.Now(), thresholds))

	// ABS: the answer is the status and the id.
	a = e.abs("agent-1", token, `{"status":"shutdown"}`)
	require.Equal(t, http.StatusOK, a.status, a.raw)
	require.JSONEq(t, `{"status":"STOPPED","agentId":"agent-1"}`, a.raw)

	// A beat without a status after the shutdown starts the agent too.
	a = e.abs("agent-1", token, "")
	require.Equal(t, "ACTIVE", a.str("status"), a.raw)
	ag, _ = e.agent("acme", "agent-1")
	require.False(t, ag.Stopped)
	require.Equal(t, heartbeat.StatusUnknown, ag.Status)

	// agent.shutdown is the final signal whatever its payload says.
	a = e.event(token, map[string]any{"event_id": "bye", "tenant_id": "acme", "event_type": "agent.shutdown", "source": "agent-1",
		"payload": map[string]any{"status": "healthy", "exit_code": 0}})
	require.Equal(t, http.StatusOK, a.status, a.raw)
	require.JSONEq(t, `{"status":"STOPPED","agentId":"agent-1","event_id":"bye","duplicate":false}`, a.raw)
	ag, _ = e.agent("acme", "agent-1")
	require.True(t, ag.Stopped)
	require.Equal(t, heartbeat.StatusShutdown, ag.Status)
	require.Equal(t, int64(0), ag.ExitCode)
}

func TestRevokedAnswer(t *testing.T) {
	e := newEnv(t)
	token := e.register("agent-1")
	k := fleet.Key{Tenant: "acme", AgentID: "agent-1"}
	_, changed, err := e.control.Revoke(context.Background(), k, fleet.Revocation{Reason: "runaway spend", ShutdownTimeout: 2500 * time.Millisecond, RevokedAt: t0, Source: "admin"})
	require.NoError(t, err)
	require.True(t, changed)
	e.clock.Advance(time.Minute)

	a := e.beacon("agent-1", token, "")
	require.Equal(t, http.StatusOK, a.status, a.raw)
	require.JSONEq(t, `{"installation_id":"agent-1","lease_renewed":false,"revoked":true,"reason":"runaway spend","shutdown_timeout_ms":2500}`, a.raw)
	// The tenant key gets the same answer.
	a = e.beacon("agent-1", acmeKey, `{"status":"healthy"}`)
	require.JSONEq(t, `{"installation_id":"agent-1","lease_renewed":false,"revoked":true,"reason":"runaway spend","shutdown_timeout_ms":2500}`, a.raw)

	a = e.abs("agent-1", token, "")
	require.Equal(t, http.StatusOK, a.status, a.raw)
	require.JSONEq(t, `{"status":"REVOKED","agentId":"agent-1","revoked":true,"reason":"runaway spend","shutdown_timeout_ms":2500}`, a.raw)
	require.Equal(t, "REVOKED", a.str("status"))
	require.Equal(t, "agent-1", a.str("agentId"))
	require.Equal(t, true, a.body["revoked"])
	require.Equal(t, "runaway spend", a.str("reason"))
	require.Equal(t, float64(2500), a.body["shutdown_timeout_ms"])

	a = e.event(token, map[string]any{"event_id": "ev-1", "tenant_id": "acme", "event_type": "agent.heartbeat", "source": "agent-1"})
	require.Equal(t, http.StatusOK, a.status, a.raw)
	require.Equal(t, "REVOKED", a.str("status"))
	require.Equal(t, true, a.body["revoked"])
	require.Equal(t, false, a.body["duplicate"])

	// A revoked agent's beats are recorded (it was seen alive) while every
	// answer stays the revocation.
	ag, _ := e.agent("acme", "agent-1")
	require.Equal(t, e.clock.Now(), ag.LastHeartbeat)
	require.Equal(t, fleet.StateRevoked, ag.State(e.clock.Now(), thresholds))
	require.Equal(t, float64(2), e.heartbeats("beacon", "revoked"))
	require.Equal(t, float64(1), e.heartbeats("abs", "revoked"))
	require.Equal(t, float64(1), e.heartbeats("events", "revoked"))

	// An agent that ignores its revocation and keeps beating for 20 minutes
	// is seen alive all along: reinstated, it is ACTIVE, not a ZOMBIE that
	// would page (and, with the bridge, be revoked again).
	for range 20 {
		e.clock.Advance(time.Minute)
		require.Equal(t, true, e.beacon("agent-1", token, "").body["revoked"])
	}

	// Reinstated, it beats again.
	ok, err := e.control.Reinstate(context.Background(), k)
	require.NoError(t, err)
	require.True(t, ok)
	a = e.beacon("agent-1", token, "")
	require.Equal(t, true, a.body["lease_renewed"], a.raw)
	require.Equal(t, "ACTIVE", a.str("state"))
}

// TestRevokedSurvivesRestart: an agent revoked before its registration was
// snapshotted is still revoked when it registers again after a crash.
func TestRevokedSurvivesRestart(t *testing.T) {
	e := newEnv(t)
	token := e.register("agent-1")
	_, _, err := e.control.Revoke(context.Background(), fleet.Key{Tenant: "acme", AgentID: "agent-1"},
		fleet.Revocation{Reason: "stop", ShutdownTimeout: time.Second, RevokedAt: t0, Source: "admin"})
	require.NoError(t, err)
	e.restart(false)
	require.Zero(t, e.store.Len())
	a := e.beacon("agent-1", token, "")
	require.Equal(t, http.StatusOK, a.status, a.raw)
	require.JSONEq(t, `{"installation_id":"agent-1","lease_renewed":false,"revoked":true,"reason":"stop","shutdown_timeout_ms":1000}`, a.raw)
}

func TestCommandDelivery(t *testing.T) {
	e := newEnv(t)
	token := e.register("agent-1")
	k := fleet.Key{Tenant: "acme", AgentID: "agent-1"}
	issue := func(c fleet.Command) {
		t.Helper()
		_, err := e.control.Command(context.Background(), k, c, e.clock.Now())
		require.NoError(t, err)
	}
	beacon := func(want any) {
		t.Helper()
		e.clock.Advance(time.Second)
		a := e.beacon("agent-1", token, "")
		require.Equal(t, http.StatusOK, a.status, a.raw)
		require.Equal(t, want, a.body["command"], a.raw)
	}

	issue(fleet.CommandPause)
	beacon("pause") // carried
	_, pending := e.control.PendingCommand(k)
	require.True(t, pending, "pending until a later beat acknowledges it")
	beacon(nil) // acknowledged by this beat, gone
	_, pending = e.control.PendingCommand(k)
	require.False(t, pending)
	beacon(nil)

	// A newer command replaces one carried but not yet acknowledged.
	issue(fleet.CommandPause)
	beacon("pause")
	issue(fleet.CommandTerminate)
	beacon("terminate")
	beacon(nil)

	// ABS carries it too, and leaves the field out when there is none.
	issue(fleet.CommandResume)
	a := e.abs("agent-1", token, "")
	require.Equal(t, "resume", a.str("command"), a.raw)
	require.Equal(t, "ACTIVE", a.str("status"))
	a = e.abs("agent-1", token, "")
	require.NotContains(t, a.body, "command")
	require.Equal(t, []string{"agentId", "nextDeadline", "status"}, a.keys())
	_, pending = e.control.PendingCommand(k)
	require.False(t, pending)
}

// TestCommandRedeliveredAfterCrash: a command carried by an answer but not
// acknowledged before a crash is delivered again by the restarted sentinel.
func TestCommandRedeliveredAfterCrash(t *testing.T) {
	for _, snapshot := range []bool{true, false} {
		name := "without snapshot"
		if snapshot {
			name = "with snapshot"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			token := e.register("agent-1")
			k := fleet.Key{Tenant: "acme", AgentID: "agent-1"}
			_, err := e.control.Command(context.Background(), k, fleet.CommandTerminate, t0)
			require.NoError(t, err)
			a := e.beacon("agent-1", token, "")
			require.Equal(t, "terminate", a.body["command"], a.raw)

			e.restart(snapshot) // crash before the acknowledging beat
			a = e.beacon("agent-1", token, "")
			require.Equal(t, http.StatusOK, a.status, a.raw)
			require.Equal(t, "terminate", a.body["command"], "redelivered: %s", a.raw)
			a = e.beacon("agent-1", token, "")
			require.Nil(t, a.body["command"], a.raw)

			e.restart(true) // the acknowledgement was journaled
			_, pending := e.control.PendingCommand(k)
			require.False(t, pending)
			a = e.beacon("agent-1", token, "")
			require.Nil(t, a.body["command"], a.raw)
		})
	}
}

func TestMaxAgents(t *testing.T) {
	e := newEnv(t, withMaxAgents(2))
	t1 := e.register("agent-1")
	t2 := e.register("agent-2")

	requireError(t, e.beacon("agent-3", acmeKey, ""), http.StatusTooManyRequests, "max_agents")
	requireError(t, e.abs("agent-3", acmeKey, ""), http.StatusTooManyRequests, "max_agents")
	requireError(t, e.beacon("gx-1", globexKey, ""), http.StatusTooManyRequests, "max_agents")
	requireError(t, e.event(acmeKey, map[string]any{"event_id": "x", "tenant_id": "acme", "event_type": "agent.heartbeat", "source": "agent-3"}),
		http.StatusTooManyRequests, "max_agents")
	require.Equal(t, float64(3), e.counter("sentinel_agents_refused_total", map[string]string{"tenant": "acme"}))
	require.Equal(t, float64(1), e.counter("sentinel_agents_refused_total", map[string]string{"tenant": "globex"}))
	require.Equal(t, float64(1), e.heartbeats("beacon", "refused")-1)
	require.Equal(t, float64(1), e.heartbeats("abs", "refused"))
	require.Equal(t, float64(1), e.heartbeats("events", "refused"))

	// Nobody is evicted; existing agents keep beating.
	for _, tok := range []struct{ id, token string }{{"agent-1", t1}, {"agent-2", t2}, {"agent-1", acmeKey}} {
		e.clock.Advance(time.Second)
		a := e.beacon(tok.id, tok.token, "")
		require.Equal(t, http.StatusOK, a.status, a.raw)
	}
	require.Equal(t, 2, e.store.Len())
	_, ok := e.agent("acme", "agent-3")
	require.False(t, ok)

	// A refused event is not remembered as seen: retried after room was
	// made, it is accepted.
	del := e.do(request{method: http.MethodDelete, path: "/api/v1/installations/agent-2", token: acmeAdmin})
	require.Equal(t, http.StatusOK, del.status, del.raw)
	a := e.event(acmeKey, map[string]any{"event_id": "x", "tenant_id": "acme", "event_type": "agent.heartbeat", "source": "agent-3"})
	require.Equal(t, http.StatusOK, a.status, a.raw)
	require.Equal(t, false, a.body["duplicate"])
	require.Equal(t, 2, e.store.Len())
}

// TestTenantRemoved: a tenant removed by a reload loses its keys and its
// agents' runtime tokens.
func TestTenantRemoved(t *testing.T) {
	e := newEnv(t)
	acmeTok := e.register("agent-1")
	g := e.beacon("gx-1", globexKey, "")
	globexTok := g.obj("runtime_token")["runtime_token"].(string)

	cfg, err := config.Parse([]byte(`
tenants:
  - id: globex
    api_keys: [`+globexKey+`]
`), t.TempDir())
	require.NoError(t, err)
	e.recv.SetSettings(heartbeat.SettingsFromConfig(cfg))

	requireError(t, e.beacon("agent-1", acmeTok, ""), http.StatusUnauthorized, "unknown credential")
	requireError(t, e.abs("agent-1", acmeTok, ""), http.StatusUnauthorized, "unknown credential")
	requireError(t, e.beacon("agent-1", acmeKey, ""), http.StatusUnauthorized, "unknown credential")
	require.Equal(t, http.StatusOK, e.beacon("gx-1", globexTok, "").status)
	require.Equal(t, http.StatusOK, e.beacon("gx-2", globexKey, "").status)
	// The reload also changed the intervals: default 60 s, max 1 h now.
	a := e.beacon("gx-1", globexTok, `{"heartbeat_interval_seconds":3600}`)
	require.Equal(t, float64(3600), a.body["heartbeat_interval_seconds"], a.raw)
}

func TestEvents(t *testing.T) {
	e := newEnv(t)
	ev := map[string]any{"event_id": "ev-1", "tenant_id": "acme", "event_type": "agent.heartbeat", "source": "agent-1",
		"payload": map[string]any{"status": "healthy", "heartbeat_interval_seconds": 30, "version": "2.0"}}
	a := e.event(acmeKey, ev)
	require.Equal(t, http.StatusOK, a.status, a.raw)
	require.Equal(t, []string{"agentId", "duplicate", "event_id", "nextDeadline", "status"}, a.keys())
	require.Equal(t, "ACTIVE", a.str("status"))
	require.Equal(t, "agent-1", a.str("agentId"))
	require.Equal(t, "ev-1", a.str("event_id"))
	require.Equal(t, false, a.body["duplicate"])
	require.Equal(t, rfc3339(t0.Add(30*time.Second)), a.str("nextDeadline"))
	ag, ok := e.agent("acme", "agent-1")
	require.True(t, ok)
	require.Equal(t, "2.0", ag.Version)
	require.Equal(t, t0, ag.LastHeartbeat)

	// The same event again: 200, duplicate, counted once, state untouched.
	e.clock.Advance(10 * time.Second)
	ev["payload"] = map[string]any{"status": "unhealthy"}
	a = e.event(acmeKey, ev)
	require.Equal(t, http.StatusOK, a.status, a.raw)
	require.JSONEq(t, `{"event_id":"ev-1","agentId":"agent-1","duplicate":true}`, a.raw)
	after, _ := e.agent("acme", "agent-1")
	require.Equal(t, ag, after)
	require.Equal(t, float64(1), e.heartbeats("events", "accepted"))
	require.Equal(t, float64(1), e.heartbeats("events", "duplicate"))

	// Event ids are per tenant.
	gev := map[string]any{"event_id": "ev-1", "tenant_id": "globex", "event_type": "agent.heartbeat", "source": "agent-1"}
	a = e.event(globexKey, gev)
	require.Equal(t, http.StatusOK, a.status, a.raw)
	require.Equal(t, false, a.body["duplicate"])
	require.Equal(t, 2, e.store.Len())

	// A refused event is not remembered: fixed and resent, it is processed.
	bad := map[string]any{"event_id": "ev-2", "tenant_id": "acme", "event_type": "agent.restarted", "source": "agent-1"}
	requireError(t, e.event(acmeKey, bad), http.StatusUnprocessableEntity, "agent.restarted")
	bad["event_type"] = "agent.heartbeat"
	a = e.event(acmeKey, bad)
	require.Equal(t, false, a.body["duplicate"], a.raw)
	ag, _ = e.agent("acme", "agent-1")
	require.Equal(t, t0.Add(10*time.Second), ag.LastHeartbeat)
	require.Equal(t, float64(3), e.heartbeats("events", "accepted"))
	require.Equal(t, float64(1), e.heartbeats("events", "duplicate"))

	// An event without a payload is a plain heartbeat; a runtime token of
	// the source works too.
	token := e.register("agent-9")
	a = e.event(token, map[string]any{"event_id": "ev-3", "tenant_id": "acme", "event_type": "agent.heartbeat", "source": "agent-9", "payload": nil})
	require.Equal(t, http.StatusOK, a.status, a.raw)
	require.Equal(t, "ACTIVE", a.str("status"))
}

// TestRevokedReasonEscaped: any reason an admin types comes back as valid
// JSON, unchanged.
func TestRevokedReasonEscaped(t *testing.T) {
	e := newEnv(t)
	token := e.register("agent-1")
	reason := "quote \" backslash \\ tab \t é ✓ <b>&</b> \u2028 \x01"
	a := e.do(request{method: http.MethodPost, path: "/api/v1/installations/agent-1/revoke", token: acmeAdmin,
		body: body(`{"reason":` + jsonString(reason) + `}`)})
	require.Equal(t, http.StatusOK, a.status, a.raw)
	for _, b := range []*answer{e.beacon("agent-1", token, ""), e.abs("agent-1", token, "")} {
		require.Equal(t, http.StatusOK, b.status, b.raw)
		require.Equal(t, reason, b.str("reason"), b.raw)
		require.Equal(t, float64(5000), b.body["shutdown_timeout_ms"])
	}
}

// After a crash, an agent registered after the last snapshot comes back
// with its runtime token: that beat registers it again, and a token issued
// to it (its old one is inside the refresh window) is a refresh, in
// "refreshed_token", never a "runtime_token" meant for tenant-key
// registrations.
func TestReRegistrationWithRuntimeToken(t *testing.T) {
	e := newEnv(t)
	token := e.register("agent-1")
	e.restart(false) // crash: the registration was never snapshotted
	e.clock.Set(t0.Add(time.Duration(e.cfg.Heartbeat.TokenTTL) - time.Hour))

	a := e.beacon("agent-1", token, "")
	require.Equal(t, http.StatusOK, a.status, a.raw)
	require.Equal(t, true, a.body["registered"], a.raw)
	require.NotContains(t, a.body, "runtime_token")
	ref := a.obj("refreshed_token")
	require.Equal(t, float64(2), ref["token_version"], "the version continues from the presented token")

	// Without the refresh window, nothing is issued.
	e.restart(false)
	e.clock.Set(t0.Add(time.Hour))
	a = e.beacon("agent-1", token, "")
	require.Equal(t, true, a.body["registered"], a.raw)
	require.NotContains(t, a.body, "runtime_token")
	require.Nil(t, a.body["refreshed_token"])
}

// Copies of one event arriving together are processed once: the duplicate
// check, the heartbeat and the record of the id are one step per event id.
func TestEventsConcurrentDuplicates(t *testing.T) {
	e := newEnv(t)
	token := e.register("agent-1")
	const events, copies = 50, 8
	for i := range events {
		var wg sync.WaitGroup
		var fresh atomic.Int32
		start := make(chan struct{})
		for range copies {
			wg.Go(func() {
				<-start
				a := e.event(token, map[string]any{"event_id": fmt.Sprintf("ev-%d", i), "tenant_id": "acme", "event_type": "agent.heartbeat", "source": "agent-1"})
				if a.body["duplicate"] == false {
					fresh.Add(1)
				}
			})
		}
		close(start)
		wg.Wait()
		require.Equal(t, int32(1), fresh.Load(), "event %d", i)
	}
	require.Equal(t, float64(events), e.heartbeats("events", "accepted"))
	require.Equal(t, float64(events*(copies-1)), e.heartbeats("events", "duplicate"))
}
