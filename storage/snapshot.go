package storage

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
)

// Snapshot file format, all integers little-endian:
//
//	header  "SNTLSNAP" | version u32 (1) | kind length u16 | kind | crc u32 (of the header before it)
//	chunk   length u32 (1..1 MiB) | crc u32 (of length and data) | data      repeated
//	end     0 u32 | crc u32 (of the 0 and the trailer) | trailer
//	trailer payload length u64 | payload crc u32
//
// Chunking lets the writer stream without knowing the payload's size, tells a
// truncated file from trailing garbage, and localises damage to a chunk.
const (
	snapshotMagic     = "SNTLSNAP"
	snapshotVersion   = 1
	maxKindLen        = 255
	snapshotChunkSize = 256 << 10
	maxSnapshotChunk  = 1 << 20
	chunkHeaderSize   = 8
	trailerSize       = 12
)

// WriteSnapshot atomically replaces path (mode 0600) with a snapshot of the
// given kind whose payload write streams through a buffered writer. Like
// WriteFileAtomic, on error the old snapshot stays in place. kind names what
// the payload is (such as "agents") so that ReadSnapshot refuses a file meant
// for something else; it is 1 to 255 bytes.
func WriteSnapshot(path string, kind string, write func(io.Writer) error) error {
	return writeSnapshot(path, 0o600, kind, write)
}

func writeSnapshot(path string, perm os.FileMode, kind string, write func(io.Writer) error) error {
	if len(kind) == 0 || len(kind) > maxKindLen {
		return fmt.Errorf("write snapshot %s: kind must be 1 to %d bytes, got %d", path, maxKindLen, len(kind))
	}
	err := writeFileAtomic(path, perm, func(w io.Writer) error {
		if _, err := w.Write(snapshotHeader(kind)); err != nil {
			return err
		}
		cw := &chunkWriter{w: w, buf: make([]byte, 0, snapshotChunkSize)}
		if err := write(cw); err != nil {
			return err
		}
		return cw.finish()
	})
	if err != nil {
		return fmt.Errorf("write snapshot %s: %w", path, err)
	}
	return nil
}

func snapshotHeader(kind string) []byte {
	h := make([]byte, 0, len(snapshotMagic)+4+2+len(kind)+4)
	h = append(h, snapshotMagic...)
	h = binary.LittleEndian.AppendUint32(h, snapshotVersion)
	h = binary.LittleEndian.AppendUint16(h, uint16(len(kind)))
	h = append(h, kind...)
	return binary.LittleEndian.AppendUint32(h, crc32.Checksum(h, castagnoli))
}

// chunkWriter frames the payload into checksummed chunks.
type chunkWriter struct {
	w      io.Writer
	hdr    [chunkHeaderSize]byte
	buf    []byte
	length uint64
	crc    uint32
	err    error
}

func (c *chunkWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	written := 0
	for len(p) > 0 {
		n := copy(c.buf[len(c.buf):cap(c.buf)], p)
		c.buf = c.buf[:len(c.buf)+n]
		p = p[n:]
		written += n
		if len(c.buf) == cap(c.buf) {
			if err := c.flush(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

func (c *chunkWriter) flush() error {
	if len(c.buf) == 0 {
		return nil
	}
	c.length += uint64(len(c.buf))
	c.crc = crc32.Update(c.crc, castagnoli, c.buf)
	c.err = c.writeChunk(uint32(len(c.buf)), c.buf)
	c.buf = c.buf[:0]
	return c.err
}

func (c *chunkWriter) finish() error {
	if err := c.flush(); err != nil {
		return err
	}
	var t [trailerSize]byte
	binary.LittleEndian.PutUint64(t[:8], c.length)
	binary.LittleEndian.PutUint32(t[8:], c.crc)
	// The end marker is a chunk of length 0 whose body is the trailer.
	c.err = c.writeChunk(0, t[:])
	return c.err
}

func (c *chunkWriter) writeChunk(length uint32, body []byte) error {
	h := c.hdr[:] // a field: a local passed to Write would escape per chunk
	binary.LittleEndian.PutUint32(h[:4], length)
	binary.LittleEndian.PutUint32(h[4:], chunkCRC(h[:4], body))
	if _, err := c.w.Write(h); err != nil {
		return err
	}
	_, err := c.w.Write(body)
	return err
}

func chunkCRC(length, body []byte) uint32 {
	return crc32.Update(crc32.Update(0, castagnoli, length), castagnoli, body)
}

// ReadSnapshot verifies the snapshot at path and then streams its payload to
// read. The whole file, header, every chunk and the trailer, is checked in a
// first pass before read sees a byte, so read never acts on a damaged
// payload; memory stays at one chunk however large the payload is. A missing
// file is an error matching fs.ErrNotExist, which callers treat as a first
// start. Damage (truncation, bad magic, checksum mismatch, trailing garbage)
// matches ErrCorrupt; a wrong kind or an unsupported version is an error too.
// Every error names the file. An error returned by read is wrapped with the
// file's name.
func ReadSnapshot(path string, kind string, read func(io.Reader) error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read snapshot %s: %w", path, err)
	}
	defer f.Close()

	br := bufio.NewReaderSize(f, writeBufferSize)
	payloadStart, err := readSnapshotHeader(path, br, kind)
	if err != nil {
		return err
	}
	sr := &snapshotReader{path: path, r: br, off: payloadStart}
	if err := sr.verify(); err != nil {
		return err
	}

	// Second pass. Chunks are checked again as they stream, so a file
	// changed between the passes still cannot feed read unverified bytes.
	if _, err := f.Seek(payloadStart, io.SeekStart); err != nil {
		return fmt.Errorf("read snapshot %s: %w", path, err)
	}
	br.Reset(f)
	sr = &snapshotReader{path: path, r: br, off: payloadStart, buf: sr.buf[:0]}
	if err := read(sr); err != nil {
		if errors.Is(err, ErrCorrupt) {
			return err // already names the file
		}
		return fmt.Errorf("read snapshot %s: %w", path, err)
	}
	return nil
}

func readSnapshotHeader(path string, r *bufio.Reader, kind string) (int64, error) {
	var fixed [len(snapshotMagic) + 4 + 2]byte
	n, err := io.ReadFull(r, fixed[:])
	if m := min(n, len(snapshotMagic)); string(fixed[:m]) != snapshotMagic[:m] {
		return 0, corruptf("read snapshot %s: offset 0: bad magic, not a sentinel snapshot", path)
	}
	if err != nil {
		return 0, truncated(path, int64(n), "header", err)
	}
	kindLen := int(binary.LittleEndian.Uint16(fixed[len(snapshotMagic)+4:]))
	if kindLen == 0 || kindLen > maxKindLen {
		return 0, corruptf("read snapshot %s: offset %d: implausible kind length %d", path, len(snapshotMagic)+4, kindLen)
	}
	rest := make([]byte, kindLen+4)
	if n, err := io.ReadFull(r, rest); err != nil {
		return 0, truncated(path, int64(len(fixed)+n), "header", err)
	}
	header := append(fixed[:], rest[:kindLen]...)
	if crc32.Checksum(header, castagnoli) != binary.LittleEndian.Uint32(rest[kindLen:]) {
		return 0, corruptf("read snapshot %s: offset 0: header checksum mismatch", path)
	}
	if v := binary.LittleEndian.Uint32(fixed[len(snapshotMagic):]); v != snapshotVersion {
		return 0, fmt.Errorf("read snapshot %s: unsupported format version %d (this build reads %d)", path, v, snapshotVersion)
	}
	if got := string(rest[:kindLen]); got != kind {
		return 0, fmt.Errorf("read snapshot %s: holds %q, want %q", path, got, kind)
	}
	return int64(len(header) + 4), nil
}

func truncated(path string, off int64, what string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return corruptf("read snapshot %s: truncated at offset %d (in %s)", path, off, what)
	}
	return fmt.Errorf("read snapshot %s: offset %d: %w", path, off, err)
}

// snapshotReader decodes chunks into the payload, verifying each one, and the
// trailer against everything read.
type snapshotReader struct {
	path   string
	r      *bufio.Reader
	off    int64 // file offset of the next unread byte
	index  int   // number of the next chunk
	hdr    [chunkHeaderSize]byte
	buf    []byte
	pos    int
	length uint64 // payload bytes so far
	crc    uint32 // payload CRC-32C so far
	done   bool
	err    error
}

func (s *snapshotReader) Read(p []byte) (int, error) {
	for s.pos == len(s.buf) {
		if s.err != nil {
			return 0, s.err
		}
		if s.done {
			return 0, io.EOF
		}
		s.err = s.next()
	}
	n := copy(p, s.buf[s.pos:])
	s.pos += n
	return n, nil
}

// verify reads to the end marker and checks that nothing follows it.
func (s *snapshotReader) verify() error {
	for !s.done {
		if err := s.next(); err != nil {
			return err
		}
	}
	if _, err := s.r.ReadByte(); err != io.EOF {
		if err != nil {
			return fmt.Errorf("read snapshot %s: offset %d: %w", s.path, s.off, err)
		}
		return corruptf("read snapshot %s: trailing garbage after the end at offset %d", s.path, s.off)
	}
	return nil
}

// what names the chunk being read, for errors only.
func (s *snapshotReader) what(length uint32) string {
	if length == 0 {
		return "end marker"
	}
	return fmt.Sprintf("chunk %d", s.index)
}

// next reads and verifies one chunk, or the end marker and trailer.
func (s *snapshotReader) next() error {
	start := s.off
	h := s.hdr[:] // a field, not a local: passed to io.ReadFull it would escape per chunk
	if n, err := io.ReadFull(s.r, h); err != nil {
		return truncated(s.path, start+int64(n), fmt.Sprintf("chunk %d or end marker", s.index), err)
	}
	length := binary.LittleEndian.Uint32(h[:4])
	bodyLen := int(length)
	if length == 0 {
		bodyLen = trailerSize
	} else if length > maxSnapshotChunk {
		return corruptf("read snapshot %s: chunk %d at offset %d: implausible length %d", s.path, s.index, start, length)
	}
	if cap(s.buf) < bodyLen {
		s.buf = make([]byte, bodyLen, max(bodyLen, snapshotChunkSize))
	}
	body := s.buf[:bodyLen]
	if n, err := io.ReadFull(s.r, body); err != nil {
		return truncated(s.path, start+chunkHeaderSize+int64(n), s.what(length), err)
	}
	s.off = start + chunkHeaderSize + int64(bodyLen)
	if chunkCRC(h[:4], body) != binary.LittleEndian.Uint32(h[4:]) {
		return corruptf("read snapshot %s: %s at offset %d: checksum mismatch", s.path, s.what(length), start)
	}
	if length == 0 {
		wantLen, wantCRC := binary.LittleEndian.Uint64(body[:8]), binary.LittleEndian.Uint32(body[8:])
		if wantLen != s.length || wantCRC != s.crc {
			return corruptf("read snapshot %s: trailer at offset %d: payload checksum mismatch (%d bytes crc %08x, trailer says %d bytes crc %08x)",
				s.path, start, s.length, s.crc, wantLen, wantCRC)
		}
		s.buf, s.pos, s.done = s.buf[:0], 0, true
		return nil
	}
	s.buf, s.pos = body, 0
	s.length += uint64(bodyLen)
	s.crc = crc32.Update(s.crc, castagnoli, body)
	s.index++
	return nil
}
