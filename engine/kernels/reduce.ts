/**
 * Kernels of the reductions: sums and maxima along one axis (`reduce.wgsl`, the input seen as `[outer, n, inner]`),
 * softmax over rows (`softmax.wgsl`), layer normalisation (`layer_norm.wgsl`) and whole-tensor scans
 * (`tensor_scan.wgsl`).
 * @module
 */

import { kernel, shaderKernels } from "../kernel.ts";

const REDUCE_PARAMS = {
  outer: "u32",
  n: "u32",
  inner: "u32",
  scale: "f32",
  total: "u32",
  groups: "u32",
  _pad0: "u32",
  _pad1: "u32",
} as const;
const reduce = shaderKernels("reduce", REDUCE_PARAMS);
const REDUCE_SUM_BINDINGS = { x: "read", y: "rw" } as const;
const REDUCE_MAX_BINDINGS = { x: "read", y: "rw", yi: "rw" } as const;

/** One workgroup of `WG` threads per row: `y[row] = scale · Σ x[row, :]` (rows with `inner = 1`). */
export const SUM_ROWS = reduce("sum_rows", REDUCE_SUM_BINDINGS, { overrides: ["WG"] });
/** First pass of a long-row sum: `groups` partial sums per row into `y` (`[outer, groups]`). */
export const SUM_PARTIAL = reduce("sum_partial", REDUCE_SUM_BINDINGS);
/** First pass of a long-column sum: each thread sums `groups` (a chunk length) elements of a column. */
export const SUM_COLS_SPLIT = reduce("sum_cols_split", REDUCE_SUM_BINDINGS);
/** One thread per output: `y[o, i] = scale · Σ_k x[o, k, i]`. */
export const SUM_COLS = reduce("sum_cols", REDUCE_SUM_BINDINGS);
/** Backward of a sum: `y[o, k, i] = scale · x[o, i]` (the gradient broadcast back over the axis). */
export const EXPAND_GRAD = reduce("expand_grad", REDUCE_SUM_BINDINGS);
/** One workgroup of `WG` threads per row: the row's maximum into `y` and its first index into `yi`. */
export const MAX_ROWS = reduce("max_rows", REDUCE_MAX_BINDINGS, { overrides: ["WG"] });
/** One thread per output: the maximum over the axis into `y` and its first index into `yi`. */
export const MAX_COLS = reduce("max_cols", REDUCE_MAX_BINDINGS);
/** Backward of a maximum: the gradient `x` goes to the saved index `yi` of `y`, zeros elsewhere. */
export const MAX_GRAD = reduce("max_grad", REDUCE_MAX_BINDINGS);

const SOFTMAX_PARAMS = { rows: "u32", n: "u32", _pad0: "u32", _pad1: "u32" } as const;
const softmax = shaderKernels("softmax", SOFTMAX_PARAMS);

/** Softmax (or log-softmax with `LOG`) of each row of `x`, one workgroup of `WG` threads per row. */
export const SOFTMAX = softmax("main", { x: "read", y: "rw" }, { overrides: ["LOG", "WG"] });
/** Softmax backward from the forward output `x` and the gradient `g` into `y`. */
export const SOFTMAX_GRAD = softmax("grad", { x: "read", y: "rw", g: "read" }, { overrides: ["LOG", "WG"] });

const LAYER_NORM_PARAMS = {
  rows: "u32",
  C: "u32",
  eps: "f32",
  chunk: "u32",
  nchunks: "u32",
  _p0: "u32",
  _p1: "u32",
  _p2: "u32",
} as const;
const layerNorm = shaderKernels("layer_norm", LAYER_NORM_PARAMS);

/** Normalises each row of `x` (one workgroup of `WG` threads per row); mean and 1/σ per row into `stats`. */
export const LAYER_NORM = layerNorm("main", { x: "read", w: "read", bias: "read", y: "rw", stats: "rw" }, {
  overrides: ["WG"],
});
/** dx of a layer norm per row, from x, the weight, the output gradient `gy` and the saved stats `st`. */
export const LAYER_NORM_GRAD_X = layerNorm("grad_x", { x: "read", w: "read", gy: "read", dx: "rw", st: "read" }, {
  overrides: ["WG"],
});
/** Per-chunk partial sums of dweight (`dw`) and dbias (`db`), `[nchunks, C]` each. */
export const LAYER_NORM_GRAD_WB = layerNorm("grad_wb", { x: "read", g2: "read", st2: "read", dw: "rw", db: "rw" });
/** Sums `[nchunks, C]` partials over the chunks into `[C]`. */
export const LAYER_NORM_SUM_CHUNKS = layerNorm("sum_chunks", { part: "read", total: "rw" });

/** Adds the number of non-finite f32 values of `x` (`n` words) to the counter `out[slot]`. */
export const COUNT_NONFINITE = kernel({
  shader: "tensor_scan",
  entry: "nonfinite",
  params: { n: "u32", slot: "u32", _p0: "u32", _p1: "u32" },
  bindings: { x: "read", out: "rw" },
});
