"""A fake sentinel on a loopback port for the unit tests: it records each
request and answers with what the test's responder returns."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Tuple

Answer = Tuple[int, Dict[str, Any]]


class FakeSentinel:
    def __init__(self, responder: Callable[[Dict[str, Any]], Answer]) -> None:
        self.responder = responder
        self.requests: List[Dict[str, Any]] = []
        self.cond = threading.Condition()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}")
                req = {"path": self.path, "auth": self.headers.get("Authorization", ""), "body": body}
                with fake.cond:
                    fake.requests.append(req)
                    fake.cond.notify_all()
                code, doc = fake.responder(req)
                raw = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def wait_for(self, pred: Callable[[List[Dict[str, Any]]], bool], timeout: float = 20.0) -> List[Dict[str, Any]]:
        with self.cond:
            if not self.cond.wait_for(lambda: pred(self.requests), timeout=timeout):
                raise AssertionError(f"fake sentinel: condition not met; requests: {self.requests}")
            return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def ok(interval: float = 0.05, **extra: Any) -> Dict[str, Any]:
    doc = {"installation_id": "a", "lease_renewed": True, "state": "ACTIVE", "heartbeat_interval_seconds": interval,
           "command": None, "refreshed_token": None}
    doc.update(extra)
    return doc
