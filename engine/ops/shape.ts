/**
 * Shape ops: reshape/flatten/unsqueeze/squeeze (share storage), permute/transpose (strided copy),
 * slice/narrow, concat/stack and split (block copies) — each differentiable. All of them move
 * 32-bit words, so they work on f32 and i32 tensors alike.
 * @module
 */

import { grid1d, type Storage } from "../runtime.ts";
import { check, empty, runtime, Tensor } from "../tensor.ts";
import { needsGrad, record } from "../autograd.ts";
import { zeros } from "./elementwise.ts";
import { PERMUTE, SLICE } from "../kernels/indexing.ts";
import { shapeSize } from "../../formats/host_tensor.ts";

/** Resolves a possibly negative axis against `ndim` dims (`ndim + 1` slots for insertions). */
export function normalizeAxis(axis: number, ndim: number, op: string): number {
  check(Number.isInteger(axis) && axis >= -ndim && axis < ndim, op, `axis ${axis} is out of range for ${ndim} dims`);
  return axis < 0 ? axis + ndim : axis;
}

function fmt(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

/** Row-major strides of a contiguous shape. */
export function contiguousStrides(shape: readonly number[]): number[] {
  const st = new Array<number>(shape.length);
  let s = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    st[d] = s;
    s *= shape[d];
  }
  return st;
}

// ------------------------------------------------------------------ views (shared storage)

/**
 * Reinterprets `x` with a new shape of the same size (one entry may be -1 and is inferred).
 * Shares storage with `x`; the gradient is reshaped back.
 */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const inferAt = shape.indexOf(-1);
  check(shape.lastIndexOf(-1) === inferAt, "reshape", `only one dimension may be -1 in ${fmt(shape)}`);
  for (const d of shape) {
    check(Number.isInteger(d) && (d >= 0 || d === -1), "reshape", `invalid dimension ${d} in ${fmt(shape)}`);
  }
  const out = [...shape];
  if (inferAt >= 0) {
    const known = shapeSize(shape.filter((_, i) => i !== inferAt));
    check(
      known > 0 && x.size % known === 0,
      "reshape",
      `cannot infer -1 in ${fmt(shape)} for [${x.shape}] (${x.size} elements)`,
    );
    out[inferAt] = x.size / known;
  }
  check(
    shapeSize(out) === x.size,
    "reshape",
    `cannot reshape ${fmt(x.shape)} (${x.size} elements) to ${fmt(shape)} (${shapeSize(out)} elements)`,
  );
  const y = new Tensor(x.storage.retain(), out, x.dtype);
  const xs = [...x.shape];
  return record(y, "reshape", [x], (g) => [reshape(g, xs)]);
}

/** Merges dims `startDim..endDim` (inclusive, negative allowed) into one; shares storage. */
export function flatten(x: Tensor, startDim = 0, endDim = -1): Tensor {
  if (x.ndim === 0) return reshape(x, [1]);
  const s = normalizeAxis(startDim, x.ndim, "flatten");
  const e = normalizeAxis(endDim, x.ndim, "flatten");
  check(s <= e, "flatten", `startDim ${startDim} comes after endDim ${endDim} for ${fmt(x.shape)}`);
  return reshape(x, [...x.shape.slice(0, s), shapeSize(x.shape.slice(s, e + 1)), ...x.shape.slice(e + 1)]);
}

/** Inserts a size-1 dim at `dim` (in `[-ndim-1, ndim]`); shares storage. */
export function unsqueeze(x: Tensor, dim: number): Tensor {
  const d = normalizeAxis(dim, x.ndim + 1, "unsqueeze");
  return reshape(x, [...x.shape.slice(0, d), 1, ...x.shape.slice(d)]);
}

/**
 * Removes size-1 dims: all of them, or only `dim` (left unchanged when its size is not 1,
 * like PyTorch). Shares storage.
 */
export function squeeze(x: Tensor, dim?: number): Tensor {
  if (dim === undefined) return reshape(x, x.shape.filter((s) => s !== 1));
  const d = normalizeAxis(dim, x.ndim, "squeeze");
  return reshape(x, x.shape[d] === 1 ? x.shape.filter((_, i) => i !== d) : x.shape);
}

// ------------------------------------------------------------------ permute

/**
 * Reorders dims: output dim i is input dim `dims[i]` (negative allowed). Materialised with a
 * strided-copy kernel; adjacent dims that stay adjacent are merged first, and an order that
 * keeps the memory layout shares storage. Backward applies the inverse permutation.
 */
export function permute(x: Tensor, dims: readonly number[]): Tensor {
  const perm = resolvePermutation(x, dims);
  const outShape = perm.map((d) => x.shape[d]);
  const { shape, stride } = collapsePermutation(x.shape, perm);
  if (shape.length === 0 || (shape.length === 1 && stride[0] === 1) || x.size === 0) {
    return reshape(x, outShape); // layout unchanged
  }
  check(shape.length <= 8, "permute", `${fmt(x.shape)} by [${dims}] needs ${shape.length} > 8 strided dims`);
  const out = empty(outShape, x.dtype);
  const params = { n: out.size, ndim: shape.length, shape, stride };
  runtime().run(PERMUTE, params, { src: x.storage, dst: out.storage }, grid1d(out.size));
  if (!needsGrad(x)) return out;
  const inverse = new Array<number>(perm.length);
  perm.forEach((d, i) => inverse[d] = i);
  return record(out, "permute", [x], (g) => [permute(g, inverse)]);
}

/** Checks that `dims` is a permutation of x's dims and makes negative entries positive. */
function resolvePermutation(x: Tensor, dims: readonly number[]): number[] {
  const n = x.ndim;
  check(dims.length === n, "permute", `got ${dims.length} dims [${dims}] for a tensor of shape ${fmt(x.shape)}`);
  const perm = dims.map((d) => {
    check(Number.isInteger(d) && d >= -n && d < n, "permute", `dim ${d} in [${dims}] is out of range for ${n} dims`);
    return d < 0 ? d + n : d;
  });
  check(new Set(perm).size === n, "permute", `[${dims}] is not a permutation of ${n} dims`);
  return perm;
}

/**
 * The strided read of a permutation as few dims as possible: the output shape and the input strides of each
 * output dim, with size-1 dims dropped and output neighbours that are also neighbours in memory merged.
 */
function collapsePermutation(inShape: readonly number[], perm: readonly number[]): {
  shape: number[];
  stride: number[];
} {
  const inStrides = contiguousStrides(inShape);
  const shape: number[] = [], stride: number[] = [];
  for (const d of perm) {
    const s = inShape[d], t = inStrides[d];
    if (s === 1) continue;
    const last = shape.length - 1;
    if (last >= 0 && stride[last] === t * s) {
      shape[last] *= s;
      stride[last] = t;
    } else {
      shape.push(s);
      stride.push(t);
    }
  }
  return { shape, stride };
}

/** Swaps two dims (negative allowed); a materialised {@linkcode permute}. */
export function transpose(x: Tensor, dim0: number, dim1: number): Tensor {
  const a = normalizeAxis(dim0, x.ndim, "transpose");
  const b = normalizeAxis(dim1, x.ndim, "transpose");
  const perm = x.shape.map((_, i) => i);
  perm[a] = b;
  perm[b] = a;
  return permute(x, perm);
}

// ------------------------------------------------------------------ slice / concat

/** Records `dst[o, dstOff + j] = src[o, srcOff + j]` for o < outer, j < chunk (rows of words). */
function blockCopy(
  src: Storage,
  dst: Storage,
  outer: number,
  chunk: number,
  srcRow: number,
  srcOff: number,
  dstRow: number,
  dstOff: number,
): void {
  const n = outer * chunk;
  if (n === 0) return;
  runtime().run(SLICE, { n, chunk, srcRow, srcOff, dstRow, dstOff }, { src, dst }, grid1d(n));
}

function splitAt(shape: readonly number[], axis: number): { outer: number; inner: number } {
  return { outer: shapeSize(shape.slice(0, axis)), inner: shapeSize(shape.slice(axis + 1)) };
}

/**
 * Elements `start ≤ i < end` along `axis` (Python-style negative indices; `end` defaults to the
 * dim's size). Indices outside the dim throw rather than clamp. Backward writes the gradient
 * into zeros at the slice.
 */
export function slice(x: Tensor, axis: number, start: number, end?: number): Tensor {
  const ax = normalizeAxis(axis, x.ndim, "slice");
  const len = x.shape[ax];
  const s = start < 0 ? start + len : start;
  const e = end === undefined ? len : end < 0 ? end + len : end;
  check(
    Number.isInteger(s) && Number.isInteger(e) && s >= 0 && e <= len && s <= e,
    "slice",
    `range [${start}, ${end ?? len}) is out of bounds for axis ${axis} of size ${len} in ${fmt(x.shape)}`,
  );
  const outShape = [...x.shape];
  outShape[ax] = e - s;
  const out = empty(outShape, x.dtype);
  const { outer, inner } = splitAt(x.shape, ax);
  blockCopy(x.storage, out.storage, outer, (e - s) * inner, len * inner, s * inner, (e - s) * inner, 0);
  if (!needsGrad(x)) return out;
  const xs = [...x.shape];
  return record(out, "slice", [x], (g) => {
    const dx = zeros(xs);
    blockCopy(g.storage, dx.storage, outer, (e - s) * inner, (e - s) * inner, 0, len * inner, s * inner);
    return [dx];
  });
}

/** `length` elements along `axis` from `start` (negative `start` counts from the end). */
export function narrow(x: Tensor, axis: number, start: number, length: number): Tensor {
  const ax = normalizeAxis(axis, x.ndim, "narrow");
  const s = start < 0 ? start + x.shape[ax] : start;
  return slice(x, ax, s, s + length);
}

/**
 * Joins tensors of equal dtype and rank along `axis` (negative allowed); all other dims must
 * match. Backward slices the gradient back into pieces.
 */
export function concat(tensors: readonly Tensor[], axis = 0): Tensor {
  check(tensors.length > 0, "concat", "needs at least one tensor");
  const first = tensors[0];
  const ax = normalizeAxis(axis, first.ndim, "concat");
  let total = 0;
  for (const t of tensors) {
    check(t.dtype === first.dtype, "concat", `dtypes differ: ${first.dtype} and ${t.dtype}`);
    check(
      t.ndim === first.ndim && t.shape.every((d, i) => i === ax || d === first.shape[i]),
      "concat",
      `shapes ${tensors.map((u) => fmt(u.shape)).join(", ")} differ outside axis ${axis}`,
    );
    total += t.shape[ax];
  }
  const outShape = [...first.shape];
  outShape[ax] = total;
  const out = empty(outShape, first.dtype);
  const { outer, inner } = splitAt(outShape, ax);
  const offsets: number[] = [];
  let off = 0;
  for (const t of tensors) {
    offsets.push(off);
    const chunk = t.shape[ax] * inner;
    blockCopy(t.storage, out.storage, outer, chunk, chunk, 0, total * inner, off * inner);
    off += t.shape[ax];
  }
  if (!needsGrad(...tensors)) return out;
  const need = tensors.map((t) => t.requiresGrad);
  const lens = tensors.map((t) => t.shape[ax]);
  return record(
    out,
    "concat",
    tensors,
    (g) => lens.map((l, i) => need[i] ? slice(g, ax, offsets[i], offsets[i] + l) : null),
  );
}

/** Stacks tensors of identical shape along a new dim `axis` (in `[-ndim-1, ndim]`). */
export function stack(tensors: readonly Tensor[], axis = 0): Tensor {
  check(tensors.length > 0, "stack", "needs at least one tensor");
  const ax = normalizeAxis(axis, tensors[0].ndim + 1, "stack");
  for (const t of tensors) {
    check(
      t.shape.join() === tensors[0].shape.join(),
      "stack",
      `shapes ${tensors.map((u) => fmt(u.shape)).join(", ")} differ`,
    );
  }
  const parts = tensors.map((t) => unsqueeze(t, ax));
  const out = concat(parts, ax);
  for (const p of parts) p.dispose();
  return out;
}

/**
 * Splits along `axis` into pieces of `sizes` (which must sum to the dim's size), or into pieces
 * of `sizes` elements each (the last may be smaller) when a number. Each piece is a {@linkcode slice}.
 */
export function split(x: Tensor, sizes: number | readonly number[], axis = 0): Tensor[] {
  const ax = normalizeAxis(axis, x.ndim, "split");
  const len = x.shape[ax];
  let parts: number[];
  if (typeof sizes === "number") {
    check(Number.isInteger(sizes) && sizes > 0, "split", `piece size ${sizes} must be a positive integer`);
    parts = [];
    for (let s = 0; s < len; s += sizes) parts.push(Math.min(sizes, len - s));
  } else {
    parts = [...sizes];
    check(
      parts.every((p) => Number.isInteger(p) && p >= 0) && parts.reduce((a, b) => a + b, 0) === len,
      "split",
      `sizes [${parts}] do not sum to ${len} (axis ${axis} of ${fmt(x.shape)})`,
    );
  }
  const out: Tensor[] = [];
  let s = 0;
  for (const p of parts) {
    out.push(slice(x, ax, s, s + p));
    s += p;
  }
  return out;
}
