package app

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Connection limits: defaults of the --web.* flags, sized from
// measurements on the 2-core box: an idle keep-alive connection costs the
// server ~13 KB of heap and stack (BenchmarkIdleConnection: two 4 KiB
// buffers, a goroutine stack, the conn), so DefaultMaxConnections holds at
// most ~14 MB, where issue 11 saw 5000 unbounded connections take 88 MB of
// RSS. Heartbeats are short requests: a fleet of 100k agents beating every
// minute keeps a few dozen connections busy at a time; scrapers keep one
// each.
const (
	DefaultMaxConnections    = 1024
	DefaultIdleTimeout       = 30 * time.Second
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultMaxHeaderBytes    = 16 << 10
	// fdReserve are the file descriptors kept out of the connection cap for
	// the journal, snapshots, listeners and outgoing calls.
	fdReserve = 64
)

// newConnGrace is how long a connection may go without a whole request head
// before it may lose its place to a new one at the cap: a real client sends
// its request (after the TLS handshake) within milliseconds of connecting.
// Tests change it (export_test.go) before serving.
var newConnGrace atomic.Int64

func init() { newConnGrace.Store(int64(time.Second)) }

// connLimiter caps the connections a server holds open. It is the server's
// ConnState hook, which runs on the accept loop for new connections, so
// everything it does is quick: at the cap, a new connection takes the place
// of the longest-idle one (closed), or else of the oldest that has sent
// nothing for newConnGrace; failing both it is closed at once. Either way
// no client waits in the kernel's accept queue for a slot, and connections
// parked by one client cannot keep a heartbeat out. It is safe for
// concurrent use.
type connLimiter struct {
	max int

	mu    sync.Mutex
	conns map[net.Conn]*connEntry // entries updated in place, by their serverConn

	open    prometheus.GaugeFunc
	refused prometheus.Counter
	evicted prometheus.Counter
}

// connEntry is one connection's place in the limiter. A request moves its
// connection from idle to active and back: state and since are atomics,
// found through the serverConn, so that these two transitions take neither
// the limiter's lock nor a map lookup; admit reads them under the lock.
type connEntry struct {
	state atomic.Int32 // an http.ConnState
	since atomic.Int64 // when it turned new or idle, as ns since epoch
}

func newConnEntry(state http.ConnState, since time.Time) *connEntry {
	e := new(connEntry)
	e.state.Store(int32(state))
	e.since.Store(int64(since.Sub(epoch)))
	return e
}

func newConnLimiter(max int) *connLimiter {
	l := &connLimiter{max: max, conns: make(map[net.Conn]*connEntry)}
	l.open = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sentinel_http_connections",
		Help: "HTTP connections open, at most --web.max-connections.",
	}, func() float64 {
		l.mu.Lock()
		defer l.mu.Unlock()
		return float64(len(l.conns))
	})
	l.refused = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sentinel_http_connections_refused_total",
		Help: "New HTTP connections closed at once because --web.max-connections were open and busy.",
	})
	l.evicted = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sentinel_http_connections_evicted_total",
		Help: "Idle or silent HTTP connections closed to make room for a new one at --web.max-connections.",
	})
	return l
}

// Collectors are the limiter's metrics.
func (l *connLimiter) collectors() []prometheus.Collector {
	return []prometheus.Collector{l.open, l.refused, l.evicted}
}

// track is the http.Server ConnState hook.
func (l *connLimiter) track(c net.Conn, state http.ConnState) {
	switch state {
	case http.StateNew:
		victim, ok := l.admit(c, time.Now())
		if victim != nil {
			l.evicted.Inc()
			// Its serving goroutine sees the error and ends. Not on the
			// accept loop: closing a TLS connection sends close_notify,
			// which waits up to 5 s on a client that reads nothing.
			go victim.Close()
		}
		if !ok {
			l.refused.Inc()
			c.Close()
		}
	case http.StateActive:
		// Only an idle or a new connection's time is ever read.
		if e := l.entry(c); e != nil {
			e.state.Store(int32(state))
		}
	case http.StateIdle:
		if e := l.entry(c); e != nil {
			// The time first: admit, seeing the state, sees this time.
			// time.Since reads only the monotonic clock, where time.Now
			// reads the wall clock too.
			e.since.Store(int64(time.Since(epoch)))
			e.state.Store(int32(state))
		}
	case http.StateHijacked, http.StateClosed:
		l.mu.Lock()
		delete(l.conns, c)
		l.mu.Unlock()
	}
}

// admit registers c unless the cap is reached and nobody can make room; it
// returns the connection to close for c, if any.
func (l *connLimiter) admit(c net.Conn, now time.Time) (victim net.Conn, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.conns) >= l.max {
		mono := int64(now.Sub(epoch))
		var idleSince, newSince int64
		var idle, silent net.Conn
		grace := newConnGrace.Load()
		for vc, e := range l.conns {
			switch state, since := http.ConnState(e.state.Load()), e.since.Load(); {
			case state == http.StateIdle && (idle == nil || since < idleSince):
				idle, idleSince = vc, since
			case state == http.StateNew && mono-since >= grace && (silent == nil || since < newSince):
				silent, newSince = vc, since
			}
		}
		victim = idle
		if victim == nil {
			victim = silent
		}
		if victim == nil {
			return nil, false
		}
		delete(l.conns, victim)
	}
	e := newConnEntry(http.StateNew, now)
	l.conns[c] = e
	if sc, ok := c.(*serverConn); ok {
		// Before the connection's goroutine starts (the hook runs on the
		// accept loop), which reads it from then on.
		sc.limit = e
	}
	return victim, true
}

// entry returns c's entry: a serverConn's own, else the map's (nil once c
// has left the limiter).
func (l *connLimiter) entry(c net.Conn) *connEntry {
	if sc, ok := c.(*serverConn); ok && sc.limit != nil {
		// An evicted connection keeps its entry, out of the map: what
		// it records there is read by nobody.
		return sc.limit
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conns[c]
}

// Lazy deadlines: net/http sets a read or write deadline on the connection
// four times per request (header, whole request, write, idle), and arming
// the runtime's timer for each took ~5 % of the server's CPU at saturation
// (0.8 % with this). A
// serverConn keeps a deadline at least eagerDeadline away in memory instead,
// and its listener's sweeper, every deadlineTick, puts the ones that have
// passed on the socket, where they end a blocked Read or Write as the timer
// would have: the server's timeouts hold, up to deadlineTick late; so does
// a scrape's 30 s per-chunk write deadline. Nearer deadlines (net/http's
// "now" to interrupt a read, a stalled scrape's "now" when another takes
// its slot) go to the socket at once. Tests change both (export_test.go)
// before serving.
var deadlineTick, eagerDeadline atomic.Int64

func init() {
	deadlineTick.Store(int64(250 * time.Millisecond))
	eagerDeadline.Store(int64(3 * time.Second))
}

// expired is a deadline in the past: on the socket it ends blocked calls.
var expired = time.Unix(1, 0)

// serverListener hands out serverConns and sweeps their lazy deadlines.
// Its sweeper runs until the listener is closed and its last connection
// with it, so that connections still served after a shutdown began keep
// their timeouts.
type serverListener struct {
	net.Listener
	header string // the configured headers, as raw lines, of the JSON error answers

	mu     sync.Mutex
	conns  map[*serverConn]struct{}
	closed bool
	swept  chan struct{} // closed when the sweeper has returned
}

func newServerListener(l net.Listener, header string) *serverListener {
	sl := &serverListener{Listener: l, header: header, conns: make(map[*serverConn]struct{}), swept: make(chan struct{})}
	go sl.sweep(time.Duration(deadlineTick.Load()))
	return sl
}

func (l *serverListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	sc := &serverConn{Conn: c, l: l, header: l.header}
	l.mu.Lock()
	l.conns[sc] = struct{}{}
	l.mu.Unlock()
	return sc, nil
}

func (l *serverListener) Close() error {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	return l.Listener.Close()
}

func (l *serverListener) sweep(every time.Duration) {
	defer close(l.swept)
	t := time.NewTicker(every)
	defer t.Stop()
	for now := range t.C {
		l.mu.Lock()
		if l.closed && len(l.conns) == 0 {
			l.mu.Unlock()
			return
		}
		for c := range l.conns {
			c.fire(int64(now.Sub(epoch)))
		}
		l.mu.Unlock()
	}
}

// serverConn is a connection of serverListener: it keeps its far deadlines
// lazily (see deadlineTick), and turns net/http's own plain-text error
// answers (written before any handler runs: a request head over the header
// limit is 431, a malformed request 400) into the JSON `{"error": …}` every
// other answer uses, with the listener's header added. It sits on the
// plaintext side of TLS (listen.go), so TLS connections get the same
// answers. Its deadlines are safe for concurrent use, as net.Conn's are.
type serverConn struct {
	net.Conn
	l      *serverListener
	header string
	limit  *connEntry // its place in the server's connLimiter, if any

	mu          sync.Mutex // guards read and write, and orders their socket calls
	read, write lazyDeadline
}

// lazyDeadline is one direction's deadline.
type lazyDeadline struct {
	at    int64 // a deadline kept in memory, as monotonic ns since epoch; 0 for none
	armed bool  // the socket holds a deadline set here
}

// epoch is the origin of lazyDeadline.at. Deadlines are kept on the
// monotonic clock, as the runtime's timers are: a step of the wall clock
// must not fire them all at once.
var epoch = time.Now()

// set records deadline t, setting it on the socket with socket when it is
// near, and clearing the socket's when it holds an older one.
func (d *lazyDeadline) set(t time.Time, socket func(time.Time) error) error {
	if !t.IsZero() && time.Until(t) >= time.Duration(eagerDeadline.Load()) {
		d.at = int64(t.Sub(epoch))
		if d.armed {
			d.armed = false
			return socket(time.Time{})
		}
		return nil
	}
	d.at = 0
	if t.IsZero() && !d.armed {
		return nil
	}
	d.armed = !t.IsZero()
	return socket(t)
}

// fire puts a kept deadline that has passed by now (ns since epoch) on the
// socket.
func (d *lazyDeadline) fire(now int64, socket func(time.Time) error) {
	if d.at != 0 && now >= d.at {
		d.at, d.armed = 0, true
		_ = socket(expired) // fails only on a closed connection
	}
}

func (c *serverConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return errors.Join(c.read.set(t, c.Conn.SetReadDeadline), c.write.set(t, c.Conn.SetWriteDeadline))
}

func (c *serverConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.read.set(t, c.Conn.SetReadDeadline)
}

func (c *serverConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.write.set(t, c.Conn.SetWriteDeadline)
}

func (c *serverConn) fire(now int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.read.fire(now, c.Conn.SetReadDeadline)
	c.write.fire(now, c.Conn.SetWriteDeadline)
}

func (c *serverConn) Close() error {
	c.l.mu.Lock()
	delete(c.l.conns, c)
	c.l.mu.Unlock()
	return c.Conn.Close()
}

// errorHeaders are the headers net/http writes between the status line and
// the body of its own error answers: "HTTP/1.1 " + e + errorHeaders + e,
// where e is "<code> <text>[: detail]".
const errorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"

func (c *serverConn) Write(p []byte) (int, error) {
	if j, ok := jsonError(p, c.header); ok {
		if _, err := c.Conn.Write(j); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// jsonError rewrites one of net/http's own error answers as JSON, with the
// header lines header; any other write is not one of them (ok false). An
// answer is recognised only whole, as net/http writes it in one call, so a
// handler's output, which goes through a buffer and carries other headers,
// never matches.
func jsonError(p []byte, header string) ([]byte, bool) {
	rest, ok := bytes.CutPrefix(p, []byte("HTTP/1.1 "))
	// Every answer goes through here: a status that is not 4xx or 5xx is
	// told apart without looking further.
	if !ok || len(rest) == 0 || (rest[0] != '4' && rest[0] != '5') {
		return nil, false
	}
	e, body, ok := bytes.Cut(rest, []byte(errorHeaders))
	// The answer to an unknown Transfer-Encoding has a body of its own.
	if !ok || !(bytes.Equal(e, body) || string(e) == "501 Not Implemented" && string(body) == "Unsupported transfer encoding") || len(e) < 4 || e[3] != ' ' {
		return nil, false
	}
	code, err := strconv.Atoi(string(e[:3]))
	if err != nil || code < 400 || code > 599 || http.StatusText(code) == "" {
		return nil, false
	}
	msg := strings.ToLower(http.StatusText(code))
	if _, detail, ok := strings.Cut(string(e[4:]), ": "); ok {
		msg += ": " + detail
	}
	switch code {
	case http.StatusRequestHeaderFieldsTooLarge:
		msg += ": the request line and headers exceed --web.max-header-bytes"
	case http.StatusNotImplemented:
		if !strings.Contains(msg, ": ") {
			msg += ": unsupported transfer encoding"
		}
	}
	return jsonAnswer(code, msg, header), true
}

// jsonAnswer is a whole HTTP/1.1 answer that closes the connection, with
// the JSON body {"error": msg} and the header lines header.
func jsonAnswer(code int, msg, header string) []byte {
	b, _ := json.Marshal(map[string]string{"error": msg})
	b = append(b, '\n')
	return fmt.Appendf(nil, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n%s\r\n%s",
		code, http.StatusText(code), len(b), header, b)
}

// CloseWrite lets net/http half-close after its error answers, so that the
// client reads the answer before the connection closes.
func (c *serverConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
