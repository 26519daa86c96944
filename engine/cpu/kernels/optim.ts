/**
 * CPU kernels of the training family (`engine/kernels/optim.ts`): the optimiser updates of `adamw.wgsl` (AdamW with
 * and without amsgrad, SGD with and without momentum) driven by a segment table of per-parameter flags and
 * hyper-parameters h0…h6, the in-place gradient accumulation (`grad_accumulate.wgsl`) and gradient-norm clipping
 * (`grad_norm.wgsl`: per-workgroup partials over the same partition of the elements, their combination into the
 * norm and clipping coefficient, and the scaling).
 *
 * AdamW without amsgrad (torch's lerp form) runs four float32 lanes at a time in `../simd.ts`, rounding after every
 * operation as the shaders do; the other updates are plain element loops in float64, results stored as float32 (only
 * the rounding differs). The updates run segment by segment with each parameter's hyper-parameters hoisted out of its
 * loop; the norms accumulate each workgroup's elements in float64 in index order rather than the shader's strided
 * threads and halving tree.
 * @module
 */

import * as K from "../../kernels/optim.ts";
import { defineCpuKernel, type HostArray } from "../kernel_table.ts";
import { covered, f } from "../workgroup.ts";
import { adamwSimd } from "../simd.ts";

// ---------------------------------------------------------------- adamw.wgsl

/** Words of one segment-table entry: start, n, flags, h0…h6. */
const SEGMENT_WORDS = 10;

/**
 * Updates elements [start, stop) of one segment; `flags` and the hyper-parameters h0…h6 at `f32[h + 0…6]` are the
 * segment's (see shaders/adamw.wgsl).
 */
type SegmentUpdate = (start: number, stop: number, flags: number, f32: Float32Array, h: number) => void;

/**
 * Runs `update` over the part of every segment that the dispatch reaches (elements base … base + covered − 1). The
 * shader finds an element's segment by binary search over the sorted starts — the last segment starting at or before
 * it — and skips the element unless it lies inside that segment; over a sorted table segment s therefore owns
 * [start_s, min(start_s + n_s, start_{s+1})).
 */
function forSegments(
  p: { n: number; base: number; count: number },
  segments: HostArray,
  grid: readonly [number, number, number],
  update: SegmentUpdate,
): void {
  const words = segments.u32, end = p.base + covered(p.n, grid);
  for (let s = 0; s < p.count; s++) {
    const at = s * SEGMENT_WORDS, start = words[at];
    const next = s + 1 < p.count ? words[at + SEGMENT_WORDS] : Infinity;
    const lo = Math.max(start, p.base), hi = Math.min(start + words[at + 1], next, end);
    if (lo < hi) update(lo, hi, words[at + 2], segments.f32, at + 3);
  }
}

/**
 * AdamW in torch's order: p ← p·h0; m ← lerp(m, g, h1); v ← v·h2 + h3·g²; p ← p − h4 · m / (√v̂ / h5 + h6), with
 * v̂ = v, or with amsgrad (`s2` given) the running maximum of v kept in s2. The gradient is negated when maximising
 * (flag bit 0).
 */
function adamw(
  param: Float32Array,
  grad: Float32Array,
  s0: Float32Array,
  s1: Float32Array,
  s2: Float32Array | null,
): SegmentUpdate {
  return (start, stop, flags, hp, h) => {
    const sign = (flags & 1) !== 0 ? -1 : 1, decay = hp[h], w = hp[h + 1], beta2 = hp[h + 2], oneMinusBeta2 = hp[h + 3];
    const stepSize = hp[h + 4], correction = hp[h + 5], eps = hp[h + 6];
    // torch.lerp(m, g, w): m + w·(g − m) for |w| < 0.5, else g − (g − m)·(1 − w)
    const fromM = Math.abs(w) < 0.5, oneMinusW = 1 - w, invCorrection = 1 / correction;
    if (fromM && s2 === null) {
      const lanes = { w, beta2, oneMinusBeta2, decay, stepSize, invCorrection, eps, sign };
      if (adamwSimd(param, grad, s0, s1, start, stop, lanes)) return;
    }
    for (let i = start; i < stop; i++) {
      const g = sign * grad[i], m = s0[i];
      const m1 = fromM ? m + w * (g - m) : g - (g - m) * oneMinusW;
      const v1 = s1[i] * beta2 + oneMinusBeta2 * (g * g);
      s0[i] = m1;
      s1[i] = v1;
      let vhat = v1;
      if (s2 !== null) s2[i] = vhat = Math.max(s2[i], f(v1));
      param[i] = param[i] * decay - stepSize * (m1 / (Math.sqrt(vhat) * invCorrection + eps));
    }
  };
}

/**
 * torch.optim.SGD: d = g + h1·p (g negated when maximising); with momentum (`s0` given) the buffer
 * b ← h2·b + h3·d (b ← d on the first step, flag bit 1) and d = b, or d + h2·b for Nesterov (flag bit 2); p ← p − h0·d.
 */
function sgd(param: Float32Array, grad: Float32Array, s0: Float32Array | null): SegmentUpdate {
  return (start, stop, flags, hp, h) => {
    const sign = (flags & 1) !== 0 ? -1 : 1, lr = hp[h], decay = hp[h + 1], momentum = hp[h + 2];
    const damp = hp[h + 3], first = (flags & 2) !== 0, nesterov = (flags & 4) !== 0;
    if (s0 === null) {
      for (let i = start; i < stop; i++) {
        const x = param[i];
        param[i] = x - lr * (sign * grad[i] + decay * x);
      }
      return;
    }
    for (let i = start; i < stop; i++) {
      const x = param[i], d = sign * grad[i] + decay * x;
      const buf = first ? d : s0[i] * momentum + damp * d;
      s0[i] = buf;
      param[i] = x - lr * (nesterov ? d + momentum * buf : buf);
    }
  };
}

defineCpuKernel(K.ADAMW, ({ params: p, bindings: b, grid }) => {
  forSegments(p, b.segments, grid, adamw(b.param.f32, b.grad.f32, b.s0.f32, b.s1.f32, null));
});

defineCpuKernel(K.ADAMW_AMSGRAD, ({ params: p, bindings: b, grid }) => {
  forSegments(p, b.segments, grid, adamw(b.param.f32, b.grad.f32, b.s0.f32, b.s1.f32, b.s2.f32));
});

defineCpuKernel(K.SGD, ({ params: p, bindings: b, grid }) => {
  forSegments(p, b.segments, grid, sgd(b.param.f32, b.grad.f32, null));
});

defineCpuKernel(K.SGD_MOMENTUM, ({ params: p, bindings: b, grid }) => {
  forSegments(p, b.segments, grid, sgd(b.param.f32, b.grad.f32, b.s0.f32));
});

// ---------------------------------------------------------------- grad_accumulate.wgsl

defineCpuKernel(K.GRAD_ACCUMULATE, ({ params: p, bindings: b, grid }) => {
  const dst = b.dst.f32, src = b.src.f32, end = covered(p.n, grid);
  for (let i = 0; i < end; i++) dst[i] += src[i];
});

// ---------------------------------------------------------------- grad_norm.wgsl

const NORM_WG = 256;
/** The quiet NaN the shader's ∞-norm writes once any element is NaN. */
const QUIET_NAN = 0x7fc00000;
/** The shader's 1e-6 (a float32 literal) added to the norm before dividing. */
const NORM_EPS = f(1e-6);

/** Σx² (MODE 0), Σ|x|ᵖ (MODE 1, 0 at 0) or max |x| (MODE 2) of src[lo, hi), continuing from `acc`. */
function normTerms(mode: number, src: Float32Array, lo: number, hi: number, pnorm: number, acc: number): number {
  if (mode === 0) {
    for (let i = lo; i < hi; i++) acc += src[i] * src[i];
  } else if (mode === 1) {
    for (let i = lo; i < hi; i++) {
      const a = Math.abs(src[i]);
      if (a !== 0) acc += Math.pow(a, pnorm);
    }
  } else {
    for (let i = lo; i < hi; i++) acc = Math.max(acc, Math.abs(src[i])); // NaN stays NaN
  }
  return acc;
}

/** Stores a partial or total: for MODE 2 a NaN as the shader's quiet NaN bits. */
function storeNorm(dst: HostArray, i: number, mode: number, v: number): void {
  if (mode === 2 && Number.isNaN(v)) dst.u32[i] = QUIET_NAN;
  else dst.f32[i] = v;
}

/**
 * Workgroup g of grid[0] reduces the 256-element blocks g·256 + j·(grid[0]·256) below n (its threads' strided
 * elements) into dst[base + g].
 */
defineCpuKernel(K.GRAD_NORM_PARTIAL, ({ params: p, bindings: b, overrides: o, grid }) => {
  const mode = o.MODE ?? 0, src = b.src.f32, n = p.n, stride = grid[0] * NORM_WG;
  for (let g = 0; g < grid[0]; g++) {
    let acc = 0;
    for (let lo = g * NORM_WG; lo < n; lo += stride) {
      acc = normTerms(mode, src, lo, Math.min(lo + NORM_WG, n), p.pnorm, acc);
    }
    storeNorm(b.dst, p.base + g, mode, acc);
  }
});

/** One workgroup: the partials into the norm dst[0] and coef[0] = min(1, max_norm / (norm + 1e-6)), NaN kept. */
defineCpuKernel(K.GRAD_NORM_FINALIZE, ({ params: p, bindings: b, overrides: o }) => {
  const mode = o.MODE ?? 0, src = b.src.f32;
  let s = 0;
  if (mode === 2) { for (let i = 0; i < p.n; i++) s = Math.max(s, src[i]); }
  else for (let i = 0; i < p.n; i++) s += src[i];
  let total = s;
  if (mode === 0) total = Math.sqrt(s);
  else if (mode === 1 && s !== 0) total = Math.pow(s, 1 / p.pnorm);
  storeNorm(b.dst, 0, mode, total);
  let c = p.max_norm / (f(total) + NORM_EPS);
  if (!Number.isNaN(c)) c = Math.min(c, 1);
  b.coef.f32[0] = c;
});

defineCpuKernel(K.GRAD_NORM_SCALE, ({ params: p, bindings: b, grid }) => {
  const dst = b.dst.f32, c = b.src.f32[0], end = covered(p.n, grid);
  for (let i = 0; i < end; i++) dst[i] *= c;
});
