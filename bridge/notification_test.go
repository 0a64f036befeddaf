package bridge

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

const validNotification = `{"version":"4","groupKey":"{}:{alertname=\"AgentSilent\"}","status":"firing","receiver":"sentinel",
"groupLabels":{"alertname":"AgentSilent"},"commonLabels":{},"commonAnnotations":{},"externalURL":"http://am:9093",
"alerts":[{"status":"firing","labels":{"alertname":"AgentSilent","tenant":"acme","agent_id":"a1","severity":"warning"},
"annotations":{"summary":"Agent is silent."},"startsAt":"2026-12-01T12:00:00Z","endsAt":"0001-01-01T00:00:00Z",
"generatorURL":"http://prom/graph","fingerprint":"0123456789abcdef"}],"truncatedAlerts":0}`

func TestDecodeNotification(t *testing.T) {
	n, err := DecodeNotification([]byte(validNotification))
	require.NoError(t, err)
	require.Len(t, n.Alerts, 1)
	require.Equal(t, "a1", n.Alerts[0].Labels["agent_id"])
	require.Equal(t, "0123456789abcdef", n.Alerts[0].Fingerprint)

	for _, tc := range []struct {
		name, body, want string
	}{
		{"empty", ``, "empty or truncated body"},
		{"not JSON", `{"version":`, "empty or truncated body"},
		{"syntax", `{"version":"4",}`, "invalid JSON at offset"},
		{"wrong type", `{"version":4}`, "field version must be string"},
		{"trailing", `{"version":"4","alerts":[]} {}`, "trailing data"},
		{"version 3", `{"version":"3","alerts":[]}`, `version must be "4"`},
		{"no version", `{"alerts":[]}`, `version must be "4"`},
		{"bad status", `{"version":"4","alerts":[{"status":"pending","labels":{"alertname":"X"},"startsAt":"2026-12-01T12:00:00Z"}]}`, "alerts[0].status must be firing or resolved"},
		{"no alertname", `{"version":"4","alerts":[{"status":"firing","labels":{},"startsAt":"2026-12-01T12:00:00Z"}]}`, "alerts[0] has no alertname"},
		{"no startsAt", `{"version":"4","alerts":[{"status":"firing","labels":{"alertname":"X"}}]}`, "alerts[0].startsAt is missing"},
		{"bad time", `{"version":"4","alerts":[{"status":"firing","labels":{"alertname":"X"},"startsAt":"yesterday secret-value"}]}`, "not RFC 3339"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeNotification([]byte(tc.body))
			require.Error(t, err)
			require.True(t, errors.Is(err, ErrMalformed))
			require.Contains(t, err.Error(), tc.want)
			require.NotContains(t, err.Error(), "secret-value")
		})
	}
}

func FuzzDecodeNotification(f *testing.F) {
	f.Add([]byte(validNotification))
	f.Add([]byte(`{"version":"4","alerts":[]}`))
	f.Add([]byte(`{"version":"4","alerts":[{"status":"resolved","labels":{"alertname":"Watchdog"},"startsAt":"2026-12-01T12:00:00Z"}]}`))
	f.Add([]byte(`{"version":"3"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		n, err := DecodeNotification(body)
		if err != nil {
			require.ErrorIs(t, err, ErrMalformed)
			return
		}
		// Whatever decodes must decide without panicking.
		plan := Decide(n, world{}.facts(), policy, t0)
		require.Len(t, plan.Outcomes, len(n.Alerts))
	})
}

func TestAlertKey(t *testing.T) {
	a := alert(AlertSilent, StatusFiring, agentA, t0)
	require.Equal(t, a.Fingerprint+"|2026-12-01T12:00:00Z|firing", AlertKey(a))
	b := a
	b.Status = StatusResolved
	require.NotEqual(t, AlertKey(a), AlertKey(b), "firing and resolved are two notifications")

	// Without a fingerprint (a hand-made payload), the labels stand for it.
	a.Fingerprint = ""
	c := alert(AlertSilent, StatusFiring, agentA, t0)
	c.Fingerprint = ""
	require.Equal(t, AlertKey(a), AlertKey(c))
	c.Labels["agent_id"] = "other"
	require.NotEqual(t, AlertKey(a), AlertKey(c))
}
