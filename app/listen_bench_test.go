package app

import (
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/exporter-toolkit/web"
	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/internal/testutil"
)

// BenchmarkTLSServe compares sentinel's listener stack with exporter-
// toolkit's web.Serve, which it replaces, on the same TLS web configuration
// and a trivial handler: a new connection (handshake) per request, and
// requests on a kept-alive connection. Run with -count to interleave them.
func BenchmarkTLSServe(b *testing.B) {
	dir := b.TempDir()
	testutil.WriteCert(b, dir, 1)
	file := filepath.Join(dir, "web.yml")
	require.NoError(b, os.WriteFile(file, []byte("tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n"), 0o600))
	logger := slog.New(slog.DiscardHandler)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok\n") })

	servers := []struct {
		name  string
		serve func(*http.Server, net.Listener) error
	}{
		{"sentinel", func(s *http.Server, l net.Listener) error {
			wc, err := loadWebConfig(file)
			if err != nil {
				return err
			}
			return serveListeners(s, wc, []net.Listener{l}, logger)
		}},
		{"exporter-toolkit", func(s *http.Server, l net.Listener) error {
			off := false
			return web.Serve(l, s, &web.FlagConfig{WebListenAddresses: &[]string{}, WebSystemdSocket: &off, WebConfigFile: &file}, logger)
		}},
	}
	for _, srv := range servers {
		for _, keepAlive := range []bool{false, true} {
			name := srv.name + "/new-connection"
			if keepAlive {
				name = srv.name + "/keep-alive"
			}
			b.Run(name, func(b *testing.B) {
				l, err := net.Listen("tcp", "127.0.0.1:0")
				require.NoError(b, err)
				server := &http.Server{Handler: handler}
				done := make(chan error, 1)
				go func() { done <- srv.serve(server, l) }()
				defer func() {
					require.NoError(b, server.Close())
					<-done
				}()
				tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: !keepAlive}
				defer tr.CloseIdleConnections()
				client := &http.Client{Transport: tr}
				url := "https://" + l.Addr().String() + "/"
				for b.Loop() {
					res, err := client.Get(url)
					if err != nil {
						b.Fatal(err)
					}
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if res.StatusCode != http.StatusOK {
						b.Fatalf("status %d", res.StatusCode)
					}
				}
			})
		}
	}
}

// BenchmarkConnStateRequest is the connection cap's share of a request:
// the two ConnState transitions (active, then idle again) net/http reports
// for every request on a kept-alive connection, among 64 open ones.
func BenchmarkConnStateRequest(b *testing.B) {
	l := newConnLimiter(DefaultMaxConnections)
	conns := make([]net.Conn, 64)
	for i := range conns {
		a, c := net.Pipe()
		b.Cleanup(func() { a.Close(); c.Close() })
		conns[i] = &serverConn{Conn: a}
		l.track(conns[i], http.StateNew)
	}
	i := 0
	for b.Loop() {
		c := conns[i%len(conns)]
		l.track(c, http.StateActive)
		l.track(c, http.StateIdle)
		i++
	}
}
