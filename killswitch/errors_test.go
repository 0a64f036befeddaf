package killswitch

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/jsonapi"
)

// TestAPIErrorAnswers: every kind of refusal of the admin API, with its
// exact status, headers and body. A failure of the ledger is a 503 whose body
// does not carry the ledger's error text.
func TestAPIErrorAnswers(t *testing.T) {
	e := newEnv(t)
	runtime := e.register(acmeKey, "a1")
	tooLarge := `{"reason":"` + strings.Repeat("r", jsonapi.MaxBodyBytes) + `"}`
	tests := []struct {
		name, method, path, token, body string
		failLedger                      bool
		status                          int
		msg                             string
		headers                         map[string]string // "" is absent
	}{
		{"method", http.MethodPut, "/api/v1/installations/a1", acmeAdmin, "", false, http.StatusMethodNotAllowed,
			"method PUT not allowed; use GET or DELETE", map[string]string{"Allow": "GET, DELETE"}},
		{"list method", http.MethodPost, "/api/v1/installations", acmeAdmin, "", false, http.StatusMethodNotAllowed,
			"method POST not allowed; use GET", map[string]string{"Allow": "GET"}},
		{"no credential", http.MethodGet, "/api/v1/installations", "", "", false, http.StatusUnauthorized,
			"", map[string]string{"WWW-Authenticate": `Bearer realm="sentinel"`}},
		{"runtime token", http.MethodGet, "/api/v1/installations", runtime, "", false, http.StatusForbidden,
			"an admin token is required; runtime tokens only send heartbeats", nil},
		{"tenant key", http.MethodGet, "/api/v1/installations", acmeKey, "", false, http.StatusForbidden, "an admin token is required", nil},
		{"other tenant", http.MethodGet, "/api/v1/installations?tenant=globex", acmeAdmin, "", false, http.StatusForbidden,
			"this admin token belongs to another tenant", nil},
		{"global admin without tenant", http.MethodPost, "/api/v1/revoke-all", globalAdmin, "", false, http.StatusBadRequest,
			"a global admin token must name the tenant with ?tenant=", nil},
		{"unknown tenant", http.MethodGet, "/api/v1/installations?tenant=nope", globalAdmin, "", false, http.StatusNotFound, `unknown tenant "nope"`, nil},
		{"invalid agent id", http.MethodGet, "/api/v1/installations/-x", acmeAdmin, "", false, http.StatusBadRequest,
			"invalid agent id: must match ^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$", nil},
		{"unknown agent", http.MethodGet, "/api/v1/installations/zz", acmeAdmin, "", false, http.StatusNotFound, `agent "zz" not found`, nil},
		{"unknown field", http.MethodPost, "/api/v1/installations/a1/revoke", acmeAdmin, `{"reasn":"x"}`, false, http.StatusBadRequest,
			`malformed JSON body: json: unknown field "reasn"`, nil},
		{"trailing data", http.MethodPost, "/api/v1/installations/a1/revoke", acmeAdmin, `{} {}`, false, http.StatusBadRequest,
			"malformed JSON body: data after the object", nil},
		{"too large", http.MethodPost, "/api/v1/installations/a1/revoke", acmeAdmin, tooLarge, false, http.StatusRequestEntityTooLarge,
			"request body over 65536 bytes", nil},
		{"unsupported command", http.MethodPost, "/api/v1/installations/a1/command", acmeAdmin, `{"command":"dance"}`, false,
			http.StatusUnprocessableEntity, `unsupported command "dance"; supported: pause, resume, terminate`, nil},
		{"bad limit", http.MethodGet, "/api/v1/installations?limit=0", acmeAdmin, "", false, http.StatusBadRequest,
			"limit must be an integer between 1 and 1000", nil},
		{"ledger failure", http.MethodPost, "/api/v1/installations/a1/revoke", acmeAdmin, "", true, http.StatusServiceUnavailable,
			"cannot persist the change; nothing was changed, retry later", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.ledger.fail.Store(tt.failLedger)
			defer e.ledger.fail.Store(false)
			a := e.do(tt.method, tt.path, tt.token, tt.body)
			requireError(t, a, tt.status, tt.msg)
			if tt.msg != "" {
				require.Equal(t, tt.msg, a.str("error"))
			}
			require.Equal(t, "no-store", a.header.Get("Cache-Control"))
			for _, h := range []string{"Allow", "WWW-Authenticate", "Retry-After"} {
				require.Equal(t, tt.headers[h], a.header.Get(h), h)
			}
			require.NotContains(t, a.raw, "no space left", "the ledger's error stays in the log")
		})
	}
}
