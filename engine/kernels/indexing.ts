/**
 * Kernels of the indexing and shape ops, all moving 32-bit words: gather and index-select (`gather.wgsl`), the
 * sorted scatter-add of their backward (`index_sort.wgsl` builds and sorts (row, source) pairs, `scatter_add.wgsl`
 * sums runs), masked fill and where (`masked_fill.wgsl`), block copies (`slice.wgsl`) and strided copies
 * (`permute.wgsl`).
 * @module
 */

import { kernel, shaderKernels } from "../kernel.ts";

const GATHER_PARAMS = {
  n: "u32",
  a: "u32",
  b: "u32",
  c: "u32",
  shape: "array<vec4<u32>, 2>",
  stride: "array<vec4<u32>, 2>",
} as const;
const gather = shaderKernels("gather", GATHER_PARAMS);
const GATHER_BINDINGS = { x: "read", index: "read", out: "rw" } as const;

/** torch.gather: `a` = ndim, `b` = axis, `c` = x's size along it; `shape` = index shape, `stride` = x strides. */
export const GATHER = gather("gather", GATHER_BINDINGS);
/** Row selection of x viewed as `[outer, V, inner]`: `a` = index length K, `b` = V, `c` = inner. */
export const INDEX_SELECT = gather("index_select", GATHER_BINDINGS);

const INDEX_SORT_PARAMS = {
  m: "u32",
  a: "u32",
  b: "u32",
  c: "u32",
  total: "u32",
  _pad0: "u32",
  _pad1: "u32",
  _pad2: "u32",
  shape: "array<vec4<u32>, 2>",
  stride: "array<vec4<u32>, 2>",
} as const;
const indexSort = shaderKernels("index_sort", INDEX_SORT_PARAMS);
const SORT_BINDINGS = { keys: "rw", vals: "rw" } as const;
const KEYS_BINDINGS = { keys: "rw", vals: "rw", index: "read" } as const;

/** (destination row, source) pairs of an index-select backward: `a` = K, `b` = V; padded to `total`. */
export const SORT_KEYS_ROWS = indexSort("keys_rows", KEYS_BINDINGS);
/** (destination element, source) pairs of a gather backward: `a` = ndim, `b` = axis, `c` = axis size. */
export const SORT_KEYS_GATHER = indexSort("keys_gather", KEYS_BINDINGS);
/** Bitonic sort of each block of 512 pairs in workgroup memory. */
export const SORT_LOCAL = indexSort("local_sort", SORT_BINDINGS);
/** One global bitonic compare-exchange step: block size `a` = k, distance `b` = j. */
export const SORT_GLOBAL_STEP = indexSort("global_step", SORT_BINDINGS);
/** The steps of distance < 512 of merge stage `a` = k, in workgroup memory. */
export const SORT_LOCAL_MERGE = indexSort("local_merge", SORT_BINDINGS);

const SCATTER_PARAMS = { m: "u32", inner: "u32", rows: "u32", _pad: "u32" } as const;
const scatterAdd = shaderKernels("scatter_add", SCATTER_PARAMS);

/** Partial sums of each chunk of sorted pairs into `out` (`[ceil(m / CHUNK), inner]`). */
export const SCATTER_CHUNK_PARTIALS = scatterAdd("chunk_partials", {
  keys: "read",
  vals: "read",
  src: "read",
  out: "rw",
});
/** The first pair of each run of equal rows sums the run (its chunk partials) into `out`. */
export const SCATTER_ADD = scatterAdd("main", { keys: "read", vals: "read", src: "read", out: "rw", partials: "read" });

const MASK_PARAMS = {
  n: "u32",
  ndim: "u32",
  value: "u32",
  _pad: "u32",
  shape: "array<vec4<u32>, 2>",
  mstride: "array<vec4<u32>, 2>",
  astride: "array<vec4<u32>, 2>",
  bstride: "array<vec4<u32>, 2>",
} as const;
const maskedFill = shaderKernels("masked_fill", MASK_PARAMS);

/** `out = mask ? value : a` (`INVERT`: where the mask is zero), mask f32 or i32 (`MASK_F32`), broadcast. */
export const MASKED_FILL = maskedFill("masked_fill", { a: "read", mask: "read", out: "rw" }, {
  overrides: ["MASK_F32", "INVERT"],
});
/** `out = mask ? a : b` with broadcasting of all three. */
export const WHERE_SELECT = maskedFill("where_select", { a: "read", mask: "read", out: "rw", b: "read" }, {
  overrides: ["MASK_F32", "INVERT"],
});

/** `dst[o·dstRow + dstOff + j] = src[o·srcRow + srcOff + j]` for j < chunk (n words in all). */
export const SLICE = kernel({
  shader: "slice",
  params: {
    n: "u32",
    chunk: "u32",
    srcRow: "u32",
    srcOff: "u32",
    dstRow: "u32",
    dstOff: "u32",
    _pad0: "u32",
    _pad1: "u32",
  },
  bindings: { src: "read", dst: "rw" },
});

/** Strided copy: output element i (row-major over `shape`) reads `src` at Σ coordinate · `stride`. */
export const PERMUTE = kernel({
  shader: "permute",
  params: {
    n: "u32",
    ndim: "u32",
    _pad0: "u32",
    _pad1: "u32",
    shape: "array<vec4<u32>, 2>",
    stride: "array<vec4<u32>, 2>",
  },
  bindings: { src: "read", dst: "rw" },
});
