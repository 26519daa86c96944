/**
 * Float32 arithmetic and the fixed summation orders of the WGSL workgroup reductions, for CPU kernels whose results
 * must follow the shaders' rounding: each thread's strided partial is formed first, then the partials meet in the
 * halving tree of `workgroup_reduce.wgsl` (red[l] ⊕= red[l + s] for s = WG/2, …, 1). No threads are emulated; only
 * the order of the operations is kept.
 * @module
 */

/** Rounds to float32. */
export const f: (x: number) => number = Math.fround;

/** `exp` rounded to float32. */
export const fexp = (x: number): number => f(Math.exp(x));

/** Combines `wg` per-thread values (`partial(lid)`) by the shaders' halving tree: red[l] ⊕= red[l + s]. */
export function treeReduce<T>(wg: number, partial: (lid: number) => T, combine: (a: T, b: T) => T): T {
  const red = Array.from({ length: wg }, (_, l) => partial(l));
  for (let s = wg >> 1; s > 0; s >>= 1) {
    for (let l = 0; l < s; l++) red[l] = combine(red[l], red[l + s]);
  }
  return red[0];
}

/** The elements `gid.x + gid.y · nwg.x · wg` a `grid1d` launch of `grid` reaches below `n`: min(n, threads). */
export function covered(n: number, grid: readonly [number, number, number], wg = 256): number {
  return Math.min(n, grid[0] * grid[1] * wg);
}
