/**
 * Kernels of training: the optimiser updates over flat chunks (`adamw.wgsl`, one segment table per dispatch), the
 * in-place gradient accumulation of flat gradients (`grad_accumulate.wgsl`) and gradient-norm clipping
 * (`grad_norm.wgsl`).
 * @module
 */

import { kernel } from "../kernel.ts";

const UPDATE_PARAMS = { n: "u32", base: "u32", count: "u32", _pad: "u32" } as const;
const UPDATE_BINDINGS = { segments: "read", param: "rw", grad: "read" } as const;

/** AdamW over the segments of a chunk: moments in `s0` (m) and `s1` (v). */
export const ADAMW = kernel({
  shader: "adamw",
  entry: "adamw",
  params: UPDATE_PARAMS,
  bindings: { ...UPDATE_BINDINGS, s0: "rw", s1: "rw" },
});
/** AdamW with amsgrad: the running maximum of v in `s2`. */
export const ADAMW_AMSGRAD = kernel({
  shader: "adamw",
  entry: "adamw_amsgrad",
  params: UPDATE_PARAMS,
  bindings: { ...UPDATE_BINDINGS, s0: "rw", s1: "rw", s2: "rw" },
});
/** Plain SGD (no state). */
export const SGD = kernel({ shader: "adamw", entry: "sgd", params: UPDATE_PARAMS, bindings: UPDATE_BINDINGS });
/** SGD with momentum: the momentum buffer in `s0`. */
export const SGD_MOMENTUM = kernel({
  shader: "adamw",
  entry: "sgd_momentum",
  params: UPDATE_PARAMS,
  bindings: { ...UPDATE_BINDINGS, s0: "rw" },
});

/** dst[i] += src[i] for i < n. */
export const GRAD_ACCUMULATE = kernel({
  shader: "grad_accumulate",
  params: { n: "u32", _pad0: "u32", _pad1: "u32", _pad2: "u32" },
  bindings: { dst: "rw", src: "read" },
});

const NORM_PARAMS = { n: "u32", base: "u32", pnorm: "f32", max_norm: "f32" } as const;

/** Per-workgroup partial norms of one gradient into `dst[base + group]` (override MODE: 0 p=2, 1 any p, 2 ∞). */
export const GRAD_NORM_PARTIAL = kernel({
  shader: "grad_norm",
  entry: "partial",
  params: NORM_PARAMS,
  bindings: { src: "read", dst: "rw" },
  overrides: ["MODE"],
});
/** Combines the partials into the norm (`dst`) and the clipping coefficient min(1, max_norm / (norm + 1e-6)). */
export const GRAD_NORM_FINALIZE = kernel({
  shader: "grad_norm",
  entry: "finalize",
  params: NORM_PARAMS,
  bindings: { src: "read", dst: "rw", coef: "rw" },
  overrides: ["MODE"],
});
/** dst[i] *= src[0] (the coefficient) for i < n. */
export const GRAD_NORM_SCALE = kernel({
  shader: "grad_norm",
  entry: "scale",
  params: NORM_PARAMS,
  bindings: { src: "read", dst: "rw" },
});
