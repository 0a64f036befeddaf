package bridge

import (
	"fmt"
	"slices"
	"time"

	"github.com/prometheus/alertmanager/template"

	"github.com/agentsentinel/sentinel/fleet"
)

// Alert names and labels the bridge understands (the rules in alerts/).
const (
	AlertSilent   = "AgentSilent"
	AlertZombie   = "AgentZombie"
	AlertWatchdog = "Watchdog"

	labelTenant                = "tenant"
	labelAgentID               = "agent_id"
	labelKillSwitch            = "kill_switch"
	annotationKillSwitchReason = "kill_switch_reason"
)

// Result is the outcome of one alert (or of a whole notification) as
// counted in sentinel_alertmanager_notifications_total{result}.
type Result string

// Results of Decide, one per alert, plus ResultTruncated once per
// notification that Alertmanager truncated.
const (
	// ResultApplied: the alert changed something (a transition, a revocation).
	ResultApplied Result = "applied"
	// ResultNoChange: understood, nothing to do (a repeat, a resolved alert,
	// a state already announced).
	ResultNoChange Result = "no_change"
	// ResultDuplicate: this (fingerprint, startsAt, status) was processed before.
	ResultDuplicate Result = "duplicate"
	// ResultStale: a firing alert about an outage that a heartbeat has ended.
	ResultStale Result = "stale"
	// ResultWatchdog: the pipeline's own heartbeat.
	ResultWatchdog Result = "watchdog"
	// ResultMissingLabels: no tenant or agent_id label (not an agent alert).
	ResultMissingLabels Result = "missing_labels"
	// ResultUnknownTenant: the tenant label names no configured tenant.
	ResultUnknownTenant Result = "unknown_tenant"
	// ResultUnknownAgent: the agent is not known (never registered, or forgotten).
	ResultUnknownAgent Result = "unknown_agent"
	// ResultInvalidAgent: the agent_id label is not a valid agent id.
	ResultInvalidAgent Result = "invalid_agent_id"
	// ResultTruncated: Alertmanager left alerts out of the notification.
	ResultTruncated Result = "truncated"
)

// AgentFacts is what the bridge knows about an agent when it decides.
type AgentFacts struct {
	// Announced is the state last announced to subscribers; fleet.StateActive
	// when nothing was ever announced.
	Announced fleet.State
	// AnnouncedAt is when Announced was committed (zero if never).
	AnnouncedAt time.Time
	Revoked     bool
	// LastHeartbeat and Interval are zero when this replica has not seen the
	// agent beat (it is known from the ledger only).
	LastHeartbeat time.Time
	Interval      time.Duration
	Thresholds    fleet.Thresholds
}

// Facts answers Decide's questions about the current durable state. The
// functions are called only during Decide and must not block on storage.
type Facts struct {
	TenantKnown func(tenant string) bool
	Agent       func(fleet.Key) (AgentFacts, bool)
	AlertSeen   func(key string) bool
}

// Policy is the configured kill switch of the bridge.
type Policy struct {
	// KillSwitchAlertnames revoke the agent when they fire.
	KillSwitchAlertnames []string
	ShutdownTimeout      time.Duration
}

// AlertRef is the alert that caused a change, as events carry it.
type AlertRef struct {
	Name         string
	Fingerprint  string
	StartsAt     time.Time
	GeneratorURL string
}

// Transition is an announcement to make: a compare-and-set of the agent's
// announced state from one of Expect to To.
type Transition struct {
	Key           fleet.Key
	Expect        []fleet.State
	From, To      fleet.State
	MissedBeats   int64
	LastHeartbeat time.Time
	Alert         AlertRef
}

// Revocation is a kill-switch revocation caused by an alert.
type Revocation struct {
	Key        fleet.Key
	Revocation fleet.Revocation
	Alert      AlertRef
}

// AlertOutcome is what Decide concluded about one alert.
type AlertOutcome struct {
	Index  int
	Name   string
	Key    fleet.Key // zero for alerts without agent labels
	Result Result
}

// Plan is everything one notification should change, to be committed in
// one durable write, and how each alert was classified.
type Plan struct {
	Transitions []Transition
	Revocations []Revocation
	// AlertKeys are the idempotency keys to record as seen.
	AlertKeys []string
	// WatchdogAt is the newest firing Watchdog's time, zero if none.
	WatchdogAt time.Time
	Outcomes   []AlertOutcome
	Truncated  uint64
}

// Empty reports whether the plan changes no durable state.
func (p *Plan) Empty() bool {
	return len(p.Transitions) == 0 && len(p.Revocations) == 0 && len(p.AlertKeys) == 0 && p.WatchdogAt.IsZero()
}

// upStates may turn SILENT or ZOMBIE: nothing announced, or a recovery.
var upStates = []fleet.State{fleet.StateActive, fleet.StateRecovered}

// Decide turns a notification into the changes it calls for. It is pure:
// everything it knows about the current state comes from facts, and the
// returned plan is applied by the caller in one ledger write whose
// compare-and-set operations make a concurrent, identical decision (two
// Alertmanagers, two replicas) announce once.
//
// Within a notification, alerts are taken in a fixed order (SILENT before
// ZOMBIE, then by index) so that a group holding both announces SILENT then
// ZOMBIE, never ZOMBIE then a stale SILENT.
func Decide(n *Notification, facts Facts, policy Policy, now time.Time) Plan {
	plan := Plan{Truncated: n.TruncatedAlerts}
	order := make([]int, len(n.Alerts))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		return alertRank(n.Alerts[a]) - alertRank(n.Alerts[b])
	})

	// Provisional per-agent state within this notification.
	announced := map[fleet.Key]fleet.State{}
	revoked := map[fleet.Key]bool{}
	seen := map[string]bool{}

	for _, i := range order {
		a := n.Alerts[i]
		name := a.Labels["alertname"]
		out := AlertOutcome{Index: i, Name: name}
		key := AlertKey(a)
		if name == AlertWatchdog {
			out.Result = ResultWatchdog
			if a.Status == StatusFiring && now.After(plan.WatchdogAt) {
				plan.WatchdogAt = now
			}
			plan.Outcomes = append(plan.Outcomes, out)
			continue
		}
		tenant, agentID := a.Labels[labelTenant], a.Labels[labelAgentID]
		switch {
		case tenant == "" || agentID == "":
			out.Result = ResultMissingLabels
		case !facts.TenantKnown(tenant):
			out.Result = ResultUnknownTenant
		case !fleet.ValidAgentID(agentID):
			out.Result = ResultInvalidAgent
		case seen[key] || facts.AlertSeen(key):
			out.Result = ResultDuplicate
		}
		if out.Result != "" {
			plan.Outcomes = append(plan.Outcomes, out)
			continue
		}
		k := fleet.Key{Tenant: tenant, AgentID: agentID}
		out.Key = k
		ag, known := facts.Agent(k)
		if !known {
			out.Result = ResultUnknownAgent
			plan.Outcomes = append(plan.Outcomes, out)
			continue
		}
		seen[key] = true
		plan.AlertKeys = append(plan.AlertKeys, key)
		if a.Status == StatusResolved {
			// Recovery is announced by the heartbeat that ends the outage,
			// and a resolved alert never reinstates.
			out.Result = ResultNoChange
			plan.Outcomes = append(plan.Outcomes, out)
			continue
		}

		cur, ok := announced[k]
		if !ok {
			cur = ag.Announced
		}
		ref := AlertRef{Name: name, Fingerprint: a.Fingerprint, StartsAt: a.StartsAt, GeneratorURL: a.GeneratorURL}
		out.Result = ResultNoChange
		if slices.Contains(upStates, cur) && !ag.AnnouncedAt.IsZero() && a.StartsAt.Before(ag.AnnouncedAt) {
			// The alert began before the heartbeat that announced the
			// recovery: a re-send about an outage that is over.
			out.Result = ResultStale
			plan.Outcomes = append(plan.Outcomes, out)
			continue
		}
		if to, expect, ok := transitionFor(name, cur); ok && !ag.Revoked {
			plan.Transitions = append(plan.Transitions, Transition{
				Key: k, Expect: expect, From: cur, To: to,
				MissedBeats:   missedBeats(ag, to, now),
				LastHeartbeat: ag.LastHeartbeat,
				Alert:         ref,
			})
			announced[k] = to
			out.Result = ResultApplied
		}
		if revokes(a, name, policy) && !ag.Revoked && !revoked[k] {
			reason := a.Annotations[annotationKillSwitchReason]
			if reason == "" {
				reason = fmt.Sprintf("Revoked by alert %s", name)
			}
			plan.Revocations = append(plan.Revocations, Revocation{
				Key: k,
				Revocation: fleet.Revocation{
					Reason:          reason,
					ShutdownTimeout: policy.ShutdownTimeout,
					RevokedAt:       now,
					Source:          "alert:" + name,
				},
				Alert: ref,
			})
			revoked[k] = true
			out.Result = ResultApplied
		}
		plan.Outcomes = append(plan.Outcomes, out)
	}
	slices.SortFunc(plan.Outcomes, func(a, b AlertOutcome) int { return a.Index - b.Index })
	return plan
}

// alertRank orders alerts for Decide: SILENT before ZOMBIE before the rest.
func alertRank(a template.Alert) int {
	switch a.Labels["alertname"] {
	case AlertSilent:
		return 0
	case AlertZombie:
		return 1
	default:
		return 2
	}
}

// transitionFor returns the announcement a firing alert calls for from the
// announced state cur, and the states the compare-and-set accepts.
func transitionFor(name string, cur fleet.State) (fleet.State, []fleet.State, bool) {
	switch name {
	case AlertSilent:
		if slices.Contains(upStates, cur) {
			return fleet.StateSilent, upStates, true
		}
	case AlertZombie:
		if cur != fleet.StateZombie {
			return fleet.StateZombie, append(slices.Clone(upStates), fleet.StateSilent), true
		}
	}
	return 0, nil, false
}

func revokes(a template.Alert, name string, p Policy) bool {
	return a.Labels[labelKillSwitch] == "revoke" || slices.Contains(p.KillSwitchAlertnames, name)
}

// missedBeats is the agent's missed beats at now when this replica knows
// its last heartbeat, else the threshold of the state being announced.
func missedBeats(ag AgentFacts, to fleet.State, now time.Time) int64 {
	if !ag.LastHeartbeat.IsZero() && ag.Interval > 0 {
		return fleet.MissedBeats(now, ag.LastHeartbeat, ag.Interval)
	}
	if to == fleet.StateZombie {
		return int64(ag.Thresholds.ZombieAfter)
	}
	return int64(ag.Thresholds.SilentAfter)
}
