package heartbeat

import (
	"encoding/binary"
	"encoding/json"
	"math/bits"
	"strconv"
	"strings"
	"unsafe"
)

// decodeBeatBody parses a heartbeat body with the same result as
// json.Unmarshal(data, out), which is most of a heartbeat's cost. A fast
// path handles the canonical shape agents send (known keys once each,
// plain ASCII strings, numbers, nested platform and metrics objects); on
// anything else — escapes, non-ASCII, null, unknown or duplicate keys —
// it hands the body to encoding/json, so behaviour never differs
// (FuzzDecodeBeatBody checks this).
func decodeBeatBody(data []byte, out *beatBody) error {
	var fast beatBody
	if fastDecodeBeat(data, &fast) {
		*out = fast
		return nil
	}
	// Through a copy, so that out does not escape (encoding/json keeps
	// what it is given on the heap) on the fast path's account.
	slow := new(beatBody)
	*slow = *out
	err := json.Unmarshal(data, slow)
	*out = *slow
	return err
}

// fastScanner reads one heartbeat body on the fast path. Its allocations
// are made once per body, not once per field: the string values are copied
// together into one string at the end (the body is a pooled buffer the next
// request reuses, so strings must not borrow it), and the fields behind
// pointers live in one beatValues.
type fastScanner struct {
	data []byte
	pos  int
	// strs are the string values read, to copy when the body is done.
	strs  [16]stringSpan
	nstrs int
	vals  *beatValues
}

// stringSpan is a string value: its field and where it lies in data.
type stringSpan struct {
	field      stringField
	start, end int
}

// stringField is a string field of beatBody or of its platform.
type stringField uint8

const (
	sfStatus stringField = iota
	sfVersion
	sfType
	sfContainerID
	sfImage
	sfPodName
	sfNamespace
	sfNode
	sfFunctionName
	sfRegion
	sfHostname
	sfOS
)

// of returns field f of out (of its platform, which is set, for the
// platform fields).
func (f stringField) of(out *beatBody) *string {
	p := out.Platform
	switch f {
	case sfStatus:
		return &out.Status
	case sfVersion:
		return &out.Version
	case sfType:
		return &p.Type
	case sfContainerID:
		return &p.ContainerID
	case sfImage:
		return &p.Image
	case sfPodName:
		return &p.PodName
	case sfNamespace:
		return &p.Namespace
	case sfNode:
		return &p.Node
	case sfFunctionName:
		return &p.FunctionName
	case sfRegion:
		return &p.Region
	case sfHostname:
		return &p.Hostname
	default:
		return &p.OS
	}
}

// beatValues holds what a beatBody's pointer fields point to.
type beatValues struct {
	uptime, interval                   float64
	exitCode, silentAfter, zombieAfter int64
	platform                           platformBody
	metrics                            metricsBody
}

func (s *fastScanner) values() *beatValues {
	if s.vals == nil {
		s.vals = new(beatValues)
	}
	return s.vals
}

func (s *fastScanner) skipSpace() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// consume skips whitespace and then c, reporting whether c was there.
func (s *fastScanner) consume(c byte) bool {
	s.skipSpace()
	if s.pos < len(s.data) && s.data[s.pos] == c {
		s.pos++
		return true
	}
	return false
}

// plainString reads a string of ASCII without escapes or controls, the value
// of field f once copyStrings runs.
func (s *fastScanner) plainString(f stringField) bool {
	start, end, ok := s.plainSpan()
	if !ok || s.nstrs == len(s.strs) {
		return false
	}
	s.strs[s.nstrs] = stringSpan{f, start, end}
	s.nstrs++
	return true
}

// copyStrings sets the string values read in out, copied into one new
// string.
func (s *fastScanner) copyStrings(out *beatBody) {
	n := 0
	for _, sp := range s.strs[:s.nstrs] {
		n += sp.end - sp.start
	}
	if n == 0 {
		return
	}
	var b strings.Builder
	b.Grow(n)
	for _, sp := range s.strs[:s.nstrs] {
		b.Write(s.data[sp.start:sp.end])
	}
	all, off := b.String(), 0
	for _, sp := range s.strs[:s.nstrs] {
		*sp.field.of(out) = all[off : off+sp.end-sp.start]
		off += sp.end - sp.start
	}
}

// plainSpan reads a string of ASCII without escapes or controls and returns
// where its content lies in data.
func (s *fastScanner) plainSpan() (start, end int, ok bool) {
	if !s.consume('"') {
		return 0, 0, false
	}
	start = s.pos
	n, ok := plainLen(s.data[start:])
	if !ok {
		return 0, 0, false
	}
	s.pos = start + n + 1
	return start, start + n, true
}

// plainLen returns the length of the string b starts with, up to its
// closing quote, when it holds only ASCII without control characters or
// backslashes, which encoding/json keeps as they are: an escape (even of a
// quote) and anything that is not ASCII are encoding/json's. It looks for
// the quote and checks the bytes before it in one pass, eight bytes at a
// time: the strings of a heartbeat are most of its decoding time, and a
// quote search followed by a check read each string twice.
func plainLen(b []byte) (int, bool) {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	i := 0
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		bs, q := x^(ones*'\\'), x^(ones*'"')
		// A byte below 0x20 borrows into its high bit; one above 0x7f has
		// it set; a backslash or a quote is a zero byte of bs or q, which
		// borrows into it. A borrow can flag a byte above the one that
		// caused it, never below: the lowest flag is exact.
		if m := ((x - ones*0x20) | x | (bs - ones) | (q - ones)) & highs; m != 0 {
			j := i + bits.TrailingZeros64(m)/8
			return j, b[j] == '"'
		}
	}
	for ; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return i, true
		case c < 0x20 || c >= 0x80 || c == '\\':
			return 0, false
		}
	}
	return 0, false
}

// number reads a JSON number token (strict grammar).
func (s *fastScanner) number() ([]byte, bool) {
	s.skipSpace()
	d, i := s.data, s.pos
	digits := func() bool {
		start := i
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
		return i > start
	}
	if i < len(d) && d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case !digits():
		return nil, false
	}
	if i < len(d) && d[i] == '.' {
		i++
		if !digits() {
			return nil, false
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if !digits() {
			return nil, false
		}
	}
	tok := d[s.pos:i]
	s.pos = i
	return tok, true
}

func (s *fastScanner) float() (float64, bool) {
	tok, ok := s.number()
	if !ok {
		return 0, false
	}
	if f, ok := wholeNumber(tok); ok {
		return f, true
	}
	f, err := strconv.ParseFloat(string(tok), 64)
	return f, err == nil
}

// wholeNumber parses a token of at most 15 digits. Agents report whole
// numbers mostly: below 2^53 their float64 is exact, the value
// strconv.ParseFloat returns, at a fraction of its cost.
func wholeNumber(tok []byte) (float64, bool) {
	if len(tok) == 0 || len(tok) > 15 {
		return 0, false
	}
	var n uint64
	for _, c := range tok {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return float64(n), true
}

func (s *fastScanner) int64() (int64, bool) {
	tok, ok := s.number()
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(string(tok), 10, 64)
	return n, err == nil
}

// object reads {"key": value, …}, calling member for each key, which reads
// the value and returns the key's field number (below 32) or -1 for a key
// the fast path does not take. A repeated key fails: encoding/json's
// last-wins merging is left to encoding/json.
func (s *fastScanner) object(member func(key string) int) bool {
	if !s.consume('{') {
		return false
	}
	if s.consume('}') {
		return true
	}
	var seen uint32
	for {
		start, end, ok := s.plainSpan()
		if !ok || !s.consume(':') {
			return false
		}
		// The key borrows the body's bytes instead of being copied: keys
		// were a third of a heartbeat's allocations, and member keeps no
		// key beyond the call.
		key := unsafe.String(unsafe.SliceData(s.data[start:end]), end-start)
		f := member(key)
		if f < 0 || seen&(1<<f) != 0 {
			return false
		}
		seen |= 1 << f
		if s.consume(',') {
			continue
		}
		return s.consume('}')
	}
}

// Field numbers of fastDecodeBeat's object.
const (
	fStatus = iota
	fVersion
	fUptime
	fInterval
	fExitCode
	fSilentAfter
	fZombieAfter
	fPlatform
	fMetrics
)

func fastDecodeBeat(data []byte, out *beatBody) bool {
	s := &fastScanner{data: data}
	ok := s.object(func(key string) int {
		var f int
		var ok bool
		switch key {
		case "status":
			f = fStatus
			ok = s.plainString(sfStatus)
		case "version":
			f = fVersion
			ok = s.plainString(sfVersion)
		case "uptime_seconds":
			f = fUptime
			v := &s.values().uptime
			*v, ok = s.float()
			out.UptimeSeconds = v
		case "heartbeat_interval_seconds":
			f = fInterval
			v := &s.values().interval
			*v, ok = s.float()
			out.HeartbeatIntervalSeconds = v
		case "exit_code":
			f = fExitCode
			v := &s.values().exitCode
			*v, ok = s.int64()
			out.ExitCode = v
		case "silent_after":
			f = fSilentAfter
			v := &s.values().silentAfter
			*v, ok = s.int64()
			out.SilentAfter = v
		case "zombie_after":
			f = fZombieAfter
			v := &s.values().zombieAfter
			*v, ok = s.int64()
			out.ZombieAfter = v
		case "platform":
			f = fPlatform
			out.Platform = &s.values().platform
			ok = s.platform(out.Platform)
		case "metrics":
			f = fMetrics
			out.Metrics = &s.values().metrics
			ok = s.metrics(out.Metrics)
		}
		if !ok {
			return -1
		}
		return f
	})
	s.skipSpace()
	if !ok || s.pos != len(data) {
		return false
	}
	s.copyStrings(out)
	return true
}

func (s *fastScanner) platform(p *platformBody) bool {
	return s.object(func(key string) int {
		var f stringField
		switch key {
		case "type":
			f = sfType
		case "container_id":
			f = sfContainerID
		case "image":
			f = sfImage
		case "pod_name":
			f = sfPodName
		case "namespace":
			f = sfNamespace
		case "node":
			f = sfNode
		case "function_name":
			f = sfFunctionName
		case "region":
			f = sfRegion
		case "hostname":
			f = sfHostname
		case "os":
			f = sfOS
		case "pid":
			var ok bool
			if p.PID, ok = s.int64(); !ok {
				return -1
			}
			return int(sfOS) + 1
		default:
			return -1
		}
		if !s.plainString(f) {
			return -1
		}
		return int(f)
	})
}

func (s *fastScanner) metrics(m *metricsBody) bool {
	return s.object(func(key string) int {
		var field *float64
		var f int
		switch key {
		case "requests_handled":
			f, field = 0, &m.RequestsHandled
		case "errors":
			f, field = 1, &m.Errors
		case "avg_latency_ms":
			f, field = 2, &m.AvgLatencyMs
		default:
			return -1
		}
		var ok bool
		if *field, ok = s.float(); !ok {
			return -1
		}
		return f
	})
}
