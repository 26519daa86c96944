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

/**
 * The dropout kernels' bits of flat index `index` under `key`: `mix32(mix32(index ^ key) + key)` (mod 2³²). Both
 * rounds inline on int32 values (the same bits as {@linkcode mix32}'s unsigned ones), converted to unsigned once at
 * the end: V8 keeps every step in a register instead of boxing unsigned values above 2³¹ as doubles.
 */
export function dropBits(index: number, key: number): number {
  let h = index ^ key;
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  h = Math.imul(h, 0x846ca68b);
  h ^= h >>> 16;
  h = (h + key) | 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  h = Math.imul(h, 0x846ca68b);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Keep factor of flat index `index`: `scale` when its bits are ≥ `threshold`, else 0 (`drop_keep` of the shaders). */
export function dropKeep(index: number, key: number, threshold: number, scale: number): number {
  return dropBits(index >>> 0, key) >= threshold >>> 0 ? scale : 0;
}
