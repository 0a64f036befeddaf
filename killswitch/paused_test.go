package killswitch

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/heartbeat"
)

// Paused (SPEC 3): set once the agent beat after being handed "pause", shown
// by the list and the detail, kept while the agent goes SILENT, cleared as
// soon as "resume" or "terminate" is handed to it.
func TestPaused(t *testing.T) {
	e := newEnv(t)
	e.beat("acme", "a1")
	paused := func() (detail, list bool, state string) {
		t.Helper()
		d := e.do(http.MethodGet, "/api/v1/installations/a1", acmeAdmin, "")
		require.Equal(t, http.StatusOK, d.status, d.raw)
		l := e.do(http.MethodGet, "/api/v1/installations", acmeAdmin, "")
		require.Equal(t, http.StatusOK, l.status, l.raw)
		row := l.body["installations"].([]any)[0].(map[string]any)
		return d.body["paused"].(bool), row["paused"].(bool), d.str("state")
	}
	command := func(cmd string) {
		t.Helper()
		a := e.do(http.MethodPost, "/api/v1/installations/a1/command", acmeAdmin, `{"command":"`+cmd+`"}`)
		require.Equal(t, http.StatusOK, a.status, a.raw)
	}
	requirePaused := func(want bool) {
		t.Helper()
		d, l, _ := paused()
		require.Equal(t, want, d, "detail")
		require.Equal(t, want, l, "list")
	}

	requirePaused(false)
	command("pause")
	requirePaused(false)
	e.beat("acme", "a1") // the answer hands "pause"
	requirePaused(false)
	e.beat("acme", "a1") // the agent beat after it: paused
	requirePaused(true)

	// A paused agent that stops beating is still SILENT, and still paused.
	e.clock.Advance(6 * time.Minute)
	_, _, state := paused()
	require.Equal(t, "SILENT", state)
	requirePaused(true)

	command("resume")
	requirePaused(true)
	e.beat("acme", "a1") // handed "resume": no longer paused
	requirePaused(false)
	e.beat("acme", "a1")

	command("pause")
	e.beat("acme", "a1")
	e.beat("acme", "a1")
	requirePaused(true)
	command("terminate")
	e.beat("acme", "a1")
	requirePaused(false)

	// It survives a snapshot and a restart.
	command("pause")
	e.beat("acme", "a1")
	e.beat("acme", "a1")
	e.restart(e.snapshot())
	requirePaused(true)
}

// missed_beats is a liveness figure: null for STOPPED and REVOKED agents.
func TestMissedBeatsOnlyWhereMeaningful(t *testing.T) {
	e := newEnv(t)
	for _, id := range []string{"live", "stopped", "revoked"} {
		e.beat("acme", id)
	}
	_, err := e.store.Beat(&heartbeat.BeatRequest{Key: key("acme", "stopped"), Time: e.clock.Now(), Interval: time.Minute,
		Status: heartbeat.StatusShutdown}, thresholds)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, e.do(http.MethodPost, "/api/v1/installations/revoked/revoke", acmeAdmin, "").status)
	e.clock.Advance(7 * time.Minute)
	for id, want := range map[string]any{"live": float64(7), "stopped": nil, "revoked": nil} {
		d := e.do(http.MethodGet, "/api/v1/installations/"+id, acmeAdmin, "")
		require.Equal(t, http.StatusOK, d.status, d.raw)
		require.Contains(t, d.body, "missed_beats")
		require.Equal(t, want, d.body["missed_beats"], id)
	}
}
