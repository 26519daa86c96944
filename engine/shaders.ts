/**
 * Loads WGSL sources from the `shaders/` folder (one kernel family per file).
 * @module
 */

import { wgslCodes } from "./kernels/codes.ts";
import { allKernels } from "./kernels/mod.ts";

const raw = new Map<string, string>();
const expanded = new Map<string, string>();
const base = new URL("../shaders/", import.meta.url);

function rawSource(name: string, by?: string): string {
  let src = raw.get(name);
  if (src !== undefined) return src;
  if (!/^[a-z0-9_]+$/.test(name)) throw new Error(`invalid shader name "${name}"`);
  if (base.protocol !== "file:") {
    const who = by ? ` (included by ${by})` : "";
    throw new Error(
      `shader ${name}${who} not preloaded: call preloadShaders() before use when loading from ${base.href}`,
    );
  }
  src = Deno.readTextFileSync(new URL(`${name}.wgsl`, base));
  raw.set(name, src);
  return src;
}

/**
 * Replaces `//!include NAME` lines with `shaders/NAME.wgsl` (WGSL has no includes; used for shared helpers) and
 * `//!codes TABLE` lines with the op-code constants declared in `engine/kernels/codes.ts`.
 */
function expandIncludes(src: string, name: string, seen: readonly string[]): string {
  if (seen.includes(name)) throw new Error(`shaders: include cycle ${[...seen, name].join(" → ")}`);
  return src.replace(
    /^\/\/!include ([a-z0-9_]+)\s*$/gm,
    (_, inc: string) => expandIncludes(rawSource(inc, name), inc, [...seen, name]),
  ).replace(/^\/\/!codes ([a-z0-9_]+)\s*$/gm, (_, table: string) => wgslCodes(table));
}

/** Returns the WGSL source of `shaders/<name>.wgsl` with its includes expanded (cached). */
export function shaderSource(name: string): string {
  let src = expanded.get(name);
  if (src === undefined) {
    src = expandIncludes(rawSource(name), name, []);
    expanded.set(name, src);
  }
  return src;
}

/**
 * Supplies the sources of shader files by name (`shaders/<name>.wgsl` without the extension) ahead of use, so that
 * they are neither read nor fetched: how a browser bundle carries its kernels (`web/build.ts` embeds them all).
 */
export function provideShaders(sources: Readonly<Record<string, string>>): void {
  for (const [name, src] of Object.entries(sources)) {
    if (!/^[a-z0-9_]+$/.test(name)) throw new Error(`invalid shader name "${name}"`);
    raw.set(name, src);
  }
  expanded.clear();
}

/** True when shaders can be read from disk on demand (the package was imported from a local path). */
export function shadersAreLocal(): boolean {
  return base.protocol === "file:";
}

/**
 * Fetches the sources of `names` and, recursively, of the files they include, ahead of use; needed only when the
 * package is loaded from a remote URL (e.g. JSR), where files cannot be read lazily. By default: every declared
 * kernel's shader (`engine/kernels/`).
 */
export async function preloadShaders(names?: readonly string[]): Promise<void> {
  let todo = [...new Set(names ?? allKernels().map((k) => k.kernel.shader))];
  while (todo.length > 0) {
    await Promise.all(todo.map(fetchShader));
    const includes = todo.flatMap((name) => [...raw.get(name)!.matchAll(/^\/\/!include ([a-z0-9_]+)\s*$/gm)]);
    todo = [...new Set(includes.map((m) => m[1]))].filter((name) => !raw.has(name));
  }
}

async function fetchShader(name: string): Promise<void> {
  if (raw.has(name)) return;
  if (!/^[a-z0-9_]+$/.test(name)) throw new Error(`invalid shader name "${name}"`);
  const res = await fetch(new URL(`${name}.wgsl`, base));
  if (!res.ok) throw new Error(`could not load shader ${name}: HTTP ${res.status}`);
  raw.set(name, await res.text());
}
