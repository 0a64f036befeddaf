package bridge

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/config"
	"github.com/agentsentinel/sentinel/fleet"
)

// failingStore stands for a ledger that cannot commit (PostgreSQL down, a
// failed fsync): the handler must answer 503 so that Alertmanager retries.
type failingStore struct {
	world
	commits int
}

func (s *failingStore) Facts() Facts { return s.world.facts() }

func (s *failingStore) Commit(context.Context, Plan, time.Time) error {
	s.commits++
	return errors.New("ledger unavailable: connection refused")
}

const handlerConfig = `
tenants:
  - id: acme
    api_keys: [acme-key-secret-1]
    admin_tokens: [acme-admin-secret-1]
bridge:
  bearer_token: bridge-secret-token-1
`

func TestHandlerStatuses(t *testing.T) {
	cfg, err := config.Parse([]byte(handlerConfig), t.TempDir())
	require.NoError(t, err)
	var logs bytes.Buffer
	store := &failingStore{world: world{agents: map[fleet.Key]AgentFacts{agentA: active()}}}
	reg := prometheus.NewPedanticRegistry()
	h := NewHandler(store, SettingsFromConfig(cfg), slog.New(slog.NewTextHandler(&logs, nil)), reg, func() time.Time { return t0 })

	post := func(token, body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, "/api/v1/alertmanager", strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w
	}
	for _, tc := range []struct {
		name, token, body string
		status            int
	}{
		{"no credential", "", validNotification, http.StatusUnauthorized},
		{"unknown credential", "guess", validNotification, http.StatusUnauthorized},
		{"tenant key", "acme-key-secret-1", validNotification, http.StatusForbidden},
		{"admin token", "acme-admin-secret-1", validNotification, http.StatusForbidden},
		{"malformed", "bridge-secret-token-1", `{"version":"4","alerts":[{]}`, http.StatusBadRequest},
		{"cannot persist", "bridge-secret-token-1", validNotification, http.StatusServiceUnavailable},
		{"nothing to persist", "bridge-secret-token-1", `{"version":"4","alerts":[]}`, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := post(tc.token, tc.body)
			require.Equal(t, tc.status, w.Code, w.Body.String())
			require.Equal(t, "application/json", w.Header().Get("Content-Type"))
			require.Contains(t, w.Body.String(), `"`)
			switch tc.status {
			case http.StatusUnauthorized:
				require.Contains(t, w.Header().Get("WWW-Authenticate"), "Bearer")
			case http.StatusServiceUnavailable:
				require.NotEmpty(t, w.Header().Get("Retry-After"))
			}
		})
	}
	require.Equal(t, 1, store.commits)
	require.Equal(t, 4.0, testutil.ToFloat64(h.notifications.WithLabelValues("unauthorized")))
	require.Equal(t, 1.0, testutil.ToFloat64(h.notifications.WithLabelValues("malformed")))
	require.Equal(t, 1.0, testutil.ToFloat64(h.notifications.WithLabelValues("unavailable")))
	require.Equal(t, 1.0, testutil.ToFloat64(h.notifications.WithLabelValues("accepted")))
	for _, secret := range []string{"bridge-secret-token-1", "acme-key-secret-1", "acme-admin-secret-1", "guess"} {
		require.NotContains(t, logs.String(), secret)
	}
	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	require.Empty(t, problems)
}
