package heartbeat

import (
	"github.com/agentsentinel/sentinel/config"
	"github.com/agentsentinel/sentinel/fleet"
)

// ThresholdsOf returns the thresholds a heartbeat configuration sets.
func ThresholdsOf(h config.HeartbeatConfig) fleet.Thresholds {
	return fleet.Thresholds{SilentAfter: h.SilentAfter, ZombieAfter: h.ZombieAfter}
}

// PolicyOf returns the threshold policy of a validated configuration: the
// global thresholds, and each tenant's where it sets its own (a field it
// leaves out takes the global value). Every component that derives a state,
// a lease or a deadline resolves an agent's thresholds through it, so the
// admin API, the answers and the metrics never disagree.
func PolicyOf(cfg *config.Config) *fleet.ThresholdPolicy {
	p := &fleet.ThresholdPolicy{Global: ThresholdsOf(cfg.Heartbeat)}
	for _, t := range cfg.Tenants {
		if t.Heartbeat == nil {
			continue
		}
		th := p.Global
		if t.Heartbeat.SilentAfter != 0 {
			th.SilentAfter = t.Heartbeat.SilentAfter
		}
		if t.Heartbeat.ZombieAfter != 0 {
			th.ZombieAfter = t.Heartbeat.ZombieAfter
		}
		if p.Tenants == nil {
			p.Tenants = make(map[string]fleet.Thresholds)
		}
		p.Tenants[t.ID] = th
	}
	return p
}
