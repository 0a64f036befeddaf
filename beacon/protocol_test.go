package beacon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestClientURL(t *testing.T) {
	for _, tc := range []struct {
		endpoint string
		protocol Protocol
		id       string
		want     string
		err      string
	}{
		{"https://s.example.com", "", "a1", "https://s.example.com/api/v1/installations/a1/heartbeat", ""},
		{"https://s.example.com/", ProtocolBeacon, "a@b:c", "https://s.example.com/api/v1/installations/a@b:c/heartbeat", ""},
		{"https://s.example.com/prefix/", ProtocolBeacon, "a1", "https://s.example.com/prefix/api/v1/installations/a1/heartbeat", ""},
		{"http://127.0.0.1:9000", ProtocolABS, "a1", "http://127.0.0.1:9000/v1/heartbeat?agentId=a1", ""},
		{"http://h", ProtocolABS, "a@b:c", "http://h/v1/heartbeat?agentId=a%40b%3Ac", ""},
		{"s.example.com", ProtocolBeacon, "a1", "", "scheme must be http or https"},
		{"http://", ProtocolBeacon, "a1", "", "has no host"},
	} {
		t.Run(tc.endpoint+" "+tc.id, func(t *testing.T) {
			got, err := (&Client{Endpoint: tc.endpoint, AgentID: tc.id, Protocol: tc.protocol}).URL()
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestClientSend(t *testing.T) {
	srv := newScriptedServer(t, func(r request) answer {
		return answer{Body: `{"installation_id":"a1","lease_renewed":true,"state":"RECOVERED",
			"lease_expires_at":"2026-02-03T12:05:00Z","next_heartbeat_at":"2026-02-03T12:01:00Z",
			"heartbeat_interval_seconds":60,"command":null,"refreshed_token":null,
			"registered":true,"lease_duration_seconds":300,
			"runtime_token":{"runtime_token":"srt_x","expires_at":"2026-05-03T12:00:00Z","token_version":1},
			"unknown_field":"ignored"}`}
	})
	c := &Client{Endpoint: srv.URL, AgentID: "a1", UserAgent: "beacon/test"}
	resp, err := c.Send(context.Background(), "k", Heartbeat{Status: StatusHealthy})
	require.NoError(t, err)
	require.Equal(t, &Response{
		InstallationID: "a1", LeaseRenewed: true, State: "RECOVERED",
		LeaseExpiresAt:           time.Date(2026, 2, 3, 12, 5, 0, 0, time.UTC),
		NextHeartbeatAt:          time.Date(2026, 2, 3, 12, 1, 0, 0, time.UTC),
		HeartbeatIntervalSeconds: 60, Registered: true, LeaseDurationSeconds: 300,
		RuntimeToken: &Token{RuntimeToken: "srt_x", ExpiresAt: time.Date(2026, 5, 3, 12, 0, 0, 0, time.UTC), TokenVersion: 1},
	}, resp)
	r := srv.next(t)
	require.Equal(t, "k", r.Auth)
	require.Equal(t, "healthy", r.Raw["status"])
}

func TestClientSendABS(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string
		want Response
	}{
		{"active", `{"status":"ACTIVE","agentId":"a1","nextDeadline":"2026-02-18T12:31:00Z"}`,
			Response{InstallationID: "a1", LeaseRenewed: true, State: "ACTIVE", NextHeartbeatAt: time.Date(2026, 2, 18, 12, 31, 0, 0, time.UTC)}},
		{"command", `{"status":"ACTIVE","agentId":"a1","nextDeadline":"2026-02-18T12:31:00Z","command":"pause"}`,
			Response{InstallationID: "a1", LeaseRenewed: true, State: "ACTIVE", NextHeartbeatAt: time.Date(2026, 2, 18, 12, 31, 0, 0, time.UTC), Command: CommandPause}},
		{"revoked", `{"status":"REVOKED","agentId":"a1","revoked":true,"reason":"r","shutdown_timeout_ms":5000}`,
			Response{InstallationID: "a1", State: "REVOKED", Revoked: true, Reason: "r", ShutdownTimeoutMs: ptr[int64](5000)}},
		{"revoked without grace", `{"status":"REVOKED","agentId":"a1","revoked":true,"reason":"r","shutdown_timeout_ms":0}`,
			Response{InstallationID: "a1", State: "REVOKED", Revoked: true, Reason: "r", ShutdownTimeoutMs: ptr[int64](0)}},
		{"revoked naming no timeout", `{"status":"REVOKED","agentId":"a1","revoked":true,"reason":"r"}`,
			Response{InstallationID: "a1", State: "REVOKED", Revoked: true, Reason: "r"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newScriptedServer(t, func(request) answer { return answer{Body: tc.body} })
			resp, err := (&Client{Endpoint: srv.URL, AgentID: "a1", Protocol: ProtocolABS}).Send(context.Background(), "k", Heartbeat{})
			require.NoError(t, err)
			require.Equal(t, tc.want, *resp)
		})
	}
}

func TestClientErrors(t *testing.T) {
	for _, code := range []int{400, 401, 403, 404, 405, 408, 413, 422, 429, 500, 502, 503, 504} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			srv := newScriptedServer(t, func(request) answer { return answer{Code: code, Body: `{"error":"msg"}`} })
			_, err := (&Client{Endpoint: srv.URL, AgentID: "a1"}).Send(context.Background(), "k", Heartbeat{})
			var se *StatusError
			require.ErrorAs(t, err, &se)
			require.Equal(t, code, se.Code)
			require.Equal(t, "msg", se.Message)
			want := code >= 500 || code == http.StatusTooManyRequests || code == http.StatusRequestTimeout
			require.Equal(t, want, Retryable(err))
		})
	}
	t.Run("non-JSON error body", func(t *testing.T) {
		srv := newScriptedServer(t, func(request) answer { return answer{Code: 502, Body: "<html>Bad Gateway</html>"} })
		_, err := (&Client{Endpoint: srv.URL, AgentID: "a1"}).Send(context.Background(), "k", Heartbeat{})
		require.EqualError(t, err, "sentinel answered 502 Bad Gateway: <html>Bad Gateway</html>")
	})
	t.Run("transport", func(t *testing.T) {
		_, err := (&Client{Endpoint: "http://127.0.0.1:1", AgentID: "a1"}).Send(context.Background(), "secret-key", Heartbeat{})
		require.Error(t, err)
		require.True(t, Retryable(err))
		require.NotContains(t, err.Error(), "secret-key")
	})
	t.Run("bad answer", func(t *testing.T) {
		srv := newScriptedServer(t, func(request) answer { return answer{Body: "not json"} })
		_, err := (&Client{Endpoint: srv.URL, AgentID: "a1"}).Send(context.Background(), "k", Heartbeat{})
		require.ErrorContains(t, err, "decode heartbeat answer")
		require.True(t, Retryable(err))
	})
	require.False(t, Retryable(nil))
	require.True(t, Retryable(errors.New("x")))
}

func ptr[T any](v T) *T { return &v }
