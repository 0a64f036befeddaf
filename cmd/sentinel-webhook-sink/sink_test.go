package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/delivery"
	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/webhook"
)

const secret = "whsec_ZGVtby13ZWJob29rLXNlY3JldC1DSEFOR0UtTUU="

var at = time.Date(2026, 2, 18, 12, 35, 0, 0, time.UTC)

func newTestSink(t *testing.T) (*sink, *bytes.Buffer) {
	t.Helper()
	v, err := webhook.NewVerifier(secret)
	require.NoError(t, err)
	var out bytes.Buffer
	return newSink(v, &out, func() time.Time { return at }), &out
}

// signed returns a delivery of e as sentinel sends it.
func signed(t *testing.T, e delivery.Event, secrets ...string) *http.Request {
	t.Helper()
	m, err := delivery.Encode(e)
	require.NoError(t, err)
	s, err := webhook.NewSigner(secrets...)
	require.NoError(t, err)
	r := httptest.NewRequest(http.MethodPost, "/sentinel-webhook", bytes.NewReader(m.Body))
	s.Sign(r.Header, m.Event, m.ID, time.Now(), m.Body)
	return r
}

func serve(s *sink, h func(*sink, http.ResponseWriter, *http.Request), r *http.Request) int {
	w := httptest.NewRecorder()
	h(s, w, r)
	return w.Code
}

func TestSinkPrintsVerifiedEvents(t *testing.T) {
	outage := 12 * time.Second
	for _, tc := range []struct {
		name  string
		event delivery.Event
		want  string
	}{
		{"silent", delivery.NewStateChange(delivery.StateChangeInput{
			TenantID: "demo", AgentID: "hangs", Sequence: 2, From: fleet.StateActive, To: fleet.StateSilent,
			MissedBeats: 5, Alert: &delivery.Alert{Name: "AgentSilent"}, At: at,
		}), "12:35:00 verified heartbeat.state_change tenant=demo agent=hangs ACTIVE -> SILENT missed=5 alert=AgentSilent sequence=2 id="},
		{"recovered", delivery.NewStateChange(delivery.StateChangeInput{
			TenantID: "demo", AgentID: "naps", Sequence: 4, From: fleet.StateZombie, To: fleet.StateRecovered,
			MissedBeats: 0, Outage: outage, At: at,
		}), "12:35:00 verified heartbeat.state_change tenant=demo agent=naps ZOMBIE -> RECOVERED missed=0 outage=12s sequence=4 id="},
		{"revoked", delivery.NewAgentRevoked("demo", "hangs", 3, "Revoked by alert AgentZombie", 5*time.Second, delivery.SourceAlert("AgentZombie"), at),
			`12:35:00 verified agent.revoked          tenant=demo agent=hangs source=alert:AgentZombie reason="Revoked by alert AgentZombie" shutdown_timeout=5000ms sequence=3 id=`},
		{"pipeline silent", delivery.NewPipelineSilent("demo", 1, time.Time{}, 5*time.Minute, at),
			"12:35:00 verified pipeline.silent        tenant=demo no Watchdog from Alertmanager for 300s: alerts may not be flowing sequence=1 id="},
		{"pipeline restored", delivery.NewPipelineRestored("demo", 2, 42*time.Second, at),
			"12:35:00 verified pipeline.restored      tenant=demo Watchdog back after 42s sequence=2 id="},
		{"agent id with a space is quoted", delivery.NewAgentRevoked("demo", "a b", 1, "x", 0, delivery.SourceAdmin, at),
			`agent="a b" source=admin`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, out := newTestSink(t)
			require.Equal(t, http.StatusNoContent, serve(s, (*sink).serveWebhook, signed(t, tc.event, secret)))
			require.Contains(t, out.String(), tc.want)
			require.Equal(t, 1, strings.Count(out.String(), "\n"))
		})
	}
}

func TestSinkRotationAndDuplicates(t *testing.T) {
	s, out := newTestSink(t)
	e := delivery.NewWebhookTest("demo", at)
	// A new secret first, the one the sink knows second: still verified.
	require.Equal(t, http.StatusNoContent, serve(s, (*sink).serveWebhook, signed(t, e, "whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0", secret)))
	require.Equal(t, http.StatusNoContent, serve(s, (*sink).serveWebhook, signed(t, e, secret)))
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 2)
	require.NotContains(t, lines[0], "repeated")
	require.Contains(t, lines[1], "(a repeated delivery: already processed)")
}

func TestSinkRejects(t *testing.T) {
	good := func(t *testing.T) *http.Request {
		return signed(t, delivery.NewWebhookTest("demo", at), secret)
	}
	for _, tc := range []struct {
		name   string
		req    func(t *testing.T) *http.Request
		status int
		want   string
	}{
		{"unknown secret", func(t *testing.T) *http.Request {
			return signed(t, delivery.NewWebhookTest("demo", at), "another-secret")
		}, http.StatusUnauthorized, "REJECTED a delivery: X-ABS-Signature: "},
		{"no Standard Webhooks signature", func(t *testing.T) *http.Request {
			r := good(t)
			r.Header.Del(webhook.HeaderWebhookSignature)
			return r
		}, http.StatusUnauthorized, "REJECTED a delivery: webhook-signature: "},
		{"tampered body", func(t *testing.T) *http.Request {
			r := good(t)
			body := strings.Replace(readAll(t, r), `"demo"`, `"evil"`, 1)
			r2 := httptest.NewRequest(http.MethodPost, "/sentinel-webhook", strings.NewReader(body))
			r2.Header = r.Header
			return r2
		}, http.StatusUnauthorized, "REJECTED a delivery: X-ABS-Signature: "},
		{"event header of another event", func(t *testing.T) *http.Request {
			r := good(t)
			r.Header.Set(webhook.HeaderEvent, "agent.revoked")
			return r
		}, http.StatusBadRequest, "X-ABS-Delivery or X-ABS-Event differ"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, out := newTestSink(t)
			require.Equal(t, tc.status, serve(s, (*sink).serveWebhook, tc.req(t)))
			require.Contains(t, out.String(), tc.want)
			require.NotContains(t, out.String(), " verified ")
			require.NotContains(t, out.String(), secret)
		})
	}
}

func readAll(t *testing.T, r *http.Request) string {
	t.Helper()
	var b bytes.Buffer
	_, err := b.ReadFrom(r.Body)
	require.NoError(t, err)
	return b.String()
}

func TestSinkPrintsAlertmanagerNotifications(t *testing.T) {
	s, out := newTestSink(t)
	body := `{"version":"4","status":"firing","receiver":"local","alerts":[
		{"status":"firing","labels":{"alertname":"AgentZombie","tenant":"demo","agent_id":"hangs"}},
		{"status":"resolved","labels":{"alertname":"SentinelDown"}}]}`
	r := httptest.NewRequest(http.MethodPost, "/alertmanager", strings.NewReader(body))
	require.Equal(t, http.StatusOK, serve(s, (*sink).serveAlertmanager, r))
	require.Equal(t, "12:35:00 alertmanager firing   AgentZombie tenant=demo agent=hangs\n"+
		"12:35:00 alertmanager resolved SentinelDown\n", out.String())

	r = httptest.NewRequest(http.MethodPost, "/alertmanager", strings.NewReader(`{"version":"3"}`))
	require.Equal(t, http.StatusBadRequest, serve(s, (*sink).serveAlertmanager, r))
}

// FuzzServeWebhook feeds correctly signed arbitrary bodies: the sink never
// panics, answers 204 or 400, and prints exactly one line.
func FuzzServeWebhook(f *testing.F) {
	for _, seed := range []string{
		`{"event":"heartbeat.state_change","eventId":"e1","tenantId":"demo","agentId":"a","newState":"SILENT"}`,
		`{"event":"agent.revoked","eventId":"e2","reason":"\u0000\n"}`,
		`{"event":"","eventId":""}`, `[]`, `null`, `{"outageSeconds":"x"}`, "\xff",
	} {
		f.Add([]byte(seed))
	}
	signer, err := webhook.NewSigner(secret)
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, body []byte) {
		s, out := newTestSink(t)
		r := httptest.NewRequest(http.MethodPost, "/sentinel-webhook", bytes.NewReader(body))
		signer.Sign(r.Header, "heartbeat.state_change", "e1", time.Now(), body)
		code := serve(s, (*sink).serveWebhook, r)
		require.Contains(t, []int{http.StatusNoContent, http.StatusBadRequest}, code)
		require.Equal(t, 1, strings.Count(out.String(), "\n"), out.String())
	})
}

// FuzzServeAlertmanager: any body is printed or refused, never a panic, and
// no label value can add a line of its own.
func FuzzServeAlertmanager(f *testing.F) {
	f.Add([]byte(`{"version":"4","alerts":[{"status":"firing","labels":{"alertname":"A\nB","agent_id":"x"}}]}`))
	f.Add([]byte(`{"version":"4","alerts":null}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, body []byte) {
		s, out := newTestSink(t)
		r := httptest.NewRequest(http.MethodPost, "/alertmanager", bytes.NewReader(body))
		code := serve(s, (*sink).serveAlertmanager, r)
		require.Contains(t, []int{http.StatusOK, http.StatusBadRequest}, code)
		for _, line := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
			if line != "" {
				require.True(t, strings.HasPrefix(line, "12:35:00 "), "line %q", line)
			}
		}
	})
}
