package delivery_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/config"
	"github.com/agentsentinel/sentinel/delivery"
	"github.com/agentsentinel/sentinel/internal/testutil"
)

// received is one request an endpoint saw.
type received struct {
	header http.Header
	body   []byte
	method string
	path   string
}

// endpoint is a customer's webhook receiver: it records every request and
// answers with status (and its headers) as the test sets them.
type endpoint struct {
	*httptest.Server
	mu     sync.Mutex
	got    []received
	status atomic.Int64
	header atomic.Value // http.Header
}

func newEndpoint(t *testing.T, tlsServer bool) *endpoint {
	e := &endpoint{}
	e.status.Store(http.StatusOK)
	e.header.Store(http.Header{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		e.mu.Lock()
		e.got = append(e.got, received{header: r.Header.Clone(), body: body, method: r.Method, path: r.URL.RequestURI()})
		e.mu.Unlock()
		for k, v := range e.header.Load().(http.Header) {
			w.Header()[k] = v
		}
		w.WriteHeader(int(e.status.Load()))
	})
	if tlsServer {
		e.Server = httptest.NewUnstartedServer(h)
		// The untrusted-CA case makes the server log a handshake error.
		e.Config.ErrorLog = log.New(io.Discard, "", 0)
		e.StartTLS()
	} else {
		e.Server = httptest.NewServer(h)
	}
	t.Cleanup(e.Close)
	return e
}

func (e *endpoint) requests() []received {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]received(nil), e.got...)
}

// tenantYAML is one tenant with a webhook; extra is more webhook keys.
func tenantYAML(id, url string, secrets []string, extra string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  - id: %s\n    api_keys: [%s-api-key]\n    webhook:\n      url: %q\n      secrets:\n", id, id, url)
	for _, s := range secrets {
		fmt.Fprintf(&b, "        - %q\n", s)
	}
	for _, l := range strings.Split(strings.TrimSpace(extra), "\n") {
		if l != "" {
			b.WriteString("      " + l + "\n")
		}
	}
	return b.String()
}

func parseConfig(t *testing.T, tenants ...string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte("tenants:\n"+strings.Join(tenants, "")), t.TempDir())
	require.NoError(t, err)
	return cfg
}

var epoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newSender(t *testing.T, cfg *config.Config) (*delivery.Sender, *testutil.SyncBuffer, *testutil.Clock) {
	t.Helper()
	logs := &testutil.SyncBuffer{}
	clock := testutil.NewClock(epoch)
	s := delivery.NewSender(delivery.Options{
		Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:    clock.Now,
	})
	require.NoError(t, s.ApplyConfig(cfg))
	return s, logs, clock
}

func message(t *testing.T, tenant string) delivery.Message {
	m, err := delivery.Encode(delivery.NewAgentRevoked(tenant, "agent-01", 1, "test", time.Second, delivery.SourceAdmin, epoch))
	require.NoError(t, err)
	return m
}

// checkSignatures verifies both formats with an implementation of its own:
// one X-ABS v1 and one Standard Webhooks v1 per secret, in order.
func checkSignatures(t *testing.T, h http.Header, body []byte, secrets []string, signedAt time.Time) {
	t.Helper()
	ts := strconv.FormatInt(signedAt.Unix(), 10)
	id := h.Get("webhook-id")
	wantABS := []string{"t=" + ts}
	var wantStd []string
	for _, s := range secrets {
		m := hmac.New(sha256.New, []byte(s))
		m.Write([]byte(ts + "." + string(body)))
		wantABS = append(wantABS, "v1="+hex.EncodeToString(m.Sum(nil)))

		key := []byte(s)
		if rest, ok := strings.CutPrefix(s, "whsec_"); ok {
			var err error
			key, err = base64.StdEncoding.DecodeString(rest)
			require.NoError(t, err)
		}
		m = hmac.New(sha256.New, key)
		m.Write([]byte(id + "." + ts + "." + string(body)))
		wantStd = append(wantStd, "v1,"+base64.StdEncoding.EncodeToString(m.Sum(nil)))
	}
	require.Equal(t, strings.Join(wantABS, ","), h.Get("X-ABS-Signature"))
	require.Equal(t, ts, h.Get("webhook-timestamp"))
	require.Equal(t, strings.Join(wantStd, " "), h.Get("webhook-signature"))
}

func TestSendSignsAndPosts(t *testing.T) {
	ep := newEndpoint(t, false)
	secrets := []string{"whsec_" + base64.StdEncoding.EncodeToString([]byte("new-signing-key!")), "old-plain-secret"}
	s, _, clock := newSender(t, parseConfig(t, tenantYAML("acme", ep.URL+"/hooks/abs", secrets, "")))
	clock.Advance(90 * time.Second) // signatures carry the time of the attempt, not of the event
	m := message(t, "acme")

	r := s.Send(t.Context(), "acme", m)
	require.NoError(t, r.Err)
	require.Equal(t, delivery.Delivered, r.Outcome)
	require.Equal(t, http.StatusOK, r.StatusCode)
	require.Positive(t, r.Latency)

	got := ep.requests()
	require.Len(t, got, 1)
	require.Equal(t, http.MethodPost, got[0].method)
	require.Equal(t, "/hooks/abs", got[0].path)
	require.Equal(t, m.Body, got[0].body)
	require.Equal(t, "application/json", got[0].header.Get("Content-Type"))
	require.Equal(t, "agent.revoked", got[0].header.Get("X-ABS-Event"))
	require.Equal(t, m.ID, got[0].header.Get("X-ABS-Delivery"))
	require.Equal(t, m.ID, got[0].header.Get("webhook-id"))
	checkSignatures(t, got[0].header, got[0].body, secrets, epoch.Add(90*time.Second))
}

// The retry matrix end to end: what the endpoint answers → the result.
func TestSendOutcomes(t *testing.T) {
	ep := newEndpoint(t, false)
	s, _, _ := newSender(t, parseConfig(t, tenantYAML("acme", ep.URL, []string{"s3cret"}, "")))
	for _, tc := range []struct {
		status     int
		header     http.Header
		want       delivery.Outcome
		retryAfter time.Duration
	}{
		{200, nil, delivery.Delivered, 0},
		{202, nil, delivery.Delivered, 0},
		{204, nil, delivery.Delivered, 0},
		{301, http.Header{"Location": {"/elsewhere"}}, delivery.Failed, 0},
		{307, http.Header{"Location": {"/elsewhere"}}, delivery.Failed, 0},
		{400, nil, delivery.Failed, 0},
		{401, nil, delivery.Failed, 0},
		{404, nil, delivery.Failed, 0},
		{408, nil, delivery.Retry, 0},
		{410, nil, delivery.Disabled, 0},
		{422, nil, delivery.Failed, 0},
		{429, nil, delivery.Retry, 0},
		{429, http.Header{"Retry-After": {"120"}}, delivery.Retry, 2 * time.Minute},
		{429, http.Header{"Retry-After": {epoch.Add(time.Hour).Format(http.TimeFormat)}}, delivery.Retry, time.Hour},
		{500, http.Header{"Retry-After": {"120"}}, delivery.Retry, 0}, // only 429 and 503
		{502, nil, delivery.Retry, 0},
		{503, http.Header{"Retry-After": {"30"}}, delivery.Retry, 30 * time.Second},
		{503, http.Header{"Retry-After": {"whenever"}}, delivery.Retry, 0},
		{504, nil, delivery.Retry, 0},
	} {
		t.Run(fmt.Sprintf("%d %v", tc.status, tc.header), func(t *testing.T) {
			ep.status.Store(int64(tc.status))
			h := tc.header
			if h == nil {
				h = http.Header{}
			}
			ep.header.Store(h)
			before := len(ep.requests())
			r := s.Send(t.Context(), "acme", message(t, "acme"))
			require.Equal(t, tc.want, r.Outcome)
			require.Equal(t, tc.status, r.StatusCode)
			require.Equal(t, tc.retryAfter, r.RetryAfter)
			require.Len(t, ep.requests(), before+1, "one request per attempt; redirects are not followed")
			if tc.want == delivery.Delivered {
				require.NoError(t, r.Err)
				return
			}
			var se *delivery.StatusError
			require.ErrorAs(t, r.Err, &se)
			require.Equal(t, tc.status, se.StatusCode)
		})
	}
}

func TestSendNetworkErrorIsRetried(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	s, _, _ := newSender(t, parseConfig(t, tenantYAML("acme", "http://"+addr+"/hook", []string{"s3cret"}, "")))
	r := s.Send(t.Context(), "acme", message(t, "acme"))
	require.Equal(t, delivery.Retry, r.Outcome)
	require.Zero(t, r.StatusCode)
	require.Error(t, r.Err)
	var ne net.Error
	require.ErrorAs(t, r.Err, &ne, "the cause stays reachable: %v", r.Err)
}

// hangingEndpoint accepts a request and answers only when the test ends.
func hangingEndpoint(t *testing.T) (addr string, entered <-chan struct{}) {
	release := make(chan struct{})
	in := make(chan struct{}, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs first: Close waits for handlers
	return srv.URL, in
}

func TestHangingEndpointDoesNotBlockOtherTenants(t *testing.T) {
	slowURL, entered := hangingEndpoint(t)
	fast := newEndpoint(t, false)
	s, _, _ := newSender(t, parseConfig(t,
		tenantYAML("slow", slowURL, []string{"slow-secret"}, "timeout: 1m"),
		tenantYAML("fast", fast.URL, []string{"fast-secret"}, "")))

	// The slow tenant's worker is stuck in a request…
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan delivery.Result, 1)
	go func() { done <- s.Send(ctx, "slow", message(t, "slow")) }()
	<-entered

	// …while the other tenant's deliveries, and a reload, go through.
	for range 3 {
		r := s.Send(t.Context(), "fast", message(t, "fast"))
		require.Equal(t, delivery.Delivered, r.Outcome, "%v", r.Err)
	}
	require.NoError(t, s.ApplyConfig(parseConfig(t,
		tenantYAML("slow", slowURL, []string{"slow-secret"}, "timeout: 1m"),
		tenantYAML("fast", fast.URL, []string{"fast-secret"}, ""))))
	require.Equal(t, delivery.Delivered, s.Send(t.Context(), "fast", message(t, "fast")).Outcome)
	select {
	case r := <-done:
		t.Fatalf("the hanging delivery returned early: %+v", r)
	default:
	}

	// The caller's context ends the stuck attempt; it is retried later.
	cancel()
	r := <-done
	require.Equal(t, delivery.Retry, r.Outcome)
	require.ErrorIs(t, r.Err, context.Canceled)
}

func TestSendTimesOutAfterWebhookTimeout(t *testing.T) {
	slowURL, _ := hangingEndpoint(t)
	s, _, _ := newSender(t, parseConfig(t, tenantYAML("slow", slowURL, []string{"slow-secret"}, "timeout: 100ms")))
	start := time.Now()
	r := s.Send(t.Context(), "slow", message(t, "slow"))
	require.Less(t, time.Since(start), 5*time.Second)
	require.Equal(t, delivery.Retry, r.Outcome)
	var ne net.Error
	require.ErrorAs(t, r.Err, &ne)
	require.True(t, ne.Timeout(), "%v", r.Err)
}

func writePEM(t *testing.T, srv *httptest.Server) string {
	path := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600))
	return path
}

// http_config reaches the client (TLS trust, authorization), and a reload
// rebuilds every client or, when one cannot be built, changes nothing.
func TestApplyConfig(t *testing.T) {
	tlsEP := newEndpoint(t, true)
	plainEP := newEndpoint(t, false)
	ca := writePEM(t, tlsEP.Server)
	httpConfig := fmt.Sprintf("http_config:\n  tls_config:\n    ca_file: %s\n  authorization:\n    credentials: endpoint-bearer", ca)

	s, _, _ := newSender(t, parseConfig(t, tenantYAML("acme", tlsEP.URL, []string{"s3cret"}, httpConfig)))
	r := s.Send(t.Context(), "acme", message(t, "acme"))
	require.Equal(t, delivery.Delivered, r.Outcome, "%v", r.Err)
	require.Equal(t, "Bearer endpoint-bearer", tlsEP.requests()[0].header.Get("Authorization"))
	p, ok := s.Policy("acme")
	require.True(t, ok)
	require.Equal(t, 24*time.Hour, p.MaxAge)

	// Without the CA the TLS endpoint is not trusted: a retried network error.
	require.NoError(t, s.ApplyConfig(parseConfig(t, tenantYAML("acme", tlsEP.URL, []string{"s3cret"}, "max_age: 1h"))))
	r = s.Send(t.Context(), "acme", message(t, "acme"))
	require.Equal(t, delivery.Retry, r.Outcome)
	require.Contains(t, r.Err.Error(), "certificate")
	p, _ = s.Policy("acme")
	require.Equal(t, time.Hour, p.MaxAge)

	// A client that cannot be built rejects the whole reload.
	bad := "http_config:\n  tls_config:\n    ca_file: " + filepath.Join(t.TempDir(), "missing.pem")
	err := s.ApplyConfig(parseConfig(t,
		tenantYAML("other", plainEP.URL, []string{"o"}, ""),
		tenantYAML("acme", plainEP.URL, []string{"s3cret"}, bad)))
	require.ErrorContains(t, err, "tenants[1].webhook: http_config")
	_, ok = s.Policy("other")
	require.False(t, ok, "nothing of a rejected configuration is applied")

	// A tenant whose webhook goes away has no endpoint any more.
	require.NoError(t, s.ApplyConfig(parseConfig(t, tenantYAML("other", plainEP.URL, []string{"o"}, ""))))
	r = s.Send(t.Context(), "acme", message(t, "acme"))
	require.Equal(t, delivery.Retry, r.Outcome)
	require.ErrorIs(t, r.Err, delivery.ErrNoEndpoint)
	require.Equal(t, delivery.Delivered, s.Send(t.Context(), "other", message(t, "other")).Outcome)
}

// http_config.proxy_url sends deliveries through the proxy.
func TestSendThroughProxy(t *testing.T) {
	proxied := make(chan string, 1)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proxied <- r.URL.String() // a proxy sees the absolute target URL
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(proxy.Close)
	target := "http://hooks.invalid/abs"
	s, _, _ := newSender(t, parseConfig(t, tenantYAML("acme", target, []string{"s3cret"}, "http_config:\n  proxy_url: "+proxy.URL)))
	r := s.Send(t.Context(), "acme", message(t, "acme"))
	require.Equal(t, delivery.Delivered, r.Outcome, "%v", r.Err)
	require.Equal(t, target, <-proxied)
}

func TestWebhookTest(t *testing.T) {
	ep := newEndpoint(t, false)
	ep.status.Store(http.StatusAccepted)
	s, _, _ := newSender(t, parseConfig(t, tenantYAML("acme", ep.URL, []string{"s3cret"}, "")))
	r, err := s.Test(t.Context(), "acme")
	require.NoError(t, err)
	require.Equal(t, http.StatusAccepted, r.StatusCode)
	require.Positive(t, r.Latency)

	got := ep.requests()
	require.Len(t, got, 1)
	require.Equal(t, "webhook.test", got[0].header.Get("X-ABS-Event"))
	var body map[string]any
	require.NoError(t, json.Unmarshal(got[0].body, &body))
	require.Equal(t, "webhook.test", body["event"])
	require.Equal(t, "acme", body["tenantId"])
	require.Equal(t, got[0].header.Get("X-ABS-Delivery"), body["eventId"])
	checkSignatures(t, got[0].header, got[0].body, []string{"s3cret"}, epoch)

	_, err = s.Test(t.Context(), "nobody")
	require.ErrorIs(t, err, delivery.ErrNoEndpoint)
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://hooks.slack.com/services/T000/B000/XXXXSECRET": "https://hooks.slack.com/<redacted>",
		"https://user:pass@example.com:8443/abs?token=abc":      "https://example.com:8443/<redacted>",
		"http://127.0.0.1:9999":                                 "http://127.0.0.1:9999",
		"http://127.0.0.1:9999/":                                "http://127.0.0.1:9999",
		"http://127.0.0.1:9999/?k=v":                            "http://127.0.0.1:9999/<redacted>",
	} {
		u, err := url.Parse(in)
		require.NoError(t, err)
		require.Equal(t, want, delivery.RedactURL(u), in)
	}
}

// No credential of an endpoint ever appears in a result's error or a log
// line, whatever goes wrong.
func TestNoSecretInErrorsOrLogs(t *testing.T) {
	secrets := []string{"URLPASSWORD", "URLUSER", "PATHSECRET", "QUERYSECRET", "SIGNINGSECRET", "BEARERSECRET", "BASICSECRET", "PROXYUSER", "PROXYPASSWORD"}
	ep := newEndpoint(t, false)
	slowURL, _ := hangingEndpoint(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	refused := l.Addr().String()
	require.NoError(t, l.Close())

	secretURL := func(base string) string {
		return strings.Replace(base, "http://", "http://URLUSER:URLPASSWORD@", 1) + "/services/T0/B0/PATHSECRET?token=QUERYSECRET"
	}
	s, logs, _ := newSender(t, parseConfig(t,
		tenantYAML("answers", secretURL(ep.URL), []string{"SIGNINGSECRET"}, "http_config:\n  authorization:\n    credentials: BEARERSECRET"),
		tenantYAML("refused", secretURL("http://"+refused), []string{"SIGNINGSECRET"}, ""),
		tenantYAML("proxy", secretURL(ep.URL), []string{"SIGNINGSECRET"}, "http_config:\n  proxy_url: http://PROXYUSER:PROXYPASSWORD@"+refused),
		tenantYAML("hangs", secretURL(slowURL), []string{"SIGNINGSECRET"}, "timeout: 50ms\nhttp_config:\n  basic_auth:\n    username: u\n    password: BASICSECRET"),
	))
	var texts []string
	for _, status := range []int{500, 410, 302, 404, 429} {
		ep.status.Store(int64(status))
		ep.header.Store(http.Header{"Location": {secretURL(ep.URL)}})
		texts = append(texts, fmt.Sprint(s.Send(t.Context(), "answers", message(t, "answers")).Err))
	}
	for _, tenant := range []string{"refused", "proxy", "hangs"} {
		r := s.Send(t.Context(), tenant, message(t, tenant))
		require.Error(t, r.Err)
		texts = append(texts, r.Err.Error(), fmt.Sprintf("%+v %#v", r, r.Err))
	}
	texts = append(texts, logs.String())
	require.Contains(t, logs.String(), "webhook delivery attempt failed")
	require.Contains(t, logs.String(), "127.0.0.1", "the endpoint is still named by its host")
	for _, text := range texts {
		for _, secret := range secrets {
			require.NotContains(t, text, secret)
		}
	}
	// The endpoint did get its URL and credentials: only what is shown is redacted.
	require.Equal(t, "/services/T0/B0/PATHSECRET?token=QUERYSECRET", ep.requests()[0].path)
	require.NotEmpty(t, ep.requests()[0].header.Get("Authorization"))
}
