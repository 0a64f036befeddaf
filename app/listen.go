package app

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/mdlayher/vsock"
	"github.com/prometheus/exporter-toolkit/web"
	"golang.org/x/time/rate"

	"github.com/agentsentinel/sentinel/jsonapi"
)

// Sentinel builds its own listener stack rather than calling exporter-
// toolkit's web.Serve, so that every connection, TLS or not, ends in the
// same layers:
//
//	listener (TCP, systemd socket, vsock)
//	  -> TLS, when the web configuration enables it (tlsListener)
//	  -> serverListener: net/http's own 400 and 431 answers become JSON,
//	     far deadlines are swept instead of armed (conns.go)
//	  -> http.Server.Serve: connection cap, timeouts, handlers
//
// web.Serve puts TLS above any listener it is given, where net/http's own
// answers are already encrypted and cannot be rewritten.

// listen opens the listeners of flags: the systemd socket-activation ones
// with --web.systemd-socket, else one per --web.listen-address (vsock://
// addresses on vsock, the others on TCP). On error none stays open.
func listen(flags *web.FlagConfig) ([]net.Listener, error) {
	if flags.WebSystemdSocket != nil && *flags.WebSystemdSocket {
		fds, err := activation.Listeners()
		if err != nil {
			return nil, fmt.Errorf("systemd socket activation: %w", err)
		}
		var listeners []net.Listener
		for _, l := range fds {
			// Files passed that are not listening sockets come back nil.
			if l != nil {
				listeners = append(listeners, l)
			}
		}
		if len(listeners) == 0 {
			return nil, errors.New("systemd socket activation: no listening socket was passed")
		}
		return listeners, nil
	}
	if flags.WebListenAddresses == nil || len(*flags.WebListenAddresses) == 0 {
		return nil, web.ErrNoListeners
	}
	var listeners []net.Listener
	for _, addr := range *flags.WebListenAddresses {
		l, err := listenOn(addr)
		if err != nil {
			for _, l := range listeners {
				l.Close()
			}
			return nil, err
		}
		listeners = append(listeners, l)
	}
	return listeners, nil
}

// listenOn listens on one --web.listen-address: vsock://[CID]:PORT or a
// TCP host:port.
func listenOn(addr string) (net.Listener, error) {
	if !strings.HasPrefix(addr, "vsock://") {
		return net.Listen("tcp", addr)
	}
	u, err := url.Parse(addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	_, p, err := net.SplitHostPort(u.Host)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	port, err := strconv.ParseUint(p, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: the port must be a number below 2^32", addr)
	}
	l, err := vsock.Listen(uint32(port), nil)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return l, nil
}

// serveListeners serves server on listeners with the web configuration wc
// until one of them fails or the server is shut down, and returns that
// first error (http.ErrServerClosed after a shutdown). It owns listeners
// from the call on. It sets server.Handler's wrapper (headers, rate limit)
// before serving.
func serveListeners(server *http.Server, wc *webConfig, listeners []net.Listener, logger *slog.Logger) error {
	tlsConfig, err := wc.tlsConfig(handshakeLogger(logger))
	if err != nil {
		for _, l := range listeners {
			l.Close()
		}
		return fmt.Errorf("web config %s: %w", wc.file, err)
	}
	server.Handler = wc.wrap(server.Handler, logger)
	header := wc.rawHeader()
	errs := make(chan error, len(listeners))
	for _, l := range listeners {
		addr := l.Addr().String()
		logger.Info("Listening on", "address", addr)
		if tlsConfig != nil {
			logger.Info("TLS is enabled.", "http2", false, "address", addr)
			l = tlsListener{Listener: l, config: tlsConfig, header: header}
		} else {
			logger.Info("TLS is disabled.", "http2", false, "address", addr)
		}
		l = newServerListener(l, header)
		go func() { errs <- server.Serve(l) }()
	}
	return <-errs
}

// handshakeLogger logs the failures to load the certificate files during
// handshakes once each, and their recovery: a rotation that left a broken
// certificate fails every handshake until it is fixed.
func handshakeLogger(logger *slog.Logger) func(error) {
	var mu sync.Mutex
	var last string
	return func(err error) {
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		mu.Lock()
		changed := msg != last
		last = msg
		mu.Unlock()
		switch {
		case !changed:
		case err != nil:
			logger.Error("cannot load the TLS certificate; TLS handshakes fail until it can be", "err", msg)
		default:
			logger.Info("TLS certificate loaded again; handshakes succeed")
		}
	}
}

// wrap returns h answering with the configured headers and under the rate
// limit. The limiter is shared by every listener and client, as
// exporter-toolkit's is.
func (wc *webConfig) wrap(h http.Handler, logger *slog.Logger) http.Handler {
	if len(wc.headers) == 0 && wc.rate.Interval == 0 {
		return h
	}
	headers := make(http.Header, len(wc.headers))
	for k, v := range wc.headers {
		headers.Set(k, v)
	}
	var limiter *rate.Limiter
	if wc.rate.Interval > 0 {
		limiter = rate.NewLimiter(rate.Every(wc.rate.Interval), wc.rate.Burst)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wh := w.Header()
		for k, v := range headers {
			wh[k] = v // shared, read-only: an Add appends to a copy (len == cap)
		}
		if limiter != nil {
			if res := limiter.Reserve(); res.Delay() > 0 {
				retry := res.Delay()
				res.Cancel()
				jsonapi.WriteError(w, logger, jsonapi.TooMany("too many requests: over the rate_limit of the web configuration", retry))
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// rawHeader is the configured headers as header lines ("Name: value\r\n"),
// for the answers net/http writes itself.
func (wc *webConfig) rawHeader() string {
	h := make(http.Header, len(wc.headers))
	for k, v := range wc.headers {
		h.Set(k, v)
	}
	var b strings.Builder
	_ = h.Write(&b) // sorted, and a strings.Builder does not fail
	return b.String()
}

// tlsListener hands out server-side TLS connections. It does no I/O: the
// handshake runs on the connection's first Read, in the connection's own
// goroutine and under the deadline net/http sets for reading the request
// head (--web.read-header-timeout), so a client that never finishes its
// handshake holds only its own connection, never the accept loop.
type tlsListener struct {
	net.Listener
	config *tls.Config
	header string // the configured headers, for the plain-HTTP answer
}

func (l tlsListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &tlsConn{Conn: tls.Server(c, l.config), header: l.header}, nil
}

// tlsConn is a server-side TLS connection that answers a plain HTTP request
// (a client that forgot https://) with a JSON 400, as net/http answers one
// in plain text on the TLS connections it terminates itself.
//
// net/http sees it as any net.Conn: Request.TLS stays nil, and only
// HTTP/1.1 is served (ALPN offers nothing else).
type tlsConn struct {
	*tls.Conn
	header   string
	answered bool // the plain-HTTP answer was written; only Read touches it
}

func (c *tlsConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	var re tls.RecordHeaderError
	if err != nil && !c.answered && errors.As(err, &re) && re.Conn != nil && looksLikeHTTP(re.RecordHeader) {
		c.answered = true
		// The raw connection: its client does not speak TLS. A short
		// deadline, as nothing else bounds this write.
		_ = re.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		answer := jsonAnswer(http.StatusBadRequest, "bad request: client sent an HTTP request to an HTTPS server", c.header)
		if _, werr := re.Conn.Write(answer); werr == nil {
			if cw, ok := re.Conn.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite() // let the client read the answer before the close
			}
		}
	}
	return n, err
}

// looksLikeHTTP reports whether a TLS record header is the start of a plain
// HTTP request (net/http's test).
func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}
