package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const durabilityConfig = `
heartbeat:
  default_interval: 1s
  min_interval: 1s
tenants:
  - id: acme
    api_keys: [acme-key-1]
    admin_tokens: [acme-admin]
`

// target is an agent the kill switch acts on during a round, and what the
// test knows about the actions sent for it.
type target struct {
	id, token string

	// Written by the one goroutine that owns the agent, read after it stopped.
	revokedReason string // reason of an acknowledged revocation
	command       string // last acknowledged command
	// The action in flight when the process died: it may or may not have
	// been made durable (it was never acknowledged).
	unansweredRevoke  bool
	unansweredCommand string
}

// allowedCommands are the pending commands the restarted sentinel may
// report: the last acknowledged one, or the unanswered one sent after it.
func (tg *target) allowedCommands() []string {
	allowed := []string{tg.command}
	if tg.unansweredCommand != "" {
		allowed = append(allowed, tg.unansweredCommand)
	}
	return allowed
}

// TestKill9LosesNothingAcknowledged is SPEC 9's promise under a crash:
// round after round, the binary is killed with SIGKILL at a random moment
// while revocations and commands are being fired at it concurrently, and the
// sentinel restarted on the same storage must hold every one that was
// answered 200, seen through the admin API and through heartbeats.
func TestKill9LosesNothingAcknowledged(t *testing.T) {
	const (
		rounds      = 10
		targets     = 12 // agents acted on per round
		workers     = 4  // concurrent admin clients; each owns targets/workers agents
		pulseAgents = 2  // agents that just beat every 20 ms throughout
	)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	dir := t.TempDir()
	cfg := filepath.Join(dir, "sentinel.yml")
	storage := filepath.Join(dir, "data")
	writeFile(t, cfg, durabilityConfig)
	// Snapshots every 150 ms: each kill lands at a different distance from
	// the last one, so both restored and re-registered agents are checked.
	start := func() *sentinelProc {
		return startSentinel(t, cfg, storage, "--storage.snapshot-interval=150ms")
	}

	var revokedBefore []*target // acknowledged revocations of all earlier rounds
	p := start()
	for round := range rounds {
		tgs := make([]*target, targets)
		for i := range tgs {
			id := fmt.Sprintf("r%d-agent-%02d", round, i)
			tgs[i] = &target{id: id, token: p.register(id, "acme-key-1", map[string]any{"heartbeat_interval_seconds": 1})}
		}
		pulse := make([]string, pulseAgents)
		for i := range pulse {
			id := fmt.Sprintf("r%d-pulse-%d", round, i)
			pulse[i] = p.register(id, "acme-key-1", map[string]any{"heartbeat_interval_seconds": 1})
		}

		// Fire until a random number of actions have been acknowledged, then
		// kill the process while the workers are still firing.
		killAfter := int64(10 + rng.IntN(60))
		var acked atomic.Int64
		trigger := make(chan struct{})
		var once sync.Once
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		var mu sync.Mutex
		var failures []string
		for w := range workers {
			wrng := rand.New(rand.NewPCG(seed, uint64(round*workers+w+1)))
			var owned []*target
			for i := w; i < targets; i += workers {
				owned = append(owned, tgs[i])
			}
			wg.Go(func() {
				for seq := 0; ctx.Err() == nil; seq++ {
					tg := owned[wrng.IntN(len(owned))]
					var r reply
					var err error
					if wrng.IntN(3) == 0 {
						reason := fmt.Sprintf("%s revoked by action %d", tg.id, seq)
						r, err = p.request(http.MethodPost, "/api/v1/installations/"+tg.id+"/revoke", "acme-admin",
							map[string]any{"reason": reason, "shutdown_timeout_ms": 250})
						if err != nil {
							tg.unansweredRevoke = true
							return // the process is gone
						}
						if r.status == http.StatusOK {
							var ans struct{ Reason string }
							_ = json.Unmarshal(r.body, &ans)
							got := ans.Reason
							if tg.revokedReason == "" {
								tg.revokedReason = got
							} else if got != tg.revokedReason {
								mu.Lock()
								failures = append(failures, fmt.Sprintf("%s: repeated revoke answered reason %q, first was %q", tg.id, got, tg.revokedReason))
								mu.Unlock()
							}
						}
					} else {
						cmd := []string{"pause", "resume", "terminate"}[wrng.IntN(3)]
						r, err = p.request(http.MethodPost, "/api/v1/installations/"+tg.id+"/command", "acme-admin",
							map[string]any{"command": cmd})
						if err != nil {
							tg.unansweredCommand = cmd
							return
						}
						if r.status == http.StatusOK {
							tg.command = cmd
						}
					}
					if r.status != http.StatusOK {
						mu.Lock()
						failures = append(failures, fmt.Sprintf("%s: answered %d: %s", tg.id, r.status, r.body))
						mu.Unlock()
						return
					}
					if acked.Add(1) == killAfter {
						once.Do(func() { close(trigger) })
					}
				}
			})
		}
		wg.Go(func() {
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for ctx.Err() == nil {
				for i, tok := range pulse {
					if _, err := p.request(http.MethodPost, fmt.Sprintf("/api/v1/installations/r%d-pulse-%d/heartbeat", round, i), tok, nil); err != nil {
						return
					}
				}
				select {
				case <-ctx.Done():
				case <-tick.C:
				}
			}
		})

		select {
		case <-trigger:
		case <-time.After(20 * time.Second):
			t.Fatalf("round %d: only %d actions acknowledged", round, acked.Load())
		}
		p.kill()
		cancel()
		wg.Wait()
		require.Empty(t, failures, "round %d", round)
		require.GreaterOrEqual(t, acked.Load(), killAfter)

		p = start()
		c := verifyTargets(t, p, round, tgs)
		t.Logf("round %d: killed after %d acknowledged actions (%d unanswered); checked %d revocations and %d commands; %d of %d agents registered again",
			round, acked.Load(), c.unanswered, c.revoked, c.commanded, c.registeredAgain, targets)

		// Revocations of every earlier round are still in force.
		for _, tg := range revokedBefore {
			m := p.beat(tg.id, tg.token, nil)
			require.Equal(t, true, m["revoked"], "round %d: %s lost its revocation: %v", round, tg.id, m)
			require.Equal(t, tg.revokedReason, m["reason"])
		}
		for _, tg := range tgs {
			if tg.revokedReason != "" {
				revokedBefore = append(revokedBefore, tg)
			}
		}
	}
	require.NotEmpty(t, revokedBefore)

	p.signal(syscall.SIGTERM)
	require.Equal(t, 0, p.wait(15*time.Second), p.logs.String())
}

// verifyTargets checks, on the restarted sentinel p, that every acknowledged
// action on tgs is in force, and counts what it checked. The agents are
// first beaten with their pre-crash runtime tokens: those registered after
// the last snapshot are only back in the store once they beat again (SPEC 9).
func verifyTargets(t *testing.T, p *sentinelProc, round int, tgs []*target) (c checked) {
	t.Helper()
	for _, tg := range tgs {
		m := p.beat(tg.id, tg.token, map[string]any{"heartbeat_interval_seconds": 1})
		if m["registered"] == true {
			c.registeredAgain++
		}
		if tg.unansweredRevoke || tg.unansweredCommand != "" {
			c.unanswered++
		}
		switch {
		case tg.revokedReason != "":
			c.revoked++
			require.Equal(t, true, m["revoked"], "round %d: %s: acknowledged revocation lost: %v", round, tg.id, m)
			require.Equal(t, tg.revokedReason, m["reason"], "round %d: %s", round, tg.id)
			require.Equal(t, 250.0, m["shutdown_timeout_ms"], "round %d: %s", round, tg.id)
		case m["revoked"] == true:
			require.True(t, tg.unansweredRevoke, "round %d: %s revoked though no revoke was sent: %v", round, tg.id, m)
		default:
			got, _ := m["command"].(string)
			require.Contains(t, tg.allowedCommands(), got, "round %d: %s: heartbeat carried command %q", round, tg.id, got)
		}
		if tg.command != "" {
			c.commanded++
		}

		r := p.mustRequest(http.MethodGet, "/api/v1/installations/"+tg.id, "acme-admin", nil)
		require.Equal(t, http.StatusOK, r.status, "round %d: %s: %s", round, tg.id, r.body)
		d := r.json(t)
		rev, _ := d["revocation"].(map[string]any)
		switch {
		case tg.revokedReason != "":
			require.NotNil(t, rev, "round %d: %s: admin API lost the revocation: %v", round, tg.id, d)
			require.Equal(t, tg.revokedReason, rev["reason"])
			require.Equal(t, "REVOKED", d["state"])
		case rev != nil:
			require.True(t, tg.unansweredRevoke, "round %d: %s", round, tg.id)
		}
		pc, _ := d["pending_command"].(map[string]any)
		got, _ := pc["command"].(string)
		require.Contains(t, tg.allowedCommands(), got, "round %d: %s: admin API pending_command %v", round, tg.id, d["pending_command"])
	}
	return c
}

// checked counts what verifyTargets saw.
type checked struct {
	revoked, commanded int
	// unanswered actions were in flight at the kill; registeredAgain agents
	// were not in the last snapshot and came back with their next heartbeat.
	unanswered, registeredAgain int
}
