package heartbeat

import (
	"fmt"
	"time"

	"github.com/agentsentinel/sentinel/fleet"
)

// Status is the agent-reported health of SPEC 2.1.
type Status uint8

// Agent-reported statuses. StatusUnknown is a heartbeat that carried none.
const (
	StatusUnknown Status = iota
	StatusHealthy
	StatusDegraded
	StatusUnhealthy
	StatusStarting
	StatusShutdown
)

var statusNames = [...]string{"", "healthy", "degraded", "unhealthy", "starting", "shutdown"}

func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return ""
}

// ParseStatus parses the status field of a heartbeat; "" is StatusUnknown.
func ParseStatus(s string) (Status, error) {
	for i, n := range statusNames {
		if n == s {
			return Status(i), nil
		}
	}
	return 0, fmt.Errorf("status %q is not one of healthy, degraded, unhealthy, starting, shutdown", s)
}

// PlatformType is where the agent runs, as detected by beacon (seed 000).
type PlatformType uint8

// Platform types of SPEC 2.1.
const (
	PlatformUnknown PlatformType = iota
	PlatformDocker
	PlatformKubernetes
	PlatformLambda
	PlatformBareMetal
)

var platformNames = [...]string{"", "docker", "kubernetes", "lambda", "bare_metal"}

func (p PlatformType) String() string {
	if int(p) < len(platformNames) {
		return platformNames[p]
	}
	return ""
}

// ParsePlatformType parses platform.type; "" is PlatformUnknown.
func ParsePlatformType(s string) (PlatformType, error) {
	for i, n := range platformNames {
		if n == s {
			return PlatformType(i), nil
		}
	}
	return 0, fmt.Errorf("platform.type %q is not one of docker, kubernetes, lambda, bare_metal", s)
}

// Platform is the agent-reported runtime metadata of SPEC 2.1.
type Platform struct {
	Type         PlatformType
	ContainerID  string
	Image        string
	PodName      string
	Namespace    string
	Node         string
	FunctionName string
	Region       string
	Hostname     string
	OS           string
	PID          int64
}

// ReportedMetrics are the agent-reported counters of SPEC 2.1.
type ReportedMetrics struct {
	RequestsHandled float64
	Errors          float64
	AvgLatencyMs    float64
}

// Agent is one agent's hot state as handed out by the store. It is a copy:
// changing it changes nothing in the store. An Agent passed to a View
// callback borrows its strings from the view and must not outlive it.
type Agent struct {
	fleet.Key
	Status        Status
	Version       string
	Platform      Platform
	RegisteredAt  time.Time
	LastHeartbeat time.Time
	Interval      time.Duration
	// OwnThresholds are the thresholds the agent asked for in its last
	// heartbeat (kept like its interval: a heartbeat without them returns
	// the agent to its tenant's); zero when it asked for none.
	OwnThresholds fleet.Thresholds

	UptimeSeconds float64
	HasUptime     bool
	Metrics       ReportedMetrics
	HasMetrics    bool
	ExitCode      int64
	HasExitCode   bool

	Stopped bool
	Revoked bool
	// Paused is set once the agent beat after being handed "pause", until
	// it is handed "resume" or "terminate" (SPEC 3). It is a flag beside
	// the state: a paused agent that stops beating still turns SILENT.
	Paused bool
	// Command is the pending kill-switch command, CommandNone if none.
	Command fleet.Command
	// TokenVersion is the newest runtime-token version issued to the agent.
	TokenVersion uint32
}

// Thresholds returns the thresholds in force for the agent under p: its
// own, else its tenant's, else the global ones.
func (a *Agent) Thresholds(p *fleet.ThresholdPolicy) fleet.Thresholds {
	return p.For(a.Tenant, a.OwnThresholds)
}

// State derives the agent's state at now under p (SPEC 2.3).
func (a *Agent) State(now time.Time, p *fleet.ThresholdPolicy) fleet.State {
	return a.StateUnder(now, a.Thresholds(p))
}

// StateUnder is State for a caller that has already resolved the agent's
// thresholds in force, th (Thresholds).
func (a *Agent) StateUnder(now time.Time, th fleet.Thresholds) fleet.State {
	switch {
	case a.Revoked:
		return fleet.StateRevoked
	case a.Stopped:
		return fleet.StateStopped
	default:
		return th.Liveness(a.MissedBeats(now))
	}
}

// LeaseExpiry is when the agent turns SILENT under p if no heartbeat comes.
func (a *Agent) LeaseExpiry(p *fleet.ThresholdPolicy) time.Time {
	return a.Thresholds(p).LeaseEnd(a.LastHeartbeat, a.Interval)
}

// ZombieDeadline is when the agent turns ZOMBIE under p if no heartbeat comes.
func (a *Agent) ZombieDeadline(p *fleet.ThresholdPolicy) time.Time {
	return a.Thresholds(p).ZombieDeadline(a.LastHeartbeat, a.Interval)
}

// MissedBeats is floor((now − last heartbeat) / interval).
func (a *Agent) MissedBeats(now time.Time) int64 {
	return fleet.MissedBeats(now, a.LastHeartbeat, a.Interval)
}
