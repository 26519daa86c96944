/**
 * Kernels of the reductions: sums and maxima along one axis (`reduce.wgsl`, the input seen as `[outer, n, inner]`),
 * softmax over rows (`softmax.wgsl`), layer normalisation (`layer_norm.wgsl`) and whole-tensor scans
 * (`tensor_scan.wgsl`).
 * @module
 */

import { kernel } from "../kernel.ts";

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
const REDUCE_SUM_BINDINGS = { x: "read", y: "rw" } as const;
const REDUCE_MAX_BINDINGS = { x: "read", y: "rw", yi: "rw" } as const;

/** One workgroup of `WG` threads per row: `y[row] = scale · Σ x[row, :]` (rows with `inner = 1`). */
export const SUM_ROWS = kernel({
  shader: "reduce",
  entry: "sum_rows",
  params: REDUCE_PARAMS,
  bindings: REDUCE_SUM_BINDINGS,
  overrides: ["WG"],
});
/** First pass of a long-row sum: `groups` partial sums per row into `y` (`[outer, groups]`). */
export const SUM_PARTIAL = kernel({
  shader: "reduce",
  entry: "sum_partial",
  params: REDUCE_PARAMS,
  bindings: REDUCE_SUM_BINDINGS,
});
/** First pass of a long-column sum: each thread sums `groups` (a chunk length) elements of a column. */
export const SUM_COLS_SPLIT = kernel({
  shader: "reduce",
  entry: "sum_cols_split",
  params: REDUCE_PARAMS,
  bindings: REDUCE_SUM_BINDINGS,
});
/** One thread per output: `y[o, i] = scale · Σ_k x[o, k, i]`. */
export const SUM_COLS = kernel({
  shader: "reduce",
  entry: "sum_cols",
  params: REDUCE_PARAMS,
  bindings: REDUCE_SUM_BINDINGS,
});
/** Backward of a sum: `y[o, k, i] = scale · x[o, i]` (the gradient broadcast back over the axis). */
export const EXPAND_GRAD = kernel({
  shader: "reduce",
  entry: "expand_grad",
  params: REDUCE_PARAMS,
  bindings: REDUCE_SUM_BINDINGS,
});
/** One workgroup of `WG` threads per row: the row's maximum into `y` and its first index into `yi`. */
export const MAX_ROWS = kernel({
  shader: "reduce",
  entry: "max_rows",
  params: REDUCE_PARAMS,
  bindings: REDUCE_MAX_BINDINGS,
  overrides: ["WG"],
});
/** One thread per output: the maximum over the axis into `y` and its first index into `yi`. */
export const MAX_COLS = kernel({
  shader: "reduce",
  entry: "max_cols",
  params: REDUCE_PARAMS,
  bindings: REDUCE_MAX_BINDINGS,
});
/** Backward of a maximum: the gradient `x` goes to the saved index `yi` of `y`, zeros elsewhere. */
export const MAX_GRAD = kernel({
  shader: "reduce",
  entry: "max_grad",
  params: REDUCE_PARAMS,
  bindings: REDUCE_MAX_BINDINGS,
});

const SOFTMAX_PARAMS = { rows: "u32", n: "u32", _pad0: "u32", _pad1: "u32" } as const;

/** Softmax (or log-softmax with `LOG`) of each row of `x`, one workgroup of `WG` threads per row. */
export const SOFTMAX = kernel({
  shader: "softmax",
  params: SOFTMAX_PARAMS,
  bindings: { x: "read", y: "rw" },
  overrides: ["LOG", "WG"],
});
/** Softmax backward from the forward output `x` and the gradient `g` into `y`. */
export const SOFTMAX_GRAD = kernel({
  shader: "softmax",
  entry: "grad",
  params: SOFTMAX_PARAMS,
  bindings: { x: "read", y: "rw", g: "read" },
  overrides: ["LOG", "WG"],
});

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

/** Normalises each row of `x` (one workgroup of `WG` threads per row); mean and 1/σ per row into `stats`. */
export const LAYER_NORM = kernel({
  shader: "layer_norm",
  params: LAYER_NORM_PARAMS,
  bindings: { x: "read", w: "read", bias: "read", y: "rw", stats: "rw" },
  overrides: ["WG"],
});
/** dx of a layer norm per row, from x, the weight, the output gradient `gy` and the saved stats `st`. */
export const LAYER_NORM_GRAD_X = kernel({
  shader: "layer_norm",
  entry: "grad_x",
  params: LAYER_NORM_PARAMS,
  bindings: { x: "read", w: "read", gy: "read", dx: "rw", st: "read" },
  overrides: ["WG"],
});
/** Per-chunk partial sums of dweight (`dw`) and dbias (`db`), `[nchunks, C]` each. */
export const LAYER_NORM_GRAD_WB = kernel({
  shader: "layer_norm",
  entry: "grad_wb",
  params: LAYER_NORM_PARAMS,
  bindings: { x: "read", g2: "read", st2: "read", dw: "rw", db: "rw" },
});
/** Sums `[nchunks, C]` partials over the chunks into `[C]`. */
export const LAYER_NORM_SUM_CHUNKS = kernel({
  shader: "layer_norm",
  entry: "sum_chunks",
  params: LAYER_NORM_PARAMS,
  bindings: { part: "read", total: "rw" },
});

/** Adds the number of non-finite f32 values of `x` (`n` words) to the counter `out[slot]`. */
export const COUNT_NONFINITE = kernel({
  shader: "tensor_scan",
  entry: "nonfinite",
  params: { n: "u32", slot: "u32", _p0: "u32", _p1: "u32" },
  bindings: { x: "read", out: "rw" },
});
