package delivery

import (
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Outcome is what one attempt means for a delivery.
type Outcome uint8

// The outcomes of an attempt.
const (
	// Delivered: the endpoint answered 2xx.
	Delivered Outcome = iota + 1
	// Retry: worth another attempt (408, 429, 5xx, network error, timeout).
	Retry
	// Failed: permanent; 3xx and the other 4xx, or retries ran past max_age.
	Failed
	// Disabled: 410 Gone; permanent, and the tenant's endpoint takes no
	// more deliveries until an admin re-enables it.
	Disabled
)

var outcomeNames = [...]string{"", "delivered", "retry", "failed", "disabled"}

// String returns the outcome's name, as used in logs and metric labels.
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) && o != 0 {
		return outcomeNames[o]
	}
	return "unknown"
}

// Classify maps an endpoint's HTTP status code to an outcome. Redirects are
// never followed (the signed body must not travel to another address), so
// a 3xx reaches Classify and is permanent.
func Classify(status int) Outcome {
	switch {
	case status >= 200 && status < 300:
		return Delivered
	case status == http.StatusGone:
		return Disabled
	case status == http.StatusRequestTimeout, status == http.StatusTooManyRequests, status >= 500:
		return Retry
	default:
		return Failed
	}
}

// honoursRetryAfter says whether a status's Retry-After header is read.
func honoursRetryAfter(status int) bool {
	return status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable
}

// ParseRetryAfter reads a Retry-After value in either form of RFC 9110:
// delay seconds ("120") or an HTTP-date. A date in the past is a zero delay.
func ParseRetryAfter(value string, now time.Time) (time.Duration, bool) {
	value = strings.TrimSpace(value)
	if value == "" {
		return 0, false
	}
	if strings.TrimLeft(value, "0123456789") == "" {
		s, err := strconv.ParseInt(value, 10, 64)
		if err != nil || s > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter, true
		}
		return time.Duration(s) * time.Second, true
	}
	t, err := http.ParseTime(value)
	if err != nil {
		return 0, false
	}
	d := t.Sub(now)
	if d < 0 {
		d = 0
	}
	return min(d, maxRetryAfter), true
}

// maxRetryAfter caps what an endpoint can ask for; any max_age is shorter
// in practice, so such a delivery simply gives up.
const maxRetryAfter = 365 * 24 * time.Hour

// RetryStrategy says how long to wait before the next attempt.
type RetryStrategy interface {
	// NextDelay is the wait before attempt number attempts+1, given that
	// attempts attempts were made: NextDelay(0) is the first attempt's.
	NextDelay(attempts int) time.Duration
}

// Backoff is a RetryStrategy over a fixed schedule with jitter.
type Backoff struct {
	// Delays[n] is NextDelay(n); past the end, the last delay repeats.
	Delays []time.Duration
	// Jitter spreads each delay uniformly over ±Jitter of it, so that the
	// retries of many events failed together do not arrive together.
	Jitter float64
	// Rand returns a number in [0, 1); nil means math/rand/v2.
	Rand func() float64
}

// DefaultBackoff is sentinel's schedule: at once, 5 s, 5 m, 30 m, 2 h, 5 h,
// then every 10 h (until max_age), each ±20 %.
var DefaultBackoff = Backoff{
	Delays: []time.Duration{0, 5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour},
	Jitter: 0.2,
}

// NextDelay implements RetryStrategy.
func (b Backoff) NextDelay(attempts int) time.Duration {
	if len(b.Delays) == 0 {
		return 0
	}
	d := b.Delays[min(max(attempts, 0), len(b.Delays)-1)]
	if b.Jitter <= 0 || d <= 0 {
		return d
	}
	r := rand.Float64
	if b.Rand != nil {
		r = b.Rand
	}
	return max(time.Duration(float64(d)*(1+b.Jitter*(2*r()-1))), 0)
}

// Policy decides, after each attempt, whether and when a delivery is tried
// again. It holds no state: the attempt count and the event's creation time
// live with the event (the caller's outbox).
type Policy struct {
	// Strategy spaces the attempts; nil means DefaultBackoff.
	Strategy RetryStrategy
	// MaxAge is how long after its creation an event is still retried
	// (webhook.max_age).
	MaxAge time.Duration
}

// Decision is what to do with a delivery after an attempt.
type Decision struct {
	// Outcome is the attempt's, except that a Retry whose next attempt
	// would fall after MaxAge becomes Failed with GaveUp set.
	Outcome Outcome
	GaveUp  bool
	// Next is when to try again, when Outcome is Retry.
	Next time.Time
}

// Decide turns the result of attempt number attempts (counting it) of an
// event created at created into a decision. The next attempt waits for the
// strategy's delay, and at least as long as a Retry-After asked.
func (p Policy) Decide(r Result, attempts int, created, now time.Time) Decision {
	if r.Outcome != Retry {
		return Decision{Outcome: r.Outcome}
	}
	strategy := p.Strategy
	if strategy == nil {
		strategy = DefaultBackoff
	}
	wait := max(strategy.NextDelay(attempts), r.RetryAfter)
	next := now.Add(wait)
	if next.After(created.Add(p.MaxAge)) {
		return Decision{Outcome: Failed, GaveUp: true}
	}
	return Decision{Outcome: Retry, Next: next}
}
