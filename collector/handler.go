package collector

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/agentsentinel/sentinel/auth"
	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/heartbeat"
	"github.com/agentsentinel/sentinel/jsonapi"
)

// contentType is the text exposition format, as expfmt.FmtText.
var contentType = string(expfmt.NewFormat(expfmt.TypeTextPlain))

// Handler serves /metrics: the families gathered from self (Go and process
// collectors, build info, the application's counters; self must not contain
// c) encoded by expfmt, then the agent families of c rendered as text in one
// pass over the store (consistent per shard, as Store.Snapshot).
//
// Why not promhttp over a registry holding c: at 100k agents (~1.1M samples,
// 139 MB of text) const metrics cost 6-8 s and ~900 MB of garbage per scrape
// on the 2-core box (BenchmarkCollectConst100k), this handler ~80 ms of CPU
// rendering everything and next to no garbage. Each agent is decoded once
// and its lines appended to recycled buffers, one per family and chunk of
// the store's shards (render); the buffers are written out family after
// family, which keeps each family contiguous as the format requires.
// Numbers and label values are formatted by hand (format.go): strconv's
// general float path and a test-then-copy of every label value were the
// largest costs left. A family's text in a chunk is kept from the scrape
// before when none of the agent values it shows changed there: with half
// the fleet beating between two scrapes, a scrape takes 0.52-0.57× the CPU
// of rendering everything (BenchmarkScrape100k).
//
// Compression: a scraper that accepts gzip (Prometheus and VictoriaMetrics
// always do) gets it, anyone else identity, as promhttp does. The page is
// deflated by klauspost/compress at its fastest level, each chunk's pieces
// by a pool of goroutines while the next chunk renders (gzipPage): at 100k
// agents the 139 MB page becomes 7-12 MB. A piece whose text has not changed
// since the last scrape is sent as compressed then. Deflating the whole
// page costs ~0.25 s of CPU per 100k agents, several times the rendering,
// the standard library at BestSpeed 3-4× more than klauspost
// (BenchmarkGzipPage100k). With half the fleet beating between scrapes,
// 54-56% of the pieces are reused, and a gzip scrape costs 148-160 ms of
// CPU in process against 310-326 ms rendering and compressing everything
// (BenchmarkScrape100kGzipVsIdentity); an identity scrape, 42-45 ms there,
// also pays over a socket for the 139 MB it writes.
//
// Only GET and HEAD are served (405 otherwise). Beyond Options.MaxScrapes
// scrapes in flight the answer is 503, counted in RejectedScrapes, unless
// one of them is stalled: see writerSet.
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
		if err := jsonapi.CheckMethod(r, http.MethodGet, http.MethodHead); err != nil {
			jsonapi.WriteError(w, logger, err)
			return
		}
		sw := &scrapeWriter{w: w, rc: http.NewResponseController(w)}
		if !c.acquire(sw) {
			c.rejected.Add(1)
			jsonapi.WriteError(w, logger, jsonapi.Unavailable(strconv.Itoa(cap(c.inflight))+" scrapes are already in flight, the limit; retry later", 0, nil))
			return
		}
		defer c.release(sw)
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

		h := w.Header()
		h.Set("Content-Type", contentType)
		h.Add("Vary", "Accept-Encoding")
		gz := acceptsGzip(r.Header.Values("Accept-Encoding"))
		if gz {
			h.Set("Content-Encoding", "gzip")
		}
		if !gz || r.Method == http.MethodHead {
			c.render(sc, nil)
			if !gz {
				h.Set("Content-Length", strconv.Itoa(sc.size()))
			}
			if r.Method == http.MethodHead {
				return
			}
			logWriteError(r, logger, sc.writeTo(sw))
			return
		}
		// Compressed: each chunk's pieces are compressed as soon as the
		// chunk is rendered, while the next one renders.
		page := &sc.gzip
		page.start(pageGzipper, 1+numFamilies*maxChunks)
		written := false
		defer func() {
			if !written {
				// render panicked: the workers must be done with sc
				// before it is recycled.
				_ = page.writeTo(io.Discard)
			}
		}()
		page.add(0, [][]byte{sc.self.Bytes()})
		var started [numFamilies]bool // whether the family's header is out
		c.render(sc, func(ch int) {
			for f := range numFamilies {
				var parts [][]byte
				if b := sc.chunks[ch][f]; len(b) > 0 {
					if !started[f] {
						parts, started[f] = append(parts, headers[f]), true
					}
					parts = append(parts, b)
				}
				page.add(1+f*maxChunks+ch, parts)
			}
		})
		// writeTo returns once no goroutine reads sc any more.
		written = true
		logWriteError(r, logger, page.writeTo(sw))
	})
}

// logWriteError logs the error of writing a page, if any.
func logWriteError(r *http.Request, logger *slog.Logger, err error) {
	if err != nil {
		// The scraper went away (timeout, restart) or stopped reading:
		// nothing to answer.
		level := slog.LevelWarn
		if errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
			level = slog.LevelDebug
		}
		logger.Log(r.Context(), level, "Error writing metrics", "err", err)
	}
}

// pageGzipper compresses every Handler's gzip answers; its pools are shared.
var pageGzipper = newGzipper(gzipLevel)

// Stalled readers. A scrape holds its slot of Options.MaxScrapes, and its
// rendered copy of the fleet, until its client has read the whole page. A
// client that sends GET and never reads would hold both until the write
// times out; four of them (two minutes each, reconnecting) kept every real
// scrape out with 503s, so Prometheus saw up 0 and the agent alerts went
// stale. Two rules keep that from happening:
//   - the page is written in chunks of writeChunk bytes, each with its own
//     write deadline of chunkTimeout: a client that takes none of a chunk for
//     that long loses its connection;
//   - when every slot is taken, a new scrape takes over the slot of the
//     scrape whose client has been stuck on one chunk the longest, if that
//     is longer than stallAfter: the stuck write is failed at once (its
//     deadline moved to now), its connection closed, its copy of the fleet
//     freed. A scraper reading at more than writeChunk/stallAfter (256 KiB/s)
//     never loses its slot, and a slow one only to a newcomer.
//
// So stalled clients cost at most MaxScrapes pages of memory and never keep
// a reading scraper out for more than stallAfter.
const (
	writeChunk   = 256 << 10
	chunkTimeout = 30 * time.Second
	stallAfter   = time.Second
)

// writerSet is the registry of the scrapes holding a slot, for the takeover
// above. Its zero value is ready to use.
type writerSet struct {
	mu      sync.Mutex
	active  map[*scrapeWriter]struct{}
	evicted atomic.Uint64
	// stallAfter is the package's stallAfter; tests shorten it.
	stallAfter time.Duration
}

// acquire takes a slot of Options.MaxScrapes for sw without waiting (a
// scraper that waited could only time out later, holding its connection
// meanwhile), or the slot of a stalled scrape.
func (c *Collector) acquire(sw *scrapeWriter) bool {
	if c.inflight == nil {
		return true
	}
	select {
	case c.inflight <- struct{}{}:
		c.writers.add(sw)
		return true
	default:
	}
	victim := c.writers.takeOver(sw, time.Now())
	if victim == nil {
		return false
	}
	// Outside the lock: the deadline reaches the victim's connection; net.Conn
	// deadlines may be set from any goroutine, and a deadline in the past
	// fails the pending Write at once.
	_ = victim.rc.SetWriteDeadline(time.Now())
	return true
}

// release returns sw's slot, unless a takeover already handed it on.
func (c *Collector) release(sw *scrapeWriter) {
	if c.inflight == nil {
		return
	}
	if c.writers.remove(sw) {
		<-c.inflight
	}
}

func (s *writerSet) add(sw *scrapeWriter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active == nil {
		s.active = make(map[*scrapeWriter]struct{})
	}
	s.active[sw] = struct{}{}
}

// remove reports whether sw still held its slot.
func (s *writerSet) remove(sw *scrapeWriter) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.active[sw]
	delete(s.active, sw)
	return ok
}

// takeOver moves the slot of the longest-stalled scrape to sw and returns
// that scrape, marked evicted, or returns nil when no scrape has been stuck
// on one chunk for stallAfter. Only scrapes whose connection takes write
// deadlines qualify: any other could not be stopped, and taking its slot
// would let its memory add up.
func (s *writerSet) takeOver(sw *scrapeWriter, now time.Time) *scrapeWriter {
	limit := s.stallAfter
	if limit == 0 {
		limit = stallAfter
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var victim *scrapeWriter
	oldest := now.Add(-limit).UnixNano()
	for w := range s.active {
		if since := w.blockedSince.Load(); since != 0 && since <= oldest && w.deadlines.Load() {
			victim, oldest = w, since
		}
	}
	if victim == nil {
		return nil
	}
	victim.evicted.Store(true)
	delete(s.active, victim)
	s.active[sw] = struct{}{}
	s.evicted.Add(1)
	return victim
}

// scrapeWriter writes one scrape's page in chunks with a write deadline
// each, recording when the current chunk started so that a stalled client
// can be told from a reading one. Write runs on the handler's goroutine
// only; blockedSince, deadlines and evicted are read and set by others.
type scrapeWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
	// blockedSince is the UnixNano at which the pending chunk write began, 0
	// while no write is pending.
	blockedSince atomic.Int64
	// deadlines is whether the connection took the last write deadline.
	deadlines atomic.Bool
	evicted   atomic.Bool
}

// errEvicted is the write error of a scrape whose stalled client lost its
// slot to another scrape.
var errEvicted = errors.New("the client stopped reading and its slot went to another scrape")

func (sw *scrapeWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), writeChunk)]
		now := time.Now()
		sw.deadlines.Store(sw.rc.SetWriteDeadline(now.Add(chunkTimeout)) == nil)
		// Checked after the deadline is set: a takeover marks the victim and
		// then moves its deadline to now, so either this sees the mark or
		// the takeover's deadline overrides the one just set.
		if sw.evicted.Load() {
			return written, errEvicted
		}
		sw.blockedSince.Store(now.UnixNano())
		n, err := sw.w.Write(chunk)
		sw.blockedSince.Store(0)
		written += n
		if err != nil {
			if sw.evicted.Load() {
				return written, fmt.Errorf("%w: %w", errEvicted, err)
			}
			return written, err
		}
		p = p[len(chunk):]
	}
	return written, nil
}

// RejectedScrapes counts the Handler scrapes answered 503 because
// Options.MaxScrapes were in flight.
func (c *Collector) RejectedScrapes() uint64 { return c.rejected.Load() }

// EvictedScrapes counts the Handler scrapes cut off because their client had
// stopped reading and another scrape needed the slot.
func (c *Collector) EvictedScrapes() uint64 { return c.writers.evicted.Load() }

// scrape is the recycled state of one Handler scrape.
type scrape struct {
	self bytes.Buffer
	// chunks[c][f] holds the sample lines of families[f], without HELP and
	// TYPE, of the c-th of the equal runs of agents the view is cut into
	// (chunksFor): the page is family f of every chunk in order, then f+1.
	// A gzip scrape compresses the pieces of a chunk while the next one
	// renders.
	chunks [][numFamilies][]byte
	// stamps[c][f] is what chunks[c][f] was rendered from (stampOf the
	// counts of chunk c's shards), valid while bit f of current[c] is set;
	// policy is the threshold policy the deadlines were computed under.
	stamps  [][numFamilies]uint64
	current []uint16
	policy  *fleet.ThresholdPolicy
	kept    int // texts of a family in a chunk the last render kept
	copies  heartbeat.RunCopies
	labels  []byte   // the {agent_id,tenant} label set of the current agent
	pieces  [][]byte // parts' result, recycled
	fleet   fleetCounts
	gzip    gzipPage // the compressed page and its buffers, recycled
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

// Chunks. More of them let a gzip scrape start compressing earlier and
// leave less to compress after the last agent is rendered; each costs a
// deflate restart (no shared window, a block header) per family, and a
// hand-over to a compressing goroutine. A chunk is a fixed run of the
// store's shards, so that the store's change counts tell whether its text
// is still current (render).
var (
	chunkAgents = 4096 // agents per chunk at least; tests lower it
	maxChunks   = 16
)

// chunksFor is into how many chunks a view of n agents is cut: a power of
// two, so that every chunk has as many shards.
func chunksFor(n int) int {
	c := max(1, min(n/chunkAgents, maxChunks, heartbeat.NumShards))
	return 1 << (bits.Len(uint(c)) - 1)
}

// familyChanges are the kinds of store change each family's text depends
// on, as a bit set indexed by heartbeat.Change; every family also depends
// on agents coming and going. sentinel_agents depends on the clock and is
// rendered at every scrape.
var familyChanges = func() (deps [numFamilies]uint32) {
	bit := func(cs ...heartbeat.Change) uint32 {
		b := uint32(1) << heartbeat.ChangeMembers
		for _, c := range cs {
			b |= 1 << c
		}
		return b
	}
	deps[famLastHeartbeat] = bit(heartbeat.ChangeLastBeat)
	deps[famInterval] = bit(heartbeat.ChangeInterval)
	deps[famLeaseExpiry] = bit(heartbeat.ChangeLastBeat, heartbeat.ChangeInterval, heartbeat.ChangeThresholds)
	deps[famZombieDeadline] = deps[famLeaseExpiry]
	deps[famStopped] = bit(heartbeat.ChangeStopped)
	deps[famRevoked] = bit(heartbeat.ChangeRevoked)
	deps[famPaused] = bit(heartbeat.ChangePaused)
	deps[famUptime] = bit(heartbeat.ChangeUptime)
	deps[famRequests] = bit(heartbeat.ChangeRequests)
	deps[famErrors] = bit(heartbeat.ChangeErrors)
	deps[famLatency] = bit(heartbeat.ChangeLatency)
	deps[famInfo] = bit(heartbeat.ChangeInfo)
	return deps
}()

// reusable are the families whose text render may keep from one scrape to
// the next.
const reusable = uint16(1<<famAgents - 1)

// resize returns s with length n, keeping its elements and the ones between
// its length and capacity (recycled buffers).
func resize[T any](s []T, n int) []T {
	if cap(s) < n {
		s = append(s[:cap(s)], make([]T, n-cap(s))...)
	}
	return s[:n]
}

// stampOf sums the counts of the kinds of change family f depends on. The
// counts only grow, so an equal sum means that none of them changed.
func stampOf(counts *heartbeat.ChangeCounts, f int) uint64 {
	var sum uint64
	for set := familyChanges[f]; set != 0; set &= set - 1 {
		sum += counts[bits.TrailingZeros32(set)]
	}
	return sum
}

// render renders every agent family of the store into sc.chunks. It calls
// ready(c), when not nil, as soon as chunk c is complete, in order, once for
// every chunk (also for chunks without agents); the chunk's buffers do not
// change afterwards, until the next render.
//
// The text of a family in a chunk is kept from sc's last render when none
// of the changes it depends on happened in the chunk's shards since: most
// families change far less often than a scraper asks (the interval, the
// kill-switch flags, the info labels, usually the errors and latency), and
// the info family alone is a third of the page. Each agent is still read,
// for the sentinel_agents counts and the families that did change.
func (c *Collector) render(sc *scrape, ready func(chunk int)) {
	now, policy := c.opts.Now(), c.opts.Thresholds()
	sc.fleet.reset(c.opts.Tenants())
	n := c.store.Len() // a hint: agents may come and go while rendering
	nc := chunksFor(n)
	if nc != len(sc.chunks) || policy != sc.policy || c.fresh {
		// The chunks cover other shards, or the deadlines other thresholds.
		clear(sc.current)
	}
	sc.policy, sc.kept = policy, 0
	sc.chunks, sc.stamps, sc.current = resize(sc.chunks, nc), resize(sc.stamps, nc), resize(sc.current, nc)
	var hints [numFamilies]int
	for i := range numFamilies {
		hint := int(c.sizeHint[i].Load())
		if hint == 0 {
			// First scrape: a rough line size per agent spares the
			// doubling growth of ~100 MB of buffers.
			hint = n * (len(families[i].name) + 64)
			if i == famInfo {
				hint = n * 512
			}
		}
		hints[i] = hint / nc
	}
	var (
		vals   [numValueFamilies]float64
		labels [numInfoLabels]string
		counts heartbeat.ChangeCounts // of the copies of the current chunk's shards
		reuse  uint16                 // the current chunk's families kept as they are
		fams   *[numFamilies][]byte
	)
	chunk := -1
	// begin starts chunk ch, whose shards were copied with the change
	// counts changes: it keeps the families whose text is current and
	// empties the buffers of the others. Deciding from the copies' counts
	// keeps every family of an agent at the state of the same copy, as a
	// render of everything does.
	begin := func(ch int, changes *heartbeat.ChangeCounts) {
		chunk, fams, counts = ch, &sc.chunks[ch], *changes
		reuse = 0
		for f := range numFamilies {
			keep := reusable&^c.off&sc.current[ch]&(1<<f) != 0 && sc.stamps[ch][f] == stampOf(&counts, f)
			if keep {
				reuse |= 1 << f
				continue
			}
			buf := &fams[f]
			hint := hints[f]
			if c.off&(1<<f) != 0 || (f == famAgents && ch != nc-1) {
				hint = 0 // switched off, or sentinel_agents outside the last chunk
			}
			if cap(*buf) < hint {
				*buf = make([]byte, 0, hint+hint/8) // room for growth
			}
			*buf = (*buf)[:0]
		}
		sc.current[ch] = reuse
		sc.kept += bits.OnesCount16(reuse)
	}
	// end records what the re-rendered families of the chunk were rendered
	// from.
	end := func() {
		for f := range numFamilies {
			if reusable&^reuse&(1<<f) != 0 {
				sc.stamps[chunk][f] = stampOf(&counts, f)
				sc.current[chunk] |= 1 << f
			}
		}
		if ready != nil && chunk != nc-1 {
			ready(chunk)
		}
	}
	// Store.EachRun copies one chunk's shards at a time (all of them below
	// 2*chunkAgents agents, a sixteenth of the store from 16*chunkAgents),
	// each under its lock only while it is copied, as Snapshot does, into
	// memory sc keeps for the next chunk and the next scrape.
	c.store.EachRun(heartbeat.NumShards/nc, &sc.copies, func(ch int, changes *heartbeat.ChangeCounts) {
		if chunk >= 0 {
			end()
		}
		begin(ch, changes)
	}, func(a *heartbeat.Agent) bool {
		mask := c.observe(a, now, policy, &sc.fleet, &vals) &^ reuse
		info := (c.off|reuse)&(1<<famInfo) == 0
		if mask == 0 && !info {
			return true
		}

		lb := append(sc.labels[:0], `{agent_id="`...)
		lb = appendLabelValue(lb, a.AgentID)
		lb = append(lb, `",tenant="`...)
		lb = appendLabelValue(lb, a.Tenant)
		lb = append(lb, `"} `...)
		sc.labels = lb

		for f := range numValueFamilies {
			if mask&(1<<f) == 0 {
				continue
			}
			b := append(fams[f], families[f].name...)
			b = append(b, lb...)
			b = appendFloat(b, vals[f])
			fams[f] = append(b, '\n')
		}

		if !info {
			return true
		}
		infoLabelValues(a, &labels)
		b := fams[famInfo]
		for i, l := range labels {
			b = append(b, infoJoints[i]...)
			b = appendLabelValue(b, l)
		}
		fams[famInfo] = append(b, "\"} 1\n"...)
		return true
	})
	end()

	last := &sc.chunks[nc-1]
	b := last[famAgents]
	sc.fleet.each(func(tenant string, s fleet.State, n int) {
		b = append(b, families[famAgents].name...)
		b = append(b, `{state="`...)
		b = append(b, s.String()...)
		b = append(b, `",tenant="`...)
		b = appendLabelValue(b, tenant)
		b = append(b, `"} `...)
		b = strconv.AppendInt(b, int64(n), 10)
		b = append(b, '\n')
	})
	last[famAgents] = b
	if ready != nil {
		ready(nc - 1)
	}
	for i := range numFamilies {
		total := 0
		for ch := range sc.chunks {
			total += len(sc.chunks[ch][i])
		}
		c.sizeHint[i].Store(int64(total))
	}
}

// infoJoints[i] is the text of a sentinel_agent_info line before the value
// of infoLabels[i]: one append per label instead of five.
var infoJoints = func() (j [numInfoLabels]string) {
	for i, l := range infoLabels {
		if i == 0 {
			j[i] = families[famInfo].name + "{" + l + `="`
		} else {
			j[i] = `",` + l + `="`
		}
	}
	return j
}()

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
	n := 0
	for _, p := range sc.parts() {
		n += len(p)
	}
	return n
}

// parts are the pieces of the page in order: the self families, then every
// non-empty agent family with its HELP and TYPE lines. Families without
// samples are left out, as client_golang does. The slices alias sc.
func (sc *scrape) parts() [][]byte {
	p := append(sc.pieces[:0], sc.self.Bytes())
	for f := range numFamilies {
		header := true
		for ch := range sc.chunks {
			if b := sc.chunks[ch][f]; len(b) > 0 {
				if header {
					p, header = append(p, headers[f]), false
				}
				p = append(p, b)
			}
		}
	}
	sc.pieces = p
	return p
}

// writeTo writes the page uncompressed.
func (sc *scrape) writeTo(w io.Writer) error {
	for _, p := range sc.parts() {
		if _, err := w.Write(p); err != nil {
			return err
		}
	}
	return nil
}

// RequireBearer guards next with the scrape credential of the configuration
// (metrics.bearer_token), read from token at every request so that a reload
// applies at once: an empty token leaves next open; otherwise a request
// without `Authorization: Bearer <token>` is answered 401 with a
// WWW-Authenticate challenge before it takes a scrape slot. The comparison
// is of SHA-256 sums in constant time, so it tells nothing about how much of
// a guess was right, not even the token's length.
func RequireBearer(token func() string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		want := token()
		if want == "" {
			next.ServeHTTP(w, r)
			return
		}
		got, ok := auth.BearerToken(r)
		gotSum, wantSum := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
		if !ok || subtle.ConstantTimeCompare(gotSum[:], wantSum[:]) != 1 {
			jsonapi.WriteError(w, nil, jsonapi.Unauthorized("the metrics need the scrape bearer token (metrics.bearer_token of the configuration)"))
			return
		}
		next.ServeHTTP(w, r)
	})
}
