package delivery_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/delivery"
)

// The status → outcome matrix, one row per status class and every code
// that is an exception within its class.
func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		codes []int
		want  delivery.Outcome
	}{
		{[]int{100, 101, 199}, delivery.Failed}, // never final in practice; not success
		{[]int{200, 201, 202, 204, 299}, delivery.Delivered},
		{[]int{300, 301, 302, 303, 304, 307, 308}, delivery.Failed},
		{[]int{400, 401, 403, 404, 405, 409, 413, 415, 422, 451, 499}, delivery.Failed},
		{[]int{408, 429}, delivery.Retry},
		{[]int{410}, delivery.Disabled},
		{[]int{500, 501, 502, 503, 504, 599}, delivery.Retry},
	} {
		for _, code := range tc.codes {
			require.Equal(t, tc.want, delivery.Classify(code), "status %d", code)
		}
	}
}

func TestOutcomeString(t *testing.T) {
	require.Equal(t, "delivered", delivery.Delivered.String())
	require.Equal(t, "retry", delivery.Retry.String())
	require.Equal(t, "failed", delivery.Failed.String())
	require.Equal(t, "disabled", delivery.Disabled.String())
	require.Equal(t, "unknown", delivery.Outcome(0).String())
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"120", 2 * time.Minute, true},
		{" 0 ", 0, true},
		{"Sun, 01 Mar 2026 12:05:00 GMT", 5 * time.Minute, true},   // IMF-fixdate
		{"Sunday, 01-Mar-26 12:00:30 GMT", 30 * time.Second, true}, // RFC 850
		{"Sun Mar  1 12:01:00 2026", time.Minute, true},            // asctime
		{"Sun, 01 Mar 2026 11:00:00 GMT", 0, true},                 // past
		{"99999999999999999999999", 365 * 24 * time.Hour, true},    // capped
		{"", 0, false},
		{"-5", 0, false},
		{"soon", 0, false},
		{"1.5", 0, false},
	} {
		got, ok := delivery.ParseRetryAfter(tc.in, now)
		require.Equal(t, tc.ok, ok, "%q", tc.in)
		require.Equal(t, tc.want, got, "%q", tc.in)
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"120", "Sun, 01 Mar 2026 12:05:00 GMT", "", "-1", "1e9"} {
		f.Add(s)
	}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, in string) {
		d, ok := delivery.ParseRetryAfter(in, now)
		if !ok {
			require.Zero(t, d)
			return
		}
		require.GreaterOrEqual(t, d, time.Duration(0))
		require.LessOrEqual(t, d, 365*24*time.Hour)
	})
}

func TestDefaultBackoff(t *testing.T) {
	want := []time.Duration{0, 5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour, 10 * time.Hour}
	for _, tc := range []struct {
		name   string
		r      float64
		factor float64
	}{{"middle: no jitter", 0.5, 1}, {"low end", 0, 0.8}, {"high end", 0.999999, 1.2}} {
		t.Run(tc.name, func(t *testing.T) {
			b := delivery.DefaultBackoff
			b.Rand = func() float64 { return tc.r }
			for attempts, w := range want {
				require.InDelta(t, float64(w)*tc.factor, float64(b.NextDelay(attempts)), float64(w)*1e-5+1, "attempts %d", attempts)
			}
		})
	}
	// Real randomness stays within ±20 %.
	for range 1000 {
		d := delivery.DefaultBackoff.NextDelay(2)
		require.GreaterOrEqual(t, d, 4*time.Minute)
		require.LessOrEqual(t, d, 6*time.Minute)
	}
}

func TestPolicyDecide(t *testing.T) {
	created := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	p := delivery.Policy{Strategy: delivery.Backoff{Delays: delivery.DefaultBackoff.Delays}, MaxAge: 24 * time.Hour}
	for _, tc := range []struct {
		name     string
		r        delivery.Result
		attempts int
		now      time.Time
		want     delivery.Decision
	}{
		{"delivered", delivery.Result{Outcome: delivery.Delivered}, 1, created, delivery.Decision{Outcome: delivery.Delivered}},
		{"permanent", delivery.Result{Outcome: delivery.Failed}, 1, created, delivery.Decision{Outcome: delivery.Failed}},
		{"disabled", delivery.Result{Outcome: delivery.Disabled}, 3, created, delivery.Decision{Outcome: delivery.Disabled}},
		{"first retry after 5s", delivery.Result{Outcome: delivery.Retry}, 1, created,
			delivery.Decision{Outcome: delivery.Retry, Next: created.Add(5 * time.Second)}},
		{"fourth retry after 2h", delivery.Result{Outcome: delivery.Retry}, 4, created.Add(time.Hour),
			delivery.Decision{Outcome: delivery.Retry, Next: created.Add(3 * time.Hour)}},
		{"Retry-After longer than the schedule wins", delivery.Result{Outcome: delivery.Retry, RetryAfter: time.Minute}, 1, created,
			delivery.Decision{Outcome: delivery.Retry, Next: created.Add(time.Minute)}},
		{"Retry-After shorter than the schedule does not", delivery.Result{Outcome: delivery.Retry, RetryAfter: time.Second}, 2, created,
			delivery.Decision{Outcome: delivery.Retry, Next: created.Add(5 * time.Minute)}},
		{"next attempt exactly at max_age", delivery.Result{Outcome: delivery.Retry}, 7, created.Add(14 * time.Hour),
			delivery.Decision{Outcome: delivery.Retry, Next: created.Add(24 * time.Hour)}},
		{"next attempt past max_age gives up", delivery.Result{Outcome: delivery.Retry}, 7, created.Add(17 * time.Hour),
			delivery.Decision{Outcome: delivery.Failed, GaveUp: true}},
		{"Retry-After past max_age gives up", delivery.Result{Outcome: delivery.Retry, RetryAfter: 25 * time.Hour}, 1, created,
			delivery.Decision{Outcome: delivery.Failed, GaveUp: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, p.Decide(tc.r, tc.attempts, created, tc.now))
		})
	}
}
