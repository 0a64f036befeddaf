package heartbeat

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/internal/testutil"
)

func livenessLog(s *Store) (*LivenessLog, *testutil.SyncBuffer) {
	logs := &testutil.SyncBuffer{}
	return &LivenessLog{
		Store: s, Logger: slog.New(slog.NewTextHandler(logs, nil)),
		Thresholds: func() fleet.Thresholds { return fleet.Thresholds{SilentAfter: 5, ZombieAfter: 15} },
	}, logs
}

func lines(logs *testutil.SyncBuffer, substr string) int {
	return strings.Count(logs.String(), substr)
}

// Each agent's turn to SILENT and to ZOMBIE is logged once, again only after
// it was ACTIVE in between; stopped and revoked agents never.
func TestLivenessLogOncePerTransition(t *testing.T) {
	s := NewStore(100, nil)
	for _, id := range []string{"a", "stopped", "revoked"} {
		req := stBeat(id, stT0)
		req.Interval = time.Minute
		if id == "stopped" {
			req.Status = StatusShutdown
		}
		stMustBeat(t, s, req)
	}
	require.True(t, s.SetRevoked(stKey("revoked"), true))
	l, logs := livenessLog(s)

	sweep := func(at time.Duration) { l.Sweep(stT0.Add(at)) }
	sweep(4 * time.Minute)
	require.Zero(t, lines(logs, "agent turned"))
	sweep(5 * time.Minute)
	sweep(6 * time.Minute)
	sweep(10 * time.Minute)
	require.Equal(t, 1, lines(logs, "agent turned SILENT"), logs.String())
	require.Contains(t, logs.String(), "agent_id=a missed_beats=5")
	sweep(15 * time.Minute)
	sweep(16 * time.Minute)
	require.Equal(t, 1, lines(logs, "agent turned ZOMBIE"), logs.String())

	// It beats again (the receiver logs the recovery), then goes quiet again.
	req := stBeat("a", stT0.Add(20*time.Minute))
	req.Interval = time.Minute
	stMustBeat(t, s, req)
	sweep(21 * time.Minute)
	sweep(25 * time.Minute)
	require.Equal(t, 2, lines(logs, "agent turned SILENT"), logs.String())
	require.NotContains(t, logs.String(), "stopped")
	require.NotContains(t, logs.String(), "revoked")
}

// A fleet-wide outage logs MaxLines lines, then one summary line for the
// rest of the window.
func TestLivenessLogFleetOutage(t *testing.T) {
	s := NewStore(1000, nil)
	for i := range 500 {
		req := stBeat(fmt.Sprint("agent-", i), stT0.Add(time.Duration(i)*time.Millisecond))
		req.Interval = time.Minute
		stMustBeat(t, s, req)
	}
	l, logs := livenessLog(s)
	l.Sweep(stT0.Add(5*time.Minute + time.Second))
	l.Sweep(stT0.Add(5*time.Minute + 30*time.Second))
	require.Equal(t, 10, lines(logs, "agent turned SILENT"))
	require.Zero(t, lines(logs, "more agents turned"))
	l.Sweep(stT0.Add(6*time.Minute + 2*time.Second)) // the window is over
	require.Equal(t, 1, lines(logs, "more agents turned SILENT or ZOMBIE"), logs.String())
	require.Contains(t, logs.String(), "silent=490 zombie=0")
	require.Equal(t, 10, lines(logs, "agent turned SILENT"))
}
