package app_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/exporter-toolkit/web"
	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/app"
	"github.com/agentsentinel/sentinel/internal/testutil"
)

// tlsWebConfig serves TLS with the tls.crt and tls.key of testutil.WriteCert,
// found relative to the web configuration file.
const tlsWebConfig = "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n"

// writeWebConfig writes content as web.yml in dir and returns its path.
func writeWebConfig(t testing.TB, dir, content string) string {
	t.Helper()
	file := filepath.Join(dir, "web.yml")
	require.NoError(t, os.WriteFile(file, []byte(content), 0o600))
	return file
}

// serveWeb runs the App of o with Run on a loopback listener, with the web
// configuration file webFile ("" for none), until the end of the test, and
// returns its address.
func serveWeb(t testing.TB, o app.Options, webFile string) string {
	t.Helper()
	a, err := app.New(o)
	require.NoError(t, err)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	noSystemd := false
	flags := &web.FlagConfig{WebListenAddresses: &[]string{}, WebSystemdSocket: &noSystemd, WebConfigFile: &webFile}
	go func() { done <- a.Run(ctx, flags, l, nil, 5*time.Second) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return l.Addr().String()
}

// dialTLS opens a TLS connection to addr, offering HTTP/2 and HTTP/1.1.
func dialTLS(t testing.TB, addr string) *tls.Conn {
	t.Helper()
	d := &net.Dialer{Timeout: 10 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}})
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn
}

// tlsRequest sends req on a new TLS connection and reads one answer.
func tlsRequest(t *testing.T, addr, req string) (*http.Response, string) {
	t.Helper()
	conn := dialTLS(t, addr)
	require.Equal(t, "http/1.1", conn.ConnectionState().NegotiatedProtocol, "HTTP/1.1 is the only protocol offered")
	return testutil.Exchange(t, conn, req)
}

// TestTLSServerErrorsAreJSON: under TLS, the answers net/http writes itself
// are JSON as over plain HTTP, and carry the configured headers like every
// other answer; a plain HTTP request to the TLS port gets a JSON 400.
func TestTLSServerErrorsAreJSON(t *testing.T) {
	e := newEnv(t, baseConfig)
	dir := t.TempDir()
	testutil.WriteCert(t, dir, 1)
	webFile := writeWebConfig(t, dir, tlsWebConfig+"http_server_config:\n  headers:\n    X-Frame-Options: deny\n")
	addr := serveWeb(t, e.options(), webFile) // --web.max-header-bytes' default: 16 KiB

	for _, tc := range []struct {
		name, req string
		status    int
		error     string
	}{
		{"20 KiB of headers", "GET /-/healthy HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 20<<10) + "\r\n\r\n",
			http.StatusRequestHeaderFieldsTooLarge, "request header fields too large: the request line and headers exceed --web.max-header-bytes"},
		{"no host", "GET /-/healthy HTTP/1.1\r\n\r\n", http.StatusBadRequest, "bad request: missing required Host header"},
		{"malformed header", "GET /-/healthy HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n", http.StatusBadRequest, "bad request"},
		{"unknown transfer encoding", "POST /-/healthy HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
			http.StatusNotImplemented, "not implemented: unsupported transfer encoding"},
		{"served", "GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", http.StatusOK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, body := tlsRequest(t, addr, tc.req)
			require.Equal(t, tc.status, res.StatusCode, body)
			require.Equal(t, "deny", res.Header.Get("X-Frame-Options"))
			if tc.error != "" {
				require.Equal(t, "application/json", res.Header.Get("Content-Type"))
				require.JSONEq(t, fmt.Sprintf(`{"error":%q}`, tc.error), body)
			}
		})
	}

	t.Run("plain HTTP", func(t *testing.T) {
		res, body := rawRequest(t, addr, "GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
		require.Equal(t, http.StatusBadRequest, res.StatusCode, body)
		require.Equal(t, "application/json", res.Header.Get("Content-Type"))
		require.JSONEq(t, `{"error":"bad request: client sent an HTTP request to an HTTPS server"}`, body)
		require.Equal(t, "deny", res.Header.Get("X-Frame-Options"))
	})
}

// TestTLSCertificateRotation: every handshake reads the certificate and key
// files again, so a rotated certificate is served without a restart; a
// broken one fails handshakes (logged once, without the file's values)
// until it is fixed.
func TestTLSCertificateRotation(t *testing.T) {
	e := newEnv(t, baseConfig)
	dir := t.TempDir()
	certFile, _ := testutil.WriteCert(t, dir, 1)
	addr := serveWeb(t, e.options(), writeWebConfig(t, dir, tlsWebConfig))
	serial := func() (int64, error) {
		conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			return 0, err
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64(), nil
	}
	got, err := serial()
	require.NoError(t, err)
	require.EqualValues(t, 1, got)

	testutil.WriteCert(t, dir, 2)
	got, err = serial()
	require.NoError(t, err)
	require.EqualValues(t, 2, got)

	require.NoError(t, os.Remove(certFile))
	for range 3 {
		_, err = serial()
		require.Error(t, err)
	}
	require.Equal(t, 1, strings.Count(e.logs.String(), "cannot load the TLS certificate"), e.logs.String())
	require.NotContains(t, e.logs.String(), "tls.crt")

	testutil.WriteCert(t, dir, 3)
	got, err = serial()
	require.NoError(t, err)
	require.EqualValues(t, 3, got)
	require.Contains(t, e.logs.String(), "TLS certificate loaded again")
}

// TestTLSClientCARotation: with client certificates required, the CA file
// is read again at every handshake too: a client the new CA does not trust
// is refused without a restart.
func TestTLSClientCARotation(t *testing.T) {
	e := newEnv(t, baseConfig)
	dir, dirA, dirB := t.TempDir(), t.TempDir(), t.TempDir()
	testutil.WriteCert(t, dir, 1)
	certA, keyA := testutil.WriteCert(t, dirA, 10)
	certB, keyB := testutil.WriteCert(t, dirB, 20)
	caFile := filepath.Join(dir, "ca.crt")
	trust := func(cert string) {
		b, err := os.ReadFile(cert)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(caFile, b, 0o600))
	}
	trust(certA)
	addr := serveWeb(t, e.options(), writeWebConfig(t, dir, tlsWebConfig+"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n"))
	// status makes one request with the client certificate of cert and
	// key; under TLS 1.3 a refused certificate shows at the first read.
	status := func(cert, key string) (int, error) {
		pair, err := tls.LoadX509KeyPair(cert, key)
		require.NoError(t, err)
		conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{pair}})
		if err != nil {
			return 0, err
		}
		defer conn.Close()
		require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
		if _, err := io.WriteString(conn, "GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
			return 0, err
		}
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			return 0, err
		}
		res.Body.Close()
		return res.StatusCode, nil
	}
	code, err := status(certA, keyA)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	_, err = status(certB, keyB)
	require.Error(t, err, "a client the CA does not trust")

	trust(certB)
	code, err = status(certB, keyB)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	_, err = status(certA, keyA)
	require.Error(t, err, "a client the new CA no longer trusts")
}

// TestTLSHandshakeOffTheAcceptLoop: clients that start a handshake and
// never finish it hold only their own connections, which are closed at
// --web.read-header-timeout; everyone else is served meanwhile.
func TestTLSHandshakeOffTheAcceptLoop(t *testing.T) {
	e := newEnv(t, baseConfig)
	dir := t.TempDir()
	testutil.WriteCert(t, dir, 1)
	o := e.options()
	o.ReadHeaderTimeout = 2 * time.Second
	addr := serveWeb(t, o, writeWebConfig(t, dir, tlsWebConfig))

	start := time.Now()
	stalled := make([]net.Conn, 4)
	for i := range stalled {
		conn, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		t.Cleanup(func() { conn.Close() })
		// The header of a 512-byte handshake record, and nothing more.
		_, err = conn.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00})
		require.NoError(t, err)
		stalled[i] = conn
	}
	res, body := tlsRequest(t, addr, "GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	require.Equal(t, http.StatusOK, res.StatusCode, body)
	// Served while the stalled handshakes were still waiting, not after
	// they timed out: handshakes on the accept loop would serve it only
	// after the four deadlines, one after the other.
	require.Less(t, time.Since(start), o.ReadHeaderTimeout, "served while the stalled handshakes wait")
	for _, conn := range stalled {
		require.False(t, closedByServer(conn, time.Millisecond), "a stalled handshake is only closed at its deadline")
	}
	for _, conn := range stalled {
		require.True(t, closedByServer(conn, 10*time.Second), "a stalled handshake is closed at --web.read-header-timeout")
	}
	require.GreaterOrEqual(t, time.Since(start), o.ReadHeaderTimeout-100*time.Millisecond)
}

// tlsIdleConn opens a TLS connection, makes one keep-alive request on it
// and leaves it idle.
func tlsIdleConn(t testing.TB, addr string) net.Conn {
	t.Helper()
	conn := dialTLS(t, addr)
	res, body := testutil.Exchange(t, conn, "GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
	require.Equal(t, http.StatusOK, res.StatusCode, body)
	require.NoError(t, conn.SetDeadline(time.Time{}))
	return conn
}

// TestTLSConnectionLimits: the idle timeout and the connection cap hold for
// TLS connections as for plain ones.
func TestTLSConnectionLimits(t *testing.T) {
	dir := t.TempDir()
	testutil.WriteCert(t, dir, 1)
	webFile := writeWebConfig(t, dir, tlsWebConfig)

	t.Run("idle timeout", func(t *testing.T) {
		o := newEnv(t, baseConfig).options()
		o.IdleTimeout = 300 * time.Millisecond
		conn := tlsIdleConn(t, serveWeb(t, o, webFile))
		start := time.Now()
		require.True(t, closedByServer(conn, 10*time.Second))
		require.GreaterOrEqual(t, time.Since(start), 200*time.Millisecond)
	})

	t.Run("cap", func(t *testing.T) {
		o := newEnv(t, baseConfig).options()
		o.MaxConnections = 2
		addr := serveWeb(t, o, webFile)
		idle := []net.Conn{tlsIdleConn(t, addr), tlsIdleConn(t, addr)}
		res, body := tlsRequest(t, addr, "GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		require.Equal(t, http.StatusOK, res.StatusCode, body)
		closed := false
		for deadline := time.Now().Add(10 * time.Second); !closed && time.Now().Before(deadline); {
			for _, conn := range idle {
				if closedByServer(conn, 50*time.Millisecond) {
					closed = true
				}
			}
		}
		require.True(t, closed, "an idle TLS connection made room at the cap")
	})
}

// TestWebConfigRateLimitAndHeaders: a web configuration without TLS still
// sets its headers on every answer and applies its rate limit, with a JSON
// 429 that says when to come back.
func TestWebConfigRateLimitAndHeaders(t *testing.T) {
	get := func(t *testing.T, url string) (*http.Response, string) {
		t.Helper()
		res, err := http.Get(url)
		require.NoError(t, err)
		body, err := io.ReadAll(res.Body)
		res.Body.Close()
		require.NoError(t, err)
		return res, string(body)
	}
	t.Run("headers", func(t *testing.T) {
		e := newEnv(t, baseConfig)
		webFile := writeWebConfig(t, t.TempDir(), "http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n    Content-Security-Policy: default-src 'none'\n")
		base := "http://" + serveWeb(t, e.options(), webFile)
		for path, status := range map[string]int{"/-/healthy": http.StatusOK, "/metrics": http.StatusOK, "/": http.StatusOK, "/nope": http.StatusNotFound} {
			res, body := get(t, base+path)
			require.Equal(t, status, res.StatusCode, "%s: %s", path, body)
			require.Equal(t, "nosniff", res.Header.Get("X-Content-Type-Options"), path)
			require.Equal(t, "default-src 'none'", res.Header.Get("Content-Security-Policy"), path)
		}
	})
	t.Run("rate limit", func(t *testing.T) {
		e := newEnv(t, baseConfig)
		webFile := writeWebConfig(t, t.TempDir(), "rate_limit:\n  burst: 2\n  interval: 1h\n")
		base := "http://" + serveWeb(t, e.options(), webFile)
		for i, want := range []int{http.StatusOK, http.StatusOK, http.StatusTooManyRequests} {
			res, body := get(t, base+"/-/healthy")
			require.Equal(t, want, res.StatusCode, "request %d: %s", i, body)
			if want == http.StatusTooManyRequests {
				require.Equal(t, "application/json", res.Header.Get("Content-Type"))
				require.JSONEq(t, `{"error":"too many requests: over the rate_limit of the web configuration"}`, body)
				require.Equal(t, "3600", res.Header.Get("Retry-After"))
			}
		}
	})
}

// TestCheckWebConfig: what sentinel refuses in a web configuration, and
// that no error shows a value of the file (each puts a CANARY where a
// secret could be).
func TestCheckWebConfig(t *testing.T) {
	dir := t.TempDir()
	testutil.WriteCert(t, dir, 1)
	for _, tc := range []struct {
		name, content string
		error         string // "" accepted
	}{
		{"empty", "", ""},
		{"tls", tlsWebConfig, ""},
		{"tls and more", tlsWebConfig + "  min_version: TLS13\nhttp_server_config:\n  http2: false\n  headers:\n    Strict-Transport-Security: max-age=31536000\nrate_limit:\n  burst: 10\n  interval: 1s\n", ""},
		{"basic auth", "basic_auth_users:\n  alice: $2y$10$CANARYCANARYCANARYCANARYCANARYCANARYCANARYCANARYCANAR\n", "basic_auth_users is not supported"},
		{"unknown key", "tls_server_config:\n  CANARY-secret: x\n", "line 2: field " + "<redacted> not found in type web.TLSConfig"},
		{"wrong type", "tls_server_config:\n  cipher_suites: CANARY-secret\n", "cannot unmarshal !!str into []web.Cipher"},
		{"unknown TLS version", "tls_server_config:\n  min_version: CANARY-secret\n", "unknown TLS version: <redacted>"},
		{"header not allowed", "http_server_config:\n  headers:\n    CANARY-secret: x\n", "can not be configured"},
		{"header value", "http_server_config:\n  headers:\n    X-Frame-Options: CANARY-secret\n", "invalid value for X-Frame-Options"},
		{"header line break", "http_server_config:\n  headers:\n    Content-Security-Policy: \"a\\r\\nX-CANARY: 1\"\n", "http_server_config.headers.Content-Security-Policy: the value holds a line break or NUL"},
		{"missing certificate", "tls_server_config:\n  cert_file: CANARY-secret.pem\n  key_file: tls.key\n", "failed to read cert_file"},
		{"inline key", "tls_server_config:\n  cert_file: tls.crt\n  key: |\n    -----BEGIN EC PRIVATE KEY-----\n    CANARYCANARY\n    -----END EC PRIVATE KEY-----\n", "failed to load X509KeyPair"},
		{"client CA without client auth", tlsWebConfig + "  client_ca_file: tls.crt\n", "client CA's have been configured without a Client Auth Policy"},
		{"burst 0", "rate_limit:\n  interval: 1s\n", "rate_limit.burst must be at least 1"},
		{"negative interval", "rate_limit:\n  burst: 1\n  interval: -1s\n", "rate_limit.interval must not be negative"},
		{"burst alone", "rate_limit:\n  burst: 1\n", "rate_limit.burst is set without rate_limit.interval"},
		{"second document", tlsWebConfig + "---\nCANARY-secret: [\n", "a second YAML document"},
		{"second document parses", tlsWebConfig + "---\nCANARY-secret: 1\n", "a second YAML document"},
		{"trailing document marker", tlsWebConfig + "---\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := writeWebConfig(t, dir, tc.content)
			err := app.CheckWebConfig(file)
			if tc.error == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			require.Contains(t, err.Error(), "web config "+file+": ")
			require.Contains(t, err.Error(), tc.error)
			require.NotContains(t, strings.ToLower(err.Error()), "canary")
		})
	}
	require.NoError(t, app.CheckWebConfig(""))
	require.ErrorIs(t, app.CheckWebConfig(filepath.Join(dir, "missing.yml")), os.ErrNotExist)
}

// FuzzCheckWebConfig: any web configuration is accepted or refused with an
// error that shows none of its values.
func FuzzCheckWebConfig(f *testing.F) {
	for _, s := range []string{
		"", tlsWebConfig, "basic_auth_users:\n  alice: s3cr3t-pass\n",
		"tls_server_config:\n  s3cr3t-key: x\n", "tls_server_config:\n  min_version: s3cr3t-v\n",
		"http_server_config:\n  headers:\n    X-Frame-Options: s3cr3t-h\n", "rate_limit:\n  burst: 0\n  interval: 1s\n",
		"tls_server_config:\n  cert_file: ./s3cr3t.pem\n  key_file: tls.key\n", "tls_server_config:\n  cipher_suites: [s3cr3t]\n",
	} {
		f.Add(s)
	}
	dir := f.TempDir()
	testutil.WriteCert(f, dir, 1)
	file := filepath.Join(dir, "web.yml")
	f.Fuzz(func(t *testing.T, content string) {
		require.NoError(t, os.WriteFile(file, []byte(content), 0o600))
		err := app.CheckWebConfig(file)
		if err != nil && strings.Contains(content, "s3cr3t") && strings.Contains(err.Error(), "s3cr3t") {
			t.Fatalf("the error shows a value of the file:\n%s\n%s", content, err)
		}
	})
}
