package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/agentsentinel/sentinel/internal/testutil"
)

// pgResult is the kill switch and the bridge of a sentinel whose durable
// state is in PostgreSQL, next to the embedded store's figures.
type pgResult struct {
	agents           int
	bridge, embedded *bridgeResult
	// The kill switch on each store, at the same fleet size.
	pgKill, embeddedKill killRun
}

type killRun struct {
	revocations      float64 // acknowledged per second
	revErrors        int
	revokeAllSeconds float64
	revokeAllAgents  int
}

// measureKill revokes half the fleet one by one, then the rest at once.
func (e *env) measureKill(sent *proc, agents int) (killRun, error) {
	var k killRun
	var err error
	if k.revocations, k.revErrors, err = e.revocations(sent, e.bridgeDuration(), agents/2); err != nil {
		return k, err
	}
	k.revokeAllSeconds, k.revokeAllAgents, err = revokeAll(sent)
	return k, err
}

// postgres runs the bridge and the kill switch again on a sentinel backed
// by a throw-away PostgreSQL cluster on this machine (the same one the tests
// start: its own directory, a free loopback port, an unprivileged user),
// pinned to the servers' CPU with sentinel.
func (e *env) postgres(small *ingestResult, emb *bridgeResult) error {
	agents := small.agents
	if !testutil.PostgresAvailable() {
		e.out.note("PostgreSQL is not installed (apt-get install postgresql): no PostgreSQL figures.")
		return nil
	}
	logf("PostgreSQL: bridge and kill switch at %d agents", agents)
	r := &pgResult{agents: agents, embedded: emb}
	// The embedded store's kill switch at the same fleet size, first: the
	// kill-switch scenario's figures are at the large fleet.
	var err error
	if r.embeddedKill, err = e.measureKill(small.sentinel, agents); err != nil {
		return err
	}
	dsn, err := testutil.NewPostgresDatabase("bench")
	if err != nil {
		return err
	}
	defer testutil.StopPostgres()
	if e.taskset {
		// The postmaster's backends inherit its affinity.
		if out, err := exec.Command("taskset", "-a", "-p", "-c", e.serverCPU, strconv.Itoa(testutil.PostgresPID())).CombinedOutput(); err != nil {
			return fmt.Errorf("pin PostgreSQL: %v: %s", err, out)
		}
	}
	base, err := os.ReadFile(e.cfgFile)
	if err != nil {
		return err
	}
	cfg := filepath.Join(e.dir, "sentinel-postgres.yml")
	if err := os.WriteFile(cfg, append(base, "storage:\n  postgres:\n    dsn: "+dsn+"\n"...), 0o600); err != nil {
		return err
	}
	sent, err := e.startSentinelWith(cfg, "sentinel-postgres", filepath.Join(e.dir, "data-postgres"),
		[]string{"--storage.replica-name", "bench"})
	if err != nil {
		return err
	}
	defer sent.stop()
	// Register the fleet (and beat for a second).
	if _, err := e.loadgen(sent, "--agents", strconv.Itoa(agents), "--protocol", "mixed", "--mode", "closed",
		"--connections", "32", "--duration", "1s"); err != nil {
		return err
	}
	if r.bridge, err = e.measureBridge(sent, agents); err != nil {
		return err
	}
	if r.pgKill, err = e.measureKill(sent, agents); err != nil {
		return err
	}
	e.out.postgres(r)
	return nil
}

func (r *report) postgres(p *pgResult) {
	var b strings.Builder
	fmt.Fprintf(&b, "## Kill switch and bridge on PostgreSQL at %s agents\n\n", human(p.agents))
	b.WriteString("The same runs as above against a sentinel whose durable state is in PostgreSQL (`storage.postgres`): " +
		"a throw-away cluster on this machine (PostgreSQL's defaults, `fsync` on), pinned with sentinel to the servers' CPU. " +
		"Each acknowledgement is a committed transaction. The references: the embedded store (its bridge run above; its kill switch measured here on the same fleet, just before) and the handler that fsyncs each request.\n\n")
	b.WriteString("| | PostgreSQL | embedded | fsync per request | PostgreSQL / embedded |\n|---|---|---|---|---|\n")
	fmt.Fprintf(&b, "| Alertmanager notifications acknowledged (committed)/s | %.0f (%d errors) | %.0f | %.0f | **%s** |\n",
		p.bridge.notifications, p.bridge.notifyErrors, p.embedded.notifications, p.embedded.fsyncs, ratio(p.bridge.notifications, p.embedded.notifications))
	fmt.Fprintf(&b, "| notification → committed, p50 / p99 | %s / %s | %s / %s | | |\n",
		ms(p.bridge.p50), ms(p.bridge.p99), ms(p.embedded.p50), ms(p.embedded.p99))
	pgRate, embRate := deliveryRate(p.bridge), deliveryRate(p.embedded)
	fmt.Fprintf(&b, "| outbox deliveries/s to the local endpoint | %.0f (%d of %d events) | %.0f | | **%s** |\n",
		pgRate, p.bridge.delivered, p.bridge.events, embRate, ratio(pgRate, embRate))
	pk, ek := p.pgKill, p.embeddedKill
	fmt.Fprintf(&b, "| acknowledged revocations/s (32 callers, each agent once) | %.0f (%d errors) | %.0f (%d errors) | %.0f | **%s** |\n",
		pk.revocations, pk.revErrors, ek.revocations, ek.revErrors, p.embedded.fsyncs, ratio(pk.revocations, ek.revocations))
	fmt.Fprintf(&b, "| `POST /api/v1/revoke-all` of the rest | %s (%d agents) | %s (%d agents) | | **%s** |\n",
		ms(pk.revokeAllSeconds), pk.revokeAllAgents, ms(ek.revokeAllSeconds), ek.revokeAllAgents, ratio(pk.revokeAllSeconds, ek.revokeAllSeconds))
	r.add(b.String())
	r.headline = append(r.headline, fmt.Sprintf("on PostgreSQL: %.0f notifications committed/s (%s the embedded store), %.0f acknowledged revocations/s",
		p.bridge.notifications, ratio(p.bridge.notifications, p.embedded.notifications), p.pgKill.revocations))
}

// deliveryRate is the outbox's deliveries per second, first to last.
func deliveryRate(b *bridgeResult) float64 {
	if b.deliverSeconds <= 0 {
		return 0
	}
	return float64(b.delivered) / b.deliverSeconds
}
