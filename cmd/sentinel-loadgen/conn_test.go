package main

import (
	"bufio"
	"context"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestReadResponse(t *testing.T) {
	for _, tc := range []struct {
		name       string
		raw        string
		status     int
		body       string
		closeAfter bool
		err        string
	}{
		{name: "content length", raw: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: application/json\r\n\r\nhello", status: 200, body: "hello"},
		{name: "chunked", raw: "HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n", status: 201, body: "abcde"},
		{name: "close", raw: "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}", status: 503, body: "{}", closeAfter: true},
		{name: "to the end", raw: "HTTP/1.0 200 OK\r\n\r\nall of it", status: 200, body: "all of it", closeAfter: true},
		{name: "not HTTP", raw: "SSH-2.0-OpenSSH\r\n", err: "malformed"},
		{name: "bad status", raw: "HTTP/1.1 2x0 OK\r\n\r\n", err: "malformed"},
		{name: "bad length", raw: "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", status: 200, closeAfter: true, err: "malformed"},
		{name: "bad header", raw: "HTTP/1.1 200 OK\r\nno colon\r\n\r\n", status: 200, closeAfter: true, err: "malformed"},
		{name: "short body", raw: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", status: 200, body: "abc", closeAfter: true, err: "EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body, closeAfter, err := readResponse(bufio.NewReader(strings.NewReader(tc.raw)), []byte{})
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
			} else {
				require.NoError(t, err)
			}
			require.Equal(t, tc.status, status)
			require.Equal(t, tc.body, string(body))
			require.Equal(t, tc.closeAfter || tc.err != "", closeAfter)
		})
	}
}

// Two answers on one connection: the first is read to its end and no further.
func TestReadResponseKeepAlive(t *testing.T) {
	r := bufio.NewReader(strings.NewReader("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"))
	status, body, closeAfter, err := readResponse(r, nil)
	require.NoError(t, err)
	require.Equal(t, 200, status)
	require.Nil(t, body, "discarded")
	require.False(t, closeAfter)
	status, _, _, err = readResponse(r, nil)
	require.NoError(t, err)
	require.Equal(t, 404, status)
}

// A server that closes the connection after each answer: conn dials again.
func TestConnRedials(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	go func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			r := bufio.NewReader(nc)
			for {
				line, err := r.ReadString('\n')
				if err != nil || line == "\r\n" {
					break
				}
			}
			nc.Write([]byte("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"))
			nc.Close()
		}
	}()
	u, err := url.Parse("http://" + l.Addr().String())
	require.NoError(t, err)
	c, err := newConn(u, time.Second)
	require.NoError(t, err)
	defer c.Close()
	for range 3 {
		status, _, err := c.post(context.Background(), "/x", "k", nil, nil)
		require.NoError(t, err)
		require.Equal(t, 200, status)
	}
	_, err = newConn(&url.URL{Scheme: "https", Host: "x"}, time.Second)
	require.ErrorContains(t, err, "only http://")
}

func FuzzReadResponse(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbody"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		status, body, closeAfter, err := readResponse(bufio.NewReader(strings.NewReader(string(raw))), []byte{})
		if err != nil && !closeAfter {
			t.Fatal("an error must close the connection")
		}
		if len(body) > len(raw) {
			t.Fatalf("body of %d bytes from %d bytes", len(body), len(raw))
		}
		if err == nil && (status < 0 || status > 999) {
			t.Fatalf("status %d", status)
		}
	})
}
