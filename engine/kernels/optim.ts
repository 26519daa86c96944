/**
 * Kernels of training: the optimiser updates over flat chunks (`adamw.wgsl`, one segment table per dispatch), the
 * in-place gradient accumulation of flat gradients (`grad_accumulate.wgsl`) and gradient-norm clipping
 * (`grad_norm.wgsl`).
 * @module
 */

import { kernel, shaderKernels } from "../kernel.ts";

const UPDATE_PARAMS = { n: "u32", base: "u32", count: "u32", _pad: "u32" } as const;
const adamw = shaderKernels("adamw", UPDATE_PARAMS);
const UPDATE_BINDINGS = { segments: "read", param: "rw", grad: "read" } as const;

/** AdamW over the segments of a chunk: moments in `s0` (m) and `s1` (v). */
export const ADAMW = adamw("adamw", { ...UPDATE_BINDINGS, s0: "rw", s1: "rw" });
/** AdamW with amsgrad: the running maximum of v in `s2`. */
export const ADAMW_AMSGRAD = adamw("adamw_amsgrad", { ...UPDATE_BINDINGS, s0: "rw", s1: "rw", s2: "rw" });
/** Plain SGD (no state). */
export const SGD = adamw("sgd", UPDATE_BINDINGS);
/** SGD with momentum: the momentum buffer in `s0`. */
export const SGD_MOMENTUM = adamw("sgd_momentum", { ...UPDATE_BINDINGS, s0: "rw" });

/** dst[i] += src[i] for i < n. */
export const GRAD_ACCUMULATE = kernel({
  shader: "grad_accumulate",
  params: { n: "u32", _pad0: "u32", _pad1: "u32", _pad2: "u32" },
  bindings: { dst: "rw", src: "read" },
});

const NORM_PARAMS = { n: "u32", base: "u32", pnorm: "f32", max_norm: "f32" } as const;
const gradNorm = shaderKernels("grad_norm", NORM_PARAMS);

/** Per-workgroup partial norms of one gradient into `dst[base + group]` (override MODE: 0 p=2, 1 any p, 2 ∞). */
export const GRAD_NORM_PARTIAL = gradNorm("partial", { src: "read", dst: "rw" }, { overrides: ["MODE"] });
/** Combines the partials into the norm (`dst`) and the clipping coefficient min(1, max_norm / (norm + 1e-6)). */
export const GRAD_NORM_FINALIZE = gradNorm("finalize", { src: "read", dst: "rw", coef: "rw" }, { overrides: ["MODE"] });
/** dst[i] *= src[0] (the coefficient) for i < n. */
export const GRAD_NORM_SCALE = gradNorm("scale", { src: "read", dst: "rw" });
