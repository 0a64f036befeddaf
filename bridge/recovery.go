package bridge

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/agentsentinel/sentinel/delivery"
	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/killswitch"
	"github.com/agentsentinel/sentinel/ledger"
)

// recoveryQueue bounds the recoveries waiting to be committed. A recovery
// that does not fit is not lost: the agent's announced state stays SILENT
// or ZOMBIE, and its next heartbeat tries again.
const recoveryQueue = 1 << 14

// Recoveries announces the end of an outage at the heartbeat that ends it:
// ACTIVE after an announced SILENT, RECOVERED after an announced ZOMBIE,
// each with its outage. The heartbeat never waits: Beat only reads the kill
// switch's cache and queues; a worker commits the announcement as a
// compare-and-set of the announced state, so that a recovery is announced
// once however many beats (on however many replicas) report it.
type Recoveries struct {
	control *killswitch.Control
	tenants Tenants
	logger  *slog.Logger
	// wake, when set, is called after a commit (it tells the outbox).
	wake func()

	queue chan recovery
	mu    sync.Mutex
	// pending holds agents queued and not yet committed, so that a fast
	// beating agent queues one recovery, not one per beat.
	pending map[fleet.Key]struct{}

	cancel context.CancelFunc
	done   sync.WaitGroup
}

type recovery struct {
	key          fleet.Key
	from         fleet.State
	at, previous time.Time
	interval     time.Duration
}

// NewRecoveries starts the announcer; Close stops it. wake, when not nil,
// is called after each commit.
func NewRecoveries(control *killswitch.Control, tenants Tenants, logger *slog.Logger, wake func()) *Recoveries {
	ctx, cancel := context.WithCancel(context.Background())
	r := &Recoveries{
		control: control, tenants: tenants, logger: logger, wake: wake,
		queue: make(chan recovery, recoveryQueue), pending: make(map[fleet.Key]struct{}),
		cancel: cancel,
	}
	r.done.Add(1)
	go func() { defer r.done.Done(); r.run(ctx) }()
	return r
}

// Close stops the announcer after committing what is queued.
func (r *Recoveries) Close() {
	r.cancel()
	r.done.Wait()
}

// BeatAccepted implements heartbeat.BeatObserver. It is on the heartbeat
// path: one read of the cache, and a queue send that never blocks.
func (r *Recoveries) BeatAccepted(k fleet.Key, at, previous time.Time, interval time.Duration) {
	st, _ := r.control.Announced(k)
	if st != fleet.StateSilent && st != fleet.StateZombie {
		return
	}
	r.mu.Lock()
	if _, queued := r.pending[k]; queued {
		r.mu.Unlock()
		return
	}
	r.pending[k] = struct{}{}
	r.mu.Unlock()
	select {
	case r.queue <- recovery{key: k, from: st, at: at, previous: previous, interval: interval}:
	default:
		r.mu.Lock()
		delete(r.pending, k)
		r.mu.Unlock()
	}
}

func (r *Recoveries) run(ctx context.Context) {
	for {
		select {
		case rec := <-r.queue:
			batch := []recovery{rec}
		more:
			for len(batch) < 1024 {
				select {
				case rec := <-r.queue:
					batch = append(batch, rec)
				default:
					break more
				}
			}
			r.commit(batch)
		case <-ctx.Done():
			for {
				select {
				case rec := <-r.queue:
					r.commit([]recovery{rec})
				default:
					return
				}
			}
		}
	}
}

func (r *Recoveries) commit(batch []recovery) {
	defer func() {
		r.mu.Lock()
		for _, rec := range batch {
			delete(r.pending, rec.key)
		}
		r.mu.Unlock()
	}()
	ops := make([]ledger.Op, 0, len(batch))
	for _, rec := range batch {
		to := fleet.StateActive
		if rec.from == fleet.StateZombie {
			to = fleet.StateRecovered
		}
		op := ledger.Announce{Key: rec.key, From: []fleet.State{rec.from}, To: to}
		if r.tenants.HasWebhook(rec.key.Tenant) {
			outage := time.Duration(0)
			if !rec.previous.IsZero() {
				outage = rec.at.Sub(rec.previous)
			}
			ev, err := StateChangeEvent(delivery.StateChangeInput{
				TenantID: rec.key.Tenant, AgentID: rec.key.AgentID, From: rec.from, To: to,
				MissedBeats: fleet.MissedBeats(rec.at, rec.previous, rec.interval),
				LastSeenAt:  rec.at, LastHeartbeatAt: rec.at, Outage: outage, At: rec.at,
			})
			if err != nil {
				r.logger.Error("cannot build recovery event", "err", err)
				continue
			}
			op.Event = ev
		}
		ops = append(ops, op)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := r.control.Commit(ctx, ops...)
	if err != nil {
		// The announced state is unchanged: the agent's next heartbeat
		// queues the recovery again.
		r.logger.Warn("cannot commit recoveries; the next heartbeats retry", "agents", len(ops), "err", err)
		return
	}
	if r.wake != nil {
		r.wake()
	}
	for i, op := range ops {
		if res.Applied(i) {
			a := op.(ledger.Announce)
			r.logger.Info("agent recovery announced", "tenant", a.Key.Tenant, "agent_id", a.Key.AgentID, "state", a.To.String())
		}
	}
}
