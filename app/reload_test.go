package app_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/fleet"
)

const reloadedConfig = `
heartbeat:
  default_interval: 10s
  token_ttl: 2h
  token_refresh_before: 90m
admin_tokens: [global-admin-1]
tenants:
  - id: acme
    api_keys: [acme-key-2]
    admin_tokens: [acme-admin-1]
  - id: initech
    api_keys: [initech-key-1]
`

func TestReload(t *testing.T) {
	e := newEnv(t, baseConfig)
	s := e.start()
	requireReloadMetric := func(want float64) {
		t.Helper()
		requireSample(t, s.metrics(), "sentinel_config_last_reload_successful", want)
	}
	requireReloadMetric(1)

	tokA := s.register("a", acmeKey, nil)
	s.register("g", globexKey, nil)

	t.Run("changed config", func(t *testing.T) {
		e.writeConfig(reloadedConfig)
		r := s.do(http.MethodPost, "/-/reload", globalAdmin, nil)
		require.Equal(t, http.StatusOK, r.status, "%s", r.body)
		require.Equal(t, map[string]any{"status": "reloaded"}, r.json(t))
		requireReloadMetric(1)

		// The new key and the new tenant work.
		s.register("b", "acme-key-2", nil)
		s.register("i", "initech-key-1", nil)
		// The removed key is an unknown credential now.
		r = s.do(http.MethodPost, "/api/v1/installations/a/heartbeat", acmeKey, nil)
		require.Equal(t, http.StatusUnauthorized, r.status)
		require.Equal(t, "unknown credential", r.json(t)["error"])
		require.Contains(t, r.header.Get("WWW-Authenticate"), "Bearer")
		// So is the removed tenant's, and its runtime tokens with it.
		r = s.do(http.MethodPost, "/api/v1/installations/g/heartbeat", globexKey, nil)
		require.Equal(t, http.StatusUnauthorized, r.status)
		r = s.do(http.MethodGet, "/api/v1/installations/g", "globex-admin-1", nil)
		require.Equal(t, http.StatusUnauthorized, r.status)
		// The removed tenant's agents are dropped: gone from the store, the
		// count and /metrics (see TestRemovedTenant).
		_, ok := s.app.Store().Get(fleet.Key{Tenant: "globex", AgentID: "g"})
		require.False(t, ok)
		require.False(t, strings.Contains(s.metrics(), `tenant="globex"`), "globex series left in /metrics")
		// A runtime token of a tenant that stays keeps working.
		s.beat("a", tokA, nil)
		require.Equal(t, "initech", s.app.Config().Tenants[1].ID)
	})

	t.Run("bad config keeps the running one", func(t *testing.T) {
		e.writeConfig(reloadedConfig + "surprise: true\n")
		r := s.do(http.MethodPost, "/-/reload", globalAdmin, nil)
		require.Equal(t, http.StatusInternalServerError, r.status)
		require.Equal(t, "application/json", r.header.Get("Content-Type"))
		msg, _ := r.json(t)["error"].(string)
		require.True(t, strings.HasPrefix(msg, "reload failed, the running configuration is kept: config "+e.config+": "), msg)
		require.Contains(t, msg, "line 13: unknown field in type config.Config")
		require.NotContains(t, msg, "surprise")
		requireReloadMetric(0)

		// The running configuration answers as before.
		s.beat("b", "acme-key-2", nil)
		s.beat("a", tokA, nil)
		require.Equal(t, http.StatusUnauthorized, s.do(http.MethodPost, "/api/v1/installations/a/heartbeat", acmeKey, nil).status)
		require.Len(t, s.app.Config().Tenants, 2)
		require.Contains(t, e.logs.String(), "configuration reload failed")

		// Reload (the SIGHUP path) reports the same error.
		require.ErrorContains(t, s.app.Reload(), "line 13: unknown field in type config.Config")

		// An emptied file is refused the same way.
		e.writeConfig("")
		r = s.do(http.MethodPut, "/-/reload", globalAdmin, nil)
		require.Equal(t, http.StatusInternalServerError, r.status)
		require.Contains(t, r.json(t)["error"], "the configuration is empty")
		s.beat("b", "acme-key-2", nil)
	})

	t.Run("good config again", func(t *testing.T) {
		e.writeConfig(baseConfig)
		r := s.do(http.MethodPost, "/-/reload", globalAdmin, nil)
		require.Equal(t, http.StatusOK, r.status, "%s", r.body)
		requireReloadMetric(1)
		s.beat("g", globexKey, nil)
		require.Equal(t, http.StatusUnauthorized, s.do(http.MethodPost, "/api/v1/installations/b/heartbeat", "acme-key-2", nil).status)
	})
}

// Lowering max_agents by a reload refuses new agents with 429 and evicts
// nobody: every admitted agent keeps beating and keeps its series.
func TestReloadLowersMaxAgents(t *testing.T) {
	e := newEnv(t, baseConfig)
	s := e.start()
	toks := map[string]string{}
	for _, id := range []string{"a1", "a2", "a3"} {
		toks[id] = s.register(id, acmeKey, nil)
	}

	e.writeConfig(strings.Replace(baseConfig, "  max_interval: 1h\n", "  max_interval: 1h\n  max_agents: 2\n", 1))
	require.NoError(t, s.app.Reload())
	require.Equal(t, 2, s.app.Config().Heartbeat.MaxAgents)

	for _, key := range []string{acmeKey, globexKey} {
		r := s.do(http.MethodPost, "/api/v1/installations/newcomer/heartbeat", key, nil)
		require.Equal(t, http.StatusTooManyRequests, r.status)
		require.Contains(t, r.json(t)["error"], "agent limit reached")
	}
	r := s.do(http.MethodPost, "/v1/heartbeat?agentId=newcomer", acmeKey, nil)
	require.Equal(t, http.StatusTooManyRequests, r.status)

	require.Equal(t, 3, s.app.Store().Len())
	for id, tok := range toks {
		require.Equal(t, "ACTIVE", s.beat(id, tok, nil)["state"])
		require.Equal(t, "ACTIVE", s.beat(id, acmeKey, nil)["state"])
	}
	text := s.metrics()
	requireSample(t, text, `sentinel_agents_refused_total{tenant="acme"}`, 2)
	requireSample(t, text, `sentinel_agents_refused_total{tenant="globex"}`, 1)
	requireSample(t, text, `sentinel_agents{state="ACTIVE",tenant="acme"}`, 3)

	// Forgetting one makes room below the limit again only once the count
	// is under it: 3 → 2 is still at the limit.
	require.Equal(t, http.StatusOK, s.do(http.MethodDelete, "/api/v1/installations/a3", acmeAdmin, nil).status)
	require.Equal(t, http.StatusTooManyRequests, s.do(http.MethodPost, "/api/v1/installations/newcomer/heartbeat", acmeKey, nil).status)
	require.Equal(t, http.StatusOK, s.do(http.MethodDelete, "/api/v1/installations/a2", acmeAdmin, nil).status)
	s.register("newcomer", acmeKey, nil)

	// Raising it again admits new agents.
	e.writeConfig(baseConfig)
	require.NoError(t, s.app.Reload())
	s.register("another", acmeKey, nil)
	require.Equal(t, 3, s.app.Store().Len())
}

// A value of the wrong type may be a secret: neither the reload's answer nor
// the log quotes it, both name the line.
func TestReloadHidesConfiguredValues(t *testing.T) {
	e := newEnv(t, baseConfig)
	s := e.start()
	e.writeConfig("tenants:\n  - id: acme\n    api_keys: ACMEKEY-SUPERSECRET-VALUE\n")
	r := s.do(http.MethodPost, "/-/reload", globalAdmin, nil)
	require.Equal(t, http.StatusInternalServerError, r.status)
	require.Equal(t, "reload failed, the running configuration is kept: config "+e.config+
		": yaml: unmarshal errors:\n  line 3: cannot unmarshal !!str <redacted> into []config.Secret", r.json(t)["error"])
	require.NotContains(t, string(r.body), "ACMEKEY")
	require.Contains(t, e.logs.String(), "configuration reload failed")
	require.Contains(t, e.logs.String(), "line 3: cannot unmarshal")
	require.NotContains(t, e.logs.String(), "ACMEKEY")
}
