package delivery_test

import (
	"encoding/json"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/delivery"
	"github.com/agentsentinel/sentinel/fleet"
)

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// decode encodes e as it is delivered and decodes it back into a map, so
// that the test sees the wire's field names and JSON types.
func decode(t *testing.T, e delivery.Event, wantEvent string) map[string]any {
	t.Helper()
	m, err := delivery.Encode(e)
	require.NoError(t, err)
	require.Equal(t, wantEvent, m.Event)
	require.Regexp(t, uuidV4, m.ID)
	var got map[string]any
	require.NoError(t, json.Unmarshal(m.Body, &got))
	require.Equal(t, wantEvent, got["event"])
	require.Equal(t, m.ID, got["eventId"])
	return got
}

func keys(m map[string]any) []string {
	k := make([]string, 0, len(m))
	for key := range m {
		k = append(k, key)
	}
	slices.Sort(k)
	return k
}

func TestEventShapes(t *testing.T) {
	at := time.Date(2026, 2, 18, 12, 35, 0, 0, time.FixedZone("CET", 3600))
	alert := &delivery.Alert{Name: "AgentSilent", Fingerprint: "3f2a1b0c9d8e7f60", StartsAt: at.Add(-time.Minute), GeneratorURL: "http://prometheus:9090/graph?g0.expr=x"}

	t.Run("state_change to SILENT with its alert", func(t *testing.T) {
		got := decode(t, delivery.NewStateChange(delivery.StateChangeInput{
			TenantID: "acme", AgentID: "my-agent-01", Sequence: 7,
			From: fleet.StateActive, To: fleet.StateSilent, MissedBeats: 5,
			LastSeenAt: at.Add(-5 * time.Minute), LastHeartbeatAt: at.Add(-10 * time.Minute),
			Outage: time.Hour, // not a recovery: ignored
			Alert:  alert, At: at,
		}), "heartbeat.state_change")
		require.Equal(t, []string{"agentId", "alert", "event", "eventId", "lastHeartbeatAt", "lastSeenAt",
			"missedBeats", "newState", "previousState", "sequence", "tenantId", "timestamp"}, keys(got))
		require.Equal(t, "acme", got["tenantId"])
		require.Equal(t, "my-agent-01", got["agentId"])
		require.Equal(t, 7.0, got["sequence"])
		require.Equal(t, "ACTIVE", got["previousState"])
		require.Equal(t, "SILENT", got["newState"])
		require.Equal(t, 5.0, got["missedBeats"])
		require.Equal(t, "2026-02-18T11:35:00Z", got["timestamp"], "UTC, RFC 3339")
		require.Equal(t, "2026-02-18T11:30:00Z", got["lastSeenAt"])
		require.Equal(t, "2026-02-18T11:25:00Z", got["lastHeartbeatAt"])
		require.Equal(t, map[string]any{"name": "AgentSilent", "fingerprint": "3f2a1b0c9d8e7f60",
			"startsAt": "2026-02-18T11:34:00Z", "generatorURL": "http://prometheus:9090/graph?g0.expr=x"}, got["alert"])
	})
	for _, to := range []fleet.State{fleet.StateActive, fleet.StateRecovered} {
		t.Run("state_change recovery to "+to.String(), func(t *testing.T) {
			got := decode(t, delivery.NewStateChange(delivery.StateChangeInput{
				TenantID: "acme", AgentID: "a", Sequence: 8, From: fleet.StateZombie, To: to,
				LastSeenAt: at, LastHeartbeatAt: at, Outage: 912*time.Second + 400*time.Millisecond, At: at,
			}), "heartbeat.state_change")
			require.Equal(t, []string{"agentId", "event", "eventId", "lastHeartbeatAt", "lastSeenAt",
				"missedBeats", "newState", "outageSeconds", "previousState", "sequence", "tenantId", "timestamp"}, keys(got))
			require.Equal(t, 912.0, got["outageSeconds"])
			require.Equal(t, to.String(), got["newState"])
		})
	}
	t.Run("agent.revoked", func(t *testing.T) {
		got := decode(t, delivery.NewAgentRevoked("acme", "a", 9, "Revoked by alert AgentZombie", 5*time.Second, delivery.SourceAlert("AgentZombie"), at), "agent.revoked")
		require.Equal(t, []string{"agentId", "event", "eventId", "reason", "revokedAt", "sequence",
			"shutdownTimeoutMs", "source", "tenantId"}, keys(got))
		require.Equal(t, 5000.0, got["shutdownTimeoutMs"])
		require.Equal(t, "alert:AgentZombie", got["source"])
		require.Equal(t, "2026-02-18T11:35:00Z", got["revokedAt"])
		got = decode(t, delivery.NewAgentRevoked("acme", "a", 10, "by hand", 0, delivery.SourceAdmin, at), "agent.revoked")
		require.Equal(t, "admin", got["source"])
	})
	t.Run("pipeline.silent", func(t *testing.T) {
		got := decode(t, delivery.NewPipelineSilent("acme", 3, at.Add(-6*time.Minute), 5*time.Minute, at), "pipeline.silent")
		require.Equal(t, []string{"event", "eventId", "lastWatchdogAt", "sequence", "tenantId", "timeoutSeconds", "timestamp"}, keys(got))
		require.Equal(t, 300.0, got["timeoutSeconds"])
		require.Equal(t, "2026-02-18T11:29:00Z", got["lastWatchdogAt"])
		got = decode(t, delivery.NewPipelineSilent("acme", 3, time.Time{}, 5*time.Minute, at), "pipeline.silent")
		require.NotContains(t, got, "lastWatchdogAt", "never seen: absent, not year 1")
	})
	t.Run("pipeline.restored", func(t *testing.T) {
		got := decode(t, delivery.NewPipelineRestored("acme", 4, 7*time.Minute, at), "pipeline.restored")
		require.Equal(t, []string{"event", "eventId", "sequence", "silentSeconds", "tenantId", "timestamp"}, keys(got))
		require.Equal(t, 420.0, got["silentSeconds"])
	})
	t.Run("webhook.test", func(t *testing.T) {
		got := decode(t, delivery.NewWebhookTest("acme", at), "webhook.test")
		require.Equal(t, []string{"event", "eventId", "message", "sequence", "tenantId", "timestamp"}, keys(got))
		require.Equal(t, 0.0, got["sequence"])
	})
}

func TestNewEventIDUnique(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := delivery.NewEventID()
		require.Regexp(t, uuidV4, id)
		require.False(t, seen[id])
		seen[id] = true
	}
}
