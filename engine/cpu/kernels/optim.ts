/**
 * CPU kernels of the training family (`engine/kernels/optim.ts`): the optimiser updates of `adamw.wgsl` (AdamW with
 * and without amsgrad, SGD with and without momentum) driven by a segment table of per-parameter flags and
 * hyper-parameters h0…h6, the in-place gradient accumulation (`grad_accumulate.wgsl`) and gradient-norm clipping
 * (`grad_norm.wgsl`: per-workgroup partials over the same partition of the elements, their combination into the
 * norm and clipping coefficient, and the scaling).
 *
 * Arithmetic is rounded to float32 after every operation, in the shaders' order.
 * @module
 */

import * as K from "../../kernels/optim.ts";
import { defineCpuKernel, type HostArray } from "../kernel_table.ts";
import { covered, f, strided, treeReduce } from "../workgroup.ts";

// ---------------------------------------------------------------- adamw.wgsl

/** Words of one segment-table entry: start, n, flags, h0…h6. */
const SEGMENT_WORDS = 10;

/** One parameter's flags and hyper-parameters (see shaders/adamw.wgsl). */
interface Hyper {
  flags: number;
  h: Float32Array;
}

/** Arrays an update reads and writes. */
interface UpdateArrays {
  param: Float32Array;
  grad: Float32Array;
  s0?: Float32Array;
  s1?: Float32Array;
  s2?: Float32Array;
}

type Update = (h: Hyper, i: number, a: UpdateArrays) => void;

/** Runs `update` on every element of the dispatch that lies inside a segment, found as the shader's binary search. */
function runSegments(
  p: { n: number; base: number; count: number },
  segments: HostArray,
  grid: readonly [number, number, number],
  a: UpdateArrays,
  update: Update,
): void {
  const word = (s: number, k: number) => segments.u32[s * SEGMENT_WORDS + k];
  for (let k = 0; k < covered(p.n, grid); k++) {
    const i = p.base + k;
    let lo = 0, hi = p.count;
    while (hi - lo > 1) {
      const mid = (lo + hi) >>> 1;
      if (word(mid, 0) <= i) lo = mid;
      else hi = mid;
    }
    if (!(i >= word(lo, 0) && i - word(lo, 0) < word(lo, 1))) continue;
    const at = lo * SEGMENT_WORDS;
    update({ flags: word(lo, 2), h: segments.f32.subarray(at + 3, at + SEGMENT_WORDS) }, i, a);
  }
}

/** The gradient, negated when maximising (flag bit 0). */
const loadGrad = (h: Hyper, i: number, a: UpdateArrays) => (h.flags & 1) !== 0 ? -a.grad[i] : a.grad[i];

/** Updates m (torch.lerp) and v; returns the decayed parameter. */
function adamMoments(h: Hyper, i: number, a: UpdateArrays, g: number): number {
  const w = h.h[1], m = a.s0![i];
  a.s0![i] = Math.abs(w) < 0.5 ? f(m + f(w * f(g - m))) : f(g - f(f(g - m) * f(1 - w)));
  a.s1![i] = f(f(a.s1![i] * h.h[2]) + f(h.h[3] * f(g * g)));
  return f(a.param[i] * h.h[0]);
}

/** p ← x − h4 · m / (√vhat / h5 + h6). */
function adamApply(h: Hyper, i: number, a: UpdateArrays, x: number, vhat: number): void {
  const denom = f(f(f(Math.sqrt(vhat)) / h.h[5]) + h.h[6]);
  a.param[i] = f(x + f(-h.h[4] * f(a.s0![i] / denom)));
}

const adamw: Update = (h, i, a) => adamApply(h, i, a, adamMoments(h, i, a, loadGrad(h, i, a)), a.s1![i]);

const adamwAmsgrad: Update = (h, i, a) => {
  const x = adamMoments(h, i, a, loadGrad(h, i, a));
  const vmax = Math.max(a.s2![i], a.s1![i]);
  a.s2![i] = vmax;
  adamApply(h, i, a, x, vmax);
};

/** The SGD direction: gradient plus weight decay h1 times the parameter. */
const sgdDirection = (h: Hyper, i: number, a: UpdateArrays) => f(loadGrad(h, i, a) + f(h.h[1] * a.param[i]));

const sgd: Update = (h, i, a) => {
  a.param[i] = f(a.param[i] + f(-h.h[0] * sgdDirection(h, i, a)));
};

const sgdMomentum: Update = (h, i, a) => {
  let d = sgdDirection(h, i, a);
  const buf = (h.flags & 2) === 0 ? f(f(a.s0![i] * h.h[2]) + f(h.h[3] * d)) : d;
  a.s0![i] = buf;
  d = (h.flags & 4) !== 0 ? f(d + f(h.h[2] * buf)) : buf;
  a.param[i] = f(a.param[i] + f(-h.h[0] * d));
};

defineCpuKernel(K.ADAMW, ({ params: p, bindings: b, grid }) => {
  runSegments(p, b.segments, grid, { param: b.param.f32, grad: b.grad.f32, s0: b.s0.f32, s1: b.s1.f32 }, adamw);
});

defineCpuKernel(K.ADAMW_AMSGRAD, ({ params: p, bindings: b, grid }) => {
  const arrays = { param: b.param.f32, grad: b.grad.f32, s0: b.s0.f32, s1: b.s1.f32, s2: b.s2.f32 };
  runSegments(p, b.segments, grid, arrays, adamwAmsgrad);
});

defineCpuKernel(K.SGD, ({ params: p, bindings: b, grid }) => {
  runSegments(p, b.segments, grid, { param: b.param.f32, grad: b.grad.f32 }, sgd);
});

defineCpuKernel(K.SGD_MOMENTUM, ({ params: p, bindings: b, grid }) => {
  runSegments(p, b.segments, grid, { param: b.param.f32, grad: b.grad.f32, s0: b.s0.f32 }, sgdMomentum);
});

// ---------------------------------------------------------------- grad_accumulate.wgsl

defineCpuKernel(K.GRAD_ACCUMULATE, ({ params: p, bindings: b, grid }) => {
  const dst = b.dst.f32, src = b.src.f32;
  for (let i = 0; i < covered(p.n, grid); i++) dst[i] = f(dst[i] + src[i]);
});

// ---------------------------------------------------------------- grad_norm.wgsl

const NORM_WG = 256;
const QUIET_NAN = 0x7fc00000;
const NAN_F32 = new Float32Array(new Uint32Array([QUIET_NAN]).buffer)[0];

/** `term` of MODE: x², |x|ᵖ (0 at 0) or |x|. */
function term(mode: number, x: number, pnorm: number): number {
  const a = Math.abs(x);
  if (mode === 0) return f(x * x);
  if (mode === 1) return a === 0 ? 0 : f(Math.pow(a, pnorm));
  return a;
}

/** `combine` of MODE: a sum, or for ∞ a maximum that propagates NaN. */
function combiner(mode: number): (a: number, b: number) => number {
  if (mode !== 2) return (a, b) => f(a + b);
  return (a, b) => Number.isNaN(a) || Number.isNaN(b) ? NAN_F32 : Math.max(a, b);
}

defineCpuKernel(K.GRAD_NORM_PARTIAL, ({ params: p, bindings: b, overrides: o, grid }) => {
  const mode = o.MODE ?? 0, src = b.src.f32, combine = combiner(mode), stride = grid[0] * NORM_WG;
  for (let g = 0; g < grid[0]; g++) {
    const partial = (l: number) =>
      strided(g * NORM_WG + l, p.n, stride, 0, (acc, i) => combine(acc, term(mode, src[i], p.pnorm)));
    b.dst.f32[p.base + g] = treeReduce(NORM_WG, partial, combine);
  }
});

defineCpuKernel(K.GRAD_NORM_FINALIZE, ({ params: p, bindings: b, overrides: o }) => {
  const mode = o.MODE ?? 0, src = b.src.f32, combine = combiner(mode);
  const s = treeReduce(NORM_WG, (l) => strided(l, p.n, NORM_WG, 0, (acc, i) => combine(acc, src[i])), combine);
  let total = s;
  if (mode === 0) total = f(Math.sqrt(s));
  else if (mode === 1 && s !== 0) total = f(Math.pow(s, f(1 / p.pnorm)));
  b.dst.f32[0] = total;
  let c = f(p.max_norm / f(total + f(1e-6)));
  if (!Number.isNaN(c)) c = Math.min(c, 1);
  b.coef.f32[0] = c;
});

defineCpuKernel(K.GRAD_NORM_SCALE, ({ params: p, bindings: b, grid }) => {
  const dst = b.dst.f32, c = b.src.f32[0];
  for (let i = 0; i < covered(p.n, grid); i++) dst[i] = f(dst[i] * c);
});
