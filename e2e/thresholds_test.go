package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestThresholdsAgree runs the real sentinel with zombie_after 8 for the
// tenant, and two 1s agents that stop together: one asks for silent_after 3
// in its heartbeats, the other keeps its tenant's (5 and 8). At every poll
// the admin API's state, sentinel's deadline series as Prometheus scraped
// them and the alerts Prometheus fires from alerts/sentinel.rules.yml must
// tell the same story, and the alerts must reach Alertmanager's webhook.
func TestThresholdsAgree(t *testing.T) {
	s := startStack(t, func(o *stackOptions) { o.TenantHeartbeat = "{zombie_after: 8}" })
	for _, tc := range []struct {
		id             string
		body           string
		silent, zombie int
	}{
		{"own-thresholds", `{"status":"healthy","heartbeat_interval_seconds":1,"silent_after":3}`, 3, 8},
		{"tenant-thresholds", `{"status":"healthy","heartbeat_interval_seconds":1}`, 5, 8},
	} {
		t.Run(tc.id, func(t *testing.T) {
			t.Parallel()
			testThresholdsAgree(t, s, tc.id, tc.body, tc.silent, tc.zombie)
		})
	}
}

// adminAgent is the part of the admin API's agent detail this test reads.
type adminAgent struct {
	State           string    `json:"state"`
	MissedBeats     int64     `json:"missed_beats"`
	LastHeartbeatAt time.Time `json:"last_heartbeat_at"`
	LeaseExpiresAt  time.Time `json:"lease_expires_at"`
}

func (s *stack) adminAgent(t *testing.T, id string) adminAgent {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.sentinelURL+"/api/v1/installations/"+id, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := s.client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(raw))
	var a adminAgent
	require.NoError(t, json.Unmarshal(raw, &a), string(raw))
	return a
}

func testThresholdsAgree(t *testing.T, s *stack, id, body string, silent, zombie int) {
	s.mustBeat(t, id, body)
	beat := s.mustBeat(t, id, body)
	require.Equal(t, "ACTIVE", beat.State, beat.raw)

	// The heartbeat answer, the admin API and the metrics name the same
	// two moments, from the agent's thresholds (else its tenant's).
	admin := s.adminAgent(t, id)
	last := admin.LastHeartbeatAt
	leaseEnd := last.Add(time.Duration(silent) * time.Second)
	zombieAt := last.Add(time.Duration(zombie) * time.Second)
	require.Equal(t, "ACTIVE", admin.State)
	require.True(t, beat.LeaseExpiresAt.Equal(leaseEnd), "answer lease %s, want %s", beat.LeaseExpiresAt, leaseEnd)
	require.True(t, admin.LeaseExpiresAt.Equal(leaseEnd), "admin lease %s, want %s", admin.LeaseExpiresAt, leaseEnd)
	for metric, want := range map[string]time.Time{
		"sentinel_agent_lease_expiry_timestamp_seconds":    leaseEnd,
		"sentinel_agent_zombie_deadline_timestamp_seconds": zombieAt,
	} {
		q := fmt.Sprintf(`%s{tenant=%q,agent_id=%q}`, metric, tenant, id)
		waitFor(t, 10*time.Second, "Prometheus to scrape "+q+" after the last beat", func() bool {
			r := s.query(t, q)
			return len(r) == 1 && math.Abs(r[0].Value-float64(want.UnixNano())/1e9) < 1e-3
		})
	}

	// Step by step: alerts first, then the admin API, so that the admin
	// API, which Prometheus follows by a scrape and an evaluation, is
	// always at least as far along as the alerts.
	var sawSilent, sawZombie bool
	var silentAlert, zombieAlert promAlert
	waitFor(t, 30*time.Second, "AgentZombie to fire and AgentSilent to resolve", func() bool {
		alerts := map[string]promAlert{}
		for _, a := range s.agentAlerts(t, id) {
			alerts[a.Labels["alertname"]] = a
		}
		state := s.adminAgent(t, id).State
		silentA, silentFiring := alerts["AgentSilent"]
		zombieA, zombieFiring := alerts["AgentZombie"]
		switch state {
		case "ACTIVE":
			require.Empty(t, alerts, "an alert while the admin API says ACTIVE")
		case "SILENT":
			require.False(t, zombieFiring, "AgentZombie while the admin API says SILENT")
		case "ZOMBIE":
		default:
			t.Fatalf("admin API state %s", state)
		}
		require.False(t, silentFiring && zombieFiring, "AgentSilent and AgentZombie together")
		if silentFiring {
			require.Contains(t, []string{"SILENT", "ZOMBIE"}, state, "AgentSilent while the admin API says %s", state)
			silentAlert, sawSilent = silentA, true
			if state == "SILENT" {
				// The step where both say SILENT.
				require.Contains(t, silentA.Annotations["description"], "It turns ZOMBIE at "+zombieAt.Format("2006-01-02"),
					"the description names the zombie deadline")
			}
		}
		if zombieFiring {
			require.Equal(t, "ZOMBIE", state)
			zombieAlert, sawZombie = zombieA, true
		}
		return zombieFiring
	})
	require.True(t, sawSilent, "AgentSilent never fired between the lease expiry and the zombie deadline")
	require.True(t, sawZombie)

	// Neither alert is early, and neither is later than a scrape and an
	// evaluation (1s each) after its moment, with slack for a loaded box.
	const lag = 4 * time.Second
	for _, c := range []struct {
		a    promAlert
		want time.Time
	}{{silentAlert, leaseEnd}, {zombieAlert, zombieAt}} {
		require.Equal(t, "firing", c.a.State)
		require.False(t, c.a.ActiveAt.Before(c.want), "%s active at %s, before %s", c.a.Labels["alertname"], c.a.ActiveAt, c.want)
		require.Less(t, c.a.ActiveAt.Sub(c.want), lag, "%s active at %s, long after %s", c.a.Labels["alertname"], c.a.ActiveAt, c.want)
	}
	require.Equal(t, agentAlertLabels("AgentSilent", id, "warning", "SILENT"), silentAlert.Labels)
	require.Equal(t, agentAlertLabels("AgentZombie", id, "critical", "ZOMBIE"), zombieAlert.Labels)
	requireMissedValue(t, silentAlert, float64(silent), float64(zombie))
	requireMissedValue(t, zombieAlert, float64(zombie), 1e9)
	requireAnnotations(t, silentAlert, id)
	require.False(t, strings.Contains(silentAlert.Annotations["description"], "zombie_after missed heartbeats"),
		"the description could not find the zombie deadline: %s", silentAlert.Annotations["description"])
	waitFor(t, 10*time.Second, "the webhook to receive AgentSilent and AgentZombie", func() bool {
		return s.hook.has("AgentSilent", id, "firing") && s.hook.has("AgentZombie", id, "firing")
	})
	t.Logf("%s: SILENT after %s (lease %ds), ZOMBIE after %s (deadline %ds)", id,
		silentAlert.ActiveAt.Sub(last).Round(time.Millisecond), silent,
		zombieAlert.ActiveAt.Sub(last).Round(time.Millisecond), zombie)

	a := s.mustBeat(t, id, `{"status":"shutdown","exit_code":0}`)
	require.Equal(t, "STOPPED", a.State, a.raw)
}
