package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"strings"
	"sync"
	"time"
)

// RuntimeTokenPrefix starts every runtime token (SPEC 1).
const RuntimeTokenPrefix = "srt_"

// KeySize is the size of the runtime-token signing key.
const KeySize = 32

// tokenFormat versions the token payload so the format can evolve.
const tokenFormat = 1

// Errors of runtime-token verification. They are deliberately terse: the
// client learns that its token is not usable, not why a forgery failed.
var (
	ErrTokenMalformed = errors.New("malformed runtime token")
	ErrTokenSignature = errors.New("runtime token signature does not match")
	ErrTokenExpired   = errors.New("runtime token expired")
)

// RuntimeToken is the verified content of an `srt_` token: bound to one
// agent, with an expiry and a version.
type RuntimeToken struct {
	Tenant    string
	AgentID   string
	Version   uint32
	ExpiresAt time.Time
}

// Signer issues and verifies runtime tokens with sentinel's signing key.
// It is safe for concurrent use.
type Signer struct {
	macs sync.Pool // of hash.Hash keyed with the signing key; hmac.New is not free
}

// NewSigner returns a signer for key, which must be KeySize bytes.
func NewSigner(key []byte) (*Signer, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("runtime-token key has %d bytes, want %d", len(key), KeySize)
	}
	key = append([]byte(nil), key...)
	s := &Signer{}
	s.macs.New = func() any { return hmac.New(sha256.New, key) }
	return s, nil
}

func (s *Signer) sign(payload []byte) []byte {
	mac := s.macs.Get().(hash.Hash)
	mac.Reset()
	mac.Write(payload)
	sum := mac.Sum(nil)
	s.macs.Put(mac)
	return sum
}

// Issue returns a signed token for t.
func (s *Signer) Issue(t RuntimeToken) string {
	payload := make([]byte, 0, 16+len(t.Tenant)+len(t.AgentID))
	payload = append(payload, tokenFormat)
	payload = binary.BigEndian.AppendUint64(payload, uint64(t.ExpiresAt.Unix()))
	payload = binary.BigEndian.AppendUint32(payload, t.Version)
	payload = append(payload, byte(len(t.Tenant)))
	payload = append(payload, t.Tenant...)
	payload = append(payload, t.AgentID...)
	enc := base64.RawURLEncoding
	return RuntimeTokenPrefix + enc.EncodeToString(payload) + "." + enc.EncodeToString(s.sign(payload))
}

// Verify checks a token's signature and expiry at now and returns its
// content; an authentic but expired token is returned with ErrTokenExpired.
func (s *Signer) Verify(token string, now time.Time) (*RuntimeToken, error) {
	body, ok := strings.CutPrefix(token, RuntimeTokenPrefix)
	if !ok {
		return nil, ErrTokenMalformed
	}
	encPayload, encSig, ok := strings.Cut(body, ".")
	if !ok || !base64URL(encPayload) || !base64URL(encSig) {
		return nil, ErrTokenMalformed
	}
	// Strict: non-zero padding bits would give one token several accepted
	// spellings (found by FuzzVerify).
	enc := base64.RawURLEncoding.Strict()
	payload, err := enc.DecodeString(encPayload)
	if err != nil {
		return nil, ErrTokenMalformed
	}
	sig, err := enc.DecodeString(encSig)
	if err != nil {
		return nil, ErrTokenMalformed
	}
	if !hmac.Equal(sig, s.sign(payload)) {
		return nil, ErrTokenSignature
	}
	// The payload is authentic from here on, but still parsed defensively.
	if len(payload) < 14 || payload[0] != tokenFormat {
		return nil, ErrTokenMalformed
	}
	tenantLen := int(payload[13])
	if len(payload) < 14+tenantLen+1 {
		return nil, ErrTokenMalformed
	}
	t := &RuntimeToken{
		ExpiresAt: time.Unix(int64(binary.BigEndian.Uint64(payload[1:9])), 0).UTC(),
		Version:   binary.BigEndian.Uint32(payload[9:13]),
		Tenant:    string(payload[14 : 14+tenantLen]),
		AgentID:   string(payload[14+tenantLen:]),
	}
	if !now.Before(t.ExpiresAt) {
		return t, ErrTokenExpired
	}
	return t, nil
}

// base64URL reports whether s holds only characters of the unpadded
// base64url alphabet. The decoder alone would skip the CR and LF it finds,
// so that one token had several accepted spellings (found by FuzzVerify).
func base64URL(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}
