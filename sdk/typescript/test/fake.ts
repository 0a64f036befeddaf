// A fake sentinel on a loopback port for the unit tests: it records each
// request and answers with what the test's responder returns.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";

export interface Recorded {
  path: string;
  auth: string;
  body: Record<string, unknown>;
}

export type Responder = (req: Recorded) => [number, unknown];

export class FakeSentinel {
  readonly requests: Recorded[] = [];
  url = "";
  private readonly server: Server;
  private waiters: Array<() => void> = [];

  constructor(public responder: Responder) {
    this.server = createServer((req, res) => {
      let raw = "";
      req.on("data", (c: Buffer) => (raw += c.toString()));
      req.on("end", () => {
        const rec: Recorded = {
          path: req.url ?? "",
          auth: req.headers.authorization ?? "",
          body: raw ? (JSON.parse(raw) as Record<string, unknown>) : {},
        };
        this.requests.push(rec);
        const [code, doc] = this.responder(rec);
        res.writeHead(code, { "Content-Type": "application/json" });
        res.end(JSON.stringify(doc));
        const w = this.waiters;
        this.waiters = [];
        w.forEach((f) => f());
      });
    });
  }

  async listen(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  /** Resolves once pred holds for the recorded requests; rejects after timeoutMs. */
  async waitFor(pred: (r: Recorded[]) => boolean, timeoutMs = 20_000): Promise<Recorded[]> {
    const deadline = Date.now() + timeoutMs;
    while (!pred(this.requests)) {
      if (Date.now() > deadline) throw new Error(`fake sentinel: condition not met; ${this.requests.length} requests`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(20, Math.max(deadline - Date.now(), 0))); // state changes without a request too
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return [...this.requests];
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

export function ok(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    installation_id: "a",
    lease_renewed: true,
    state: "ACTIVE",
    heartbeat_interval_seconds: 0.05,
    command: null,
    refreshed_token: null,
    ...extra,
  };
}
