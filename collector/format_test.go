package collector

import (
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestAppendFloatMatchesStrconv checks the formatter against strconv's
// shortest 'g' text (expfmt's) on the floats a scrape formats: timestamps
// to the nanosecond from 1970 to 2200, the same plus thresholds, reported
// numbers, and random floats of every exponent.
func TestAppendFloatMatchesStrconv(t *testing.T) {
	check := func(f float64) {
		t.Helper()
		want := strconv.AppendFloat(nil, f, 'g', -1, 64)
		if f == 0 {
			want = []byte("0") // expfmt writes -0 as 0
		}
		if got := appendFloat(nil, f); string(got) != string(want) {
			require.Equal(t, string(want), string(got), "%b", f)
		}
	}
	for _, f := range []float64{
		0, math.Copysign(0, -1), 1, -1, 0.5, 1.5, 999_999, 1e6, 1e6 + 0.5, 1_000_001, 9_999_999.5,
		1 << 51, 1<<52 - 0.5, 1 << 52, 1<<53 - 1, 1 << 53, 1e15, 1e16, 1e17, 1e21, 1e22,
		math.Nextafter(1, 2), math.Nextafter(2, 1), math.Nextafter(1e6, 0), math.Nextafter(1e6, 2e6),
		0.1455, 145.5, 0.001, 0.0009765625, 0.0009765626, 0.0009765624, 0.00012, 1e-5, 0.5e-4, 0.2, 0.3, 0.7, 0.99999999999, 3600.25, 1735689600, 1735689600.5, 1.7356896001234567e9,
		math.MaxFloat64, math.SmallestNonzeroFloat64, math.Inf(1), math.Inf(-1), math.NaN(),
	} {
		check(f)
		check(-f)
	}
	for e := range 60 {
		check(math.Ldexp(1, e))
		check(math.Ldexp(3, e-1))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	end := time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	for range 300_000 {
		ns := rng.Int64N(end)
		check(float64(ns) / 1e9)
		check(float64(ns-ns%int64(time.Second)) / 1e9)
		check(float64(ns-ns%int64(time.Millisecond)) / 1e9)
		interval := int64(rng.IntN(3600)+1) * int64(time.Second)
		check(float64(ns+interval*int64(rng.IntN(20)+1)) / 1e9)
		check(math.Float64frombits(rng.Uint64()))
		check(math.Ldexp(rng.Float64()+1, rng.IntN(60)-4))
		check(float64(rng.Uint64N(1<<53)) / 8)
		check(rng.Float64())
		check(math.Ldexp(rng.Float64()+1, -rng.IntN(12)))
		check(float64(rng.IntN(10_000_000)) / 1e3) // latencies in ms → s
		check(float64(rng.IntN(2_000_000)))
	}
}

func TestAppendUintMatchesStrconv(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, c := range []uint64{0, 1, 9, 10, 99, 100, 1e8 - 1, 1e8, 1e16 - 1, 1e16, 1e19 - 1, 1e19, math.MaxUint64} {
		require.Equal(t, strconv.FormatUint(c, 10), string(appendUint([]byte("x"), c))[1:])
	}
	for range 100_000 {
		c := rng.Uint64() >> rng.IntN(64)
		require.Equal(t, strconv.FormatUint(c, 10), string(appendUint(nil, c)))
	}
}

// FuzzAppendFloat: for any float the formatter writes strconv's text.
func FuzzAppendFloat(f *testing.F) {
	for _, seed := range []float64{1, 1.5, 1735689600, 1.7356896001234567e9, 1e6 + 0.5, 1<<52 - 0.5, math.Nextafter(1, 2)} {
		f.Add(math.Float64bits(seed))
	}
	f.Fuzz(func(t *testing.T, fb uint64) {
		v := math.Float64frombits(fb)
		want := strconv.AppendFloat(nil, v, 'g', -1, 64)
		if v == 0 {
			want = []byte("0")
		}
		require.Equal(t, string(want), string(appendFloat(nil, v)))
	})
}

// TestAppendLabelValueEveryPosition: at every length up to 40, a byte that
// needs escaping or replacing, at every position, is found.
func TestAppendLabelValueEveryPosition(t *testing.T) {
	for n := range 41 {
		plain := strings.Repeat("a", n)
		require.Equal(t, plain, string(appendLabelValue([]byte{}, plain)))
		for i := range n {
			for _, c := range []string{`"`, `\`, "\n", " ", "\xff", "é"} {
				s := plain[:i] + c + plain[i+1:]
				want := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(labelValue(s))
				require.Equal(t, want, string(appendLabelValue([]byte("x"), s))[1:], "%q", s)
			}
		}
	}
}
