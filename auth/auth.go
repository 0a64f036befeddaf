// Package auth resolves bearer credentials (SPEC 1): tenant API keys, admin
// tokens and the bridge token from the configuration, and the runtime tokens
// sentinel signs for single agents.
package auth

import (
	"crypto/sha256"
	"net/http"
	"strings"

	"github.com/agentsentinel/sentinel/config"
)

// Kind is what a credential allows.
type Kind uint8

// Credential kinds of SPEC 1.
const (
	KindNone Kind = iota
	// KindTenantKey registers and heartbeats any agent of its tenant.
	KindTenantKey
	// KindRuntimeToken heartbeats the one agent it is bound to.
	KindRuntimeToken
	// KindTenantAdmin uses the kill switch and read APIs of its tenant.
	KindTenantAdmin
	// KindGlobalAdmin uses the kill switch and read APIs of every tenant.
	KindGlobalAdmin
	// KindBridge is Alertmanager calling the bridge.
	KindBridge
)

// Principal is who presented a credential.
type Principal struct {
	Kind   Kind
	Tenant string // empty for global admins and the bridge
	// Token is set for KindRuntimeToken.
	Token *RuntimeToken
}

// Credentials maps the configuration's secrets to principals. It is
// immutable; a reload builds a new one.
type Credentials struct {
	// Keyed by SHA-256 of the secret: the map lookup then reveals nothing
	// about how much of a guessed secret was right, which keeps the
	// comparison constant-time in the secret, and no secret is kept in clear.
	bySum     map[[sha256.Size]byte]Principal
	tenants   map[string]struct{}
	tenantIDs []string
}

// NewCredentials compiles the secrets of cfg. cfg has been validated, so
// every secret is unique.
func NewCredentials(cfg *config.Config) *Credentials {
	c := &Credentials{bySum: make(map[[sha256.Size]byte]Principal), tenants: make(map[string]struct{})}
	add := func(secret string, p Principal) { c.bySum[sha256.Sum256([]byte(secret))] = p }
	for _, s := range cfg.AdminTokens {
		add(string(s), Principal{Kind: KindGlobalAdmin})
	}
	for _, t := range cfg.Tenants {
		c.tenants[t.ID] = struct{}{}
		c.tenantIDs = append(c.tenantIDs, t.ID)
		for _, s := range t.APIKeys {
			add(string(s), Principal{Kind: KindTenantKey, Tenant: t.ID})
		}
		for _, s := range t.AdminTokens {
			add(string(s), Principal{Kind: KindTenantAdmin, Tenant: t.ID})
		}
	}
	if cfg.Bridge.BearerToken != "" {
		add(string(cfg.Bridge.BearerToken), Principal{Kind: KindBridge})
	}
	return c
}

// Lookup returns the principal of a configured secret.
func (c *Credentials) Lookup(secret string) (Principal, bool) {
	// Hashed in place: a copy of a secret over 32 bytes is an allocation
	// of every heartbeat that comes with a tenant key.
	p, ok := c.bySum[sha256.Sum256(stringBytes(secret))]
	return p, ok
}

// BearerToken extracts the credential of an `Authorization: Bearer` header.
func BearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	const prefix = "Bearer "
	if len(h) <= len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return "", false
	}
	token := strings.TrimSpace(h[len(prefix):])
	return token, token != ""
}

// HasTenant reports whether tenant is configured (a runtime token of a
// tenant removed from the configuration is no longer accepted).
func (c *Credentials) HasTenant(tenant string) bool {
	_, ok := c.tenants[tenant]
	return ok
}

// Tenants returns the configured tenant ids in configuration order.
func (c *Credentials) Tenants() []string { return c.tenantIDs }
