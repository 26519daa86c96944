/**
 * Non-finite checks on the GPU: how many ±Inf/NaN values each of many tensors holds, counted by
 * `shaders/tensor_scan.wgsl` and read back in one round trip (for checks before a checkpoint is written).
 * @module
 */

import { runtime, type Tensor } from "../tensor.ts";
import { FILL } from "../kernels/elementwise.ts";
import { COUNT_NONFINITE } from "../kernels/reduce.ts";

/**
 * The number of non-finite values (±Inf, NaN) in each tensor, in order: one dispatch per tensor, one readback
 * for all. i32 tensors are not floats and count 0.
 */
export async function countNonFinite(tensors: readonly Tensor[]): Promise<number[]> {
  if (tensors.length === 0) return [];
  const rt = runtime();
  const out = rt.alloc(4 * tensors.length);
  try {
    const zeros = { n: tensors.length, bits: 0, start: 0, step: 0 };
    rt.run(FILL, zeros, { y: out }, [Math.ceil(tensors.length / 256)]);
    tensors.forEach((t, slot) => {
      if (t.dtype !== "f32" || t.size === 0) return;
      const groups = Math.max(1, Math.min(1024, Math.ceil(t.size / 2048)));
      rt.run(COUNT_NONFINITE, { n: t.size, slot }, { x: t.storage, out }, [groups]);
    });
    const [raw] = await rt.read([{ storage: out, bytes: 4 * tensors.length }]);
    return Array.from(new Uint32Array(raw));
  } finally {
    out.release();
  }
}
