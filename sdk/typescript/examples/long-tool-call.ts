// A long tool call that sentinel can still stop in time.
//
//   SENTINEL_URL=http://localhost:9464 SENTINEL_TOKEN=<tenant API key> \
//   SENTINEL_AGENT_ID=long-tool node dist/examples/long-tool-call.js
//
// checkpoint() only runs between steps; a tool call of several minutes would
// keep a revoked agent running until it returns. The revoke and terminate
// callbacks run as soon as sentinel answers: they abort the tool call (any
// API that takes an AbortSignal: fetch, child_process, timers/promises),
// within the revocation's shutdown_timeout_ms.
import { setTimeout as delay } from "node:timers/promises";

// In your code: import { Beacon, SentinelStop } from "@agentsentinel/beacon";
import { Beacon, SentinelStop } from "../src/index.js";

let current: AbortController | undefined;

async function toolCall(name: string, signal: AbortSignal): Promise<string> {
  await delay(120_000, undefined, { signal }); // stands for minutes of work
  return `${name}: done`;
}

async function main(): Promise<number> {
  const beacon = new Beacon({
    heartbeatIntervalMs: 5_000,
    onRevoke: (reason) => current?.abort(new Error(`revoked: ${reason}`)),
    onTerminate: () => current?.abort(new Error("terminate command")),
  });
  await beacon.start();
  try {
    for (const task of ["crawl", "summarise", "report"]) {
      await beacon.checkpoint(); // waits while paused, rejects once stopped
      current = new AbortController();
      try {
        console.log(await toolCall(task, current.signal));
      } catch (e) {
        if (!current.signal.aborted) throw e;
        console.warn(`tool call ${task} aborted: ${String(current.signal.reason)}`);
      }
    }
    await beacon.checkpoint();
    await beacon.stop({ exitCode: 0 });
    return 0;
  } catch (e) {
    if (!(e instanceof SentinelStop)) throw e;
    await beacon.stop({ exitCode: 0 }); // sends the final heartbeat unless revoked
    return 3;
  }
}

process.exitCode = await main();
