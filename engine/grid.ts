/**
 * Small helpers for recording dispatches: workgroup grids and uniform float bits.
 * @module
 */

/** Bit pattern of a float32 as an unsigned 32-bit word, for uniform blocks. */
export function f32Bits(x: number): number {
  F32[0] = x;
  return U32[0];
}
const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);

/** Workgroup grid covering `n` invocations of `wg` threads, spread over x and y (≤ 65535 each). */
export function grid1d(n: number, wg = 256): [number, number] {
  const groups = Math.ceil(n / wg);
  if (groups <= 65535) return [Math.max(groups, 1), 1];
  const y = Math.ceil(groups / 65535);
  return [Math.ceil(groups / y), y];
}

/**
 * Threads per workgroup for kernels that reduce one row per workgroup: a power of two from 32 to
 * 256, about a quarter of the row length, so short rows do not pay for idle threads and barriers.
 */
export function rowWorkgroup(n: number): number {
  let wg = 32;
  while (wg < 256 && wg * 4 < n) wg *= 2;
  return wg;
}
