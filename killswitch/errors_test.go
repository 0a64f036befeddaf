package killswitch

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/delivery"
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

// fakeTester answers webhook.test with err.
type fakeTester struct{ err error }

func (f fakeTester) Test(context.Context, string) (delivery.Result, error) {
	return delivery.Result{}, f.err
}

// TestDeliveriesAPIErrorAnswers: the refusals of the deliveries API, with
// their exact status, headers and body; an error of the tester or the
// ledger does not show its text.
func TestDeliveriesAPIErrorAnswers(t *testing.T) {
	for _, tc := range []struct {
		name, method, path string
		testerErr          error
		failLedger         bool
		status             int
		msg                string
		headers            map[string]string
	}{
		{"list method", http.MethodPost, "/api/v1/deliveries", nil, false, http.StatusMethodNotAllowed,
			"method POST not allowed; use GET or HEAD", map[string]string{"Allow": "GET, HEAD"}},
		{"enable method", http.MethodGet, "/api/v1/webhook/enable", nil, false, http.StatusMethodNotAllowed,
			"method GET not allowed; use POST", map[string]string{"Allow": "POST"}},
		{"bad status", http.MethodGet, "/api/v1/deliveries?status=lost", nil, false, http.StatusBadRequest,
			"status must be one of pending, delivered, failed", nil},
		{"bad agent id", http.MethodGet, "/api/v1/deliveries?agent_id=-x", nil, false, http.StatusBadRequest,
			"invalid agent_id: must match ^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$", nil},
		{"bad limit", http.MethodGet, "/api/v1/deliveries?limit=5000", nil, false, http.StatusBadRequest, "limit must be an integer from 1 to 1000", nil},
		{"bad cursor", http.MethodGet, "/api/v1/deliveries?cursor=x", nil, false, http.StatusBadRequest,
			"invalid cursor: pass the next_cursor of the previous page", nil},
		{"unknown event", http.MethodPost, "/api/v1/deliveries/evt-1/redeliver", nil, false, http.StatusNotFound,
			"no delivery of this tenant has this event id", nil},
		{"no webhook", http.MethodPost, "/api/v1/webhook/test", delivery.ErrNoEndpoint, false, http.StatusNotFound,
			"the tenant has no webhook configured", nil},
		{"test cannot be built", http.MethodPost, "/api/v1/webhook/test", errors.New("no space left on device"), false,
			http.StatusInternalServerError, "cannot build the test event", nil},
		{"ledger failure", http.MethodPost, "/api/v1/webhook/enable", nil, true, http.StatusServiceUnavailable,
			"cannot persist the change; nothing was changed, retry later", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			(&DeliveriesAPI{API: e.api, Ledger: e.ledger, Tester: fakeTester{tc.testerErr}}).Register(e.mux)
			e.ledger.fail.Store(tc.failLedger)
			a := e.do(tc.method, tc.path, acmeAdmin, "")
			requireError(t, a, tc.status, tc.msg)
			require.Equal(t, tc.msg, a.str("error"))
			for _, h := range []string{"Allow", "WWW-Authenticate", "Retry-After"} {
				require.Equal(t, tc.headers[h], a.header.Get(h), h)
			}
			require.NotContains(t, a.raw, "no space left")
		})
	}
}
