package bridge

import (
	"context"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/heartbeat"
	"github.com/agentsentinel/sentinel/killswitch"
	"github.com/agentsentinel/sentinel/ledger"
)

// UnalertedGrace is how long an agent may be ZOMBIE by sentinel's own clock
// without an AgentZombie notification before sentinel says the alerting
// pipeline is failing that agent: scrape interval, rule evaluation, `for`,
// and Alertmanager's group_wait fit well within it.
const UnalertedGrace = 5 * time.Minute

// maxUnalertedLogLines bounds the per-agent lines of one check; a
// fleet-wide failure gets one summary line beyond them.
const maxUnalertedLogLines = 10

// Watchdog watches the pipeline (SPEC 6.2): when no Watchdog notification
// has arrived for the configured timeout it announces pipeline.silent to
// every tenant, and pipeline.restored when one arrives again (the bridge's
// handler commits that). Both are compare-and-sets in the ledger, so of
// several replicas exactly one announces each.
//
// It also notices zombies nobody alerted about: agents ZOMBIE by this
// replica's clock for longer than UnalertedGrace whose announced state is
// not ZOMBIE.
type Watchdog struct {
	control *killswitch.Control
	agents  *heartbeat.Store
	tenants Tenants
	logger  *slog.Logger
	now     func() time.Time
	started time.Time
	// timeout is bridge.watchdog.timeout in nanoseconds; 0 disables.
	timeout atomic.Int64
	// enabled is whether the bridge is configured at all (a bearer token):
	// without it, unalerted zombies are the user's choice, not news.
	enabled atomic.Bool

	mu sync.Mutex
	// logged holds the unalerted zombies already logged, with the last
	// heartbeat of the outage they were logged for.
	logged    map[fleet.Key]time.Time
	unalerted map[string]int

	cancel context.CancelFunc
	done   sync.WaitGroup
}

// NewWatchdog returns a watchdog; Start runs it.
func NewWatchdog(control *killswitch.Control, agents *heartbeat.Store, tenants Tenants, logger *slog.Logger, reg prometheus.Registerer, now func() time.Time) *Watchdog {
	if now == nil {
		now = time.Now
	}
	w := &Watchdog{
		control: control, agents: agents, tenants: tenants, logger: logger, now: now, started: now(),
		logged: map[fleet.Key]time.Time{}, unalerted: map[string]int{},
	}
	if reg != nil {
		reg.MustRegister(w)
	}
	return w
}

// Configure sets bridge.watchdog.timeout (0 disables the pipeline check) and
// whether the bridge is configured.
func (w *Watchdog) Configure(timeout time.Duration, bridgeEnabled bool) {
	w.timeout.Store(int64(timeout))
	w.enabled.Store(bridgeEnabled)
}

// Start runs the checks until Stop.
func (w *Watchdog) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	w.done.Add(1)
	go func() {
		defer w.done.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		var lastScan time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			w.CheckPipeline(ctx)
			if now := w.now(); now.Sub(lastScan) >= 15*time.Second {
				lastScan = now
				w.CheckUnalerted()
			}
		}
	}()
}

// Stop stops the checks.
func (w *Watchdog) Stop() {
	if w.cancel != nil {
		w.cancel()
	}
	w.done.Wait()
}

// CheckPipeline announces pipeline.silent once no Watchdog arrived for the
// timeout (counted from sentinel's start when none ever did).
func (w *Watchdog) CheckPipeline(ctx context.Context) {
	timeout := time.Duration(w.timeout.Load())
	if timeout <= 0 {
		return
	}
	state, last := w.control.Pipeline()
	now := w.now().UTC()
	ref := last
	if ref.IsZero() {
		ref = w.started
	}
	if state != ledger.PipelineOK || now.Sub(ref) <= timeout {
		return
	}
	op, err := PipelineOp(w.tenants.WebhookTenants(), ledger.PipelineOK, ledger.PipelineSilent, last, timeout, now)
	if err != nil {
		w.logger.Error("cannot build pipeline.silent events", "err", err)
		return
	}
	res, err := w.control.Commit(ctx, op)
	switch {
	case err != nil:
		w.logger.Warn("cannot commit pipeline.silent; retrying", "err", err)
	case res.Applied(0):
		w.logger.Error("no Watchdog notification from Alertmanager within bridge.watchdog.timeout: alerts may not be reaching anyone; pipeline.silent sent to every tenant",
			"timeout", timeout, "last_watchdog", last)
	}
}

// CheckUnalerted counts, and logs once per outage, the agents that are
// ZOMBIE by this replica's clock beyond UnalertedGrace without an
// announced ZOMBIE.
func (w *Watchdog) CheckUnalerted() {
	now := w.now()
	counts := map[string]int{}
	var fresh []heartbeat.Agent
	w.mu.Lock()
	defer w.mu.Unlock()
	seen := map[fleet.Key]bool{}
	if w.enabled.Load() {
		w.agents.Each(func(a *heartbeat.Agent) bool {
			if a.Revoked || a.Stopped {
				return true
			}
			th := w.tenants.Thresholds(a.Key, a)
			zombieAt := th.ZombieDeadline(a.LastHeartbeat, a.Interval)
			if th.Liveness(a.MissedBeats(now)) != fleet.StateZombie || now.Sub(zombieAt) < UnalertedGrace {
				return true
			}
			k := fleet.Key{Tenant: strings.Clone(a.Tenant), AgentID: strings.Clone(a.AgentID)}
			if st, _ := w.control.Announced(k); st == fleet.StateZombie {
				return true
			}
			counts[k.Tenant]++
			seen[k] = true
			if w.logged[k] != a.LastHeartbeat {
				w.logged[k] = a.LastHeartbeat
				c := *a
				c.Key = k
				fresh = append(fresh, c)
			}
			return true
		})
	}
	for k := range w.logged {
		if !seen[k] {
			delete(w.logged, k)
		}
	}
	w.unalerted = counts
	for i, a := range fresh {
		if i == maxUnalertedLogLines {
			w.logger.Warn("more agents are ZOMBIE without an AgentZombie notification; see sentinel_agents_unalerted_zombie", "more", len(fresh)-i)
			break
		}
		w.logger.Warn("agent is ZOMBIE but no AgentZombie notification reached the bridge: check Prometheus, the rules and Alertmanager's route to the bridge",
			"tenant", a.Tenant, "agent_id", a.AgentID, "last_heartbeat", a.LastHeartbeat, "grace", UnalertedGrace)
	}
}

var (
	watchdogSeenDesc = prometheus.NewDesc("sentinel_pipeline_watchdog_last_seen_timestamp_seconds",
		"When the pipeline's Watchdog alert last reached the bridge (any replica); absent until one has.", nil, nil)
	unalertedDesc = prometheus.NewDesc("sentinel_agents_unalerted_zombie",
		"Agents ZOMBIE by sentinel's own clock for longer than 5m without an AgentZombie notification: the alerting pipeline is failing them.",
		[]string{"tenant"}, nil)
)

// Describe implements prometheus.Collector.
func (w *Watchdog) Describe(ch chan<- *prometheus.Desc) {
	ch <- watchdogSeenDesc
	ch <- unalertedDesc
}

// Collect implements prometheus.Collector.
func (w *Watchdog) Collect(ch chan<- prometheus.Metric) {
	if _, last := w.control.Pipeline(); !last.IsZero() {
		ch <- prometheus.MustNewConstMetric(watchdogSeenDesc, prometheus.GaugeValue, float64(last.UnixNano())/1e9)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	tenants := map[string]int{}
	for _, t := range w.tenants.WebhookTenants() {
		tenants[t] = 0
	}
	maps.Copy(tenants, w.unalerted)
	for t, n := range tenants {
		ch <- prometheus.MustNewConstMetric(unalertedDesc, prometheus.GaugeValue, float64(n), t)
	}
}
