package heartbeat

import (
	"encoding/json"
	"slices"
	"strconv"
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
	return json.Unmarshal(data, out)
}

type fastScanner struct {
	data []byte
	pos  int
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

// plainString reads a string of printable ASCII without escapes.
func (s *fastScanner) plainString() (string, bool) {
	b, ok := s.plainBytes()
	if !ok {
		return "", false
	}
	return string(b), true
}

// plainBytes is plainString without the copy: the bytes are the body's.
func (s *fastScanner) plainBytes() ([]byte, bool) {
	if !s.consume('"') {
		return nil, false
	}
	start := s.pos
	for s.pos < len(s.data) {
		c := s.data[s.pos]
		switch {
		case c == '"':
			b := s.data[start:s.pos]
			s.pos++
			return b, true
		case c < 0x20 || c >= 0x7f || c == '\\':
			return nil, false
		}
		s.pos++
	}
	return nil, false
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
	f, err := strconv.ParseFloat(string(tok), 64)
	return f, err == nil
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
// the value and reports success. A repeated key fails: encoding/json's
// last-wins merging is left to encoding/json.
func (s *fastScanner) object(member func(key string) bool) bool {
	if !s.consume('{') {
		return false
	}
	if s.consume('}') {
		return true
	}
	var seenBuf [12]string
	seen := seenBuf[:0]
	for {
		// The key borrows the body's bytes instead of being copied: keys
		// were a third of a heartbeat's allocations, and neither member
		// nor seen keeps one beyond this call.
		b, ok := s.plainBytes()
		key := unsafe.String(unsafe.SliceData(b), len(b))
		if !ok || slices.Contains(seen, key) || !s.consume(':') || !member(key) {
			return false
		}
		seen = append(seen, key)
		if s.consume(',') {
			continue
		}
		return s.consume('}')
	}
}

func fastDecodeBeat(data []byte, out *beatBody) bool {
	s := &fastScanner{data: data}
	ok := s.object(func(key string) bool {
		var ok bool
		switch key {
		case "status":
			out.Status, ok = s.plainString()
		case "version":
			out.Version, ok = s.plainString()
		case "uptime_seconds":
			var v float64
			v, ok = s.float()
			out.UptimeSeconds = &v
		case "heartbeat_interval_seconds":
			var v float64
			v, ok = s.float()
			out.HeartbeatIntervalSeconds = &v
		case "exit_code":
			var v int64
			v, ok = s.int64()
			out.ExitCode = &v
		case "silent_after":
			var v int64
			v, ok = s.int64()
			out.SilentAfter = &v
		case "zombie_after":
			var v int64
			v, ok = s.int64()
			out.ZombieAfter = &v
		case "platform":
			out.Platform = new(platformBody)
			ok = s.platform(out.Platform)
		case "metrics":
			out.Metrics = new(metricsBody)
			ok = s.metrics(out.Metrics)
		}
		return ok
	})
	if !ok {
		return false
	}
	s.skipSpace()
	return s.pos == len(data)
}

func (s *fastScanner) platform(p *platformBody) bool {
	return s.object(func(key string) bool {
		var field *string
		switch key {
		case "type":
			field = &p.Type
		case "container_id":
			field = &p.ContainerID
		case "image":
			field = &p.Image
		case "pod_name":
			field = &p.PodName
		case "namespace":
			field = &p.Namespace
		case "node":
			field = &p.Node
		case "function_name":
			field = &p.FunctionName
		case "region":
			field = &p.Region
		case "hostname":
			field = &p.Hostname
		case "os":
			field = &p.OS
		case "pid":
			var ok bool
			p.PID, ok = s.int64()
			return ok
		default:
			return false
		}
		var ok bool
		*field, ok = s.plainString()
		return ok
	})
}

func (s *fastScanner) metrics(m *metricsBody) bool {
	return s.object(func(key string) bool {
		var field *float64
		switch key {
		case "requests_handled":
			field = &m.RequestsHandled
		case "errors":
			field = &m.Errors
		case "avg_latency_ms":
			field = &m.AvgLatencyMs
		default:
			return false
		}
		var ok bool
		*field, ok = s.float()
		return ok
	})
}
