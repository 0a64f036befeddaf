package beacon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Exit codes of a supervised run, besides the child's own code (or 128+signal
// when a signal killed it).
const (
	// ExitRevoked: the kill switch revoked the agent and the child was stopped.
	ExitRevoked = 3
	// ExitTerminated: a "terminate" command stopped the child.
	ExitTerminated = 4
	// ExitCannotExecute: the command exists but could not be started.
	ExitCannotExecute = 126
	// ExitNotFound: the command was not found.
	ExitNotFound = 127
)

// Defaults of Supervisor.
const (
	DefaultShutdownTimeout       = 10 * time.Second
	DefaultFinalHeartbeatTimeout = 5 * time.Second
)

// EnvAgentID is the environment variable that names the agent id, to beacon
// and, set to the id in use, to the child.
const EnvAgentID = "SENTINEL_AGENT_ID"

// withheldEnv are beacon's own settings that never reach the child: with the
// tenant API key a rogue agent could heartbeat, stop or impersonate every
// agent of its tenant.
var withheldEnv = []string{"SENTINEL_URL", "SENTINEL_TOKEN", "SENTINEL_TOKEN_FILE"}

// groupPollInterval is how often the supervisor looks whether processes the
// child left behind in its group have exited: no event tells it.
const groupPollInterval = 50 * time.Millisecond

// Supervisor runs a child process with a Beacon for it; it is the beacon
// command's logic. The child runs in its own process group, so that signals
// reach everything it started:
//
//   - revoked by the kill switch: SIGTERM to the group, SIGKILL after the
//     answer's shutdown_timeout_ms; Run returns ExitRevoked;
//   - "terminate": the same with ShutdownTimeout; a final shutdown heartbeat;
//     Run returns ExitTerminated;
//   - "pause": SIGSTOP to the group; "resume": SIGCONT;
//   - signals from Signals are forwarded to the group;
//   - the child exits: whatever it left running in its group gets SIGTERM,
//     and SIGKILL after ShutdownTimeout; then a final shutdown heartbeat
//     with its exit code; Run returns that code (128+signal when a signal
//     killed it);
//   - the supervising process dies (even by SIGKILL): on Linux the kernel
//     sends the child SIGKILL (the parent-death signal), so that no agent
//     runs on out of the kill switch's reach.
//
// The child's environment is the Cmd's (or the process's) without
// SENTINEL_URL, SENTINEL_TOKEN and SENTINEL_TOKEN_FILE, with
// SENTINEL_AGENT_ID set to the agent id in use and BEACON_METRICS_FILE to
// ReportFile.
//
// Sentinel being unreachable never stops the child.
type Supervisor struct {
	// Cmd is the child, not yet started. Run sets SysProcAttr.Setpgid and,
	// on Linux, SysProcAttr.Pdeathsig (SIGKILL, unless set), and filters Env.
	Cmd *exec.Cmd
	// Beacon configures the heartbeats; nil runs the child with no beacon at
	// all. Its OnCommand is called after the supervisor applied a command.
	Beacon *Config
	// ReportFile, when set, is exported to the child as BEACON_METRICS_FILE
	// and read before each heartbeat (see ReadReportFile), unless
	// Beacon.Report is set.
	ReportFile string
	// Signals are forwarded to the child's process group.
	Signals <-chan os.Signal
	// ShutdownTimeout is the grace period between SIGTERM and SIGKILL for a
	// terminate command, a cancelled context, a revocation that names no
	// timeout, and what the child left running when it exited. Default
	// DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// FinalHeartbeatTimeout bounds the final shutdown heartbeat. Default
	// DefaultFinalHeartbeatTimeout.
	FinalHeartbeatTimeout time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger

	// mu serialises signals to the group with the paused state, so that a
	// pause and a forwarded SIGTERM cannot interleave and leave a stopping
	// agent stopped.
	mu     sync.Mutex
	pgid   int
	paused bool
	// stopping is set once the group was asked to stop (a forwarded
	// SIGTERM, a revocation, terminate): a pause then would freeze an
	// agent that is shutting down, with nothing left to continue it.
	stopping bool
	// hookPaused, when set, runs after SIGSTOP reached the group, before
	// the pause is recorded (tests).
	hookPaused func()
}

// Run starts the child and supervises it until it exits. It returns the exit
// code beacon should exit with. A cancelled ctx stops the child like a
// terminate command (without the exit code ExitTerminated). The error is
// non-nil only when the child could not be started or the beacon could not
// be configured; the code is meaningful then too.
func (s *Supervisor) Run(ctx context.Context) (int, error) {
	logger := s.Logger
	if logger == nil {
		logger = slog.Default()
	}
	shutdownTimeout := s.ShutdownTimeout
	if shutdownTimeout <= 0 {
		shutdownTimeout = DefaultShutdownTimeout
	}

	var b *Beacon
	if s.Beacon != nil {
		cfg := *s.Beacon
		if cfg.Logger == nil {
			cfg.Logger = logger
		}
		if cfg.Report == nil && s.ReportFile != "" {
			cfg.Report = (&FileReporter{Path: s.ReportFile, Logger: logger}).Report
		}
		userOnCommand := cfg.OnCommand
		cfg.OnCommand = func(c Command) {
			s.apply(logger, c)
			if userOnCommand != nil {
				userOnCommand(c)
			}
		}
		var err error
		if b, err = New(cfg); err != nil {
			return 1, fmt.Errorf("configure beacon: %w", err)
		}
	}

	cmd := s.Cmd
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	setParentDeathSignal(cmd.SysProcAttr)
	if cmd.WaitDelay == 0 {
		// With outputs that are not files, Wait also waits for the pipes to
		// close, which a leftover process of the group keeps open: without
		// a delay, the child's exit would not be seen until the leftovers
		// end, and they would never be stopped.
		cmd.WaitDelay = time.Second
	}
	cmd.Env = s.childEnv(cmd.Env)

	started := make(chan error, 1)
	exited := make(chan int, 1)
	go func() {
		// The parent-death signal is sent when the thread that started the
		// child ends, not the process: the runtime ends a thread when a
		// goroutine locked to it returns. This goroutine keeps its thread,
		// and no other goroutine runs there, until the child is reaped.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		err := cmd.Wait()
		code := exitCode(cmd.ProcessState)
		if cmd.ProcessState == nil {
			logger.Error("Waiting for the agent failed", "err", err)
			code = 1
		}
		exited <- code
	}()
	if err := <-started; err != nil {
		code := ExitCannotExecute
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			code = ExitNotFound
		}
		return code, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	s.mu.Lock()
	s.pgid = cmd.Process.Pid
	s.mu.Unlock()
	logger.Info("Started the agent", "pid", cmd.Process.Pid, "command", cmd.Args)

	var stopped chan error
	cancelBeacon := func() {}
	if b != nil {
		stopped = make(chan error, 1)
		bctx, cancel := context.WithCancel(context.Background())
		cancelBeacon = cancel
		go func() { stopped <- b.Run(bctx) }()
	}
	defer cancelBeacon()

	final := func(code int) {
		if b == nil {
			return
		}
		cancelBeacon()
		if stopped != nil {
			<-stopped // Run returns promptly once cancelled
		}
		fctx, cancel := context.WithTimeout(context.Background(), s.finalTimeout())
		defer cancel()
		if err := b.Shutdown(fctx, code); err != nil {
			logger.Warn("Final shutdown heartbeat failed", "err", err)
		}
	}

	for {
		select {
		case code := <-exited:
			logger.Info("Agent exited", "exit_code", code)
			// Sentinel hears "stopped" only once nothing of the agent runs.
			s.stopLeftovers(logger, shutdownTimeout)
			final(code)
			return code, nil

		case sig := <-s.Signals:
			s.forward(logger, sig)

		case err := <-stopped:
			stopped = nil // Run is over; nothing more comes from it
			var stop *StopError
			if !errors.As(err, &stop) {
				continue
			}
			if stop.Revoked {
				// An explicit 0 is no grace: SIGTERM and SIGKILL at once.
				timeout := shutdownTimeout
				if stop.HasShutdownTimeout {
					timeout = stop.ShutdownTimeout
				}
				logger.Error("Revoked by the kill switch: stopping the agent", "reason", stop.Reason, "shutdown_timeout", timeout)
				code := s.terminate(logger, exited, timeout)
				logger.Error("Agent stopped after revocation", "agent_exit_code", code, "exit_code", ExitRevoked)
				// No final heartbeat: the kill switch already owns the
				// agent's state, and sentinel would answer "revoked" again.
				return ExitRevoked, nil
			}
			logger.Warn("Terminate command from sentinel: stopping the agent", "shutdown_timeout", shutdownTimeout)
			code := s.terminate(logger, exited, shutdownTimeout)
			logger.Warn("Agent stopped after a terminate command", "agent_exit_code", code, "exit_code", ExitTerminated)
			final(code)
			return ExitTerminated, nil

		case <-ctx.Done():
			logger.Info("Stopping the agent", "shutdown_timeout", shutdownTimeout)
			code := s.terminate(logger, exited, shutdownTimeout)
			final(code)
			return code, nil
		}
	}
}

func (s *Supervisor) finalTimeout() time.Duration {
	if s.FinalHeartbeatTimeout > 0 {
		return s.FinalHeartbeatTimeout
	}
	return DefaultFinalHeartbeatTimeout
}

// childEnv is env (nil: the process's) as the child gets it: without
// beacon's credentials, with the agent id and the report file.
func (s *Supervisor) childEnv(env []string) []string {
	if env == nil {
		env = os.Environ()
	}
	out := make([]string, 0, len(env)+2)
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if slices.Contains(withheldEnv, k) ||
			(k == EnvMetricsFile && s.ReportFile != "") || (k == EnvAgentID && s.Beacon != nil) {
			continue
		}
		out = append(out, kv)
	}
	if s.Beacon != nil {
		out = append(out, EnvAgentID+"="+s.Beacon.AgentID)
	}
	if s.ReportFile != "" {
		out = append(out, EnvMetricsFile+"="+s.ReportFile)
	}
	return out
}

// apply carries out pause and resume on the child's process group.
func (s *Supervisor) apply(logger *slog.Logger, c Command) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch c {
	case CommandPause:
		if s.stopping {
			logger.Info("Not pausing the agent: it is stopping")
			return
		}
		if err := s.signalLocked(syscall.SIGSTOP); err != nil {
			logger.Warn("Cannot pause the agent", "err", err)
			return
		}
		if s.hookPaused != nil {
			s.hookPaused()
		}
		s.paused = true
		logger.Info("Paused the agent (SIGSTOP)", "pgid", s.pgid)
	case CommandResume:
		if err := s.signalLocked(syscall.SIGCONT); err != nil {
			logger.Warn("Cannot resume the agent", "err", err)
			return
		}
		s.paused = false
		logger.Info("Resumed the agent (SIGCONT)", "pgid", s.pgid)
	}
}

// forward passes a signal beacon received on to the child's process group. A
// paused group is continued after a signal that asks it to stop, or it could
// not act on it.
func (s *Supervisor) forward(logger *slog.Logger, sig os.Signal) {
	ssig, ok := sig.(syscall.Signal)
	if !ok {
		return
	}
	logger.Info("Forwarding signal to the agent", "signal", sig.String())
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.signalLocked(ssig); err != nil {
		logger.Debug("Cannot forward signal", "signal", sig.String(), "err", err)
	}
	switch ssig {
	case syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT:
		s.stopping = true
		s.continueLocked()
	}
}

// terminate sends SIGTERM to the child's process group, SIGKILL once timeout
// has passed while anything of the group still runs, and returns the child's
// exit code. The kill switch leaves nothing running.
func (s *Supervisor) terminate(logger *slog.Logger, exited <-chan int, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	s.signalTerm()
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case code := <-exited:
			s.drainGroup(logger, deadline)
			return code
		case sig := <-s.Signals:
			s.forward(logger, sig)
		case <-t.C:
			logger.Warn("Agent did not exit in time; killing it (SIGKILL)", "timeout", timeout, "pgid", s.pgid)
			s.signal(syscall.SIGKILL)
			return <-exited
		}
	}
}

// stopLeftovers ends what the child left running in its process group once
// it exited by itself (a background job of a shell, a helper): SIGTERM, and
// SIGKILL after timeout.
func (s *Supervisor) stopLeftovers(logger *slog.Logger, timeout time.Duration) {
	if !groupRunning(s.pgid) {
		return
	}
	logger.Warn("The agent left processes running in its process group; stopping them", "pgid", s.pgid, "shutdown_timeout", timeout)
	s.signalTerm()
	s.drainGroup(logger, time.Now().Add(timeout))
}

// drainGroup waits, until deadline, for the rest of the child's process group
// to exit once the child has, and kills what is still running then.
func (s *Supervisor) drainGroup(logger *slog.Logger, deadline time.Time) {
	poll := time.NewTicker(groupPollInterval)
	defer poll.Stop()
	for groupRunning(s.pgid) {
		if !time.Now().Before(deadline) {
			logger.Warn("Processes of the agent's group did not exit in time; killing them (SIGKILL)", "pgid", s.pgid)
			s.signal(syscall.SIGKILL)
			return
		}
		select {
		case <-poll.C:
		case sig := <-s.Signals:
			s.forward(logger, sig)
		}
	}
}

// signalTerm sends SIGTERM to the group, and SIGCONT should it be paused: a
// stopped process cannot act on SIGTERM.
func (s *Supervisor) signalTerm() {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.signalLocked(syscall.SIGTERM)
	s.stopping = true
	s.continueLocked()
}

// continueLocked continues a paused group.
func (s *Supervisor) continueLocked() {
	if s.paused {
		_ = s.signalLocked(syscall.SIGCONT)
		s.paused = false
	}
}

// signal sends sig to the child's process group, ignoring failures: the
// group may be gone.
func (s *Supervisor) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.signalLocked(sig)
}

// signalLocked sends sig to the child's process group; s.mu is held.
func (s *Supervisor) signalLocked(sig syscall.Signal) error {
	if s.pgid <= 0 {
		return errors.New("no child")
	}
	if err := syscall.Kill(-s.pgid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %v to process group %d: %w", sig, s.pgid, err)
	}
	return nil
}

// exitCode is the code a shell would report: the exit status, or 128+signal.
func exitCode(ps *os.ProcessState) int {
	if ps == nil {
		return 1
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}
