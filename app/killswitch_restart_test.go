package app_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// crash stops a running App without closing it (no final snapshot, the
// ledger left as the last acknowledged write made it) and starts a new one
// on the same storage.
func (e *env) crash(s *running) *running {
	e.t.Helper()
	s.server.Close()
	s.app.Crash()
	return e.start()
}

// Every kill-switch change, not only revocations and commands, survives
// crashes in a row, including the compaction each start performs.
func TestKillSwitchChangesSurviveCrashes(t *testing.T) {
	e := newEnv(t, baseConfig)
	s := e.start()
	toks := map[string]string{}
	for _, id := range []string{"reinstated", "forgotten", "cmd-replaced", "all-1", "all-2", "plain"} {
		toks[id] = s.register(id, acmeKey, nil)
	}
	g := s.register("globex-agent", globexKey, nil)
	require.NoError(t, s.app.Snapshot())
	e.clock.Advance(time.Second)

	ok := func(r response) {
		t.Helper()
		require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	}
	ok(s.do(http.MethodPost, "/api/v1/installations/reinstated/revoke", acmeAdmin, nil))
	ok(s.do(http.MethodDelete, "/api/v1/installations/reinstated/revoke", acmeAdmin, nil))
	ok(s.do(http.MethodDelete, "/api/v1/installations/forgotten", acmeAdmin, nil))
	ok(s.do(http.MethodPost, "/api/v1/installations/cmd-replaced/command", acmeAdmin, map[string]any{"command": "pause"}))
	ok(s.do(http.MethodPost, "/api/v1/installations/cmd-replaced/command", acmeAdmin, map[string]any{"command": "terminate"}))
	r := s.do(http.MethodPost, "/api/v1/revoke-all", acmeAdmin, map[string]any{"reason": "workspace stop", "shutdown_timeout_ms": 100})
	ok(r)
	// reinstated, cmd-replaced, all-1, all-2 and plain: forgotten is gone.
	require.Equal(t, 5.0, r.json(t)["revoked"])
	// Reinstate two of them after the workspace-wide stop.
	ok(s.do(http.MethodDelete, "/api/v1/installations/reinstated/revoke", acmeAdmin, nil))
	ok(s.do(http.MethodDelete, "/api/v1/installations/plain/revoke", acmeAdmin, nil))

	check := func(s *running) {
		t.Helper()
		require.Equal(t, http.StatusNotFound, s.installation("forgotten").status, "a forgotten agent stays forgotten")
		for _, id := range []string{"reinstated", "plain"} {
			d := s.installation(id).json(t)
			require.Nil(t, d["revocation"], id)
			require.Equal(t, "ACTIVE", d["state"], id)
		}
		for _, id := range []string{"cmd-replaced", "all-1", "all-2"} {
			d := s.installation(id).json(t)
			rev, _ := d["revocation"].(map[string]any)
			require.NotNil(t, rev, id)
			require.Equal(t, "workspace stop", rev["reason"], id)
			require.Equal(t, 100.0, rev["shutdown_timeout_ms"], id)
		}
		d := s.installation("cmd-replaced").json(t)
		require.Equal(t, "terminate", d["pending_command"].(map[string]any)["command"], "the newer command replaced the older")
		// revoke-all is per tenant.
		gd := s.do(http.MethodGet, "/api/v1/installations/globex-agent", "globex-admin-1", nil).json(t)
		require.Nil(t, gd["revocation"])
	}
	check(s)

	// Two crashes in a row: the second start replays the journal the first
	// one compacted, against a snapshot that still holds the forgotten agent.
	for range 2 {
		e.clock.Advance(time.Second)
		s = e.crash(s)
		require.Equal(t, 6, s.app.Store().Len())
		check(s)
	}

	// The agents themselves see it.
	m := s.beat("all-1", toks["all-1"], nil)
	require.Equal(t, true, m["revoked"])
	require.Equal(t, "workspace stop", m["reason"])
	require.Equal(t, "ACTIVE", s.beat("plain", toks["plain"], nil)["state"])
	s.beat("globex-agent", g, nil)
	// A forgotten agent's old runtime token is refused, across restarts
	// too; registered again with the tenant key, it starts afresh, unrevoked.
	r = s.do(http.MethodPost, "/api/v1/installations/forgotten/heartbeat", toks["forgotten"], nil)
	require.Equal(t, http.StatusUnauthorized, r.status, "%s", r.body)
	m = s.beat("forgotten", acmeKey, nil)
	require.Equal(t, true, m["registered"])
	require.Equal(t, "ACTIVE", m["state"])
	require.NoError(t, s.app.Snapshot())

	// And a forgotten agent that came back is not forgotten again by a
	// restart: its heartbeat is newer than the forget.
	e.clock.Advance(time.Second)
	s = e.crash(s)
	require.Equal(t, http.StatusOK, s.installation("forgotten").status)
}

// A command acknowledged by the agent before a graceful restart is not
// delivered again; one carried but not yet acknowledged is (at least once).
func TestCommandAcknowledgementAcrossRestart(t *testing.T) {
	e := newEnv(t, baseConfig)
	s := e.start()
	acked := s.register("acked", acmeKey, nil)
	carried := s.register("carried", acmeKey, nil)
	for _, id := range []string{"acked", "carried"} {
		r := s.do(http.MethodPost, "/api/v1/installations/"+id+"/command", acmeAdmin, map[string]any{"command": "pause"})
		require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	}
	require.Equal(t, "pause", s.beat("acked", acked, nil)["command"])
	require.Nil(t, s.beat("acked", acked, nil)["command"], "acknowledged")
	require.Equal(t, "pause", s.beat("carried", carried, nil)["command"])

	s.close()
	s = e.start()
	require.Nil(t, s.installation("acked").json(t)["pending_command"])
	require.Nil(t, s.beat("acked", acked, nil)["command"])
	require.Equal(t, "pause", s.installation("carried").json(t)["pending_command"].(map[string]any)["command"])
	require.Equal(t, "pause", s.beat("carried", carried, nil)["command"], "redelivered: at least once")
	require.Nil(t, s.beat("carried", carried, nil)["command"])
}

// An agent registered after the last snapshot of a crashed sentinel is not in
// the store until it beats again, but the kill switch still reaches it:
// revoke-all, revoke and command cover it, and its next heartbeat (with the
// runtime token issued before the crash) is answered accordingly. Its
// registration survives a second crash and the compaction at each start.
func TestKillSwitchReachesAgentsRegisteredAfterTheSnapshot(t *testing.T) {
	e := newEnv(t, baseConfig)
	s := e.start()
	s.register("snapshotted", acmeKey, nil)
	require.NoError(t, s.app.Snapshot())
	e.clock.Advance(time.Second)
	late := s.register("late", acmeKey, nil)
	lateCmd := s.register("late-cmd", acmeKey, nil)
	// Registrations are journaled without waiting, in batches gathered for
	// up to 100 ms, which no other commit (this command's) waits for: a
	// real crash may lose the last ones, as the durability contract allows.
	// Crash stops the kill switch, which commits what it has queued.
	r := s.do(http.MethodPost, "/api/v1/installations/snapshotted/command", acmeAdmin, map[string]any{"command": "resume"})
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)

	s = e.crash(s)
	require.Equal(t, http.StatusNotFound, s.installation("late").status, "not in the store before it beats again")
	s = e.crash(s) // the journal's registrations survive a start's compaction

	r = s.do(http.MethodPost, "/api/v1/installations/late-cmd/command", acmeAdmin, map[string]any{"command": "pause"})
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	r = s.do(http.MethodPost, "/api/v1/revoke-all", acmeAdmin, map[string]any{"reason": "stop everything"})
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	require.Equal(t, 3.0, r.json(t)["revoked"], "snapshotted, late and late-cmd")

	b := s.beat("late", late, nil)
	require.Equal(t, true, b["revoked"], "%v", b)
	require.Equal(t, "stop everything", b["reason"])
	b = s.beat("late-cmd", lateCmd, nil)
	require.Equal(t, true, b["revoked"], "%v", b)
	d := s.installation("late-cmd").json(t)
	require.Equal(t, "REVOKED", d["state"])
	cmd, _ := d["pending_command"].(map[string]any)
	require.Equal(t, "pause", cmd["command"])
}
