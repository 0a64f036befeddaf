package webhook_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/webhook"
)

// The independent implementation: the formats written out from their
// definitions, sharing no code with the package.

func refABS(secret string, ts int64, body string) string {
	m := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(m, "%d.%s", ts, body)
	return hex.EncodeToString(m.Sum(nil))
}

func refStandard(secret, id string, ts int64, body string) string {
	k := []byte(secret)
	if strings.HasPrefix(secret, "whsec_") {
		var err error
		if k, err = base64.StdEncoding.DecodeString(secret[len("whsec_"):]); err != nil {
			panic(err)
		}
	}
	m := hmac.New(sha256.New, k)
	fmt.Fprintf(m, "%s.%d.%s", id, ts, body)
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

var (
	signedAt = time.Unix(1767268800, 0) // 2026-01-01T12:00:00Z
	plain    = "plain-secret-one"
	whsec    = "whsec_" + base64.StdEncoding.EncodeToString([]byte("sixteen byte key"))
	body     = `{"event":"heartbeat.state_change","eventId":"0b9f5b5e-7d6f-4c4e-9a53-1c1d2b3a4f50"}`
	id       = "0b9f5b5e-7d6f-4c4e-9a53-1c1d2b3a4f50"
)

func TestSignMatchesIndependentImplementation(t *testing.T) {
	for _, secrets := range [][]string{{plain}, {whsec}, {whsec, plain}} {
		t.Run(strings.Join(secrets, "+"), func(t *testing.T) {
			s, err := webhook.NewSigner(secrets...)
			require.NoError(t, err)
			h := http.Header{}
			s.Sign(h, "heartbeat.state_change", id, signedAt, []byte(body))

			ts := signedAt.Unix()
			abs := "t=" + strconv.FormatInt(ts, 10)
			var std []string
			for _, sec := range secrets {
				abs += ",v1=" + refABS(sec, ts, body)
				std = append(std, "v1,"+refStandard(sec, id, ts, body))
			}
			require.Equal(t, http.Header{
				"X-Abs-Event":       {"heartbeat.state_change"},
				"X-Abs-Delivery":    {id},
				"X-Abs-Signature":   {abs},
				"Webhook-Id":        {id},
				"Webhook-Timestamp": {strconv.FormatInt(ts, 10)},
				"Webhook-Signature": {strings.Join(std, " ")},
			}, h)
		})
	}
}

func TestNewSignerRejectsBadSecrets(t *testing.T) {
	for name, secrets := range map[string][]string{
		"none":         nil,
		"empty":        {plain, ""},
		"whsec no b64": {"whsec_not base64!"},
		"whsec empty":  {"whsec_"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := webhook.NewSigner(secrets...)
			require.Error(t, err)
			for _, s := range secrets {
				if s != "" && s != "whsec_" {
					require.NotContains(t, err.Error(), s, "the error must not quote the secret")
				}
			}
		})
	}
}

func TestVerify(t *testing.T) {
	ts := signedAt.Unix()
	tss := strconv.FormatInt(ts, 10)
	absHeader := func(sigs ...string) http.Header {
		v := "t=" + tss
		for _, s := range sigs {
			v += ",v1=" + s
		}
		return http.Header{"X-Abs-Signature": {v}}
	}
	stdHeader := func(id, tsv string, sigs ...string) http.Header {
		h := http.Header{"Webhook-Id": {id}, "Webhook-Timestamp": {tsv}}
		for i := range sigs {
			sigs[i] = "v1," + sigs[i]
		}
		h.Set("Webhook-Signature", strings.Join(sigs, " "))
		return h
	}
	other := strings.Repeat("ab", 32)
	otherB64 := base64.StdEncoding.EncodeToString(make([]byte, 32))
	for _, tc := range []struct {
		name    string
		h       http.Header
		body    string
		secrets []string
		now     time.Time
		want    error
	}{
		{"abs ok", absHeader(refABS(plain, ts, body)), body, []string{plain}, signedAt, nil},
		{"abs rotation: second of two signatures", absHeader(other, refABS(plain, ts, body)), body, []string{plain}, signedAt, nil},
		{"abs rotation: receiver knows old and new", absHeader(refABS(plain, ts, body)), body, []string{"new-secret", plain}, signedAt, nil},
		{"abs whsec secret used as written", absHeader(refABS(whsec, ts, body)), body, []string{whsec}, signedAt, nil},
		{"abs tampered body", absHeader(refABS(plain, ts, body)), body + " ", []string{plain}, signedAt, webhook.ErrSignatureMismatch},
		{"abs wrong secret", absHeader(refABS(plain, ts, body)), body, []string{"another"}, signedAt, webhook.ErrSignatureMismatch},
		{"abs 5m old ok", absHeader(refABS(plain, ts, body)), body, []string{plain}, signedAt.Add(5 * time.Minute), nil},
		{"abs 5m1s old", absHeader(refABS(plain, ts, body)), body, []string{plain}, signedAt.Add(5*time.Minute + time.Second), webhook.ErrTimestampTooOld},
		{"abs 5m1s ahead", absHeader(refABS(plain, ts, body)), body, []string{plain}, signedAt.Add(-5*time.Minute - time.Second), webhook.ErrTimestampTooNew},
		{"abs missing", http.Header{}, body, []string{plain}, signedAt, webhook.ErrNoSignature},
		{"abs no v1", http.Header{"X-Abs-Signature": {"t=" + tss}}, body, []string{plain}, signedAt, webhook.ErrMalformedHeader},
		{"abs short v1", absHeader("abcd"), body, []string{plain}, signedAt, webhook.ErrMalformedHeader},
		{"abs huge t", http.Header{"X-Abs-Signature": {"t=9223372036854775807,v1=" + other}}, body, []string{plain}, signedAt, webhook.ErrTimestampTooNew},

		{"std ok", stdHeader(id, tss, refStandard(plain, id, ts, body)), body, []string{plain}, signedAt, nil},
		{"std whsec decoded", stdHeader(id, tss, refStandard(whsec, id, ts, body)), body, []string{whsec}, signedAt, nil},
		{"std rotation", stdHeader(id, tss, otherB64, refStandard(whsec, id, ts, body)), body, []string{plain, whsec}, signedAt, nil},
		{"std other id", stdHeader("another-id", tss, refStandard(plain, id, ts, body)), body, []string{plain}, signedAt, webhook.ErrSignatureMismatch},
		{"std tampered body", stdHeader(id, tss, refStandard(plain, id, ts, body)), "{}", []string{plain}, signedAt, webhook.ErrSignatureMismatch},
		{"std too old", stdHeader(id, tss, refStandard(plain, id, ts, body)), body, []string{plain}, signedAt.Add(time.Hour), webhook.ErrTimestampTooOld},
		{"std timestamp not decimal", stdHeader(id, "+"+tss, refStandard(plain, id, ts, body)), body, []string{plain}, signedAt, webhook.ErrMalformedHeader},
		{"std no id", stdHeader("", tss, refStandard(plain, id, ts, body)), body, []string{plain}, signedAt, webhook.ErrMalformedHeader},
		{"std only v1a", http.Header{"Webhook-Id": {id}, "Webhook-Timestamp": {tss}, "Webhook-Signature": {"v1a,abcd"}}, body, []string{plain}, signedAt, webhook.ErrMalformedHeader},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := webhook.NewVerifier(tc.secrets...)
			require.NoError(t, err)
			v.Now = func() time.Time { return tc.now }
			err = v.Verify(tc.h, []byte(tc.body))
			if tc.want == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tc.want)
			for _, s := range tc.secrets {
				require.NotContains(t, err.Error(), s)
			}
		})
	}
}

// A delivery signed by the Signer verifies in both formats, and only its
// own body does.
func TestSignVerifyRoundTrip(t *testing.T) {
	s, err := webhook.NewSigner(whsec, plain)
	require.NoError(t, err)
	h := http.Header{}
	s.Sign(h, "agent.revoked", id, time.Now(), []byte(body))

	require.NoError(t, webhook.Verify(h, []byte(body), plain))
	v, err := webhook.NewVerifier(whsec)
	require.NoError(t, err)
	require.NoError(t, v.VerifyABS(h, []byte(body)))
	require.NoError(t, v.VerifyStandard(h, []byte(body)))
	require.ErrorIs(t, v.VerifyABS(h, []byte(body[1:])), webhook.ErrSignatureMismatch)
	require.ErrorIs(t, v.VerifyStandard(h, []byte(body[1:])), webhook.ErrSignatureMismatch)
}

func TestParseABSSignature(t *testing.T) {
	sig := strings.Repeat("0f", 32)
	for _, tc := range []struct {
		in    string
		ts    int64
		nsigs int
		ok    bool
	}{
		{"t=1,v1=" + sig, 1, 1, true},
		{"v1=" + sig + ", t=42 ,v1=" + sig + ",v0=zz", 42, 2, true},
		{"t=1", 0, 0, false},
		{"v1=" + sig, 0, 0, false},
		{"t=1,t=2,v1=" + sig, 0, 0, false},
		{"t=-1,v1=" + sig, 0, 0, false},
		{"t=01,v1=" + sig, 0, 0, false},
		{"t=1,v1=" + sig[:62], 0, 0, false},
		{"t=1,v1=" + sig + ",junk", 0, 0, false},
		{"t=99999999999999999999,v1=" + sig, 0, 0, false},
		{"", 0, 0, false},
	} {
		ts, sigs, err := webhook.ParseABSSignature(tc.in)
		if !tc.ok {
			require.ErrorIs(t, err, webhook.ErrMalformedHeader, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		require.Equal(t, tc.ts, ts, tc.in)
		require.Len(t, sigs, tc.nsigs, tc.in)
	}
}

func TestParseStandardSignature(t *testing.T) {
	sig := base64.StdEncoding.EncodeToString(make([]byte, 32))
	for _, tc := range []struct {
		in    string
		nsigs int
		ok    bool
	}{
		{"v1," + sig, 1, true},
		{"v1a,xyz  v1," + sig + " v1," + sig, 2, true},
		{"v1a,xyz", 0, false},
		{"v1" + sig, 0, false},
		{"v1," + sig[:20], 0, false},
		{"v1,!!!!", 0, false},
		{"   ", 0, false},
	} {
		sigs, err := webhook.ParseStandardSignature(tc.in)
		if !tc.ok {
			require.ErrorIs(t, err, webhook.ErrMalformedHeader, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		require.Len(t, sigs, tc.nsigs, tc.in)
	}
}

func FuzzParseABSSignature(f *testing.F) {
	f.Add("t=1767268800,v1=" + strings.Repeat("ab", 32))
	f.Add("t=1,v1=" + strings.Repeat("ab", 32) + ",v1=" + strings.Repeat("cd", 32))
	f.Add("v0=x,t=5")
	f.Add("t=,v1=")
	f.Add(",,,")
	f.Fuzz(func(t *testing.T, in string) {
		ts, sigs, err := webhook.ParseABSSignature(in)
		if err != nil {
			require.ErrorIs(t, err, webhook.ErrMalformedHeader)
			return
		}
		require.GreaterOrEqual(t, ts, int64(0))
		require.NotEmpty(t, sigs)
		for _, s := range sigs {
			require.Len(t, s, sha256.Size)
		}
	})
}

func FuzzParseStandardSignature(f *testing.F) {
	f.Add("v1," + base64.StdEncoding.EncodeToString(make([]byte, 32)))
	f.Add("v1a,abc v1," + base64.StdEncoding.EncodeToString(make([]byte, 32)))
	f.Add("v1,")
	f.Add(" , ")
	f.Fuzz(func(t *testing.T, in string) {
		sigs, err := webhook.ParseStandardSignature(in)
		if err != nil {
			require.ErrorIs(t, err, webhook.ErrMalformedHeader)
			return
		}
		require.NotEmpty(t, sigs)
		for _, s := range sigs {
			require.Len(t, s, sha256.Size)
		}
	})
}

// FuzzVerify feeds arbitrary headers and bodies to Verify: it must answer
// with one of its errors, never panic, and never accept a forgery.
func FuzzVerify(f *testing.F) {
	f.Add("t=1767268800,v1="+strings.Repeat("ab", 32), "", "", "", body)
	f.Add("", id, "1767268800", "v1,"+base64.StdEncoding.EncodeToString(make([]byte, 32)), body)
	f.Add("", "", "x", "v1,", "")
	f.Fuzz(func(t *testing.T, abs, wid, wts, wsig, b string) {
		h := http.Header{}
		for k, v := range map[string]string{"X-Abs-Signature": abs, "Webhook-Id": wid, "Webhook-Timestamp": wts, "Webhook-Signature": wsig} {
			if v != "" {
				h.Set(k, v)
			}
		}
		v, err := webhook.NewVerifier(plain)
		require.NoError(t, err)
		v.Now = func() time.Time { return signedAt }
		require.Error(t, v.Verify(h, []byte(b)))
	})
}
