// A plain agent loop that cooperates with sentinel's kill switch.
//
//   SENTINEL_URL=http://localhost:9464 SENTINEL_TOKEN=<tenant API key> \
//   SENTINEL_AGENT_ID=agent-loop node dist/examples/agent-loop.js
//
// checkpoint() between two steps resolves at once while the agent may run,
// waits while an operator has paused it, and rejects once it is revoked or
// terminated, so the agent stops between steps, never in the middle of one.
// In your code: import { Beacon, … } from "@agentsentinel/beacon";
import { Beacon, RevokedError, SentinelStop } from "../src/index.js";

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function runStep(n: number): Promise<void> {
  void n;
  await sleep(500); // stands for a model call, a tool call, …
}

async function main(): Promise<number> {
  // Endpoint, token and agent id come from SENTINEL_URL, SENTINEL_TOKEN and
  // SENTINEL_AGENT_ID; the runtime token is kept in agent-loop.token.
  const beacon = new Beacon({
    heartbeatIntervalMs: 10_000,
    tokenFile: "agent-loop.token",
    onRevoke: (reason, ms) => console.warn(`revoked: ${reason}; ${ms ?? "default"} ms to stop`),
  });
  await beacon.start();
  for (let n = 1; ; n++) {
    try {
      await beacon.checkpoint();
    } catch (e) {
      if (!(e instanceof SentinelStop)) throw e;
      console.warn(`stopping: ${e.message}`);
      await beacon.stop({ exitCode: e instanceof RevokedError ? 3 : 0 });
      return e instanceof RevokedError ? 3 : 0;
    }
    const started = Date.now();
    try {
      await runStep(n);
      beacon.recordRequest(Date.now() - started);
    } catch {
      beacon.recordRequest(Date.now() - started, { error: true });
    }
  }
}

process.exitCode = await main();
