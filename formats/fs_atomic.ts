/**
 * Files on disk: crash-safe file replacement (data goes to a temporary file next to the target, is flushed to disk,
 * and is then renamed over the target, so readers see either the old or the new content, never a mix), and
 * {@linkcode exists}.
 * @module
 */

import { joinPath, parentPath, urlToPath } from "./files.ts";
export { exists } from "./files.ts";

function toPath(path: string | URL): string {
  return path instanceof URL ? urlToPath(path) : path;
}

function randomSuffix(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(6));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Atomically replaces the file at `path` with `data` (a string is written as UTF-8).
 *
 * The bytes are written to a uniquely named temporary file in the same directory (named from the
 * target, the process id and random bits, ending in `.tmp`), synced to disk, closed and renamed over
 * the target. If anything fails, the temporary file is removed and the error is rethrown; the target
 * is then left untouched.
 *
 * @param path Destination file path (or `file:` URL). Its directory must exist.
 * @param data Content to write.
 */
export async function writeFileAtomic(path: string | URL, data: Uint8Array | string): Promise<void> {
  const target = toPath(path);
  const dir = parentPath(target), base = target.replace(/\/+$/, "").split("/").pop();
  const tmp = joinPath(dir, `.${base}.${Deno.pid}.${randomSuffix()}.tmp`);
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  let file: Deno.FsFile | undefined;
  try {
    file = await Deno.open(tmp, { write: true, createNew: true, mode: 0o644 });
    let written = 0;
    while (written < bytes.length) written += await file.write(bytes.subarray(written));
    await file.sync();
    file.close();
    file = undefined;
    await Deno.rename(tmp, target);
  } catch (err) {
    if (file) {
      try {
        file.close();
      } catch { /* already closed */ }
    }
    await Deno.remove(tmp).catch(() => {});
    throw err;
  }
  await syncDirectory(dir);
}

/** Best effort: flush the directory entry of the rename (not supported on every platform). */
async function syncDirectory(dir: string): Promise<void> {
  if (Deno.build.os === "windows") return;
  let handle: Deno.FsFile | undefined;
  try {
    handle = await Deno.open(dir, { read: true });
    await handle.sync();
  } catch {
    /* ignore: the data itself is already durable */
  } finally {
    try {
      handle?.close();
    } catch { /* ignore */ }
  }
}

/**
 * Atomically writes `value` as pretty-printed JSON (2-space indent, trailing newline) to `path`.
 * See {@linkcode writeFileAtomic} for the guarantees.
 *
 * @param path Destination file path (or `file:` URL).
 * @param value Any JSON-serializable value.
 */
export async function writeJsonAtomic(path: string | URL, value: unknown): Promise<void> {
  const text = JSON.stringify(value, null, 2);
  if (text === undefined) throw new TypeError(`writeJsonAtomic(${toPath(path)}): value is not JSON-serializable`);
  await writeFileAtomic(path, text + "\n");
}
