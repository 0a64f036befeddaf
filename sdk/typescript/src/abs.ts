// ABSClient: the @oconnector/sdk call shape over sentinel's /v1/events, so
// that code written for ABS points at sentinel by changing the endpoint.
import { StatusError, TransportError, postJson } from "./protocol.js";
import { VERSION } from "./beacon.js";

export interface ABSClientOptions {
  /** Sentinel's base URL (where ABS code had https://api.abscore.app). */
  endpoint: string;
  /** A tenant API key, or the runtime token of the events' source agent. */
  apiKey: string;
  /** Filled into events that carry no tenant_id. */
  tenantId?: string;
  /** Per request; default 10 s. */
  timeoutMs?: number;
}

/** An ABS event. sentinel understands agent.heartbeat and agent.shutdown. */
export interface ABSEvent {
  event_id: string;
  tenant_id?: string;
  event_type: "agent.heartbeat" | "agent.shutdown" | (string & {});
  source: string;
  payload?: Record<string, unknown>;
}

/** Sentinel's answer to an event. A repeated event_id has duplicate true and changed nothing. */
export interface ABSResult {
  event_id: string;
  agentId: string;
  duplicate: boolean;
  status?: string;
  nextDeadline?: string;
  command?: string;
  revoked?: boolean;
  reason?: string;
  shutdown_timeout_ms?: number;
}

export class ABSClient {
  private readonly endpoint: string;
  private readonly opts: ABSClientOptions;

  constructor(opts: ABSClientOptions) {
    if (!opts.endpoint) throw new Error("ABSClient: no endpoint");
    if (!opts.apiKey) throw new Error("ABSClient: no apiKey");
    const u = new URL(opts.endpoint);
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error("ABSClient: endpoint must be http or https");
    this.endpoint = opts.endpoint.replace(/\/+$/, "");
    this.opts = opts;
  }

  /**
   * Posts one event to /v1/events. Rejects with StatusError for a refusal
   * (e.g. 403 for another tenant's tenant_id, 422 for an unknown event_type)
   * and TransportError when sentinel cannot be reached; a retry with the same
   * event_id is safe, it is counted once.
   */
  async process(event: ABSEvent): Promise<ABSResult> {
    const body = { ...event, tenant_id: event.tenant_id ?? this.opts.tenantId };
    const raw = await postJson(
      `${this.endpoint}/v1/events`,
      this.opts.apiKey,
      body,
      this.opts.timeoutMs ?? 10_000,
      `sentinel-beacon-node/${VERSION} (ABSClient)`,
    );
    try {
      return JSON.parse(raw) as ABSResult;
    } catch (e) {
      throw new TransportError(`decode event answer: ${(e as Error).message}`);
    }
  }
}

export { StatusError, TransportError };
