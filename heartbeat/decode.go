package heartbeat

import (
	"encoding/json"
	"strconv"
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
	if !s.consume('"') {
		return "", false
	}
	start := s.pos
	for s.pos < len(s.data) {
		c := s.data[s.pos]
		switch {
		case c == '"':
			str := string(s.data[start:s.pos])
			s.pos++
			return str, true
		case c < 0x20 || c >= 0x7f || c == '\\':
			return "", false
		}
		s.pos++
	}
	return "", false
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
// the value and reports success; each key may appear once (seen is a bit set
// indexed by member's own numbering).
func (s *fastScanner) object(member func(key string) bool) bool {
	if !s.consume('{') {
		return false
	}
	if s.consume('}') {
		return true
	}
	for {
		key, ok := s.plainString()
		if !ok || !s.consume(':') || !member(key) {
			return false
		}
		if s.consume(',') {
			continue
		}
		return s.consume('}')
	}
}

// once marks bit in seen and reports whether it was clear.
func once(seen *uint32, bit uint) bool {
	if *seen&(1<<bit) != 0 {
		return false
	}
	*seen |= 1 << bit
	return true
}

func fastDecodeBeat(data []byte, out *beatBody) bool {
	s := &fastScanner{data: data}
	var seen uint32
	ok := s.object(func(key string) bool {
		var ok bool
		switch key {
		case "status":
			if !once(&seen, 0) {
				return false
			}
			out.Status, ok = s.plainString()
		case "version":
			if !once(&seen, 1) {
				return false
			}
			out.Version, ok = s.plainString()
		case "uptime_seconds":
			if !once(&seen, 2) {
				return false
			}
			var v float64
			v, ok = s.float()
			out.UptimeSeconds = &v
		case "heartbeat_interval_seconds":
			if !once(&seen, 3) {
				return false
			}
			var v float64
			v, ok = s.float()
			out.HeartbeatIntervalSeconds = &v
		case "exit_code":
			if !once(&seen, 4) {
				return false
			}
			var v int64
			v, ok = s.int64()
			out.ExitCode = &v
		case "platform":
			if !once(&seen, 5) {
				return false
			}
			out.Platform = new(platformBody)
			ok = s.platform(out.Platform)
		case "metrics":
			if !once(&seen, 6) {
				return false
			}
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
	var seen uint32
	return s.object(func(key string) bool {
		var field *string
		var bit uint
		switch key {
		case "type":
			field, bit = &p.Type, 0
		case "container_id":
			field, bit = &p.ContainerID, 1
		case "image":
			field, bit = &p.Image, 2
		case "pod_name":
			field, bit = &p.PodName, 3
		case "namespace":
			field, bit = &p.Namespace, 4
		case "node":
			field, bit = &p.Node, 5
		case "function_name":
			field, bit = &p.FunctionName, 6
		case "region":
			field, bit = &p.Region, 7
		case "hostname":
			field, bit = &p.Hostname, 8
		case "os":
			field, bit = &p.OS, 9
		case "pid":
			if !once(&seen, 10) {
				return false
			}
			var ok bool
			p.PID, ok = s.int64()
			return ok
		default:
			return false
		}
		if !once(&seen, bit) {
			return false
		}
		var ok bool
		*field, ok = s.plainString()
		return ok
	})
}

func (s *fastScanner) metrics(m *metricsBody) bool {
	var seen uint32
	return s.object(func(key string) bool {
		var field *float64
		var bit uint
		switch key {
		case "requests_handled":
			field, bit = &m.RequestsHandled, 0
		case "errors":
			field, bit = &m.Errors, 1
		case "avg_latency_ms":
			field, bit = &m.AvgLatencyMs, 2
		default:
			return false
		}
		if !once(&seen, bit) {
			return false
		}
		var ok bool
		*field, ok = s.float()
		return ok
	})
}
