// Platform detection and agent ids, as the Go beacon does them.
import { existsSync, readFileSync } from "node:fs";
import { hostname as osHostname, platform as osPlatform } from "node:os";
import { join } from "node:path";

/** Where the agent runs: the heartbeat's `platform` object. */
export interface Platform {
  type: "docker" | "kubernetes" | "lambda" | "bare_metal";
  container_id?: string;
  image?: string;
  pod_name?: string;
  namespace?: string;
  node?: string;
  function_name?: string;
  region?: string;
  hostname?: string;
  os?: string;
  pid?: number;
}

export const MAX_ID_LENGTH = 128;
const ID_RE = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$/;
const CONTAINER_ID_RE = /^[0-9a-f]{64}$/;
const CONTAINER_ID_FIND = /[0-9a-f]{64}/;
const SERVICE_ACCOUNT_NAMESPACE = "var/run/secrets/kubernetes.io/serviceaccount/namespace";

/** Whether sentinel accepts the agent id: ^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$. */
export function validId(id: string): boolean {
  return ID_RE.test(id);
}

/** Turns s into a valid agent id ("" when nothing usable is left). */
export function sanitizeId(s: string): string {
  let out = "";
  for (const ch of s) {
    if (/^[A-Za-z0-9]$/.test(ch)) out += ch;
    else if ("._:@-".includes(ch)) {
      if (out) out += ch;
    } else if (out) out += "-";
    if (out.length >= MAX_ID_LENGTH) break;
  }
  out = out.slice(0, MAX_ID_LENGTH);
  return validId(out) ? out : "";
}

/**
 * The agent id derived from the platform: the pod name on Kubernetes, the
 * short container id on Docker, the function name on Lambda, the hostname on
 * bare metal.
 */
export function defaultId(p: Platform): string {
  let id = "";
  switch (p.type) {
    case "kubernetes":
      id = p.pod_name ?? "";
      break;
    case "docker":
      id = p.container_id ?? "";
      if (id.length > 12 && CONTAINER_ID_RE.test(id)) id = id.slice(0, 12); // what `docker ps` shows
      break;
    case "lambda":
      id = p.function_name ?? "";
      break;
    default:
      id = p.hostname ?? "";
  }
  return sanitizeId(id);
}

/** What detectPlatform looks at; tests fake it. */
export interface DetectOptions {
  root?: string;
  env?: Record<string, string | undefined>;
  hostname?: () => string;
}

function read(root: string, rel: string): string {
  try {
    return readFileSync(join(root, rel), "utf8");
  } catch {
    return "";
  }
}

function findContainerId(text: string, markers: string[] = []): string {
  for (const line of text.split("\n")) {
    if (markers.length > 0 && !markers.some((m) => line.includes(m))) continue;
    const m = CONTAINER_ID_FIND.exec(line);
    if (m) return m[0];
  }
  return "";
}

function compact(p: Platform): Platform {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(p)) {
    if (k === "type" || (v !== "" && v !== 0 && v !== undefined)) out[k] = v;
  }
  return out as unknown as Platform;
}

/**
 * Detects where the agent runs. Lambda (AWS_LAMBDA_FUNCTION_NAME) and
 * Kubernetes (KUBERNETES_SERVICE_HOST) win over Docker (/.dockerenv), because
 * pods carry container markers too; anything else is bare metal.
 */
export function detectPlatform(opts: DetectOptions = {}): Platform {
  const root = opts.root ?? "/";
  const env = opts.env ?? process.env;
  const host = (): string => {
    try {
      return (opts.hostname ?? osHostname)().trim();
    } catch {
      return "";
    }
  };
  const fn = env["AWS_LAMBDA_FUNCTION_NAME"];
  if (fn) {
    const region = env["AWS_REGION"] || env["AWS_DEFAULT_REGION"] || "";
    return compact({ type: "lambda", function_name: fn, region });
  }
  if (env["KUBERNETES_SERVICE_HOST"]) {
    return compact({
      type: "kubernetes",
      pod_name: env["POD_NAME"] || host(), // a pod's hostname is its name
      namespace: env["POD_NAMESPACE"] || read(root, SERVICE_ACCOUNT_NAMESPACE).trim(),
      node: env["NODE_NAME"] ?? "",
    });
  }
  if (existsSync(join(root, ".dockerenv"))) {
    const image = env["SENTINEL_IMAGE"] || env["IMAGE"] || "";
    const cid =
      findContainerId(read(root, "proc/self/cgroup")) ||
      findContainerId(read(root, "proc/self/mountinfo"), ["/containers/", "/sandboxes/"]) ||
      host(); // Docker sets the hostname to the short id unless told otherwise
    return compact({ type: "docker", container_id: cid, image });
  }
  return compact({ type: "bare_metal", hostname: host(), os: osPlatform(), pid: process.pid });
}
