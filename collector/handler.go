package collector

import (
	"bytes"
	"encoding/binary"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"syscall"
	"unicode/utf8"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/heartbeat"
	"github.com/agentsentinel/sentinel/jsonapi"
)

// contentType is the text exposition format, as expfmt.FmtText.
var contentType = string(expfmt.NewFormat(expfmt.TypeTextPlain))

// Handler serves /metrics: the families gathered from self (Go and process
// collectors, build info, the application's counters; self must not contain
// c) encoded by expfmt, then the agent families of c rendered as text from
// one store snapshot.
//
// Why not promhttp over a registry holding c: at 100k agents (~1M samples,
// 120 MB of text) const metrics cost 6-8 s and ~900 MB of garbage per scrape
// on the 2-core box (BenchmarkCollectConst100k), this handler ~0.1 s and next
// to no garbage (BenchmarkScrape100k).
// Here the snapshot, decoded once, is rendered in a single pass into one
// recycled buffer per family with strconv.Append*, and the buffers are
// written out family after family, which keeps each family contiguous as the
// format requires.
//
// Compression: the response is never gzipped, whatever Accept-Encoding says
// (identity is always acceptable in HTTP). Measured on the 2-core box with
// 100k agents (BenchmarkScrape100k vs. BenchmarkScrape100kGzip): the scrape
// takes ~0.1 s uncompressed and ~0.4 s with gzip even at BestSpeed (120 MB
// deflated to 9.5 MB), because deflating costs far more CPU than sending the
// bytes over the loopback or a LAN. Prometheus accepts identity as is.
//
// Only GET and HEAD are served (405 otherwise). Beyond Options.MaxScrapes
// scrapes in flight the answer is 503, counted in RejectedScrapes.
//
// Gather errors of self are logged and the scrape goes on with what was
// gathered (promhttp's ContinueOnError): the agent series are what the
// alerts depend on, they must not vanish because a self collector failed.
func (c *Collector) Handler(self prometheus.Gatherer, logger *slog.Logger) http.Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	own := make(map[string]bool, numFamilies)
	for _, f := range families {
		own[f.name] = true
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !jsonapi.AllowMethods(w, r, http.MethodGet, http.MethodHead) {
			return
		}
		if !c.acquire() {
			c.rejected.Add(1)
			jsonapi.Errorf(w, http.StatusServiceUnavailable, "%d scrapes are already in flight, the limit; retry later", cap(c.inflight))
			return
		}
		defer c.release()
		sc := c.getScrape()
		defer c.putScrape(sc)

		sc.self.Reset()
		if self != nil {
			mfs, err := self.Gather()
			if err != nil {
				logger.Error("Error gathering self metrics; serving what was gathered", "err", err)
			}
			enc := expfmt.NewEncoder(&sc.self, expfmt.NewFormat(expfmt.TypeTextPlain))
			for _, mf := range mfs {
				if own[mf.GetName()] {
					logger.Error("Self metrics family collides with an agent family; dropped", "family", mf.GetName())
					continue
				}
				if err := enc.Encode(mf); err != nil {
					logger.Error("Error encoding self metrics family", "family", mf.GetName(), "err", err)
				}
			}
		}

		c.render(sc)

		h := w.Header()
		h.Set("Content-Type", contentType)
		h.Set("Content-Length", strconv.Itoa(sc.size()))
		if r.Method == http.MethodHead {
			return
		}
		if err := sc.writeTo(w); err != nil {
			// The scraper went away (timeout, restart): nothing to answer.
			level := slog.LevelWarn
			if errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
				level = slog.LevelDebug
			}
			logger.Log(r.Context(), level, "Error writing metrics", "err", err)
		}
	})
}

// acquire takes a slot of Options.MaxScrapes without waiting: a scraper
// that waited could only time out later, holding its connection meanwhile.
func (c *Collector) acquire() bool {
	if c.inflight == nil {
		return true
	}
	select {
	case c.inflight <- struct{}{}:
		return true
	default:
		return false
	}
}

func (c *Collector) release() {
	if c.inflight != nil {
		<-c.inflight
	}
}

// RejectedScrapes counts the Handler scrapes answered 503 because
// Options.MaxScrapes were in flight.
func (c *Collector) RejectedScrapes() uint64 { return c.rejected.Load() }

// scrape is the recycled state of one Handler scrape.
type scrape struct {
	view *heartbeat.View
	self bytes.Buffer
	// fams[i] holds the sample lines of families[i], without HELP and TYPE.
	fams   [numFamilies][]byte
	labels []byte // the {agent_id,tenant} label set of the current agent
	fleet  fleetCounts
}

func (c *Collector) getScrape() *scrape {
	c.mu.Lock()
	sc := c.idle
	c.idle = nil
	c.mu.Unlock()
	if sc != nil {
		return sc
	}
	if sc, ok := c.scrapes.Get().(*scrape); ok {
		return sc
	}
	return &scrape{}
}

func (c *Collector) putScrape(sc *scrape) {
	c.mu.Lock()
	if c.idle == nil {
		c.idle, sc = sc, nil
	}
	c.mu.Unlock()
	if sc != nil {
		c.scrapes.Put(sc)
	}
}

// render snapshots the store into sc.view and renders every agent family.
func (c *Collector) render(sc *scrape) {
	sc.view = c.store.Snapshot(sc.view)
	now, th := c.opts.Now(), c.opts.Thresholds()
	sc.fleet.reset(c.opts.Tenants())
	n := sc.view.Len()
	for i := range sc.fams {
		if c.off&(1<<i) != 0 {
			sc.fams[i] = sc.fams[i][:0] // switched off: no buffer
			continue
		}
		hint := int(c.sizeHint[i].Load())
		if hint == 0 {
			// First scrape: a rough line size per agent spares the doubling
			// growth of ~100 MB of buffers.
			hint = n * (len(families[i].name) + 64)
			if i == famInfo {
				hint = n * 512
			}
		}
		if cap(sc.fams[i]) < hint {
			sc.fams[i] = make([]byte, 0, hint+hint/8) // room for growth
		}
		sc.fams[i] = sc.fams[i][:0]
	}
	var (
		vals   [numValueFamilies]float64
		labels [numInfoLabels]string
	)
	sc.view.Each(func(a *heartbeat.Agent) bool {
		sc.fleet.add(a.Tenant, a.State(now, th))

		lb := append(sc.labels[:0], `{agent_id="`...)
		lb = appendLabelValue(lb, a.AgentID)
		lb = append(lb, `",tenant="`...)
		lb = appendLabelValue(lb, a.Tenant)
		lb = append(lb, `"} `...)
		sc.labels = lb

		mask := agentValues(a, th.SilentAfter, &vals) &^ c.off
		for f := range numValueFamilies {
			if mask&(1<<f) == 0 {
				continue
			}
			b := append(sc.fams[f], families[f].name...)
			b = append(b, lb...)
			b = appendFloat(b, vals[f])
			sc.fams[f] = append(b, '\n')
		}

		if c.off&(1<<famInfo) != 0 {
			return true
		}
		infoLabelValues(a, &labels)
		b := append(sc.fams[famInfo], families[famInfo].name...)
		for i, l := range labels {
			if i == 0 {
				b = append(b, '{')
			} else {
				b = append(b, ',')
			}
			b = append(b, infoLabels[i]...)
			b = append(b, `="`...)
			b = appendLabelValue(b, l)
			b = append(b, '"')
		}
		sc.fams[famInfo] = append(b, "} 1\n"...)
		return true
	})

	b := sc.fams[famAgents]
	for _, t := range sc.fleet.tenants() {
		counts := sc.fleet.counts[t]
		for i, s := range fleet.States {
			b = append(b, families[famAgents].name...)
			b = append(b, `{state="`...)
			b = append(b, s.String()...)
			b = append(b, `",tenant="`...)
			b = appendLabelValue(b, t)
			b = append(b, `"} `...)
			b = strconv.AppendInt(b, int64(counts[i]), 10)
			b = append(b, '\n')
		}
	}
	sc.fams[famAgents] = b
	for i := range sc.fams {
		c.sizeHint[i].Store(int64(len(sc.fams[i])))
	}
}

// headers are the HELP and TYPE lines of each family, as expfmt writes them.
var headers = func() (h [numFamilies][]byte) {
	for i, f := range families {
		typ := "gauge"
		if f.typ == prometheus.CounterValue {
			typ = "counter"
		}
		h[i] = []byte("# HELP " + f.name + " " + f.help + "\n# TYPE " + f.name + " " + typ + "\n")
	}
	return h
}()

// size is the number of bytes writeTo writes.
func (sc *scrape) size() int {
	n := sc.self.Len()
	for i, b := range sc.fams {
		if len(b) > 0 {
			n += len(headers[i]) + len(b)
		}
	}
	return n
}

// writeTo writes the self families, then every non-empty agent family.
// Families without samples are left out, as client_golang does.
func (sc *scrape) writeTo(w http.ResponseWriter) error {
	if _, err := w.Write(sc.self.Bytes()); err != nil {
		return err
	}
	for i, b := range sc.fams {
		if len(b) == 0 {
			continue
		}
		if _, err := w.Write(headers[i]); err != nil {
			return err
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// appendFloat formats f as expfmt's text encoder does: strconv's shortest
// 'g' form, which already spells +Inf, -Inf and NaN as the format wants,
// except that expfmt writes -0 as "0".
func appendFloat(b []byte, f float64) []byte {
	// Small integers (intervals, flags, counts) are the common case; 'g'
	// writes them as plain digits below 1e6 (%e from exponent 6 on).
	if f > -1e6 && f < 1e6 && f == float64(int64(f)) {
		return strconv.AppendInt(b, int64(f), 10)
	}
	return strconv.AppendFloat(b, f, 'g', -1, 64)
}

// appendLabelValue appends s escaped as a text-format label value (\\, \"
// and \n), with invalid UTF-8 replaced as labelValue does. Plain ASCII, which
// every agent id and nearly every reported string is, is copied as is.
func appendLabelValue(b []byte, s string) []byte {
	if i := firstSpecial(s); i >= 0 {
		// s[:i] is plain ASCII, so s is valid UTF-8 exactly when s[i:] is.
		return appendEscaped(append(b, s[:i]...), labelValue(s[i:]))
	}
	return append(b, s...)
}

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// firstSpecial returns the index of the first byte of s that is not ASCII or
// needs escaping, or -1. It tests eight bytes at a time: label values are
// ~1/3 of the exposition, and a byte loop over them showed in profiles.
func firstSpecial(s string) int {
	i := 0
	if len(s) >= 8 {
		p := unsafe.Slice(unsafe.StringData(s), len(s))
		for ; i+8 <= len(s); i += 8 {
			x := binary.LittleEndian.Uint64(p[i:])
			if x&msb|hasByte(x, '\\')|hasByte(x, '"')|hasByte(x, '\n') != 0 {
				break // the byte loop below finds which one
			}
		}
	}
	for ; i < len(s); i++ {
		if c := s[i]; c >= utf8.RuneSelf || c == '\\' || c == '"' || c == '\n' {
			return i
		}
	}
	return -1
}

// hasByte is non-zero when a byte of the ASCII word x equals c (the
// classic zero-byte test on x^c; exact for words without bytes >= 0x80,
// and words with one are caught by the msb test anyway).
func hasByte(x uint64, c byte) uint64 {
	v := x ^ (lsb * uint64(c))
	return (v - lsb) & ^v & msb
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
