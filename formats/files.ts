/**
 * File access behind a small interface, so that model folders load the same way from disk (Deno) and over HTTP (a
 * browser tab, or Deno given an `http(s):` URL). {@linkcode filesFor} picks the source for a path: `http:`/`https:`
 * URLs, and every path where there is no `Deno` (a browser, where relative paths are taken from the page's address),
 * are fetched; anything else is read with Deno's file API, which keeps Deno's errors (`Deno.errors.NotFound`, …).
 * Path helpers ({@linkcode joinPath}, {@linkcode parentPath}, {@linkcode isAbsolutePath}) work on both kinds.
 * @module
 */

/** What {@linkcode FileSource.stat} says about a path. */
export interface FileKind {
  /** A regular file (or a URL that answered). */
  isFile: boolean;
  /** A folder (over HTTP: a folder address, which cannot be listed, so it counts as present). */
  isDirectory: boolean;
}

/** Where model files come from: Deno's file system, or HTTP. A missing file throws an error {@linkcode isNotFound} accepts. */
export interface FileSource {
  /** The whole file's bytes. */
  readBytes(path: string | URL): Promise<Uint8Array>;
  /** The file as UTF-8 text. */
  readText(path: string | URL): Promise<string>;
  /** Whether `path` is a file or a folder; throws a not-found error when nothing is there. */
  stat(path: string | URL): Promise<FileKind>;
}

/** A file an HTTP server answered 404 (or 410) for; the message names the address. */
export class FileNotFoundError extends Error {
  /**
   * @param address The URL asked for.
   * @param status The HTTP status.
   */
  constructor(address: string, status: number) {
    super(`${address}: not found (HTTP ${status})`);
    this.name = "FileNotFoundError";
  }
}

/** Whether `e` says that a file does not exist: Deno's `NotFound` or an HTTP {@linkcode FileNotFoundError}. */
export function isNotFound(e: unknown): boolean {
  if (e instanceof FileNotFoundError) return true;
  return typeof Deno !== "undefined" && e instanceof Deno.errors.NotFound;
}

/** Deno's file system. */
export const denoFiles: FileSource = {
  readBytes: (path) => Deno.readFile(path),
  readText: (path) => Deno.readTextFile(path),
  stat: async (path) => {
    const info = await Deno.stat(path);
    return { isFile: info.isFile, isDirectory: info.isDirectory };
  },
};

/** The absolute address of `path` for fetching: taken relative to `base` (a page's address in a browser). */
function addressOf(path: string | URL, base: string | undefined): string {
  if (path instanceof URL) return path.href;
  return base === undefined ? new URL(path).href : new URL(path, base).href;
}

async function fetchOk(address: string, method: "GET" | "HEAD"): Promise<Response> {
  const res = await fetch(address, { method });
  if (res.status === 404 || res.status === 410) {
    await res.body?.cancel();
    throw new FileNotFoundError(address, res.status);
  }
  if (!res.ok) {
    await res.body?.cancel();
    throw new Error(`${address}: HTTP ${res.status} ${res.statusText}`);
  }
  return res;
}

/**
 * Files over HTTP with `fetch`. Relative paths are resolved against `base` (default: the page's address where there
 * is one). A folder cannot be listed over HTTP: an address ending in `/` counts as a folder (name model folders so),
 * and its files are looked up one by one; any other address is a file when the server answers a `HEAD` for it.
 */
export function httpFiles(base: string | undefined = globalThis.location?.href): FileSource {
  return {
    readBytes: async (path) => new Uint8Array(await (await fetchOk(addressOf(path, base), "GET")).arrayBuffer()),
    readText: async (path) => await (await fetchOk(addressOf(path, base), "GET")).text(),
    stat: async (path) => {
      const address = addressOf(path, base);
      if (address.endsWith("/")) return { isFile: false, isDirectory: true };
      await fetchOk(address, "HEAD");
      return { isFile: true, isDirectory: false };
    },
  };
}

/** Whether `path` is an `http:` or `https:` address. */
export function isRemote(path: string | URL): boolean {
  const text = path instanceof URL ? path.href : path;
  return /^https?:\/\//i.test(text);
}

/** The source that reads `path`: HTTP for `http(s):` addresses and wherever `Deno` is missing, else Deno's files. */
export function filesFor(path: string | URL): FileSource {
  return isRemote(path) || typeof Deno === "undefined" ? httpFiles() : denoFiles;
}

/**
 * Whether something is at `path`, following symbolic links. Never throws: a path that cannot be looked at (no
 * permission, a broken link, a failed request) counts as absent.
 *
 * @param path File or folder path, `file:` URL or `http(s):` address.
 * @param kind `"any"` (default): anything counts, folders included; `"file"`: only a regular file counts.
 * @returns True when something of that kind is at `path`.
 */
export async function exists(path: string | URL, kind: "any" | "file" = "any"): Promise<boolean> {
  try {
    const info = await filesFor(path).stat(path);
    return kind === "any" || info.isFile;
  } catch {
    return false;
  }
}

/** Whether `path` is absolute: `/…`, `\…`, a drive path (`C:\…`, `C:/…`) or a URL with a scheme. */
export function isAbsolutePath(path: string): boolean {
  return /^[\\/]/.test(path) || /^[A-Za-z]:[\\/]/.test(path) || /^[a-z][a-z0-9+.-]+:\/\//i.test(path);
}

/** A POSIX path with `.` and `..` segments and repeated slashes resolved, as `node:path`'s `normalize`. */
function normalizePosix(path: string): string {
  const absolute = path.startsWith("/"), trailing = path.endsWith("/");
  const out: string[] = [];
  for (const seg of path.split("/")) {
    if (seg === "" || seg === ".") continue;
    if (seg !== "..") out.push(seg);
    else if (out.length > 0 && out[out.length - 1] !== "..") out.pop();
    else if (!absolute) out.push("..");
  }
  let joined = (absolute ? "/" : "") + out.join("/");
  if (joined === "") joined = absolute ? "/" : ".";
  return trailing && !joined.endsWith("/") ? joined + "/" : joined;
}

/**
 * `name` inside folder `dir`: for an address, resolved as a URL (the folder taken with a trailing slash); for a path,
 * joined and normalised as `node:path`'s `join` does on POSIX.
 */
export function joinPath(dir: string, name: string): string {
  if (isRemote(dir)) return new URL(name, dir.endsWith("/") ? dir : dir + "/").href;
  const parts = [dir, name].filter((p) => p !== "");
  return parts.length === 0 ? "." : normalizePosix(parts.join("/"));
}

/** The folder holding `path` (`node:path`'s `dirname` on POSIX; for an address, its parent URL). */
export function parentPath(path: string): string {
  if (isRemote(path)) return new URL(".", path).href;
  const trimmed = path.length > 1 ? path.replace(/\/+$/, "") : path;
  const i = trimmed.lastIndexOf("/");
  if (i < 0) return ".";
  return i === 0 ? "/" : trimmed.slice(0, i);
}

/** The local path of a `file:` URL (other URLs as their address), without `node:url`. */
export function urlToPath(url: URL): string {
  if (url.protocol !== "file:") return url.href;
  const path = decodeURIComponent(url.pathname);
  const windows = typeof Deno !== "undefined" && Deno.build.os === "windows";
  return windows && /^\/[A-Za-z]:/.test(path) ? path.slice(1).replaceAll("/", "\\") : path;
}
