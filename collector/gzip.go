package collector

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"io"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/klauspost/compress/flate"
)

// gzipLevel is klauspost/compress's deflate level for /metrics, its
// fastest LZ77 level. BenchmarkScrape100kGzipCandidates, four runs on the
// shared 2-core box, CPU time per gzip scrape of 100k agents (137 MB of
// text, ~110 ms uncompressed in the same runs): level 1 336-346 ms
// (3.0-3.1×, 10.7 MB), level 2 359-400 ms (10.4 MB), level 3 380-408 ms
// (10.2 MB), stateless 394-406 ms (10.8 MB), Huffman only 407-442 ms (81 MB:
// without LZ77 matching the text barely shrinks, and the bit writer still
// codes every byte). None reaches 2× identity: deflate runs at ~600 MB/s a
// core here, rendering at over 1 GB/s. Level 1 is the nearest, for an answer
// 5% larger than level 3's.
const gzipLevel = 1

// gzipWorkers is into how many segments, deflated at once, a large page is
// cut: the page is rendered before it is written, so its compression is the
// only CPU a scrape still needs, and spreading it over the cores keeps a
// compressed scrape near an identity one.
var gzipWorkers = min(runtime.GOMAXPROCS(0), 4)

// gzipMinSegment is the least a segment holds: below it another goroutine
// is not worth its start-up. A segment starts without the previous one's
// 32 KiB window, which costs nothing measurable at this size.
var gzipMinSegment = 4 << 20

// gzipHeader is a gzip member header without name, time or extra fields
// (RFC 1952 2.3: ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=0 OS=unknown).
var gzipHeader = [10]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255}

// gzipper writes a page as one gzip member whose deflate stream is made of
// segments compressed concurrently (pigz's scheme): every segment but the
// last ends with a sync flush, which ends on a byte boundary without the
// final bit, so the segments concatenate into one valid stream.
//
// The first segment is deflated by the caller's goroutine straight to the
// client, the others by one goroutine each into a buffer that the caller
// writes after it: one hand-over per segment and scrape, not per block. On
// the shared 2-core box, where a woken goroutine may wait a whole scheduler
// slice for a thread, a pipeline handing over 1 MiB blocks spent 5× its CPU
// time waiting (1.4 s for 0.28 s of CPU per 100k-agent page).
//
// It is safe for concurrent use; the deflate state and buffers are pooled.
type gzipper struct {
	level   int
	writers sync.Pool // *flate.Writer
	bufs    sync.Pool // *bytes.Buffer
}

func newGzipper(level int) *gzipper { return &gzipper{level: level} }

// writePage writes the gzip of the concatenation of parts to w and returns
// the first write error. The segments' buffers (about a twelfth of their
// text each) are the only memory it adds to the rendered page.
func (z *gzipper) writePage(w io.Writer, parts [][]byte) error {
	segs := splitSegments(parts, gzipWorkers, gzipMinSegment)
	last := len(segs) - 1
	done := make([]chan *bytes.Buffer, len(segs))
	for i := 1; i < len(segs); i++ {
		done[i] = make(chan *bytes.Buffer, 1)
		go func() {
			b, _ := z.bufs.Get().(*bytes.Buffer)
			if b == nil {
				b = new(bytes.Buffer)
			}
			b.Reset()
			z.deflate(b, segs[i], i == last) // a bytes.Buffer takes every write
			done[i] <- b
		}()
	}
	if _, err := w.Write(gzipHeader[:]); err != nil {
		return err
	}
	if err := z.deflate(w, segs[0], last == 0); err != nil {
		return err
	}
	var crc, size uint32
	for _, p := range parts {
		crc = crc32.Update(crc, crc32.IEEETable, p)
		size += uint32(len(p)) // ISIZE is the length modulo 2^32
	}
	for i := 1; i < len(segs); i++ {
		b := <-done[i]
		_, err := w.Write(b.Bytes())
		z.bufs.Put(b)
		if err != nil {
			// The remaining goroutines finish on their own; their
			// buffers go to the garbage collector.
			return err
		}
	}
	var trailer [8]byte
	binary.LittleEndian.PutUint32(trailer[:4], crc)
	binary.LittleEndian.PutUint32(trailer[4:], size)
	_, err := w.Write(trailer[:])
	return err
}

// gzipStateless is the level of klauspost's stateless deflate
// (gzip.StatelessCompression, which package flate does not export): every
// write is compressed on its own, with at most the previous 8 KiB as its
// dictionary and no state kept between writes.
const gzipStateless = -3

// deflate compresses seg to w; the last segment closes the deflate stream,
// the others end with a sync flush.
func (z *gzipper) deflate(w io.Writer, seg [][]byte, last bool) error {
	if z.level == gzipStateless {
		return deflateStateless(w, seg, last)
	}
	fw, _ := z.writers.Get().(*flate.Writer)
	if fw == nil {
		// The level is one of the constants above: NewWriter cannot fail.
		fw, _ = flate.NewWriter(w, z.level)
	} else {
		fw.Reset(w)
	}
	defer z.writers.Put(fw)
	for _, p := range seg {
		if _, err := fw.Write(p); err != nil {
			return err
		}
	}
	if last {
		return fw.Close()
	}
	return fw.Flush()
}

// deflateStateless is deflate at gzipStateless. Each part is one stateless
// call, given the end of the previous part as its dictionary; a call that
// does not end the stream ends on a byte boundary, as a sync flush does.
func deflateStateless(w io.Writer, seg [][]byte, last bool) error {
	var dict []byte
	for i, p := range seg {
		if err := flate.StatelessDeflate(w, p, last && i == len(seg)-1, dict); err != nil {
			return err
		}
		dict = p
	}
	if last && len(seg) == 0 {
		return flate.StatelessDeflate(w, nil, true, nil)
	}
	return nil
}

// splitSegments cuts the concatenation of parts into at most n segments of
// at least minSize bytes (but one), as even as that allows, each a list of
// sub-slices of parts (no copy). There is always at least one segment, so
// that an empty page still gets its final deflate block.
func splitSegments(parts [][]byte, n, minSize int) [][][]byte {
	total := 0
	for _, p := range parts {
		total += len(p)
	}
	n = max(1, min(n, total/max(minSize, 1)))
	size := (total + n - 1) / n
	segs := [][][]byte{nil}
	fill := 0
	for _, p := range parts {
		for len(p) > 0 {
			if fill == size {
				segs = append(segs, nil)
				fill = 0
			}
			k := min(len(p), size-fill)
			last := len(segs) - 1
			segs[last] = append(segs[last], p[:k])
			fill += k
			p = p[k:]
		}
	}
	return segs
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
