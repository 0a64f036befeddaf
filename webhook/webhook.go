// Package webhook signs and verifies sentinel's outgoing webhooks.
//
// Every delivery carries two signatures over the same raw body, so a
// receiver can check whichever it prefers:
//
//   - X-ABS-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>
//   - Standard Webhooks (https://www.standardwebhooks.com): webhook-id,
//     webhook-timestamp and webhook-signature: v1,<base64 HMAC-SHA256(key,
//     "<id>.<timestamp>." + body)>, where key is the secret itself, or its
//     base64-decoded part when the secret is written whsec_<base64>.
//
// While secrets rotate, each header carries one signature per active secret
// (comma-separated v1= entries, space-separated v1, entries), and a receiver
// accepts the delivery when any of them matches any secret it knows.
//
// Signer and Verifier are immutable once built and safe for concurrent use.
package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The headers of a delivery.
const (
	HeaderEvent     = "X-ABS-Event"     // the event name, e.g. heartbeat.state_change
	HeaderDelivery  = "X-ABS-Delivery"  // the eventId
	HeaderSignature = "X-ABS-Signature" // t=<unix>,v1=<hex>[,v1=<hex>…]

	HeaderWebhookID        = "Webhook-Id"        // the eventId
	HeaderWebhookTimestamp = "Webhook-Timestamp" // unix seconds
	HeaderWebhookSignature = "Webhook-Signature" // v1,<base64>[ v1,<base64>…]
)

// DefaultTolerance is how far a delivery's timestamp may be from the
// receiver's clock, either way, before Verify rejects it as a replay.
const DefaultTolerance = 5 * time.Minute

// whsecPrefix marks a Standard Webhooks secret: base64 after the prefix.
const whsecPrefix = "whsec_"

// The errors of Verify; match them with errors.Is. Returned errors wrap one
// of these with detail, never with a secret or a signature.
var (
	ErrNoSignature       = errors.New("webhook: no signature header")
	ErrMalformedHeader   = errors.New("webhook: malformed signature header")
	ErrTimestampTooOld   = errors.New("webhook: timestamp too old")
	ErrTimestampTooNew   = errors.New("webhook: timestamp too far in the future")
	ErrSignatureMismatch = errors.New("webhook: no signature matches")
)

// key is one secret, ready for both formats.
type key struct {
	abs []byte // X-ABS-Signature: the secret as written
	std []byte // Standard Webhooks: the whsec_ secret decoded, else as written
}

func newKeys(secrets []string) ([]key, error) {
	if len(secrets) == 0 {
		return nil, errors.New("webhook: at least one secret is required")
	}
	keys := make([]key, len(secrets))
	for i, s := range secrets {
		if s == "" {
			return nil, fmt.Errorf("webhook: secret %d is empty", i)
		}
		k := key{abs: []byte(s), std: []byte(s)}
		if b64, ok := strings.CutPrefix(s, whsecPrefix); ok {
			d, err := base64.StdEncoding.DecodeString(b64)
			if err != nil || len(d) == 0 {
				// The error of DecodeString quotes an offset, not the secret.
				return nil, fmt.Errorf("webhook: secret %d starts with %s but is not base64 after it", i, whsecPrefix)
			}
			k.std = d
		}
		keys[i] = k
	}
	return keys, nil
}

// Signer signs deliveries with every active secret of an endpoint.
type Signer struct{ keys []key }

// NewSigner returns a Signer for secrets, in the order their signatures
// appear (the first is the newest by convention; all are sent).
func NewSigner(secrets ...string) (*Signer, error) {
	keys, err := newKeys(secrets)
	if err != nil {
		return nil, err
	}
	return &Signer{keys: keys}, nil
}

// Sign sets the five headers of a delivery of event (its name) with the
// given id on h, signed at t over the raw body as it will be sent.
func (s *Signer) Sign(h http.Header, event, id string, t time.Time, body []byte) {
	ts := strconv.FormatInt(t.Unix(), 10)
	var abs, std strings.Builder
	abs.WriteString("t=" + ts)
	for i, k := range s.keys {
		abs.WriteString(",v1=" + hex.EncodeToString(macABS(k.abs, ts, body)))
		if i > 0 {
			std.WriteByte(' ')
		}
		std.WriteString("v1," + base64.StdEncoding.EncodeToString(macStandard(k.std, id, ts, body)))
	}
	h.Set(HeaderEvent, event)
	h.Set(HeaderDelivery, id)
	h.Set(HeaderSignature, abs.String())
	h.Set(HeaderWebhookID, id)
	h.Set(HeaderWebhookTimestamp, ts)
	h.Set(HeaderWebhookSignature, std.String())
}

func macABS(k []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, k)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

func macStandard(k []byte, id, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, k)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Verifier checks deliveries against the secrets a receiver knows.
type Verifier struct {
	keys []key
	// Tolerance is how far the signed timestamp may be from Now, either
	// way; zero means DefaultTolerance.
	Tolerance time.Duration
	// Now is the receiver's clock; nil means time.Now.
	Now func() time.Time
}

// NewVerifier returns a Verifier that accepts a signature by any of secrets.
func NewVerifier(secrets ...string) (*Verifier, error) {
	keys, err := newKeys(secrets)
	if err != nil {
		return nil, err
	}
	return &Verifier{keys: keys}, nil
}

// Verify checks a delivery's headers and raw body with secrets: the
// Standard Webhooks headers when present, else X-ABS-Signature.
func Verify(h http.Header, body []byte, secrets ...string) error {
	v, err := NewVerifier(secrets...)
	if err != nil {
		return err
	}
	return v.Verify(h, body)
}

// Verify checks the Standard Webhooks signature when the delivery has one,
// else the X-ABS-Signature.
func (v *Verifier) Verify(h http.Header, body []byte) error {
	if h.Get(HeaderWebhookSignature) != "" {
		return v.VerifyStandard(h, body)
	}
	return v.VerifyABS(h, body)
}

// VerifyABS checks X-ABS-Signature.
func (v *Verifier) VerifyABS(h http.Header, body []byte) error {
	value := h.Get(HeaderSignature)
	if value == "" {
		return fmt.Errorf("%w: %s is missing", ErrNoSignature, HeaderSignature)
	}
	ts, sigs, err := ParseABSSignature(value)
	if err != nil {
		return err
	}
	if err := v.checkTime(ts); err != nil {
		return err
	}
	tss := strconv.FormatInt(ts, 10)
	for _, k := range v.keys {
		if anyEqual(macABS(k.abs, tss, body), sigs) {
			return nil
		}
	}
	return fmt.Errorf("%w: %s has %d signature(s), none by a known secret", ErrSignatureMismatch, HeaderSignature, len(sigs))
}

// VerifyStandard checks webhook-id, webhook-timestamp and webhook-signature.
func (v *Verifier) VerifyStandard(h http.Header, body []byte) error {
	id, tsv, value := h.Get(HeaderWebhookID), h.Get(HeaderWebhookTimestamp), h.Get(HeaderWebhookSignature)
	switch {
	case value == "":
		return fmt.Errorf("%w: %s is missing", ErrNoSignature, HeaderWebhookSignature)
	case id == "":
		return fmt.Errorf("%w: %s is missing", ErrMalformedHeader, HeaderWebhookID)
	}
	ts, err := parseUnix(tsv)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrMalformedHeader, HeaderWebhookTimestamp, err)
	}
	sigs, err := ParseStandardSignature(value)
	if err != nil {
		return err
	}
	if err := v.checkTime(ts); err != nil {
		return err
	}
	for _, k := range v.keys {
		// The MAC covers the timestamp as sent, which parseUnix allows in
		// canonical decimal only, so reformatting it changes nothing.
		if anyEqual(macStandard(k.std, id, tsv, body), sigs) {
			return nil
		}
	}
	return fmt.Errorf("%w: %s has %d v1 signature(s), none by a known secret", ErrSignatureMismatch, HeaderWebhookSignature, len(sigs))
}

func (v *Verifier) checkTime(ts int64) error {
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	tol := v.Tolerance
	if tol <= 0 {
		tol = DefaultTolerance
	}
	// In seconds: a hostile timestamp near the int64 limit must not
	// overflow a time.Duration into "fresh".
	ahead, tols := ts-now().Unix(), int64(tol/time.Second)
	switch {
	case ahead < -tols:
		return fmt.Errorf("%w: signed %ds ago, tolerance %s", ErrTimestampTooOld, -ahead, tol)
	case ahead > tols:
		return fmt.Errorf("%w: signed %ds ahead, tolerance %s", ErrTimestampTooNew, ahead, tol)
	}
	return nil
}

// anyEqual compares want with every candidate in constant time each.
func anyEqual(want []byte, candidates [][]byte) bool {
	ok := false
	for _, c := range candidates {
		if hmac.Equal(want, c) {
			ok = true
		}
	}
	return ok
}

// ParseABSSignature parses an X-ABS-Signature value: exactly one t=<unix
// seconds> and at least one v1=<64 hex digits>, comma-separated, in any
// order. Entries of other schemes (v0=, v2=) are ignored so that a newer
// sender stays readable.
func ParseABSSignature(value string) (ts int64, sigs [][]byte, err error) {
	seenT := false
	for part := range strings.SplitSeq(value, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return 0, nil, fmt.Errorf("%w: %s entry %q is not key=value", ErrMalformedHeader, HeaderSignature, clip(part))
		}
		switch k {
		case "t":
			if seenT {
				return 0, nil, fmt.Errorf("%w: %s has more than one t=", ErrMalformedHeader, HeaderSignature)
			}
			seenT = true
			if ts, err = parseUnix(v); err != nil {
				return 0, nil, fmt.Errorf("%w: %s t=: %v", ErrMalformedHeader, HeaderSignature, err)
			}
		case "v1":
			b, err := hex.DecodeString(v)
			if err != nil || len(b) != sha256.Size {
				return 0, nil, fmt.Errorf("%w: %s v1= is not %d hex digits", ErrMalformedHeader, HeaderSignature, 2*sha256.Size)
			}
			sigs = append(sigs, b)
		}
	}
	switch {
	case !seenT:
		return 0, nil, fmt.Errorf("%w: %s has no t=", ErrMalformedHeader, HeaderSignature)
	case len(sigs) == 0:
		return 0, nil, fmt.Errorf("%w: %s has no v1=", ErrMalformedHeader, HeaderSignature)
	}
	return ts, sigs, nil
}

// ParseStandardSignature parses a webhook-signature value: space-separated
// <version>,<base64> entries, of which at least one must be v1 (a 32-byte
// HMAC-SHA256). Entries of other versions (v1a, asymmetric) are ignored.
func ParseStandardSignature(value string) ([][]byte, error) {
	var sigs [][]byte
	for _, part := range strings.Fields(value) {
		ver, v, ok := strings.Cut(part, ",")
		if !ok {
			return nil, fmt.Errorf("%w: %s entry %q is not <version>,<signature>", ErrMalformedHeader, HeaderWebhookSignature, clip(part))
		}
		if ver != "v1" {
			continue
		}
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("%w: %s v1 signature is not %d bytes of base64", ErrMalformedHeader, HeaderWebhookSignature, sha256.Size)
		}
		sigs = append(sigs, b)
	}
	if len(sigs) == 0 {
		return nil, fmt.Errorf("%w: %s has no v1 signature", ErrMalformedHeader, HeaderWebhookSignature)
	}
	return sigs, nil
}

// parseUnix accepts unix seconds in canonical decimal: digits only, no sign,
// no leading zero, so that one timestamp has one spelling under the MAC.
func parseUnix(s string) (int64, error) {
	if s == "" || (len(s) > 1 && s[0] == '0') || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not unix seconds", clip(s))
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is out of range", clip(s))
	}
	return n, nil
}

// clip keeps error messages short whatever a sender put in a header.
func clip(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}
