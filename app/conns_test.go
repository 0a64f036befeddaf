package app

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestConnLimiterAdmit: at the cap the longest-idle connection makes room,
// else the oldest silent past its grace; active ones and silent ones within
// it never do.
func TestConnLimiterAdmit(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	type conn struct {
		state http.ConnState
		age   time.Duration
	}
	for _, tc := range []struct {
		name   string
		conns  []conn
		victim int // index into conns, -1 none
		ok     bool
	}{
		{"room", []conn{{http.StateActive, time.Minute}}, -1, true},
		{"oldest idle", []conn{{http.StateIdle, time.Second}, {http.StateIdle, time.Minute}, {http.StateNew, time.Hour}}, 1, true},
		{"silent past grace", []conn{{http.StateActive, time.Hour}, {http.StateNew, 3 * time.Second}, {http.StateNew, 2 * time.Second}}, 1, true},
		{"silent within grace", []conn{{http.StateActive, time.Hour}, {http.StateNew, 500 * time.Millisecond}, {http.StateActive, time.Second}}, -1, false},
		{"all active", []conn{{http.StateActive, time.Hour}, {http.StateActive, time.Hour}, {http.StateActive, time.Hour}}, -1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newConnLimiter(3)
			conns := make([]net.Conn, len(tc.conns))
			for i, c := range tc.conns {
				a, b := net.Pipe()
				t.Cleanup(func() { a.Close(); b.Close() })
				conns[i] = a
				l.conns[a] = newConnEntry(c.state, now.Add(-c.age))
			}
			fresh, other := net.Pipe()
			t.Cleanup(func() { fresh.Close(); other.Close() })
			victim, ok := l.admit(fresh, now)
			require.Equal(t, tc.ok, ok)
			if tc.victim < 0 {
				require.Nil(t, victim)
				return
			}
			require.Equal(t, conns[tc.victim], victim)
			require.NotContains(t, l.conns, victim)
			require.Contains(t, l.conns, fresh)
			require.Len(t, l.conns, 3)
		})
	}
}

// TestConnLimiterTracksServerConns: the transitions of a serverConn, kept
// through its own entry rather than the map, decide the eviction as the
// map's do.
func TestConnLimiterTracksServerConns(t *testing.T) {
	l := newConnLimiter(2)
	conn := func() *serverConn {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		return &serverConn{Conn: a}
	}
	busy, idle := conn(), conn()
	for _, c := range []*serverConn{busy, idle} {
		l.track(c, http.StateNew)
		require.NotNil(t, c.limit)
		l.track(c, http.StateActive)
	}
	l.track(idle, http.StateIdle)
	require.Equal(t, int32(http.StateIdle), idle.limit.state.Load())
	require.Equal(t, int32(http.StateActive), busy.limit.state.Load())

	fresh := conn()
	victim, ok := l.admit(fresh, time.Now())
	require.True(t, ok)
	require.Same(t, idle, victim)
	require.Same(t, l.conns[fresh], fresh.limit)

	// Closed, it leaves the map; an evicted one's later transitions touch
	// nothing the limiter reads.
	l.track(busy, http.StateClosed)
	l.track(idle, http.StateActive)
	require.NotContains(t, l.conns, net.Conn(busy))
	require.NotContains(t, l.conns, net.Conn(idle))
	require.Len(t, l.conns, 1)
}

func TestJSONError(t *testing.T) {
	for _, tc := range []struct {
		in     string
		status int
		error  string
	}{
		{"HTTP/1.1 431 Request Header Fields Too Large" + errorHeaders + "431 Request Header Fields Too Large",
			431, "request header fields too large: the request line and headers exceed --web.max-header-bytes"},
		{"HTTP/1.1 400 Bad Request" + errorHeaders + "400 Bad Request", 400, "bad request"},
		{"HTTP/1.1 400 Bad Request: missing required Host header" + errorHeaders + "400 Bad Request: missing required Host header",
			400, "bad request: missing required Host header"},
		{"HTTP/1.1 501 Not Implemented: unsupported transfer encoding" + errorHeaders + "501 Not Implemented: unsupported transfer encoding",
			501, "not implemented: unsupported transfer encoding"},
		{"HTTP/1.1 501 Not Implemented" + errorHeaders + "Unsupported transfer encoding", 501, "not implemented: unsupported transfer encoding"},
		// Not net/http's own answers: left alone.
		{"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0, ""},
		{"HTTP/1.1 400 Bad Request" + errorHeaders + "400 Bad Request and more", 0, ""},
		{"HTTP/1.1 302 Found" + errorHeaders + "302 Found", 0, ""},
		{"HTTP/1.1 400 Bad Request" + errorHeaders + "Unsupported transfer encoding", 0, ""},
		{"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n", 0, ""},
		{"sentinel_agent_info 1\n", 0, ""},
	} {
		out, ok := jsonError([]byte(tc.in), "X-Frame-Options: deny\r\n")
		if tc.status == 0 {
			require.False(t, ok, tc.in)
			continue
		}
		require.True(t, ok, tc.in)
		res, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(out)), nil)
		require.NoError(t, err)
		require.Equal(t, "deny", res.Header.Get("X-Frame-Options"))
		body, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		require.Equal(t, tc.status, res.StatusCode)
		require.Equal(t, "application/json", res.Header.Get("Content-Type"))
		require.True(t, res.Close)
		var got struct{ Error string }
		require.NoError(t, json.Unmarshal(body, &got))
		require.Equal(t, tc.error, got.Error)
	}
}

// FuzzJSONError: any write is either left alone or becomes a well-formed
// HTTP answer with a JSON error body.
func FuzzJSONError(f *testing.F) {
	f.Add([]byte("HTTP/1.1 431 Request Header Fields Too Large" + errorHeaders + "431 Request Header Fields Too Large"))
	f.Add([]byte("HTTP/1.1 400 Bad Request: x" + errorHeaders + "400 Bad Request: x"))
	f.Add([]byte("HTTP/1.1 200 OK\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 " + errorHeaders))
	f.Add([]byte("HTTP/1.1 4" + errorHeaders + "4"))
	f.Fuzz(func(t *testing.T, p []byte) {
		out, ok := jsonError(p, "")
		if !ok {
			return
		}
		res, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(out)), nil)
		if err != nil {
			t.Fatalf("%q became %q: %v", p, out, err)
		}
		body, err := io.ReadAll(res.Body)
		if err != nil || !json.Valid(body) || res.StatusCode < 400 {
			t.Fatalf("%q became %q", p, out)
		}
	})
}

// lazyPair returns both ends of a loopback connection, the server's a
// serverConn of l.
func lazyPair(t *testing.T, l *serverListener) (*serverConn, net.Conn) {
	t.Helper()
	client, err := net.Dial("tcp", l.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { client.Close() })
	c, err := l.Accept()
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c.(*serverConn), client
}

// deadlines returns c's read and write deadlines as c keeps them.
func deadlines(c *serverConn) (read, write lazyDeadline) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.read, c.write
}

// readTimesOut reports how long a Read on c took to fail with a deadline.
func readTimesOut(t *testing.T, c net.Conn) time.Duration {
	t.Helper()
	start := time.Now()
	_, err := c.Read(make([]byte, 1))
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	return time.Since(start)
}

// TestLazyDeadlines: a far deadline is kept in memory and still ends a
// blocked Read or Write once it passes (up to a sweep late); moving or
// clearing it before then keeps the connection usable; a near one is set
// on the socket at once.
func TestLazyDeadlines(t *testing.T) {
	const tick, eager = 5 * time.Millisecond, 50 * time.Millisecond
	defer SetLazyDeadlines(tick, eager)()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	l := newServerListener(tcp, "")

	t.Run("far read deadline fires", func(t *testing.T) {
		c, _ := lazyPair(t, l)
		require.NoError(t, c.SetReadDeadline(time.Now().Add(150*time.Millisecond)))
		read, _ := deadlines(c)
		require.NotZero(t, read.at, "kept in memory")
		require.False(t, read.armed)
		took := readTimesOut(t, c)
		require.GreaterOrEqual(t, took, 100*time.Millisecond)
		require.Less(t, took, 5*time.Second)
	})
	t.Run("cleared or moved deadline does not fire", func(t *testing.T) {
		c, client := lazyPair(t, l)
		require.NoError(t, c.SetReadDeadline(time.Now().Add(100*time.Millisecond)))
		readTimesOut(t, c)
		// Cleared after firing: the socket's deadline goes too.
		require.NoError(t, c.SetReadDeadline(time.Time{}))
		_, err := client.Write([]byte("a"))
		require.NoError(t, err)
		_, err = io.ReadFull(c, make([]byte, 1))
		require.NoError(t, err)
		// Moved further before it passes: it does not fire at the first.
		require.NoError(t, c.SetDeadline(time.Now().Add(60*time.Millisecond)))
		require.NoError(t, c.SetDeadline(time.Now().Add(time.Hour)))
		go func() {
			time.Sleep(200 * time.Millisecond) // past the first deadline, by the wall clock the sweeper uses
			client.Write([]byte("b"))
		}()
		_, err = io.ReadFull(c, make([]byte, 1))
		require.NoError(t, err)
	})
	t.Run("near deadline goes to the socket", func(t *testing.T) {
		c, _ := lazyPair(t, l)
		require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Millisecond)))
		read, _ := deadlines(c)
		require.Zero(t, read.at)
		require.True(t, read.armed)
		readTimesOut(t, c)
		// net/http interrupts its background read with a deadline in the past.
		require.NoError(t, c.SetReadDeadline(time.Time{}))
		require.NoError(t, c.SetReadDeadline(expired))
		readTimesOut(t, c)
	})
	t.Run("far write deadline fires", func(t *testing.T) {
		c, _ := lazyPair(t, l)
		require.NoError(t, c.SetWriteDeadline(time.Now().Add(100*time.Millisecond)))
		_, write := deadlines(c)
		require.NotZero(t, write.at)
		chunk := make([]byte, 1<<20)
		var err error
		for err == nil {
			_, err = c.Write(chunk) // the client reads nothing: the buffers fill
		}
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	})

	// The sweeper stops once the listener and its connections are closed.
	require.NoError(t, l.Close())
	l.mu.Lock()
	for c := range l.conns {
		l.mu.Unlock()
		c.Close()
		l.mu.Lock()
	}
	l.mu.Unlock()
	select {
	case <-l.swept:
	case <-time.After(10 * time.Second):
		t.Fatal("the sweeper did not stop")
	}
}
