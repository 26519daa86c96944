/**
 * Four-lane float32 kernels for the CPU backend's hottest element loops — gelu_new and its gradient (the MLP), the
 * exponential sums and scaled exponentials of the vocabulary-wide log-softmax (cross-entropy, log-probs, entropy),
 * and AdamW — as a WebAssembly SIMD module generated when first used (`wasm.ts`; no binary checked in). V8 compiles
 * its `f32x4` operations to SSE/AVX instructions, so four elements go through each step at once: gelu_new about
 * 1.6 against 5.7 ns per element for the scalar float64 loops, which remain the fallback where WebAssembly SIMD is
 * unavailable (the wrappers then return false or NaN and write nothing).
 *
 * Arithmetic is float32, like the shaders' and PyTorch's: e^a as in `wasm.ts` (within a few ulps, 0 below e^−87);
 * gelu_new(x) = x / (1 + e^(−2u)), u = √(2/π)·(x + 0.044715·x³) (the tanh form as a logistic); sums accumulate in
 * eight float32 lanes per block of 1,024 elements, blocks added in float64 (tests/cpu_simd_test.ts). Operands are
 * copied through the module's memory in chunks of {@linkcode CHUNK} elements, one region per operand (copies cost far
 * less than the arithmetic).
 * @module
 */

import {
  add,
  and,
  div,
  exp,
  F32,
  f32x4,
  f32x4Splat,
  type FnSpec,
  get,
  I32,
  i32c,
  i32x4,
  i32x4Add,
  i32x4GeU,
  i32x4Mul,
  i32x4ShrU,
  i32x4Splat,
  lane,
  load,
  moduleBytes,
  mul,
  set,
  sqrt,
  STEP,
  store,
  sub,
  xor,
} from "./wasm.ts";

/** Elements per pass through the module's memory (each operand has a region of this many floats). */
export const CHUNK = 16384;
/** Elements per call of exp_sums (a multiple of the loop step): bounds the float32 partial sums' length. */
const SUM_BLOCK = 1024;
/** Operand regions in the module's memory, each {@linkcode CHUNK} floats; region k starts at byte k · REGION. */
const REGIONS = 4;
const REGION = CHUNK * 4;

const GELU_C = 0.7978845608028654; // √(2/π)
const GELU_K = 0.044715;

/** −2u = x·(−2C − 2CK·x²) from the lanes in local l, on the stack (`x2`: code leaving x² on the stack). */
// deno-fmt-ignore
const minus2u = (l: number, x2: number[]) => [
  ...x2, ...f32x4(-2 * GELU_C * GELU_K), ...mul, ...f32x4(-2 * GELU_C), ...add, ...get(l), ...mul,
];

/** gelu(x, y, n): y = gelu_new(x) = x / (1 + e^(−2u)). */
const gelu = (): FnSpec => ({
  params: [I32, I32, I32],
  // deno-fmt-ignore
  body: (o, l) => [
    ...minus2u(l, [...get(l), ...get(l), ...mul]), ...set(l + 1),
    ...store(1, o, [...get(l), ...f32x4(1), ...exp(l + 1), ...add, ...div]),
  ],
});

/** gelu_grad(x, y, n): y ·= gelu_new′(x) = s + x·s·(e·s)·2C·(1 + 3K·x²), s = 1 / (1 + e), e = e^(−2u). */
const geluGrad = (): FnSpec => ({
  params: [I32, I32, I32],
  body: (o, l) => {
    const [e, s, x2] = [l + 5, l + 6, l + 7];
    // deno-fmt-ignore
    return [
      ...get(l), ...get(l), ...mul, ...set(x2),
      ...minus2u(l, get(x2)), ...set(l + 1),
      ...exp(l + 1), ...set(e),
      ...f32x4(1), ...f32x4(1), ...get(e), ...add, ...div, ...set(s),
      ...store(1, o, [
        ...get(s),
        ...get(l), ...get(s), ...mul, ...get(e), ...get(s), ...mul, ...mul,
        ...get(x2), ...f32x4(6 * GELU_C * GELU_K), ...mul, ...f32x4(2 * GELU_C), ...add, ...mul,
        ...add,
        ...load(1, o), ...mul,
      ]),
    ];
  },
});

/** The four lanes of the v128 in local `v` added, an f32 on the stack. */
const lanesSum = (v: number) => [
  ...get(v),
  ...lane(0),
  ...get(v),
  ...lane(1),
  0x92,
  ...get(v),
  ...lane(2),
  ...get(v),
  ...lane(3),
  0x92,
  0x92,
]; // deno-fmt-ignore

/**
 * exp_sums(x, y, n, shift) → Σ e^(x + shift); also stores Σ e^(x + shift)·(x + shift) as an f32 at the start of
 * region 3 (the entropy's second sum; a term whose exponential is 0 adds 0, even at x = −∞). y is unused.
 */
const expSums = (acc: number): FnSpec => ({
  params: [I32, I32, I32, F32],
  result: F32,
  extra: 5, // acc, acc + 1: Σe of the two groups; acc + 2, acc + 3: Σe·d; acc + 4: the shift in every lane
  prologue: [...get(3), ...f32x4Splat, ...set(acc + 4)],
  body: (_o, l, g) => {
    const d = l + 5, keep = l + 4; // exp(l + 1) leaves its below-range mask in l + 4
    // deno-fmt-ignore
    return [
      ...get(l), ...get(acc + 4), ...add, ...set(d), ...get(d), ...set(l + 1),
      ...exp(l + 1), ...set(l + 6),
      ...get(acc + g), ...get(l + 6), ...add, ...set(acc + g),
      ...get(acc + 2 + g), ...get(l + 6), ...get(d), ...mul, ...get(keep), ...and, ...add, ...set(acc + 2 + g),
    ];
  },
  // deno-fmt-ignore
  epilogue: [
    ...get(acc + 2), ...get(acc + 3), ...add, ...set(acc + 2),
    ...i32c(3 * REGION), ...lanesSum(acc + 2), 0x38, 2, 0, // f32.store at the start of region 3
    ...get(acc), ...get(acc + 1), ...add, ...set(acc),
    ...lanesSum(acc),
  ],
});

/**
 * scaled_exp(x, y, n, shift, scale): y = scale · e^(x + shift); with `affine`, scaled_exp_affine(x, y, n, shift,
 * scale, shift2): y = scale · e^(x + shift) · (x + shift2), 0 where the exponential is (not NaN at x = −∞).
 */
const scaledExp = (affine: boolean) => (k: number): FnSpec => ({
  params: affine ? [I32, I32, I32, F32, F32, F32] : [I32, I32, I32, F32, F32],
  extra: 3, // the shift, the scale and shift2 in every lane
  prologue: [3, 4, ...(affine ? [5] : [])].flatMap((p, i) => [...get(p), ...f32x4Splat, ...set(k + i)]),
  // deno-fmt-ignore
  body: (o, l) => [
    ...get(l), ...get(k), ...add, ...set(l + 1),
    ...store(1, o, [
      ...exp(l + 1), ...get(k + 1), ...mul,
      ...(affine ? [...get(l), ...get(k + 2), ...add, ...mul, ...get(l + 4), ...and] : []), // 0 where e^… is
    ]),
  ],
});

/**
 * adamw(x, y, n, w, beta2, 1 − beta2, decay, step, 1 / correction, eps, sign) over the regions parameter (x's),
 * gradient, m and v (the next three regions): g = sign·grad; m ← m + w·(g − m); v ← v·beta2 + (1 − beta2)·g²;
 * p ← p·decay − step · m / (√v / correction + eps). torch's lerp form for w < 0.5, without amsgrad (the caller's
 * scalar loop covers the rest).
 */
const adamw = (k: number): FnSpec => ({
  params: [I32, I32, I32, F32, F32, F32, F32, F32, F32, F32, F32],
  extra: 8, // the eight hyper-parameters in every lane
  prologue: Array.from({ length: 8 }, (_, i) => [...get(3 + i), ...f32x4Splat, ...set(k + i)]).flat(),
  body: (o, l) => {
    const [w, beta2, omb2, decay, step, invCorr, eps, sign] = Array.from({ length: 8 }, (_, i) => k + i);
    const [g, m1, v1] = [l + 1, l + 2, l + 3];
    // deno-fmt-ignore
    return [
      ...load(0, o + REGION), ...get(sign), ...mul, ...set(g),
      ...load(0, o + 2 * REGION), ...set(m1),
      ...get(m1), ...get(w), ...get(g), ...get(m1), ...sub, ...mul, ...add, ...set(m1),
      ...load(0, o + 3 * REGION), ...get(beta2), ...mul, ...get(omb2), ...get(g), ...get(g), ...mul, ...mul, ...add,
      ...set(v1),
      ...store(0, o + 2 * REGION, get(m1)),
      ...store(0, o + 3 * REGION, get(v1)),
      ...store(0, o, [
        ...get(l), ...get(decay), ...mul,
        ...get(step), ...get(m1), ...get(v1), ...sqrt, ...get(invCorr), ...mul, ...get(eps), ...add, ...div, ...mul,
        ...sub,
      ]),
    ];
  },
});

/** mix32 of `rng.wgsl` (lowbias32) on the four i32 lanes on the stack, through local `h`. */
// deno-fmt-ignore
const mix32 = (h: number) => [
  ...set(h),
  ...get(h), ...get(h), ...i32c(16), ...i32x4ShrU, ...xor, ...i32x4(0x7feb352d), ...i32x4Mul, ...set(h),
  ...get(h), ...get(h), ...i32c(15), ...i32x4ShrU, ...xor, ...i32x4(0x846ca68b | 0), ...i32x4Mul, ...set(h),
  ...get(h), ...get(h), ...i32c(16), ...i32x4ShrU, ...xor,
];

/**
 * dropout(x, y, n, key, threshold, scale, start): y = keep ? x·scale : +0, keep = mix32(mix32(i ^ key) + key) ≥
 * threshold (unsigned) for flat index i = start + position — `dropout.wgsl`'s mask bit for bit, and one float32
 * product as there.
 */
const dropout = (k: number): FnSpec => ({
  params: [I32, I32, I32, I32, I32, F32, I32],
  extra: 4, // lane indices, key, threshold, scale (every lane)
  // deno-fmt-ignore
  prologue: [
    ...get(6), ...i32x4Splat, ...i32x4(0, 1, 2, 3), ...i32x4Add, ...set(k),
    ...get(3), ...i32x4Splat, ...set(k + 1), ...get(4), ...i32x4Splat, ...set(k + 2), ...get(5), ...f32x4Splat, ...set(k + 3),
  ],
  body: (o, l, g) => {
    const index = g === 0 ? get(k) : [...get(k), ...i32x4(4), ...i32x4Add];
    // deno-fmt-ignore
    return [
      ...index, ...get(k + 1), ...xor, ...mix32(l + 1), ...get(k + 1), ...i32x4Add, ...mix32(l + 1),
      ...get(k + 2), ...i32x4GeU, ...set(l + 2),
      ...store(1, o, [...get(l), ...get(k + 3), ...mul, ...get(l + 2), ...and]),
      ...(g === 1 ? [...get(k), ...i32x4(8), ...i32x4Add, ...set(k)] : []),
    ];
  },
});

interface SimdExports {
  memory: WebAssembly.Memory;
  gelu(x: number, y: number, n: number): void;
  gelu_grad(x: number, y: number, n: number): void;
  exp_sums(x: number, y: number, n: number, shift: number): number;
  scaled_exp(x: number, y: number, n: number, shift: number, scale: number): void;
  scaled_exp_affine(x: number, y: number, n: number, shift: number, scale: number, shift2: number): void;
  adamw(x: number, y: number, n: number, ...h: number[]): void;
  dropout(x: number, y: number, n: number, key: number, threshold: number, scale: number, start: number): void;
}

let instance: SimdExports | null | undefined;
/** The module's operand regions as float32 views. */
let regions: Float32Array[] = [];

/** The compiled module, or null where WebAssembly SIMD is unavailable (callers then use their scalar loops). */
function kernels(): SimdExports | null {
  if (instance !== undefined) return instance;
  try {
    const functions: [string, (first: number) => FnSpec][] = [
      ["gelu", gelu],
      ["gelu_grad", geluGrad],
      ["exp_sums", expSums],
      ["scaled_exp", scaledExp(false)],
      ["scaled_exp_affine", scaledExp(true)],
      ["adamw", adamw],
      ["dropout", dropout],
    ];
    const bytes = moduleBytes(functions, Math.ceil((REGIONS * REGION) / 65536));
    const k = new WebAssembly.Instance(new WebAssembly.Module(bytes)).exports as unknown as SimdExports;
    regions = Array.from({ length: REGIONS }, (_, i) => new Float32Array(k.memory.buffer, i * REGION, CHUNK));
    instance = k;
  } catch {
    instance = null;
  }
  return instance;
}

/** Whether the SIMD kernels are in use (WebAssembly SIMD compiled here). */
export function hasSimd(): boolean {
  return kernels() !== null;
}

/** Copies src[lo, lo + n) into region `r`, padded with `pad` to a whole number of loop steps; returns that length. */
function stage(r: number, src: Float32Array, lo: number, n: number, pad: number): number {
  const padded = Math.ceil(n / STEP) * STEP, to = regions[r];
  to.set(src.subarray(lo, lo + n));
  to.fill(pad, n, padded);
  return padded;
}

/**
 * y[i] = gelu_new(x[i]) for i in [from, to) (x and y may be the same array); false, with nothing written, where
 * WebAssembly SIMD is unavailable.
 */
export function geluSimd(x: Float32Array, y: Float32Array, from: number, to: number): boolean {
  const k = kernels();
  if (!k) return false;
  for (let lo = from; lo < to; lo += CHUNK) {
    const n = Math.min(CHUNK, to - lo);
    k.gelu(0, REGION, stage(0, x, lo, n, 0));
    y.set(regions[1].subarray(0, n), lo);
  }
  return true;
}

/**
 * dx[i] = g[i] · gelu_new′(x[i]) for i in [from, to) (dx may be g); false, with nothing written, where WebAssembly
 * SIMD is unavailable.
 */
export function geluGradSimd(x: Float32Array, g: Float32Array, dx: Float32Array, from: number, to: number): boolean {
  const k = kernels();
  if (!k) return false;
  for (let lo = from; lo < to; lo += CHUNK) {
    const n = Math.min(CHUNK, to - lo);
    stage(1, g, lo, n, 0);
    k.gelu_grad(0, REGION, stage(0, x, lo, n, 0));
    dx.set(regions[1].subarray(0, n), lo);
  }
  return true;
}

/**
 * [Σ e^(x[i] + shift), Σ e^(x[i] + shift)·(x[i] + shift)] for i in [from, to), or null where WebAssembly SIMD is
 * unavailable. Terms below e^−87 count as 0.
 */
export function expSumsSimd(x: Float32Array, from: number, to: number, shift: number): [number, number] | null {
  const k = kernels();
  if (!k) return null;
  let s = 0, u = 0;
  for (let lo = from; lo < to; lo += CHUNK) {
    const padded = stage(0, x, lo, Math.min(CHUNK, to - lo), -Infinity);
    // Blocks of SUM_BLOCK: each lane sums at most SUM_BLOCK / 8 terms in float32, the blocks add up in float64.
    for (let b = 0; b < padded; b += SUM_BLOCK) {
      s += k.exp_sums(4 * b, 0, Math.min(SUM_BLOCK, padded - b), shift);
      u += regions[3][0];
    }
  }
  return [s, u];
}

/**
 * y[i] = scale · e^(x[i] + shift) for i in [from, to), times (x[i] + shift2) when `shift2` is given (y may be x);
 * false, with nothing written, where WebAssembly SIMD is unavailable.
 */
export function scaledExpSimd(
  x: Float32Array,
  y: Float32Array,
  from: number,
  to: number,
  shift: number,
  scale: number,
  shift2?: number,
): boolean {
  const k = kernels();
  if (!k) return false;
  for (let lo = from; lo < to; lo += CHUNK) {
    const n = Math.min(CHUNK, to - lo);
    const padded = stage(0, x, lo, n, 0);
    if (shift2 === undefined) k.scaled_exp(0, REGION, padded, shift, scale);
    else k.scaled_exp_affine(0, REGION, padded, shift, scale, shift2);
    y.set(regions[1].subarray(0, n), lo);
  }
  return true;
}

/** AdamW's hyper-parameters for {@linkcode adamwSimd}. */
export interface AdamwLanes {
  w: number;
  beta2: number;
  oneMinusBeta2: number;
  decay: number;
  stepSize: number;
  invCorrection: number;
  eps: number;
  sign: number;
}

/**
 * AdamW over elements [from, to) of the parameter, its gradient and the two moments, in place (see `adamw` above);
 * false, with nothing written, where WebAssembly SIMD is unavailable.
 */
export function adamwSimd(
  param: Float32Array,
  grad: Float32Array,
  m: Float32Array,
  v: Float32Array,
  from: number,
  to: number,
  h: AdamwLanes,
): boolean {
  const k = kernels();
  if (!k) return false;
  for (let lo = from; lo < to; lo += CHUNK) {
    const n = Math.min(CHUNK, to - lo);
    stage(1, grad, lo, n, 0);
    stage(2, m, lo, n, 0);
    stage(3, v, lo, n, 0);
    k.adamw(
      0,
      0,
      stage(0, param, lo, n, 0),
      h.w,
      h.beta2,
      h.oneMinusBeta2,
      h.decay,
      h.stepSize,
      h.invCorrection,
      h.eps,
      h.sign,
    );
    param.set(regions[0].subarray(0, n), lo);
    m.set(regions[2].subarray(0, n), lo);
    v.set(regions[3].subarray(0, n), lo);
  }
  return true;
}

/**
 * Inverted dropout of x[0, n) into y under `key`: y[i] = x[i]·scale where mix32(mix32(j ^ key) + key) ≥ threshold
 * (unsigned) for the flat index j = start + i, else +0 — bit for bit the scalar kernel's and the shader's; false,
 * with nothing written, where WebAssembly SIMD is unavailable.
 */
export function dropoutSimd(
  x: Float32Array,
  y: Float32Array,
  n: number,
  key: number,
  threshold: number,
  scale: number,
  start = 0,
): boolean {
  const k = kernels();
  if (!k) return false;
  for (let lo = 0; lo < n; lo += CHUNK) {
    const len = Math.min(CHUNK, n - lo);
    k.dropout(0, REGION, stage(0, x, lo, len, 0), key | 0, threshold | 0, scale, (start + lo) | 0);
    y.set(regions[1].subarray(0, len), lo);
  }
  return true;
}
