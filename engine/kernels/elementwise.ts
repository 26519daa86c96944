/**
 * Kernels of the element-wise ops: fills and casts (`fill.wgsl`), unary math (`unary.wgsl`), broadcasting binary
 * arithmetic (`binary.wgsl`) and the sum back to a broadcast shape (`reduce_to.wgsl`).
 * @module
 */

import { kernel, shaderKernels } from "../kernel.ts";

const FILL_PARAMS = { n: "u32", bits: "u32", start: "f32", step: "f32" } as const;
const fill = shaderKernels("fill", FILL_PARAMS);
const UNARY_PARAMS = { n: "u32", a: "f32", b: "f32", _pad: "u32" } as const;
const unary = shaderKernels("unary", UNARY_PARAMS);

/** Writes the 32-bit pattern `bits` to `n` words. */
export const FILL = fill("main", { y: "rw" });
/** `start + i·step` as f32. */
export const ARANGE_F32 = fill("arange_f32", { y: "rw" });
/** `start + i·step` as i32. */
export const ARANGE_I32 = fill("arange_i32", { y: "rw" });
/** i32 → f32 conversion of `y` into `dst`. */
export const I32_TO_F32 = fill("i32_to_f32", { y: "rw", dst: "rw" });
/** f32 → i32 conversion (toward zero) of `y` into `dst`. */
export const F32_TO_I32 = fill("f32_to_i32", { y: "rw", dst: "rw" });

/** y = f(x) for the unary op `OP` (codes in `kernels/codes.ts`); `a`, `b` are its scalar arguments. */
export const UNARY = unary("main", { x: "read", y: "rw" }, { overrides: ["OP"] });
/** dx = g · f'(x) given the forward output y. */
export const UNARY_GRAD = unary("grad", { x: "read", y: "rw", g: "read", dx: "rw" }, { overrides: ["OP"] });
/** dx = g · f'(x) for ops whose derivative needs only x (binding `y` is unused). */
export const UNARY_GRAD_X = unary("grad_x", { x: "read", y: "read", g: "read", dx: "rw" }, {
  overrides: ["OP"],
  unused: ["y"],
});

/** out = a ∘ b with broadcasting (strides 0 along broadcast dims), for the binary op `OP`. */
export const BINARY = kernel({
  shader: "binary",
  params: {
    n: "u32",
    ndim: "u32",
    same: "u32",
    _pad: "u32",
    shape: "array<vec4<u32>, 2>",
    astride: "array<vec4<u32>, 2>",
    bstride: "array<vec4<u32>, 2>",
  },
  bindings: { a: "read", b: "read", out: "rw" },
  overrides: ["OP"],
});

/** Sums `x` (shape `full`) down to `outShape` (same rank, 1 along reduced dims). */
export const REDUCE_TO = kernel({
  shader: "reduce_to",
  params: {
    nout: "u32",
    ndim: "u32",
    nred: "u32",
    _pad: "u32",
    full: "array<vec4<u32>, 2>",
    outShape: "array<vec4<u32>, 2>",
  },
  bindings: { x: "read", y: "rw" },
});
