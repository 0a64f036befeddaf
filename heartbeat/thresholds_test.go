package heartbeat_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/fleet"
)

// TestAgentThresholds: the thresholds a heartbeat asks for are bounded by
// the configuration (1 ≤ silent_after < zombie_after ≤ max_zombie_after,
// 40 in the test configuration), a field left out is the tenant's, and a
// refused heartbeat changes nothing.
func TestAgentThresholds(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fields string // JSON members added to the body
		status int
		want   fleet.Thresholds // own thresholds kept (zero: none)
	}{
		{"none", ``, http.StatusOK, fleet.Thresholds{}},
		{"null is absent", `,"silent_after":null,"zombie_after":null`, http.StatusOK, fleet.Thresholds{}},
		{"silent only", `,"silent_after":3`, http.StatusOK, fleet.Thresholds{SilentAfter: 3, ZombieAfter: 15}},
		{"zombie only", `,"zombie_after":8`, http.StatusOK, fleet.Thresholds{SilentAfter: 5, ZombieAfter: 8}},
		{"both", `,"silent_after":2,"zombie_after":4`, http.StatusOK, fleet.Thresholds{SilentAfter: 2, ZombieAfter: 4}},
		{"the tenant's values", `,"silent_after":5,"zombie_after":15`, http.StatusOK, fleet.Thresholds{SilentAfter: 5, ZombieAfter: 15}},
		{"at the bounds", `,"silent_after":1,"zombie_after":40`, http.StatusOK, fleet.Thresholds{SilentAfter: 1, ZombieAfter: 40}},
		{"silent zero", `,"silent_after":0`, http.StatusUnprocessableEntity, fleet.Thresholds{}},
		{"silent negative", `,"silent_after":-1`, http.StatusUnprocessableEntity, fleet.Thresholds{}},
		{"zombie above max_zombie_after", `,"zombie_after":41`, http.StatusUnprocessableEntity, fleet.Thresholds{}},
		{"huge", `,"zombie_after":9223372036854775807`, http.StatusUnprocessableEntity, fleet.Thresholds{}},
		{"equal", `,"silent_after":4,"zombie_after":4`, http.StatusUnprocessableEntity, fleet.Thresholds{}},
		{"inverted", `,"silent_after":9,"zombie_after":4`, http.StatusUnprocessableEntity, fleet.Thresholds{}},
		{"silent above the tenant's zombie", `,"silent_after":15`, http.StatusUnprocessableEntity, fleet.Thresholds{}},
		{"fraction", `,"silent_after":2.5`, http.StatusBadRequest, fleet.Thresholds{}},
		{"string", `,"zombie_after":"8"`, http.StatusBadRequest, fleet.Thresholds{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			// A registered agent with thresholds of its own: a refused
			// heartbeat must leave them and its last heartbeat alone.
			before := fleet.Thresholds{SilentAfter: 6, ZombieAfter: 7}
			a := e.beacon("agent-1", acmeKey, `{"silent_after":6,"zombie_after":7}`)
			require.Equal(t, http.StatusOK, a.status, a.raw)
			e.clock.Advance(time.Minute)

			body := `{"status":"healthy","heartbeat_interval_seconds":20` + tc.fields + `}`
			for _, send := range []struct {
				name string
				do   func() *answer
			}{
				{"beacon", func() *answer { return e.beacon("agent-1", acmeKey, body) }},
				{"abs", func() *answer { return e.abs("agent-1", acmeKey, body) }},
			} {
				a := send.do()
				require.Equal(t, tc.status, a.status, "%s: %s", send.name, a.raw)
				ag, ok := e.agent("acme", "agent-1")
				require.True(t, ok)
				if tc.status != http.StatusOK {
					require.Equal(t, before, ag.OwnThresholds, send.name)
					require.Equal(t, t0, ag.LastHeartbeat, send.name)
					// The bound is named, never its configured value.
					require.NotContains(t, a.raw, "40", send.name)
					continue
				}
				require.Equal(t, tc.want, ag.OwnThresholds, send.name)
				if send.name == "beacon" {
					silent := ag.Thresholds(thresholdsOf(e)).SilentAfter
					require.Equal(t, rfc3339(e.clock.Now().Add(time.Duration(silent)*20*time.Second)), a.str("lease_expires_at"), a.raw)
				}
			}
		})
	}
}

func thresholdsOf(e *env) *fleet.ThresholdPolicy {
	return &fleet.ThresholdPolicy{
		Global: fleet.Thresholds{SilentAfter: e.cfg.Heartbeat.SilentAfter, ZombieAfter: e.cfg.Heartbeat.ZombieAfter},
	}
}

// TestThresholdsAgree follows two agents of one tenant with thresholds of
// its own, one of them asking for its own, through every view of their
// state: the heartbeat answers, the admin API and /metrics agree with the
// store at every step, and a crash and restart from the snapshot keep the
// agent's thresholds.
func TestThresholdsAgree(t *testing.T) {
	e := newEnv(t, withGlobexThresholds("{silent_after: 2, zombie_after: 8}"))
	for _, b := range []struct{ id, body string }{
		{"tenant", `{"heartbeat_interval_seconds":10}`},
		{"own", `{"heartbeat_interval_seconds":10,"silent_after":3,"zombie_after":5}`},
	} {
		a := e.beacon(b.id, globexKey, b.body)
		require.Equal(t, http.StatusOK, a.status, a.raw)
		require.Equal(t, "ACTIVE", a.str("state"))
	}
	lease := map[string]int{"tenant": 2, "own": 3}
	zombie := map[string]int{"tenant": 8, "own": 5}

	check := func(id, want string) {
		t.Helper()
		a := e.do(request{method: http.MethodGet, path: "/api/v1/installations/" + id, token: globexAdmin})
		require.Equal(t, http.StatusOK, a.status, a.raw)
		require.Equal(t, want, a.str("state"), "%s at %s", id, e.clock.Now())
		require.Equal(t, rfc3339(t0.Add(time.Duration(lease[id])*10*time.Second)), a.str("lease_expires_at"))
		require.Equal(t, rfc3339(t0.Add(time.Duration(zombie[id])*10*time.Second)), a.str("zombie_at"))
		require.Equal(t, float64(lease[id]), a.body["silent_after"])
		require.Equal(t, float64(zombie[id]), a.body["zombie_after"])

		metrics := e.scrape()
		for name, at := range map[string]int{
			"sentinel_agent_lease_expiry_timestamp_seconds":    lease[id],
			"sentinel_agent_zombie_deadline_timestamp_seconds": zombie[id],
		} {
			sample := name + `{agent_id="` + id + `",tenant="globex"} `
			i := strings.Index(metrics, sample)
			require.GreaterOrEqual(t, i, 0, "no %s", sample)
			line, _, _ := strings.Cut(metrics[i+len(sample):], "\n")
			v, err := strconv.ParseFloat(line, 64)
			require.NoError(t, err)
			require.Equal(t, float64(t0.Add(time.Duration(at)*10*time.Second).Unix()), v, sample)
		}
	}
	for _, step := range []struct {
		at          time.Duration
		tenant, own string
	}{
		{19 * time.Second, "ACTIVE", "ACTIVE"},
		{20 * time.Second, "SILENT", "ACTIVE"},
		{30 * time.Second, "SILENT", "SILENT"},
		{50 * time.Second, "SILENT", "ZOMBIE"},
	} {
		e.clock.Set(t0.Add(step.at))
		check("tenant", step.tenant)
		check("own", step.own)
		if step.at == 30*time.Second {
			e.restart(true) // the snapshot keeps the agent's thresholds
		}
	}
	// The first heartbeat after its own zombie_after (not its tenant's)
	// recovers the agent.
	a := e.beacon("own", globexKey, `{"heartbeat_interval_seconds":10}`)
	require.Equal(t, http.StatusOK, a.status, a.raw)
	require.Equal(t, "RECOVERED", a.str("state"), a.raw)
	// Like the interval, thresholds are per heartbeat: one without them
	// returns the agent to its tenant's.
	ag, _ := e.agent("globex", "own")
	require.Equal(t, fleet.Thresholds{}, ag.OwnThresholds)
	require.Equal(t, rfc3339(e.clock.Now().Add(20*time.Second)), a.str("lease_expires_at"))

	e.clock.Set(t0.Add(80 * time.Second))
	check("tenant", "ZOMBIE")
}
