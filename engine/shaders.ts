/**
 * Loads WGSL sources from the `shaders/` folder (one kernel family per file).
 * @module
 */

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

/** Fetches shader sources ahead of use; needed only when the package is loaded from a remote URL. */
export async function preloadShaders(names: readonly string[]): Promise<void> {
  await Promise.all(names.map(async (name) => {
    if (cache.has(name)) return;
    const res = await fetch(new URL(`${name}.wgsl`, base));
    if (!res.ok) throw new Error(`could not load shader ${name}: HTTP ${res.status}`);
    cache.set(name, await res.text());
  }));
}
