package app_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

// The assembled app tells a genuine runtime token on the admin API (a
// credential of the wrong kind: 403) from a forged one (unknown: 401).
func TestAdminAPIRefusesRuntimeTokens(t *testing.T) {
	e := newEnv(t, baseConfig)
	s := e.start()
	token := s.register("a1", acmeKey, nil)
	require.Equal(t, http.StatusForbidden, s.do(http.MethodGet, "/api/v1/installations/a1", token, nil).status)
	require.Equal(t, http.StatusUnauthorized, s.do(http.MethodGet, "/api/v1/installations/a1", "srt_forged.token", nil).status)
	require.Equal(t, http.StatusOK, s.do(http.MethodGet, "/api/v1/installations/a1", acmeAdmin, nil).status)
}
