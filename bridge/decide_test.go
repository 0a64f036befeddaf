package bridge

import (
	"testing"
	"time"

	"github.com/prometheus/alertmanager/template"
	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/fleet"
)

var (
	t0     = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	agentA = fleet.Key{Tenant: "acme", AgentID: "a1"}
	agentB = fleet.Key{Tenant: "acme", AgentID: "b2"}
	policy = Policy{KillSwitchAlertnames: []string{AlertZombie}, ShutdownTimeout: 5 * time.Second}
)

func alert(name, status string, k fleet.Key, startsAt time.Time) template.Alert {
	labels := template.KV{"alertname": name}
	if k.Tenant != "" {
		labels[labelTenant] = k.Tenant
	}
	if k.AgentID != "" {
		labels[labelAgentID] = k.AgentID
	}
	return template.Alert{
		Status: status, Labels: labels, Annotations: template.KV{},
		StartsAt: startsAt, Fingerprint: name + "-" + k.AgentID, GeneratorURL: "http://prom/graph",
	}
}

type world struct {
	agents map[fleet.Key]AgentFacts
	seen   map[string]bool
}

func (w world) facts() Facts {
	return Facts{
		TenantKnown: func(t string) bool { return t == "acme" },
		Agent: func(k fleet.Key) (AgentFacts, bool) {
			a, ok := w.agents[k]
			return a, ok
		},
		AlertSeen: func(key string) bool { return w.seen[key] },
	}
}

func active() AgentFacts {
	return AgentFacts{
		Announced: fleet.StateActive, LastHeartbeat: t0.Add(-6 * time.Second), Interval: time.Second,
		Thresholds: fleet.Thresholds{SilentAfter: 5, ZombieAfter: 15},
	}
}

func with(f AgentFacts, change func(*AgentFacts)) AgentFacts {
	change(&f)
	return f
}

func TestDecide(t *testing.T) {
	firing := func(name string, k fleet.Key) template.Alert {
		return alert(name, StatusFiring, k, t0.Add(-time.Second))
	}
	resolved := func(name string, k fleet.Key) template.Alert {
		return alert(name, StatusResolved, k, t0.Add(-time.Second))
	}
	type transition struct {
		k        fleet.Key
		from, to fleet.State
	}
	for _, tc := range []struct {
		name        string
		alerts      []template.Alert
		agents      map[fleet.Key]AgentFacts
		seen        map[string]bool
		transitions []transition
		revoked     []fleet.Key
		results     []Result
		watchdog    bool
	}{
		{
			name:        "silent firing announces SILENT",
			alerts:      []template.Alert{firing(AlertSilent, agentA)},
			agents:      map[fleet.Key]AgentFacts{agentA: active()},
			transitions: []transition{{agentA, fleet.StateActive, fleet.StateSilent}},
			results:     []Result{ResultApplied},
		},
		{
			name:   "silent firing again announces nothing",
			alerts: []template.Alert{firing(AlertSilent, agentA)},
			agents: map[fleet.Key]AgentFacts{agentA: with(active(), func(f *AgentFacts) {
				f.Announced, f.AnnouncedAt = fleet.StateSilent, t0.Add(-time.Second)
			})},
			results: []Result{ResultNoChange},
		},
		{
			name:        "zombie firing announces ZOMBIE and revokes",
			alerts:      []template.Alert{firing(AlertZombie, agentA)},
			agents:      map[fleet.Key]AgentFacts{agentA: with(active(), func(f *AgentFacts) { f.Announced = fleet.StateSilent })},
			transitions: []transition{{agentA, fleet.StateSilent, fleet.StateZombie}},
			revoked:     []fleet.Key{agentA},
			results:     []Result{ResultApplied},
		},
		{
			name:        "a group with both alerts announces SILENT then ZOMBIE whatever the order",
			alerts:      []template.Alert{firing(AlertZombie, agentA), firing(AlertSilent, agentA)},
			agents:      map[fleet.Key]AgentFacts{agentA: active()},
			transitions: []transition{{agentA, fleet.StateActive, fleet.StateSilent}, {agentA, fleet.StateSilent, fleet.StateZombie}},
			revoked:     []fleet.Key{agentA},
			results:     []Result{ResultApplied, ResultApplied},
		},
		{
			name:    "a silent alert after the zombie announcement is stale news",
			alerts:  []template.Alert{firing(AlertSilent, agentA)},
			agents:  map[fleet.Key]AgentFacts{agentA: with(active(), func(f *AgentFacts) { f.Announced = fleet.StateZombie })},
			results: []Result{ResultNoChange},
		},
		{
			name:   "a firing alert that began before the recovery is stale",
			alerts: []template.Alert{firing(AlertSilent, agentA)},
			agents: map[fleet.Key]AgentFacts{agentA: with(active(), func(f *AgentFacts) {
				f.Announced, f.AnnouncedAt = fleet.StateActive, t0
			})},
			results: []Result{ResultStale},
		},
		{
			name:   "a new outage after a recovery is announced",
			alerts: []template.Alert{firing(AlertSilent, agentA)},
			agents: map[fleet.Key]AgentFacts{agentA: with(active(), func(f *AgentFacts) {
				f.Announced, f.AnnouncedAt = fleet.StateRecovered, t0.Add(-time.Minute)
			})},
			transitions: []transition{{agentA, fleet.StateRecovered, fleet.StateSilent}},
			results:     []Result{ResultApplied},
		},
		{
			name:    "resolved alerts announce nothing and never reinstate",
			alerts:  []template.Alert{resolved(AlertZombie, agentA), resolved(AlertSilent, agentA)},
			agents:  map[fleet.Key]AgentFacts{agentA: with(active(), func(f *AgentFacts) { f.Announced, f.Revoked = fleet.StateZombie, true })},
			results: []Result{ResultNoChange, ResultNoChange},
		},
		{
			name:   "an already revoked agent is neither revoked again nor announced",
			alerts: []template.Alert{firing(AlertZombie, agentA)},
			agents: map[fleet.Key]AgentFacts{agentA: with(active(), func(f *AgentFacts) {
				f.Revoked = true
			})},
			results: []Result{ResultNoChange},
		},
		{
			name:        "kill_switch=revoke on any alert revokes",
			alerts:      []template.Alert{with2(firing("AgentLooping", agentA), func(a *template.Alert) { a.Labels[labelKillSwitch] = "revoke" })},
			agents:      map[fleet.Key]AgentFacts{agentA: active()},
			revoked:     []fleet.Key{agentA},
			results:     []Result{ResultApplied},
			transitions: nil,
		},
		{
			name:    "a seen alert key is a duplicate",
			alerts:  []template.Alert{firing(AlertSilent, agentA)},
			agents:  map[fleet.Key]AgentFacts{agentA: active()},
			seen:    map[string]bool{AlertKey(firing(AlertSilent, agentA)): true},
			results: []Result{ResultDuplicate},
		},
		{
			name:        "the same alert twice in one notification counts once",
			alerts:      []template.Alert{firing(AlertSilent, agentA), firing(AlertSilent, agentA)},
			agents:      map[fleet.Key]AgentFacts{agentA: active()},
			transitions: []transition{{agentA, fleet.StateActive, fleet.StateSilent}},
			results:     []Result{ResultApplied, ResultDuplicate},
		},
		{
			name: "bad alerts never stop the rest",
			alerts: []template.Alert{
				firing(AlertSilent, fleet.Key{}),
				firing(AlertSilent, fleet.Key{Tenant: "other", AgentID: "x"}),
				firing(AlertSilent, fleet.Key{Tenant: "acme", AgentID: "../x"}),
				firing(AlertSilent, fleet.Key{Tenant: "acme", AgentID: "ghost"}),
				firing(AlertSilent, agentB),
			},
			agents:      map[fleet.Key]AgentFacts{agentB: active()},
			transitions: []transition{{agentB, fleet.StateActive, fleet.StateSilent}},
			results:     []Result{ResultMissingLabels, ResultUnknownTenant, ResultInvalidAgent, ResultUnknownAgent, ResultApplied},
		},
		{
			name:     "watchdog",
			alerts:   []template.Alert{firing(AlertWatchdog, fleet.Key{})},
			results:  []Result{ResultWatchdog},
			watchdog: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := &Notification{Data: template.Data{Alerts: tc.alerts}, Version: "4"}
			plan := Decide(n, world{agents: tc.agents, seen: tc.seen}.facts(), policy, t0)

			var got []transition
			for _, tr := range plan.Transitions {
				require.Contains(t, tr.Expect, tr.From)
				got = append(got, transition{tr.Key, tr.From, tr.To})
			}
			require.Equal(t, tc.transitions, got)
			var revoked []fleet.Key
			for _, r := range plan.Revocations {
				revoked = append(revoked, r.Key)
				require.Equal(t, "alert:"+r.Alert.Name, r.Revocation.Source)
				require.Equal(t, "Revoked by alert "+r.Alert.Name, r.Revocation.Reason)
				require.Equal(t, 5*time.Second, r.Revocation.ShutdownTimeout)
			}
			require.Equal(t, tc.revoked, revoked)
			var results []Result
			for i, o := range plan.Outcomes {
				require.Equal(t, i, o.Index)
				results = append(results, o.Result)
			}
			require.Equal(t, tc.results, results)
			require.Equal(t, tc.watchdog, !plan.WatchdogAt.IsZero())
		})
	}
}

func with2(a template.Alert, change func(*template.Alert)) template.Alert {
	change(&a)
	return a
}

func TestDecideRevocationReasonAndEventFields(t *testing.T) {
	a := alert(AlertZombie, StatusFiring, agentA, t0.Add(-time.Minute))
	a.Annotations[annotationKillSwitchReason] = "runaway spend"
	n := &Notification{Data: template.Data{Alerts: []template.Alert{a}}, Version: "4", TruncatedAlerts: 3}
	plan := Decide(n, world{agents: map[fleet.Key]AgentFacts{agentA: active()}}.facts(), policy, t0)

	require.Len(t, plan.Revocations, 1)
	require.Equal(t, "runaway spend", plan.Revocations[0].Revocation.Reason)
	require.Equal(t, t0, plan.Revocations[0].Revocation.RevokedAt)
	require.Len(t, plan.Transitions, 1)
	tr := plan.Transitions[0]
	require.Equal(t, int64(6), tr.MissedBeats, "from this replica's own last heartbeat")
	require.Equal(t, AlertRef{Name: AlertZombie, Fingerprint: a.Fingerprint, StartsAt: a.StartsAt, GeneratorURL: a.GeneratorURL}, tr.Alert)
	require.Equal(t, []string{AlertKey(a)}, plan.AlertKeys)
	require.Equal(t, uint64(3), plan.Truncated)
}

func TestDecideMissedBeatsWithoutLocalHeartbeat(t *testing.T) {
	ag := AgentFacts{Announced: fleet.StateActive, Thresholds: fleet.Thresholds{SilentAfter: 3, ZombieAfter: 8}}
	n := &Notification{Data: template.Data{Alerts: []template.Alert{
		alert(AlertSilent, StatusFiring, agentA, t0), alert(AlertZombie, StatusFiring, agentA, t0),
	}}, Version: "4"}
	plan := Decide(n, world{agents: map[fleet.Key]AgentFacts{agentA: ag}}.facts(), Policy{}, t0)
	require.Len(t, plan.Transitions, 2)
	require.Equal(t, int64(3), plan.Transitions[0].MissedBeats)
	require.Equal(t, int64(8), plan.Transitions[1].MissedBeats)
	require.Empty(t, plan.Revocations, "no kill-switch alert names configured")
}
