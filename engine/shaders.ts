/**
 * Loads WGSL sources from the `shaders/` folder (one kernel family per file).
 * @module
 */

import { wgslCodes } from "./kernels/codes.ts";

/**
 * Every kernel file in `shaders/` (a test checks this list against the folder). Needed to fetch them
 * up front when the package is imported from a remote URL (e.g. JSR), where files cannot be read lazily.
 */
export const SHADER_NAMES: readonly string[] = [
  "activation",
  "adamw",
  "attention",
  "attention_backward",
  "attention_common",
  "attention_kv",
  "attention_softmax",
  "attention_tiled",
  "binary",
  "cross_entropy",
  "dropout",
  "fill",
  "gather",
  "grad_accumulate",
  "grad_norm",
  "heads",
  "index_sort",
  "layer_norm",
  "masked_fill",
  "matmul",
  "matmul_coop",
  "matmul_gemv",
  "matmul_io",
  "matmul_splitk",
  "permute",
  "ppo_kl",
  "ppo_loss",
  "reduce",
  "reduce_to",
  "rng",
  "sample",
  "scatter_add",
  "slice",
  "softmax",
  "softmax_common",
  "tensor_scan",
  "unary",
  "workgroup_reduce",
];

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

/** True when shaders can be read from disk on demand (the package was imported from a local path). */
export function shadersAreLocal(): boolean {
  return base.protocol === "file:";
}

/** Fetches shader sources ahead of use; needed only when the package is loaded from a remote URL. */
export async function preloadShaders(names: readonly string[] = SHADER_NAMES): Promise<void> {
  await Promise.all(names.map(async (name) => {
    if (raw.has(name)) return;
    const res = await fetch(new URL(`${name}.wgsl`, base));
    if (!res.ok) throw new Error(`could not load shader ${name}: HTTP ${res.status}`);
    raw.set(name, await res.text());
  }));
}
