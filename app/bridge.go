package app

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/prometheus/common/version"

	"github.com/agentsentinel/sentinel/bridge"
	"github.com/agentsentinel/sentinel/config"
	"github.com/agentsentinel/sentinel/delivery"
	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/heartbeat"
	"github.com/agentsentinel/sentinel/ledger"
	"github.com/agentsentinel/sentinel/outbox"
)

// tenantsView answers the bridge's questions from the running configuration.
type tenantsView struct{ a *App }

func (v tenantsView) Known(tenant string) bool {
	_, ok := v.a.cfg.Load().Tenant(tenant)
	return ok
}

func (v tenantsView) HasWebhook(tenant string) bool {
	t, ok := v.a.cfg.Load().Tenant(tenant)
	return ok && t.Webhook != nil
}

func (v tenantsView) WebhookTenants() []string {
	var out []string
	for _, t := range v.a.cfg.Load().Tenants {
		if t.Webhook != nil {
			out = append(out, t.ID)
		}
	}
	return out
}

// Thresholds returns the thresholds in force for the agent: its own (when
// the hot store has it), else its tenant's, else the global ones, resolved
// by the same policy as the admin API, the answers and the metrics.
func (v tenantsView) Thresholds(k fleet.Key, a *heartbeat.Agent) fleet.Thresholds {
	p := v.a.admin.Load().Thresholds
	if a != nil {
		return a.Thresholds(p)
	}
	return p.Tenant(k.Tenant)
}

// hostName is this machine's name: the default replica name.
func hostName() (string, error) {
	h, err := os.Hostname()
	if err == nil && h == "" {
		err = errors.New("the host name is empty")
	}
	return h, err
}

// replicaID names this process in outbox leases: unique among replicas and
// across restarts, readable in the deliveries API.
func replicaID() string {
	host, err := hostName()
	if err != nil {
		host = "sentinel"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// openBridge builds the bridge, the outbox dispatcher, the recovery
// announcer and the watchdog on the kill switch (a.control).
func (a *App) openBridge(cfg *config.Config) error {
	a.sender = delivery.NewSender(delivery.Options{Logger: a.logger, UserAgent: "sentinel/" + version.Version})
	if err := a.sender.ApplyConfig(cfg); err != nil {
		return fmt.Errorf("webhook clients: %w", err)
	}
	tenants := tenantsView{a}
	a.control.Event = func(k fleet.Key, r fleet.Revocation) *ledger.Event {
		if !tenants.HasWebhook(k.Tenant) {
			return nil
		}
		ev, err := bridge.RevokedEvent(k, r)
		if err != nil {
			a.logger.Error("cannot build agent.revoked event", "err", err)
			return nil
		}
		return ev
	}
	a.dispatcher = outbox.New(outbox.Options{
		Ledger: a.ledger, Control: a.control, Sender: a.sender, Worker: replicaID(),
		Logger: a.logger, Registerer: a.registry, Now: a.opts.Now,
	}, outboxConfig(cfg))
	a.recoveries = bridge.NewRecoveries(a.control, tenants, a.logger, a.dispatcher.Wake)
	a.watchdog = bridge.NewWatchdog(a.control, a.store, tenants, a.logger, a.registry, a.opts.Now)
	a.watchdog.Configure(time.Duration(cfg.Bridge.Watchdog.Timeout), cfg.Bridge.BearerToken != "")
	a.bridge = bridge.NewHandler(&bridge.LedgerStore{Control: a.control, Agents: a.store, Tenants: tenants, Wake: a.dispatcher.Wake, Logger: a.logger},
		bridge.SettingsFromConfig(cfg), a.logger, a.registry, a.opts.Now)
	return nil
}

// startBridge starts the background work of the bridge.
func (a *App) startBridge() {
	a.dispatcher.Start()
	a.watchdog.Start()
}

// stopBridge stops it; the outbox's leases run out and any replica (or this
// one after a restart) picks the events up again.
func (a *App) stopBridge() {
	a.watchdog.Stop()
	a.dispatcher.Stop()
	a.recoveries.Close()
}

// reloadBridge applies a new configuration; the webhook clients first, as
// they are the part that can fail.
func (a *App) reloadBridge(cfg *config.Config) error {
	if err := a.sender.ApplyConfig(cfg); err != nil {
		return fmt.Errorf("webhook clients: %w", err)
	}
	a.bridge.Reload(bridge.SettingsFromConfig(cfg))
	a.dispatcher.ApplyConfig(outboxConfig(cfg))
	a.watchdog.Configure(time.Duration(cfg.Bridge.Watchdog.Timeout), cfg.Bridge.BearerToken != "")
	return nil
}

func outboxConfig(cfg *config.Config) outbox.Config {
	c := outbox.Config{Timeouts: map[string]time.Duration{}}
	for _, t := range cfg.Tenants {
		if t.Webhook != nil {
			c.Timeouts[t.ID] = time.Duration(t.Webhook.Timeout)
		}
	}
	return c
}
