package heartbeat

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestAppendTime holds the hand-written formatter to time.RFC3339Nano, in
// and out of the years it handles itself, in any zone, with every number
// of fractional digits.
func TestAppendTime(t *testing.T) {
	zone := time.FixedZone("x", -(5*3600 + 30*60))
	times := []time.Time{
		{}, time.Unix(0, 0), time.Unix(1, 1), time.Unix(1_700_000_000, 100_000_000),
		time.Date(999, 12, 31, 23, 59, 59, 999_999_999, time.UTC),
		time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 10, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 2, 3, 12, 5, 0, 0, zone),
		time.Date(2026, 2, 3, 12, 5, 0, 120_000, zone),
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		ns := r.Int64N(1 << 62)
		if r.IntN(2) == 0 {
			ns -= ns % int64(time.Millisecond) // a few digits only
		}
		times = append(times, time.Unix(0, ns).In(zone))
	}
	for _, tm := range times {
		want := tm.UTC().AppendFormat([]byte("x"), time.RFC3339Nano)
		require.Equal(t, string(want), string(appendTime([]byte("x"), tm)), "%v", tm)
	}
}
