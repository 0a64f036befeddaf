package auth

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/config"
	"github.com/agentsentinel/sentinel/fleet"
)

// TestAuthenticate: one table for every credential the receiver, the admin
// API and the bridge see.
func TestAuthenticate(t *testing.T) {
	cfg, err := config.Parse([]byte(`
admin_tokens: [global-admin]
tenants:
  - id: acme
    api_keys: [acme-key]
    admin_tokens: [acme-admin]
bridge:
  bearer_token: bridge-token
`), t.TempDir())
	require.NoError(t, err)
	signer := newSigner(t, testKey)
	other := newSigner(t, make([]byte, KeySize))
	const ttl = time.Hour
	issue := func(s *Signer, tenant, agent string, issued time.Time) string {
		return s.Issue(RuntimeToken{Tenant: tenant, AgentID: agent, Version: 1, ExpiresAt: issued.Add(ttl).Truncate(time.Second)})
	}
	forgottenAt := now.Add(-time.Minute)
	a := Authenticator{
		Credentials: NewCredentials(cfg), Signer: signer, TokenTTL: ttl,
		Forgotten: func(k fleet.Key) (time.Time, bool) {
			return forgottenAt, k == fleet.Key{Tenant: "acme", AgentID: "forgotten"}
		},
	}
	for _, tc := range []struct {
		name   string
		header string
		kind   Kind
		tenant string
		err    error
	}{
		{"no header", "", KindNone, "", ErrNoCredential},
		{"not bearer", "Basic abc", KindNone, "", ErrNoCredential},
		{"unknown", "Bearer nope", KindNone, "", ErrUnknownCredential},
		{"tenant key", "Bearer acme-key", KindTenantKey, "acme", nil},
		{"tenant admin", "Bearer acme-admin", KindTenantAdmin, "acme", nil},
		{"global admin", "bearer global-admin", KindGlobalAdmin, "", nil},
		{"bridge", "Bearer bridge-token", KindBridge, "", nil},
		{"runtime token", "Bearer " + issue(signer, "acme", "a1", now), KindRuntimeToken, "acme", nil},
		{"runtime token, expired", "Bearer " + issue(signer, "acme", "a1", now.Add(-2*ttl)), KindRuntimeToken, "acme", ErrTokenExpired},
		{"runtime token of another key", "Bearer " + issue(other, "acme", "a1", now), KindNone, "", ErrUnknownCredential},
		{"runtime token of an unknown tenant", "Bearer " + issue(signer, "globex", "a1", now), KindNone, "", ErrUnknownCredential},
		{"forged srt_", "Bearer srt_forged.sig", KindNone, "", ErrUnknownCredential},
		{"issued before the forget", "Bearer " + issue(signer, "acme", "forgotten", forgottenAt.Add(-30*time.Minute)), KindRuntimeToken, "acme", ErrTokenForgotten},
		{"issued after the forget", "Bearer " + issue(signer, "acme", "forgotten", forgottenAt.Add(2*time.Second)), KindRuntimeToken, "acme", nil},
		{"issued in the second of the forget", "Bearer " + issue(signer, "acme", "forgotten", forgottenAt.Truncate(time.Second)), KindRuntimeToken, "acme", nil},
		{"issued the second before the forget", "Bearer " + issue(signer, "acme", "forgotten", forgottenAt.Truncate(time.Second).Add(-time.Second)), KindRuntimeToken, "acme", ErrTokenForgotten},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/", nil)
			if tc.header != "" {
				r.Header.Set("Authorization", tc.header)
			}
			p, err := a.Authenticate(r, now)
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
			} else {
				require.NoError(t, err)
			}
			require.Equal(t, tc.kind, p.Kind)
			require.Equal(t, tc.tenant, p.Tenant)
		})
	}

	// Without a signer (the bridge), a runtime token is unknown.
	r := httptest.NewRequest("POST", "/", nil)
	r.Header.Set("Authorization", "Bearer "+issue(signer, "acme", "a1", now))
	_, err = Authenticator{Credentials: NewCredentials(cfg)}.Authenticate(r, now)
	require.ErrorIs(t, err, ErrUnknownCredential)
}
