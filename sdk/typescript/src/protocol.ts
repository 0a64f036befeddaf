// One request to sentinel over HTTP, with the heartbeat answer normalised.

export type Protocol = "beacon" | "abs";

/** A non-2xx answer from sentinel. */
export class StatusError extends Error {
  readonly code: number;
  readonly detail: string;
  constructor(code: number, detail: string) {
    super(detail ? `sentinel answered ${code}: ${detail}` : `sentinel answered ${code}`);
    this.name = "StatusError";
    this.code = code;
    this.detail = detail;
  }
}

/** Sentinel could not be reached (refused, reset, timed out, bad answer). */
export class TransportError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TransportError";
  }
}

/**
 * Whether a failed request is worth retrying soon: transport failures, 408,
 * 429 and 5xx are; other 4xx would be answered the same until someone fixes
 * the configuration.
 */
export function retryable(err: unknown): boolean {
  if (err instanceof StatusError) return err.code >= 500 || err.code === 408 || err.code === 429;
  return true;
}

/** A runtime token as sentinel hands it out. */
export interface RuntimeToken {
  runtime_token: string;
  expires_at?: string;
  token_version?: number;
}

/**
 * A heartbeat answer of either protocol in the Beacon protocol's terms: an
 * ABS answer's agentId is installationId, its status is state.
 */
export interface HeartbeatResponse {
  installationId: string;
  state: string;
  heartbeatIntervalSeconds: number;
  nextHeartbeatAt: string;
  command: string;
  /** From a registration or a refresh (a refresh wins). */
  runtimeToken: RuntimeToken | undefined;
  registered: boolean;
  revoked: boolean;
  reason: string;
  /** undefined when sentinel names no timeout; 0 means no grace at all. */
  shutdownTimeoutMs: number | undefined;
}

/** The heartbeat URL; throws for a bad endpoint or protocol. */
export function heartbeatUrl(endpoint: string, agentId: string, protocol: Protocol): string {
  const base = endpoint.replace(/\/+$/, "");
  let u: URL;
  try {
    u = new URL(base);
  } catch {
    throw new Error(`endpoint ${JSON.stringify(endpoint)} is not a URL`);
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") {
    throw new Error(`endpoint ${JSON.stringify(endpoint)}: scheme must be http or https`);
  }
  if (protocol === "beacon") return `${base}/api/v1/installations/${encodeURIComponent(agentId)}/heartbeat`;
  if (protocol === "abs") return `${base}/v1/heartbeat?agentId=${encodeURIComponent(agentId)}`;
  throw new Error(`unknown protocol ${JSON.stringify(protocol)} (want beacon or abs)`);
}

type Doc = Record<string, unknown>;

const str = (v: unknown): string => (typeof v === "string" ? v : "");
/** A finite JSON number (1e400 parses as Infinity), else undefined. */
const num = (v: unknown): number | undefined => (typeof v === "number" && Number.isFinite(v) ? v : undefined);

function token(v: unknown): RuntimeToken | undefined {
  if (typeof v !== "object" || v === null) return undefined;
  const t = v as Doc;
  if (typeof t["runtime_token"] !== "string" || t["runtime_token"] === "") return undefined;
  const out: RuntimeToken = { runtime_token: t["runtime_token"] };
  if (typeof t["expires_at"] === "string") out.expires_at = t["expires_at"];
  const version = num(t["token_version"]);
  if (version !== undefined) out.token_version = version;
  return out;
}

/** Decodes an answer body; throws TransportError when it is not a JSON object. */
export function decodeResponse(protocol: Protocol, raw: string): HeartbeatResponse {
  let doc: unknown;
  try {
    doc = JSON.parse(raw);
  } catch (e) {
    throw new TransportError(`decode heartbeat answer: ${(e as Error).message}`);
  }
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) {
    throw new TransportError("decode heartbeat answer: not a JSON object");
  }
  const d = doc as Doc;
  const t = num(d["shutdown_timeout_ms"]);
  const timeout = t === undefined ? undefined : Math.trunc(t);
  if (protocol === "abs") {
    return {
      installationId: str(d["agentId"]),
      state: str(d["status"]),
      heartbeatIntervalSeconds: 0,
      nextHeartbeatAt: str(d["nextDeadline"]),
      command: str(d["command"]),
      runtimeToken: undefined,
      registered: false,
      revoked: d["revoked"] === true || d["status"] === "REVOKED",
      reason: str(d["reason"]),
      shutdownTimeoutMs: timeout,
    };
  }
  const interval = num(d["heartbeat_interval_seconds"]);
  return {
    installationId: str(d["installation_id"]),
    state: str(d["state"]),
    heartbeatIntervalSeconds: interval !== undefined && interval > 0 ? interval : 0,
    nextHeartbeatAt: str(d["next_heartbeat_at"]),
    command: str(d["command"]),
    runtimeToken: token(d["refreshed_token"]) ?? token(d["runtime_token"]),
    registered: d["registered"] === true,
    revoked: d["revoked"] === true,
    reason: str(d["reason"]),
    shutdownTimeoutMs: timeout,
  };
}

const MAX_RESPONSE_CHARS = 1 << 20;

function errorMessage(raw: string): string {
  try {
    const doc = JSON.parse(raw) as unknown;
    if (typeof doc === "object" && doc !== null && typeof (doc as Doc)["error"] === "string") {
      return (doc as Doc)["error"] as string;
    }
  } catch {
    // not JSON
  }
  const s = raw.trim();
  return s.length > 200 ? s.slice(0, 200) + "…" : s;
}

/**
 * POSTs body as JSON with the bearer credential and returns the 2xx answer's
 * text. Throws StatusError for any other status (redirects are not followed:
 * they would resend the credential elsewhere), TransportError otherwise.
 * Neither error ever carries the credential.
 */
export async function postJson(
  url: string,
  credential: string,
  body: unknown,
  timeoutMs: number,
  userAgent: string,
): Promise<string> {
  const headers: Record<string, string> = {
    "Content-Type": "application/json",
    Accept: "application/json",
    "User-Agent": userAgent,
  };
  if (credential) headers["Authorization"] = `Bearer ${credential}`;
  let resp: Response;
  let raw: string;
  try {
    resp = await fetch(url, {
      method: "POST",
      headers,
      body: JSON.stringify(body),
      redirect: "manual",
      signal: AbortSignal.timeout(timeoutMs),
    });
    raw = (await resp.text()).slice(0, MAX_RESPONSE_CHARS);
  } catch (e) {
    const err = e as Error & { cause?: { code?: string; message?: string } };
    const why = err.cause?.code ?? err.cause?.message ?? err.message;
    throw new TransportError(`post to ${new URL(url).origin}: ${why}`);
  }
  if (resp.status < 200 || resp.status > 299) throw new StatusError(resp.status, errorMessage(raw));
  return raw;
}
