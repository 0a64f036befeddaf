package main

import (
	"math"
	"math/bits"
	"time"
)

// subBuckets is the number of linear sub-buckets per power of two: a
// recorded value is kept with a relative error below 1/subBuckets (0.8 %),
// which is HdrHistogram's two significant digits at a fraction of its code.
const (
	subBucketBits = 7
	subBuckets    = 1 << subBucketBits
	// numBuckets covers every non-negative int64 nanosecond value.
	numBuckets = (64 - subBucketBits + 1) * subBuckets
)

// Histogram is a log-linear histogram of latencies in nanoseconds: values
// below subBuckets ns are exact, larger ones fall in one of subBuckets
// equal slices of their power of two. It is not safe for concurrent use:
// each worker records into its own and the histograms are merged at the end.
type Histogram struct {
	counts [numBuckets]uint64
	total  uint64
	sum    float64 // nanoseconds, for the mean
	max    int64
}

// bucketOf returns the bucket index of v ≥ 0.
func bucketOf(v int64) int {
	if v < subBuckets {
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - subBucketBits - 1
	return (shift+1)*subBuckets + int(v>>shift) - subBuckets
}

// bucketValue returns the value a bucket stands for: the middle of its range.
func bucketValue(i int) int64 {
	if i < subBuckets {
		return int64(i)
	}
	shift := i/subBuckets - 1
	low := int64(i%subBuckets+subBuckets) << shift
	return low + (int64(1)<<shift)/2
}

// Record adds one latency; negative values count as 0.
func (h *Histogram) Record(d time.Duration) { h.recordN(int64(d), 1) }

func (h *Histogram) recordN(v int64, n uint64) {
	if v < 0 {
		v = 0
	}
	h.counts[bucketOf(v)] += n
	h.total += n
	h.sum += float64(v) * float64(n)
	if v > h.max {
		h.max = v
	}
}

// Merge adds every value of o to h.
func (h *Histogram) Merge(o *Histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.total += o.total
	h.sum += o.sum
	h.max = max(h.max, o.max)
}

// Count is the number of recorded values.
func (h *Histogram) Count() uint64 { return h.total }

// Max is the largest recorded value, exact.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Mean is the mean of the recorded values.
func (h *Histogram) Mean() time.Duration {
	if h.total == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.total))
}

// Quantile returns the value below or at which a fraction q of the
// recorded values lie (0 when empty), within the bucket precision.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.total)))
	rank = min(max(rank, 1), h.total)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(min(bucketValue(i), h.max))
		}
	}
	return time.Duration(h.max)
}

// Corrected returns a copy of h corrected for coordinated omission as
// HdrHistogram's copyCorrectedForCoordinatedOmission does: a closed-loop
// worker that waited v for an answer did not send the requests it would
// have sent every expected interval meanwhile, so for each value v above
// expected the values v−expected, v−2·expected, … down to expected are
// added as well — what those unsent requests would have measured.
func (h *Histogram) Corrected(expected time.Duration) *Histogram {
	c := &Histogram{}
	c.Merge(h)
	e := int64(expected)
	if e <= 0 {
		return c
	}
	for i, n := range h.counts {
		if n == 0 {
			continue
		}
		v := bucketValue(i)
		if i < subBuckets || v <= e {
			continue
		}
		for missing := v - e; missing >= e; missing -= e {
			c.recordN(missing, n)
		}
	}
	return c
}
