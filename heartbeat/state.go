package heartbeat

import (
	"time"

	"github.com/agentsentinel/sentinel/config"
)

// State is an agent's liveness state as defined by SPEC 2.3.
type State uint8

// The states of SPEC 2.3. RECOVERED is not a state an agent stays in: it is
// the answer to the first heartbeat of an agent that had turned ZOMBIE.
const (
	StateActive State = iota
	StateSilent
	StateZombie
	StateStopped
	StateRevoked
	StateRecovered
)

// States lists every state an agent can be observed in, in exposition order.
var States = []State{StateActive, StateSilent, StateZombie, StateStopped, StateRevoked}

var stateNames = [...]string{"ACTIVE", "SILENT", "ZOMBIE", "STOPPED", "REVOKED", "RECOVERED"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "UNKNOWN"
}

// ParseState parses a state name as used in the admin API's ?state= filter.
func ParseState(name string) (State, bool) {
	for i, n := range stateNames[:StateRecovered] {
		if n == name {
			return State(i), true
		}
	}
	return 0, false
}

// Thresholds are the missed-beat counts at which an agent turns SILENT and
// ZOMBIE (SPEC 8 heartbeat.silent_after and heartbeat.zombie_after).
type Thresholds struct {
	SilentAfter int
	ZombieAfter int
}

// ThresholdsOf returns the thresholds a heartbeat configuration sets.
func ThresholdsOf(h config.HeartbeatConfig) Thresholds {
	return Thresholds{SilentAfter: h.SilentAfter, ZombieAfter: h.ZombieAfter}
}

// MissedBeats is floor((now − last) / interval), never negative.
func MissedBeats(now, last time.Time, interval time.Duration) int64 {
	if interval <= 0 || !now.After(last) {
		return 0
	}
	return int64(now.Sub(last) / interval)
}

// Liveness derives ACTIVE, SILENT or ZOMBIE from the number of missed beats.
func (t Thresholds) Liveness(missed int64) State {
	switch {
	case missed >= int64(t.ZombieAfter):
		return StateZombie
	case missed >= int64(t.SilentAfter):
		return StateSilent
	default:
		return StateActive
	}
}
