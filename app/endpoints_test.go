package app_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestOperationalEndpoints(t *testing.T) {
	e := newEnv(t, baseConfig)
	s := e.start()

	for _, tc := range []struct {
		method, path string
		status       int
		contentType  string
		contains     string
	}{
		{http.MethodGet, "/-/healthy", http.StatusOK, "text/plain", "Healthy"},
		{http.MethodGet, "/-/ready", http.StatusOK, "text/plain", "Ready"},
		{http.MethodGet, "/", http.StatusOK, "text/html", "Sentinel"},
		{http.MethodGet, "/metrics", http.StatusOK, "text/plain", "sentinel_build_info"},
		{http.MethodGet, "/no/such/thing", http.StatusNotFound, "application/json", `{"error":"no such endpoint: /no/such/thing"}`},
		{http.MethodPost, "/favicon.ico", http.StatusNotFound, "application/json", `"error"`},
		{http.MethodGet, "/-/reload", http.StatusMethodNotAllowed, "application/json", `"error"`},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			r := s.do(tc.method, tc.path, "", nil)
			require.Equal(t, tc.status, r.status, "%s", r.body)
			require.True(t, strings.HasPrefix(r.header.Get("Content-Type"), tc.contentType), r.header.Get("Content-Type"))
			require.Contains(t, string(r.body), tc.contains)
			if tc.contentType == "application/json" {
				require.Contains(t, r.json(t), "error")
			}
		})
	}

	t.Run("landing page links", func(t *testing.T) {
		r := s.do(http.MethodGet, "/", "", nil)
		for _, link := range []string{"/metrics", "/-/healthy", "/-/ready"} {
			require.Contains(t, string(r.body), link)
		}
	})

	t.Run("not ready after close", func(t *testing.T) {
		s.close()
		// The handler outlives the server: call it directly.
		rec := doHandler(s.app.Handler(), http.MethodGet, "/-/ready")
		require.Equal(t, http.StatusServiceUnavailable, rec.Code)
		rec = doHandler(s.app.Handler(), http.MethodGet, "/-/healthy")
		require.Equal(t, http.StatusOK, rec.Code)
	})
}

func TestCustomTelemetryPath(t *testing.T) {
	e := newEnv(t, baseConfig)
	o := e.options()
	o.TelemetryPath = "/internal/metrics"
	a := mustNew(t, o)
	rec := doHandler(a.Handler(), http.MethodGet, "/internal/metrics")
	require.Equal(t, http.StatusOK, rec.Code)
	require.Contains(t, rec.Body.String(), "sentinel_config_last_reload_successful 1")
	rec = doHandler(a.Handler(), http.MethodGet, "/metrics")
	require.Equal(t, http.StatusNotFound, rec.Code)
	rec = doHandler(a.Handler(), http.MethodGet, "/")
	require.Contains(t, rec.Body.String(), "/internal/metrics")
}
