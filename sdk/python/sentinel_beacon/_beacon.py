"""The Beacon: registration, heartbeats, tokens and the kill switch in-process."""

from __future__ import annotations

import atexit
import datetime as _dt
import logging
import os
import random
import re
import signal
import sys
import threading
import time
from typing import Any, Callable, Dict, Optional

from . import _protocol
from ._platform import default_id, detect_platform, valid_id
from ._protocol import PROTOCOL_ABS, PROTOCOL_BEACON, Response, StatusError, retryable
from ._tokenfile import read_token_file, write_token_file

__version__ = "0.1.0"

DEFAULT_INTERVAL = 60.0
"""Heartbeat interval in seconds asked for when none is given."""
DEFAULT_SHUTDOWN_TIMEOUT = 10.0
"""Seconds between SIGTERM and the hard exit when sentinel names no timeout."""
DEFAULT_FINAL_HEARTBEAT_TIMEOUT = 5.0
"""Seconds the final shutdown heartbeat is retried for."""

_MIN_WAIT = 0.01  # keeps a bad answer (interval 0, deadline passed) from busy-looping
_FINAL_RETRY_CAP = 1.0
_MAX_WAIT = 7 * 24 * 3600.0
_STATUSES = ("healthy", "degraded", "unhealthy")

log = logging.getLogger("sentinel_beacon")


class SentinelStop(Exception):
    """Raised by checkpoint() once sentinel told the agent to stop."""


class RevokedError(SentinelStop):
    """The kill switch revoked the agent. shutdown_timeout_ms is None when
    sentinel named no timeout; 0 means no grace at all."""

    def __init__(self, reason: str, shutdown_timeout_ms: Optional[int]) -> None:
        self.reason = reason
        self.shutdown_timeout_ms = shutdown_timeout_ms
        super().__init__(f"revoked by sentinel: {reason}" if reason else "revoked by sentinel")


class TerminatedError(SentinelStop):
    """Sentinel sent the terminate command."""

    def __init__(self) -> None:
        super().__init__("terminate command from sentinel")


class Beacon:
    """Keeps one agent's lease with sentinel alive from inside the agent.

    ``start()`` registers the agent and sends heartbeats on a daemon thread at
    the interval sentinel answers; the runtime token sentinel hands out is kept
    in ``token_file`` (0600, replaced atomically) and used instead of
    ``token``. ``checkpoint()``, called by the agent between two steps,
    returns at once while the agent may run, blocks while it is paused and
    raises ``RevokedError``/``TerminatedError`` once it must stop. ``stop()``
    (and interpreter exit) sends the final ``shutdown`` heartbeat.

    Callbacks run on the heartbeat thread and must return quickly:
    ``on_revoke(reason, shutdown_timeout_ms)``, ``on_terminate()``,
    ``on_pause()``, ``on_resume()``. Without ``on_revoke`` (``on_terminate``)
    a revocation (terminate command) stops the process as the beacon wrapper
    does: SIGTERM to itself, then SIGKILL after ``shutdown_timeout_ms``
    (``shutdown_timeout`` seconds when sentinel names none).

    A Beacon is safe to use from several threads. Sentinel being unreachable
    never stops the agent: heartbeats are retried with backoff and jitter,
    with one warning per failure streak.
    """

    def __init__(
        self,
        endpoint: Optional[str] = None,
        token: Optional[str] = None,
        agent_id: Optional[str] = None,
        heartbeat_interval: float = DEFAULT_INTERVAL,
        token_file: Optional[str] = None,
        protocol: str = PROTOCOL_BEACON,
        on_revoke: Optional[Callable[[str, Optional[int]], None]] = None,
        on_terminate: Optional[Callable[[], None]] = None,
        on_pause: Optional[Callable[[], None]] = None,
        on_resume: Optional[Callable[[], None]] = None,
        *,
        version: Optional[str] = None,
        silent_after: Optional[int] = None,
        zombie_after: Optional[int] = None,
        platform: Optional[Dict[str, Any]] = None,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        final_heartbeat_timeout: float = DEFAULT_FINAL_HEARTBEAT_TIMEOUT,
        exit_hook: bool = True,
        logger: Optional[logging.Logger] = None,
    ) -> None:
        endpoint = endpoint or os.environ.get("SENTINEL_URL", "")
        token = token if token is not None else os.environ.get("SENTINEL_TOKEN", "")
        token_file = token_file or os.environ.get("SENTINEL_TOKEN_FILE") or None
        if not endpoint:
            raise ValueError("no sentinel endpoint (argument endpoint or SENTINEL_URL)")
        if protocol not in (PROTOCOL_BEACON, PROTOCOL_ABS):
            raise ValueError(f"unknown protocol {protocol!r} (want beacon or abs)")
        if not (heartbeat_interval > 0):
            raise ValueError("heartbeat_interval must be a positive number of seconds")
        for name, v in (("silent_after", silent_after), ("zombie_after", zombie_after)):
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ValueError(f"{name} must be a positive whole number of missed beats")
        if silent_after is not None and zombie_after is not None and zombie_after <= silent_after:
            raise ValueError("zombie_after must be greater than silent_after")
        self._platform = dict(platform) if platform is not None else detect_platform()
        agent_id = agent_id or os.environ.get("SENTINEL_AGENT_ID", "") or default_id(self._platform)
        if not valid_id(agent_id):
            raise ValueError(
                f"agent id {agent_id!r} is invalid: it must match ^[A-Za-z0-9][A-Za-z0-9._:@-]{{0,127}}$"
            )
        self._url = _protocol.heartbeat_url(endpoint, agent_id, protocol)
        self.agent_id = agent_id
        self.endpoint = endpoint
        self.protocol = protocol
        self._token = token or ""
        self._token_file = token_file
        self._interval_asked = float(heartbeat_interval)
        self._version = version
        self._silent_after = silent_after
        self._zombie_after = zombie_after
        self._shutdown_timeout = float(shutdown_timeout)
        self._final_timeout = float(final_heartbeat_timeout)
        self._exit_hook = exit_hook
        self._on_revoke, self._on_terminate = on_revoke, on_terminate
        self._on_pause, self._on_resume = on_pause, on_resume
        self._log = logging.LoggerAdapter(logger or log, {"agent_id": agent_id})
        self._user_agent = f"sentinel-beacon-python/{__version__}"
        self._started_at = time.monotonic()

        # Everything below is guarded by _cond; checkpoint() waits on it.
        self._cond = threading.Condition()
        self._runtime_token = ""
        self._token_version: Optional[int] = None
        self._accepted = False
        self._interval = 0.0  # as last answered; 0 before
        self._last_command = ""
        self._paused = False
        self._stop_error: Optional[SentinelStop] = None
        self._state = ""
        self._status = ""
        self._requests = 0
        self._errors = 0
        self._latency_sum = 0.0
        self._avg_latency: Optional[float] = None
        self._has_metrics = False
        self._final_sent = False

        self._halt = threading.Event()
        self._first = threading.Event()  # set once the first heartbeat is over
        self._thread: Optional[threading.Thread] = None
        self._uncaught = False
        self._prev_excepthook: Optional[Callable[..., Any]] = None

        if token_file:
            try:
                self._runtime_token = read_token_file(token_file)
            except (OSError, ValueError) as e:
                self._log.warning("Ignoring the token file %s: %s", token_file, e)
            if self._runtime_token:
                self._log.info("Using the runtime token from the token file %s", token_file)
        if not self._token and not self._runtime_token:
            raise ValueError("no credential: need a tenant API key or a runtime token (token, SENTINEL_TOKEN or token_file)")

    # ----------------------------------------------------------------- public

    def start(self) -> "Beacon":
        """Start the heartbeat thread (once) and return once the first
        heartbeat was answered (the agent is registered) or failed (the
        heartbeats go on in the background); never raises for an unreachable
        sentinel. Returns self."""
        with self._cond:
            if self._thread is not None:
                return self
            self._thread = threading.Thread(target=self._run, name=f"sentinel-beacon-{self.agent_id}", daemon=True)
        if self._exit_hook:
            atexit.register(self._at_exit)
            self._prev_excepthook = sys.excepthook
            sys.excepthook = self._excepthook
        self._thread.start()
        self._first.wait(self._attempt_timeout() * 2 + 1)
        return self

    def checkpoint(self) -> None:
        """Cooperate with the kill switch between two steps: return at once
        while the agent may run, block while it is paused, raise RevokedError
        or TerminatedError once it must stop."""
        with self._cond:
            while True:
                err = self._stop_error
                if isinstance(err, RevokedError):
                    # A fresh exception each time: re-raising one instance
                    # would grow its traceback with every call.
                    raise RevokedError(err.reason, err.shutdown_timeout_ms)
                if err is not None:
                    raise TerminatedError()
                if not self._paused:
                    return
                self._cond.wait()

    def stop(self, exit_code: int = 0) -> bool:
        """Stop the heartbeats and send the final ``shutdown`` heartbeat with
        exit_code, retried for ``final_heartbeat_timeout`` seconds; sentinel
        then shows the agent STOPPED and raises no liveness alert. A revoked
        agent sends none (the kill switch owns its state). A checkpoint()
        held by a pause returns. Idempotent; returns whether sentinel
        acknowledged a final heartbeat."""
        self._halt.set()
        with self._cond:
            # No more commands arrive: a checkpoint() held by a pause would
            # wait for a resume that never comes.
            self._paused = False
            self._cond.notify_all()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            # A heartbeat under way finishes first: sent after the final
            # one, it would start the agent again.
            t.join(timeout=self._attempt_timeout())
        if self._exit_hook:
            atexit.unregister(self._at_exit)
            if sys.excepthook == self._excepthook:
                sys.excepthook = self._prev_excepthook or sys.__excepthook__
        return self._send_final(exit_code)

    def __enter__(self) -> "Beacon":
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        code = 0
        if isinstance(exc, SystemExit):
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        elif exc is not None and not isinstance(exc, SentinelStop):
            code = 1
        self.stop(code)

    def record_request(self, latency_ms: float, error: bool = False) -> None:
        """Count one unit of work for the reported metrics: requests_handled,
        errors and the running mean avg_latency_ms."""
        if latency_ms < 0:
            raise ValueError("latency_ms must not be negative")
        with self._cond:
            self._requests += 1
            if error:
                self._errors += 1
            self._latency_sum += latency_ms
            self._avg_latency = self._latency_sum / self._requests
            self._has_metrics = True

    def set_metrics(
        self, requests_handled: Optional[int] = None, errors: Optional[int] = None, avg_latency_ms: Optional[float] = None
    ) -> None:
        """Set the reported metrics directly (for agents that count their own);
        omitted figures keep their values."""
        for name, v in (("requests_handled", requests_handled), ("errors", errors), ("avg_latency_ms", avg_latency_ms)):
            if v is not None and v < 0:
                raise ValueError(f"{name} must not be negative")
        with self._cond:
            if requests_handled is not None:
                self._requests = int(requests_handled)
            if errors is not None:
                self._errors = int(errors)
            if avg_latency_ms is not None:
                self._avg_latency = float(avg_latency_ms)
                self._latency_sum = self._avg_latency * self._requests
            self._has_metrics = True

    def set_status(self, status: str) -> None:
        """Report the agent's health: healthy, degraded or unhealthy."""
        if status not in _STATUSES:
            raise ValueError(f"status {status!r} is not one of {', '.join(_STATUSES)}")
        with self._cond:
            self._status = status

    @property
    def paused(self) -> bool:
        """Whether sentinel paused the agent (checkpoint() blocks)."""
        with self._cond:
            return self._paused

    @property
    def state(self) -> str:
        """The state sentinel last answered (ACTIVE, RECOVERED, STOPPED, REVOKED)."""
        with self._cond:
            return self._state

    @property
    def token_version(self) -> Optional[int]:
        """The version of the runtime token last received, None before."""
        with self._cond:
            return self._token_version

    @property
    def platform(self) -> Dict[str, Any]:
        """The platform sent with each heartbeat."""
        return dict(self._platform)

    # --------------------------------------------------------------- the loop

    def _run(self) -> None:
        failures = 0
        failing_since = 0.0
        kind = ""
        while not self._halt.is_set():
            began = time.monotonic()
            try:
                resp = self._send(self._body(None))
            except Exception as e:  # noqa: BLE001 - nothing may end the loop
                failures += 1
                if failures == 1:
                    failing_since = began
                k = _error_kind(e)
                if retryable(e):
                    wait = _backoff(failures, self._current_interval())
                    if k != kind:
                        self._log.warning(
                            "Sentinel unreachable or failing; the agent keeps running and the beacon retries "
                            "with backoff (logged once per failure streak): %s", e)
                else:
                    wait = self._current_interval()
                    if k != kind:
                        self._log.error(
                            "Sentinel refused the heartbeat; the agent keeps running, check the endpoint, the "
                            "credential and the agent id (logged once per failure streak): %s", e)
                kind = k
            else:
                if self._halt.is_set():
                    self._store_token(resp)
                    self._first.set()
                    return
                if failures:
                    self._log.info("Sentinel reachable again after %d failed attempts in %.1fs",
                                   failures, time.monotonic() - failing_since)
                failures, kind = 0, ""
                if self._handle(resp):
                    self._first.set()
                    return
                wait = self._next_wait(resp, began)
            self._first.set()
            # An absurd interval from the answer must not overflow the wait.
            if self._halt.wait(min(wait, _MAX_WAIT)):
                return

    def _body(self, status: Optional[str]) -> Dict[str, Any]:
        with self._cond:
            status = status or self._status or ("healthy" if self._accepted else "starting")
            body: Dict[str, Any] = {
                "status": status,
                "uptime_seconds": int(time.monotonic() - self._started_at),
                "heartbeat_interval_seconds": self._interval_asked,
                "platform": self._platform,
            }
            if self._has_metrics:
                body["metrics"] = {
                    "requests_handled": self._requests,
                    "errors": self._errors,
                    "avg_latency_ms": round(self._avg_latency or 0.0, 3),
                }
        if self._version:
            body["version"] = self._version
        if self._silent_after is not None:
            body["silent_after"] = self._silent_after
        if self._zombie_after is not None:
            body["zombie_after"] = self._zombie_after
        return body

    def _send(self, body: Dict[str, Any], timeout: Optional[float] = None) -> Response:
        """Post one heartbeat with the current credential. A refused runtime
        token (401/403) is dropped and the configured token tried once: the
        token file may hold another agent's token or an expired one."""
        timeout = timeout if timeout is not None else self._attempt_timeout()
        with self._cond:
            tok = self._runtime_token
        using_runtime = bool(tok)
        if not using_runtime:
            tok = self._token
        try:
            raw = _protocol.post_json(self._url, tok, body, timeout, self._user_agent)
        except StatusError as e:
            if not (using_runtime and self._token and self._token != tok and e.code in (401, 403)):
                raise
            self._log.warning("Sentinel refused the runtime token; falling back to the configured token: %s", e)
            self._forget_runtime_token(tok)
            raw = _protocol.post_json(self._url, self._token, body, timeout, self._user_agent)
        resp = _protocol.decode_response(self.protocol, raw)
        with self._cond:
            self._accepted = True
            if resp.state:
                self._state = resp.state
        return resp

    def _forget_runtime_token(self, tok: str) -> None:
        with self._cond:
            if self._runtime_token == tok:
                self._runtime_token = ""
        path = self._token_file
        if not path:
            return
        try:
            if read_token_file(path) != tok:
                return  # already replaced
            os.remove(path)
            self._log.info("Removed the refused runtime token from the token file %s", path)
        except (OSError, ValueError) as e:
            self._log.warning("Cannot remove the refused runtime token from the token file %s: %s", path, e)

    def _handle(self, resp: Response) -> bool:
        """Apply an answer; True when the agent must stop."""
        if resp.revoked:
            err = RevokedError(resp.reason, resp.shutdown_timeout_ms)
            with self._cond:
                self._state = "REVOKED"
                self._stop_error = err
                self._cond.notify_all()
            self._log.error("Agent revoked by the kill switch: %s (shutdown_timeout_ms=%s)",
                            resp.reason, resp.shutdown_timeout_ms)
            if self._on_revoke is not None:
                self._callback(self._on_revoke, resp.reason, resp.shutdown_timeout_ms)
            else:
                # No final heartbeat: sentinel would answer "revoked" again.
                self._self_stop(resp.shutdown_timeout_ms, final=False)
            return True
        self._store_token(resp)
        if resp.registered:
            self._log.info("Registered with sentinel (state %s)", resp.state)
        if resp.state == "RECOVERED":
            self._log.info("Sentinel reports the agent recovered")
        with self._cond:
            self._interval = resp.heartbeat_interval_seconds
            last, self._last_command = self._last_command, resp.command
        cmd = resp.command
        # A command is delivered at least once: a repeat in the next answer is
        # the same command, not a new one.
        if not cmd or cmd == last:
            return False
        if cmd == "terminate":
            with self._cond:
                self._stop_error = TerminatedError()
                self._cond.notify_all()
            self._log.warning("Terminate command from sentinel")
            if self._on_terminate is not None:
                self._callback(self._on_terminate)
            else:
                self._self_stop(None, final=True)
            return True
        if cmd in ("pause", "resume"):
            self._log.info("Command from sentinel: %s", cmd)
            with self._cond:
                self._paused = cmd == "pause"
                self._cond.notify_all()
            cb = self._on_pause if cmd == "pause" else self._on_resume
            if cb is not None:
                self._callback(cb)
            return False
        self._log.warning("Ignoring an unknown command from sentinel: %s", cmd)
        return False

    def _callback(self, cb: Callable[..., None], *args: Any) -> None:
        try:
            cb(*args)
        except Exception:  # noqa: BLE001 - a broken callback must not end the heartbeats
            self._log.exception("A kill-switch callback raised")

    def _self_stop(self, timeout_ms: Optional[int], final: bool) -> None:
        """Stop the process as the beacon wrapper stops its child: SIGTERM,
        then SIGKILL once the timeout has passed. A terminate command first
        sends the final heartbeat with 143 (128 + SIGTERM), since a process
        killed by SIGTERM runs no exit hook."""
        timeout = self._shutdown_timeout if timeout_ms is None else min(max(timeout_ms, 0) / 1000.0, _MAX_WAIT)
        if final:
            self._send_final(128 + signal.SIGTERM)
        self._log.error("Stopping the process: SIGTERM now, SIGKILL in %.3fs", timeout)
        hard = getattr(signal, "SIGKILL", signal.SIGTERM)
        threading.Thread(target=_kill_after, args=(timeout, hard), name="sentinel-beacon-hard-exit", daemon=True).start()
        os.kill(os.getpid(), signal.SIGTERM)

    def _send_final(self, exit_code: int) -> bool:
        with self._cond:
            if self._final_sent or self._thread is None:
                return False
            self._final_sent = True
            if isinstance(self._stop_error, RevokedError):
                return False
        body = self._body("shutdown")
        body["exit_code"] = int(exit_code)
        deadline = time.monotonic() + self._final_timeout
        n = 0
        while True:
            n += 1
            try:
                resp = self._send(body, timeout=max(min(self._attempt_timeout(), deadline - time.monotonic()), 0.05))
            except Exception as e:  # noqa: BLE001
                wait = _backoff(n, _FINAL_RETRY_CAP)
                if not retryable(e) or time.monotonic() + wait > deadline:
                    self._log.warning("Final shutdown heartbeat failed after %d attempts: %s", n, e)
                    return False
                time.sleep(wait)
                continue
            self._store_token(resp)
            self._log.info("Sent the final shutdown heartbeat (exit code %d, state %s)", exit_code, resp.state)
            return True

    def _store_token(self, resp: Response) -> None:
        t = resp.runtime_token
        if not t:
            return
        with self._cond:
            same = self._runtime_token == t["runtime_token"]
            self._runtime_token = t["runtime_token"]
            if isinstance(t.get("token_version"), int):
                self._token_version = t["token_version"]
        if same:
            return
        version = t.get("token_version")
        if not self._token_file:
            self._log.info("Received runtime token version %s; keeping it in memory only (no token_file)", version)
            return
        try:
            write_token_file(self._token_file, t["runtime_token"])
        except OSError as e:
            self._log.warning("Cannot store runtime token version %s in %s; using it from memory: %s",
                              version, self._token_file, e)
            return
        self._log.info("Stored runtime token version %s in %s", version, self._token_file)

    def _current_interval(self) -> float:
        with self._cond:
            return self._interval if self._interval > 0 else self._interval_asked

    def _attempt_timeout(self) -> float:
        return min(max(self._current_interval(), 1.0), 10.0)

    def _next_wait(self, resp: Response, began: float) -> float:
        if resp.heartbeat_interval_seconds > 0:
            wait = resp.heartbeat_interval_seconds - (time.monotonic() - began)
        else:
            until = _seconds_until(resp.next_heartbeat_at)
            wait = until if until is not None and until > 0 else self._interval_asked - (time.monotonic() - began)
        return max(wait, _MIN_WAIT)

    # ------------------------------------------------------------ exit hooks

    def _excepthook(self, exc_type, exc, tb) -> None:
        self._uncaught = True
        (self._prev_excepthook or sys.__excepthook__)(exc_type, exc, tb)

    def _at_exit(self) -> None:
        # Python does not tell an exit hook the exit status: 1 after an
        # uncaught exception, else 0. stop(exit_code) reports another.
        self.stop(1 if self._uncaught else 0)


def _kill_after(timeout: float, sig: int) -> None:
    time.sleep(timeout)
    os.kill(os.getpid(), sig)


def _backoff(n: int, interval: float) -> float:
    """Wait before retry n (1-based): exponential from min(1s, interval/4),
    capped at the interval, with equal jitter so a fleet does not retry in
    lockstep."""
    base = min(1.0, interval / 4)
    d = interval if n - 1 >= 32 else min(base * (2 ** (n - 1)), interval)
    if d <= 0:
        return _MIN_WAIT
    return max(d / 2 + random.uniform(0, d / 2), _MIN_WAIT)


def _error_kind(err: BaseException) -> str:
    if isinstance(err, StatusError) and not retryable(err):
        return f"http {err.code}"
    return "unreachable"


_RFC3339 = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def _seconds_until(ts: str) -> Optional[float]:
    """Seconds from now until an RFC 3339 time (Go's nanosecond form too)."""
    m = _RFC3339.match(ts or "")
    if not m:
        return None
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    try:
        t = _dt.datetime.fromisoformat(m.group(1) + zone)
    except ValueError:
        return None
    frac = float(m.group(2)) if m.group(2) else 0.0
    return t.timestamp() + frac - time.time()
