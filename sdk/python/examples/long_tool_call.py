"""A long tool call that sentinel can still stop in time.

    SENTINEL_URL=http://localhost:9464 SENTINEL_TOKEN=<tenant API key> \
    SENTINEL_AGENT_ID=long-tool PYTHONPATH=sdk/python python3 sdk/python/examples/long_tool_call.py

checkpoint() only runs between steps; a tool call of several minutes (here a
subprocess) would keep a revoked agent running until it returns. The revoke
and terminate callbacks run on the beacon's thread as soon as sentinel
answers: they stop the tool, within the revocation's shutdown_timeout_ms.
"""

import logging
import subprocess
import threading

from sentinel_beacon import Beacon, SentinelStop

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

current = {"proc": None}
lock = threading.Lock()


def stop_tool(why: str) -> None:
    with lock:
        proc = current["proc"]
    if proc is not None and proc.poll() is None:
        logging.warning("%s: stopping the running tool call", why)
        proc.terminate()  # the callback must return quickly: no wait here


def main() -> int:
    beacon = Beacon(
        heartbeat_interval=5,
        on_revoke=lambda reason, ms: stop_tool(f"revoked ({reason})"),
        on_terminate=lambda: stop_tool("terminate command"),
    ).start()
    try:
        for task in ("crawl", "summarise", "report"):
            beacon.checkpoint()  # blocks while paused, raises once stopped
            logging.info("tool call %s: starting (takes minutes)", task)
            with lock:
                current["proc"] = subprocess.Popen(["sleep", "120"])
            code = current["proc"].wait()
            logging.info("tool call %s: ended with %d", task, code)
        beacon.stop(0)
        return 0
    except SentinelStop as e:
        logging.warning("stopped by sentinel: %s", e)
        beacon.stop(0)  # sends the final heartbeat unless revoked
        return 3


if __name__ == "__main__":
    raise SystemExit(main())
