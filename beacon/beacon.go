package beacon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"sync"
	"time"
)

// DefaultInterval is the heartbeat interval asked for when none is configured.
const DefaultInterval = 60 * time.Second

// minWait keeps a misbehaving answer (an interval of 0, a next_heartbeat_at in
// the past) from turning the loop into a busy one.
const minWait = 10 * time.Millisecond

// Config configures a Beacon.
type Config struct {
	// Endpoint is sentinel's base URL. Required.
	Endpoint string
	// AgentID is the installation id; it must satisfy ValidID. Use
	// Platform.DefaultID to derive one.
	AgentID string
	// Token is the configured credential: a tenant API key (which registers
	// the agent and earns a runtime token) or an srt_ runtime token.
	Token string
	// TokenFile, when set, is where runtime tokens are kept (mode 0600,
	// written atomically). A token found there at start is used instead of
	// Token.
	TokenFile string
	// Interval is the heartbeat interval asked for; sentinel may clamp it and
	// its answer wins. Default DefaultInterval.
	Interval time.Duration
	// SilentAfter and ZombieAfter are the agent's own thresholds, in missed
	// heartbeats: sentinel reports it SILENT after SilentAfter missed beats
	// and ZOMBIE after ZombieAfter. 0 keeps its tenant's. Sentinel refuses
	// (422) values outside its configured bounds, or a ZombieAfter not
	// above the SilentAfter in force; New checks what it can locally.
	SilentAfter int
	ZombieAfter int
	// Protocol defaults to ProtocolBeacon.
	Protocol Protocol
	// Version is the agent's version, sent with each heartbeat.
	Version string
	// Platform is sent with each heartbeat; nil means DetectPlatform().
	Platform *Platform
	// Report, when set, is called before each heartbeat for the agent's
	// status and metrics. It must be quick and safe to call from another
	// goroutine.
	Report func() Report
	// OnCommand, when set, is called with CommandPause and CommandResume as
	// sentinel answers them (consecutive repeats are dropped). It runs on the
	// heartbeat goroutine: it must not block. CommandTerminate is not passed
	// here: Run returns a *StopError instead.
	OnCommand func(Command)
	// HTTPClient defaults to a client without a global timeout; each attempt
	// has its own deadline.
	HTTPClient *http.Client
	// UserAgent is sent with each request when set.
	UserAgent string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// ErrRevoked and ErrTerminated match the *StopError that Run returns, with
// errors.Is.
var (
	ErrRevoked    = errors.New("revoked by sentinel")
	ErrTerminated = errors.New("terminate command from sentinel")
)

// StopError is returned by Run when sentinel tells the agent to stop: the kill
// switch revoked it, or a "terminate" command arrived.
type StopError struct {
	// Revoked is true for a revocation, false for a terminate command.
	Revoked bool
	// Reason is the revocation's reason.
	Reason string
	// ShutdownTimeout is how long the agent has to shut down before it is
	// killed. It is meaningful only when HasShutdownTimeout is true: 0 then
	// means no grace at all.
	ShutdownTimeout time.Duration
	// HasShutdownTimeout is false when sentinel named no timeout (the agent
	// picks its own default).
	HasShutdownTimeout bool
}

func (e *StopError) Error() string {
	if !e.Revoked {
		return ErrTerminated.Error()
	}
	if e.Reason == "" {
		return ErrRevoked.Error()
	}
	return fmt.Sprintf("%s: %s", ErrRevoked, e.Reason)
}

// Is makes errors.Is(err, ErrRevoked) and errors.Is(err, ErrTerminated) work.
func (e *StopError) Is(target error) bool {
	return (target == ErrRevoked && e.Revoked) || (target == ErrTerminated && !e.Revoked)
}

// Beacon keeps one agent's lease with sentinel alive: it registers the agent,
// sends heartbeats at the interval sentinel answers, keeps the runtime token,
// passes commands on, and survives sentinel being away. Create it with New,
// run it with Run, and end with Shutdown.
type Beacon struct {
	cfg      Config
	client   Client
	platform Platform
	logger   *slog.Logger
	start    time.Time

	mu           sync.Mutex
	runtimeToken string  // srt_ token in use, "" for cfg.Token
	accepted     bool    // a heartbeat has been accepted
	interval     float64 // seconds, as last answered; 0 before
	lastCommand  Command
}

// New validates cfg and returns a Beacon. It reads TokenFile, if any; a file
// that cannot be read is logged and ignored.
func New(cfg Config) (*Beacon, error) {
	if cfg.Endpoint == "" {
		return nil, errors.New("no sentinel endpoint")
	}
	if !ValidID(cfg.AgentID) {
		return nil, fmt.Errorf("agent id %q is invalid: it must match ^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$", cfg.AgentID)
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	switch {
	case cfg.SilentAfter < 0 || cfg.ZombieAfter < 0:
		return nil, errors.New("silent_after and zombie_after must be positive (0 keeps the tenant's)")
	case cfg.SilentAfter > 0 && cfg.ZombieAfter > 0 && cfg.ZombieAfter <= cfg.SilentAfter:
		return nil, fmt.Errorf("zombie_after (%d) must be greater than silent_after (%d)", cfg.ZombieAfter, cfg.SilentAfter)
	}
	if cfg.Protocol == "" {
		cfg.Protocol = ProtocolBeacon
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{}
	}
	b := &Beacon{
		cfg:    cfg,
		client: Client{Endpoint: cfg.Endpoint, AgentID: cfg.AgentID, Protocol: cfg.Protocol, HTTPClient: hc, UserAgent: cfg.UserAgent},
		logger: cfg.Logger.With("agent_id", cfg.AgentID),
		start:  time.Now(),
	}
	if _, err := b.client.URL(); err != nil {
		return nil, err
	}
	if cfg.Platform != nil {
		b.platform = *cfg.Platform
	} else {
		b.platform = DetectPlatform()
	}
	if cfg.TokenFile != "" {
		tok, err := ReadTokenFile(cfg.TokenFile)
		if err != nil {
			b.logger.Warn("Ignoring the token file", "path", cfg.TokenFile, "err", err)
		}
		b.runtimeToken = tok
		if tok != "" {
			b.logger.Info("Using the runtime token from the token file", "path", cfg.TokenFile)
		}
	}
	if cfg.Token == "" && b.runtimeToken == "" {
		return nil, errors.New("no credential: need a tenant API key or a runtime token")
	}
	return b, nil
}

// Platform returns the platform sent with each heartbeat.
func (b *Beacon) Platform() Platform { return b.platform }

// Run sends heartbeats until ctx is done (it then returns nil) or sentinel
// tells the agent to stop (it then returns a *StopError). Failures never end
// it: when sentinel is unreachable or answers 5xx/429 it retries with
// exponential backoff and jitter, capped at the interval, logging one warning
// per failure streak and an info when sentinel is back; other refusals (401,
// 403, …) are logged as errors and retried at the interval. Run must not be
// called twice at once.
func (b *Beacon) Run(ctx context.Context) error {
	var (
		failures     int
		failingSince time.Time
		failureKind  string
	)
	for {
		began := time.Now()
		actx, cancel := b.attemptContext(ctx)
		resp, err := b.send(actx, b.heartbeat(""))
		cancel()
		if ctx.Err() != nil {
			if err == nil {
				b.storeTokens(resp)
			}
			return nil
		}
		var wait time.Duration
		if err != nil {
			failures++
			if failures == 1 {
				failingSince = began
			}
			kind := errorKind(err)
			if Retryable(err) {
				wait = backoff(failures, b.currentInterval())
				if kind != failureKind {
					b.logger.Warn("Sentinel unreachable or failing; the agent keeps running and beacon keeps retrying with backoff (logged once per failure streak)",
						"err", err, "retry_in", wait.Round(time.Millisecond))
				}
			} else {
				wait = b.currentInterval()
				if kind != failureKind {
					b.logger.Error("Sentinel refused the heartbeat; the agent keeps running, check the endpoint, the credential and the agent id (logged once per failure streak)",
						"err", err, "retry_in", wait.Round(time.Millisecond))
				}
			}
			failureKind = kind
		} else {
			if failures > 0 {
				b.logger.Info("Sentinel reachable again", "failed_attempts", failures, "failing_for", time.Since(failingSince).Round(time.Millisecond))
			}
			failures, failureKind = 0, ""
			if stop := b.handle(resp); stop != nil {
				return stop
			}
			wait = b.nextWait(resp, began)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// Shutdown sends the final heartbeat, status "shutdown" with the agent's exit
// code: sentinel marks the agent STOPPED and raises no liveness alert. Call it
// once Run has returned. A failure worth retrying (unreachable, 5xx, 408,
// 429) is retried with backoff until ctx ends, or for
// DefaultFinalHeartbeatTimeout when ctx has no deadline: without the final
// heartbeat the agent would page as SILENT, then ZOMBIE.
func (b *Beacon) Shutdown(ctx context.Context, exitCode int) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultFinalHeartbeatTimeout)
		defer cancel()
	}
	hb := b.heartbeat(StatusShutdown)
	hb.ExitCode = &exitCode
	for n := 1; ; n++ {
		resp, err := b.send(ctx, hb)
		if err == nil {
			b.storeTokens(resp)
			b.logger.Info("Sent the final shutdown heartbeat", "exit_code", exitCode, "state", resp.State, "attempts", n)
			return nil
		}
		wait := backoff(n, finalRetryCap)
		if dl, _ := ctx.Deadline(); !Retryable(err) || time.Until(dl) < wait {
			return fmt.Errorf("final heartbeat (%d attempts): %w", n, err)
		}
		b.logger.Debug("Final shutdown heartbeat failed; retrying", "err", err, "retry_in", wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("final heartbeat (%d attempts): %w", n, err)
		case <-t.C:
		}
	}
}

// finalRetryCap caps the backoff of the final heartbeat, which has seconds,
// not an interval, to get through: the first retry comes after 125–250 ms.
const finalRetryCap = time.Second

// heartbeat builds the body of the next heartbeat; status overrides the
// reported one when set.
func (b *Beacon) heartbeat(status Status) Heartbeat {
	var r Report
	if b.cfg.Report != nil {
		r = b.cfg.Report()
	}
	b.mu.Lock()
	accepted := b.accepted
	b.mu.Unlock()
	if status == "" {
		status = r.Status
	}
	if status == "" {
		status = StatusHealthy
		if !accepted {
			status = StatusStarting
		}
	}
	version := r.Version
	if version == "" {
		version = b.cfg.Version
	}
	p := b.platform
	return Heartbeat{
		Status:                   status,
		UptimeSeconds:            int64(time.Since(b.start).Seconds()),
		HeartbeatIntervalSeconds: b.cfg.Interval.Seconds(),
		SilentAfter:              b.cfg.SilentAfter,
		ZombieAfter:              b.cfg.ZombieAfter,
		Version:                  version,
		Platform:                 &p,
		Metrics:                  r.Metrics,
	}
}

// send posts hb with the current credential. When a runtime token is refused
// (401/403) and a different configured token exists, it drops the runtime
// token and tries once more with the configured one: the token file may hold
// a token of another agent or an expired one.
func (b *Beacon) send(ctx context.Context, hb Heartbeat) (*Response, error) {
	actx, cancel := context.WithTimeout(ctx, attemptTimeout(b.currentInterval()))
	defer cancel()
	b.mu.Lock()
	tok := b.runtimeToken
	b.mu.Unlock()
	usingRuntime := tok != ""
	if !usingRuntime {
		tok = b.cfg.Token
	}
	resp, err := b.client.Send(actx, tok, hb)
	var se *StatusError
	if usingRuntime && b.cfg.Token != "" && b.cfg.Token != tok && errors.As(err, &se) &&
		(se.Code == http.StatusUnauthorized || se.Code == http.StatusForbidden) {
		b.logger.Warn("Sentinel refused the runtime token; falling back to the configured token", "err", err)
		b.forgetRuntimeToken(tok)
		resp, err = b.client.Send(actx, b.cfg.Token, hb)
	}
	if err == nil {
		b.mu.Lock()
		b.accepted = true
		b.mu.Unlock()
	}
	return resp, err
}

// forgetRuntimeToken drops a runtime token sentinel refused, from memory and
// from the token file while the file still holds it: the next start would
// present it again, and without a configured token be locked out by it.
func (b *Beacon) forgetRuntimeToken(tok string) {
	b.mu.Lock()
	if b.runtimeToken == tok {
		b.runtimeToken = ""
	}
	b.mu.Unlock()
	path := b.cfg.TokenFile
	if path == "" {
		return
	}
	if cur, err := ReadTokenFile(path); err != nil || cur != tok {
		return // unreadable, or already replaced
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		b.logger.Warn("Cannot remove the refused runtime token from the token file", "path", path, "err", err)
		return
	}
	b.logger.Info("Removed the refused runtime token from the token file", "path", path)
}

// inflightGrace is how long a heartbeat already under way may still take
// once Run's context is done.
const inflightGrace = 2 * time.Second

// attemptContext is the context of one heartbeat of Run. A heartbeat under
// way when ctx ends is not cut off at once: a cancelled request may still
// reach sentinel, after the final shutdown heartbeat sent next, and start the
// agent again. It gets inflightGrace to finish.
func (b *Beacon) attemptContext(ctx context.Context) (context.Context, context.CancelFunc) {
	actx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(inflightGrace, cancel) })
	return actx, func() {
		stop()
		cancel()
	}
}

// handle applies an accepted answer: tokens, interval, commands. It returns a
// *StopError when the agent must stop.
func (b *Beacon) handle(resp *Response) *StopError {
	if resp.Revoked {
		stop := &StopError{Revoked: true, Reason: resp.Reason}
		if ms := resp.ShutdownTimeoutMs; ms != nil {
			stop.ShutdownTimeout = time.Duration(max(*ms, 0)) * time.Millisecond
			stop.HasShutdownTimeout = true
			b.logger.Error("Agent revoked by the kill switch", "reason", resp.Reason, "shutdown_timeout", stop.ShutdownTimeout)
		} else {
			b.logger.Error("Agent revoked by the kill switch", "reason", resp.Reason)
		}
		return stop
	}
	b.storeTokens(resp)
	if resp.Registered {
		b.logger.Info("Registered with sentinel", "state", resp.State, "lease_duration_seconds", resp.LeaseDurationSeconds)
	}
	if resp.State == "RECOVERED" {
		b.logger.Info("Sentinel reports the agent recovered")
	}
	b.mu.Lock()
	b.interval = resp.HeartbeatIntervalSeconds
	last := b.lastCommand
	b.lastCommand = resp.Command
	b.mu.Unlock()
	switch resp.Command {
	case "":
	case CommandTerminate:
		b.logger.Warn("Terminate command from sentinel")
		return &StopError{}
	case CommandPause, CommandResume:
		// A command is delivered at least once: a repeat in the next answer
		// is the same command, not a new one.
		if resp.Command != last {
			b.logger.Info("Command from sentinel", "command", resp.Command)
			if b.cfg.OnCommand != nil {
				b.cfg.OnCommand(resp.Command)
			}
		}
	default:
		if resp.Command != last {
			b.logger.Warn("Ignoring an unknown command from sentinel", "command", resp.Command)
		}
	}
	return nil
}

// storeTokens keeps a runtime token from a registration or a refresh.
func (b *Beacon) storeTokens(resp *Response) {
	t := resp.RuntimeToken
	if resp.RefreshedToken != nil && resp.RefreshedToken.RuntimeToken != "" {
		t = resp.RefreshedToken
	}
	if t == nil || t.RuntimeToken == "" {
		return
	}
	b.mu.Lock()
	same := b.runtimeToken == t.RuntimeToken
	b.runtimeToken = t.RuntimeToken
	b.mu.Unlock()
	if same {
		return
	}
	attrs := []any{"token_version", t.TokenVersion, "expires_at", t.ExpiresAt}
	if b.cfg.TokenFile == "" {
		b.logger.Info("Received a runtime token; keeping it in memory only (no --token-file)", attrs...)
		return
	}
	if err := WriteTokenFile(b.cfg.TokenFile, t.RuntimeToken); err != nil {
		b.logger.Warn("Cannot store the runtime token; using it from memory", append(attrs, "path", b.cfg.TokenFile, "err", err)...)
		return
	}
	b.logger.Info("Stored the runtime token", append(attrs, "path", b.cfg.TokenFile)...)
}

// currentInterval is the interval sentinel last answered, else the configured one.
func (b *Beacon) currentInterval() time.Duration {
	b.mu.Lock()
	s := b.interval
	b.mu.Unlock()
	if s > 0 {
		return time.Duration(s * float64(time.Second))
	}
	return b.cfg.Interval
}

// nextWait is how long to wait after the heartbeat sent at began: the answered
// interval, else until next_heartbeat_at (ABS: nextDeadline), else the
// configured interval.
func (b *Beacon) nextWait(resp *Response, began time.Time) time.Duration {
	var wait time.Duration
	switch {
	case resp.HeartbeatIntervalSeconds > 0:
		wait = time.Duration(resp.HeartbeatIntervalSeconds*float64(time.Second)) - time.Since(began)
	case !resp.NextHeartbeatAt.IsZero() && time.Until(resp.NextHeartbeatAt) > 0:
		wait = time.Until(resp.NextHeartbeatAt)
	default:
		wait = b.cfg.Interval - time.Since(began)
	}
	return max(wait, minWait)
}

// attemptTimeout bounds one request: the interval, within [1s, 10s].
func attemptTimeout(interval time.Duration) time.Duration {
	return min(max(interval, time.Second), 10*time.Second)
}

// backoff returns the wait before retry number n (1-based): exponential from
// min(1s, interval/4), capped at the interval, with equal jitter (half fixed,
// half random) so that a fleet does not retry in lockstep.
func backoff(n int, interval time.Duration) time.Duration {
	base := min(time.Second, interval/4)
	d := interval
	if n-1 < 32 {
		d = min(base<<(n-1), interval)
	}
	if d <= 0 {
		return minWait
	}
	half := d / 2
	return max(half+rand.N(d-half+1), minWait)
}

// errorKind groups errors for the once-per-streak logging: every retryable
// failure is one kind (sentinel away, whether refused connections or 503s
// from its load balancer); each refusal status is its own.
func errorKind(err error) string {
	var se *StatusError
	if !Retryable(err) && errors.As(err, &se) {
		return fmt.Sprintf("http %d", se.Code)
	}
	return "unreachable"
}
