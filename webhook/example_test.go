package webhook_test

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/agentsentinel/sentinel/webhook"
)

// A receiver reads the raw body, verifies it, and only then decodes it.
func ExampleVerifier() {
	// Both the old and the new secret while they rotate.
	verifier, err := webhook.NewVerifier("whsec_c2l4dGVlbiBieXRlIGtleQ==", "old-secret")
	if err != nil {
		log.Fatal(err)
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, "read body", http.StatusBadRequest)
			return
		}
		if err := verifier.Verify(r.Header, body); err != nil {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		// Deliveries are at least once: skip an X-ABS-Delivery already seen.
		fmt.Println("verified", r.Header.Get(webhook.HeaderEvent))
	})

	// What sentinel sends, signed with the new secret.
	signer, _ := webhook.NewSigner("whsec_c2l4dGVlbiBieXRlIGtleQ==")
	body := `{"event":"webhook.test"}`
	req := httptest.NewRequest(http.MethodPost, "/hooks/sentinel", strings.NewReader(body))
	signer.Sign(req.Header, "webhook.test", "2f1c7c1e-3a0b-4d6e-9b5f-8f2d4c6a1b3e", time.Now(), []byte(body))
	handler.ServeHTTP(httptest.NewRecorder(), req)
	// Output: verified webhook.test
}
