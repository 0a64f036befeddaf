package auth

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/config"
)

var (
	testKey = bytes.Repeat([]byte{0x42}, KeySize)
	now     = time.Date(2026, 2, 3, 12, 0, 0, 0, time.UTC)
)

func newSigner(t *testing.T, key []byte) *Signer {
	t.Helper()
	s, err := NewSigner(key)
	require.NoError(t, err)
	return s
}

func TestNewSignerKeySize(t *testing.T) {
	for _, n := range []int{0, 16, KeySize - 1, KeySize + 1, 64} {
		_, err := NewSigner(make([]byte, n))
		require.ErrorContains(t, err, fmt.Sprintf("has %d bytes, want %d", n, KeySize))
	}
	_, err := NewSigner(make([]byte, KeySize))
	require.NoError(t, err)
}

// TestSignerCopiesKey: changing the caller's key slice afterwards changes
// nothing.
func TestSignerCopiesKey(t *testing.T) {
	key := bytes.Clone(testKey)
	s := newSigner(t, key)
	tok := s.Issue(RuntimeToken{Tenant: "acme", AgentID: "a", Version: 1, ExpiresAt: now.Add(time.Hour)})
	key[0] ^= 0xff
	_, err := s.Verify(tok, now)
	require.NoError(t, err)
}

func TestTokenRoundTrip(t *testing.T) {
	s := newSigner(t, testKey)
	tests := []RuntimeToken{
		{Tenant: "acme", AgentID: "agent-1", Version: 1, ExpiresAt: now.Add(90 * 24 * time.Hour)},
		{Tenant: "a", AgentID: "b", Version: 0, ExpiresAt: now.Add(time.Second)},
		{Tenant: strings.Repeat("t", 64), AgentID: strings.Repeat("x", 128), Version: ^uint32(0), ExpiresAt: now.Add(100 * 365 * 24 * time.Hour)},
		{Tenant: "globex", AgentID: "0.9_x:y@z-w", Version: 42, ExpiresAt: now.Add(time.Minute)},
	}
	for _, want := range tests {
		t.Run(want.Tenant+"/"+want.AgentID, func(t *testing.T) {
			tok := s.Issue(want)
			require.True(t, strings.HasPrefix(tok, RuntimeTokenPrefix), tok)
			require.NotContains(t, tok, want.Tenant+"/", "opaque")
			require.Equal(t, 1, strings.Count(tok, "."))
			got, err := s.Verify(tok, now)
			require.NoError(t, err)
			require.Equal(t, want, *got)
			// Same input, same token: issuing is deterministic.
			require.Equal(t, tok, s.Issue(want))
		})
	}
}

// TestTokenExpiryWholeSeconds: expiries are kept to the second.
func TestTokenExpiryWholeSeconds(t *testing.T) {
	s := newSigner(t, testKey)
	tok := s.Issue(RuntimeToken{Tenant: "acme", AgentID: "a", Version: 1, ExpiresAt: now.Add(time.Hour + 900*time.Millisecond)})
	got, err := s.Verify(tok, now)
	require.NoError(t, err)
	require.Equal(t, now.Add(time.Hour), got.ExpiresAt)
	require.Equal(t, time.UTC, got.ExpiresAt.Location())
}

func TestTokenExpiryBoundary(t *testing.T) {
	s := newSigner(t, testKey)
	exp := now.Add(time.Hour)
	tok := s.Issue(RuntimeToken{Tenant: "acme", AgentID: "a", Version: 1, ExpiresAt: exp})
	for _, tt := range []struct {
		at   time.Time
		want error
	}{
		{now, nil},
		{exp.Add(-time.Second), nil},
		{exp.Add(-time.Nanosecond), nil},
		{exp, ErrTokenExpired},
		{exp.Add(time.Nanosecond), ErrTokenExpired},
		{exp.Add(365 * 24 * time.Hour), ErrTokenExpired},
	} {
		_, err := s.Verify(tok, tt.at)
		if tt.want == nil {
			require.NoError(t, err, "at %s", tt.at)
		} else {
			require.ErrorIs(t, err, tt.want, "at %s", tt.at)
		}
	}
}

func TestTokenTampering(t *testing.T) {
	s := newSigner(t, testKey)
	tok := s.Issue(RuntimeToken{Tenant: "acme", AgentID: "agent-1", Version: 3, ExpiresAt: now.Add(time.Hour)})
	other := s.Issue(RuntimeToken{Tenant: "globex", AgentID: "agent-1", Version: 3, ExpiresAt: now.Add(time.Hour)})
	body := strings.TrimPrefix(tok, RuntimeTokenPrefix)
	payload, sig, _ := strings.Cut(body, ".")
	otherPayload, otherSig, _ := strings.Cut(strings.TrimPrefix(other, RuntimeTokenPrefix), ".")
	enc := base64.RawURLEncoding
	raw, err := enc.DecodeString(payload)
	require.NoError(t, err)

	// reencode changes one byte of the decoded payload and keeps the signature.
	reencode := func(i int, b byte) string {
		p := bytes.Clone(raw)
		p[i] = b
		return RuntimeTokenPrefix + enc.EncodeToString(p) + "." + sig
	}
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}

	tests := []struct {
		name  string
		token string
		want  error
	}{
		{"empty", "", ErrTokenMalformed},
		{"prefix only", RuntimeTokenPrefix, ErrTokenMalformed},
		{"no prefix", body, ErrTokenMalformed},
		{"other prefix", "srx_" + body, ErrTokenMalformed},
		{"prefix in capitals", "SRT_" + body, ErrTokenMalformed},
		{"no dot", RuntimeTokenPrefix + payload + sig, ErrTokenMalformed},
		{"payload not base64", RuntimeTokenPrefix + payload + "!." + sig, ErrTokenMalformed},
		{"signature not base64", RuntimeTokenPrefix + payload + "." + sig + "=", ErrTokenMalformed},
		{"padded payload", RuntimeTokenPrefix + base64.URLEncoding.EncodeToString(raw) + "." + sig, ErrTokenMalformed},
		{"empty signature", RuntimeTokenPrefix + payload + ".", ErrTokenSignature},
		{"truncated signature", RuntimeTokenPrefix + payload + "." + sig[:len(sig)-3], ErrTokenSignature},
		{"flipped signature", RuntimeTokenPrefix + payload + "." + flip(sig, 3), ErrTokenSignature},
		{"flipped payload", RuntimeTokenPrefix + flip(payload, 5) + "." + sig, ErrTokenSignature},
		{"longer expiry", reencode(8, raw[8]+1), ErrTokenSignature},
		{"other version", reencode(12, raw[12]+1), ErrTokenSignature},
		{"other tenant", reencode(14, 'b'), ErrTokenSignature},
		{"other agent", reencode(len(raw)-1, '2'), ErrTokenSignature},
		{"appended to payload", RuntimeTokenPrefix + enc.EncodeToString(append(bytes.Clone(raw), 'x')) + "." + sig, ErrTokenSignature},
		{"another token's signature", RuntimeTokenPrefix + payload + "." + otherSig, ErrTokenSignature},
		{"another token's payload", RuntimeTokenPrefix + otherPayload + "." + sig, ErrTokenSignature},
		{"second dot", tok + "." + sig, ErrTokenMalformed},
		{"CR in payload", RuntimeTokenPrefix + payload[:4] + "\r" + payload[4:] + "." + sig, ErrTokenMalformed},
		{"LF in signature", RuntimeTokenPrefix + payload + "." + sig[:4] + "\n" + sig[4:], ErrTokenMalformed},
		{"standard alphabet", RuntimeTokenPrefix + payload + "." + sig[:4] + "+/" + sig[4:], ErrTokenMalformed},
		{"wrong key", newSigner(t, bytes.Repeat([]byte{0x43}, KeySize)).Issue(RuntimeToken{Tenant: "acme", AgentID: "agent-1", Version: 3, ExpiresAt: now.Add(time.Hour)}), ErrTokenSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Verify(tt.token, now)
			require.ErrorIs(t, err, tt.want)
			require.Nil(t, got)
		})
	}
}

// TestTokenSignatureBeforeExpiry: an expired forgery is a forgery, so a
// client cannot learn anything from the difference.
func TestTokenSignatureBeforeExpiry(t *testing.T) {
	s := newSigner(t, testKey)
	forged := newSigner(t, make([]byte, KeySize)).Issue(RuntimeToken{Tenant: "acme", AgentID: "a", Version: 1, ExpiresAt: now.Add(-time.Hour)})
	_, err := s.Verify(forged, now)
	require.ErrorIs(t, err, ErrTokenSignature)
}

// TestTokenSignedButMalformed: a payload with a valid signature is still
// parsed defensively.
func TestTokenSignedButMalformed(t *testing.T) {
	s := newSigner(t, testKey)
	enc := base64.RawURLEncoding
	signed := func(p []byte) string {
		sig := s.sign(p)
		return RuntimeTokenPrefix + enc.EncodeToString(p) + "." + enc.EncodeToString(sig[:])
	}
	head := func(format byte, tenantLen byte) []byte {
		p := []byte{format}
		p = binary.BigEndian.AppendUint64(p, uint64(now.Add(time.Hour).Unix()))
		p = binary.BigEndian.AppendUint32(p, 1)
		return append(p, tenantLen)
	}
	tests := []struct {
		name    string
		payload []byte
	}{
		{"empty", nil},
		{"short", head(tokenFormat, 4)[:10]},
		{"unknown format", append(head(2, 4), "acmeagent"...)},
		{"tenant past the end", append(head(tokenFormat, 40), "acmeagent"...)},
		{"no agent id", append(head(tokenFormat, 4), "acme"...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Verify(signed(tt.payload), now)
			require.ErrorIs(t, err, ErrTokenMalformed)
		})
	}
	// The same construction with a proper payload verifies.
	got, err := s.Verify(signed(append(head(tokenFormat, 4), "acmeagent"...)), now)
	require.NoError(t, err)
	require.Equal(t, RuntimeToken{Tenant: "acme", AgentID: "agent", Version: 1, ExpiresAt: now.Add(time.Hour)}, *got)
}

// TestSignerConcurrent exercises the pooled MACs under -race.
func TestSignerConcurrent(t *testing.T) {
	s := newSigner(t, testKey)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				want := RuntimeToken{Tenant: "acme", AgentID: fmt.Sprintf("agent-%d-%d", g, i), Version: uint32(i), ExpiresAt: now.Add(time.Hour)}
				got, err := s.Verify(s.Issue(want), now)
				if err != nil || *got != want {
					errs <- fmt.Errorf("goroutine %d token %d: %v %v", g, i, got, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

func TestBearerToken(t *testing.T) {
	tests := []struct {
		name    string
		headers []string // Authorization values, in order; none when empty
		want    string
		ok      bool
	}{
		{"absent", nil, "", false},
		{"empty", []string{""}, "", false},
		{"scheme only", []string{"Bearer"}, "", false},
		{"scheme and space", []string{"Bearer "}, "", false},
		{"scheme and spaces", []string{"Bearer    "}, "", false},
		{"scheme and tab", []string{"Bearer \t"}, "", false},
		{"token", []string{"Bearer abc"}, "abc", true},
		{"lower-case scheme", []string{"bearer abc"}, "abc", true},
		{"upper-case scheme", []string{"BEARER abc"}, "abc", true},
		{"surrounding spaces", []string{"Bearer   abc  "}, "abc", true},
		{"runtime token", []string{"Bearer srt_x.y"}, "srt_x.y", true},
		{"basic", []string{"Basic YWNtZTprZXk="}, "", false},
		{"no scheme", []string{"abc"}, "", false},
		{"scheme glued", []string{"Bearerabc"}, "", false},
		{"scheme with colon", []string{"Bearer:abc"}, "", false},
		{"other scheme with bearer suffix", []string{"XBearer abc"}, "", false},
		{"first header wins", []string{"Bearer first", "Bearer second"}, "first", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/", nil)
			for _, h := range tt.headers {
				r.Header.Add("Authorization", h)
			}
			got, ok := BearerToken(r)
			require.Equal(t, tt.ok, ok)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestCredentials(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "acme-key-2"), []byte("acme-key-from-file\n"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "global-2"), []byte("global-from-file"), 0o600))
	cfg, err := config.Parse([]byte(`
admin_tokens: [global-admin]
admin_token_files: [global-2]
tenants:
  - id: acme
    api_keys: [acme-key]
    api_key_files: [acme-key-2]
    admin_tokens: [acme-admin]
  - id: globex
    api_keys: [globex-key-1, globex-key-2]
    admin_tokens: [globex-admin]
bridge:
  bearer_token: bridge-token
`), dir)
	require.NoError(t, err)
	c := NewCredentials(cfg)

	tests := []struct {
		secret string
		want   Principal
		ok     bool
	}{
		{"global-admin", Principal{Kind: KindGlobalAdmin}, true},
		{"global-from-file", Principal{Kind: KindGlobalAdmin}, true},
		{"acme-key", Principal{Kind: KindTenantKey, Tenant: "acme"}, true},
		{"acme-key-from-file", Principal{Kind: KindTenantKey, Tenant: "acme"}, true},
		{"acme-admin", Principal{Kind: KindTenantAdmin, Tenant: "acme"}, true},
		{"globex-key-1", Principal{Kind: KindTenantKey, Tenant: "globex"}, true},
		{"globex-key-2", Principal{Kind: KindTenantKey, Tenant: "globex"}, true},
		{"globex-admin", Principal{Kind: KindTenantAdmin, Tenant: "globex"}, true},
		{"bridge-token", Principal{Kind: KindBridge}, true},
		{"", Principal{}, false},
		{"acme-key ", Principal{}, false},
		{"ACME-KEY", Principal{}, false},
		{"acme-ke", Principal{}, false},
		{"acme-key-from-file\n", Principal{}, false},
		{"srt_whatever", Principal{}, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.secret), func(t *testing.T) {
			got, ok := c.Lookup(tt.secret)
			require.Equal(t, tt.ok, ok)
			require.Equal(t, tt.want, got)
		})
	}
	require.Equal(t, []string{"acme", "globex"}, c.Tenants())
	require.True(t, c.HasTenant("acme"))
	require.True(t, c.HasTenant("globex"))
	require.False(t, c.HasTenant("initech"))
	require.False(t, c.HasTenant(""))
}

// TestCredentialsWithoutBridge: no bridge token configured, no bridge principal
// (an empty secret must not match it).
func TestCredentialsWithoutBridge(t *testing.T) {
	cfg, err := config.Parse([]byte("tenants: [{id: acme, api_keys: [k]}]\n"), t.TempDir())
	require.NoError(t, err)
	c := NewCredentials(cfg)
	_, ok := c.Lookup("")
	require.False(t, ok)
	p, ok := c.Lookup("k")
	require.True(t, ok)
	require.Equal(t, Principal{Kind: KindTenantKey, Tenant: "acme"}, p)
	require.Equal(t, []string{"acme"}, c.Tenants())
}
