"""A plain agent loop that cooperates with sentinel's kill switch.

    SENTINEL_URL=http://localhost:9464 SENTINEL_TOKEN=<tenant API key> \
    SENTINEL_AGENT_ID=agent-loop PYTHONPATH=sdk/python python3 sdk/python/examples/agent_loop.py

checkpoint() between two steps returns at once while the agent may run,
blocks while an operator has paused it, and raises once it is revoked or
terminated, so the agent stops between steps, never in the middle of one.
"""

import logging
import time

from sentinel_beacon import Beacon, RevokedError, SentinelStop

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def plan_next_step(n: int) -> str:
    return f"step {n}"


def run_step(step: str) -> None:
    time.sleep(0.5)  # stands for a model call, a tool call, …


def main() -> int:
    # Endpoint, token and agent id come from SENTINEL_URL, SENTINEL_TOKEN and
    # SENTINEL_AGENT_ID; the runtime token is kept in agent-loop.token.
    beacon = Beacon(
        heartbeat_interval=10,
        token_file="agent-loop.token",
        on_revoke=lambda reason, ms: logging.warning("revoked: %s; %s ms to stop", reason, ms),
    )
    with beacon:  # start(); at the end, the final "shutdown" heartbeat
        n = 0
        while True:
            try:
                beacon.checkpoint()
            except RevokedError as e:
                logging.warning("stopping: %s", e)
                return 3
            except SentinelStop:
                logging.warning("terminate command: stopping")
                return 0
            n += 1
            started = time.monotonic()
            try:
                run_step(plan_next_step(n))
                beacon.record_request((time.monotonic() - started) * 1000)
            except Exception:  # noqa: BLE001 - an agent step failed; count it and go on
                beacon.record_request((time.monotonic() - started) * 1000, error=True)


if __name__ == "__main__":
    raise SystemExit(main())
