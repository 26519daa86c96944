/**
 * Element-wise ops: broadcasting binary arithmetic, unary math (exp, log, tanh, gelu_new, …),
 * scalar ops, fills and casts — each with its backward.
 * @module
 */

import { f32Bits, grid1d } from "../runtime.ts";
import {
  ARANGE_F32,
  ARANGE_I32,
  BINARY,
  F32_TO_I32,
  FILL,
  I32_TO_F32,
  REDUCE_TO,
  UNARY,
  UNARY_GRAD,
  UNARY_GRAD_X,
} from "../kernels/elementwise.ts";
import { BINARY_OPS, type BinaryOp, UNARY_OPS, type UnaryOp } from "../kernels/codes.ts";

export { BINARY_OPS, type BinaryOp, UNARY_OPS, type UnaryOp };
import { check, type DType, empty, runtime, type Tensor } from "../tensor.ts";
import { needsGrad, record, saveForBackward } from "../autograd.ts";

// ------------------------------------------------------------------ fills

function fillBits(shape: readonly number[], bits: number, dtype: DType): Tensor {
  const out = empty(shape, dtype);
  const n = out.size;
  runtime().run(FILL, { n, bits, start: 0, step: 0 }, { y: out.storage }, grid1d(n));
  return out;
}

/** A tensor filled with `value`. */
export function full(shape: readonly number[], value: number, dtype: DType = "f32"): Tensor {
  return fillBits(shape, dtype === "f32" ? f32Bits(value) : (value | 0) >>> 0, dtype);
}

/** A tensor of zeros. */
export function zeros(shape: readonly number[], dtype: DType = "f32"): Tensor {
  return fillBits(shape, 0, dtype);
}

/** A tensor of ones. */
export function ones(shape: readonly number[], dtype: DType = "f32"): Tensor {
  return full(shape, 1, dtype);
}

/** `[start, start + step, …]` with `n` elements. */
export function arange(n: number, options: { start?: number; step?: number; dtype?: DType } = {}): Tensor {
  const dtype = options.dtype ?? "i32";
  const out = empty([n], dtype);
  const params = { n, bits: 0, start: options.start ?? 0, step: options.step ?? 1 };
  runtime().run(dtype === "f32" ? ARANGE_F32 : ARANGE_I32, params, { y: out.storage }, grid1d(n));
  return out;
}

/** Converts between f32 and i32 (f32 → i32 truncates toward zero). */
export function cast(x: Tensor, dtype: DType): Tensor {
  if (x.dtype === dtype) return x.detach();
  const out = empty(x.shape, dtype);
  const convert = dtype === "f32" ? I32_TO_F32 : F32_TO_I32;
  const params = { n: x.size, bits: 0, start: 0, step: 0 };
  runtime().run(convert, params, { y: x.storage, dst: out.storage }, grid1d(x.size));
  return out;
}

// ------------------------------------------------------------------ unary

function unary(name: UnaryOp, x: Tensor, a = 0, b = 0): Tensor {
  check(x.dtype === "f32", name, `expects an f32 tensor, got ${x.dtype}`);
  const out = empty(x.shape);
  const n = x.size;
  const op = { OP: UNARY_OPS[name] };
  const params = { n, a, b };
  runtime().run(UNARY, params, { x: x.storage, y: out.storage }, grid1d(n), op);
  if (!needsGrad(x)) return out;
  const sx = saveForBackward(x);
  const sy = saveForBackward(out);
  return record(out, name, [x], (g) => {
    const dx = empty(x.shape);
    const bindings = { x: sx.storage, y: sy.storage, g: g.storage, dx: dx.storage };
    runtime().run(UNARY_GRAD, params, bindings, grid1d(n), op);
    return [dx];
  }, [sx, sy]);
}

/**
 * dx = g · f'(x) for an activation whose derivative needs only its input (no autograd; used by the
 * backward of matmul epilogues, which keep the pre-activation). Same formula as the op's own backward.
 */
export function activationGrad(name: "gelu" | "geluNew" | "relu", x: Tensor, g: Tensor): Tensor {
  check(x.dtype === "f32" && g.dtype === "f32" && x.size === g.size, name, "activationGrad: mismatched tensors");
  const dx = empty(x.shape);
  const n = x.size;
  // Binding `y` (the forward output) is unused by `grad_x`; x fills it.
  const bindings = { x: x.storage, y: x.storage, g: g.storage, dx: dx.storage };
  runtime().run(UNARY_GRAD_X, { n, a: 0, b: 0 }, bindings, grid1d(n), { OP: UNARY_OPS[name] });
  return dx;
}

/** −x */
export const neg = (x: Tensor): Tensor => unary("neg", x);
/** eˣ */
export const exp = (x: Tensor): Tensor => unary("exp", x);
/** Natural logarithm. */
export const log = (x: Tensor): Tensor => unary("log", x);
/** Hyperbolic tangent (argument clamped to ±15, so never NaN). */
export const tanh = (x: Tensor): Tensor => unary("tanh", x);
/** GPT-2's gelu_new: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))). */
export const geluNew = (x: Tensor): Tensor => unary("geluNew", x);
/** Exact GELU (BERT's "gelu"): 0.5·x·(1 + erf(x/√2)). */
export const gelu = (x: Tensor): Tensor => unary("gelu", x);
/** max(x, 0) */
export const relu = (x: Tensor): Tensor => unary("relu", x);
/** 1 / (1 + e^−x) */
export const sigmoid = (x: Tensor): Tensor => unary("sigmoid", x);
/** √x */
export const sqrt = (x: Tensor): Tensor => unary("sqrt", x);
/** 1/√x */
export const rsqrt = (x: Tensor): Tensor => unary("rsqrt", x);
/** |x| */
export const abs = (x: Tensor): Tensor => unary("abs", x);
/** x² */
export const square = (x: Tensor): Tensor => unary("square", x);
/** xᵖ for a scalar exponent. */
export const powScalar = (x: Tensor, p: number): Tensor => unary("pow", x, p);
/** Clamps into [lo, hi]. */
export const clamp = (x: Tensor, lo: number, hi: number): Tensor => unary("clamp", x, lo, hi);
/** x + s */
export const addScalar = (x: Tensor, s: number): Tensor => unary("affine", x, 1, s);
/** x · s */
export const mulScalar = (x: Tensor, s: number): Tensor => unary("affine", x, s, 0);
/** a·x + b in one kernel. */
export const affine = (x: Tensor, a: number, b: number): Tensor => unary("affine", x, a, b);

// ------------------------------------------------------------------ binary

/** The broadcast result shape of two shapes (NumPy rules); throws naming the op on mismatch. */
export function broadcastShapes(a: readonly number[], b: readonly number[], op = "broadcast"): number[] {
  const n = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const da = a[a.length - n + i] ?? 1;
    const db = b[b.length - n + i] ?? 1;
    check(da === db || da === 1 || db === 1, op, `shapes [${a}] and [${b}] do not broadcast`);
    out.push(da === 1 ? db : da);
  }
  return out;
}

/** Strides of `shape` read as broadcast to `outShape` (0 along broadcast dims), for strided kernels. */
export function broadcastStrides(shape: readonly number[], outShape: readonly number[]): number[] {
  const n = outShape.length;
  const full = [...new Array(n - shape.length).fill(1), ...shape];
  const st = new Array<number>(n).fill(0);
  let s = 1;
  for (let d = n - 1; d >= 0; d--) {
    st[d] = full[d] === 1 && outShape[d] !== 1 ? 0 : s;
    s *= full[d];
  }
  return st;
}

/** Element-wise binary op without autograd (also used inside backward passes). */
export function binaryRaw(name: BinaryOp, a: Tensor, b: Tensor): Tensor {
  check(a.dtype === "f32" && b.dtype === "f32", name, `expects f32 tensors, got ${a.dtype} and ${b.dtype}`);
  const shape = broadcastShapes(a.shape, b.shape, name);
  check(shape.length <= 8, name, "at most 8 dimensions");
  const out = empty(shape);
  const n = out.size;
  const same = a.shape.join() === b.shape.join() ? 1 : 0;
  const params = {
    n,
    ndim: shape.length,
    same,
    shape,
    astride: broadcastStrides(a.shape, shape),
    bstride: broadcastStrides(b.shape, shape),
  };
  const bindings = { a: a.storage, b: b.storage, out: out.storage };
  runtime().run(BINARY, params, bindings, grid1d(n), { OP: BINARY_OPS[name] });
  return out;
}

/**
 * Sums `x` down to `shape` (the inverse of broadcasting `shape` up to `x.shape`).
 * Used by the backward of broadcasting ops; differentiable.
 */
export function sumTo(x: Tensor, shape: readonly number[]): Tensor {
  if (x.shape.join() === shape.join()) return x.detach();
  const n = x.ndim;
  check(shape.length <= n, "sumTo", `cannot reduce [${x.shape}] to [${shape}]`);
  const outShape = [...new Array(n - shape.length).fill(1), ...shape];
  for (let d = 0; d < n; d++) {
    check(outShape[d] === x.shape[d] || outShape[d] === 1, "sumTo", `cannot reduce [${x.shape}] to [${shape}]`);
  }
  const out = empty(shape);
  const nout = out.size;
  const nred = nout === 0 ? 0 : x.size / nout;
  const params = { nout, ndim: n, nred, full: x.shape, outShape };
  runtime().run(REDUCE_TO, params, { x: x.storage, y: out.storage }, grid1d(nout));
  const full = [...x.shape];
  return record(out, "sumTo", [x], (g) => [expandTo(g, full)]);
}

/** Broadcasts `x` to `shape` (materialised copy); differentiable. */
export function expandTo(x: Tensor, shape: readonly number[]): Tensor {
  const zero = zeros(shape);
  const out = binaryRaw("add", zero, x);
  zero.dispose();
  const xs = [...x.shape];
  return record(out, "expand", [x], (g) => [sumTo(g, xs)]);
}

function binary(name: "add" | "sub" | "mul" | "div", a: Tensor, b: Tensor): Tensor {
  const out = binaryRaw(name, a, b);
  if (!needsGrad(a, b)) return out;
  const sa = name === "mul" || name === "div" ? saveForBackward(a) : null;
  const sb = name === "mul" || name === "div" ? saveForBackward(b) : null;
  const as = [...a.shape], bs = [...b.shape];
  const reduce = (g: Tensor, shape: number[]) => {
    const r = sumTo(g, shape);
    g.dispose();
    return r;
  };
  return record(out, name, [a, b], (g) => {
    let ga: Tensor, gb: Tensor;
    switch (name) {
      case "add":
        ga = sumTo(g, as);
        gb = sumTo(g, bs);
        break;
      case "sub":
        ga = sumTo(g, as);
        gb = reduce(neg(g), bs);
        break;
      case "mul":
        ga = reduce(binaryRaw("mul", g, sb!), as);
        gb = reduce(binaryRaw("mul", g, sa!), bs);
        break;
      case "div": {
        ga = reduce(binaryRaw("div", g, sb!), as);
        const q = binaryRaw("div", sa!, sb!);
        const t = binaryRaw("div", q, sb!);
        q.dispose();
        const m = binaryRaw("mul", g, t);
        t.dispose();
        gb = reduce(neg(m), bs);
        m.dispose();
        break;
      }
    }
    return [ga, gb];
  }, [sa, sb].filter((t): t is Tensor => t !== null));
}

/** a + b (broadcasting). */
export const add = (a: Tensor, b: Tensor): Tensor => binary("add", a, b);
/** a − b (broadcasting). */
export const sub = (a: Tensor, b: Tensor): Tensor => binary("sub", a, b);
/** a · b (broadcasting). */
export const mul = (a: Tensor, b: Tensor): Tensor => binary("mul", a, b);
/** a / b (broadcasting). */
export const div = (a: Tensor, b: Tensor): Tensor => binary("div", a, b);
/** Element-wise maximum (no gradient). */
export const maximum = (a: Tensor, b: Tensor): Tensor => binaryRaw("maximum", a, b);
/** Element-wise minimum (no gradient). */
export const minimum = (a: Tensor, b: Tensor): Tensor => binaryRaw("minimum", a, b);
