import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { test } from "node:test";

import { defaultId, detectPlatform, readTokenFile, sanitizeId, validId, writeTokenFile } from "../src/index.js";

function root(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), "platform-"));
  for (const [rel, text] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, rel)), { recursive: true });
    writeFileSync(join(dir, rel), text);
  }
  return dir;
}

test("platform detection", () => {
  const cid = "a".repeat(64);
  const hostname = (): string => "myhost";
  const cases = [
    {
      name: "lambda",
      env: { AWS_LAMBDA_FUNCTION_NAME: "fn", AWS_DEFAULT_REGION: "eu-west-1", KUBERNETES_SERVICE_HOST: "x" },
      files: {},
      want: { type: "lambda", function_name: "fn", region: "eu-west-1" },
      id: "fn",
    },
    {
      name: "kubernetes",
      env: { KUBERNETES_SERVICE_HOST: "10.0.0.1", NODE_NAME: "n1" },
      files: { "var/run/secrets/kubernetes.io/serviceaccount/namespace": "prod\n", ".dockerenv": "" },
      want: { type: "kubernetes", pod_name: "myhost", namespace: "prod", node: "n1" },
      id: "myhost",
    },
    {
      name: "docker",
      env: { IMAGE: "img:1" },
      files: { ".dockerenv": "", "proc/self/cgroup": `0::/docker/${cid}\n` },
      want: { type: "docker", container_id: cid, image: "img:1" },
      id: "a".repeat(12),
    },
    {
      name: "docker mountinfo",
      env: {},
      files: { ".dockerenv": "", "proc/self/mountinfo": `1 2 /var/lib/docker/containers/${cid}/hostname /etc/hostname\n` },
      want: { type: "docker", container_id: cid },
      id: "a".repeat(12),
    },
  ];
  for (const c of cases) {
    const got = detectPlatform({ root: root(c.files), env: c.env, hostname });
    assert.deepEqual(got, c.want, c.name);
    assert.equal(defaultId(got), c.id, c.name);
  }
  const bare = detectPlatform({ root: root({}), env: {}, hostname });
  assert.equal(bare.type, "bare_metal");
  assert.equal(bare.hostname, "myhost");
  assert.equal(bare.pid, process.pid);
});

test("agent ids", () => {
  assert.ok(validId("agent-01"));
  assert.ok(validId("a.b_c:d@e-f"));
  for (const bad of ["", "-a", "a b", "a".repeat(129), "agent\n", "é"]) assert.ok(!validId(bad), bad);
  assert.equal(sanitizeId("--My Host!.local"), "My-Host-.local");
  assert.equal(sanitizeId("!!!"), "");
  assert.equal(sanitizeId("x".repeat(300)).length, 128);
});

test("token file", () => {
  const path = join(mkdtempSync(join(tmpdir(), "token-")), "token");
  assert.equal(readTokenFile(path), "");
  writeTokenFile(path, "srt_one");
  writeTokenFile(path, "srt_two");
  assert.equal(readTokenFile(path), "srt_two");
  writeFileSync(path, '{"runtime_token": "srt_x"}');
  assert.equal(readTokenFile(path), "srt_x");
  writeFileSync(path, "{broken");
  assert.throws(() => readTokenFile(path), /not a token/);
});
