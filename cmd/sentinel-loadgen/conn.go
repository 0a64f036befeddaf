package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"time"
)

// conn is one keep-alive HTTP/1.1 connection that POSTs and reads answers.
//
// Why not net/http's client: it costs the generator about as much CPU per
// request as the server under test spends answering it, so on a small
// machine the generator, not the server, would set the pace. conn writes a
// request with one Write and parses only the status line, Content-Length,
// Transfer-Encoding and Connection, like wrk. It is not safe for
// concurrent use: each worker owns one.
type conn struct {
	addr    string // host:port
	host    string // Host header
	timeout time.Duration
	c       net.Conn
	r       *bufio.Reader
	req     []byte
}

func newConn(base *url.URL, timeout time.Duration) (*conn, error) {
	if base.Scheme != "http" {
		return nil, fmt.Errorf("only http:// URLs are supported, got %q", base.Scheme)
	}
	addr := base.Host
	if base.Port() == "" {
		addr = net.JoinHostPort(base.Hostname(), "80")
	}
	return &conn{addr: addr, host: base.Host, timeout: timeout}, nil
}

func (c *conn) Close() {
	if c.c != nil {
		c.c.Close()
		c.c = nil
	}
}

// post sends one request and reads the whole answer. keep receives the
// answer body when non-nil (it is appended to keep[:0]); otherwise the body
// is discarded. A transport error closes the connection; the next post
// dials again.
func (c *conn) post(ctx context.Context, path, auth string, body, keep []byte) (int, []byte, error) {
	if c.c == nil {
		d := net.Dialer{Timeout: c.timeout}
		nc, err := d.DialContext(ctx, "tcp", c.addr)
		if err != nil {
			return 0, keep, err
		}
		c.c = nc
		if c.r == nil {
			c.r = bufio.NewReaderSize(nc, 16<<10)
		} else {
			c.r.Reset(nc)
		}
	}
	deadline := time.Now().Add(c.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = c.c.SetDeadline(deadline)

	b := append(c.req[:0], "POST "...)
	b = append(b, path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, c.host...)
	b = append(b, "\r\nUser-Agent: sentinel-loadgen\r\nContent-Type: application/json\r\nAuthorization: Bearer "...)
	b = append(b, auth...)
	b = append(b, "\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n\r\n"...)
	b = append(b, body...)
	c.req = b
	if _, err := c.c.Write(b); err != nil {
		c.Close()
		return 0, keep, err
	}
	status, kept, closeAfter, err := readResponse(c.r, keep)
	if err != nil || closeAfter {
		c.Close()
	}
	return status, kept, err
}

var errMalformed = errors.New("malformed HTTP response")

// readResponse reads one HTTP/1.1 response from r: its status, its body
// (appended to keep[:0] when keep is non-nil, discarded otherwise) and
// whether the server closes the connection after it.
func readResponse(r *bufio.Reader, keep []byte) (status int, body []byte, closeAfter bool, err error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		return 0, keep, true, err
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return 0, keep, true, errMalformed
	}
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, keep, true, errMalformed
	}
	length, chunked := int64(-1), false
	for {
		line, err = r.ReadSlice('\n')
		if err != nil {
			return status, keep, true, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return status, keep, true, errMalformed
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			length, err = strconv.ParseInt(string(value), 10, 64)
			if err != nil || length < 0 {
				return status, keep, true, errMalformed
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(value, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			closeAfter = bytes.EqualFold(value, []byte("close"))
		}
	}
	var sink io.Writer = io.Discard
	var buf *bytes.Buffer
	if keep != nil {
		buf = bytes.NewBuffer(keep[:0])
		sink = buf
	}
	switch {
	case chunked:
		err = readChunked(r, sink)
	case length >= 0:
		_, err = io.CopyN(sink, r, length)
	default:
		// Neither: the body runs to the end of the connection.
		_, err = io.Copy(sink, r)
		closeAfter = true
	}
	if buf != nil {
		keep = buf.Bytes()
	}
	if err != nil {
		return status, keep, true, err
	}
	return status, keep, closeAfter, nil
}

func readChunked(r *bufio.Reader, w io.Writer) error {
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return err
		}
		size, _, _ := bytes.Cut(bytes.TrimRight(line, "\r\n"), []byte(";"))
		n, err := strconv.ParseInt(string(size), 16, 64)
		if err != nil || n < 0 {
			return errMalformed
		}
		if n == 0 {
			// Trailers, then the empty line.
			for {
				line, err := r.ReadSlice('\n')
				if err != nil {
					return err
				}
				if len(bytes.TrimRight(line, "\r\n")) == 0 {
					return nil
				}
			}
		}
		if _, err := io.CopyN(w, r, n); err != nil {
			return err
		}
		if _, err := r.Discard(2); err != nil { // CRLF after the chunk
			return err
		}
	}
}
