package collector

import (
	"encoding/binary"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"unicode/utf8"
	"unsafe"
)

// appendFloat formats f as expfmt's text encoder does: strconv's shortest
// 'g' form, which already spells +Inf, -Inf and NaN as the format wants,
// except that expfmt writes -0 as "0".
func appendFloat(b []byte, f float64) []byte {
	// Small integers (intervals, flags, counts) are the common case; 'g'
	// writes them as plain digits below 1e6 (%e from exponent 6 on).
	if f >= 0 && f < 1e6 && f == float64(int64(f)) {
		return appendUint(b, uint64(f))
	}
	if f > -1e6 && f < 0 && f == float64(int64(f)) {
		return strconv.AppendInt(b, int64(f), 10)
	}
	if out, ok := appendShortest(b, f); ok {
		return out
	}
	return strconv.AppendFloat(b, f, 'g', -1, 64)
}

// appendUint is strconv.AppendUint(b, c, 10) without its copy through a
// scratch buffer (one per sample showed in profiles).
func appendUint(b []byte, c uint64) []byte {
	if c < 10 {
		return append(b, byte('0'+c)) // the flags, and many counts
	}
	n := digitCount(c)
	b = slices.Grow(b, n)
	putDigits(b[len(b):len(b)+n], c)
	return b[:len(b)+n]
}

// digitCount is the number of decimal digits of c (1 for 0).
func digitCount(c uint64) int {
	n := bits.Len64(c) * 1233 >> 12 // ⌊log10(2)·bit length⌋: n or n-1 digits
	if n < len(pow10) && c >= pow10[n] {
		n++
	}
	return max(n, 1)
}

// pow10 are the powers of ten up to 10^19, the largest below 2^64.
var pow10 = func() (p [20]uint64) {
	p[0] = 1
	for i := 1; i < len(p); i++ {
		p[i] = p[i-1] * 10
	}
	return p
}()

// fracDigits[k] is the least F with 10^F ≥ 2^k: a float whose last
// mantissa bit is worth 2^-k needs at most F decimals to be told apart from
// its neighbours.
var fracDigits = func() (d [63]int) {
	for k := range d {
		for uint64(1)<<k > pow10[d[k]] {
			d[k]++
		}
	}
	return d
}()

// appendShortest appends f in strconv.AppendFloat(b, f, 'g', -1, 64)'s
// text for the floats it knows how to, reporting false (b untouched) for
// the others: those outside [2^-10, 2^52), powers of two (their lower neighbour
// is nearer than their upper one) and exact ties between two candidates.
// Every timestamp sample, three per agent, is such a float, and so are
// most reported latencies; strconv's general algorithm was a fifth of a
// 100k-agent scrape.
//
// The shortest text of f is the decimal with the fewest digits that reads
// back as f, the one nearest to f among several. With f = m·2^-k (m the
// 53-bit mantissa, 1 ≤ k ≤ 62), the decimals that read back as f are those
// strictly inside (f - 2^-k/2, f + 2^-k/2): the bounds are never decimals
// of F = fracDigits[k] digits, since (2m±1)·10^F / 2^(k+1) is odd over a
// power of two when k+1 > F. In units of 10^-F the interval is (lo, hi),
// wider than 1 unit (so it holds an integer) and narrower than 10 (so it
// holds at most one multiple of 10). If it holds a multiple of 10, that one
// has fewer digits than any other candidate: it is the answer once its
// trailing zeros are dropped. If not, every candidate has F decimals and
// the answer is f rounded to F decimals. All of it is exact in 128 bits:
// (2m+1)·10^F < 2^54·2^64, and the quotients are below 10m < 2^57.
func appendShortest(b []byte, f float64) ([]byte, bool) {
	if !(f >= 1.0/(1<<10) && f < 1<<52) {
		return b, false
	}
	fb := math.Float64bits(f)
	m := fb&(1<<52-1) | 1<<52
	k := 1075 - int(fb>>52) // f = m·2^-k: 1 ≤ k ≤ 62 in this range
	if m == 1<<52 {
		return b, false
	}
	F := fracDigits[k]
	p := pow10[F]
	s := uint(k + 1)
	// lo and hi in units of 10^-F, floored; neither is exact (above).
	h, l := bits.Mul64(2*m-1, p)
	lo := shr128(h, l, s) + 1 // the least integer above the lower bound
	h, l = bits.Mul64(2*m+1, p)
	hi := shr128(h, l, s) // the greatest below the upper one
	var c uint64
	if c = (lo + 9) / 10 * 10; c > hi {
		// f·10^F = m·10^F / 2^k, rounded to the nearest integer.
		h, l = bits.Mul64(m, p)
		c = shr128(h, l, uint(k))
		rem, half := l&(1<<k-1), uint64(1)<<(k-1)
		switch {
		case rem == half:
			return b, false // a tie: leave the rounding rule to strconv
		case rem > half:
			c++
		}
		if c < lo || c > hi {
			return b, false // cannot happen (the interval is wider than 1)
		}
	}
	// c·10^-F is the answer: drop its trailing zeros (only a multiple of 10
	// found above has any).
	exp10 := -F // c·10^exp10
	for c%10 == 0 {
		c /= 10
		exp10++
	}
	n := digitCount(c)
	dp := n + exp10 // where the decimal point goes, counted from the first digit
	if x := dp - 1; x >= 6 {
		// %e, as 'g' does from exponent 6 (and below -4, which f ≥ 2^-10
		// never is; f < 2^52 keeps x ≤ 15). "d.ddde+xx", or "de+xx" for a
		// single digit.
		size := n + 4
		if n > 1 {
			size++
		}
		b = slices.Grow(b, size)
		out := b[len(b) : len(b)+size]
		out[size-4], out[size-3] = 'e', '+'
		out[size-2], out[size-1] = byte('0'+x/10), byte('0'+x%10)
		putDigits(out[:size-4], c)
		if n > 1 {
			copy(out[:1], out[1:2]) // the first digit before the point
			out[1] = '.'
		}
		return b[:len(b)+size], true
	}
	if dp <= 0 {
		// %f below 1: "0.", zeros, the digits (x ≥ -4 as f ≥ 2^-10).
		size := 2 - dp + n
		b = slices.Grow(b, size)
		out := b[len(b) : len(b)+size]
		out[0], out[1] = '0', '.'
		putDigits(out[2:], c) // right-aligned: the zeros after the point too
		return b[:len(b)+size], true
	}
	// %f from 1 on; trailing zeros when the integer ends in them.
	size, zeros := n, 0
	switch {
	case dp >= n:
		size, zeros = dp, dp-n
	default:
		size++ // the point
	}
	b = slices.Grow(b, size)
	out := b[len(b) : len(b)+size]
	for i := range zeros {
		out[size-1-i] = '0'
	}
	if dp >= n {
		putDigits(out[:n], c)
	} else {
		putDigits(out[dp+1:], c%pow10[n-dp])
		out[dp] = '.'
		putDigits(out[:dp], c/pow10[n-dp])
	}
	return b[:len(b)+size], true
}

// putDigits writes the decimal digits of c right-aligned into out, which
// has room for exactly them (leading zeros when c has fewer) and is at most
// 24 bytes long.
func putDigits(out []byte, c uint64) {
	var tmp [24]byte
	binary.LittleEndian.PutUint64(tmp[16:], eightDigits(uint32(c%1e8)))
	if len(out) > 8 {
		c /= 1e8
		binary.LittleEndian.PutUint64(tmp[8:], eightDigits(uint32(c%1e8)))
		if len(out) > 16 {
			binary.LittleEndian.PutUint64(tmp[:], eightDigits(uint32(c/1e8))) // < 1845
		}
	}
	copy(out, tmp[len(tmp)-len(out):])
}

// eightDigits returns the eight decimal digits of x < 10^8, zero-padded,
// as ASCII in a little-endian word (the first digit in the lowest byte).
// It splits x into halves, quarters, then digits, every lane at once (the
// products never carry into the next lane): a loop over digit pairs cost
// ~280 instructions for a 17-digit timestamp.
func eightDigits(x uint32) uint64 {
	v := uint64(x/10000) | uint64(x%10000)<<32  // 4-digit lanes of 32 bits
	q := v * 5243 >> 19 & 0x0000007f0000007f    // n/100 for n < 43699
	v = q | (v-q*100)<<16                       // 2-digit lanes of 16 bits
	q = v * 103 >> 10 & 0x000f000f000f000f      // n/10 for n < 179
	return q | (v-q*10)<<8 | 0x3030303030303030 // digits, plus '0'
}

// shr128 is the 128-bit hi:lo shifted right by s (1 ≤ s ≤ 63), truncated to
// 64 bits; the callers' quotients fit.
func shr128(hi, lo uint64, s uint) uint64 {
	return hi<<(64-s) | lo>>s
}

// appendLabelValue appends s escaped as a text-format label value (\\, \"
// and \n), with invalid UTF-8 replaced as labelValue does. Plain ASCII, which
// every agent id and nearly every reported string is, is copied as is, eight
// bytes at a time, tested as they are copied: label values are ~1/3 of the
// exposition, and a test pass before a copy showed in profiles.
func appendLabelValue(b []byte, s string) []byte {
	n := len(s)
	if n < 8 {
		for i := range n {
			if c := s[i]; c >= utf8.RuneSelf || c == '\\' || c == '"' || c == '\n' {
				return appendEscaped(append(b, s[:i]...), labelValue(s[i:]))
			}
		}
		return append(b, s...)
	}
	start := len(b)
	b = slices.Grow(b, n)
	out := b[start : start+n]
	p := unsafe.Slice(unsafe.StringData(s), n)
	i := 0
	for ; i+16 <= n; i += 16 {
		x, y := binary.LittleEndian.Uint64(p[i:]), binary.LittleEndian.Uint64(p[i+8:])
		if special(x)|special(y) != 0 {
			return appendEscapedFrom(b[:start], s)
		}
		binary.LittleEndian.PutUint64(out[i:], x)
		binary.LittleEndian.PutUint64(out[i+8:], y)
	}
	// The rest, less than 16 bytes (and 8 at least in all): one or two
	// words, the last overlapping the one before.
	x, y := binary.LittleEndian.Uint64(p[min(i, n-8):]), binary.LittleEndian.Uint64(p[n-8:])
	if special(x)|special(y) != 0 {
		return appendEscapedFrom(b[:start], s)
	}
	binary.LittleEndian.PutUint64(out[min(i, n-8):], x)
	binary.LittleEndian.PutUint64(out[n-8:], y)
	return b[:start+n]
}

// special is non-zero when a byte of x is not plain ASCII or may need
// escaping. Bytes below '#' stand for '"' and '\n': one test instead of
// two; the few others (space, '!', controls) take the exact path.
func special(x uint64) uint64 {
	return x&msb | hasLess(x, '"'+1) | hasByte(x, '\\')
}

// appendEscapedFrom is appendLabelValue for an s known to hold a byte that
// is not plain ASCII or needs escaping.
func appendEscapedFrom(b []byte, s string) []byte {
	i := 0
	for ; i < len(s); i++ {
		if c := s[i]; c >= utf8.RuneSelf || c == '\\' || c == '"' || c == '\n' {
			break
		}
	}
	// s[:i] is plain ASCII, so s is valid UTF-8 exactly when s[i:] is.
	return appendEscaped(append(b, s[:i]...), labelValue(s[i:]))
}

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// hasByte is non-zero when a byte of the ASCII word x equals c (the
// classic zero-byte test on x^c; exact for words without bytes >= 0x80,
// and words with one are caught by the msb test anyway).
func hasByte(x uint64, c byte) uint64 {
	v := x ^ (lsb * uint64(c))
	return (v - lsb) & ^v & msb
}

// hasLess is non-zero when a byte of the ASCII word x is below c ≤ 128
// (exact as to whether any is, as hasByte).
func hasLess(x uint64, c byte) uint64 {
	return (x - lsb*uint64(c)) & ^x & msb
}

func appendEscaped(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			b = append(b, `\\`...)
		case '"':
			b = append(b, `\"`...)
		case '\n':
			b = append(b, `\n`...)
		default:
			b = append(b, c)
		}
	}
	return b
}
