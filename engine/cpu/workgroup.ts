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

/** `log` rounded to float32. */
export const flog = (x: number): number => f(Math.log(x));

/** Float32 sum. */
export const fadd = (a: number, b: number): number => f(a + b);

/** WGSL `max` of two f32 values. */
export const fmax = (a: number, b: number): number => Math.max(a, b);

/** Combines `wg` per-thread values (`partial(lid)`) by the shaders' halving tree: red[l] ⊕= red[l + s]. */
export function treeReduce<T>(wg: number, partial: (lid: number) => T, combine: (a: T, b: T) => T): T {
  const red = Array.from({ length: wg }, (_, l) => partial(l));
  for (let s = wg >> 1; s > 0; s >>= 1) {
    for (let l = 0; l < s; l++) red[l] = combine(red[l], red[l + s]);
  }
  return red[0];
}

/** Component-wise float32 sum of two vectors (a WGSL `vecN<f32>` or matrix `+`). */
export function vadd(a: readonly number[], b: readonly number[]): number[] {
  return a.map((x, i) => f(x + b[i]));
}

/** `acc += w * v` component-wise in float32 (a WGSL `acc += w * vecN(...)`), in place. */
export function vaccumulate(acc: number[], w: number, v: readonly number[]): void {
  for (let i = 0; i < v.length; i++) acc[i] = f(acc[i] + f(w * v[i]));
}

/**
 * Folds `step` over k = start, start + stride, … < end from `init` (one thread's strided loop), returning the
 * accumulator.
 */
export function strided<T>(start: number, end: number, stride: number, init: T, step: (acc: T, k: number) => T): T {
  let acc = init;
  for (let k = start; k < end; k += stride) acc = step(acc, k);
  return acc;
}

/** The elements `gid.x + gid.y · nwg.x · wg` a `grid1d` launch of `grid` reaches below `n`: min(n, threads). */
export function covered(n: number, grid: readonly [number, number, number], wg = 256): number {
  return Math.min(n, grid[0] * grid[1] * wg);
}
