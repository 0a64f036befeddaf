package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestHistogramBuckets(t *testing.T) {
	for _, v := range []int64{0, 1, 127, 128, 129, 255, 256, 1000, 123456, 1 << 40, 1<<62 + 12345} {
		i := bucketOf(v)
		require.Less(t, i, numBuckets, "value %d", v)
		got := bucketValue(i)
		// Exact below subBuckets, within 1/subBuckets above.
		diff := got - v
		if diff < 0 {
			diff = -diff
		}
		require.LessOrEqual(t, float64(diff), float64(v)/subBuckets, "value %d → bucket %d → %d", v, i, got)
		if i > 0 {
			require.Less(t, bucketValue(i-1), got, "buckets increase")
		}
	}
}

func TestHistogramQuantiles(t *testing.T) {
	h := &Histogram{}
	for i := 1; i <= 10000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{
		{0.5, 5000 * time.Microsecond},
		{0.99, 9900 * time.Microsecond},
		{0.999, 9990 * time.Microsecond},
		{1, 10000 * time.Microsecond},
	} {
		got := h.Quantile(tc.q)
		require.InEpsilon(t, float64(tc.want), float64(got), 1.0/subBuckets, "q %v", tc.q)
	}
	require.Equal(t, 10*time.Millisecond, h.Max())
	require.InEpsilon(t, float64(5000500*time.Nanosecond), float64(h.Mean()), 1e-9)
	require.Equal(t, uint64(10000), h.Count())

	var empty Histogram
	require.Zero(t, empty.Quantile(0.99))
	require.Zero(t, empty.Mean())
}

func TestHistogramMerge(t *testing.T) {
	a, b := &Histogram{}, &Histogram{}
	a.Record(time.Millisecond)
	b.Record(3 * time.Millisecond)
	b.Record(-time.Second) // a clock step back counts as 0
	a.Merge(b)
	require.Equal(t, uint64(3), a.Count())
	require.Equal(t, 3*time.Millisecond, a.Max())
	require.Zero(t, a.Quantile(0.1))
}

// A closed-loop worker that expected an answer every 1 ms waited 100 ms
// once: the 99 requests it did not send meanwhile would have waited
// 99 ms, 98 ms, … 1 ms, and the correction adds exactly those.
func TestHistogramCorrected(t *testing.T) {
	h := &Histogram{}
	for range 900 {
		h.Record(time.Millisecond)
	}
	h.Record(100 * time.Millisecond)
	require.Equal(t, time.Millisecond, h.Quantile(0.99).Round(10*time.Microsecond), "raw p99 hides the stall")

	c := h.Corrected(time.Millisecond)
	require.InDelta(t, 901+99, c.Count(), 1, "within the bucket precision")
	require.Equal(t, uint64(901), h.Count(), "the original is untouched")
	require.InEpsilon(t, float64(90*time.Millisecond), float64(c.Quantile(0.99)), 0.02, "corrected p99 shows it")
	require.Equal(t, h.Max(), c.Max())

	require.Equal(t, h.Count(), h.Corrected(0).Count(), "no expected interval, no correction")
}
