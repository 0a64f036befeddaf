// Package delivery sends signed webhook events to the tenants' endpoints:
// the event shapes, one HTTP client per tenant, the status → outcome
// classification and the retry policy.
//
// It keeps nothing durable. The caller (the bridge) owns the outbox: it
// encodes an event once (Encode), stores the Message, calls Send for each
// attempt, and stores what Policy.Decide says. Send never blocks on another
// tenant: each tenant has its own client and connection pool and Send takes
// no lock while the request is in flight, so the caller runs one worker per
// tenant (one at a time per tenant keeps each agent's events in order).
package delivery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	promconfig "github.com/prometheus/common/config"

	"github.com/agentsentinel/sentinel/config"
	"github.com/agentsentinel/sentinel/webhook"
)

// ErrNoEndpoint is returned for a tenant without a webhook in the running
// configuration (unknown, or its webhook was removed by a reload).
var ErrNoEndpoint = errors.New("no webhook endpoint configured for the tenant")

// Result is the outcome of one attempt.
type Result struct {
	Outcome Outcome
	// StatusCode is the endpoint's answer; 0 when none came (network
	// error, timeout, no endpoint).
	StatusCode int
	// RetryAfter is the endpoint's Retry-After on a 429 or 503, else 0.
	RetryAfter time.Duration
	// Latency is from sending the request to reading the answer's headers.
	Latency time.Duration
	// Err says why the attempt did not deliver; nil when it did. Its text
	// names the endpoint by scheme and host only, never its credentials,
	// path or query, and never a signing secret.
	Err error
}

// endpoint is one tenant's webhook, built from its configuration.
type endpoint struct {
	url      string
	redacted string
	secrets  []string // to scrub from error texts
	signer   *webhook.Signer
	client   *http.Client
	maxAge   time.Duration
}

// Sender sends deliveries. It is safe for concurrent use; ApplyConfig may
// run while Sends are in flight (they finish with the client they started
// with).
type Sender struct {
	logger    *slog.Logger
	now       func() time.Time
	userAgent string

	mu        sync.RWMutex
	endpoints map[string]*endpoint // by tenant id
}

// Options configure a Sender.
type Options struct {
	Logger *slog.Logger
	// Now is the clock that timestamps signatures; nil means time.Now.
	Now func() time.Time
	// UserAgent is sent with every delivery.
	UserAgent string
}

// NewSender returns a Sender with no endpoints; ApplyConfig gives it some.
func NewSender(o Options) *Sender {
	s := &Sender{logger: o.Logger, now: o.Now, userAgent: o.UserAgent, endpoints: map[string]*endpoint{}}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.userAgent == "" {
		s.userAgent = "sentinel-webhook"
	}
	return s
}

// ApplyConfig builds a client and signer for every tenant with a webhook
// and swaps them all in at once. On error nothing changes, so a reload can
// reject the configuration and keep the running one. Every client is built
// anew (TLS files are read again); http_config.follow_redirects is
// overridden: redirects are never followed.
func (s *Sender) ApplyConfig(cfg *config.Config) error {
	eps := make(map[string]*endpoint, len(cfg.Tenants))
	for i, t := range cfg.Tenants {
		if t.Webhook == nil {
			continue
		}
		ep, err := s.newEndpoint(t.ID, t.Webhook)
		if err != nil {
			closeIdle(eps)
			return fmt.Errorf("tenants[%d].webhook: %w", i, err)
		}
		eps[t.ID] = ep
	}
	s.mu.Lock()
	old := s.endpoints
	s.endpoints = eps
	s.mu.Unlock()
	closeIdle(old)
	return nil
}

func closeIdle(eps map[string]*endpoint) {
	for _, ep := range eps {
		ep.client.CloseIdleConnections()
	}
}

func (s *Sender) newEndpoint(tenant string, w *config.WebhookConfig) (*endpoint, error) {
	u, err := url.Parse(w.URL)
	if err != nil {
		// url.Parse quotes the whole URL; say only that it is bad.
		return nil, errors.New("url does not parse")
	}
	secrets := make([]string, len(w.Secrets))
	for i, sec := range w.Secrets {
		secrets[i] = string(sec)
	}
	signer, err := webhook.NewSigner(secrets...)
	if err != nil {
		return nil, err
	}
	client, err := promconfig.NewClientFromConfig(w.HTTPConfig, "webhook_"+tenant, promconfig.WithUserAgent(s.userAgent))
	if err != nil {
		return nil, fmt.Errorf("http_config: %w", err)
	}
	client.Timeout = time.Duration(w.Timeout)
	// A redirect is a permanent failure (Classify): following it would send
	// the signed event to an address nobody configured.
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &endpoint{
		url:      w.URL,
		redacted: RedactURL(u),
		secrets:  secrets,
		signer:   signer,
		client:   client,
		maxAge:   time.Duration(w.MaxAge),
	}, nil
}

func (s *Sender) endpoint(tenant string) *endpoint {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.endpoints[tenant]
}

// Policy returns the retry policy of tenant's endpoint (DefaultBackoff and
// its webhook.max_age), and false when the tenant has no endpoint.
func (s *Sender) Policy(tenant string) (Policy, bool) {
	ep := s.endpoint(tenant)
	if ep == nil {
		return Policy{}, false
	}
	return Policy{Strategy: DefaultBackoff, MaxAge: ep.maxAge}, true
}

// Send makes one attempt to deliver m to tenant's endpoint, signed now, and
// classifies the answer. It returns when the endpoint answers, the
// tenant's webhook.timeout passes or ctx ends (then the Outcome is Retry
// and Err wraps ctx's error: the attempt says nothing about the endpoint).
func (s *Sender) Send(ctx context.Context, tenant string, m Message) Result {
	ep := s.endpoint(tenant)
	if ep == nil {
		return Result{Outcome: Retry, Err: ErrNoEndpoint}
	}
	r := ep.send(ctx, m, s.now())
	attrs := []any{"tenant", tenant, "event", m.Event, "event_id", m.ID, "url", ep.redacted,
		"outcome", r.Outcome.String(), "status", r.StatusCode, "latency", r.Latency}
	if r.Err != nil {
		s.logger.Warn("webhook delivery attempt failed", append(attrs, "err", r.Err)...)
	} else {
		s.logger.Debug("webhook delivered", attrs...)
	}
	return r
}

func (ep *endpoint) send(ctx context.Context, m Message, now time.Time) Result {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.url, bytes.NewReader(m.Body))
	if err != nil {
		return Result{Outcome: Failed, Err: ep.redact(err)}
	}
	req.Header.Set("Content-Type", "application/json")
	ep.signer.Sign(req.Header, m.Event, m.ID, now, m.Body)

	start := time.Now()
	resp, err := ep.client.Do(req)
	latency := time.Since(start)
	if err != nil {
		return Result{Outcome: Retry, Latency: latency, Err: ep.redact(err)}
	}
	// Drain a little so the connection can be reused; the body is the
	// endpoint's business and never reaches a log.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()

	r := Result{Outcome: Classify(resp.StatusCode), StatusCode: resp.StatusCode, Latency: latency}
	if honoursRetryAfter(resp.StatusCode) {
		r.RetryAfter, _ = ParseRetryAfter(resp.Header.Get("Retry-After"), now)
	}
	if r.Outcome != Delivered {
		r.Err = &StatusError{URL: ep.redacted, StatusCode: resp.StatusCode}
	}
	return r
}

// StatusError is an endpoint's answer that is not 2xx.
type StatusError struct {
	URL        string // redacted
	StatusCode int
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("POST %s: endpoint answered %d %s", e.URL, e.StatusCode, http.StatusText(e.StatusCode))
}

// redact rewrites a transport error so that its text names the endpoint by
// its redacted URL only. net/http quotes the full URL (with userinfo, path
// and query) in every *url.Error; the cause underneath is kept for
// errors.Is (context.DeadlineExceeded, …) but its text is scrubbed too.
func (ep *endpoint) redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	msg := "POST " + ep.redacted + ": " + err.Error()
	if u, perr := url.Parse(ep.url); perr == nil {
		for _, s := range []string{ep.url, u.User.String(), u.RawQuery, u.EscapedPath(), u.Path} {
			if len(s) > 1 {
				msg = strings.ReplaceAll(msg, s, "<redacted>")
			}
		}
		if p, ok := u.User.Password(); ok && p != "" {
			msg = strings.ReplaceAll(msg, p, "<redacted>")
		}
	}
	// A signing secret never leaves sentinel (only its MACs do), so it cannot
	// be in a transport error; scrub it anyway, unless it is so short that
	// scrubbing would garble the message.
	for _, s := range ep.secrets {
		if len(s) >= 8 {
			msg = strings.ReplaceAll(msg, s, "<redacted>")
		}
	}
	return &redactedError{msg: msg, cause: err}
}

type redactedError struct {
	msg   string
	cause error
}

func (e *redactedError) Error() string { return e.msg }

// Unwrap gives errors.Is and errors.As the cause; its own text is not
// redacted, so print the redactedError, not what it unwraps to.
func (e *redactedError) Unwrap() error { return e.cause }

// RedactURL names an endpoint for errors and logs: scheme and host only.
// Userinfo, query and path may all be credentials (a Slack incoming
// webhook's path is its secret), so none of them is shown.
func RedactURL(u *url.URL) string {
	s := u.Scheme + "://" + u.Host
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		s += "/<redacted>"
	}
	return s
}

// Test sends a signed webhook.test event to tenant's endpoint at once and
// returns the attempt's result (status code and latency). It returns
// ErrNoEndpoint, without sending, when the tenant has no webhook.
func (s *Sender) Test(ctx context.Context, tenant string) (Result, error) {
	if s.endpoint(tenant) == nil {
		return Result{}, ErrNoEndpoint
	}
	m, err := Encode(NewWebhookTest(tenant, s.now()))
	if err != nil {
		return Result{}, err
	}
	return s.Send(ctx, tenant, m), nil
}
