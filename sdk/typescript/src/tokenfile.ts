// The token file: where runtime tokens are kept between runs.
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { basename, dirname, join, resolve } from "node:path";

/**
 * Returns the runtime token kept in path, "" when the file is missing or
 * empty. The file holds the bare token; a JSON object with a `runtime_token`
 * field (sentinel's answer) is accepted too.
 */
export function readTokenFile(path: string): string {
  let s: string;
  try {
    s = readFileSync(path, "utf8").trim();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return "";
    throw e;
  }
  if (s.startsWith("{")) {
    let doc: unknown;
    try {
      doc = JSON.parse(s);
    } catch (e) {
      throw new Error(`read token file ${path}: not a token: ${(e as Error).message}`);
    }
    const tok = (doc as { runtime_token?: unknown }).runtime_token;
    return typeof tok === "string" ? tok.trim() : "";
  }
  return s;
}

/**
 * Stores token in path with mode 0600, atomically: a temporary file in the
 * same directory is written, fsynced and renamed over path, and the directory
 * fsynced, so that a crash leaves the old or the new token, never a torn one.
 */
export function writeTokenFile(path: string, token: string): void {
  const dir = dirname(resolve(path));
  const tmp = join(dir, `.${basename(path)}.tmp-${randomBytes(6).toString("hex")}`);
  const fd = openSync(tmp, "wx", 0o600);
  try {
    try {
      writeSync(fd, token + "\n");
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {
      // already gone
    }
    throw e;
  }
  try {
    const dfd = openSync(dir, "r");
    try {
      fsyncSync(dfd); // best effort: some filesystems refuse to sync a directory
    } finally {
      closeSync(dfd);
    }
  } catch {
    // best effort
  }
}
