package killswitch

import (
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/heartbeat"
	"github.com/agentsentinel/sentinel/jsonapi"
)

// endpoint is one admin route, by an agent that exists (a1 of acme).
type endpoint struct {
	name         string
	method, path string
	body         string
	needsTenant  bool // a global admin must name the tenant
}

var endpoints = []endpoint{
	{"list", http.MethodGet, "/api/v1/installations", "", false},
	{"detail", http.MethodGet, "/api/v1/installations/a1", "", true},
	{"forget", http.MethodDelete, "/api/v1/installations/a1", "", true},
	{"revoke", http.MethodPost, "/api/v1/installations/a1/revoke", `{"reason":"r"}`, true},
	{"reinstate", http.MethodDelete, "/api/v1/installations/a1/revoke", "", true},
	{"command", http.MethodPost, "/api/v1/installations/a1/command", `{"command":"pause"}`, true},
	{"revoke-all", http.MethodPost, "/api/v1/revoke-all", `{"reason":"r"}`, true},
}

func withQuery(path, query string) string {
	if query == "" {
		return path
	}
	return path + "?" + query
}

func TestAPIAuthentication(t *testing.T) {
	e := newEnv(t)
	runtimeToken := e.register(acmeKey, "a1")
	e.register(globexKey, "a1")
	before := stateOf(e.control)
	agentBefore, _ := e.agent("acme", "a1")

	tests := []struct {
		name   string
		token  string
		query  string
		status int
		msg    string
		skip   func(endpoint) bool
	}{
		{"missing credential", "", "", 401, "missing bearer credential", nil},
		{"unknown credential", "nope", "", 401, "unknown credential", nil},
		{"tenant API key", acmeKey, "", 403, "an admin token is required", nil},
		{"tenant API key naming its tenant", acmeKey, "tenant=acme", 403, "an admin token is required", nil},
		{"bridge token", bridgeToken, "", 403, "an admin token is required", nil},
		{"tenant admin of another tenant", acmeAdmin, "tenant=globex", 403, "another tenant", nil},
		{"tenant admin naming an unknown tenant", acmeAdmin, "tenant=initech", 403, "another tenant", nil},
		{"global admin without tenant", globalAdmin, "", 400, "?tenant=", func(ep endpoint) bool { return !ep.needsTenant }},
		{"global admin with an unknown tenant", globalAdmin, "tenant=initech", 404, `unknown tenant "initech"`, nil},
	}
	for _, tt := range tests {
		for _, ep := range endpoints {
			if tt.skip != nil && tt.skip(ep) {
				continue
			}
			t.Run(tt.name+"/"+ep.name, func(t *testing.T) {
				a := e.do(ep.method, withQuery(ep.path, tt.query), tt.token, ep.body)
				requireError(t, a, tt.status, tt.msg)
			})
		}
	}
	// A runtime token is a credential of the wrong kind, like an admin token
	// used for heartbeats: 403.
	for _, ep := range endpoints {
		requireError(t, e.do(ep.method, ep.path, runtimeToken, ep.body), http.StatusForbidden, "admin token is required")
		// Something that only looks like one is an unknown credential.
		requireError(t, e.do(ep.method, ep.path, "srt_forged.token", ep.body), http.StatusUnauthorized, "unknown credential")
	}

	// Nothing was changed by any of them.
	require.Equal(t, before, stateOf(e.control))
	agentAfter, ok := e.agent("acme", "a1")
	require.True(t, ok)
	require.Equal(t, agentBefore, agentAfter)
	_, ok = e.agent("globex", "a1")
	require.True(t, ok)

	// The right credentials get through: a tenant admin with or without its
	// own tenant named, a global admin naming it.
	for _, ok := range []struct{ token, query string }{{acmeAdmin, ""}, {acmeAdmin, "tenant=acme"}, {globalAdmin, "tenant=acme"}} {
		a := e.do(http.MethodGet, withQuery("/api/v1/installations/a1", ok.query), ok.token, "")
		require.Equal(t, http.StatusOK, a.status, a.raw)
		require.Equal(t, "acme", a.str("tenant"))
	}
	a := e.do(http.MethodGet, "/api/v1/installations", globalAdmin, "")
	require.Equal(t, http.StatusOK, a.status, a.raw)
	require.Equal(t, float64(2), a.body["total"], "a global admin lists every tenant")
}

func TestAPIMethods(t *testing.T) {
	e := newEnv(t)
	e.beat("acme", "a1")
	tests := []struct {
		method, path, allow string
	}{
		{http.MethodPost, "/api/v1/installations", "GET"},
		{http.MethodPost, "/api/v1/installations/a1", "GET, DELETE"},
		{http.MethodPut, "/api/v1/installations/a1", "GET, DELETE"},
		{http.MethodGet, "/api/v1/installations/a1/revoke", "POST, DELETE"},
		{http.MethodGet, "/api/v1/installations/a1/command", "POST"},
		{http.MethodGet, "/api/v1/revoke-all", "POST"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			a := e.do(tt.method, tt.path, acmeAdmin, "")
			requireError(t, a, http.StatusMethodNotAllowed, "not allowed")
			require.Equal(t, tt.allow, a.header.Get("Allow"))
		})
	}
}

func TestAPIUnknownAgent(t *testing.T) {
	e := newEnv(t)
	e.beat("globex", "a1") // the same id in another tenant is not acme's
	for _, ep := range endpoints {
		if ep.path == "/api/v1/installations" || ep.path == "/api/v1/revoke-all" {
			continue
		}
		t.Run(ep.name, func(t *testing.T) {
			requireError(t, e.do(ep.method, ep.path, acmeAdmin, ep.body), http.StatusNotFound, `agent "a1" not found`)
			bad := strings.Replace(ep.path, "/a1", "/.a1", 1)
			requireError(t, e.do(ep.method, bad, acmeAdmin, ep.body), http.StatusBadRequest, "invalid agent id")
			long := strings.Replace(ep.path, "/a1", "/"+strings.Repeat("a", 129), 1)
			requireError(t, e.do(ep.method, long, acmeAdmin, ep.body), http.StatusBadRequest, "invalid agent id")
		})
	}
	require.Empty(t, stateOf(e.control).Revocations)
	require.Empty(t, stateOf(e.control).Commands)
	ag, ok := e.agent("globex", "a1")
	require.True(t, ok)
	require.False(t, ag.Revoked)
}

func TestAPIRevoke(t *testing.T) {
	tests := []struct {
		name      string
		body      string
		reason    string
		timeoutMs float64
	}{
		{"no body", "", DefaultRevokeReason, 5000},
		{"empty object", `{}`, DefaultRevokeReason, 5000},
		{"reason", `{"reason":"cost overrun"}`, "cost overrun", 5000},
		{"timeout", `{"shutdown_timeout_ms":1500}`, DefaultRevokeReason, 1500},
		{"both", `{"reason":"now","shutdown_timeout_ms":0}`, "now", 0},
		{"longest timeout", `{"shutdown_timeout_ms":86400000}`, DefaultRevokeReason, 86400000},
		{"longest reason", `{"reason":"` + strings.Repeat("r", 1024) + `"}`, strings.Repeat("r", 1024), 5000},
		{"empty reason", `{"reason":""}`, DefaultRevokeReason, 5000},
	}
	e := newEnv(t)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprintf("agent-%d", i)
			token := e.register(acmeKey, id)
			e.clock.Advance(time.Minute)
			now := e.clock.Now()
			a := e.do(http.MethodPost, "/api/v1/installations/"+id+"/revoke", acmeAdmin, tt.body)
			require.Equal(t, http.StatusOK, a.status, a.raw)
			require.Equal(t, []string{"installation_id", "reason", "revoked", "revoked_at", "shutdown_timeout_ms", "source"}, a.keys())
			require.Equal(t, id, a.str("installation_id"))
			require.Equal(t, true, a.body["revoked"])
			require.Equal(t, tt.reason, a.str("reason"))
			require.Equal(t, tt.timeoutMs, a.body["shutdown_timeout_ms"])
			require.Equal(t, rfc3339(now), a.str("revoked_at"))
			require.Equal(t, "admin", a.str("source"))

			// Durable before the 200, and answered to the agent.
			rev, ok := e.control.Revocation(key("acme", id))
			require.True(t, ok)
			require.Equal(t, tt.reason, rev.Reason)
			b := e.do(http.MethodPost, "/api/v1/installations/"+id+"/heartbeat", token, "")
			require.Equal(t, true, b.body["revoked"], b.raw)
			require.Equal(t, tt.reason, b.str("reason"))
			require.Equal(t, tt.timeoutMs, b.body["shutdown_timeout_ms"])
		})
	}

	// Idempotent: a second revoke answers the first revocation.
	e.clock.Advance(time.Hour)
	a := e.do(http.MethodPost, "/api/v1/installations/agent-2/revoke", acmeAdmin, `{"reason":"again","shutdown_timeout_ms":1}`)
	require.Equal(t, http.StatusOK, a.status, a.raw)
	require.Equal(t, "cost overrun", a.str("reason"))
	require.Equal(t, float64(5000), a.body["shutdown_timeout_ms"])
	require.Equal(t, rfc3339(t0.Add(3*time.Minute)), a.str("revoked_at"))

	// The snapshot-less restart keeps them all.
	want := stateOf(e.control)
	e.restart(nil)
	require.Equal(t, want, stateOf(e.control))
}

// TestAPIRevokeDefaultTimeoutFromConfig: the default shutdown timeout is
// bridge.kill_switch.shutdown_timeout.
func TestAPIRevokeDefaultTimeoutFromConfig(t *testing.T) {
	e := newEnvTimeout(t, "7s")
	e.beat("acme", "a1")
	a := e.do(http.MethodPost, "/api/v1/installations/a1/revoke", acmeAdmin, "")
	require.Equal(t, http.StatusOK, a.status, a.raw)
	require.Equal(t, float64(7000), a.body["shutdown_timeout_ms"])
	a = e.do(http.MethodPost, "/api/v1/revoke-all", globalAdmin+"", "")
	requireError(t, a, http.StatusBadRequest, "?tenant=")
}

func TestAPIRevokeInvalid(t *testing.T) {
	e := newEnv(t)
	e.beat("acme", "a1")
	tests := []struct {
		name   string
		body   string
		status int
		msg    string
	}{
		{"unknown field", `{"reson":"typo"}`, 400, `unknown field "reson"`},
		{"negative timeout", `{"shutdown_timeout_ms":-1}`, 400, "shutdown_timeout_ms must be between 0 and 86400000"},
		{"timeout over a day", `{"shutdown_timeout_ms":86400001}`, 400, "shutdown_timeout_ms"},
		{"fractional timeout", `{"shutdown_timeout_ms":1.5}`, 400, "malformed JSON"},
		{"timeout as a string", `{"shutdown_timeout_ms":"5000"}`, 400, "malformed JSON"},
		{"reason as a number", `{"reason":5}`, 400, "malformed JSON"},
		{"reason too long", `{"reason":"` + strings.Repeat("r", 1025) + `"}`, 400, "reason is longer than 1024 bytes"},
		{"truncated", `{"reason":`, 400, "malformed JSON"},
		{"two objects", `{}{}`, 400, "data after the object"},
		{"array", `[]`, 400, "malformed JSON"},
		{"too large", `{"reason":"` + strings.Repeat("r", jsonapi.MaxBodyBytes) + `"}`, 413, "request body over"},
	}
	for _, path := range []string{"/api/v1/installations/a1/revoke", "/api/v1/revoke-all"} {
		for _, tt := range tests {
			t.Run(path+"/"+tt.name, func(t *testing.T) {
				requireError(t, e.do(http.MethodPost, path, acmeAdmin, tt.body), tt.status, tt.msg)
			})
		}
	}
	require.Empty(t, stateOf(e.control).Revocations)
	ag, _ := e.agent("acme", "a1")
	require.False(t, ag.Revoked)
}

func TestAPIReinstate(t *testing.T) {
	e := newEnv(t)
	token := e.register(acmeKey, "a1")
	require.Equal(t, http.StatusOK, e.do(http.MethodPost, "/api/v1/installations/a1/revoke", acmeAdmin, "").status)

	a := e.do(http.MethodDelete, "/api/v1/installations/a1/revoke", acmeAdmin, "")
	require.Equal(t, http.StatusOK, a.status, a.raw)
	require.JSONEq(t, `{"installation_id":"a1","revoked":false,"reinstated":true}`, a.raw)
	_, revoked := e.control.Revocation(key("acme", "a1"))
	require.False(t, revoked)

	// Not revoked any more: 200, nothing reinstated.
	a = e.do(http.MethodDelete, "/api/v1/installations/a1/revoke?tenant=acme", globalAdmin, "")
	require.Equal(t, http.StatusOK, a.status, a.raw)
	require.JSONEq(t, `{"installation_id":"a1","revoked":false,"reinstated":false}`, a.raw)

	e.clock.Advance(time.Minute)
	b := e.do(http.MethodPost, "/api/v1/installations/a1/heartbeat", token, "")
	require.Equal(t, true, b.body["lease_renewed"], b.raw)
	require.Equal(t, "ACTIVE", b.str("state"))

	// A revoked agent whose registration was lost is still reinstatable.
	require.Equal(t, http.StatusOK, e.do(http.MethodPost, "/api/v1/installations/a1/revoke", acmeAdmin, "").status)
	e.restart(nil)
	a = e.do(http.MethodDelete, "/api/v1/installations/a1/revoke", acmeAdmin, "")
	require.Equal(t, http.StatusOK, a.status, a.raw)
	require.Equal(t, true, a.body["reinstated"])
}

func TestAPICommand(t *testing.T) {
	e := newEnv(t)
	token := e.register(acmeKey, "a1")
	path := "/api/v1/installations/a1/command"
	for _, tt := range []struct {
		name, body string
		status     int
		msg        string
	}{
		{"no body", "", 400, `"command" is required`},
		{"empty object", `{}`, 400, `"command" is required`},
		{"empty command", `{"command":""}`, 400, `"command" is required`},
		{"unknown field", `{"command":"pause","now":true}`, 400, `unknown field "now"`},
		{"wrong type", `{"command":1}`, 400, "malformed JSON"},
		{"unsupported", `{"command":"explode"}`, 422, `unsupported command "explode"`},
		{"capitals", `{"command":"PAUSE"}`, 422, `unsupported command "PAUSE"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			requireError(t, e.do(http.MethodPost, path, acmeAdmin, tt.body), tt.status, tt.msg)
		})
	}
	_, pending := e.control.PendingCommand(key("acme", "a1"))
	require.False(t, pending)

	e.clock.Advance(time.Minute)
	a := e.do(http.MethodPost, path, acmeAdmin, `{"command":"pause"}`)
	require.Equal(t, http.StatusOK, a.status, a.raw)
	require.JSONEq(t, `{"installation_id":"a1","command":"pause","pending":true,"issued_at":"`+rfc3339(e.clock.Now())+`"}`, a.raw)

	d := e.do(http.MethodGet, "/api/v1/installations/a1", acmeAdmin, "")
	require.Equal(t, map[string]any{"command": "pause", "issued_at": rfc3339(e.clock.Now())}, d.obj("pending_command"))

	beat := func() *answer {
		e.clock.Advance(time.Second)
		return e.do(http.MethodPost, "/api/v1/installations/a1/heartbeat", token, "")
	}
	require.Equal(t, "pause", beat().body["command"])
	require.Nil(t, beat().body["command"])
	d = e.do(http.MethodGet, "/api/v1/installations/a1", acmeAdmin, "")
	require.Nil(t, d.body["pending_command"], d.raw)

	// terminate and resume are commands too.
	for _, c := range []string{"terminate", "resume"} {
		a = e.do(http.MethodPost, path+"?tenant=acme", globalAdmin, `{"command":"`+c+`"}`)
		require.Equal(t, http.StatusOK, a.status, a.raw)
		require.Equal(t, c, beat().body["command"])
	}
}

func TestAPIForget(t *testing.T) {
	e := newEnv(t)
	token := e.register(acmeKey, "a1")
	e.register(globexKey, "a1")
	require.Equal(t, http.StatusOK, e.do(http.MethodPost, "/api/v1/installations/a1/revoke", acmeAdmin, "").status)
	require.Equal(t, http.StatusOK, e.do(http.MethodPost, "/api/v1/installations/a1/command", acmeAdmin, `{"command":"pause"}`).status)

	a := e.do(http.MethodDelete, "/api/v1/installations/a1", acmeAdmin, "")
	require.Equal(t, http.StatusOK, a.status, a.raw)
	require.JSONEq(t, `{"installation_id":"a1","forgotten":true}`, a.raw)
	_, ok := e.agent("acme", "a1")
	require.False(t, ok, "its series are gone with it")
	_, ok = e.agent("globex", "a1")
	require.True(t, ok, "the other tenant's agent of the same id stays")
	_, revoked := e.control.Revocation(key("acme", "a1"))
	require.False(t, revoked)
	_, pending := e.control.PendingCommand(key("acme", "a1"))
	require.False(t, pending)

	requireError(t, e.do(http.MethodGet, "/api/v1/installations/a1", acmeAdmin, ""), http.StatusNotFound, "not found")
	requireError(t, e.do(http.MethodDelete, "/api/v1/installations/a1", acmeAdmin, ""), http.StatusNotFound, "not found")
	requireError(t, e.do(http.MethodDelete, "/api/v1/installations/a1/revoke", acmeAdmin, ""), http.StatusNotFound, "not found")

	// Every runtime token issued before the forget is refused: a leaked or
	// rogue agent's token does not bring it back.
	e.clock.Advance(time.Minute)
	requireError(t, e.do(http.MethodPost, "/api/v1/installations/a1/heartbeat", token, ""), http.StatusUnauthorized, "issued before the agent was forgotten")
	// It registers again with the tenant key: afresh, neither revoked nor
	// commanded, and its new token works.
	b := e.do(http.MethodPost, "/api/v1/installations/a1/heartbeat", acmeKey, "")
	require.Equal(t, http.StatusOK, b.status, b.raw)
	require.Equal(t, true, b.body["registered"])
	require.Equal(t, "ACTIVE", b.str("state"))
	require.Nil(t, b.body["command"])
	fresh, _ := b.obj("runtime_token")["runtime_token"].(string)
	e.clock.Advance(time.Second)
	require.Equal(t, http.StatusOK, e.do(http.MethodPost, "/api/v1/installations/a1/heartbeat", fresh, "").status)

	// And stays registered after a restart from a snapshot taken before the
	// forget would have deleted it.
	e.restart(e.snapshot())
	_, ok = e.agent("acme", "a1")
	require.True(t, ok)
}

func TestAPIRevokeAll(t *testing.T) {
	e := newEnv(t)
	acmeTokens := map[string]string{}
	for _, id := range []string{"a1", "a2", "a3"} {
		acmeTokens[id] = e.register(acmeKey, id)
	}
	globexTokens := map[string]string{}
	for _, id := range []string{"a1", "g2"} {
		globexTokens[id] = e.register(globexKey, id)
	}
	require.Equal(t, http.StatusOK, e.do(http.MethodPost, "/api/v1/installations/a2/revoke", acmeAdmin, `{"reason":"first"}`).status)

	e.clock.Advance(time.Minute)
	a := e.do(http.MethodPost, "/api/v1/revoke-all", acmeAdmin, `{"reason":"stop everything","shutdown_timeout_ms":2000}`)
	require.Equal(t, http.StatusOK, a.status, a.raw)
	require.JSONEq(t, `{"tenant":"acme","revoked":2,"reason":"stop everything","shutdown_timeout_ms":2000,"revoked_at":"`+
		rfc3339(e.clock.Now())+`","source":"admin"}`, a.raw)
	for id, tok := range acmeTokens {
		b := e.do(http.MethodPost, "/api/v1/installations/"+id+"/heartbeat", tok, "")
		require.Equal(t, true, b.body["revoked"], "%s: %s", id, b.raw)
		if id == "a2" {
			require.Equal(t, "first", b.str("reason"))
		} else {
			require.Equal(t, "stop everything", b.str("reason"))
			require.Equal(t, float64(2000), b.body["shutdown_timeout_ms"])
		}
	}
	// The other tenant is untouched, including its agent of the same id.
	for id, tok := range globexTokens {
		b := e.do(http.MethodPost, "/api/v1/installations/"+id+"/heartbeat", tok, "")
		require.Equal(t, true, b.body["lease_renewed"], "%s: %s", id, b.raw)
		_, revoked := e.control.Revocation(key("globex", id))
		require.False(t, revoked)
	}

	// Again: nothing left to revoke.
	a = e.do(http.MethodPost, "/api/v1/revoke-all", acmeAdmin, "")
	require.Equal(t, http.StatusOK, a.status, a.raw)
	require.Equal(t, float64(0), a.body["revoked"])

	// A global admin names the tenant.
	a = e.do(http.MethodPost, "/api/v1/revoke-all?tenant=globex", globalAdmin, "")
	require.Equal(t, http.StatusOK, a.status, a.raw)
	require.Equal(t, "globex", a.str("tenant"))
	require.Equal(t, float64(2), a.body["revoked"])
	require.Equal(t, DefaultRevokeReason, a.str("reason"))
	require.Equal(t, float64(5000), a.body["shutdown_timeout_ms"])
}

// listPage is one page of GET /api/v1/installations.
type listPage struct {
	ids    []string // tenant/agent_id
	states []string
	next   *string
	total  int
}

func (e *env) list(token, query string) listPage {
	e.t.Helper()
	a := e.do(http.MethodGet, withQuery("/api/v1/installations", query), token, "")
	require.Equal(e.t, http.StatusOK, a.status, a.raw)
	require.Equal(e.t, []string{"installations", "next_cursor", "total"}, a.keys())
	var p listPage
	for _, it := range a.body["installations"].([]any) {
		m := it.(map[string]any)
		p.ids = append(p.ids, m["tenant"].(string)+"/"+m["installation_id"].(string))
		p.states = append(p.states, m["state"].(string))
	}
	if c, ok := a.body["next_cursor"].(string); ok {
		p.next = &c
	} else {
		require.Nil(e.t, a.body["next_cursor"])
	}
	p.total = int(a.body["total"].(float64))
	return p
}

// listAll pages through the list with limit and returns every id in order
// and the size of each page.
func (e *env) listAll(token, query string, limit int) ([]string, []int) {
	e.t.Helper()
	var ids []string
	var sizes []int
	cursor := ""
	for range 1000 {
		q := url.Values{"limit": {fmt.Sprint(limit)}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		p := e.list(token, strings.TrimPrefix(query+"&"+q.Encode(), "&"))
		ids = append(ids, p.ids...)
		sizes = append(sizes, len(p.ids))
		if p.next == nil {
			return ids, sizes
		}
		require.NotEmpty(e.t, p.ids, "a page with a next cursor is never empty")
		cursor = *p.next
	}
	e.t.Fatal("the list does not end")
	return nil, nil
}

func TestAPIListPagination(t *testing.T) {
	e := newEnv(t)
	var acme, globex []string
	for i := range 250 {
		acme = append(acme, fmt.Sprintf("acme/agent-%03d", i))
	}
	for i := range 20 {
		globex = append(globex, fmt.Sprintf("globex/agent-%03d", i))
	}
	all := append(slices.Clone(acme), globex...)
	order := slices.Clone(all)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	for _, k := range order {
		tenant, id, _ := strings.Cut(k, "/")
		e.beat(tenant, id)
	}

	ids, sizes := e.listAll(acmeAdmin, "", 100)
	require.Equal(t, acme, ids, "every agent exactly once, in order")
	require.Equal(t, []int{100, 100, 50}, sizes)

	// The first page: default limit 100, a cursor, the total of the tenant.
	p := e.list(acmeAdmin, "")
	require.Len(t, p.ids, 100)
	require.NotNil(t, p.next)
	require.Equal(t, 250, p.total)

	for _, tt := range []struct {
		limit int
		sizes []int
	}{
		{125, []int{125, 125}},
		{250, []int{250}},
		{249, []int{249, 1}},
		{1000, []int{250}},
		{1, nil},
	} {
		ids, sizes := e.listAll(acmeAdmin, "", tt.limit)
		require.Equal(t, acme, ids, "limit %d", tt.limit)
		if tt.sizes != nil {
			require.Equal(t, tt.sizes, sizes, "limit %d", tt.limit)
		} else {
			require.Len(t, sizes, 250)
		}
	}

	// A global admin pages through every tenant, by tenant then id; or one.
	ids, sizes = e.listAll(globalAdmin, "", 100)
	require.Equal(t, all, ids)
	require.Equal(t, []int{100, 100, 70}, sizes)
	ids, _ = e.listAll(globalAdmin, "tenant=globex", 100)
	require.Equal(t, globex, ids)
	require.Equal(t, 270, e.list(globalAdmin, "").total)

	// Pages are positions, not offsets: agents that come and go between two
	// pages neither repeat nor hide the ones after the cursor.
	p = e.list(acmeAdmin, "limit=100")
	e.beat("acme", "agent-000a") // before the cursor: not listed on later pages
	e.beat("acme", "agent-150a") // after it: listed
	ok, err := e.control.Forget(ctx, key("acme", "agent-200"), func() time.Time { return e.clock.Now() })
	require.NoError(t, err)
	require.True(t, ok)
	rest := e.list(acmeAdmin, "limit=1000&cursor="+url.QueryEscape(*p.next))
	require.Equal(t, "acme/agent-100", rest.ids[0])
	require.Contains(t, rest.ids, "acme/agent-150a")
	require.NotContains(t, rest.ids, "acme/agent-200")
	require.NotContains(t, rest.ids, "acme/agent-000a")
	require.Len(t, rest.ids, 150)
}

func TestAPIListStateFilter(t *testing.T) {
	e := newEnv(t)
	// Interval 1 m: beats 20 m ago are ZOMBIE, 6 m ago SILENT.
	e.clock.Set(t0.Add(-20 * time.Minute))
	for _, id := range []string{"z1", "z2"} {
		e.beat("acme", id)
	}
	e.beat("globex", "z3")
	e.clock.Set(t0.Add(-6 * time.Minute))
	for _, id := range []string{"s1", "s2", "s3"} {
		e.beat("acme", id)
	}
	e.clock.Set(t0)
	for _, id := range []string{"a1", "r1", "r2", "x1"} {
		e.beat("acme", id)
	}
	_, err := e.store.Beat(&heartbeat.BeatRequest{Key: key("acme", "x1"), Time: t0, Interval: time.Minute, Status: heartbeat.StatusShutdown}, thresholds)
	require.NoError(t, err)
	_, err = e.control.RevokeAll(ctx, []fleet.Key{key("acme", "r1"), key("acme", "r2"), key("acme", "s3")}, adminRevocation("r", t0))
	require.NoError(t, err)

	tests := []struct {
		state string
		want  []string
	}{
		{"ACTIVE", []string{"acme/a1"}},
		{"SILENT", []string{"acme/s1", "acme/s2"}},
		{"silent", []string{"acme/s1", "acme/s2"}},
		{"ZOMBIE", []string{"acme/z1", "acme/z2"}},
		{"Stopped", []string{"acme/x1"}},
		{"REVOKED", []string{"acme/r1", "acme/r2", "acme/s3"}},
	}
	for _, tt := range tests {
		t.Run(tt.state, func(t *testing.T) {
			p := e.list(acmeAdmin, "state="+tt.state)
			require.Equal(t, tt.want, p.ids)
			require.Equal(t, len(tt.want), p.total)
			for _, s := range p.states {
				require.Equal(t, strings.ToUpper(tt.state), s)
			}
			// Paged one by one, the filter holds on every page.
			ids, _ := e.listAll(acmeAdmin, "state="+tt.state, 1)
			require.Equal(t, tt.want, ids)
		})
	}
	p := e.list(globalAdmin, "state=ZOMBIE")
	require.Equal(t, []string{"acme/z1", "acme/z2", "globex/z3"}, p.ids)

	// The states follow the clock.
	e.clock.Set(t0.Add(5 * time.Minute))
	require.Equal(t, []string{"acme/a1", "acme/s1", "acme/s2"}, e.list(acmeAdmin, "state=SILENT").ids)
	e.clock.Set(t0.Add(9 * time.Minute))
	require.Equal(t, []string{"acme/s1", "acme/s2", "acme/z1", "acme/z2"}, e.list(acmeAdmin, "state=ZOMBIE").ids)
	require.Equal(t, []string{"acme/x1"}, e.list(acmeAdmin, "state=STOPPED").ids)
}

func TestAPIListBadParameters(t *testing.T) {
	e := newEnv(t)
	e.beat("acme", "a1")
	noSeparator := base64.RawURLEncoding.EncodeToString([]byte("acme-a1"))
	for _, tt := range []struct {
		query, msg string
	}{
		{"limit=0", "limit must be an integer between 1 and 1000"},
		{"limit=-1", "limit must be"},
		{"limit=1001", "limit must be"},
		{"limit=abc", "limit must be"},
		{"limit=1.5", "limit must be"},
		{"limit=%20", "limit must be"},
		{"cursor=!!!", "malformed cursor"},
		{"cursor=" + noSeparator, "malformed cursor"},
		{"state=RECOVERED", `unknown state "RECOVERED"`},
		{"state=bogus", `unknown state "bogus"`},
	} {
		t.Run(tt.query, func(t *testing.T) {
			requireError(t, e.do(http.MethodGet, "/api/v1/installations?"+tt.query, acmeAdmin, ""), http.StatusBadRequest, tt.msg)
		})
	}
	// An empty page is a list, not null.
	p := e.do(http.MethodGet, "/api/v1/installations?state=ZOMBIE", acmeAdmin, "")
	require.JSONEq(t, `{"installations":[],"next_cursor":null,"total":0}`, p.raw)
}

func TestAPIDetail(t *testing.T) {
	e := newEnv(t)
	body := `{"status":"degraded","uptime_seconds":3600,"heartbeat_interval_seconds":30,"version":"1.4.2","exit_code":0,
"platform":{"type":"kubernetes","pod_name":"agent-7f8a","namespace":"prod","node":"node-1","image":"acme/agent:1.4.2","hostname":"agent-7f8a","os":"linux","pid":42},
"metrics":{"requests_handled":1500,"errors":2,"avg_latency_ms":145}}`
	a := e.do(http.MethodPost, "/api/v1/installations/a1/heartbeat", acmeKey, body)
	require.Equal(t, http.StatusOK, a.status, a.raw)
	e.clock.Advance(2*time.Minute + 10*time.Second) // 4 missed beats of 30 s

	_, err := e.control.Command(ctx, key("acme", "a1"), fleet.CommandPause, e.clock.Now())
	require.NoError(t, err)
	d := e.do(http.MethodGet, "/api/v1/installations/a1", acmeAdmin, "")
	require.Equal(t, http.StatusOK, d.status, d.raw)
	require.Equal(t, []string{
		"exit_code", "heartbeat_interval_seconds", "installation_id", "last_heartbeat_at", "lease_expires_at",
		"metrics", "missed_beats", "paused", "pending_command", "platform", "registered_at", "revocation", "state",
		"status", "tenant", "token_version", "uptime_seconds", "version",
	}, d.keys())
	require.Equal(t, "a1", d.str("installation_id"))
	require.Equal(t, "acme", d.str("tenant"))
	require.Equal(t, "ACTIVE", d.str("state"))
	require.Equal(t, float64(4), d.body["missed_beats"])
	require.Equal(t, rfc3339(t0), d.str("last_heartbeat_at"))
	require.Equal(t, rfc3339(t0), d.str("registered_at"))
	require.Equal(t, rfc3339(t0.Add(150*time.Second)), d.str("lease_expires_at"))
	require.Equal(t, float64(30), d.body["heartbeat_interval_seconds"])
	require.Equal(t, "degraded", d.str("status"))
	require.Equal(t, "1.4.2", d.str("version"))
	require.Equal(t, float64(3600), d.body["uptime_seconds"])
	require.Equal(t, float64(0), d.body["exit_code"])
	require.Equal(t, float64(1), d.body["token_version"])
	require.Equal(t, map[string]any{
		"type": "kubernetes", "pod_name": "agent-7f8a", "namespace": "prod", "node": "node-1",
		"image": "acme/agent:1.4.2", "hostname": "agent-7f8a", "os": "linux", "pid": float64(42),
	}, d.obj("platform"))
	require.Equal(t, map[string]any{"requests_handled": float64(1500), "errors": float64(2), "avg_latency_ms": float64(145)}, d.obj("metrics"))
	require.Equal(t, map[string]any{"command": "pause", "issued_at": rfc3339(e.clock.Now())}, d.obj("pending_command"))
	require.Nil(t, d.body["revocation"])

	// One more beat makes it SILENT.
	e.clock.Advance(20 * time.Second)
	d = e.do(http.MethodGet, "/api/v1/installations/a1?tenant=acme", globalAdmin, "")
	require.Equal(t, "SILENT", d.str("state"))
	require.Equal(t, float64(5), d.body["missed_beats"])

	// Revoked.
	require.Equal(t, http.StatusOK, e.do(http.MethodPost, "/api/v1/installations/a1/revoke", acmeAdmin, `{"reason":"why"}`).status)
	d = e.do(http.MethodGet, "/api/v1/installations/a1", acmeAdmin, "")
	require.Equal(t, "REVOKED", d.str("state"))
	require.Equal(t, map[string]any{"reason": "why", "shutdown_timeout_ms": float64(5000), "revoked_at": rfc3339(e.clock.Now()), "source": "admin"}, d.obj("revocation"))

	// An agent that reported nothing has nulls, not zeros.
	e.beat("acme", "bare")
	d = e.do(http.MethodGet, "/api/v1/installations/bare", acmeAdmin, "")
	require.Equal(t, http.StatusOK, d.status, d.raw)
	for _, k := range []string{"uptime_seconds", "exit_code", "metrics", "revocation", "pending_command"} {
		require.Nil(t, d.body[k], k)
	}
	require.Equal(t, map[string]any{"type": ""}, d.obj("platform"))
	require.Equal(t, "", d.str("version"))
	require.Equal(t, float64(0), d.body["token_version"])

	// Other tenants' agents are not visible.
	requireError(t, e.do(http.MethodGet, "/api/v1/installations/a1", globexAdmin, ""), http.StatusNotFound, "not found")
}

// TestAPIJournalFailure: a change that cannot be made durable is answered
// 503 and changes nothing.
func TestAPIJournalFailure(t *testing.T) {
	e := newEnv(t)
	token := e.register(acmeKey, "a1")
	e.register(acmeKey, "a2")
	require.Equal(t, http.StatusOK, e.do(http.MethodPost, "/api/v1/installations/a2/revoke", acmeAdmin, "").status)
	want := stateOf(e.control)
	agents := map[string]heartbeat.Agent{}
	for _, id := range []string{"a1", "a2"} {
		agents[id], _ = e.agent("acme", id)
	}

	e.ledger.fail.Store(true)
	for _, tt := range []struct{ name, method, path, body string }{
		{"revoke", http.MethodPost, "/api/v1/installations/a1/revoke", ""},
		{"reinstate", http.MethodDelete, "/api/v1/installations/a2/revoke", ""},
		{"command", http.MethodPost, "/api/v1/installations/a1/command", `{"command":"terminate"}`},
		{"forget", http.MethodDelete, "/api/v1/installations/a1", ""},
		{"forget revoked", http.MethodDelete, "/api/v1/installations/a2", ""},
		{"revoke-all", http.MethodPost, "/api/v1/revoke-all", `{"reason":"all"}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			requireError(t, e.do(tt.method, tt.path, acmeAdmin, tt.body), http.StatusServiceUnavailable, "cannot persist the change")
		})
	}
	require.Equal(t, want, stateOf(e.control))
	for id, ag := range agents {
		got, ok := e.agent("acme", id)
		require.True(t, ok, id)
		require.Equal(t, ag, got, id)
	}
	// Reads and heartbeats go on.
	require.Equal(t, http.StatusOK, e.do(http.MethodGet, "/api/v1/installations", acmeAdmin, "").status)
	b := e.do(http.MethodPost, "/api/v1/installations/a1/heartbeat", token, "")
	require.Equal(t, true, b.body["lease_renewed"], b.raw)
	require.Nil(t, b.body["command"])

	// Once the disk is back, the same requests work.
	e.ledger.fail.Store(false)
	a := e.do(http.MethodPost, "/api/v1/installations/a1/revoke", acmeAdmin, "")
	require.Equal(t, http.StatusOK, a.status, a.raw)
}

// Changes race with heartbeats of the same agent: a beat that lands while
// a forget or a reinstatement waits for the disk must not leave the store
// revoked with no revocation behind it (answered revoked forever, and not
// reinstatable).
func TestKillSwitchRacesWithHeartbeats(t *testing.T) {
	t.Run("forget", func(t *testing.T) {
		e := newEnv(t)
		token := e.register(acmeKey, "a1")
		require.Equal(t, http.StatusOK, e.do(http.MethodPost, "/api/v1/installations/a1/revoke", acmeAdmin, "").status)
		require.Equal(t, http.StatusOK, e.do(http.MethodPost, "/api/v1/installations/a1/command", acmeAdmin, `{"command":"pause"}`).status)
		e.ledger.beforeApply = func() {
			// Not forgotten yet: still revoked.
			require.Equal(t, true, e.do(http.MethodPost, "/api/v1/installations/a1/heartbeat", token, "").body["revoked"])
		}
		require.Equal(t, http.StatusOK, e.do(http.MethodDelete, "/api/v1/installations/a1", acmeAdmin, "").status)
		_, ok := e.agent("acme", "a1")
		require.False(t, ok, "the beat came before the forget")
		// Registered again, with the tenant key (its old token is refused
		// now): not revoked, no command.
		e.clock.Advance(time.Second)
		b := e.do(http.MethodPost, "/api/v1/installations/a1/heartbeat", acmeKey, "")
		require.Equal(t, true, b.body["registered"], b.raw)
		token, _ = b.obj("runtime_token")["runtime_token"].(string)
		ag, ok := e.agent("acme", "a1")
		require.True(t, ok)
		require.False(t, ag.Revoked)
		require.Equal(t, fleet.CommandNone, ag.Command)
		b = e.do(http.MethodPost, "/api/v1/installations/a1/heartbeat", token, "")
		require.Equal(t, true, b.body["lease_renewed"], b.raw)
		require.Nil(t, b.body["command"])
	})
	t.Run("reinstate", func(t *testing.T) {
		e := newEnv(t)
		token := e.register(acmeKey, "a1")
		require.Equal(t, http.StatusOK, e.do(http.MethodPost, "/api/v1/installations/a1/revoke", acmeAdmin, `{"reason":"x","shutdown_timeout_ms":3000}`).status)
		e.ledger.beforeApply = func() {
			// Not reinstated until durable: the beat is answered with the
			// revocation and its reason, never one without a reason.
			b := e.do(http.MethodPost, "/api/v1/installations/a1/heartbeat", token, "")
			require.Equal(t, true, b.body["revoked"], b.raw)
			require.Equal(t, "x", b.body["reason"], b.raw)
		}
		require.Equal(t, http.StatusOK, e.do(http.MethodDelete, "/api/v1/installations/a1/revoke", acmeAdmin, "").status)
		b := e.do(http.MethodPost, "/api/v1/installations/a1/heartbeat", token, "")
		require.Equal(t, true, b.body["lease_renewed"], b.raw)
	})
}
