/**
 * `deno task web`: builds the browser bundle and serves the demo page. `/` is `web/index.html`, `/dist/` the bundle,
 * and `/models/` the models folder (`--models DIR`, default `.cache/default-models`, which `deno task train` fills;
 * it holds `policy/`, `reward/` and `manifest.json`). `--port N` (default 8000; 0 picks a free one).
 * @module
 */

import { parseArgs } from "node:util";
import { buildWeb } from "./build.ts";

const ROOT = new URL("../", import.meta.url);

const TYPES: Record<string, string> = {
  html: "text/html; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  json: "application/json",
  txt: "text/plain; charset=utf-8",
  safetensors: "application/octet-stream",
};

/** Options of {@linkcode serveWeb}. */
export interface ServeWebOptions {
  /** Port (0: any free one). */
  port: number;
  /** The folder served at `/models/`. */
  modelsDir: string;
  /** The folder served at `/` (default `web/`). */
  webDir?: string;
  /** Stops the server when aborted. */
  signal?: AbortSignal;
}

/** The file a request path maps to, or null when it leaves its folder. */
function fileFor(pathname: string, webDir: string, modelsDir: string): string | null {
  const path = decodeURIComponent(pathname);
  if (path.split("/").includes("..")) return null;
  if (path.startsWith("/models/")) return `${modelsDir.replace(/\/$/, "")}/${path.slice("/models/".length)}`;
  return `${webDir.replace(/\/$/, "")}${path === "/" ? "/index.html" : path}`;
}

async function respond(req: Request, webDir: string, modelsDir: string): Promise<Response> {
  const file = fileFor(new URL(req.url).pathname, webDir, modelsDir);
  if (file === null) return new Response("forbidden", { status: 403 });
  try {
    const info = await Deno.stat(file);
    if (!info.isFile) return new Response("not found", { status: 404 });
    const type = TYPES[file.slice(file.lastIndexOf(".") + 1)] ?? "application/octet-stream";
    const headers = { "content-type": type, "content-length": String(info.size), "cache-control": "no-store" };
    if (req.method === "HEAD") return new Response(null, { headers });
    return new Response((await Deno.open(file)).readable, { headers });
  } catch {
    return new Response("not found", { status: 404 });
  }
}

/** Serves the page, the bundle and a models folder over HTTP on 127.0.0.1; returns the server. */
export function serveWeb(options: ServeWebOptions): Deno.HttpServer<Deno.NetAddr> {
  const webDir = options.webDir ?? new URL("web/", ROOT).pathname;
  return Deno.serve(
    { hostname: "127.0.0.1", port: options.port, signal: options.signal, onListen: () => {} },
    (req) => respond(req, webDir, options.modelsDir),
  );
}

if (import.meta.main) {
  const { values } = parseArgs({ args: Deno.args, options: { port: { type: "string" }, models: { type: "string" } } });
  const modelsDir = values.models ?? new URL(".cache/default-models", ROOT).pathname;
  const built = await buildWeb();
  console.log(`web: built ${built.library} (${(built.libraryBytes / 1024).toFixed(0)} KiB)`);
  try {
    await Deno.stat(`${modelsDir}/manifest.json`);
  } catch {
    console.log(`web: ${modelsDir} has no models yet; run \`deno task train\` first (it builds and caches them)`);
  }
  const server = serveWeb({ port: Number(values.port ?? 8000), modelsDir });
  console.log(`web: open http://localhost:${server.addr.port}/ (models from ${modelsDir})`);
}
