package heartbeat

import (
	"github.com/agentsentinel/sentinel/config"
	"github.com/agentsentinel/sentinel/fleet"
)

// ThresholdsOf returns the thresholds a heartbeat configuration sets.
func ThresholdsOf(h config.HeartbeatConfig) fleet.Thresholds {
	return fleet.Thresholds{SilentAfter: h.SilentAfter, ZombieAfter: h.ZombieAfter}
}
