/**
 * The counter-based random bits of `shaders/rng.wgsl` on the host, for CPU kernels that must take the same random
 * decisions as the WGSL ones (dropout, attention dropout, sampling). All arithmetic is on unsigned 32-bit integers,
 * modulo 2³², as in the shader.
 * @module
 */

/** `mix32` of `rng.wgsl`: the 32-bit "lowbias32" integer finaliser. */
export function mix32(x: number): number {
  let h = x >>> 0;
  h = (h ^ (h >>> 16)) >>> 0;
  h = Math.imul(h, 0x7feb352d) >>> 0;
  h = (h ^ (h >>> 15)) >>> 0;
  h = Math.imul(h, 0x846ca68b) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

/** The dropout kernels' bits of flat index `index` under `key`: `mix32(mix32(index ^ key) + key)` (mod 2³²). */
export function dropBits(index: number, key: number): number {
  return mix32(mix32((index ^ key) >>> 0) + (key >>> 0));
}

/** Keep factor of flat index `index`: `scale` when its bits are ≥ `threshold`, else 0 (`drop_keep` of the shaders). */
export function dropKeep(index: number, key: number, threshold: number, scale: number): number {
  return dropBits(index >>> 0, key) >= threshold >>> 0 ? scale : 0;
}
