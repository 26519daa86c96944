/**
 * Reductions over one axis or over all elements: {@linkcode sum}, {@linkcode mean}, {@linkcode max}
 * (values, differentiable) and {@linkcode argmax} (indices) — each kernel sees the input as
 * `[outer, n, inner]` around the reduced axis.
 * @module
 */

import { grid1d, rowWorkgroup, type Storage } from "../runtime.ts";
import {
  EXPAND_GRAD,
  MAX_COLS,
  MAX_GRAD,
  MAX_ROWS,
  SUM_COLS,
  SUM_COLS_SPLIT,
  SUM_PARTIAL,
  SUM_ROWS,
} from "../kernels/reduce.ts";
import { check, empty, runtime, type Tensor } from "../tensor.ts";
import { needsGrad, record, saveForBackward } from "../autograd.ts";
// Side effect: installs the ops autograd needs (ones for a scalar root, add for accumulation).
import "./elementwise.ts";

/** Rows longer than this are summed in two passes when there are few of them. */
const TWO_PASS_MIN = 4096;
/** Elements each first-pass workgroup aims to sum in a two-pass row reduction. */
const PER_GROUP = 2048;
/** "Few" rows or columns: below this many outputs a long reduction is split into two passes. */
const FEW_OUTPUTS = 1024;
/** Threads a split column reduction aims for in its first pass. */
const SPLIT_THREADS = 65536;
/** Rows at most this long are reduced one thread per row instead of one workgroup per row. */
const SHORT_ROW = 32;

/** How a reduction sees its input: `[outer, n, inner]` plus the output shape. */
interface ReduceView {
  outer: number;
  n: number;
  inner: number;
  outShape: number[];
}

/**
 * Normalises `axis` (negative counts from the end; null/undefined = all elements) for `x` and
 * returns the `[outer, n, inner]` view and output shapes.
 */
function reduceView(op: string, x: Tensor, axis: number | null | undefined, keepDim: boolean): ReduceView {
  const shape = [...x.shape];
  if (axis === null || axis === undefined) {
    return { outer: 1, n: x.size, inner: 1, outShape: keepDim ? shape.map(() => 1) : [] };
  }
  const nd = shape.length;
  check(Number.isInteger(axis), op, `axis must be an integer, got ${axis}`);
  check(axis >= -nd && axis < nd, op, `axis ${axis} is out of range for shape [${shape}]`);
  const a = axis < 0 ? axis + nd : axis;
  const outer = shape.slice(0, a).reduce((p, d) => p * d, 1);
  const inner = shape.slice(a + 1).reduce((p, d) => p * d, 1);
  const kept = shape.map((d, i) => i === a ? 1 : d);
  const outShape = keepDim ? kept : shape.filter((_, i) => i !== a);
  return { outer, n: shape[a], inner, outShape };
}

/** The uniform fields of a `reduce.wgsl` kernel over view `v`. */
function reduceParams(v: ReduceView, scale: number, groups = 0) {
  return { outer: v.outer, n: v.n, inner: v.inner, scale, total: v.outer * v.n * v.inner, groups };
}

/** Sum over the view's n, times `scale`, into a new tensor of `shape` (no autograd). */
function sumRaw(x: Tensor, v: ReduceView, scale: number, shape: number[]): Tensor {
  const out = empty(shape);
  const nout = v.outer * v.inner;
  if (v.inner === 1 && v.outer < FEW_OUTPUTS && v.n > TWO_PASS_MIN) sumFewLongRows(x, v, scale, out);
  else if (v.inner === 1 && v.n > SHORT_ROW) sumRows(x.storage, v, scale, out);
  else if (nout < FEW_OUTPUTS * 16 && v.n >= 64) sumFewLongColumns(x, v, scale, out);
  else runtime().run(SUM_COLS, reduceParams(v, scale), { x: x.storage, y: out.storage }, grid1d(nout));
  return out;
}

/** One workgroup per row of `src` (viewed by `v`) sums the row into `out`. */
function sumRows(src: Storage, v: ReduceView, scale: number, out: Tensor): void {
  const nout = v.outer * v.inner;
  const wg = { WG: rowWorkgroup(v.n) };
  runtime().run(SUM_ROWS, reduceParams(v, scale), { x: src, y: out.storage }, grid1d(nout, 1), wg);
}

/** Few long rows: G partial sums per row, then one workgroup per row over the partials. */
function sumFewLongRows(x: Tensor, v: ReduceView, scale: number, out: Tensor): void {
  const groups = Math.min(256, Math.ceil(v.n / PER_GROUP));
  const partial = empty([v.outer, groups]);
  const bindings = { x: x.storage, y: partial.storage };
  runtime().run(SUM_PARTIAL, reduceParams(v, 1, groups), bindings, [groups, v.outer]);
  sumRows(partial.storage, { ...v, n: groups }, scale, out);
  partial.dispose();
}

/** Few long columns: each thread sums a chunk of a column, then the chunks are summed. */
function sumFewLongColumns(x: Tensor, v: ReduceView, scale: number, out: Tensor): void {
  const rt = runtime();
  const nout = v.outer * v.inner;
  const chunk = Math.max(16, Math.ceil(v.n / Math.ceil(SPLIT_THREADS / nout)));
  const chunks = Math.ceil(v.n / chunk);
  const partial = empty([v.outer, chunks, v.inner]);
  rt.run(SUM_COLS_SPLIT, reduceParams(v, 1, chunk), { x: x.storage, y: partial.storage }, grid1d(partial.size));
  const second: ReduceView = { ...v, n: chunks };
  rt.run(SUM_COLS, reduceParams(second, scale), { x: partial.storage, y: out.storage }, grid1d(nout));
  partial.dispose();
}

function sumLike(op: string, x: Tensor, axis: number | null | undefined, keepDim: boolean, isMean: boolean): Tensor {
  check(x.dtype === "f32", op, `expects an f32 tensor, got ${x.dtype}`);
  const v = reduceView(op, x, axis, keepDim);
  const scale = isMean ? 1 / v.n : 1;
  const out = sumRaw(x, v, scale, v.outShape);
  if (!needsGrad(x)) return out;
  const inShape = [...x.shape];
  return record(out, op, [x], (g) => {
    const dx = empty(inShape);
    runtime().run(EXPAND_GRAD, reduceParams(v, scale), { x: g.storage, y: dx.storage }, grid1d(dx.size));
    return [dx];
  });
}

/**
 * Sum of the elements of `x` along `axis` (like `torch.sum`); differentiable.
 * @param x f32 tensor.
 * @param axis Axis to reduce (negative counts from the end); null or omitted sums every element.
 * @param keepDim Keep the reduced axis (or every axis, for a full sum) with size 1.
 * @returns The sums; shape `[]` (one element) for a full sum without `keepDim`.
 */
export function sum(x: Tensor, axis?: number | null, keepDim = false): Tensor {
  return sumLike("sum", x, axis, keepDim, false);
}

/**
 * Mean of the elements of `x` along `axis` (like `torch.mean`); differentiable. The mean of an
 * empty axis is NaN.
 * @param x f32 tensor.
 * @param axis Axis to reduce (negative counts from the end); null or omitted averages every element.
 * @param keepDim Keep the reduced axis (or every axis) with size 1.
 * @returns The means; shape `[]` for a full mean without `keepDim`.
 */
export function mean(x: Tensor, axis?: number | null, keepDim = false): Tensor {
  return sumLike("mean", x, axis, keepDim, true);
}

/** Values and first arg-max indices (i32) along the view's n (no autograd). */
function maxRaw(op: string, x: Tensor, v: ReduceView, shape: number[]): [Tensor, Tensor] {
  check(x.dtype === "f32", op, `expects an f32 tensor, got ${x.dtype}`);
  check(v.n > 0, op, `cannot reduce an empty axis of shape [${x.shape}]`);
  const vals = empty(shape);
  const idx = empty(shape, "i32");
  const nout = v.outer * v.inner;
  const rows = v.inner === 1 && v.n > SHORT_ROW;
  const bindings = { x: x.storage, y: vals.storage, yi: idx.storage };
  if (rows) runtime().run(MAX_ROWS, reduceParams(v, 1), bindings, grid1d(nout, 1), { WG: rowWorkgroup(v.n) });
  else runtime().run(MAX_COLS, reduceParams(v, 1), bindings, grid1d(nout));
  return [vals, idx];
}

/**
 * Maximum of `x` along `axis` (the values of `torch.max(x, dim)`); differentiable: the gradient
 * flows to the first position holding the maximum. NaNs are not propagated (they are skipped
 * unless they come first).
 * @param x f32 tensor.
 * @param axis Axis to reduce (negative counts from the end); null takes the maximum of every element.
 * @param keepDim Keep the reduced axis (or every axis) with size 1.
 * @returns The maxima.
 */
export function max(x: Tensor, axis: number | null, keepDim = false): Tensor {
  const v = reduceView("max", x, axis, keepDim);
  const [vals, idx] = maxRaw("max", x, v, v.outShape);
  if (!needsGrad(x)) {
    idx.dispose();
    return vals;
  }
  const sidx = saveForBackward(idx);
  idx.dispose();
  const inShape = [...x.shape];
  return record(vals, "max", [x], (g) => {
    const dx = empty(inShape);
    const bindings = { x: g.storage, y: dx.storage, yi: sidx.storage };
    runtime().run(MAX_GRAD, reduceParams(v, 1), bindings, grid1d(dx.size));
    return [dx];
  }, [sidx]);
}

/**
 * Index of the maximum of `x` along `axis` (first occurrence on ties), as i32; not differentiable.
 * @param x f32 tensor.
 * @param axis Axis to reduce (negative counts from the end); null gives the flat index over all elements.
 * @param keepDim Keep the reduced axis (or every axis) with size 1.
 * @returns i32 indices into the reduced axis.
 */
export function argmax(x: Tensor, axis: number | null, keepDim = false): Tensor {
  const v = reduceView("argmax", x, axis, keepDim);
  const [vals, idx] = maxRaw("argmax", x, v, v.outShape);
  vals.dispose();
  return idx;
}
