package app

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/exporter-toolkit/web"
	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/internal/testutil"
)

func TestListen(t *testing.T) {
	off := false
	for _, tc := range []struct {
		name  string
		addrs []string
		error string // "" listens
	}{
		{"tcp", []string{"127.0.0.1:0", "127.0.0.1:0"}, ""},
		{"none", nil, web.ErrNoListeners.Error()},
		{"vsock port too large", []string{"vsock://:4294967296"}, "listen on vsock://:4294967296: the port must be a number below 2^32"},
		{"vsock without port", []string{"vsock://2"}, "listen on vsock://2: address 2: missing port in address"},
		// One address that fails fails them all.
		{"second fails", []string{"127.0.0.1:0", "127.0.0.1:65536"}, "invalid port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addrs := tc.addrs
			ls, err := listen(&web.FlagConfig{WebListenAddresses: &addrs, WebSystemdSocket: &off})
			if tc.error != "" {
				require.ErrorContains(t, err, tc.error)
				require.Nil(t, ls)
				return
			}
			require.NoError(t, err)
			require.Len(t, ls, len(addrs))
			for _, l := range ls {
				require.NoError(t, l.Close())
			}
		})
	}
	t.Run("systemd without sockets", func(t *testing.T) {
		on := true
		t.Setenv("LISTEN_PID", "")
		_, err := listen(&web.FlagConfig{WebSystemdSocket: &on})
		require.EqualError(t, err, "systemd socket activation: no listening socket was passed")
	})
}

// TestTLSWriteDeadline: a handler's write deadline (what /metrics sets per
// chunk) reaches the TCP connection through the TLS and JSON-error layers,
// so a client that reads nothing cannot hold a write forever: a near one at
// once, a far one (as /metrics' 30 s are) through the sweeper.
func TestTLSWriteDeadline(t *testing.T) {
	t.Run("near", func(t *testing.T) { testTLSWriteDeadline(t) })
	t.Run("far", func(t *testing.T) {
		// The handler's 200 ms are kept lazily and swept every 5 ms.
		defer SetLazyDeadlines(5*time.Millisecond, 50*time.Millisecond)()
		testTLSWriteDeadline(t)
	})
}

func testTLSWriteDeadline(t *testing.T) {
	dir := t.TempDir()
	testutil.WriteCert(t, dir, 1)
	file := filepath.Join(dir, "web.yml")
	require.NoError(t, os.WriteFile(file, []byte("tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n"), 0o600))
	wc, err := loadWebConfig(file)
	require.NoError(t, err)

	written := make(chan error, 1)
	server := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		chunk := make([]byte, 64<<10)
		for {
			if err := rc.SetWriteDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
				written <- err
				return
			}
			if _, err := w.Write(chunk); err != nil {
				written <- err
				return
			}
		}
	})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- serveListeners(server, wc, []net.Listener{l}, slog.New(slog.DiscardHandler)) }()

	conn, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	require.NoError(t, err)
	defer conn.Close()
	_, err = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	require.NoError(t, err)
	// ...and never read.
	select {
	case err := <-written:
		require.True(t, errors.Is(err, os.ErrDeadlineExceeded), "%v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("a write to a client that reads nothing never timed out")
	}
	require.NoError(t, server.Close())
	require.ErrorIs(t, <-served, http.ErrServerClosed)
}
