/**
 * The shape PPO's host-side math works on: small `[batch, responseLength]` arrays of numbers in float64,
 * one row per sample. The trainer reads the rollout back once and does this math on the CPU.
 * @module
 */

/** A `[rows, cols]` array of numbers (one row per sample). */
export type Rows = number[][];

/** Throws `op: an and bn must have the same shape` unless `a` and `b` have the same rows and row lengths. */
export function assertSameShape(op: string, a: Rows, b: Rows, aName: string, bName: string): void {
  if (a.length !== b.length || a.some((row, i) => row.length !== b[i].length)) {
    throw new Error(`${op}: ${aName} and ${bName} must have the same shape`);
  }
}
