package collector

import (
	"encoding/binary"
	"hash/crc32"
	"hash/maphash"
	"io"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/flate"
)

// gzipLevel is klauspost/compress's deflate level for /metrics, its
// fastest LZ77 level. BenchmarkScrape100kGzipCandidates, four runs on the
// shared 2-core box, CPU time per gzip scrape of 100k agents (137 MB of
// text, ~110 ms uncompressed in the same runs): level 1 336-346 ms
// (3.0-3.1×, 10.7 MB), level 2 359-400 ms (10.4 MB), level 3 380-408 ms
// (10.2 MB), klauspost's stateless mode 394-406 ms (10.8 MB; no longer
// offered), Huffman only 407-442 ms (81 MB: without LZ77 matching the text
// barely shrinks, and the bit writer still codes every byte). Compressing
// the whole page, none reaches 2× identity: deflate runs at ~600 MB/s a core
// here, rendering at ~1.6 GB/s; gzipPage's reuse of unchanged segments is
// what brings a scrape within it. Level 1 is the nearest, for an answer 5%
// larger than level 3's.
const gzipLevel = 1

// gzipWorkers is how many goroutines compress one page's segments at once.
var gzipWorkers = min(runtime.GOMAXPROCS(0), 4)

// gzipHeader is a gzip member header without name, time or extra fields
// (RFC 1952 2.3: ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=0 OS=unknown).
var gzipHeader = [10]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255}

// gzipFinal is an empty final deflate block (BFINAL=1, fixed Huffman
// codes, then end-of-block: ten zero-padded bits), the end of a stream whose
// every segment ended with a sync flush, as compress/flate closes one.
var gzipFinal = [2]byte{0x03, 0x00}

// gzipper writes pages as gzip members whose deflate stream is made of
// segments compressed independently and concurrently (pigz's scheme):
// every segment ends with a sync flush, which ends on a byte boundary
// without the final bit, so the segments concatenate into one valid stream,
// closed by gzipFinal. Each segment's CRC-32 is computed by the goroutine
// that compresses it and the member's is combined from them (crc32Combine),
// so that no pass over the whole page is left to the writer.
//
// It is safe for concurrent use; the deflate states are pooled.
type gzipper struct {
	level   int
	writers sync.Pool // *flate.Writer
	// seed keys the hashes that tell a segment's text unchanged (see
	// gzipPage): random, so no text can be made to collide on purpose.
	seed maphash.Seed
	// reused counts the segments sent as compressed for an earlier page.
	reused atomic.Uint64
}

func newGzipper(level int) *gzipper { return &gzipper{level: level, seed: maphash.MakeSeed()} }

// gzipPage is one page being compressed. Its owner adds the segments, in
// any order, as their text becomes final, and then calls writeTo once; the
// segments' text must not change until writeTo returns. gzipWorkers
// goroutines, started by start, compress the segments in the order they
// were added (so a page renders and compresses at once); writeTo writes
// them in page order as they are done. Only start, add and writeTo are
// called by the owner, from one goroutine.
//
// A gzipPage is recycled: start keeps each segment's compressed output of
// the previous page (~12 MB at 100k agents, kept with the scrape's other
// buffers). A segment whose text is the same as the one that output was
// made from (same length and the same 64-bit seeded hash) is sent as it is,
// without compressing it again: most families of a fleet (the interval, the
// stopped, revoked and paused flags, the info labels) change far less
// often than a scraper asks, and deflating is most of a gzip scrape's cost.
// A segment that changed reuses its buffer, already the right size
// (regrowing them at every scrape cost a tenth of the compression).
type gzipPage struct {
	z    *gzipper
	segs []gzipSegment
	jobs chan int // indexes of added segments, closed by writeTo
	wg   sync.WaitGroup
	// stop tells the workers to skip the segments left: the client is gone.
	stop atomic.Bool
}

type gzipSegment struct {
	parts [][]byte
	added bool
	done  chan struct{} // closed once out, crc and size are set
	// out, crc, size and sum describe the last text compressed here: its
	// compression, CRC-32, length and hash by compressor's seed. compressor
	// is nil while they do not belong together (never compressed, or being
	// compressed).
	out        appendWriter
	crc        uint32
	size       int
	sum        uint64
	compressor *gzipper
}

// appendWriter is a Writer appending to a slice that it keeps.
type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// start readies p, zero or done with its last page, for a page of at most
// n segments and starts its workers.
func (p *gzipPage) start(z *gzipper, n int) {
	p.z = z
	if cap(p.segs) < n {
		p.segs = append(p.segs[:cap(p.segs)], make([]gzipSegment, n-cap(p.segs))...)
	}
	p.segs = p.segs[:n]
	for i := range p.segs {
		s := &p.segs[i]
		s.parts, s.added, s.done = nil, false, nil
	}
	p.jobs = make(chan int, n)
	p.stop.Store(false)
	for range gzipWorkers {
		p.wg.Go(p.work)
	}
}

// add hands segment i, the concatenation of parts, to the workers. Segments
// never added are left out of the page.
func (p *gzipPage) add(i int, parts [][]byte) {
	s := &p.segs[i]
	s.parts, s.added, s.done = parts, true, make(chan struct{})
	p.jobs <- i
}

func (p *gzipPage) work() {
	var fw *flate.Writer
	defer func() {
		if fw != nil {
			p.z.writers.Put(fw)
		}
	}()
	for i := range p.jobs {
		s := &p.segs[i]
		// A segment skipped keeps what it held: still a consistent
		// compression of an earlier text.
		if !p.stop.Load() {
			size, sum := textSum(p.z.seed, s.parts)
			if s.compressor == p.z && s.size == size && s.sum == sum {
				p.z.reused.Add(1)
			} else {
				fw = s.compress(p.z, fw, size, sum)
			}
		}
		close(s.done)
	}
}

// textSum is the length of the concatenation of parts and its hash.
func textSum(seed maphash.Seed, parts [][]byte) (int, uint64) {
	var h maphash.Hash
	h.SetSeed(seed)
	size := 0
	for _, part := range parts {
		size += len(part)
		_, _ = h.Write(part) // maphash.Hash never fails
	}
	return size, h.Sum64()
}

// compress compresses s's text, of the given length and hash, into its
// buffer with z's deflate state fw, taken from z's pool when nil, and
// returns that state for the next segment.
func (s *gzipSegment) compress(z *gzipper, fw *flate.Writer, size int, sum uint64) *flate.Writer {
	s.compressor = nil
	s.crc, s.size, s.sum = 0, size, sum
	s.out.b = s.out.b[:0]
	for _, part := range s.parts {
		s.crc = crc32.Update(s.crc, crc32.IEEETable, part)
	}
	if size > 0 {
		if cap(s.out.b) < size/8 {
			// A first page: the text compresses ~12×.
			s.out.b = make([]byte, 0, size/8)
		}
		if fw == nil {
			fw, _ = z.writers.Get().(*flate.Writer)
		}
		if fw == nil {
			// The level is one of flate's: NewWriter cannot fail.
			fw, _ = flate.NewWriter(&s.out, z.level)
		} else {
			fw.Reset(&s.out)
		}
		for _, part := range s.parts {
			_, _ = fw.Write(part) // an appendWriter takes every write
		}
		_ = fw.Flush()
	}
	s.compressor = z
	return fw
}

// writeTo writes the gzip member of the added segments to w, in page order,
// and returns the first write error. Once it returns, no worker reads a
// segment's text any more.
func (p *gzipPage) writeTo(w io.Writer) error {
	close(p.jobs)
	defer func() {
		p.stop.Store(true)
		p.wg.Wait()
		for i := range p.segs {
			p.segs[i].parts = nil // the text is the owner's again
		}
	}()
	if _, err := w.Write(gzipHeader[:]); err != nil {
		return err
	}
	var crc, size uint32
	for i := range p.segs {
		s := &p.segs[i]
		if !s.added {
			continue
		}
		<-s.done
		crc = crc32Combine(crc, s.crc, int64(s.size))
		size += uint32(s.size) // ISIZE is the length modulo 2^32
		if len(s.out.b) == 0 {
			continue
		}
		if _, err := w.Write(s.out.b); err != nil {
			return err
		}
	}
	var end [len(gzipFinal) + 8]byte
	copy(end[:], gzipFinal[:])
	binary.LittleEndian.PutUint32(end[len(gzipFinal):], crc)
	binary.LittleEndian.PutUint32(end[len(gzipFinal)+4:], size)
	_, err := w.Write(end[:])
	return err
}

// crc32Combine returns the IEEE CRC-32 of a+b from crc1, a's, and crc2, b's,
// and b's length (zlib's crc32_combine: crc1 advanced over len2 zero bytes,
// a multiplication by x^(8·len2) modulo the polynomial, then crc2 added).
// The standard library does not offer it.
func crc32Combine(crc1, crc2 uint32, len2 int64) uint32 {
	return multModP(x2nModP(len2, 3), crc1) ^ crc2
}

// crcPoly is the IEEE polynomial, reflected, as hash/crc32.IEEE.
const crcPoly = 0xedb88320

// multModP is a·b modulo the CRC polynomial, both reflected (bit 31 is x^0).
func multModP(a, b uint32) uint32 {
	var p uint32
	for m := uint32(1) << 31; m != 0; m >>= 1 {
		if a&m != 0 {
			p ^= b
			if a&(m-1) == 0 {
				break
			}
		}
		if b&1 != 0 {
			b = b>>1 ^ crcPoly
		} else {
			b >>= 1
		}
	}
	return p
}

// x2nTable[k] is x^(2^k) modulo the CRC polynomial.
var x2nTable = func() (t [32]uint32) {
	p := uint32(1) << 30 // x^1
	t[0] = p
	for k := 1; k < len(t); k++ {
		p = multModP(p, p)
		t[k] = p
	}
	return t
}()

// x2nModP is x^(n·2^k) modulo the CRC polynomial.
func x2nModP(n int64, k uint) uint32 {
	p := uint32(1) << 31 // x^0
	for ; n > 0; n >>= 1 {
		if n&1 != 0 {
			p = multModP(x2nTable[k&31], p)
		}
		k++
	}
	return p
}

// acceptsGzip reports whether the Accept-Encoding values of a request accept
// gzip (RFC 9110 12.5.3): gzip listed with a non-zero weight, or not listed
// and "*" listed with a non-zero weight. A malformed weight counts as 0: the
// answer is then identity, which every client accepts.
func acceptsGzip(values []string) bool {
	gzipQ, starQ := -1.0, -1.0
	for _, v := range values {
		for elem := range strings.SplitSeq(v, ",") {
			coding, params, _ := strings.Cut(elem, ";")
			coding = strings.TrimSpace(coding)
			q := 1.0
			for param := range strings.SplitSeq(params, ";") {
				name, value, ok := strings.Cut(strings.TrimSpace(param), "=")
				if !ok || !strings.EqualFold(strings.TrimSpace(name), "q") {
					continue
				}
				f, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
				if err != nil || f < 0 || f > 1 {
					f = 0
				}
				q = f
			}
			switch {
			case strings.EqualFold(coding, "gzip"), strings.EqualFold(coding, "x-gzip"):
				gzipQ = max(gzipQ, q)
			case coding == "*":
				starQ = max(starQ, q)
			}
		}
	}
	if gzipQ >= 0 {
		return gzipQ > 0
	}
	return starQ > 0
}
