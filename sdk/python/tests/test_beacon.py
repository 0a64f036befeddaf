import logging
import os
import stat
import tempfile
import threading
import time
import unittest

from sentinel_beacon import Beacon, RevokedError, TerminatedError, read_token_file
from sentinel_beacon._beacon import _backoff, _seconds_until

from .fake import FakeSentinel, ok

PLATFORM = {"type": "bare_metal", "hostname": "h", "os": "linux", "pid": 1}


def bodies(reqs):
    return [r["body"] for r in reqs]


class BeaconTest(unittest.TestCase):
    def fake(self, responder):
        f = FakeSentinel(responder)
        self.addCleanup(f.close)
        return f

    def beacon(self, fake, **kw):
        kw.setdefault("token", "tenant-key")
        kw.setdefault("agent_id", "agent-1")
        kw.setdefault("heartbeat_interval", 0.05)
        kw.setdefault("final_heartbeat_timeout", 5.0)
        b = Beacon(fake.url, platform=PLATFORM, exit_hook=False, **kw)
        self.addCleanup(b.stop)
        return b

    def test_registration_token_file_and_refresh(self):
        d = tempfile.mkdtemp()
        path = os.path.join(d, "token")
        state = {"n": 0}

        def responder(req):
            state["n"] += 1
            if state["n"] == 1:
                return 200, ok(registered=True, runtime_token={"runtime_token": "srt_v1", "token_version": 1})
            if state["n"] == 3:
                return 200, ok(refreshed_token={"runtime_token": "srt_v2", "token_version": 2})
            return 200, ok()

        f = self.fake(responder)
        b = self.beacon(f, token_file=path, version="1.2.3", silent_after=3, zombie_after=9).start()
        reqs = f.wait_for(lambda r: len(r) >= 5)
        self.assertEqual(reqs[0]["path"], "/api/v1/installations/agent-1/heartbeat")
        self.assertEqual(reqs[0]["auth"], "Bearer tenant-key")
        self.assertEqual(reqs[1]["auth"], "Bearer srt_v1")
        self.assertEqual(reqs[4]["auth"], "Bearer srt_v2")
        first = reqs[0]["body"]
        self.assertEqual(first["status"], "starting")
        self.assertEqual(first["platform"], PLATFORM)
        self.assertEqual(first["version"], "1.2.3")
        self.assertEqual((first["silent_after"], first["zombie_after"]), (3, 9))
        self.assertEqual(first["heartbeat_interval_seconds"], 0.05)
        self.assertNotIn("metrics", first)
        self.assertEqual(reqs[1]["body"]["status"], "healthy")
        self.assertEqual(read_token_file(path), "srt_v2")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(b.token_version, 2)

    def test_thresholds_absent_unless_set(self):
        f = self.fake(lambda req: (200, ok()))
        self.beacon(f).start()
        body = f.wait_for(lambda r: len(r) >= 1)[0]["body"]
        self.assertNotIn("silent_after", body)
        self.assertNotIn("zombie_after", body)

    def test_token_file_used_and_refused_token_forgotten(self):
        path = os.path.join(tempfile.mkdtemp(), "token")
        with open(path, "w") as f:
            f.write("srt_stale\n")

        def responder(req):
            if req["auth"] == "Bearer srt_stale":
                return 401, {"error": "invalid token"}
            return 200, ok()

        f = self.fake(responder)
        self.beacon(f, token_file=path).start()
        reqs = f.wait_for(lambda r: len(r) >= 3)
        self.assertEqual([r["auth"] for r in reqs[:3]], ["Bearer srt_stale", "Bearer tenant-key", "Bearer tenant-key"])
        self.assertFalse(os.path.exists(path))

    def test_metrics_and_status(self):
        f = self.fake(lambda req: (200, ok()))
        b = self.beacon(f)
        b.record_request(100)
        b.record_request(200, error=True)
        b.set_status("degraded")
        b.start()
        body = f.wait_for(lambda r: len(r) >= 1)[0]["body"]
        self.assertEqual(body["metrics"], {"requests_handled": 2, "errors": 1, "avg_latency_ms": 150.0})
        self.assertEqual(body["status"], "degraded")
        b.set_metrics(requests_handled=10, errors=0, avg_latency_ms=5)
        body = f.wait_for(lambda r: r[-1]["body"]["metrics"]["requests_handled"] == 10)[-1]["body"]
        self.assertEqual(body["metrics"], {"requests_handled": 10, "errors": 0, "avg_latency_ms": 5.0})
        with self.assertRaises(ValueError):
            b.set_status("shutdown")
        with self.assertRaises(ValueError):
            b.record_request(-1)

    def test_revoke_reaches_checkpoint_and_callback(self):
        revoked = threading.Event()
        got = []

        def responder(req):
            if revoked.is_set():
                return 200, {"installation_id": "a", "lease_renewed": False, "revoked": True,
                             "reason": "rogue", "shutdown_timeout_ms": 1234}
            return 200, ok()

        f = self.fake(responder)
        b = self.beacon(f, on_revoke=lambda reason, ms: got.append((reason, ms))).start()
        f.wait_for(lambda r: len(r) >= 1)
        b.checkpoint()
        revoked.set()
        with self.assertRaises(RevokedError) as cm:
            while True:
                b.checkpoint()
                time.sleep(0.005)  # an agent's step
        self.assertEqual((cm.exception.reason, cm.exception.shutdown_timeout_ms), ("rogue", 1234))
        self.assertEqual(got, [("rogue", 1234)])
        self.assertEqual(b.state, "REVOKED")
        n = len(f.requests)
        self.assertFalse(b.stop(0), "a revoked agent sends no final heartbeat")
        self.assertEqual(len(f.requests), n)

    def test_pause_blocks_checkpoint_until_resume(self):
        command = {"c": None}
        events = []
        f = self.fake(lambda req: (200, ok(command=command["c"])))
        paused, resumed = threading.Event(), threading.Event()
        b = self.beacon(f, on_pause=lambda: (events.append("pause"), paused.set()),
                        on_resume=lambda: (events.append("resume"), resumed.set())).start()
        command["c"] = "pause"
        self.assertTrue(paused.wait(20))
        self.assertTrue(b.paused)
        done = threading.Event()
        threading.Thread(target=lambda: (b.checkpoint(), done.set()), daemon=True).start()
        # Several heartbeats repeat "pause" while checkpoint stays blocked.
        n = len(f.requests)
        f.wait_for(lambda r: len(r) >= n + 3)
        self.assertFalse(done.is_set(), "checkpoint returned while paused")
        command["c"] = "resume"
        self.assertTrue(done.wait(20), "checkpoint still blocked after resume")
        self.assertEqual(events, ["pause", "resume"], "repeated commands are passed on once")

    def test_stop_releases_a_paused_checkpoint(self):
        f = self.fake(lambda req: (200, ok(command="pause")))
        paused = threading.Event()
        b = self.beacon(f, on_pause=paused.set).start()
        self.assertTrue(paused.wait(20))
        done = threading.Event()
        threading.Thread(target=lambda: (b.checkpoint(), done.set()), daemon=True).start()
        b.stop()
        self.assertTrue(done.wait(20))

    def test_terminate(self):
        command = {"c": None}
        f = self.fake(lambda req: (200, ok(command=command["c"])))
        terminated = threading.Event()
        b = self.beacon(f, on_terminate=terminated.set).start()
        f.wait_for(lambda r: len(r) >= 1)
        command["c"] = "terminate"
        self.assertTrue(terminated.wait(20))
        with self.assertRaises(TerminatedError):
            b.checkpoint()
        self.assertTrue(b.stop(7))
        last = f.requests[-1]["body"]
        self.assertEqual((last["status"], last["exit_code"]), ("shutdown", 7))

    def test_terminate_while_paused_ends_checkpoint(self):
        command = {"c": "pause"}
        f = self.fake(lambda req: (200, ok(command=command["c"])))
        paused = threading.Event()
        b = self.beacon(f, on_pause=paused.set, on_terminate=lambda: None).start()
        self.assertTrue(paused.wait(20))
        err = []

        def loop():
            try:
                b.checkpoint()
            except TerminatedError as e:
                err.append(e)

        t = threading.Thread(target=loop)
        t.start()
        command["c"] = "terminate"
        t.join(20)
        self.assertEqual(len(err), 1)

    def test_unreachable_warns_once_per_streak(self):
        state = {"fail": True}
        f = self.fake(lambda req: (503, {"error": "down"}) if state["fail"] else (200, ok()))
        logger = logging.getLogger("sentinel_beacon.test.unreachable")
        with self.assertLogs(logger, level="INFO") as logs:
            b = self.beacon(f, logger=logger).start()
            f.wait_for(lambda r: len(r) >= 4)
            b.checkpoint()  # the agent keeps running
            state["fail"] = False
            n = len(f.requests)
            f.wait_for(lambda r: len(r) >= n + 2)
            b.stop()
        warnings = [r for r in logs.records if r.levelno == logging.WARNING]
        self.assertEqual(len(warnings), 1, [r.getMessage() for r in logs.records])
        self.assertIn("503", warnings[0].getMessage())
        self.assertTrue(any("reachable again" in r.getMessage() for r in logs.records))
        for r in logs.records:
            self.assertNotIn("tenant-key", r.getMessage())

    def test_stop_sends_final_heartbeat_once(self):
        f = self.fake(lambda req: (200, ok() if req["body"]["status"] != "shutdown"
                                   else {"installation_id": "a", "lease_renewed": False, "state": "STOPPED"}))
        b = self.beacon(f).start()
        f.wait_for(lambda r: len(r) >= 1)
        self.assertTrue(b.stop(3))
        self.assertFalse(b.stop(3))
        finals = [x for x in bodies(f.requests) if x["status"] == "shutdown"]
        self.assertEqual(len(finals), 1)
        self.assertEqual(finals[0]["exit_code"], 3)
        self.assertEqual(b.state, "STOPPED")

    def test_final_heartbeat_retried(self):
        state = {"n": 0}

        def responder(req):
            if req["body"]["status"] == "shutdown":
                state["n"] += 1
                if state["n"] < 3:
                    return 503, {"error": "busy"}
            return 200, ok()

        f = self.fake(responder)
        # Two retries take 0.4-0.75 s of backoff; leave room for a loaded machine.
        b = self.beacon(f, final_heartbeat_timeout=10.0).start()
        f.wait_for(lambda r: len(r) >= 1)
        self.assertTrue(b.stop(0))
        self.assertEqual(state["n"], 3)

    def test_context_manager_exit_codes(self):
        f = self.fake(lambda req: (200, ok()))
        with self.assertRaises(RuntimeError):
            with self.beacon(f):
                f.wait_for(lambda r: len(r) >= 1)
                raise RuntimeError("boom")
        self.assertEqual(f.requests[-1]["body"]["exit_code"], 1)

    def test_abs_protocol(self):
        f = self.fake(lambda req: (200, {"status": "ACTIVE", "agentId": "agent-1", "nextDeadline": "2000-01-01T00:00:00Z",
                                         "command": "pause"}))
        paused = threading.Event()
        self.beacon(f, protocol="abs", on_pause=paused.set).start()
        reqs = f.wait_for(lambda r: len(r) >= 2)
        self.assertEqual(reqs[0]["path"], "/v1/heartbeat?agentId=agent-1")
        self.assertTrue(paused.wait(20))

    def test_invalid_configuration(self):
        cases = [
            ({"endpoint": "ftp://x", "token": "k", "agent_id": "a"}, "scheme"),
            ({"endpoint": "http://x", "token": "k", "agent_id": "-bad"}, "agent id"),
            ({"endpoint": "http://x", "token": "", "agent_id": "a"}, "no credential"),
            ({"endpoint": "http://x", "token": "k", "agent_id": "a", "protocol": "grpc"}, "protocol"),
            ({"endpoint": "http://x", "token": "k", "agent_id": "a", "heartbeat_interval": 0}, "heartbeat_interval"),
            ({"endpoint": "http://x", "token": "k", "agent_id": "a", "silent_after": 5, "zombie_after": 5}, "zombie_after"),
            ({"endpoint": "http://x", "token": "k", "agent_id": "a", "silent_after": 0}, "silent_after"),
        ]
        env = {k: os.environ.pop(k) for k in ("SENTINEL_URL", "SENTINEL_TOKEN", "SENTINEL_TOKEN_FILE") if k in os.environ}
        self.addCleanup(os.environ.update, env)
        for kw, want in cases:
            with self.subTest(want):
                with self.assertRaises(ValueError) as cm:
                    Beacon(platform=PLATFORM, exit_hook=False, **kw)
                self.assertIn(want, str(cm.exception))
                self.assertNotIn("k'", str(cm.exception))

    def test_backoff(self):
        for n in range(1, 40):
            d = _backoff(n, 8.0)
            cap = min(min(1.0, 2.0) * 2 ** (n - 1), 8.0)
            self.assertGreaterEqual(d, cap / 2)
            self.assertLessEqual(d, cap)

    def test_seconds_until(self):
        self.assertIsNone(_seconds_until(""))
        self.assertLess(_seconds_until("2000-01-01T00:00:00.123456789Z"), 0)
        self.assertGreater(_seconds_until("2999-01-01T00:00:00+01:00"), 0)


if __name__ == "__main__":
    unittest.main()
