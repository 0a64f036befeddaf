// Integration scenarios for the Go test driver (sdk/sdk_test.go), run against
// the real sentinel binary. The driver sets the environment, reads one JSON
// event per line on stdout and writes commands ("stop <code>") on stdin.
//
// SCENARIO: run (agent loop until told to stop), default_stop (no callbacks:
// the SDK stops the process), unreachable, exit (leaves through
// process.exit), drain (the event loop runs empty), abs (ABSClient.process).
import { createInterface } from "node:readline";

import { ABSClient, Beacon, RevokedError, SentinelStop, type BeaconOptions, type Logger } from "../src/index.js";

function emit(event: string, fields: Record<string, unknown> = {}): void {
  process.stdout.write(JSON.stringify({ event, ...fields }) + "\n");
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const env = (k: string, d = ""): string => process.env[k] ?? d;

const commands: string[][] = [];
const rl = createInterface({ input: process.stdin });
rl.on("line", (line) => commands.push(line.trim().split(/\s+/)));
rl.on("close", () => commands.push(["eof"]));

async function nextCommand(): Promise<string[]> {
  while (commands.length === 0) await sleep(10);
  return commands[0] ?? ["eof"];
}

async function abs(): Promise<void> {
  const client = new ABSClient({ endpoint: env("SENTINEL_URL"), apiKey: env("SENTINEL_TOKEN"), tenantId: env("TENANT") });
  const source = env("SENTINEL_AGENT_ID");
  const beat = { event_id: env("EVENT_ID"), tenant_id: env("TENANT"), event_type: "agent.heartbeat", source, payload: { status: "healthy" } };
  emit("abs", { call: 1, result: await client.process(beat) });
  emit("abs", { call: 2, result: await client.process(beat) });
  const shutdown = { event_id: env("EVENT_ID") + "-shutdown", event_type: "agent.shutdown", source, payload: { exit_code: 0 } };
  emit("abs", { call: 3, result: await client.process(shutdown) });
  rl.close();
}

async function main(): Promise<number> {
  const scenario = env("SCENARIO");
  if (scenario === "abs") {
    await abs();
    return 0;
  }
  let warnings = 0;
  const logger: Logger = {
    info: (m, f) => console.error("info:", m, JSON.stringify(f ?? {})),
    warn: (m, f) => {
      if (m.includes("unreachable")) warnings++; // the failure-streak warnings
      console.error("warn:", m, JSON.stringify(f ?? {}));
    },
    error: (m, f) => console.error("error:", m, JSON.stringify(f ?? {})),
  };
  const opts: BeaconOptions = {
    heartbeatIntervalMs: Number(env("INTERVAL_MS", "1000")),
    protocol: env("PROTOCOL") === "abs" ? "abs" : "beacon",
    finalHeartbeatTimeoutMs: Number(env("FINAL_TIMEOUT_MS", "5000")),
    logger,
    version: "sdk-it-typescript",
  };
  if (scenario !== "default_stop") {
    opts.onRevoke = (reason, ms) => emit("revoke_callback", { reason, timeout_ms: ms });
    opts.onTerminate = () => emit("terminate_callback");
    opts.onPause = () => emit("pause_callback");
    opts.onResume = () => emit("resume_callback");
  }
  const b = new Beacon(opts);
  if (scenario === "default_stop" && env("HANDLE_SIGTERM") === "1") {
    // An agent that ignores SIGTERM: the SDK's hard exit must end it.
    process.on("SIGTERM", () => emit("sigterm"));
  }
  await b.start();
  emit("started", { agent_id: b.agentId, platform: b.platform });

  if (scenario === "unreachable") {
    const deadline = Date.now() + Number(env("RUN_MS", "2000"));
    let steps = 0;
    while (Date.now() < deadline) {
      await b.checkpoint();
      steps++;
      await sleep(10);
    }
    const sent = await b.stop({ exitCode: 0 });
    emit("done", { steps, warnings, final_sent: sent });
    rl.close();
    return 0;
  }
  if (scenario === "drain") {
    // Nothing left to do: the event loop drains and "beforeExit" sends the
    // final heartbeat with process.exitCode.
    b.recordRequest(5);
    rl.close();
    process.stdin.destroy();
    return 5;
  }
  if (scenario === "exit") {
    b.recordRequest(5);
    // process.exit runs the exit hook: the final heartbeat goes out without stop().
    process.exit(4);
  }

  let step = 0;
  let lastVersion: number | undefined = -1;
  for (;;) {
    try {
      await b.checkpoint();
    } catch (e) {
      if (e instanceof RevokedError) emit("checkpoint_raised", { kind: "revoked", reason: e.reason, timeout_ms: e.shutdownTimeoutMs });
      else if (e instanceof SentinelStop) emit("checkpoint_raised", { kind: "terminated" });
      else throw e;
      break;
    }
    step++;
    b.recordRequest(10 + (step % 5), { error: step % 10 === 0 });
    emit("step", { n: step });
    if (b.tokenVersion !== lastVersion) {
      lastVersion = b.tokenVersion;
      emit("token", { version: lastVersion ?? null });
    }
    if (commands.length > 0) break;
    await sleep(20);
  }
  if (scenario === "default_stop") {
    // The SDK stops the process; keep working until it does.
    setInterval(() => {}, 20);
    return await new Promise<number>(() => {});
  }
  const cmd = await nextCommand();
  const code = cmd[0] === "stop" && cmd[1] !== undefined ? Number(cmd[1]) : 0;
  const sent = await b.stop({ exitCode: code });
  emit("stopped", { final_sent: sent, state: b.state });
  rl.close();
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    console.error(e);
    process.exitCode = 1;
  },
);
