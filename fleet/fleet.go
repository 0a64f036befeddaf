// Package fleet holds the domain types that the receiver, the kill switch,
// the ledger and the bridge all speak: an agent's key, its liveness state and
// thresholds, kill-switch commands and revocations. It has no behaviour of
// its own beyond parsing and deriving states.
package fleet

import "time"

// Key identifies an agent: the tenant comes from the credential, the agent id
// from the path, query or event source.
type Key struct {
	Tenant  string
	AgentID string
}

func (k Key) String() string { return k.Tenant + "/" + k.AgentID }

// agentIDPattern is the contract for agent ids: anything else is refused
// with 400 and never becomes a label value. ValidAgentID checks it by hand
// (it runs on every heartbeat, where the regexp engine cost more than the
// rest of the id handling); the tests hold the two to the same answers.
const agentIDPattern = `^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$`

// maxAgentIDLen is the longest agent id agentIDPattern admits.
const maxAgentIDLen = 128

// agentIDByte marks the bytes agentIDPattern admits after the first: the
// letters, digits and "._:@-"; agentIDFirst those admitted first.
var agentIDByte, agentIDFirst = func() (rest, first [256]bool) {
	for c := range 256 {
		alnum := 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9'
		first[c] = alnum
		rest[c] = alnum || c == '.' || c == '_' || c == ':' || c == '@' || c == '-'
	}
	return rest, first
}()

// ValidAgentID reports whether id matches agentIDPattern.
func ValidAgentID(id string) bool {
	if len(id) == 0 || len(id) > maxAgentIDLen || !agentIDFirst[id[0]] {
		return false
	}
	for i := 1; i < len(id); i++ {
		if !agentIDByte[id[i]] {
			return false
		}
	}
	return true
}

// Command is a kill-switch command delivered in heartbeat answers.
type Command uint8

// Commands of SPEC 3.
const (
	CommandNone Command = iota
	CommandPause
	CommandResume
	CommandTerminate
)

var commandNames = [...]string{"", "pause", "resume", "terminate"}

func (c Command) String() string {
	if int(c) < len(commandNames) {
		return commandNames[c]
	}
	return ""
}

// ParseCommand parses a command name; the empty string is not a command.
func ParseCommand(s string) (Command, bool) {
	for i, n := range commandNames[1:] {
		if n == s {
			return Command(i + 1), true
		}
	}
	return CommandNone, false
}

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
// ZOMBIE (heartbeat.silent_after and heartbeat.zombie_after). The zero value
// is "not set": an agent without thresholds of its own follows its tenant's.
type Thresholds struct {
	SilentAfter int
	ZombieAfter int
}

// IsZero reports whether t is "not set".
func (t Thresholds) IsZero() bool { return t == Thresholds{} }

// Or returns t, or fallback when t is not set.
func (t Thresholds) Or(fallback Thresholds) Thresholds {
	if t.IsZero() {
		return fallback
	}
	return t
}

// LeaseEnd is when an agent whose last heartbeat was at last turns SILENT.
func (t Thresholds) LeaseEnd(last time.Time, interval time.Duration) time.Time {
	return last.Add(interval * time.Duration(t.SilentAfter))
}

// ZombieDeadline is when an agent whose last heartbeat was at last turns ZOMBIE.
func (t Thresholds) ZombieDeadline(last time.Time, interval time.Duration) time.Time {
	return last.Add(interval * time.Duration(t.ZombieAfter))
}

// ThresholdPolicy resolves the thresholds in force for an agent: its own,
// else its tenant's, else the global ones. It is immutable once built (a
// configuration reload builds a new one), so it is safe for concurrent use.
type ThresholdPolicy struct {
	// Global are heartbeat.silent_after and heartbeat.zombie_after.
	Global Thresholds
	// Tenants holds the tenants that set thresholds of their own, already
	// completed from Global.
	Tenants map[string]Thresholds
}

// Tenant returns the thresholds of the tenant's agents that set none.
func (p *ThresholdPolicy) Tenant(tenant string) Thresholds {
	if t, ok := p.Tenants[tenant]; ok {
		return t
	}
	return p.Global
}

// For returns the thresholds in force for an agent of tenant whose own
// thresholds are own (zero when it set none).
func (p *ThresholdPolicy) For(tenant string, own Thresholds) Thresholds {
	if !own.IsZero() {
		return own
	}
	return p.Tenant(tenant)
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

// Revocation is a kill-switch revocation as heartbeat answers carry it.
type Revocation struct {
	Reason          string
	ShutdownTimeout time.Duration
	RevokedAt       time.Time
	// Source is "admin" or "alert:<name>".
	Source string
}
