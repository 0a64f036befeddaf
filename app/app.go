// Package app assembles sentinel: configuration, the hot store, the
// kill-switch journal, the receiver, the admin API and /metrics, behind one
// http.Handler. It never touches signals or globals: cmd/sentinel turns
// those into calls of Reload and a cancelled context, and tests start it
// in-process.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"

	"github.com/agentsentinel/sentinel/auth"
	"github.com/agentsentinel/sentinel/collector"
	"github.com/agentsentinel/sentinel/config"
	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/heartbeat"
	"github.com/agentsentinel/sentinel/jsonapi"
	"github.com/agentsentinel/sentinel/killswitch"
	"github.com/agentsentinel/sentinel/storage"
)

// Files under Options.StoragePath.
const (
	journalFile  = "killswitch.journal"
	snapshotFile = "agents.snapshot"
	keyFile      = "token.key"
	snapshotKind = "agents"
)

// journalCompactBytes is the journal size past which a snapshot also
// compacts it.
const journalCompactBytes = 16 << 20

// DefaultMaxScrapes is Options.MaxScrapes when 0: two Prometheus servers of
// an HA pair with room for a human's curl. Each scrape in flight holds its
// own rendered copy of the fleet (~160 MB at 100k agents).
const DefaultMaxScrapes = 4

// Options configure an App.
type Options struct {
	// ConfigFile is the YAML configuration (SPEC 8).
	ConfigFile string
	// StoragePath holds the journal, the snapshot and the token key (SPEC 9).
	StoragePath string
	// SnapshotInterval is how often the hot state is snapshotted; 1m when 0.
	SnapshotInterval time.Duration
	// TelemetryPath serves the metrics; /metrics when empty.
	TelemetryPath string
	// MaxScrapes caps the scrapes of TelemetryPath in flight, more are
	// answered 503; DefaultMaxScrapes when 0.
	MaxScrapes int
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
	opts     Options
	logger   *slog.Logger
	cfg      atomic.Pointer[config.Config]
	store    *heartbeat.Store
	signer   *auth.Signer
	journal  *storage.Journal
	control  *killswitch.Control
	receiver *heartbeat.Receiver
	admin    atomic.Pointer[killswitch.Settings]
	registry *prometheus.Registry
	handler  http.Handler
	ready    atomic.Bool

	// journalHealth is the journal's Healthy; tests replace it (export_test.go),
	// as a failed fsync cannot be provoked from outside package storage.
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

	key, err := storage.ReadOrCreateKey(filepath.Join(o.StoragePath, keyFile), auth.KeySize)
	if err != nil {
		return nil, err
	}
	a.signer, err = auth.NewSigner(key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(o.StoragePath, keyFile), err)
	}
	journalPath := filepath.Join(o.StoragePath, journalFile)
	journal, records, err := storage.OpenJournal(journalPath, o.Logger)
	if err != nil {
		return nil, err
	}
	a.journal, a.journalHealth = journal, journal
	a.registerJournalMetrics()
	a.control = killswitch.New(journal, o.Logger, a.registry)
	if err := a.control.Replay(records); err != nil {
		journal.Close()
		return nil, fmt.Errorf("replay %s: %w", journalPath, err)
	}
	a.store = heartbeat.NewStore(cfg.Heartbeat.MaxAgents, a.control.NewAgent)
	snapshotAt, err := a.restoreSnapshot()
	if err != nil {
		journal.Close()
		return nil, err
	}
	a.control.SyncStore(a.store)
	if err := a.control.Compact(snapshotAt); err != nil {
		journal.Close()
		return nil, err
	}

	a.receiver = heartbeat.NewReceiver(heartbeat.ReceiverOptions{
		Store: a.store, Signer: a.signer, KillSwitch: a.control, Registerer: a.registry,
		Logger: o.Logger, Now: o.Now,
	}, heartbeat.SettingsFromConfig(cfg))
	a.admin.Store(adminSettings(cfg))
	a.handler = a.routes()
	a.ready.Store(true)
	return a, nil
}

func adminSettings(cfg *config.Config) *killswitch.Settings {
	return &killswitch.Settings{
		Credentials:            auth.NewCredentials(cfg),
		Thresholds:             heartbeat.ThresholdsOf(cfg.Heartbeat),
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

// registerJournalMetrics exposes the kill-switch journal's counters, read
// at scrape time.
func (a *App) registerJournalMetrics() {
	stats := func(field func(storage.JournalStats) uint64) func() float64 {
		return func() float64 { return float64(field(a.journal.Stats())) }
	}
	a.registry.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sentinel_journal_records_total",
			Help: "Records made durable in the kill-switch journal.",
		}, stats(func(s storage.JournalStats) uint64 { return s.Records })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sentinel_journal_fsyncs_total",
			Help: "fsyncs of the kill-switch journal; records per fsync is the group-commit factor.",
		}, stats(func(s storage.JournalStats) uint64 { return s.Syncs })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sentinel_journal_async_dropped_total",
			Help: "Registrations and command acknowledgements not journaled because the queue was full; they only matter after a crash.",
		}, stats(func(s storage.JournalStats) uint64 { return s.AsyncDropped })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sentinel_journal_size_bytes",
			Help: "Size of the kill-switch journal; it is compacted past 16 MiB.",
		}, func() float64 { return float64(a.journal.Size()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sentinel_journal_healthy",
			Help: "1 while the kill-switch journal accepts writes; 0 after a write failure, until sentinel restarts.",
		}, func() float64 {
			if a.journalFailure() != nil {
				return 0
			}
			return 1
		}),
	)
}

// journalFailure is why the kill-switch journal refuses writes, nil while it
// accepts them. A failed fsync makes the journal refuse every write (every
// kill-switch action then answers 503) until it is reopened, which
// re-verifies the file: only a restart does that. A closed journal is not a
// failure: it is closed only on the way out, and /-/ready already says so.
func (a *App) journalFailure() error {
	if err := a.journalHealth.Healthy(); err != nil && !errors.Is(err, storage.ErrJournalClosed) {
		return err
	}
	return nil
}

// restoreSnapshot loads the hot state; a missing snapshot is a first start.
func (a *App) restoreSnapshot() (time.Time, error) {
	path := filepath.Join(a.opts.StoragePath, snapshotFile)
	var takenAt time.Time
	var n int
	err := storage.ReadSnapshot(path, snapshotKind, func(r io.Reader) error {
		var err error
		takenAt, n, err = a.store.DecodeSnapshot(r)
		return err
	})
	switch {
	case errors.Is(err, fs.ErrNotExist):
		a.logger.Info("no snapshot of agents yet, starting with an empty fleet", "file", path)
		return time.Time{}, nil
	case err != nil:
		return time.Time{}, fmt.Errorf("restore agents from %s: %w (move the file away to start with an empty fleet; revocations are kept in %s)", path, err, journalFile)
	}
	a.logger.Info("agents restored from snapshot", "file", path, "agents", n, "taken_at", takenAt)
	return takenAt, nil
}

// Snapshot writes the hot state to disk now. Heartbeats go on meanwhile:
// the store is copied one shard at a time.
func (a *App) Snapshot() error {
	a.snapshotMu.Lock()
	defer a.snapshotMu.Unlock()
	start := time.Now()
	takenAt := a.opts.Now().UTC()
	path := filepath.Join(a.opts.StoragePath, snapshotFile)
	var n int
	err := storage.WriteSnapshot(path, snapshotKind, func(w io.Writer) error {
		var err error
		n, err = a.store.EncodeSnapshot(w, takenAt)
		return err
	})
	if err != nil {
		a.snapshotFailures.Inc()
		a.logger.Error("snapshot of agents failed", "file", path, "err", err)
		return fmt.Errorf("snapshot agents to %s: %w", path, err)
	}
	a.snapshotSuccess.Set(float64(time.Now().Unix()))
	a.snapshotDuration.Set(time.Since(start).Seconds())
	a.logger.Debug("snapshot of agents written", "file", path, "agents", n, "duration", time.Since(start))
	if a.control.JournalSize() > journalCompactBytes {
		if err := a.control.Compact(takenAt); err != nil {
			a.logger.Error("compacting the kill-switch journal failed", "err", err)
		}
	}
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
	a.cfg.Store(cfg)
	a.store.SetLimit(cfg.Heartbeat.MaxAgents)
	a.receiver.SetSettings(heartbeat.SettingsFromConfig(cfg))
	a.admin.Store(adminSettings(cfg))
	a.reloadSuccess.Set(1)
	a.reloadTime.SetToCurrentTime()
	a.logger.Info("configuration reloaded", "file", a.opts.ConfigFile, "tenants", len(cfg.Tenants))
	return nil
}

// Config returns the running configuration.
func (a *App) Config() *config.Config { return a.cfg.Load() }

// Store returns the hot agent store.
func (a *App) Store() *heartbeat.Store { return a.store }

// Handler serves every sentinel endpoint.
func (a *App) Handler() http.Handler { return a.handler }

func (a *App) routes() http.Handler {
	mux := http.NewServeMux()
	a.receiver.Register(mux)
	(&killswitch.API{
		Control: a.control, Store: a.store, Logger: a.logger, Now: a.opts.Now,
		Signer: a.signer, Settings: a.admin.Load,
	}).Register(mux)

	metrics := collector.New(a.store, collector.Options{
		Thresholds: func() fleet.Thresholds {
			return heartbeat.ThresholdsOf(a.cfg.Load().Heartbeat)
		},
		Tenants:    func() []string { return a.cfg.Load().TenantIDs() },
		Now:        a.opts.Now,
		MaxScrapes: a.opts.MaxScrapes,
		Disabled:   a.opts.DisabledCollectors,
	})
	a.registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "sentinel_metrics_scrapes_rejected_total",
		Help: "Scrapes of the metrics answered 503 because the maximum number of scrapes was in flight.",
	}, func() float64 { return float64(metrics.RejectedScrapes()) }))
	mux.Handle(a.opts.TelemetryPath, metrics.Handler(a.registry, a.logger))
	mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, r *http.Request) {
		if !jsonapi.AllowMethods(w, r, http.MethodGet, http.MethodHead) {
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		// A failed journal heals only by reopening it: failing the liveness
		// probe makes the orchestrator restart sentinel, which reopens and
		// re-verifies the journal.
		if err := a.journalFailure(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "Sentinel is unhealthy: the kill-switch journal refuses writes: %v\n", err)
			return
		}
		fmt.Fprintln(w, "Sentinel is Healthy.")
	})
	mux.HandleFunc("/-/ready", func(w http.ResponseWriter, r *http.Request) {
		if !jsonapi.AllowMethods(w, r, http.MethodGet, http.MethodHead) {
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
	mux.HandleFunc("/-/reload", func(w http.ResponseWriter, r *http.Request) {
		if !jsonapi.AllowMethods(w, r, http.MethodPost, http.MethodPut) {
			return
		}
		if err := a.Reload(); err != nil {
			jsonapi.Errorf(w, http.StatusInternalServerError, "reload failed, the running configuration is kept: %v", err)
			return
		}
		jsonapi.Write(w, http.StatusOK, map[string]string{"status": "reloaded"})
	})
	landing, err := web.NewLandingPage(web.LandingConfig{
		Name:        "Sentinel",
		Description: "Prometheus-native dead man's switch for AI agents",
		Version:     version.Info(),
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
		if r.URL.Path == "/" && landing != nil {
			landing.ServeHTTP(w, r)
			return
		}
		jsonapi.Errorf(w, http.StatusNotFound, "no such endpoint: %s", r.URL.Path)
	})
	return mux
}

// Run serves on the listeners of flags until ctx is done, snapshotting
// periodically and reloading on every receive from reload; then it shuts
// down gracefully within shutdownTimeout and writes a final snapshot.
func (a *App) Run(ctx context.Context, flags *web.FlagConfig, listener net.Listener, reload <-chan struct{}, shutdownTimeout time.Duration) error {
	server := &http.Server{
		Handler:           a.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      2 * time.Minute, // a scrape of a large fleet takes a while to write
		IdleTimeout:       2 * time.Minute,
	}
	serveErr := make(chan error, 1)
	go func() {
		var err error
		if listener != nil {
			err = web.Serve(listener, server, flags, a.logger)
		} else {
			err = web.ListenAndServe(server, flags, a.logger)
		}
		serveErr <- err
	}()
	ticker := time.NewTicker(a.opts.SnapshotInterval)
	defer ticker.Stop()
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
		case <-ticker.C:
			_ = a.Snapshot() // logged and exposed as a metric
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

// Close writes a final snapshot and closes the journal. It is idempotent.
func (a *App) Close() error {
	a.closeOnce.Do(func() {
		a.ready.Store(false)
		snapErr := a.Snapshot()
		journalErr := a.journal.Close()
		a.closeErr = errors.Join(snapErr, journalErr)
	})
	return a.closeErr
}
