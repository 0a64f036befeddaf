import assert from "node:assert/strict";
import { test } from "node:test";

import { ABSClient, StatusError } from "../src/index.js";
import { FakeSentinel } from "./fake.js";

test("ABSClient.process posts the event to /v1/events", async () => {
  const seen = new Set<string>();
  const f = await new FakeSentinel((r) => {
    const id = String(r.body["event_id"]);
    if (r.body["tenant_id"] !== "my-tenant") return [403, { error: "tenant_id is not the credential's tenant" }];
    const dup = seen.has(id);
    seen.add(id);
    return [200, dup ? { event_id: id, agentId: r.body["source"], duplicate: true } : { status: "ACTIVE", agentId: r.body["source"], event_id: id, duplicate: false }];
  }).listen();
  try {
    const abs = new ABSClient({ endpoint: f.url + "/", apiKey: "key", tenantId: "my-tenant" });
    const ev = { event_id: "e-1", tenant_id: "my-tenant", event_type: "agent.heartbeat", source: "my-agent-01", payload: { status: "healthy" } };
    const first = await abs.process(ev);
    assert.equal(first.duplicate, false);
    assert.equal(first.status, "ACTIVE");
    assert.equal((await abs.process(ev)).duplicate, true);
    // tenant_id defaults to the client's.
    const { tenant_id: _omit, ...noTenant } = ev;
    void _omit;
    assert.equal((await abs.process({ ...noTenant, event_id: "e-2" })).duplicate, false);
    await assert.rejects(abs.process({ ...ev, event_id: "e-3", tenant_id: "other" }), (e: unknown) => e instanceof StatusError && e.code === 403);
    assert.equal(f.requests[0]?.path, "/v1/events");
    assert.equal(f.requests[0]?.auth, "Bearer key");
  } finally {
    await f.close();
  }
});
