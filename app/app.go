// Package app assembles sentinel: configuration, the hot store, the
// ledger, the kill switch, the receiver, the admin API and /metrics, behind one
// http.Handler. It never touches signals or globals: cmd/sentinel turns
// those into calls of Reload and a cancelled context, and tests start it
// in-process.
package app

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"

	"github.com/agentsentinel/sentinel/auth"
	"github.com/agentsentinel/sentinel/bridge"
	"github.com/agentsentinel/sentinel/collector"
	"github.com/agentsentinel/sentinel/config"
	"github.com/agentsentinel/sentinel/delivery"
	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/heartbeat"
	"github.com/agentsentinel/sentinel/jsonapi"
	"github.com/agentsentinel/sentinel/killswitch"
	"github.com/agentsentinel/sentinel/ledger"
	"github.com/agentsentinel/sentinel/ledger/embedded"
	"github.com/agentsentinel/sentinel/ledger/postgres"
	"github.com/agentsentinel/sentinel/outbox"
	"github.com/agentsentinel/sentinel/storage"
)

// firstSnapshotDelay is how soon after start the hot state is first saved
// (at most; SnapshotInterval when shorter): a sentinel in a crash loop then
// keeps the heartbeats it received, rather than starting again and again
// from an older snapshot.
const firstSnapshotDelay = 10 * time.Second

// DefaultMaxScrapes is Options.MaxScrapes when 0: two Prometheus servers of
// an HA pair with room for a human's curl. Each scrape in flight holds its
// own rendered copy of the fleet (~160 MB at 100k agents).
const DefaultMaxScrapes = 4

// livenessSweepEvery is how often agents turning SILENT or ZOMBIE by
// sentinel's own clock are looked for and logged.
const livenessSweepEvery = 5 * time.Second

// Options configure an App.
type Options struct {
	// ConfigFile is the YAML configuration (SPEC 8).
	ConfigFile string
	// StoragePath holds the embedded ledger: state, journal, snapshot and
	// token key. Unused with storage.postgres.
	StoragePath string
	// Replica names this sentinel among the replicas sharing a PostgreSQL
	// ledger (its hot state's row); the host name when empty.
	Replica string
	// SnapshotInterval is how often the hot state is snapshotted (and, with
	// PostgreSQL, the other replicas' merged in); 1m when 0.
	SnapshotInterval time.Duration
	// TelemetryPath serves the metrics; /metrics when empty.
	TelemetryPath string
	// MaxScrapes caps the scrapes of TelemetryPath in flight, more are
	// answered 503; DefaultMaxScrapes when 0.
	MaxScrapes int
	// Web limits of Run's server (conns.go); the Default* constants when 0.
	// MaxConnections is further capped by the file-descriptor limit.
	MaxConnections    int
	IdleTimeout       time.Duration
	ReadHeaderTimeout time.Duration
	MaxHeaderBytes    int
	// DisabledCollectors are the optional per-agent families left out of
	// TelemetryPath (--no-collector.<name>).
	DisabledCollectors []collector.OptionalFamily
	// Logger discards when nil.
	Logger *slog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// App is a running sentinel.
type App struct {
	opts    Options
	logger  *slog.Logger
	cfg     atomic.Pointer[config.Config]
	store   *heartbeat.Store
	signer  *auth.Signer
	ledger  ledger.Ledger
	journal *storage.Journal // the embedded ledger's; nil with PostgreSQL
	// shared is true with PostgreSQL: replicas share the ledger and merge
	// each other's hot state; replica is this one's name.
	shared   bool
	replica  string
	control  *killswitch.Control
	receiver *heartbeat.Receiver
	liveness *heartbeat.LivenessLog
	admin    atomic.Pointer[killswitch.Settings]
	conns    *connLimiter

	sender     *delivery.Sender
	bridge     *bridge.Handler
	recoveries *bridge.Recoveries
	dispatcher *outbox.Dispatcher
	watchdog   *bridge.Watchdog
	registry   *prometheus.Registry
	handler    http.Handler
	ready      atomic.Bool

	// journalHealth is the embedded journal's Healthy, nil with PostgreSQL;
	// tests replace it (export_test.go), as a failed fsync cannot be
	// provoked from outside package storage.
	journalHealth interface{ Healthy() error }

	reloadMu      sync.Mutex
	reloadSuccess prometheus.Gauge
	reloadTime    prometheus.Gauge

	snapshotMu       sync.Mutex
	snapshotSuccess  prometheus.Gauge
	snapshotFailures prometheus.Counter
	snapshotDuration prometheus.Gauge

	closeOnce sync.Once
	closeErr  error
}

// New loads the configuration, restores the durable state from
// StoragePath and returns an App ready to serve. A corrupt state file is an
// error naming the file: sentinel never starts from a silently reset state.
func New(o Options) (*App, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.SnapshotInterval <= 0 {
		o.SnapshotInterval = time.Minute
	}
	if o.TelemetryPath == "" {
		o.TelemetryPath = "/metrics"
	}
	if o.MaxScrapes < 0 {
		return nil, fmt.Errorf("the maximum number of scrapes in flight must be positive, not %d", o.MaxScrapes)
	}
	if o.MaxScrapes == 0 {
		o.MaxScrapes = DefaultMaxScrapes
	}
	if o.MaxConnections < 0 || o.IdleTimeout < 0 || o.ReadHeaderTimeout < 0 || o.MaxHeaderBytes < 0 {
		return nil, errors.New("web limits must not be negative")
	}
	o.MaxConnections = cmp.Or(o.MaxConnections, DefaultMaxConnections)
	o.IdleTimeout = cmp.Or(o.IdleTimeout, DefaultIdleTimeout)
	o.ReadHeaderTimeout = cmp.Or(o.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	o.MaxHeaderBytes = cmp.Or(o.MaxHeaderBytes, DefaultMaxHeaderBytes)
	cfg, err := config.Load(o.ConfigFile)
	if err != nil {
		return nil, err
	}
	a := &App{opts: o, logger: o.Logger, registry: prometheus.NewRegistry()}
	a.cfg.Store(cfg)
	a.registry.MustRegister(
		versioncollector.NewCollector("sentinel"),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	a.registerSelfMetrics()
	a.conns = newConnLimiter(maxConnections(o.MaxConnections, o.Logger))
	a.registry.MustRegister(a.conns.collectors()...)

	if err := a.openLedger(cfg); err != nil {
		return nil, err
	}
	if err := a.restore(cfg); err != nil {
		a.control.Close()
		_ = a.ledger.Close()
		return nil, err
	}

	if err := a.openBridge(cfg); err != nil {
		a.control.Close()
		_ = a.ledger.Close()
		return nil, err
	}
	a.receiver = heartbeat.NewReceiver(heartbeat.ReceiverOptions{
		Store: a.store, Signer: a.signer, KillSwitch: a.control, Registerer: a.registry,
		Logger: o.Logger, Now: o.Now, Observer: a.recoveries,
	}, heartbeat.SettingsFromConfig(cfg))
	a.admin.Store(adminSettings(cfg))
	a.liveness = &heartbeat.LivenessLog{Store: a.store, Logger: o.Logger, Thresholds: func() *fleet.ThresholdPolicy {
		return a.admin.Load().Thresholds
	}}
	a.handler = a.routes()
	a.startBridge()
	a.ready.Store(true)
	return a, nil
}

// openLedger opens the configured ledger and the kill switch on it.
func (a *App) openLedger(cfg *config.Config) error {
	ctx := context.Background()
	if pg := cfg.Storage.Postgres; pg != nil {
		replica := a.opts.Replica
		if replica == "" {
			var err error
			if replica, err = hostName(); err != nil {
				return fmt.Errorf("storage.postgres: no --storage.replica-name given and no host name to default to: %w", err)
			}
		}
		pl, err := postgres.Open(ctx, string(pg.DSN), postgres.Options{Replica: replica, KeySize: auth.KeySize, Logger: a.logger})
		if err != nil {
			return err
		}
		a.ledger, a.replica, a.shared = pl, replica, true
	} else {
		el, err := embedded.Open(a.opts.StoragePath, embedded.Options{KeySize: auth.KeySize, Logger: a.logger})
		if err != nil {
			return err
		}
		a.ledger, a.journal, a.journalHealth = el, el.Journal(), el.Journal()
		a.registerJournalMetrics()
	}
	a.registerStorageMetrics()
	key, err := a.ledger.SigningKey(ctx, auth.KeySize)
	if err == nil {
		a.signer, err = auth.NewSigner(key)
	}
	if err == nil {
		a.control, err = killswitch.New(ctx, a.ledger, a.logger, a.registry)
	}
	if err != nil {
		_ = a.ledger.Close()
		return err
	}
	return nil
}

// restore fills the store with the saved hot state and makes it agree with
// the kill switch.
func (a *App) restore(cfg *config.Config) error {
	a.store = heartbeat.NewStore(cfg.Heartbeat.MaxAgents, a.control.NewAgent)
	if a.shared {
		if err := a.mergeReplicas(true); err != nil {
			return fmt.Errorf("restore agents: %w", err)
		}
		a.control.SyncStore(a.store)
		return nil
	}
	err := a.ledger.LoadAgents(context.Background(), func(replica string, _ time.Time, r io.Reader) error {
		takenAt, n, err := a.store.DecodeSnapshot(r)
		if err != nil {
			return err
		}
		a.logger.Info("agents restored from snapshot", "replica", replica, "agents", n, "taken_at", takenAt)
		return nil
	})
	if err != nil {
		return fmt.Errorf("restore agents: %w (move the snapshot away to start with an empty fleet; revocations are kept in the ledger)", err)
	}
	a.control.SyncStore(a.store)
	a.dropRemovedTenants(cfg)
	return nil
}

// mergeReplicas merges the hot state the replicas sharing the ledger saved
// into the store, the newest heartbeat of each agent winning, so that the
// admin API of any replica answers for agents that beat only on others
// (its own saved state too when all). Agents forgotten after their last
// heartbeat there are left out; revoked bits and commands come from the kill
// switch, never from another replica's older copy.
func (a *App) mergeReplicas(all bool) error {
	max := a.cfg.Load().Heartbeat.MaxAgents
	return a.ledger.LoadAgents(context.Background(), func(replica string, _ time.Time, r io.Reader) error {
		if replica == a.replica && !all {
			return nil
		}
		other := heartbeat.NewStore(max, nil)
		defer other.Release()
		if _, _, err := other.DecodeSnapshot(r); err != nil {
			return err
		}
		other.Each(func(ag *heartbeat.Agent) bool {
			if at, ok := a.control.Forgotten(ag.Key); ok && !ag.LastHeartbeat.After(at) {
				return true
			}
			if a.store.Merge(ag) {
				// The kill switch's bits, as for an agent new to the store.
				revoked, cmd, seq := a.control.NewAgent(ag.Key)
				a.store.SetRevoked(ag.Key, revoked)
				a.store.SetCommand(ag.Key, cmd, seq)
			}
			return true
		})
		return nil
	})
}

func adminSettings(cfg *config.Config) *killswitch.Settings {
	return &killswitch.Settings{
		Credentials:            auth.NewCredentials(cfg),
		Thresholds:             heartbeat.PolicyOf(cfg),
		DefaultShutdownTimeout: time.Duration(cfg.Bridge.KillSwitch.ShutdownTimeout),
	}
}

func (a *App) registerSelfMetrics() {
	a.reloadSuccess = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sentinel_config_last_reload_successful",
		Help: "Whether the last configuration reload attempt was successful.",
	})
	a.reloadTime = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sentinel_config_last_reload_success_timestamp_seconds",
		Help: "Timestamp of the last successful configuration reload.",
	})
	a.snapshotSuccess = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sentinel_snapshot_last_success_timestamp_seconds",
		Help: "Timestamp of the last successful snapshot of the hot agent state.",
	})
	a.snapshotFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sentinel_snapshot_failures_total",
		Help: "Snapshots of the hot agent state that failed.",
	})
	a.snapshotDuration = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sentinel_snapshot_duration_seconds",
		Help: "Duration of the last snapshot of the hot agent state.",
	})
	a.reloadSuccess.Set(1)
	a.reloadTime.SetToCurrentTime()
	a.registry.MustRegister(a.reloadSuccess, a.reloadTime, a.snapshotSuccess, a.snapshotFailures, a.snapshotDuration)
}

// registerJournalMetrics exposes the embedded ledger journal's counters,
// read at scrape time.
func (a *App) registerJournalMetrics() {
	stats := func(field func(storage.JournalStats) uint64) func() float64 {
		return func() float64 { return float64(field(a.journal.Stats())) }
	}
	a.registry.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sentinel_journal_records_total",
			Help: "Records made durable in the ledger journal.",
		}, stats(func(s storage.JournalStats) uint64 { return s.Records })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sentinel_journal_fsyncs_total",
			Help: "fsyncs of the ledger journal; records per fsync is the group-commit factor.",
		}, stats(func(s storage.JournalStats) uint64 { return s.Syncs })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sentinel_journal_async_dropped_total",
			Help: "Asynchronous journal records dropped because the queue was full; they only matter after a crash.",
		}, stats(func(s storage.JournalStats) uint64 { return s.AsyncDropped })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sentinel_journal_size_bytes",
			Help: "Size of the ledger journal; it is compacted past 16 MiB.",
		}, func() float64 { return float64(a.journal.Size()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sentinel_journal_healthy",
			Help: "1 while the ledger journal accepts writes; 0 after a write failure, until sentinel restarts.",
		}, func() float64 {
			if a.journalFailure() != nil {
				return 0
			}
			return 1
		}),
	)
}

// registerStorageMetrics exposes sentinel_storage_healthy.
func (a *App) registerStorageMetrics() {
	a.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sentinel_storage_healthy",
		Help: "1 while the ledger can commit changes; 0 while it cannot (kill-switch actions then answer 503).",
	}, func() float64 {
		if a.storageFailure() != nil {
			return 0
		}
		return 1
	}))
}

// storageFailure is why the ledger cannot commit, nil while it can (the
// embedded ledger's health includes its journal's).
func (a *App) storageFailure() error {
	if err := a.ledger.Healthy(); err != nil && !errors.Is(err, ledger.ErrClosed) {
		return err
	}
	return nil
}

// journalFailure is why the embedded ledger's journal refuses writes, nil
// while it accepts them (and always with PostgreSQL). A failed fsync makes
// the journal refuse every write (every kill-switch action then answers
// 503) until it is reopened, which re-verifies the file: only a restart
// does that. A closed journal is not a failure: it is closed only on the way
// out, and /-/ready already says so.
func (a *App) journalFailure() error {
	if a.journalHealth == nil {
		return nil
	}
	if err := a.journalHealth.Healthy(); err != nil && !errors.Is(err, storage.ErrJournalClosed) && !errors.Is(err, ledger.ErrClosed) {
		return err
	}
	return nil
}

// Snapshot writes the hot state to disk now. Heartbeats go on meanwhile:
// the store is copied one shard at a time.
func (a *App) Snapshot() error {
	a.snapshotMu.Lock()
	defer a.snapshotMu.Unlock()
	start := time.Now()
	takenAt := a.opts.Now().UTC()
	var n int
	err := a.ledger.SaveAgents(context.Background(), takenAt, func(w io.Writer) error {
		var err error
		n, err = a.store.EncodeSnapshot(w, takenAt)
		return err
	})
	if err != nil {
		a.snapshotFailures.Inc()
		a.logger.Error("snapshot of agents failed", "err", err)
		return fmt.Errorf("snapshot agents: %w", err)
	}
	a.snapshotSuccess.Set(float64(time.Now().Unix()))
	a.snapshotDuration.Set(time.Since(start).Seconds())
	if a.shared {
		if err := a.mergeReplicas(false); err != nil {
			a.logger.Error("merging the other replicas' agents failed", "err", err)
		}
	}
	a.logger.Debug("snapshot of agents written", "taken_at", takenAt, "agents", n, "duration", time.Since(start))
	return nil
}

// Reload loads the configuration file again. A bad configuration is
// rejected and the running one kept; the outcome is logged and exposed as
// sentinel_config_last_reload_successful.
func (a *App) Reload() error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	cfg, err := config.Load(a.opts.ConfigFile)
	if err != nil {
		a.reloadSuccess.Set(0)
		a.logger.Error("configuration reload failed, keeping the running configuration", "file", a.opts.ConfigFile, "err", err)
		return err
	}
	if err := a.reloadBridge(cfg); err != nil {
		a.reloadSuccess.Set(0)
		a.logger.Error("configuration reload failed, keeping the running configuration", "file", a.opts.ConfigFile, "err", err)
		return err
	}
	a.cfg.Store(cfg)
	a.store.SetLimit(cfg.Heartbeat.MaxAgents)
	a.receiver.SetSettings(heartbeat.SettingsFromConfig(cfg))
	a.admin.Store(adminSettings(cfg))
	a.dropRemovedTenants(cfg)
	a.reloadSuccess.Set(1)
	a.reloadTime.SetToCurrentTime()
	a.logger.Info("configuration reloaded", "file", a.opts.ConfigFile, "tenants", len(cfg.Tenants))
	return nil
}

// SweepLiveness logs the agents that turned SILENT or ZOMBIE since the last
// sweep (Run calls it every few seconds).
func (a *App) SweepLiveness() { a.liveness.Sweep(a.opts.Now()) }

// Config returns the running configuration.
func (a *App) Config() *config.Config { return a.cfg.Load() }

// Store returns the hot agent store.
func (a *App) Store() *heartbeat.Store { return a.store }

// Handler serves every sentinel endpoint.
func (a *App) Handler() http.Handler { return a.handler }

func (a *App) routes() http.Handler {
	mux := http.NewServeMux()
	a.receiver.Register(mux)
	admin := &killswitch.API{
		Control: a.control, Store: a.store, Logger: a.logger, Now: a.opts.Now,
		Signer: a.signer, Settings: a.admin.Load,
	}
	admin.Register(mux)
	(&killswitch.DeliveriesAPI{
		API:    admin,
		Ledger: a.ledger, Tester: a.sender, Wake: a.dispatcher.Wake, WithSequence: outbox.WithSequence,
	}).Register(mux)
	mux.Handle("/api/v1/alertmanager", a.bridge)

	metrics := collector.New(a.store, collector.Options{
		Thresholds: func() *fleet.ThresholdPolicy { return a.admin.Load().Thresholds },
		Tenants:    func() []string { return a.cfg.Load().TenantIDs() },
		Now:        a.opts.Now,
		MaxScrapes: a.opts.MaxScrapes,
		Disabled:   a.opts.DisabledCollectors,
	})
	a.registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "sentinel_metrics_scrapes_rejected_total",
		Help: "Scrapes of the metrics answered 503 because the maximum number of scrapes was in flight.",
	}, func() float64 { return float64(metrics.RejectedScrapes()) }), prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "sentinel_metrics_scrapes_evicted_total",
		Help: "Scrapes of the metrics cut off because their client had stopped reading and a new scrape needed the slot.",
	}, func() float64 { return float64(metrics.EvictedScrapes()) }))
	mux.Handle(a.opts.TelemetryPath, collector.RequireBearer(func() string {
		return string(a.cfg.Load().Metrics.BearerToken)
	}, metrics.Handler(a.registry, a.logger)))
	mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, r *http.Request) {
		if err := jsonapi.CheckMethod(r, http.MethodGet, http.MethodHead); err != nil {
			jsonapi.WriteError(w, a.logger, err)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		// A failed journal heals only by reopening it: failing the liveness
		// probe makes the orchestrator restart sentinel, which reopens and
		// re-verifies the journal. An unreachable PostgreSQL is not such a
		// failure: sentinel reconnects by itself, and a restart would not
		// help.
		if err := a.journalFailure(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "Sentinel is unhealthy: the kill-switch journal refuses writes: %v\n", err)
			return
		}
		fmt.Fprintln(w, "Sentinel is Healthy.")
	})
	mux.HandleFunc("/-/ready", func(w http.ResponseWriter, r *http.Request) {
		if err := jsonapi.CheckMethod(r, http.MethodGet, http.MethodHead); err != nil {
			jsonapi.WriteError(w, a.logger, err)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !a.ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "Sentinel is not ready.")
			return
		}
		fmt.Fprintln(w, "Sentinel is Ready.")
	})
	mux.Handle("/-/reload", jsonapi.Handle(a.logger, a.serveReload))
	landing, err := web.NewLandingPage(web.LandingConfig{
		Name:        "Sentinel",
		Description: "Prometheus-native dead man's switch for AI agents",
		Version:     version.Info(),
		// Sentinel serves no pprof: its port is open to every tenant's
		// agents, and profiles would show them the whole process.
		Profiling: "false",
		Links: []web.LandingLinks{
			{Address: a.opts.TelemetryPath, Text: "Metrics"},
			{Address: "/-/healthy", Text: "Health"},
			{Address: "/-/ready", Text: "Readiness"},
		},
	})
	if err != nil {
		a.logger.Error("landing page", "err", err)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			jsonapi.WriteError(w, a.logger, jsonapi.NotFound("no such endpoint: "+r.URL.Path))
			return
		}
		if err := jsonapi.CheckMethod(r, http.MethodGet, http.MethodHead); err != nil {
			jsonapi.WriteError(w, a.logger, err)
			return
		}
		if landing != nil {
			landing.ServeHTTP(w, r)
		}
	})
	// ServeMux would answer a non-canonical path with a redirect to the
	// cleaned one, which a client may follow with its method: a DELETE of
	// /api/v1/installations/a1/revoke/.. would forget a1. The heartbeat
	// routes Routes takes itself are canonical by construction (an id of
	// one segment, not "." or ".."), so they skip the check.
	return a.receiver.Routes(jsonapi.CanonicalPaths(mux))
}

// Run serves on the listeners of flags until ctx is done, snapshotting
// periodically and reloading on every receive from reload; then it shuts
// down gracefully within shutdownTimeout and writes a final snapshot.
func (a *App) Run(ctx context.Context, flags *web.FlagConfig, listener net.Listener, reload <-chan struct{}, shutdownTimeout time.Duration) error {
	server := &http.Server{
		Handler:           a.handler,
		ReadHeaderTimeout: a.opts.ReadHeaderTimeout,
		ReadTimeout:       30 * time.Second,
		// A scrape of a large fleet takes a while to write; /metrics sets a
		// deadline per chunk instead (collector.Handler).
		WriteTimeout:   2 * time.Minute,
		IdleTimeout:    a.opts.IdleTimeout,
		MaxHeaderBytes: a.opts.MaxHeaderBytes,
		ConnState:      a.conns.track,
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- a.serve(server, flags, listener) }()
	first := time.NewTimer(min(firstSnapshotDelay, a.opts.SnapshotInterval))
	defer first.Stop()
	ticker := time.NewTicker(a.opts.SnapshotInterval)
	defer ticker.Stop()
	sweep := time.NewTicker(livenessSweepEvery)
	defer sweep.Stop()
	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-serveErr:
			if !errors.Is(err, http.ErrServerClosed) {
				runErr = fmt.Errorf("serve: %w", err)
			}
			break loop
		case <-reload:
			_ = a.Reload() // logged and exposed as a metric; the old config stays
		case <-first.C:
			_ = a.Snapshot() // logged and exposed as a metric
		case <-ticker.C:
			_ = a.Snapshot() // logged and exposed as a metric
		case <-sweep.C:
			a.SweepLiveness()
		}
	}
	a.ready.Store(false)
	a.logger.Info("shutting down", "timeout", shutdownTimeout)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := server.Shutdown(shutdownCtx); err != nil {
		a.logger.Warn("graceful shutdown did not finish in time", "err", err)
	}
	if err := a.Close(); err != nil && runErr == nil {
		runErr = err
	}
	return runErr
}

// serve serves on listener, or else on the listeners of flags, with the
// web configuration of flags (listen.go): TLS when it enables it, and
// net/http's own error answers in JSON on every listener.
func (a *App) serve(server *http.Server, flags *web.FlagConfig, listener net.Listener) error {
	var file string
	if flags.WebConfigFile != nil {
		file = *flags.WebConfigFile
	}
	wc, err := loadWebConfig(file)
	if err != nil {
		if listener != nil {
			listener.Close()
		}
		return err
	}
	listeners := []net.Listener{listener}
	if listener == nil {
		if listeners, err = listen(flags); err != nil {
			return err
		}
	}
	return serveListeners(server, wc, listeners, a.logger)
}

// maxConnections is the connection cap: want, lowered to leave fdReserve of
// the process's file-descriptor limit (Go raises the soft limit to the hard
// one at start), since a server out of descriptors stalls every client,
// heartbeats included, in its accept loop.
func maxConnections(want int, logger *slog.Logger) int {
	nofile, ok := fileLimit()
	if !ok || nofile-fdReserve >= uint64(want) {
		return want
	}
	room := 16
	if nofile > fdReserve+16 {
		room = int(nofile - fdReserve)
	}
	logger.Warn("--web.max-connections lowered to fit the file-descriptor limit", "max_connections", room, "nofile", nofile)
	return room
}

// Close writes a final snapshot, stops the kill switch and closes the
// ledger. It is idempotent.
func (a *App) Close() error {
	a.closeOnce.Do(func() {
		a.ready.Store(false)
		a.stopBridge()
		snapErr := a.Snapshot()
		a.control.Close()
		ledgerErr := a.ledger.Close()
		a.closeErr = errors.Join(snapErr, ledgerErr)
	})
	return a.closeErr
}

// Ledger returns the durable state.
func (a *App) Ledger() ledger.Ledger { return a.ledger }
