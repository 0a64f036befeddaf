package bridge

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/config"
	"github.com/agentsentinel/sentinel/fleet"
)

// TestHandlerErrorAnswers: each refusal of the bridge with its exact status,
// headers and body; a failed commit is a 503 that does not show the store's
// error text.
func TestHandlerErrorAnswers(t *testing.T) {
	cfg, err := config.Parse([]byte(handlerConfig), t.TempDir())
	require.NoError(t, err)
	store := &failingStore{world: world{agents: map[fleet.Key]AgentFacts{agentA: active()}}}
	h := NewHandler(store, SettingsFromConfig(cfg), slog.New(slog.DiscardHandler), nil, func() time.Time { return t0 })
	const bridgeToken = "bridge-secret-token-1"
	tests := []struct {
		name, method, token, body string
		status                    int
		msg                       string
		headers                   map[string]string // "" is absent
	}{
		{"method", http.MethodGet, bridgeToken, "", http.StatusMethodNotAllowed, "method not allowed: use POST", map[string]string{"Allow": "POST"}},
		{"no credential", http.MethodPost, "", validNotification, http.StatusUnauthorized, "a bridge bearer token is required",
			map[string]string{"WWW-Authenticate": `Bearer realm="sentinel"`}},
		{"unknown credential", http.MethodPost, "guess", validNotification, http.StatusUnauthorized, "a bridge bearer token is required: unknown credential",
			map[string]string{"WWW-Authenticate": `Bearer realm="sentinel"`}},
		{"tenant key", http.MethodPost, "acme-key-secret-1", validNotification, http.StatusForbidden, "this credential may not call the bridge", nil},
		{"wrong version", http.MethodPost, bridgeToken, `{"version":"3","alerts":[]}`, http.StatusBadRequest,
			`malformed Alertmanager notification: version must be "4" (Alertmanager's webhook_config payload)`, nil},
		{"too large", http.MethodPost, bridgeToken, strings.Repeat(" ", MaxNotificationBytes+1), http.StatusRequestEntityTooLarge,
			"notification larger than 16777216 bytes", nil},
		{"cannot persist", http.MethodPost, bridgeToken, validNotification, http.StatusServiceUnavailable,
			"cannot persist the notification now; retry", map[string]string{"Retry-After": "5"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, "/api/v1/alertmanager", strings.NewReader(tt.body))
			if tt.token != "" {
				req.Header.Set("Authorization", "Bearer "+tt.token)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			require.Equal(t, tt.status, w.Code, w.Body.String())
			require.Equal(t, "application/json", w.Header().Get("Content-Type"))
			want, err := json.Marshal(map[string]string{"error": tt.msg})
			require.NoError(t, err)
			require.JSONEq(t, string(want), w.Body.String())
			for _, k := range []string{"Allow", "WWW-Authenticate", "Retry-After"} {
				require.Equal(t, tt.headers[k], w.Header().Get(k), k)
			}
			require.NotContains(t, w.Body.String(), "connection refused")
		})
	}
}
