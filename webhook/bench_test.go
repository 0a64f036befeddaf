package webhook_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentsentinel/sentinel/webhook"
)

// A typical event body is about 500 bytes; two secrets while rotating.
var benchBody = []byte(`{"event":"heartbeat.state_change",` + strings.Repeat(`"k":"v",`, 55) + `"x":1}`)

func BenchmarkSign(b *testing.B) {
	s, err := webhook.NewSigner(whsec, plain)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		s.Sign(http.Header{}, "heartbeat.state_change", id, now, benchBody)
	}
}

func BenchmarkVerify(b *testing.B) {
	s, _ := webhook.NewSigner(whsec, plain)
	h := http.Header{}
	s.Sign(h, "heartbeat.state_change", id, time.Now(), benchBody)
	v, err := webhook.NewVerifier(plain)
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		verify func(http.Header, []byte) error
	}{{"abs", v.VerifyABS}, {"standard", v.VerifyStandard}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := tc.verify(h, benchBody); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
