// Package collector exposes the agents of a heartbeat.Store as the metrics of
// SPEC 4: the per-agent series and the sentinel_agents fleet gauge.
//
// Every series is built from the store at each scrape, so the series of a
// silent or zombie agent stay exactly as long as the agent is in the store
// and vanish with the first scrape after Store.Delete; nothing keeps dead
// label sets around. Besides recycled memory, what Handler carries from a
// scrape to the next is the text of a family for a run of the store's shards
// in which the store counted no change that family shows (the same text a
// fresh render gives: the tests compare both after every kind of change),
// and the compressed form of unchanged text.
//
// There are two ways to the same exposition:
//   - Collector implements prometheus.Collector with const metrics. It is the
//     reference the tests check against and fits small fleets or a registry,
//     but at 100k agents it costs seconds per scrape.
//   - Collector.Handler serves /metrics and streams the agent families as
//     exposition text rendered straight from the store (kube-state-metrics'
//     approach), in front of the self-metrics it gathers from a registry.
//
// Both derive every value and label from the same functions, so they agree
// sample for sample (the tests parse the Handler's output to prove it).
package collector

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/heartbeat"
)

// Options wires the collector to the application.
type Options struct {
	// Thresholds returns the current threshold policy (reloadable): each
	// agent's lease expiry and zombie deadline follow its own thresholds,
	// else its tenant's, else the global ones.
	Thresholds func() *fleet.ThresholdPolicy
	// Tenants returns the configured tenant ids: each gets a sentinel_agents
	// series per state, 0 when it has no agent in that state, so that no
	// series vanishes when the last agent of a state leaves it.
	Tenants func() []string
	// Now is time.Now in production and a fake clock in tests.
	Now func() time.Time
	// MaxScrapes caps the Handler scrapes in flight; beyond it Handler
	// answers 503 at once (promhttp's MaxRequestsInFlight). 0 means no cap.
	// Each scrape holds its own copy of the fleet, rendered (~160 MB at 100k
	// agents), until the client has read all of it: without a cap, a dozen
	// slow clients take gigabytes.
	MaxScrapes int
	// Disabled are the optional families (taken from Optional) left out of
	// the exposition, as node_exporter's --no-collector.<name>.
	Disabled []OptionalFamily
}

// OptionalFamily is a per-agent family a user may switch off to spare
// their Prometheus the series. The families the alerting rules read (last
// heartbeat, interval, lease expiry, zombie deadline, stopped, revoked)
// are never optional.
type OptionalFamily struct {
	// Name is the collector name: cmd/sentinel's --[no-]collector.<Name>.
	Name string
	// Family is the metric family it controls.
	Family string
	fam    int // index into families
}

// Optional lists the families that Options.Disabled may name.
var Optional = []OptionalFamily{
	{"agent-info", "sentinel_agent_info", famInfo},
	{"agent-uptime", "sentinel_agent_uptime_seconds", famUptime},
	{"agent-requests", "sentinel_agent_requests_handled_total", famRequests},
	{"agent-errors", "sentinel_agent_errors_total", famErrors},
	{"agent-latency", "sentinel_agent_latency_average_seconds", famLatency},
}

// DefaultThresholds are the default silent_after and zombie_after, for every
// agent without thresholds of its own when Options.Thresholds is nil.
var DefaultThresholds = fleet.Thresholds{SilentAfter: 5, ZombieAfter: 15}

// Collector exposes a heartbeat.Store. It is safe for concurrent use.
type Collector struct {
	store *heartbeat.Store
	opts  Options
	descs [numFamilies]*prometheus.Desc
	// idle keeps the view and text buffers of the last Handler scrape across
	// garbage collections (a sync.Pool would drop them, and regrowing ~100 MB
	// of buffers costs more than rendering into them); scrapes recycles the
	// extra states of concurrent scrapes.
	mu      sync.Mutex
	idle    *scrape
	scrapes sync.Pool
	// sizeHint is the size of each family's buffer at the last scrape, so that
	// a fresh scrape state allocates its buffers once.
	sizeHint [numFamilies]atomic.Int64
	// inflight is the semaphore of Options.MaxScrapes, nil without a cap.
	inflight chan struct{}
	rejected atomic.Uint64
	// writers are the Handler scrapes holding a slot of inflight (handler.go).
	writers writerSet
	// off is the bit set of the families of Options.Disabled.
	off uint16
	// fresh makes render derive every text anew, keeping none from the
	// scrape before: the benchmarks' baseline.
	fresh bool
}

// New returns a Collector of store. Nil Options fields get defaults:
// DefaultThresholds, no configured tenants, time.Now.
func New(store *heartbeat.Store, opts Options) *Collector {
	if opts.Thresholds == nil {
		policy := &fleet.ThresholdPolicy{Global: DefaultThresholds}
		opts.Thresholds = func() *fleet.ThresholdPolicy { return policy }
	}
	if opts.Tenants == nil {
		opts.Tenants = func() []string { return nil }
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	c := &Collector{store: store, opts: opts}
	for _, o := range opts.Disabled {
		c.off |= 1 << o.fam
	}
	if opts.MaxScrapes > 0 {
		c.inflight = make(chan struct{}, opts.MaxScrapes)
	}
	for i, f := range families {
		c.descs[i] = prometheus.NewDesc(f.name, f.help, f.labels, nil)
	}
	return c
}

// family is one metric family of the exposition, in exposition order.
type family struct {
	name   string
	help   string
	typ    prometheus.ValueType
	labels []string // sorted: the text path writes them in this order, as client_golang does
}

// Indexes into families. The value families come first, in the order of the
// values computed by agentValues.
const (
	famLastHeartbeat = iota
	famInterval
	famLeaseExpiry
	famZombieDeadline
	famStopped
	famRevoked
	famPaused
	famUptime
	famRequests
	famErrors
	famLatency
	famInfo
	famAgents
	numFamilies

	// numValueFamilies counts the per-agent families that carry a value.
	numValueFamilies = famInfo
	numInfoLabels    = 13
	numStates        = 5 // len(fleet.States)
)

var (
	agentLabels = []string{"agent_id", "tenant"}
	// infoLabels are sorted by name; infoLabelValues fills them in this order.
	infoLabels = []string{
		"agent_id", "container_id", "function", "hostname", "image", "namespace",
		"node", "platform", "pod", "region", "status", "tenant", "version",
	}
	agentsLabels = []string{"state", "tenant"}
)

var families = [numFamilies]family{
	famLastHeartbeat: {"sentinel_agent_last_heartbeat_timestamp_seconds",
		"Unix time of the agent's last accepted heartbeat.", prometheus.GaugeValue, agentLabels},
	famInterval: {"sentinel_agent_heartbeat_interval_seconds",
		"Effective heartbeat interval of the agent in seconds.", prometheus.GaugeValue, agentLabels},
	famLeaseExpiry: {"sentinel_agent_lease_expiry_timestamp_seconds",
		"Unix time at which the agent's lease ends and it turns SILENT: last heartbeat + interval * silent_after.", prometheus.GaugeValue, agentLabels},
	famZombieDeadline: {"sentinel_agent_zombie_deadline_timestamp_seconds",
		"Unix time at which the agent turns ZOMBIE: last heartbeat + interval * zombie_after.", prometheus.GaugeValue, agentLabels},
	famStopped: {"sentinel_agent_stopped",
		"1 after the agent sent its shutdown signal, else 0.", prometheus.GaugeValue, agentLabels},
	famRevoked: {"sentinel_agent_revoked",
		"1 while the agent is revoked by the kill switch, else 0.", prometheus.GaugeValue, agentLabels},
	famPaused: {"sentinel_agent_paused",
		"1 while the agent is paused by the kill switch (it beat after being handed pause, and has not been handed resume or terminate since), else 0.", prometheus.GaugeValue, agentLabels},
	famUptime: {"sentinel_agent_uptime_seconds",
		"Agent-reported uptime in seconds.", prometheus.GaugeValue, agentLabels},
	famRequests: {"sentinel_agent_requests_handled_total",
		"Agent-reported number of requests handled.", prometheus.CounterValue, agentLabels},
	famErrors: {"sentinel_agent_errors_total",
		"Agent-reported number of errors.", prometheus.CounterValue, agentLabels},
	famLatency: {"sentinel_agent_latency_average_seconds",
		"Agent-reported average request latency in seconds.", prometheus.GaugeValue, agentLabels},
	famInfo: {"sentinel_agent_info",
		"Agent metadata as last reported; the value is always 1.", prometheus.GaugeValue, infoLabels},
	famAgents: {"sentinel_agents",
		"Number of agents per tenant and state.", prometheus.GaugeValue, agentsLabels},
}

// observe counts a in fl and computes its value-family samples into v,
// resolving its thresholds under policy once for both; it returns the bit
// set of the families a has a sample in, less those switched off. Both
// exposition paths take every agent through it.
func (c *Collector) observe(a *heartbeat.Agent, now time.Time, policy *fleet.ThresholdPolicy, fl *fleetCounts, v *[numValueFamilies]float64) uint16 {
	th := a.Thresholds(policy)
	fl.add(a.Tenant, a.StateUnder(now, th))
	return agentValues(a, th, v) &^ c.off
}

// agentValues computes the value-family samples of a, whose thresholds in
// force are th, and returns the bit set of the families a has a sample in.
func agentValues(a *heartbeat.Agent, th fleet.Thresholds, v *[numValueFamilies]float64) uint16 {
	last := a.LastHeartbeat.UnixNano()
	v[famLastHeartbeat] = float64(last) / 1e9
	v[famInterval] = a.Interval.Seconds()
	// The rules compare the scrape time with these two, so they are the
	// only place the thresholds reach Prometheus.
	v[famLeaseExpiry] = float64(last+int64(a.Interval)*int64(th.SilentAfter)) / 1e9
	v[famZombieDeadline] = float64(last+int64(a.Interval)*int64(th.ZombieAfter)) / 1e9
	v[famStopped] = boolValue(a.Stopped)
	v[famRevoked] = boolValue(a.Revoked)
	v[famPaused] = boolValue(a.Paused)
	mask := uint16(1<<famLastHeartbeat | 1<<famInterval | 1<<famLeaseExpiry | 1<<famZombieDeadline | 1<<famStopped | 1<<famRevoked | 1<<famPaused)
	if a.HasUptime {
		v[famUptime] = a.UptimeSeconds
		mask |= 1 << famUptime
	}
	if a.HasMetrics {
		v[famRequests] = a.Metrics.RequestsHandled
		v[famErrors] = a.Metrics.Errors
		v[famLatency] = a.Metrics.AvgLatencyMs / 1000
		mask |= 1<<famRequests | 1<<famErrors | 1<<famLatency
	}
	return mask
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// infoLabelValues fills v in the order of infoLabels. The values are raw:
// callers pass them through labelValue or appendLabelValue.
func infoLabelValues(a *heartbeat.Agent, v *[numInfoLabels]string) {
	p := &a.Platform
	*v = [...]string{
		a.AgentID, p.ContainerID, p.FunctionName, p.Hostname, p.Image, p.Namespace,
		p.Node, p.Type.String(), p.PodName, p.Region, a.Status.String(), a.Tenant, a.Version,
	}
}

// labelValue makes s a valid label value. The store keeps agent-reported
// strings as given (Restore, truncation at MaxStringLen may split a rune), and
// client_golang refuses, Prometheus rejects the whole scrape on, invalid UTF-8,
// so invalid bytes become U+FFFD in both exposition paths.
func labelValue(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// fleetCounts counts agents per tenant and state for sentinel_agents.
type fleetCounts struct {
	counts map[string]*[numStates]int
}

// stateIndex maps a fleet.State to its position in fleet.States.
var stateIndex = func() (idx [numStates]int) {
	if len(fleet.States) != numStates {
		panic("collector: numStates does not match fleet.States")
	}
	for i, s := range fleet.States {
		idx[s] = i
	}
	return idx
}()

func (f *fleetCounts) reset(tenants []string) {
	if f.counts == nil {
		f.counts = make(map[string]*[numStates]int)
	}
	clear(f.counts)
	for _, t := range tenants {
		f.counts[t] = new([numStates]int)
	}
}

// add counts one agent. tenant may borrow from a view: it is cloned when it
// becomes a map key.
func (f *fleetCounts) add(tenant string, s fleet.State) {
	c, ok := f.counts[tenant]
	if !ok {
		c = new([numStates]int)
		f.counts[strings.Clone(tenant)] = c
	}
	if int(s) < len(stateIndex) {
		c[stateIndex[s]]++
	}
}

// each calls fn with every count of sentinel_agents in exposition order:
// tenants sorted, states in fleet.States order.
func (f *fleetCounts) each(fn func(tenant string, s fleet.State, n int)) {
	ts := make([]string, 0, len(f.counts))
	for t := range f.counts {
		ts = append(ts, t)
	}
	slices.Sort(ts)
	for _, t := range ts {
		for i, s := range fleet.States {
			fn(t, s, f.counts[t][i])
		}
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector from one consistent snapshot.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	// A fresh view, never recycled: const metrics keep the label strings,
	// which borrow from the view, for as long as the registry holds them.
	view := c.store.Snapshot(nil)
	now, policy := c.opts.Now(), c.opts.Thresholds()
	var (
		fl     fleetCounts
		vals   [numValueFamilies]float64
		labels [numInfoLabels]string
	)
	fl.reset(c.opts.Tenants())
	view.Each(func(a *heartbeat.Agent) bool {
		mask := c.observe(a, now, policy, &fl, &vals)
		agentID, tenant := labelValue(a.AgentID), labelValue(a.Tenant)
		for f := range numValueFamilies {
			if mask&(1<<f) != 0 {
				ch <- prometheus.MustNewConstMetric(c.descs[f], families[f].typ, vals[f], agentID, tenant)
			}
		}
		if c.off&(1<<famInfo) != 0 {
			return true
		}
		infoLabelValues(a, &labels)
		lv := make([]string, len(labels))
		for i, l := range labels {
			lv[i] = labelValue(l)
		}
		ch <- prometheus.MustNewConstMetric(c.descs[famInfo], prometheus.GaugeValue, 1, lv...)
		return true
	})
	fl.each(func(tenant string, s fleet.State, n int) {
		ch <- prometheus.MustNewConstMetric(c.descs[famAgents], prometheus.GaugeValue,
			float64(n), s.String(), labelValue(tenant))
	})
}
