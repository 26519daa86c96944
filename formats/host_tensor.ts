/**
 * Host-side (CPU memory) tensors: what checkpoint readers produce and writers consume,
 * before data is uploaded to the GPU.
 * @module
 */

/** Element types the engine computes with. */
export type DType = "f32" | "i32";

/** A dense, row-major tensor held in CPU memory. */
export interface HostTensor {
  /** Engine dtype of `data`. */
  dtype: DType;
  /** Dimensions, outermost first. */
  shape: number[];
  /** Row-major elements; length equals the product of `shape`. */
  data: Float32Array | Int32Array;
  /** The dtype the tensor had in the file it came from (e.g. "F16", "I64", "torch.float16"), when known. */
  sourceDtype?: string;
}

/** Number of elements of a shape (1 for a scalar shape `[]`). */
export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}
