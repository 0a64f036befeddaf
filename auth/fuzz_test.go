package auth

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// FuzzVerify feeds arbitrary strings to Verify: it never panics, and a
// token it accepts is exactly the one Issue makes for its content (no two
// spellings of one token).
func FuzzVerify(f *testing.F) {
	s, err := NewSigner(testKey)
	require.NoError(f, err)
	valid := s.Issue(RuntimeToken{Tenant: "acme", AgentID: "agent-1", Version: 3, ExpiresAt: now.Add(time.Hour)})
	for _, seed := range []string{
		valid, valid[:len(valid)-1], valid + "A", strings.Replace(valid, ".", "..", 1), strings.ToUpper(valid),
		"srt_", "srt_.", "srt_x.y", "srt_AAAA.AAAA", "acme-key", "",
		s.Issue(RuntimeToken{Tenant: "", AgentID: "a", ExpiresAt: now.Add(time.Hour)}),
		s.Issue(RuntimeToken{Tenant: "t", AgentID: "a", ExpiresAt: now.Add(-time.Hour)}),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, token string) {
		tok, err := s.Verify(token, now)
		if err != nil && !errors.Is(err, ErrTokenExpired) {
			require.Nil(t, tok)
			return
		}
		// Genuine (expired ones come back with their content too): the
		// canonical spelling of its content.
		require.NotNil(t, tok)
		require.Equal(t, token, s.Issue(*tok), "a genuine token is the canonical spelling of its content")
	})
}

// FuzzVerifySigned signs arbitrary payloads, so that the fuzzer reaches the
// parser behind the signature check: it never panics, and what it accepts
// round-trips through Issue.
func FuzzVerifySigned(f *testing.F) {
	s, err := NewSigner(testKey)
	require.NoError(f, err)
	head := func(format, tenantLen byte) []byte {
		p := []byte{format}
		p = binary.BigEndian.AppendUint64(p, uint64(now.Add(time.Hour).Unix()))
		p = binary.BigEndian.AppendUint32(p, 1)
		return append(p, tenantLen)
	}
	for _, seed := range [][]byte{
		nil, head(tokenFormat, 4)[:10], append(head(2, 4), "acmeagent"...), append(head(tokenFormat, 40), "acmeagent"...),
		append(head(tokenFormat, 4), "acme"...), append(head(tokenFormat, 4), "acmeagent"...), append(head(tokenFormat, 0), "agent"...),
	} {
		f.Add(seed)
	}
	enc := base64.RawURLEncoding
	f.Fuzz(func(t *testing.T, payload []byte) {
		sig := s.sign(payload)
		token := RuntimeTokenPrefix + enc.EncodeToString(payload) + "." + enc.EncodeToString(sig[:])
		tok, err := s.Verify(token, now)
		if err != nil {
			return
		}
		require.NotEmpty(t, tok.AgentID)
		require.Equal(t, token, s.Issue(*tok))
	})
}

// FuzzBearerToken feeds arbitrary Authorization headers: a credential it
// extracts is non-empty, has no surrounding white space, and is what
// follows the scheme.
func FuzzBearerToken(f *testing.F) {
	for _, seed := range []string{
		"", "Bearer", "Bearer ", "Bearer    ", "Bearer \t", "Bearer abc", "bearer abc", "BEARER abc", "Bearer   abc  ",
		"Bearer srt_x.y", "Basic YWNtZTprZXk=", "abc", "Bearerabc", "Bearer:abc", "XBearer abc", "Bearer a b",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, header string) {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		r.Header["Authorization"] = []string{header}
		token, ok := BearerToken(r)
		if !ok {
			require.Empty(t, token)
			return
		}
		require.NotEmpty(t, token)
		require.Equal(t, strings.TrimSpace(token), token)
		require.True(t, strings.EqualFold(header[:7], "Bearer "))
		require.Contains(t, header[7:], token)
	})
}
