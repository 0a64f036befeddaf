package killswitch

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzAdminBodies posts arbitrary bodies to the admin endpoints that take
// one, seeded from the table tests: every answer is JSON with a status of
// SPEC 2 (never a 5xx), and what a 200 announces is what the state holds.
func FuzzAdminBodies(f *testing.F) {
	for _, seed := range []struct {
		endpoint byte
		body     string
	}{
		{0, `{"reason":"Emergency shutdown initiated by admin","shutdown_timeout_ms":5000}`},
		{0, `{"reason":"","shutdown_timeout_ms":0}`}, {0, `{"shutdown_timeout_ms":-1}`}, {0, `{"reasn":"typo"}`},
		{0, `{"shutdown_timeout_ms":1e30}`}, {0, ``}, {0, `null`}, {0, `{"reason":"a"}{}`},
		{1, `{"command":"pause"}`}, {1, `{"command":"resume"}`}, {1, `{"command":"terminate"}`},
		{1, `{"command":"explode"}`}, {1, `{}`}, {1, `{"command":1}`},
		{2, `{"reason":"workspace stop","shutdown_timeout_ms":100}`}, {2, `[]`},
	} {
		f.Add(seed.endpoint, []byte(seed.body))
	}
	paths := []string{"/api/v1/installations/agent-1/revoke", "/api/v1/installations/agent-1/command", "/api/v1/revoke-all"}
	allowed := []int{http.StatusOK, http.StatusBadRequest, http.StatusNotFound, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity}
	f.Fuzz(func(t *testing.T, endpoint byte, body []byte) {
		e := newEnv(t)
		e.register(acmeKey, "agent-1")
		path := paths[int(endpoint)%len(paths)]
		a := e.do(http.MethodPost, path, acmeAdmin, string(body))
		require.Contains(t, allowed, a.status, "%s: %s", path, a.raw)
		require.NotNil(t, a.body, "a JSON object: %s", a.raw)
		if a.status != http.StatusOK {
			require.NotEmpty(t, a.str("error"))
			_, revoked := e.control.Revocation(key("acme", "agent-1"))
			_, pending := e.control.PendingCommand(key("acme", "agent-1"))
			require.False(t, revoked, "a refused request changed nothing")
			require.False(t, pending, "a refused request changed nothing")
			return
		}
		switch int(endpoint) % len(paths) {
		case 0, 2:
			_, revoked := e.control.Revocation(key("acme", "agent-1"))
			require.True(t, revoked)
		case 1:
			_, pending := e.control.PendingCommand(key("acme", "agent-1"))
			require.True(t, pending)
		}
	})
}

// FuzzListCursor lists with arbitrary cursors, limits and states: 200 or a
// JSON 400, and a page never holds more than its limit.
func FuzzListCursor(f *testing.F) {
	enc := base64.RawURLEncoding
	for _, seed := range []struct{ cursor, limit, state string }{
		{"", "", ""}, {enc.EncodeToString([]byte("acme\x00agent-1")), "1", ""}, {enc.EncodeToString([]byte("acme")), "", ""},
		{"!!!", "", ""}, {"", "0", ""}, {"", "1001", ""}, {"", "x", ""}, {"", "", "silent"}, {"", "", "RECOVERED"},
		{enc.EncodeToString([]byte("\x00")), "2", "active"}, {enc.EncodeToString([]byte("zzz\x00")), "", ""},
	} {
		f.Add(seed.cursor, seed.limit, seed.state)
	}
	f.Fuzz(func(t *testing.T, cursor, limit, state string) {
		e := newEnv(t)
		for _, id := range []string{"agent-1", "agent-2", "agent-3"} {
			e.register(acmeKey, id)
		}
		q := url.Values{}
		for k, v := range map[string]string{"cursor": cursor, "limit": limit, "state": state} {
			if v != "" {
				q.Set(k, v)
			}
		}
		a := e.do(http.MethodGet, "/api/v1/installations?"+q.Encode(), acmeAdmin, "")
		require.True(t, slices.Contains([]int{http.StatusOK, http.StatusBadRequest}, a.status), "%d %s", a.status, a.raw)
		if a.status != http.StatusOK {
			require.NotEmpty(t, a.str("error"))
			return
		}
		page, _ := a.body["installations"].([]any)
		require.LessOrEqual(t, len(page), 100)
		require.LessOrEqual(t, len(page), int(a.body["total"].(float64)))
	})
}
