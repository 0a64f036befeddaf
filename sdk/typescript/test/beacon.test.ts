import assert from "node:assert/strict";
import { mkdtempSync, statSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, test } from "node:test";

import { Beacon, RevokedError, TerminatedError, backoff, readTokenFile, type BeaconOptions, type Logger } from "../src/index.js";
import { FakeSentinel, ok, type Responder } from "./fake.js";

const PLATFORM = { type: "bare_metal" as const, hostname: "h", os: "linux", pid: 1 };
const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

const quiet: Logger = { info() {}, warn() {}, error() {} };

async function fake(responder: Responder): Promise<FakeSentinel> {
  const f = await new FakeSentinel(responder).listen();
  cleanups.push(() => f.close());
  return f;
}

function beacon(f: FakeSentinel, opts: BeaconOptions = {}): Beacon {
  const b = new Beacon({
    endpoint: f.url,
    token: "tenant-key",
    agentId: "agent-1",
    heartbeatIntervalMs: 50,
    platform: PLATFORM,
    exitHook: false,
    finalHeartbeatTimeoutMs: 5000, // retries take up to 0.75 s; room for a loaded machine
    logger: quiet,
    ...opts,
  });
  cleanups.push(() => b.stop());
  return b;
}

test("registration, the token file and refresh", async () => {
  const path = join(mkdtempSync(join(tmpdir(), "beacon-")), "token");
  let n = 0;
  const f = await fake(() => {
    n++;
    if (n === 1) return [200, ok({ registered: true, runtime_token: { runtime_token: "srt_v1", token_version: 1 } })];
    if (n === 3) return [200, ok({ refreshed_token: { runtime_token: "srt_v2", token_version: 2 } })];
    return [200, ok()];
  });
  const b = beacon(f, { tokenFile: path, version: "1.2.3", silentAfter: 3, zombieAfter: 9 });
  await b.start();
  assert.equal(readTokenFile(path), "srt_v1", "start resolves once registered");
  const reqs = await f.waitFor((r) => r.length >= 5);
  assert.equal(reqs[0]?.path, "/api/v1/installations/agent-1/heartbeat");
  assert.deepEqual(reqs.slice(0, 5).map((r) => r.auth), [
    "Bearer tenant-key",
    "Bearer srt_v1",
    "Bearer srt_v1",
    "Bearer srt_v2",
    "Bearer srt_v2",
  ]);
  const first = reqs[0]?.body ?? {};
  assert.equal(first["status"], "starting");
  assert.deepEqual(first["platform"], PLATFORM);
  assert.equal(first["version"], "1.2.3");
  assert.equal(first["silent_after"], 3);
  assert.equal(first["zombie_after"], 9);
  assert.equal(first["heartbeat_interval_seconds"], 0.05);
  assert.equal(first["metrics"], undefined);
  assert.equal(reqs[1]?.body["status"], "healthy");
  assert.equal(readTokenFile(path), "srt_v2");
  assert.equal(statSync(path).mode & 0o777, 0o600);
  assert.equal(b.tokenVersion, 2);
});

test("thresholds are sent only when set", async () => {
  const f = await fake(() => [200, ok()]);
  await beacon(f).start();
  const body = f.requests[0]?.body ?? {};
  assert.ok(!("silent_after" in body) && !("zombie_after" in body));
});

test("a refused runtime token from the token file is forgotten", async () => {
  const path = join(mkdtempSync(join(tmpdir(), "beacon-")), "token");
  writeFileSync(path, "srt_stale\n");
  const f = await fake((r) => (r.auth === "Bearer srt_stale" ? [401, { error: "invalid token" }] : [200, ok()]));
  await beacon(f, { tokenFile: path }).start();
  const reqs = await f.waitFor((r) => r.length >= 3);
  assert.deepEqual(reqs.slice(0, 3).map((r) => r.auth), ["Bearer srt_stale", "Bearer tenant-key", "Bearer tenant-key"]);
  assert.equal(existsSync(path), false);
});

test("metrics and status", async () => {
  const f = await fake(() => [200, ok()]);
  const b = beacon(f);
  b.recordRequest(100);
  b.recordRequest(200, { error: true });
  b.setStatus("degraded");
  await b.start();
  assert.deepEqual(f.requests[0]?.body["metrics"], { requests_handled: 2, errors: 1, avg_latency_ms: 150 });
  assert.equal(f.requests[0]?.body["status"], "degraded");
  b.setMetrics({ requestsHandled: 10, errors: 0, avgLatencyMs: 5 });
  const reqs = await f.waitFor((r) => (r.at(-1)?.body["metrics"] as { requests_handled: number }).requests_handled === 10);
  assert.deepEqual(reqs.at(-1)?.body["metrics"], { requests_handled: 10, errors: 0, avg_latency_ms: 5 });
  assert.throws(() => b.setStatus("shutdown" as "healthy"));
  assert.throws(() => b.recordRequest(-1));
});

test("a revocation reaches checkpoint and the callback", async () => {
  let revoked = false;
  const got: Array<[string, number | undefined]> = [];
  const f = await fake(() =>
    revoked
      ? [200, { installation_id: "a", lease_renewed: false, revoked: true, reason: "rogue", shutdown_timeout_ms: 1234 }]
      : [200, ok()],
  );
  const b = beacon(f, { onRevoke: (reason, ms) => got.push([reason, ms]) });
  await b.start();
  await b.checkpoint();
  revoked = true;
  let err: unknown;
  for (;;) {
    try {
      await b.checkpoint();
    } catch (e) {
      err = e;
      break;
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  assert.ok(err instanceof RevokedError);
  assert.equal(err.reason, "rogue");
  assert.equal(err.shutdownTimeoutMs, 1234);
  assert.deepEqual(got, [["rogue", 1234]]);
  assert.equal(b.state, "REVOKED");
  const n = f.requests.length;
  assert.equal(await b.stop({ exitCode: 0 }), false, "a revoked agent sends no final heartbeat");
  assert.equal(f.requests.length, n);
});

test("pause blocks checkpoint until resume", async () => {
  let command: string | null = null;
  const events: string[] = [];
  const f = await fake(() => [200, ok({ command })]);
  const b = beacon(f, { onPause: () => events.push("pause"), onResume: () => events.push("resume") });
  await b.start();
  command = "pause";
  await f.waitFor(() => b.paused);
  let done = false;
  const cp = b.checkpoint().then(() => (done = true));
  const n = f.requests.length;
  await f.waitFor((r) => r.length >= n + 3); // several answers repeat "pause"
  assert.equal(done, false, "checkpoint resolved while paused");
  command = "resume";
  await cp;
  assert.deepEqual(events, ["pause", "resume"], "repeated commands are passed on once");
});

test("stop releases a checkpoint held by a pause", async () => {
  const f = await fake(() => [200, ok({ command: "pause" })]);
  const b = beacon(f);
  await b.start();
  assert.equal(b.paused, true);
  const cp = b.checkpoint();
  await b.stop();
  await cp;
});

test("terminate, then the final heartbeat with the exit code", async () => {
  let command: string | null = null;
  let terminated = false;
  const f = await fake((r) =>
    r.body["status"] === "shutdown" ? [200, { installation_id: "a", lease_renewed: false, state: "STOPPED" }] : [200, ok({ command })],
  );
  const b = beacon(f, { onTerminate: () => (terminated = true) });
  await b.start();
  command = "terminate";
  await f.waitFor(() => terminated);
  await assert.rejects(b.checkpoint(), TerminatedError);
  assert.equal(await b.stop({ exitCode: 7 }), true);
  assert.equal(await b.stop({ exitCode: 7 }), false, "sent once");
  const last = f.requests.at(-1)?.body ?? {};
  assert.equal(last["status"], "shutdown");
  assert.equal(last["exit_code"], 7);
  assert.equal(b.state, "STOPPED");
});

test("an unreachable sentinel warns once per failure streak and never stops the agent", async () => {
  let fail = true;
  const f = await fake(() => (fail ? [503, { error: "down" }] : [200, ok()]));
  const logs: Array<[string, string]> = [];
  const logger: Logger = {
    info: (m) => logs.push(["info", m]),
    warn: (m, fields) => logs.push(["warn", m + JSON.stringify(fields)]),
    error: (m) => logs.push(["error", m]),
  };
  const b = beacon(f, { logger });
  await b.start();
  await f.waitFor((r) => r.length >= 4);
  await b.checkpoint();
  fail = false;
  const n = f.requests.length;
  await f.waitFor((r) => r.length >= n + 2);
  const warns = logs.filter(([lvl]) => lvl === "warn");
  assert.equal(warns.length, 1, JSON.stringify(logs));
  assert.match(warns[0]?.[1] ?? "", /503/);
  assert.ok(logs.some(([, m]) => m.includes("reachable again")));
  assert.ok(!JSON.stringify(logs).includes("tenant-key"), "no credential in a log line");
});

test("the final heartbeat is retried", async () => {
  let finals = 0;
  const f = await fake((r) => {
    if (r.body["status"] === "shutdown" && ++finals < 3) return [503, { error: "busy" }];
    return [200, ok()];
  });
  const b = beacon(f);
  await b.start();
  assert.equal(await b.stop(), true);
  assert.equal(finals, 3);
});

test("the ABS protocol", async () => {
  const f = await fake(() => [200, { status: "ACTIVE", agentId: "agent-1", nextDeadline: "2000-01-01T00:00:00Z", command: "pause" }]);
  let paused = false;
  await beacon(f, { protocol: "abs", onPause: () => (paused = true) }).start();
  assert.equal(f.requests[0]?.path, "/v1/heartbeat?agentId=agent-1");
  assert.equal(paused, true);
});

test("invalid configuration", () => {
  const base = { endpoint: "http://x", token: "k", agentId: "a", platform: PLATFORM, exitHook: false };
  const cases: Array<[Partial<BeaconOptions>, RegExp]> = [
    [{ endpoint: "ftp://x" }, /scheme/],
    [{ agentId: "-bad" }, /agent id/],
    [{ token: "" }, /no credential/],
    [{ protocol: "grpc" as "abs" }, /protocol/],
    [{ heartbeatIntervalMs: 0 }, /heartbeatIntervalMs/],
    [{ silentAfter: 5, zombieAfter: 5 }, /zombieAfter/],
    [{ silentAfter: 1.5 }, /silentAfter/],
  ];
  const saved = { ...process.env };
  delete process.env["SENTINEL_TOKEN"];
  delete process.env["SENTINEL_TOKEN_FILE"];
  try {
    for (const [opts, want] of cases) assert.throws(() => new Beacon({ ...base, ...opts }), want);
  } finally {
    Object.assign(process.env, saved);
  }
});

test("backoff stays within its jitter band", () => {
  for (let n = 1; n < 40; n++) {
    const cap = Math.min(1000 * 2 ** (n - 1), 8000);
    const d = backoff(n, 8000);
    assert.ok(d >= cap / 2 && d <= cap, `${n}: ${d}`);
  }
});
