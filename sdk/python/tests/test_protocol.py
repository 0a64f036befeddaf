import json
import random
import unittest

from sentinel_beacon import StatusError, TransportError, retryable
from sentinel_beacon._protocol import decode_response, heartbeat_url


class ProtocolTest(unittest.TestCase):
    def test_urls(self):
        self.assertEqual(heartbeat_url("http://s:9464/", "a:b@c", "beacon"),
                         "http://s:9464/api/v1/installations/a%3Ab%40c/heartbeat")
        self.assertEqual(heartbeat_url("https://s/base", "a-1", "abs"), "https://s/base/v1/heartbeat?agentId=a-1")
        for bad in ("s:9464", "ftp://s", "http://"):
            with self.assertRaises(ValueError):
                heartbeat_url(bad, "a", "beacon")

    def test_retryable(self):
        cases = {400: False, 401: False, 403: False, 404: False, 408: True, 413: False, 422: False,
                 429: True, 500: True, 502: True, 503: True}
        for code, want in cases.items():
            self.assertEqual(retryable(StatusError(code)), want, code)
        self.assertTrue(retryable(TransportError("refused")))

    def test_decode_answers(self):
        r = decode_response("beacon", json.dumps({
            "installation_id": "a", "state": "ACTIVE", "heartbeat_interval_seconds": 30, "command": "pause",
            "refreshed_token": {"runtime_token": "srt_2", "token_version": 2},
            "runtime_token": {"runtime_token": "srt_1", "token_version": 1}}).encode())
        self.assertEqual((r.state, r.heartbeat_interval_seconds, r.command), ("ACTIVE", 30.0, "pause"))
        self.assertEqual(r.runtime_token["runtime_token"], "srt_2", "a refresh wins")
        r = decode_response("beacon", b'{"revoked":true,"reason":"x"}')
        self.assertTrue(r.revoked)
        self.assertIsNone(r.shutdown_timeout_ms, "no timeout named")
        r = decode_response("abs", b'{"status":"REVOKED","agentId":"a","shutdown_timeout_ms":0}')
        self.assertTrue(r.revoked)
        self.assertEqual(r.shutdown_timeout_ms, 0)

    def test_decode_never_fails_otherwise(self):
        """Whatever an endpoint answers, decoding gives a Response or a
        TransportError (a seeded fuzz loop over mutated answers)."""
        rng = random.Random(1)
        seeds = [
            b'{"installation_id":"a","lease_renewed":true,"state":"ACTIVE","heartbeat_interval_seconds":1,'
            b'"command":null,"refreshed_token":{"runtime_token":"srt_x","token_version":2}}',
            b'{"status":"ACTIVE","agentId":"a","nextDeadline":"2026-01-01T00:00:00Z","command":"pause"}',
            b'{"revoked":true,"reason":"r","shutdown_timeout_ms":5000}',
        ]
        values = [None, True, 1, -1.5, "x", [], {}, {"runtime_token": 5}, 1e309]
        keys = ["state", "command", "heartbeat_interval_seconds", "refreshed_token", "runtime_token", "revoked",
                "shutdown_timeout_ms", "reason", "status", "agentId"]
        for i in range(3000):
            raw = bytearray(rng.choice(seeds))
            if i % 2:
                for _ in range(rng.randint(1, 4)):
                    raw[rng.randrange(len(raw))] = rng.randrange(256)
            else:
                doc = json.loads(bytes(raw))
                doc[rng.choice(keys)] = rng.choice(values)
                raw = bytearray(json.dumps(doc).encode())
            for proto in ("beacon", "abs"):
                try:
                    decode_response(proto, bytes(raw))
                except TransportError:
                    pass


if __name__ == "__main__":
    unittest.main()
