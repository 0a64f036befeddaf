package heartbeat

import (
	"log/slog"
	"time"

	"github.com/agentsentinel/sentinel/fleet"
)

// Transition is an agent that turned SILENT or ZOMBIE by sentinel's clock.
type Transition struct {
	fleet.Key
	To            fleet.State
	LastHeartbeat time.Time
	MissedBeats   int64
}

// SweepLiveness calls fn for every agent whose liveness state at now is
// SILENT or ZOMBIE and was not reported by an earlier sweep: each turn is
// reported once, and again only after the agent has been ACTIVE since.
// STOPPED and REVOKED agents are never reported. It locks one shard at a
// time; fn runs after the shard's lock is released and owns its Transition.
func (s *Store) SweepLiveness(now time.Time, t fleet.Thresholds, fn func(Transition)) {
	var found []Transition
	for i := range s.shards {
		sh := &s.shards[i]
		found = found[:0]
		sh.mu.Lock()
		for j := range sh.records {
			r := &sh.records[j]
			if r.flags&flagUsed == 0 {
				continue
			}
			st := r.agentState(now, t)
			switch st {
			case fleet.StateSilent, fleet.StateZombie:
				if r.noticed == st {
					continue
				}
				r.noticed = st
				last := time.Unix(0, r.lastBeat).UTC()
				found = append(found, Transition{
					Key: fleet.Key{Tenant: string([]byte(sh.str(r, strTenant))), AgentID: string([]byte(sh.str(r, strAgentID)))},
					To:  st, LastHeartbeat: last, MissedBeats: fleet.MissedBeats(now, last, time.Duration(r.interval)),
				})
			default:
				r.noticed = fleet.StateActive
			}
		}
		sh.mu.Unlock()
		for _, tr := range found {
			fn(tr)
		}
	}
}

// LivenessLog logs the agents that turn SILENT or ZOMBIE by sentinel's own
// clock (heartbeats log their recoveries themselves), once each. In a
// fleet-wide outage it does not flood the log: past MaxLines lines in a
// Window, the rest of the window's transitions are counted and logged as one
// summary line when the window ends.
//
// Concurrency: Sweep is called from one goroutine (the application's loop).
type LivenessLog struct {
	Store      *Store
	Logger     *slog.Logger
	Thresholds func() fleet.Thresholds
	// MaxLines is how many transitions are logged one by one per Window
	// (10 when 0); Window is 1m when 0.
	MaxLines int
	Window   time.Duration

	windowStart time.Time
	lines       int
	suppressed  [fleet.StateZombie + 1]int
}

// Sweep logs the transitions since the last sweep, as of now.
func (l *LivenessLog) Sweep(now time.Time) {
	maxLines, window := l.MaxLines, l.Window
	if maxLines <= 0 {
		maxLines = 10
	}
	if window <= 0 {
		window = time.Minute
	}
	if now.Sub(l.windowStart) >= window {
		l.flush(now)
		l.windowStart, l.lines = now, 0
	}
	l.Store.SweepLiveness(now, l.Thresholds(), func(tr Transition) {
		if l.lines >= maxLines {
			l.suppressed[tr.To]++
			return
		}
		l.lines++
		l.Logger.Warn("agent turned "+tr.To.String()+" (no heartbeat)", "tenant", tr.Tenant, "agent_id", tr.AgentID,
			"missed_beats", tr.MissedBeats, "last_heartbeat", tr.LastHeartbeat)
	})
}

// flush logs the summary of the window that ends at now, if any.
func (l *LivenessLog) flush(now time.Time) {
	silent, zombie := l.suppressed[fleet.StateSilent], l.suppressed[fleet.StateZombie]
	if silent+zombie == 0 {
		return
	}
	l.Logger.Warn("more agents turned SILENT or ZOMBIE than are logged one by one (see sentinel_agents)",
		"silent", silent, "zombie", zombie, "since", l.windowStart, "until", now)
	l.suppressed = [fleet.StateZombie + 1]int{}
}
