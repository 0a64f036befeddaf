package app_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/fleet"
)

// POST /-/reload swaps every credential: only a global admin token may ask.
func TestReloadNeedsGlobalAdmin(t *testing.T) {
	e := newEnv(t, baseConfig)
	s := e.start()
	runtimeToken := s.register("a1", acmeKey, nil)
	e.writeConfig(reloadedConfig)
	for _, tc := range []struct {
		name, token string
		status      int
	}{
		{"no credential", "", http.StatusUnauthorized},
		{"runtime token", runtimeToken, http.StatusForbidden},
		{"unknown credential", "not-a-token", http.StatusUnauthorized},
		{"tenant admin", acmeAdmin, http.StatusForbidden},
		{"tenant key", acmeKey, http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := s.do(http.MethodPost, "/-/reload", tc.token, nil)
			require.Equal(t, tc.status, r.status, "%s", r.body)
			require.Contains(t, r.json(t), "error")
			require.Len(t, s.app.Config().Tenants, 2)
			require.Equal(t, "globex", s.app.Config().Tenants[1].ID, "the configuration was not reloaded")
		})
	}
	r := s.do(http.MethodPost, "/-/reload", globalAdmin, nil)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	require.Equal(t, "initech", s.app.Config().Tenants[1].ID)
}

// A non-canonical path is answered with a JSON 400, never a redirect that
// a client could follow with its method onto another resource.
func TestNonCanonicalPathsAreNotRedirected(t *testing.T) {
	e := newEnv(t, baseConfig)
	s := e.start()
	s.register("a1", acmeKey, nil)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range []struct{ method, path string }{
		{http.MethodDelete, "/api/v1/installations/a1/revoke/.."},
		{http.MethodDelete, "/api/v1/installations/a1/revoke/%2e%2e"},
		{http.MethodDelete, "/api/v1/installations/a1/"},
		{http.MethodDelete, "/api/v1/installations/x/../a1"},
		{http.MethodGet, "/api/v1/./installations"},
		{http.MethodGet, "//metrics"},
		{http.MethodGet, "/-/healthy/"},
		{http.MethodPost, "/api/v1/installations/a1/heartbeat/."},
		{http.MethodPost, "/api/v1/installations/x/../a1/heartbeat"},
		{http.MethodPost, "/api/v1/installations/../heartbeat"},
		{http.MethodPost, "/v1//heartbeat"},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, s.base+tc.path, nil)
			require.NoError(t, err)
			req.Header.Set("Authorization", "Bearer "+acmeAdmin)
			resp, err := noRedirect.Do(req)
			require.NoError(t, err)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.Equal(t, http.StatusBadRequest, resp.StatusCode, "%s", body)
			require.Empty(t, resp.Header.Get("Location"))
			require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			require.Contains(t, string(body), "not canonical")
		})
	}
	_, ok := s.app.Store().Get(fleet.Key{Tenant: "acme", AgentID: "a1"})
	require.True(t, ok, "a1 must not have been forgotten")
}

func TestLandingPageMethods(t *testing.T) {
	e := newEnv(t, baseConfig)
	s := e.start()
	for _, m := range []string{http.MethodPost, "TRACE", http.MethodPut, http.MethodDelete} {
		r := s.do(m, "/", "", nil)
		require.Equal(t, http.StatusMethodNotAllowed, r.status, m)
		require.Equal(t, "GET, HEAD", r.header.Get("Allow"))
		require.Contains(t, r.json(t), "error")
	}
	require.Equal(t, http.StatusOK, s.do(http.MethodGet, "/", "", nil).status)
	require.Equal(t, http.StatusOK, s.do(http.MethodHead, "/", "", nil).status)
}

// A tenant removed from the configuration takes its agents with it, at a
// reload and at a start: no series, no count. Its revocations are kept, in
// force again if the tenant comes back.
func TestRemovedTenant(t *testing.T) {
	e := newEnv(t, baseConfig)
	s := e.start()
	s.register("g1", globexKey, nil)
	s.register("g2", globexKey, nil)
	r := s.do(http.MethodPost, "/api/v1/installations/g1/revoke", "globex-admin-1", map[string]any{"reason": "stop it"})
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	require.Equal(t, 2, s.app.Store().TenantLen("globex"))

	// Removed while sentinel is down: dropped at start.
	s.close()
	e.writeConfig(reloadedConfig)
	s = e.start()
	require.Zero(t, s.app.Store().TenantLen("globex"))
	require.False(t, strings.Contains(s.metrics(), `tenant="globex"`), "globex series left in /metrics")
	list := s.do(http.MethodGet, "/api/v1/installations", globalAdmin, nil)
	require.Equal(t, http.StatusOK, list.status)
	require.Equal(t, float64(0), list.json(t)["total"].(float64)-float64(len(list.json(t)["installations"].([]any))))
	require.NotContains(t, string(list.body), "globex")

	// Back in the configuration: its agents register again, and the
	// revocation is still in force.
	e.writeConfig(baseConfig)
	require.Equal(t, http.StatusOK, s.do(http.MethodPost, "/-/reload", globalAdmin, nil).status)
	m := s.beat("g1", globexKey, nil)
	require.Equal(t, true, m["revoked"], "%v", m)
	require.Equal(t, "stop it", m["reason"])
	s.register("g2", globexKey, nil)

	// Removed by a reload: dropped at once.
	e.writeConfig(reloadedConfig)
	require.Equal(t, http.StatusOK, s.do(http.MethodPost, "/-/reload", globalAdmin, nil).status)
	require.Zero(t, s.app.Store().TenantLen("globex"))
	require.False(t, strings.Contains(s.metrics(), `tenant="globex"`), "globex series left in /metrics")
	require.Contains(t, e.logs.String(), "agents of tenants no longer configured were dropped")
}

// Agents turning SILENT and ZOMBIE by sentinel's clock are logged once each.
func TestLivenessTransitionsLogged(t *testing.T) {
	e := newEnv(t, baseConfig)
	s := e.start()
	s.register("quiet", acmeKey, nil) // interval 10s
	e.clock.Advance(51 * time.Second)
	s.app.SweepLiveness()
	s.app.SweepLiveness()
	require.Equal(t, 1, strings.Count(e.logs.String(), "agent turned SILENT"), e.logs.String())
	e.clock.Advance(100 * time.Second)
	s.app.SweepLiveness()
	require.Equal(t, 1, strings.Count(e.logs.String(), "agent turned ZOMBIE"))
	s.beat("quiet", acmeKey, nil)
	require.Contains(t, e.logs.String(), "agent recovered")
}
