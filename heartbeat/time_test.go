package heartbeat

import (
	"math/rand/v2"
	"strconv"
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
		time.Date(1969, 12, 31, 23, 59, 59, 999_999_999, time.UTC),
		time.Date(2000, 2, 29, 12, 0, 0, 0, time.UTC), time.Date(2100, 2, 28, 23, 59, 59, 0, time.UTC),
		time.Date(1900, 3, 1, 0, 0, 0, 0, time.UTC), time.Date(1600, 2, 29, 0, 0, 0, 1, time.UTC),
		time.Date(1000, 2, 28, 0, 0, 0, 0, time.UTC), time.Date(9996, 12, 31, 0, 0, 0, 0, time.UTC),
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		ns := r.Int64N(1 << 62)
		if r.IntN(2) == 0 {
			ns -= ns % int64(time.Millisecond) // a few digits only
		}
		times = append(times, time.Unix(0, ns).In(zone))
		// Any second of the years 0800 to 10199, before 1970 too.
		lo, hi := time.Date(800, 1, 1, 0, 0, 0, 0, time.UTC).Unix(), time.Date(10200, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
		times = append(times, time.Unix(lo+r.Int64N(hi-lo), r.Int64N(int64(time.Second))*int64(r.IntN(2))).In(zone))
	}
	for _, tm := range times {
		want := tm.UTC().AppendFormat([]byte("x"), time.RFC3339Nano)
		require.Equal(t, string(want), string(appendTime([]byte("x"), tm)), "%v", tm)
	}
}

// TestCivilDate holds the day-to-date arithmetic to package time for every
// day of the years appendTime formats itself.
func TestCivilDate(t *testing.T) {
	for d := fourDigitYears[0] / 86400; d < fourDigitYears[1]/86400; d++ {
		y, m, dd := time.Unix(d*86400, 0).UTC().Date()
		year, month, day := civilDate(d)
		if year != y || month != int(m) || day != dd {
			t.Fatalf("day %d: civilDate gives %04d-%02d-%02d, time %04d-%02d-%02d", d, year, month, day, y, m, dd)
		}
	}
}

func TestAppendSeconds(t *testing.T) {
	for _, d := range []time.Duration{
		0, time.Second, 60 * time.Second, 1500 * time.Millisecond, time.Nanosecond, -time.Second,
		24 * time.Hour, 5 * 24 * time.Hour, 1<<63 - 1, -1 << 63, 90 * 24 * time.Hour * 5,
	} {
		want := strconv.AppendFloat([]byte("x"), d.Seconds(), 'f', -1, 64)
		require.Equal(t, string(want), string(appendSeconds([]byte("x"), d)), "%v", d)
	}
}
