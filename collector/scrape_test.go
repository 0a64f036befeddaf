package collector

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/flate"
	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/heartbeat"
)

// gunzipOne decompresses b, which must be exactly one gzip member.
func gunzipOne(t *testing.T, b []byte) []byte {
	t.Helper()
	r := bytes.NewReader(b) // a ByteReader: gzip reads no further than the member
	zr, err := gzip.NewReader(r)
	require.NoError(t, err)
	zr.Multistream(false)
	out, err := io.ReadAll(zr)
	require.NoError(t, err, "the checksum and length in the trailer must match")
	require.NoError(t, zr.Close())
	require.Zero(t, r.Len(), "bytes after the gzip member")
	return out
}

// gzipCandidates are the deflate levels weighed for /metrics
// (BenchmarkScrape100kGzipCandidates); the one in use is gzipLevel.
var gzipCandidates = []struct {
	name  string
	level int
}{
	{"klauspost-1", 1},
	{"klauspost-2", 2},
	{"klauspost-3", 3},
	{"huffman-only", flate.HuffmanOnly},
}

// TestGzipPage: the page compressed in parallel blocks is one gzip member
// whose content is the concatenated parts, for block sizes that cut parts
// anywhere and for an empty page, at every candidate level.
func TestGzipPage(t *testing.T) {
	big := bytes.Repeat([]byte("sentinel_agent_info{agent_id=\"a-1\",tenant=\"acme\"} 1\n"), 5000)
	for _, tc := range []struct {
		name     string
		segments int
		minSize  int
		parts    [][]byte
	}{
		{"empty", 4, 1, nil},
		{"empty parts", 4, 1, [][]byte{{}, nil, {}}},
		{"one byte", 4, 1, [][]byte{[]byte("x")}},
		{"one segment", 1, 1, [][]byte{[]byte("# HELP a b\n"), big}},
		{"below the minimum", 4, 1 << 20, [][]byte{[]byte("# HELP a b\n"), big}},
		{"tiny segments", 7, 1, [][]byte{[]byte("# HELP a b\n"), big[:10], []byte("z"), big[:3]}},
		{"segment boundaries on parts", 3, 1, [][]byte{[]byte("0123456789"), []byte("abcdefghij"), []byte("klmnopqrst")}},
		{"four segments", 4, 4096, [][]byte{big, big[:17], big}},
	} {
		for _, level := range gzipCandidates {
			t.Run(fmt.Sprintf("%s/%s", tc.name, level.name), func(t *testing.T) {
				defer func(n, size int) { gzipWorkers, gzipMinSegment = n, size }(gzipWorkers, gzipMinSegment)
				gzipWorkers, gzipMinSegment = tc.segments, tc.minSize
				var out bytes.Buffer
				require.NoError(t, newGzipper(level.level).writePage(&out, tc.parts))
				require.Equal(t, bytes.Join(tc.parts, nil), gunzipOne(t, out.Bytes()))
			})
		}
	}
}

// failAfter accepts n bytes, then fails every write.
type failAfter struct{ n int }

func (f *failAfter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		k := f.n
		f.n = 0
		return k, errors.New("connection reset by peer")
	}
	f.n -= len(p)
	return len(p), nil
}

// TestGzipPageWriteError: a client that goes away mid-page stops the
// compression and returns the error, at every point of the page.
func TestGzipPageWriteError(t *testing.T) {
	defer func(n, size int) { gzipWorkers, gzipMinSegment = n, size }(gzipWorkers, gzipMinSegment)
	gzipWorkers, gzipMinSegment = 3, 1
	// Incompressible, so that the output is as long as the input.
	page := make([]byte, 20_000)
	x := uint32(1)
	for i := range page {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		page[i] = byte(x)
	}
	for _, n := range []int{0, 5, 10, 100, 1000, 5000, 19_000} {
		err := pageGzipper.writePage(&failAfter{n: n}, [][]byte{page})
		require.ErrorContains(t, err, "connection reset", "failing after %d bytes", n)
	}
}

// TestGzipPageReusesUnchangedSegments: a recycled page sends the earlier
// compression of a segment whose text is unchanged, and compresses anew any
// segment that changed (even by one byte, at the same length), moved, or was
// left unfinished by a client that went away; the answer is always the text.
func TestGzipPageReusesUnchangedSegments(t *testing.T) {
	z := newGzipper(gzipLevel)
	var p gzipPage
	// page compresses segs ("-" is a segment left out) and returns the text
	// read back and how many segments were reused.
	page := func(w io.Writer, segs ...string) (string, uint64, error) {
		before := z.reused.Load()
		p.start(z, len(segs))
		for i, s := range segs {
			if s != "-" {
				p.add(i, [][]byte{[]byte(s[:len(s)/2]), []byte(s[len(s)/2:])})
			}
		}
		var out bytes.Buffer
		if w == nil {
			w = &out
		}
		err := p.writeTo(w)
		if err != nil || w != &out {
			return "", z.reused.Load() - before, err
		}
		return string(gunzipOne(t, out.Bytes())), z.reused.Load() - before, nil
	}
	big := strings.Repeat("sentinel_agent_paused{agent_id=\"a-1\",tenant=\"acme\"} 0\n", 2000)
	for _, step := range []struct {
		name   string
		segs   []string
		reused uint64
	}{
		{"first page", []string{"alpha\n", "beta\n", big}, 0},
		{"unchanged", []string{"alpha\n", "beta\n", big}, 3},
		{"one byte changed, same length", []string{"alpha\n", "bEta\n", big}, 2},
		{"a segment left out", []string{"alpha\n", "-", big}, 2},
		{"left out, then back", []string{"alpha\n", "bEta\n", big}, 3},
		{"texts moved to other segments", []string{big, "alpha\n", "bEta\n"}, 0},
		{"more segments", []string{big, "alpha\n", "bEta\n", "delta\n"}, 3},
		{"fewer segments", []string{big}, 1},
		{"emptied", []string{""}, 0},
		{"empty again", []string{""}, 1},
	} {
		text, reused, err := page(nil, step.segs...)
		require.NoError(t, err, step.name)
		want := ""
		for _, seg := range step.segs {
			if seg != "-" {
				want += seg
			}
		}
		require.Equal(t, want, text, step.name)
		require.Equal(t, step.reused, reused, step.name)
	}

	// A client gone at the first byte: the segments not compressed by then
	// are not taken for compressed next time.
	for range 3 {
		segs := []string{big, big + "x", "y" + big, big + big}
		_, _, err := page(&failAfter{n: 0}, segs...)
		require.ErrorContains(t, err, "connection reset")
		text, _, err := page(nil, segs...)
		require.NoError(t, err)
		require.Equal(t, strings.Join(segs, ""), text)
	}

	// Another compressor (another level) never takes this one's output.
	other := newGzipper(gzipLevel)
	p.start(other, 1)
	p.add(0, [][]byte{[]byte(big)})
	var out bytes.Buffer
	require.NoError(t, p.writeTo(&out))
	require.Equal(t, big, string(gunzipOne(t, out.Bytes())))
	require.Zero(t, other.reused.Load())
}

// TestHandlerGzipAfterChanges: scraped again after agents changed, the gzip
// answer is the identity answer of the moment, and the segments of what did
// not change were not compressed again.
func TestHandlerGzipAfterChanges(t *testing.T) {
	defer func(n, per int) { gzipWorkers, chunkAgents = n, per }(gzipWorkers, chunkAgents)
	gzipWorkers, chunkAgents = 3, 50 // six chunks of 300 agents
	s := heartbeat.NewStore(1000, nil)
	fillFleet(t, s, 300)
	clock := &fakeClock{t: epoch}
	h := newTestCollector(s, clock, fleetTenants...).Handler(selfCounters(t), nil)
	gzipScrape := func() string {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		req.Header.Set("Accept-Encoding", "gzip")
		h.ServeHTTP(rec, req)
		require.Equal(t, http.StatusOK, rec.Code)
		return string(gunzipOne(t, rec.Body.Bytes()))
	}
	segments := uint64(1 + numFamilies*chunksFor(s.Len()))
	for round := range 4 {
		before := pageGzipper.reused.Load()
		text := gzipScrape()
		reused := pageGzipper.reused.Load() - before
		_, identity := scrapeHandler(t, h)
		require.Equal(t, identity, text, "round %d", round)
		if round > 0 {
			// The agent's last beat, lease and zombie deadline changed in
			// one chunk; the rest was reused.
			require.Equal(t, segments-3, reused, "round %d", round)
		}
		// Agent 7 beats again, a second later each round.
		req := k8sBeat("globex", 7, epoch.Add(time.Duration(round+1)*time.Second))
		_, err := s.Beat(req, thresholds)
		require.NoError(t, err)
	}
}

// TestHandlerGzip: the gzip answer is the identity answer, compressed.
func TestHandlerGzip(t *testing.T) {
	defer func(n, per int) { gzipWorkers, chunkAgents = n, per }(gzipWorkers, chunkAgents)
	gzipWorkers, chunkAgents = 3, 2 // several chunks even for this small fleet
	clock := &fakeClock{t: epoch}
	h := newTestCollector(variedFleet(t), clock, "acme").Handler(selfCounters(t), nil)
	_, identity := scrapeHandler(t, h)

	for _, accept := range []string{"gzip", "deflate, gzip;q=0.5", "x-gzip", "*", "br;q=1, gzip"} {
		t.Run(accept, func(t *testing.T) {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
			req.Header.Set("Accept-Encoding", accept)
			h.ServeHTTP(rec, req)
			require.Equal(t, http.StatusOK, rec.Code)
			require.Equal(t, "gzip", rec.Header().Get("Content-Encoding"))
			require.Less(t, rec.Body.Len(), len(identity)/4)
			require.Equal(t, identity, string(gunzipOne(t, rec.Body.Bytes())))
		})
	}
}

func TestAcceptsGzip(t *testing.T) {
	for _, tc := range []struct {
		header []string
		want   bool
	}{
		{nil, false},
		{[]string{""}, false},
		{[]string{"gzip"}, true},
		{[]string{"GZIP"}, true},
		{[]string{"x-gzip"}, true},
		{[]string{"gzip, deflate, br"}, true},
		{[]string{"deflate", "gzip"}, true}, // several header lines
		{[]string{"identity"}, false},
		{[]string{"deflate, br"}, false},
		{[]string{"gzip;q=0"}, false},
		{[]string{"gzip; q=0.000"}, false},
		{[]string{"gzip;q=0.001"}, true},
		{[]string{"gzip;Q=1"}, true},
		{[]string{"gzip;q=bogus"}, false},
		{[]string{"gzip;q=2"}, false},
		{[]string{"gzip;q=-1"}, false},
		{[]string{"*"}, true},
		{[]string{"*;q=0"}, false},
		{[]string{"*, gzip;q=0"}, false}, // gzip named: its own weight wins
		{[]string{"gzip;q=0, *"}, false},
		{[]string{"identity;q=0"}, false}, // identity is served anyway: no 406
		{[]string{"gzipx"}, false},
		{[]string{"  gzip  ;  q=0.5  "}, true},
		{[]string{",,;;=,gzip"}, true},
	} {
		require.Equal(t, tc.want, acceptsGzip(tc.header), "%q", tc.header)
	}
}

// FuzzAcceptsGzip: any Accept-Encoding value is parsed without a panic, and
// only one that names gzip or * can select gzip.
func FuzzAcceptsGzip(f *testing.F) {
	for _, s := range []string{"", "gzip", "gzip;q=0", "*;q=0.5", "deflate, br", "x-gzip;q=1.0", "gzip;q=1e400", ",,;=", "gzip;q=NaN"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		got := acceptsGzip([]string{v})
		if got && !strings.Contains(strings.ToLower(v), "gzip") && !strings.Contains(v, "*") {
			t.Fatalf("acceptsGzip(%q) = true without gzip or *", v)
		}
		if got != acceptsGzip(strings.Split(v, ",")) {
			t.Fatalf("acceptsGzip(%q) depends on how the elements are split over header lines", v)
		}
	})
}

// deadlineStall is a ResponseWriter whose client never reads: Write blocks
// until the write deadline passes. It takes deadlines as a net.Conn does,
// through http.ResponseController.
type deadlineStall struct {
	h        http.Header
	mu       sync.Mutex
	deadline time.Time
	changed  chan struct{}
	once     sync.Once
	writing  chan struct{}
}

func newDeadlineStall() *deadlineStall {
	return &deadlineStall{h: http.Header{}, changed: make(chan struct{}), writing: make(chan struct{})}
}

func (w *deadlineStall) Header() http.Header { return w.h }
func (w *deadlineStall) WriteHeader(int)     {}

func (w *deadlineStall) SetWriteDeadline(t time.Time) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.deadline = t
	close(w.changed)
	w.changed = make(chan struct{})
	return nil
}

func (w *deadlineStall) Write([]byte) (int, error) {
	w.once.Do(func() { close(w.writing) })
	for {
		w.mu.Lock()
		d, changed := w.deadline, w.changed
		w.mu.Unlock()
		if !d.IsZero() && !time.Now().Before(d) {
			return 0, os.ErrDeadlineExceeded
		}
		timer := time.NewTimer(time.Until(d))
		select {
		case <-changed:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// TestHandlerStalledLoseSlots: when every slot is held by a client stuck on
// a write for longer than stallAfter, a new scrape takes the slot of one of
// them, whose write fails at once; a stuck client younger than stallAfter
// keeps its slot (503). The same holds for gzip answers.
func TestHandlerStalledLoseSlots(t *testing.T) {
	for _, accept := range []string{"", "gzip"} {
		t.Run("accept "+accept, func(t *testing.T) {
			clock := &fakeClock{t: epoch}
			c := New(fiveStates(t), Options{
				Thresholds: func() *fleet.ThresholdPolicy { return policy },
				Now:        clock.Now, MaxScrapes: 2,
			})
			c.writers.stallAfter = time.Hour // nobody is stalled yet
			h := c.Handler(selfCounters(t), nil)
			var wg sync.WaitGroup
			stalls := []*deadlineStall{newDeadlineStall(), newDeadlineStall()}
			for _, w := range stalls {
				req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
				req.Header.Set("Accept-Encoding", accept)
				wg.Go(func() { h.ServeHTTP(w, req) })
				<-w.writing
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
			require.Equal(t, http.StatusServiceUnavailable, rec.Code, "clients stuck for less than stallAfter keep their slots")

			c.writers.mu.Lock()
			c.writers.stallAfter = time.Nanosecond
			c.writers.mu.Unlock()
			_, body := scrapeHandler(t, h)
			require.Contains(t, body, "sentinel_agent_info{")
			require.Equal(t, uint64(1), c.EvictedScrapes())
			require.Equal(t, uint64(1), c.RejectedScrapes())

			// The other stalled client would be cut off by chunkTimeout.
			for _, w := range stalls {
				require.NoError(t, w.SetWriteDeadline(time.Now()))
			}
			wg.Wait()
			require.Zero(t, len(c.inflight), "every slot returned")
			_, body = scrapeHandler(t, h)
			require.Contains(t, body, "sentinel_agent_info{")
		})
	}
}

// TestHandlerStalledReadersTCP is issue 11's attack over real connections:
// MaxScrapes clients send GET /metrics for a page far larger than the socket
// buffers and never read. A real scrape must still get the whole page; before
// stalled clients lost their slots it got 503 until they timed out.
func TestHandlerStalledReadersTCP(t *testing.T) {
	clock := &fakeClock{t: epoch}
	s := heartbeat.NewStore(1_000_000, nil)
	fillFleet(t, s, 10_000) // ~12 MB of text
	const slots = 4
	c := New(s, Options{
		Thresholds: func() *fleet.ThresholdPolicy { return policy },
		Now:        clock.Now, MaxScrapes: slots,
	})
	c.writers.stallAfter = 100 * time.Millisecond
	srv := httptest.NewServer(c.Handler(selfCounters(t), nil))
	t.Cleanup(srv.Close)

	for i := range slots {
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		require.NoError(t, err)
		t.Cleanup(func() { conn.Close() })
		require.NoError(t, conn.(*net.TCPConn).SetReadBuffer(4096))
		// Identity: the gzip page of this fleet (~1 MB) fits in the socket
		// buffers; TestHandlerStalledLoseSlots covers stalled gzip answers.
		_, err = fmt.Fprintf(conn, "GET /metrics HTTP/1.1\r\nHost: sentinel-%d\r\n\r\n", i)
		require.NoError(t, err)
	}
	// The stalled clients hold every slot, their writes stuck for longer
	// than stallAfter.
	require.Eventually(t, func() bool {
		c.writers.mu.Lock()
		defer c.writers.mu.Unlock()
		stuck := 0
		for w := range c.writers.active {
			if since := w.blockedSince.Load(); since != 0 && time.Since(time.Unix(0, since)) > c.writers.stallAfter {
				stuck++
			}
		}
		return stuck == slots
	}, 30*time.Second, 10*time.Millisecond)

	for _, accept := range []string{"gzip", "identity"} {
		req, err := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
		require.NoError(t, err)
		req.Header.Set("Accept-Encoding", accept)
		res, err := srv.Client().Transport.RoundTrip(req) // no transparent gunzip
		require.NoError(t, err)
		body, err := io.ReadAll(res.Body)
		res.Body.Close()
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, res.StatusCode, "%s", body)
		if accept == "gzip" {
			require.Equal(t, "gzip", res.Header.Get("Content-Encoding"))
			body = gunzipOne(t, body)
		}
		// The whole page (parsing it is other tests' job, and slow here).
		require.Equal(t, 10_000, bytes.Count(body, []byte("\nsentinel_agent_info{")))
		require.True(t, bytes.HasSuffix(body, []byte("\n")))
	}
	require.Equal(t, uint64(1), c.EvictedScrapes(), "one stalled client lost its slot; the second scrape found it free")
}

// TestCRC32Combine: the CRC of a concatenation, combined from its halves'
// CRCs, is the CRC of the whole, for every cut of a few inputs.
func TestCRC32Combine(t *testing.T) {
	data := make([]byte, 3000)
	for i := range data {
		data[i] = byte(i*7 + i/13)
	}
	for _, n := range []int{0, 1, 2, 7, 64, 1000, 3000} {
		in := data[:n]
		for _, cut := range []int{0, 1, n / 3, n / 2, n - 1, n} {
			if cut < 0 || cut > n {
				continue
			}
			a, b := in[:cut], in[cut:]
			got := crc32Combine(crc32.ChecksumIEEE(a), crc32.ChecksumIEEE(b), int64(len(b)))
			require.Equal(t, crc32.ChecksumIEEE(in), got, "len %d cut %d", n, cut)
		}
	}
	// A length beyond 4 GiB, checked against the same CRC advanced in steps.
	crc := crc32.ChecksumIEEE([]byte("sentinel"))
	step := crc32Combine(crc, 0, 1<<31)
	require.Equal(t, crc32Combine(step, 0, 1<<31+5), crc32Combine(crc, 0, 1<<32+5))
}
