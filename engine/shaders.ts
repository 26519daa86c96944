/**
 * Loads WGSL sources from the `shaders/` folder (one kernel family per file).
 * @module
 */

/**
 * Every kernel file in `shaders/` (a test checks this list against the folder). Needed to fetch them
 * up front when the package is imported from a remote URL (e.g. JSR), where files cannot be read lazily.
 */
export const SHADER_NAMES: readonly string[] = [
  "adamw",
  "attention",
  "attention_backward",
  "attention_kv",
  "attention_tiled",
  "binary",
  "cross_entropy",
  "dropout",
  "fill",
  "gather",
  "grad_norm",
  "index_sort",
  "layer_norm",
  "masked_fill",
  "matmul",
  "matmul_gemv",
  "permute",
  "ppo_kl",
  "ppo_loss",
  "reduce",
  "reduce_to",
  "sample",
  "scatter_add",
  "slice",
  "softmax",
  "unary",
];

const cache = new Map<string, string>();
const base = new URL("../shaders/", import.meta.url);

/** Returns the WGSL source of `shaders/<name>.wgsl` (cached). */
export function shaderSource(name: string): string {
  let src = cache.get(name);
  if (src !== undefined) return src;
  if (!/^[a-z0-9_]+$/.test(name)) throw new Error(`invalid shader name "${name}"`);
  const url = new URL(`${name}.wgsl`, base);
  if (url.protocol !== "file:") {
    throw new Error(`shader ${name} not preloaded: call preloadShaders() before use when loading from ${base.href}`);
  }
  src = Deno.readTextFileSync(url);
  cache.set(name, src);
  return src;
}

/** True when shaders can be read from disk on demand (the package was imported from a local path). */
export function shadersAreLocal(): boolean {
  return base.protocol === "file:";
}

/** Fetches shader sources ahead of use; needed only when the package is loaded from a remote URL. */
export async function preloadShaders(names: readonly string[] = SHADER_NAMES): Promise<void> {
  await Promise.all(names.map(async (name) => {
    if (cache.has(name)) return;
    const res = await fetch(new URL(`${name}.wgsl`, base));
    if (!res.ok) throw new Error(`could not load shader ${name}: HTTP ${res.status}`);
    cache.set(name, await res.text());
  }));
}
