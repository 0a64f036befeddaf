package auth

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/agentsentinel/sentinel/fleet"
)

// Errors of Authenticate; each is a 401, its text fit for the answer.
var (
	ErrNoCredential      = errors.New("missing bearer credential")
	ErrUnknownCredential = errors.New("unknown credential")
	ErrTokenForgotten    = errors.New("runtime token issued before the agent was forgotten; register again with the tenant API key")
)

// Authenticator turns the bearer credential of a request into a principal.
// It is the one entry point of the receiver, the admin API and the bridge;
// each then checks that the principal's Kind may do what it asks (403
// otherwise). It is a value built per request from the running
// configuration, and safe for concurrent use.
type Authenticator struct {
	Credentials *Credentials
	// Signer verifies runtime tokens; nil makes every srt_ credential
	// unknown.
	Signer *Signer
	// TokenTTL is heartbeat.token_ttl: a token's issue time is its expiry
	// minus it.
	TokenTTL time.Duration
	// Forgotten, when set, says when an agent was last forgotten: its
	// runtime tokens issued before are refused.
	Forgotten func(fleet.Key) (time.Time, bool)
}

// Authenticate resolves the request's `Authorization: Bearer` credential at
// now. A runtime token that is genuine but expired or forgotten comes back
// with its principal and the error, so that a caller that refuses runtime
// tokens anyway can say 403 rather than 401.
func (a Authenticator) Authenticate(r *http.Request, now time.Time) (Principal, error) {
	secret, ok := BearerToken(r)
	if !ok {
		return Principal{}, ErrNoCredential
	}
	// Runtime tokens first: they are what agents send once registered, and
	// the configuration forbids the srt_ prefix for its secrets.
	if strings.HasPrefix(secret, RuntimeTokenPrefix) {
		if a.Signer == nil {
			return Principal{}, ErrUnknownCredential
		}
		tok, err := a.Signer.Verify(secret, now)
		if tok == nil || !a.Credentials.HasTenant(tok.Tenant) {
			return Principal{}, ErrUnknownCredential
		}
		p := Principal{Kind: KindRuntimeToken, Tenant: tok.Tenant, Token: tok}
		if err != nil {
			return p, err
		}
		// A forget invalidates every token issued before it. A token
		// carries its expiry, its issue time plus token_ttl rounded down
		// to the second, so the comparison is by whole seconds: a token
		// issued in the second of the forget stays valid, whether before
		// or after it. Refusing it instead would lock out the agent that
		// registers again at once (the README walk-through does).
		if a.Forgotten != nil {
			if at, ok := a.Forgotten(fleet.Key{Tenant: tok.Tenant, AgentID: tok.AgentID}); ok && tok.ExpiresAt.Add(-a.TokenTTL).Before(at.Truncate(time.Second)) {
				return p, ErrTokenForgotten
			}
		}
		return p, nil
	}
	if p, ok := a.Credentials.Lookup(secret); ok {
		return p, nil
	}
	return Principal{}, ErrUnknownCredential
}
