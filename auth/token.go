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
	"unsafe"
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
	macs sync.Pool // of *mac; hmac.New is not free
}

// mac is a pooled HMAC keyed with the signing key, with room for its sum
// and for the payload Verify decodes: what goes through the hash.Hash
// interface escapes, and would be an allocation per token.
type mac struct {
	h       hash.Hash
	sum     [sha256.Size]byte
	payload [maxPooledPayload]byte
}

// tokenEncoding is strict: non-zero padding bits would give one token
// several accepted spellings (found by FuzzVerify). Made once: Strict
// returns a new Encoding.
var tokenEncoding = base64.RawURLEncoding.Strict()

// NewSigner returns a signer for key, which must be KeySize bytes.
func NewSigner(key []byte) (*Signer, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("runtime-token key has %d bytes, want %d", len(key), KeySize)
	}
	key = append([]byte(nil), key...)
	s := &Signer{}
	s.macs.New = func() any { return &mac{h: hmac.New(sha256.New, key)} }
	return s, nil
}

// sign returns payload's signature.
func (s *Signer) sign(payload []byte) [sha256.Size]byte {
	m := s.macs.Get().(*mac)
	sum := m.sign(payload)
	s.macs.Put(m)
	return sum
}

func (m *mac) sign(payload []byte) [sha256.Size]byte {
	m.h.Reset()
	m.h.Write(payload)
	m.h.Sum(m.sum[:0])
	return m.sum
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
	sig := s.sign(payload)
	return RuntimeTokenPrefix + enc.EncodeToString(payload) + "." + enc.EncodeToString(sig[:])
}

// Verify checks a token's signature and expiry at now and returns its
// content; an authentic but expired token is returned with ErrTokenExpired.
func (s *Signer) Verify(token string, now time.Time) (*RuntimeToken, error) {
	body, ok := strings.CutPrefix(token, RuntimeTokenPrefix)
	if !ok {
		return nil, ErrTokenMalformed
	}
	encPayload, encSig, ok := strings.Cut(body, ".")
	if !ok || !noLineBreaks(body) {
		return nil, ErrTokenMalformed
	}
	// Decoded without allocating (into the pooled MAC's buffer and the
	// stack): Verify runs for every heartbeat with a runtime token, and its
	// allocations were most of its cost.
	m := s.macs.Get().(*mac)
	defer s.macs.Put(m)
	payload, err := decodeInto(tokenEncoding, m.payload[:0], encPayload)
	if err != nil {
		return nil, ErrTokenMalformed
	}
	var sigBuf [sha256.Size]byte
	sig, err := decodeInto(tokenEncoding, sigBuf[:0], encSig)
	if err != nil {
		return nil, ErrTokenMalformed
	}
	want := m.sign(payload)
	if !hmac.Equal(sig, want[:]) {
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
	// One string for both names.
	names := string(payload[14:])
	t := &RuntimeToken{
		ExpiresAt: time.Unix(int64(binary.BigEndian.Uint64(payload[1:9])), 0).UTC(),
		Version:   binary.BigEndian.Uint32(payload[9:13]),
		Tenant:    names[:tenantLen],
		AgentID:   names[tenantLen:],
	}
	if !now.Before(t.ExpiresAt) {
		return t, ErrTokenExpired
	}
	return t, nil
}

// maxPooledPayload is the largest token payload Verify decodes without an
// allocation: a tenant id of 64 bytes and an agent id of 128 fit.
const maxPooledPayload = 256

// decodeInto decodes src with enc into buf, or into a new buffer when buf
// is too small.
func decodeInto(enc *base64.Encoding, buf []byte, src string) ([]byte, error) {
	if n := enc.DecodedLen(len(src)); n > cap(buf) {
		buf = make([]byte, 0, n)
	}
	return enc.AppendDecode(buf, stringBytes(src))
}

// stringBytes returns the bytes of str without a copy; they must only be
// read.
func stringBytes(str string) []byte { return unsafe.Slice(unsafe.StringData(str), len(str)) }

// noLineBreaks reports whether s holds no CR or LF. The strict decoder
// refuses every other character outside the unpadded base64url alphabet,
// but skips these, so that one token had several accepted spellings
// (found by FuzzVerify). Two vectorised scans: a check of every character
// here was a tenth of a heartbeat's handling.
func noLineBreaks(s string) bool {
	return strings.IndexByte(s, '\r') < 0 && strings.IndexByte(s, '\n') < 0
}
