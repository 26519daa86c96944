/**
 * Kernels driven by the counter-based RNG (`rng.wgsl`, mirrored in TypeScript by `ops/dropout.ts`): dropout.
 * @module
 */

import { kernel } from "../kernel.ts";

/** Inverted dropout: `y[i] = keep(i) ? x[i] · scale : 0`, keep decided by the hash of (i, key) vs `threshold`. */
export const DROPOUT = kernel({
  shader: "dropout",
  params: { n: "u32", key: "u32", threshold: "u32", scale: "f32" },
  bindings: { x: "read", y: "rw" },
});
