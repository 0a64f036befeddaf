"""Integration scenarios for the Go test driver (sdk/sdk_test.go), run
against the real sentinel binary. The driver sets the environment, reads one
JSON event per line on stdout and writes commands ("stop <code>") on stdin.

SCENARIO: run (agent loop until told to stop), default_stop (no callbacks:
the SDK stops the process), unreachable, exit (leaves through sys.exit).
"""

import json
import logging
import os
import signal
import sys
import threading
import time

from sentinel_beacon import PROTOCOL_ABS, PROTOCOL_BEACON, Beacon, RevokedError, SentinelStop

_out = threading.Lock()


def emit(event, **fields):
    with _out:
        sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
        sys.stdout.flush()


class Counter(logging.Handler):
    def __init__(self):
        super().__init__()
        self.warnings = 0  # the failure-streak warnings

    def emit(self, record):
        if record.levelno == logging.WARNING and "unreachable" in record.getMessage():
            self.warnings += 1


def main():
    scenario = os.environ["SCENARIO"]
    interval = float(os.environ.get("INTERVAL_MS", "1000")) / 1000
    protocol = PROTOCOL_ABS if os.environ.get("PROTOCOL") == "abs" else PROTOCOL_BEACON
    commands = []
    cmd_ready = threading.Event()

    def read_commands():
        for line in sys.stdin:
            commands.append(line.split())
            cmd_ready.set()
        commands.append(["eof"])
        cmd_ready.set()

    threading.Thread(target=read_commands, daemon=True).start()
    logger = logging.getLogger("scenario")
    counter = Counter()
    logger.addHandler(counter)
    logger.addHandler(logging.StreamHandler(sys.stderr))
    logger.setLevel(logging.INFO)

    callbacks = {}
    if scenario != "default_stop":
        callbacks = dict(
            on_revoke=lambda reason, ms: emit("revoke_callback", reason=reason, timeout_ms=ms),
            on_terminate=lambda: emit("terminate_callback"),
            on_pause=lambda: emit("pause_callback"),
            on_resume=lambda: emit("resume_callback"),
        )
    b = Beacon(
        heartbeat_interval=interval,
        protocol=protocol,
        final_heartbeat_timeout=float(os.environ.get("FINAL_TIMEOUT_MS", "5000")) / 1000,
        logger=logger,
        version="sdk-it-python",
        **callbacks,
    )

    if scenario == "default_stop" and os.environ.get("HANDLE_SIGTERM") == "1":
        # An agent that ignores SIGTERM: the SDK's hard exit must end it.
        signal.signal(signal.SIGTERM, lambda *_: emit("sigterm"))

    b.start()
    emit("started", agent_id=b.agent_id, platform=b.platform)

    if scenario == "unreachable":
        deadline = time.monotonic() + float(os.environ.get("RUN_MS", "2000")) / 1000
        steps = 0
        while time.monotonic() < deadline:
            b.checkpoint()
            steps += 1
            time.sleep(0.01)
        sent = b.stop(0)
        emit("done", steps=steps, warnings=counter.warnings, final_sent=sent)
        return 0

    if scenario == "exit":
        b.record_request(5)
        # sys.exit runs the exit hook: the final heartbeat goes out without stop().
        sys.exit(4)

    step = 0
    last_version = None
    while True:
        try:
            b.checkpoint()
        except RevokedError as e:
            emit("checkpoint_raised", kind="revoked", reason=e.reason, timeout_ms=e.shutdown_timeout_ms)
            break
        except SentinelStop:
            emit("checkpoint_raised", kind="terminated")
            break
        step += 1
        b.record_request(10 + step % 5, error=step % 10 == 0)
        emit("step", n=step)
        if b.token_version != last_version:
            last_version = b.token_version
            emit("token", version=last_version)
        if commands and commands[0][0] in ("stop", "eof"):
            break
        time.sleep(0.02)

    if scenario == "default_stop":
        # The SDK stops the process; keep working until it does.
        while True:
            time.sleep(0.02)

    cmd_ready.wait()
    cmd = commands[0]
    code = int(cmd[1]) if cmd[0] == "stop" and len(cmd) > 1 else 0
    sent = b.stop(code)
    emit("stopped", final_sent=sent, state=b.state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
