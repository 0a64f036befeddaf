package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// writeSelfSigned writes a certificate for 127.0.0.1 and its key into dir.
func writeSelfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "sentinel test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600))
	return certFile, keyFile
}

// --web.config.file (exporter-toolkit) serves every endpoint over TLS:
// heartbeats with bearer credentials, the admin API and /metrics.
func TestWebConfigTLS(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sentinel.yml")
	writeFile(t, cfg, serveConfig)
	certFile, keyFile := writeSelfSigned(t, dir)
	webConfig := filepath.Join(dir, "web.yml")
	writeFile(t, webConfig, "tls_server_config:\n  cert_file: "+certFile+"\n  key_file: "+keyFile+"\n")

	p := startSentinel(t, cfg, filepath.Join(dir, "data"), "--web.config.file="+webConfig)
	require.True(t, strings.HasPrefix(p.base, "https://"))
	tok := p.register("agent-1", "acme-key-1", map[string]any{"heartbeat_interval_seconds": 1})
	require.True(t, strings.HasPrefix(tok, "srt_"))
	b := p.beat("agent-1", tok, nil)
	require.Equal(t, true, b["lease_renewed"], "%v", b)
	r := p.mustRequest(http.MethodGet, "/api/v1/installations/agent-1", "acme-admin", nil)
	require.Equal(t, http.StatusOK, r.status, r.body)
	_, ok := p.metric(`sentinel_agent_last_heartbeat_timestamp_seconds{agent_id="agent-1",tenant="acme"}`)
	require.True(t, ok)

	// Plain HTTP is not served.
	plain := &http.Client{Timeout: 5 * time.Second}
	resp, err := plain.Get("http://" + strings.TrimPrefix(p.base, "https://") + "/-/healthy")
	if err == nil {
		defer resp.Body.Close()
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, "an HTTP request to the TLS port is refused")
	}
}
