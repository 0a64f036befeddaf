// The Beacon: registration, heartbeats, tokens and the kill switch in-process.
import { spawnSync } from "node:child_process";
import { unlinkSync } from "node:fs";

import { defaultId, detectPlatform, validId, type Platform } from "./platform.js";
import {
  StatusError,
  decodeResponse,
  heartbeatUrl,
  postJson,
  retryable,
  type HeartbeatResponse,
  type Protocol,
} from "./protocol.js";
import { readTokenFile, writeTokenFile } from "./tokenfile.js";

export const VERSION = "0.1.0";
/** Heartbeat interval asked for when none is given. */
export const DEFAULT_INTERVAL_MS = 60_000;
/** Time between SIGTERM and SIGKILL when sentinel names no timeout. */
export const DEFAULT_SHUTDOWN_TIMEOUT_MS = 10_000;
/** How long the final shutdown heartbeat is retried. */
export const DEFAULT_FINAL_HEARTBEAT_TIMEOUT_MS = 5_000;

const MIN_WAIT_MS = 10; // keeps a bad answer (interval 0, deadline passed) from busy-looping
const FINAL_RETRY_CAP_MS = 1_000;
// setTimeout fires at once for delays above 2^31-1 ms: an absurd interval or
// timeout from an answer must not turn into a busy loop or an instant kill.
const MAX_TIMER_MS = 2 ** 31 - 1;
const STATUSES = ["healthy", "degraded", "unhealthy"] as const;
export type Status = (typeof STATUSES)[number];

/** Where the SDK's messages go. The default writes warnings and errors to stderr. */
export interface Logger {
  debug?(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

const stderrLogger: Logger = {
  info() {},
  warn: (msg, fields) => console.error(`sentinel-beacon: ${msg}`, fields ? JSON.stringify(fields) : ""),
  error: (msg, fields) => console.error(`sentinel-beacon: ${msg}`, fields ? JSON.stringify(fields) : ""),
};

/** Thrown (rejected) by checkpoint() once sentinel told the agent to stop. */
export class SentinelStop extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SentinelStop";
  }
}

/**
 * The kill switch revoked the agent. shutdownTimeoutMs is undefined when
 * sentinel named no timeout; 0 means no grace at all.
 */
export class RevokedError extends SentinelStop {
  readonly reason: string;
  readonly shutdownTimeoutMs: number | undefined;
  constructor(reason: string, shutdownTimeoutMs: number | undefined) {
    super(reason ? `revoked by sentinel: ${reason}` : "revoked by sentinel");
    this.name = "RevokedError";
    this.reason = reason;
    this.shutdownTimeoutMs = shutdownTimeoutMs;
  }
}

/** Sentinel sent the terminate command. */
export class TerminatedError extends SentinelStop {
  constructor() {
    super("terminate command from sentinel");
    this.name = "TerminatedError";
  }
}

export interface BeaconOptions {
  /** Sentinel's base URL. Default: $SENTINEL_URL. */
  endpoint?: string;
  /** A tenant API key (registers the agent) or an srt_ runtime token. Default: $SENTINEL_TOKEN. */
  token?: string;
  /** Default: $SENTINEL_AGENT_ID, else derived from the platform. */
  agentId?: string;
  /** Interval asked for; sentinel may clamp it and its answer wins. Default 60 s. */
  heartbeatIntervalMs?: number;
  /** Where runtime tokens are kept (0600, replaced atomically). Default: $SENTINEL_TOKEN_FILE. */
  tokenFile?: string;
  protocol?: Protocol;
  /** Called on revocation; without it the process is stopped (SIGTERM, then SIGKILL). */
  onRevoke?: (reason: string, shutdownTimeoutMs: number | undefined) => void;
  /** Called on "terminate"; without it the process is stopped (SIGTERM, then SIGKILL). */
  onTerminate?: () => void;
  onPause?: () => void;
  onResume?: () => void;
  /** The agent's version, sent with each heartbeat. */
  version?: string;
  /** The agent's own thresholds in missed beats; sent only when set. */
  silentAfter?: number;
  zombieAfter?: number;
  /** Default: detectPlatform(). */
  platform?: Platform;
  /** SIGTERM-to-SIGKILL time when sentinel names none. Default 10 s. */
  shutdownTimeoutMs?: number;
  /** Default 5 s. */
  finalHeartbeatTimeoutMs?: number;
  /** Send the final heartbeat when the process exits (default true). */
  exitHook?: boolean;
  logger?: Logger;
}

type Body = Record<string, unknown>;

/**
 * Keeps one agent's lease with sentinel alive from inside the agent.
 *
 * `start()` registers the agent and sends heartbeats on an unref'd timer (it
 * never keeps the process alive, except while paused) at the interval
 * sentinel answers; the runtime token sentinel hands out is kept in
 * `tokenFile` and used instead of `token`. `checkpoint()`, awaited by the
 * agent between two steps, resolves at once while the agent may run, waits
 * while it is paused and rejects with RevokedError/TerminatedError once it
 * must stop. `stop()` (and process exit) sends the final `shutdown`
 * heartbeat.
 *
 * Callbacks run in the heartbeat's turn of the event loop and must return
 * quickly. Sentinel being unreachable never stops the agent: heartbeats are
 * retried with backoff and jitter, with one warning per failure streak.
 */
export class Beacon {
  readonly agentId: string;
  readonly endpoint: string;
  readonly protocol: Protocol;
  readonly platform: Platform;

  private readonly url: string;
  private readonly token: string;
  private readonly tokenFile: string | undefined;
  private readonly intervalAsked: number;
  private readonly opts: BeaconOptions;
  private readonly log: Logger;
  private readonly startedAt = Date.now();
  private readonly userAgent = `sentinel-beacon-node/${VERSION}`;

  private runtimeToken = "";
  private tokenVersionSeen: number | undefined;
  private accepted = false;
  private interval = 0; // seconds, as last answered
  private lastCommand = "";
  private pausedNow = false;
  private stopError: SentinelStop | undefined;
  private stateNow = "";
  private status: Status | "" = "";
  private requests = 0;
  private errors = 0;
  private avgLatency = 0;
  private hasMetrics = false;
  private finalSent = false;

  private started = false;
  private halted = false;
  private timer: NodeJS.Timeout | undefined;
  private inflight: Promise<void> | undefined;
  private waiters: Array<() => void> = [];
  private failures = 0;
  private failingSince = 0;
  private failureKind = "";
  private readonly onBeforeExit = (): void => {
    void this.stop({ exitCode: typeof process.exitCode === "number" ? process.exitCode : 0 });
  };
  private readonly onExit = (code: number): void => this.sendFinalSync(code);

  constructor(opts: BeaconOptions = {}) {
    this.opts = opts;
    this.log = opts.logger ?? stderrLogger;
    const endpoint = opts.endpoint || process.env["SENTINEL_URL"] || "";
    if (!endpoint) throw new Error("no sentinel endpoint (option endpoint or SENTINEL_URL)");
    this.protocol = opts.protocol ?? "beacon";
    if (this.protocol !== "beacon" && this.protocol !== "abs") {
      throw new Error(`unknown protocol ${JSON.stringify(this.protocol)} (want beacon or abs)`);
    }
    this.intervalAsked = opts.heartbeatIntervalMs ?? DEFAULT_INTERVAL_MS;
    if (!(this.intervalAsked > 0)) throw new Error("heartbeatIntervalMs must be a positive number");
    for (const [name, v] of [
      ["silentAfter", opts.silentAfter],
      ["zombieAfter", opts.zombieAfter],
    ] as const) {
      if (v !== undefined && (!Number.isInteger(v) || v < 1)) {
        throw new Error(`${name} must be a positive whole number of missed beats`);
      }
    }
    if (opts.silentAfter !== undefined && opts.zombieAfter !== undefined && opts.zombieAfter <= opts.silentAfter) {
      throw new Error("zombieAfter must be greater than silentAfter");
    }
    this.platform = opts.platform ?? detectPlatform();
    const agentId = opts.agentId || process.env["SENTINEL_AGENT_ID"] || defaultId(this.platform);
    if (!validId(agentId)) {
      throw new Error(
        `agent id ${JSON.stringify(agentId)} is invalid: it must match ^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$`,
      );
    }
    this.agentId = agentId;
    this.endpoint = endpoint;
    this.url = heartbeatUrl(endpoint, agentId, this.protocol);
    this.token = opts.token ?? process.env["SENTINEL_TOKEN"] ?? "";
    this.tokenFile = opts.tokenFile || process.env["SENTINEL_TOKEN_FILE"] || undefined;
    if (this.tokenFile) {
      try {
        this.runtimeToken = readTokenFile(this.tokenFile);
      } catch (e) {
        this.log.warn("Ignoring the token file", { path: this.tokenFile, err: String(e) });
      }
      if (this.runtimeToken) this.log.info("Using the runtime token from the token file", { path: this.tokenFile });
    }
    if (!this.token && !this.runtimeToken) {
      throw new Error("no credential: need a tenant API key or a runtime token (token, SENTINEL_TOKEN or tokenFile)");
    }
  }

  /**
   * Starts the heartbeats (once). Resolves when the first heartbeat was
   * answered (the agent is registered) or failed (the heartbeats go on in the
   * background); never rejects for an unreachable sentinel.
   */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    if (this.opts.exitHook ?? true) {
      process.on("beforeExit", this.onBeforeExit);
      process.on("exit", this.onExit);
    }
    await this.tick();
  }

  /**
   * Cooperates with the kill switch between two steps: resolves at once while
   * the agent may run, waits while it is paused, rejects with RevokedError or
   * TerminatedError once it must stop.
   */
  async checkpoint(): Promise<void> {
    for (;;) {
      if (this.stopError) throw this.stopError;
      if (!this.pausedNow) return;
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  /**
   * Stops the heartbeats and sends the final `shutdown` heartbeat with the
   * exit code, retried for finalHeartbeatTimeoutMs; sentinel then shows the
   * agent STOPPED and raises no liveness alert. A revoked agent sends none
   * (the kill switch owns its state). A checkpoint() held by a pause
   * resolves. Idempotent; resolves to whether sentinel acknowledged a final
   * heartbeat.
   */
  async stop(opts: { exitCode?: number } = {}): Promise<boolean> {
    this.halted = true;
    // No more commands arrive: a checkpoint() held by a pause would wait for
    // a resume that never comes.
    this.pausedNow = false;
    this.wake();
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    process.off("beforeExit", this.onBeforeExit);
    // A heartbeat under way finishes first: sent after the final one, it
    // would start the agent again. Each attempt has its own timeout.
    await this.inflight;
    const sent = await this.sendFinal(opts.exitCode ?? 0);
    process.off("exit", this.onExit);
    return sent;
  }

  /** Counts one unit of work: requests_handled, errors and the mean avg_latency_ms. */
  recordRequest(latencyMs: number, opts: { error?: boolean } = {}): void {
    if (!(latencyMs >= 0)) throw new Error("latencyMs must not be negative");
    this.requests++;
    if (opts.error) this.errors++;
    this.avgLatency += (latencyMs - this.avgLatency) / this.requests;
    this.hasMetrics = true;
  }

  /** Sets the reported metrics directly; omitted figures keep their values. */
  setMetrics(m: { requestsHandled?: number; errors?: number; avgLatencyMs?: number }): void {
    for (const [k, v] of Object.entries(m)) {
      if (v !== undefined && !(v >= 0)) throw new Error(`${k} must not be negative`);
    }
    if (m.requestsHandled !== undefined) this.requests = Math.trunc(m.requestsHandled);
    if (m.errors !== undefined) this.errors = Math.trunc(m.errors);
    if (m.avgLatencyMs !== undefined) this.avgLatency = m.avgLatencyMs;
    this.hasMetrics = true;
  }

  /** Reports the agent's health: healthy, degraded or unhealthy. */
  setStatus(status: Status): void {
    if (!STATUSES.includes(status)) throw new Error(`status ${JSON.stringify(status)} is not one of ${STATUSES.join(", ")}`);
    this.status = status;
  }

  /** Whether sentinel paused the agent (checkpoint() waits). */
  get paused(): boolean {
    return this.pausedNow;
  }

  /** The state sentinel last answered (ACTIVE, RECOVERED, STOPPED, REVOKED). */
  get state(): string {
    return this.stateNow;
  }

  /** The version of the runtime token last received. */
  get tokenVersion(): number | undefined {
    return this.tokenVersionSeen;
  }

  // ------------------------------------------------------------- the loop

  private tick(): Promise<void> {
    this.timer = undefined;
    if (this.halted) return Promise.resolve();
    this.inflight = this.beat();
    return this.inflight;
  }

  private async beat(): Promise<void> {
    const began = Date.now();
    let wait: number;
    try {
      const resp = await this.send(this.body(undefined));
      if (this.halted) {
        this.storeToken(resp);
        return;
      }
      if (this.failures > 0) {
        this.log.info("Sentinel reachable again", {
          failed_attempts: this.failures,
          failing_for_ms: Date.now() - this.failingSince,
        });
      }
      this.failures = 0;
      this.failureKind = "";
      if (this.handle(resp)) return;
      wait = this.nextWait(resp, began);
    } catch (e) {
      this.failures++;
      if (this.failures === 1) this.failingSince = began;
      const kind = e instanceof StatusError && !retryable(e) ? `http ${e.code}` : "unreachable";
      if (retryable(e)) {
        wait = backoff(this.failures, this.currentIntervalMs());
        if (kind !== this.failureKind) {
          this.log.warn(
            "Sentinel unreachable or failing; the agent keeps running and the beacon retries with backoff (logged once per failure streak)",
            { agent_id: this.agentId, err: String(e), retry_in_ms: Math.round(wait) },
          );
        }
      } else {
        wait = this.currentIntervalMs();
        if (kind !== this.failureKind) {
          this.log.error(
            "Sentinel refused the heartbeat; the agent keeps running, check the endpoint, the credential and the agent id (logged once per failure streak)",
            { agent_id: this.agentId, err: String(e) },
          );
        }
      }
      this.failureKind = kind;
    }
    if (this.halted) return;
    this.timer = setTimeout(() => void this.tick(), Math.min(wait, MAX_TIMER_MS));
    // The heartbeats never keep the process alive, except while paused: an
    // agent waiting in checkpoint() has nothing else holding the event loop.
    if (!this.pausedNow) this.timer.unref();
  }

  private body(status: string | undefined): Body {
    const body: Body = {
      status: status || this.status || (this.accepted ? "healthy" : "starting"),
      uptime_seconds: Math.floor((Date.now() - this.startedAt) / 1000),
      heartbeat_interval_seconds: this.intervalAsked / 1000,
      platform: this.platform,
    };
    if (this.opts.version) body["version"] = this.opts.version;
    if (this.opts.silentAfter !== undefined) body["silent_after"] = this.opts.silentAfter;
    if (this.opts.zombieAfter !== undefined) body["zombie_after"] = this.opts.zombieAfter;
    if (this.hasMetrics) {
      body["metrics"] = {
        requests_handled: this.requests,
        errors: this.errors,
        avg_latency_ms: Math.round(this.avgLatency * 1000) / 1000,
      };
    }
    return body;
  }

  /**
   * Posts one heartbeat with the current credential. A refused runtime token
   * (401/403) is dropped and the configured token tried once: the token file
   * may hold another agent's token or an expired one.
   */
  private async send(body: Body, timeoutMs = this.attemptTimeoutMs()): Promise<HeartbeatResponse> {
    const tok = this.runtimeToken || this.token;
    let raw: string;
    try {
      raw = await postJson(this.url, tok, body, timeoutMs, this.userAgent);
    } catch (e) {
      const refused = e instanceof StatusError && (e.code === 401 || e.code === 403);
      if (!(refused && this.runtimeToken === tok && this.token && this.token !== tok)) throw e;
      this.log.warn("Sentinel refused the runtime token; falling back to the configured token", { err: String(e) });
      this.forgetRuntimeToken(tok);
      raw = await postJson(this.url, this.token, body, timeoutMs, this.userAgent);
    }
    const resp = decodeResponse(this.protocol, raw);
    this.accepted = true;
    if (resp.state) this.stateNow = resp.state;
    return resp;
  }

  private forgetRuntimeToken(tok: string): void {
    if (this.runtimeToken === tok) this.runtimeToken = "";
    if (!this.tokenFile) return;
    try {
      if (readTokenFile(this.tokenFile) !== tok) return; // already replaced
      unlinkSync(this.tokenFile);
      this.log.info("Removed the refused runtime token from the token file", { path: this.tokenFile });
    } catch (e) {
      this.log.warn("Cannot remove the refused runtime token from the token file", {
        path: this.tokenFile,
        err: String(e),
      });
    }
  }

  /** Applies an answer; true when the agent must stop. */
  private handle(resp: HeartbeatResponse): boolean {
    if (resp.revoked) {
      this.stateNow = "REVOKED";
      this.setStop(new RevokedError(resp.reason, resp.shutdownTimeoutMs));
      this.log.error("Agent revoked by the kill switch", {
        agent_id: this.agentId,
        reason: resp.reason,
        shutdown_timeout_ms: resp.shutdownTimeoutMs,
      });
      if (this.opts.onRevoke) this.callback(() => this.opts.onRevoke?.(resp.reason, resp.shutdownTimeoutMs));
      // No final heartbeat: sentinel would answer "revoked" again.
      else this.selfStop(resp.shutdownTimeoutMs, false);
      return true;
    }
    this.storeToken(resp);
    if (resp.registered) this.log.info("Registered with sentinel", { agent_id: this.agentId, state: resp.state });
    if (resp.state === "RECOVERED") this.log.info("Sentinel reports the agent recovered");
    this.interval = resp.heartbeatIntervalSeconds;
    const last = this.lastCommand;
    this.lastCommand = resp.command;
    const cmd = resp.command;
    // A command is delivered at least once: a repeat in the next answer is
    // the same command, not a new one.
    if (!cmd || cmd === last) return false;
    if (cmd === "terminate") {
      this.setStop(new TerminatedError());
      this.log.warn("Terminate command from sentinel", { agent_id: this.agentId });
      if (this.opts.onTerminate) this.callback(() => this.opts.onTerminate?.());
      else this.selfStop(undefined, true);
      return true;
    }
    if (cmd === "pause" || cmd === "resume") {
      this.log.info("Command from sentinel", { agent_id: this.agentId, command: cmd });
      this.pausedNow = cmd === "pause";
      this.wake();
      const cb = cmd === "pause" ? this.opts.onPause : this.opts.onResume;
      if (cb) this.callback(cb);
      return false;
    }
    this.log.warn("Ignoring an unknown command from sentinel", { command: cmd });
    return false;
  }

  private setStop(err: SentinelStop): void {
    this.stopError = err;
    this.wake();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const resolve of w) resolve();
  }

  private callback(cb: () => void): void {
    try {
      cb();
    } catch (e) {
      this.log.error("A kill-switch callback threw", { err: String(e) });
    }
  }

  /**
   * Stops the process as the beacon wrapper stops its child: SIGTERM, then
   * SIGKILL once the timeout has passed. A terminate command first sends the
   * final heartbeat with 143 (128 + SIGTERM), since a process killed by
   * SIGTERM runs no exit handler.
   */
  private selfStop(timeoutMs: number | undefined, final: boolean): void {
    const ms = timeoutMs === undefined ? (this.opts.shutdownTimeoutMs ?? DEFAULT_SHUTDOWN_TIMEOUT_MS) : Math.max(timeoutMs, 0);
    const kill = (): void => {
      this.log.error("Stopping the process: SIGTERM now, SIGKILL after the shutdown timeout", { shutdown_timeout_ms: ms });
      setTimeout(() => process.kill(process.pid, "SIGKILL"), Math.min(ms, MAX_TIMER_MS)).unref();
      process.kill(process.pid, "SIGTERM");
    };
    if (final) void this.sendFinal(143).finally(kill);
    else kill();
  }

  private finalBody(exitCode: number): Body | undefined {
    if (this.finalSent || !this.started || this.stopError instanceof RevokedError) return undefined;
    this.finalSent = true;
    const body = this.body("shutdown");
    body["exit_code"] = Math.trunc(exitCode);
    return body;
  }

  private async sendFinal(exitCode: number): Promise<boolean> {
    const body = this.finalBody(exitCode);
    if (!body) return false;
    const timeout = this.opts.finalHeartbeatTimeoutMs ?? DEFAULT_FINAL_HEARTBEAT_TIMEOUT_MS;
    const deadline = Date.now() + timeout;
    for (let n = 1; ; n++) {
      try {
        const resp = await this.send(body, Math.max(Math.min(this.attemptTimeoutMs(), deadline - Date.now()), 50));
        this.storeToken(resp);
        this.log.info("Sent the final shutdown heartbeat", { exit_code: exitCode, state: resp.state, attempts: n });
        return true;
      } catch (e) {
        const wait = backoff(n, FINAL_RETRY_CAP_MS);
        if (!retryable(e) || Date.now() + wait > deadline) {
          this.log.warn("Final shutdown heartbeat failed", { attempts: n, err: String(e) });
          return false;
        }
        await new Promise((r) => setTimeout(r, wait));
      }
    }
  }

  /**
   * The final heartbeat from an "exit" handler (process.exit(), an uncaught
   * exception), where nothing asynchronous runs any more: a short-lived node
   * process sends it while this one waits. The credential goes through its
   * stdin, never its arguments or environment.
   */
  private sendFinalSync(exitCode: number): void {
    const body = this.finalBody(exitCode);
    if (!body) return;
    const timeoutMs = this.opts.finalHeartbeatTimeoutMs ?? DEFAULT_FINAL_HEARTBEAT_TIMEOUT_MS;
    const headers: Record<string, string> = { "Content-Type": "application/json", "User-Agent": this.userAgent };
    const tok = this.runtimeToken || this.token;
    if (tok) headers["Authorization"] = `Bearer ${tok}`;
    const input = JSON.stringify({ url: this.url, headers, body: JSON.stringify(body), timeoutMs });
    const r = spawnSync(process.execPath, ["--input-type=module", "-e", FINAL_SCRIPT], {
      input,
      timeout: timeoutMs + 2_000,
      stdio: ["pipe", "ignore", "ignore"],
    });
    if (r.status !== 0) this.log.warn("Final shutdown heartbeat at exit failed", { exit_code: exitCode });
  }

  private storeToken(resp: HeartbeatResponse): void {
    const t = resp.runtimeToken;
    if (!t) return;
    const same = this.runtimeToken === t.runtime_token;
    this.runtimeToken = t.runtime_token;
    if (t.token_version !== undefined) this.tokenVersionSeen = t.token_version;
    if (same) return;
    const fields = { token_version: t.token_version, expires_at: t.expires_at };
    if (!this.tokenFile) {
      this.log.info("Received a runtime token; keeping it in memory only (no tokenFile)", fields);
      return;
    }
    try {
      writeTokenFile(this.tokenFile, t.runtime_token);
    } catch (e) {
      this.log.warn("Cannot store the runtime token; using it from memory", { ...fields, path: this.tokenFile, err: String(e) });
      return;
    }
    this.log.info("Stored the runtime token", { ...fields, path: this.tokenFile });
  }

  private currentIntervalMs(): number {
    return this.interval > 0 ? this.interval * 1000 : this.intervalAsked;
  }

  private attemptTimeoutMs(): number {
    return Math.min(Math.max(this.currentIntervalMs(), 1_000), 10_000);
  }

  private nextWait(resp: HeartbeatResponse, began: number): number {
    let wait: number;
    if (resp.heartbeatIntervalSeconds > 0) {
      wait = resp.heartbeatIntervalSeconds * 1000 - (Date.now() - began);
    } else {
      const at = Date.parse(resp.nextHeartbeatAt);
      wait = !Number.isNaN(at) && at > Date.now() ? at - Date.now() : this.intervalAsked - (Date.now() - began);
    }
    return Math.max(wait, MIN_WAIT_MS);
  }
}

/** The final heartbeat's sender at exit: retries like sendFinal until its deadline. */
const FINAL_SCRIPT = `
let s = "";
for await (const c of process.stdin) s += c;
const a = JSON.parse(s);
const end = Date.now() + a.timeoutMs;
for (let n = 1; ; n++) {
  try {
    const r = await fetch(a.url, { method: "POST", headers: a.headers, body: a.body, redirect: "manual",
      signal: AbortSignal.timeout(Math.max(50, end - Date.now())) });
    if (r.ok) process.exit(0);
    if (r.status < 500 && r.status !== 408 && r.status !== 429) process.exit(2);
  } catch {}
  const d = Math.min(250 * 2 ** (n - 1), 1000);
  if (Date.now() + d > end) process.exit(1);
  await new Promise((r) => setTimeout(r, d / 2 + Math.random() * d / 2));
}
`;

/**
 * The wait before retry n (1-based): exponential from min(1 s, interval/4),
 * capped at the interval, with equal jitter so that a fleet does not retry
 * in lockstep.
 */
export function backoff(n: number, intervalMs: number): number {
  const base = Math.min(1_000, intervalMs / 4);
  const d = n - 1 >= 32 ? intervalMs : Math.min(base * 2 ** (n - 1), intervalMs);
  if (d <= 0) return MIN_WAIT_MS;
  return Math.max(d / 2 + Math.random() * (d / 2), MIN_WAIT_MS);
}
