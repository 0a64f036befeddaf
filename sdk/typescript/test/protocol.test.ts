import assert from "node:assert/strict";
import { test } from "node:test";

import { StatusError, TransportError, retryable } from "../src/index.js";
import { decodeResponse, heartbeatUrl } from "../src/protocol.js";

test("heartbeat URLs", () => {
  assert.equal(heartbeatUrl("http://s:9464/", "a:b@c", "beacon"), "http://s:9464/api/v1/installations/a%3Ab%40c/heartbeat");
  assert.equal(heartbeatUrl("https://s/base", "a-1", "abs"), "https://s/base/v1/heartbeat?agentId=a-1");
  for (const bad of ["s9464", "ftp://s", ""]) assert.throws(() => heartbeatUrl(bad, "a", "beacon"));
});

test("retryable", () => {
  const cases: Array<[number, boolean]> = [
    [400, false], [401, false], [403, false], [404, false], [408, true], [413, false],
    [422, false], [429, true], [500, true], [502, true], [503, true],
  ];
  for (const [code, want] of cases) assert.equal(retryable(new StatusError(code, "")), want, String(code));
  assert.equal(retryable(new TransportError("refused")), true);
});

test("decoding answers", () => {
  const r = decodeResponse(
    "beacon",
    JSON.stringify({
      state: "ACTIVE",
      heartbeat_interval_seconds: 30,
      command: "pause",
      refreshed_token: { runtime_token: "srt_2", token_version: 2 },
      runtime_token: { runtime_token: "srt_1", token_version: 1 },
    }),
  );
  assert.equal(r.state, "ACTIVE");
  assert.equal(r.heartbeatIntervalSeconds, 30);
  assert.equal(r.command, "pause");
  assert.equal(r.runtimeToken?.runtime_token, "srt_2", "a refresh wins");
  assert.equal(decodeResponse("beacon", '{"revoked":true}').shutdownTimeoutMs, undefined, "no timeout named");
  const abs = decodeResponse("abs", '{"status":"REVOKED","agentId":"a","shutdown_timeout_ms":0}');
  assert.equal(abs.revoked, true);
  assert.equal(abs.shutdownTimeoutMs, 0);
  assert.equal(decodeResponse("beacon", '{"heartbeat_interval_seconds":1e400,"shutdown_timeout_ms":1e400}').heartbeatIntervalSeconds, 0);
});

// A seeded fuzz loop: whatever an endpoint answers, decoding gives an answer
// with well-typed fields or a TransportError, nothing else.
test("decoding never fails otherwise", () => {
  let seed = 1;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  const seeds = [
    '{"installation_id":"a","lease_renewed":true,"state":"ACTIVE","heartbeat_interval_seconds":1,"command":null,"refreshed_token":{"runtime_token":"srt_x","token_version":2}}',
    '{"status":"ACTIVE","agentId":"a","nextDeadline":"2026-01-01T00:00:00Z","command":"pause"}',
    '{"revoked":true,"reason":"r","shutdown_timeout_ms":5000}',
  ];
  const values: unknown[] = [null, true, 1, -1.5, "x", [], {}, { runtime_token: 5 }];
  const keys = ["state", "command", "heartbeat_interval_seconds", "refreshed_token", "runtime_token", "revoked", "shutdown_timeout_ms", "reason", "status", "agentId"];
  for (let i = 0; i < 3000; i++) {
    let raw = seeds[rand(seeds.length)] ?? "";
    if (i % 2) {
      const chars = [...raw];
      for (let k = 0; k <= rand(4); k++) chars[rand(chars.length)] = String.fromCharCode(rand(128));
      raw = chars.join("");
    } else {
      const doc = JSON.parse(raw) as Record<string, unknown>;
      doc[keys[rand(keys.length)] ?? "state"] = values[rand(values.length)];
      raw = JSON.stringify(doc);
    }
    for (const proto of ["beacon", "abs"] as const) {
      try {
        const r = decodeResponse(proto, raw);
        assert.equal(typeof r.state, "string");
        assert.equal(typeof r.command, "string");
        assert.ok(Number.isFinite(r.heartbeatIntervalSeconds));
        assert.ok(r.shutdownTimeoutMs === undefined || Number.isFinite(r.shutdownTimeoutMs));
      } catch (e) {
        assert.ok(e instanceof TransportError, String(e));
      }
    }
  }
});
