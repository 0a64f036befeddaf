package collector

import "io"

// The helpers below compress a page that is whole before compression starts,
// cut into segments anywhere: the tests exercise gzipPage with them, and
// BenchmarkGzipPage100k weighs it against single-stream writers.

// gzipMinSegment is the least a segment of writePage holds.
var gzipMinSegment = 1 << 20

// writePage writes the gzip of the concatenation of parts to w, in
// segments of splitSegments, and returns the first write error.
func (z *gzipper) writePage(w io.Writer, parts [][]byte) error {
	segs := splitSegments(parts, gzipWorkers, gzipMinSegment)
	var p gzipPage
	p.start(z, len(segs))
	for i, seg := range segs {
		p.add(i, seg)
	}
	return p.writeTo(w)
}

// splitSegments cuts the concatenation of parts into at most n segments of
// at least minSize bytes (but one), as even as that allows, each a list of
// sub-slices of parts (no copy). There is always at least one segment.
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
