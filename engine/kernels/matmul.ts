/**
 * Kernels of the matrix products (engine/ops/matmul_gemm.ts): the tiled fp32 kernel (`matmul.wgsl`), its
 * mixed-precision twin on cooperative matrices (`matmul_coop.wgsl`; both include `matmul_io.wgsl`, which declares
 * their shared `Params`, bindings and operand/epilogue constants), the matrix–vector kernel (`matmul_gemv.wgsl`), the
 * sum of split-K partial products with the epilogue (`matmul_splitk.wgsl`) and the operand magnitudes that scale
 * mixed-precision gradients (`tensor_scan.wgsl`'s `amax`). Tiles and flags are pipeline constants set per product.
 * @module
 */

import { kernel, shaderKernels } from "../kernel.ts";

/** `Params` of `matmul_io.wgsl`: sizes, the grid's first batch, alpha, split K and batch dims/strides. */
const TILED_PARAMS = {
  M: "u32",
  N: "u32",
  K: "u32",
  batch0: "u32",
  alpha: "f32",
  nbatch: "u32",
  kchunk: "u32",
  _p2: "u32",
  bshape: "vec4<u32>",
  astride: "vec4<u32>",
  bstride: "vec4<u32>",
} as const;
const matmul = shaderKernels("matmul", TILED_PARAMS);
const matmulCoop = shaderKernels("matmul_coop", TILED_PARAMS);

/** Bindings 1–8 of `matmul_io.wgsl`: each operand as scalars and as vec4s, bias, output, residual, pre-activation. */
const TILED_BINDINGS = {
  aS: "read",
  aV: "read",
  bS: "read",
  bV: "read",
  bias: "read",
  c: "rw",
  resid: "read",
  pre: "rw",
} as const;

/** The operand-layout and epilogue constants of `matmul_io.wgsl`. */
const OPERAND_AND_EPILOGUE = ["TRANS_A", "TRANS_B", "VEC_A", "VEC_B", "BIAS", "ACT", "RESID", "PRE"] as const;

/** The epilogue constants (also those of the split-K sum). */
const EPILOGUE = ["BIAS", "ACT", "RESID", "PRE"] as const;

/**
 * C = act(alpha · op(A) · op(B) + bias) + resid (pre-activation into `pre` when `PRE`), fp32, a
 * (WG_Y·TM) × (WG_X·TN) output tile per workgroup with a k tile of BK staged in workgroup memory.
 * Grid: (⌈N / BN⌉, ⌈M / BM⌉, batches · splits).
 */
export const MATMUL = matmul("main", TILED_BINDINGS, {
  overrides: ["WG_X", "WG_Y", "TM", "TN", "BK", ...OPERAND_AND_EPILOGUE],
});

/**
 * {@linkcode MATMUL} on cooperative matrices: f16 operands (gradients scaled by a power of two from `amax`), f32
 * accumulation; WM × WN subgroups of SG invocations, each FM × FN fragments of 16 × 16.
 */
export const MATMUL_COOP = matmulCoop("main", { ...TILED_BINDINGS, amax: "read" }, {
  overrides: ["SG", "WM", "WN", "FM", "FN", "BK", "SCALE_A", "SCALE_B", ...OPERAND_AND_EPILOGUE],
});

/**
 * The matrix–vector kernel for few output rows: C[m, n] = act(alpha · Σ_k A[m, k] · B[k, n] + bias) + resid with
 * explicit element strides (A by (m, k), B by (k, n), C by (m, n)); COLS columns per workgroup, SLICES threads
 * splitting each column's k, ROWS rows per workgroup. Grid: (⌈cols / COLS⌉, ⌈rows / ROWS⌉, batches).
 */
export const MATMUL_GEMV = kernel({
  shader: "matmul_gemv",
  params: {
    M: "u32",
    N: "u32",
    K: "u32",
    batch0: "u32",
    alpha: "f32",
    sam: "u32",
    sak: "u32",
    sbk: "u32",
    sbn: "u32",
    scm: "u32",
    scn: "u32",
    _p0: "u32",
    bshape: "vec4<u32>",
    astride: "vec4<u32>",
    bstride: "vec4<u32>",
  },
  bindings: { a: "read", b: "read", bias: "read", c: "rw", resid: "read", pre: "rw", aV: "read", bV: "read" },
  overrides: ["COLS", "SLICES", "ROWS", "KMAJOR", "VEC_A", "VEC_B", ...EPILOGUE],
});

/** c = epilogue(Σ_s part[s, :]) for split-K products with a bias, activation or residual. One thread per output. */
export const MATMUL_SPLITK_SUM = kernel({
  shader: "matmul_splitk",
  params: { size: "u32", splits: "u32", N: "u32", _p0: "u32" },
  bindings: { part: "read", bias: "read", c: "rw", resid: "read", pre: "rw" },
  overrides: EPILOGUE,
});

/** Largest |x| of `n` f32 words into `out[slot]` (atomic max of the bit patterns); `out` starts zeroed. */
export const OPERAND_AMAX = kernel({
  shader: "tensor_scan",
  entry: "amax",
  params: { n: "u32", slot: "u32", _p0: "u32", _p1: "u32" },
  bindings: { x: "read", out: "rw" },
});
