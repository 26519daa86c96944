/**
 * Four-lane float32 kernels for the CPU backend's hottest transcendental loops — gelu_new and its gradient (the MLP),
 * and the exponential sums and scaled exponentials of the vocabulary-wide log-softmax (cross-entropy, log-probs) — as
 * a WebAssembly SIMD module generated here, byte by byte, when first used (no toolchain, no binary checked in). V8
 * compiles its `f32x4` operations to SSE/AVX instructions, so four elements go through each step at once: gelu_new
 * about 2.7 against 10 ns per element for the scalar float64 loops, which remain the fallback where WebAssembly SIMD
 * is unavailable.
 *
 * Arithmetic is float32: e^a = 2ⁿ·p(r) with n = round(a·log₂e), r = a − n·ln 2 (ln 2 split in two floats) and p the
 * degree-7 Taylor polynomial (truncation below 6e-9 for |r| ≤ ln 2 / 2), 2ⁿ built in the exponent bits, a clamped to
 * 88 above and the result 0 below −87 (where float32 leaves its normal range). gelu_new(x) = x / (1 + e^(−2u)), u =
 * √(2/π)·(x + 0.044715·x³) (the tanh form as a logistic). Results are within a few float32 ulps of the float64
 * formulas; sums accumulate in eight float32 lanes (tests/cpu_simd_test.ts). Operands are copied through the
 * module's own memory in chunks of {@linkcode CHUNK} elements (copies cost far less than the arithmetic).
 * @module
 */

/** Elements per pass through the module's memory (each of the two operands has a region of this many floats). */
export const CHUNK = 16384;
/** Lanes per loop iteration: two independent vectors, so the core overlaps their dependency chains. */
const STEP = 8;

// ------------------------------------------------------------------ a minimal WebAssembly encoder

/** Unsigned LEB128. */
function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}

/** Signed LEB128 of a 32-bit integer. */
function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) return [...out, b];
    out.push(b | 0x80);
  }
}

const section = (id: number, body: number[]) => [id, ...uleb(body.length), ...body];
const vec = (items: number[][]) => [...uleb(items.length), ...items.flat()];
const name = (s: string) => vec([...new TextEncoder().encode(s)].map((b) => [b]));

const I32 = 0x7f, F32 = 0x7d, V128 = 0x7b;
/** A SIMD instruction: the 0xfd prefix and its LEB128 opcode. */
const simd = (op: number) => [0xfd, ...uleb(op)];
const get = (i: number) => [0x20, ...uleb(i)];
const set = (i: number) => [0x21, ...uleb(i)];
const i32c = (n: number) => [0x41, ...sleb(n)];
const add = simd(0xe4), sub = simd(0xe5), mul = simd(0xe6), div = simd(0xe7);
const gt = simd(0x44), and = simd(0x4e), pmin = simd(0xea), pmax = simd(0xeb);
const i32x4Add = simd(0xae), i32x4Shl = simd(0xab), f32x4Splat = simd(0x13);
const load = (ptr: number, offset: number) => [...get(ptr), ...simd(0x00), 4, ...uleb(offset)];
const store = (
  ptr: number,
  offset: number,
  value: number[],
) => [...get(ptr), ...value, ...simd(0x0b), 4, ...uleb(offset)];
const lane = (i: number) => [...simd(0x1f), i]; // f32x4.extract_lane

/** While a function is generated: its constants and the local each is kept in (set once, before the loop). */
let pool: { next: number; locals: Map<number, number> } | null = null;

/** Four equal float32 lanes, from a local set before the loop (V8 would rebuild a v128.const at every use). */
function f32x4(x: number): number[] {
  if (!pool) throw new Error("simd: constants only inside a generated function");
  let local = pool.locals.get(x);
  if (local === undefined) pool.locals.set(x, local = pool.next++);
  return get(local);
}

/** A v128.const of four equal float32 lanes. */
function constant(x: number): number[] {
  const bytes = [...new Uint8Array(Float32Array.of(x).buffer)];
  return [...simd(0x0c), ...bytes, ...bytes, ...bytes, ...bytes];
}

/** 1.5 · 2²³: added to a float32 of magnitude < 2²², it rounds it to an integer n held in the low mantissa bits. */
const ROUNDER = 12582912;

/**
 * e^a for the v128 in local `a`, left on the stack (locals a, a + 1 … a + 3 are used: a is clamped, then j, r and the
 * below-range mask): clamp, reduce by ln 2, polynomial, scale by 2ⁿ built in the exponent bits, zero below −87.
 * n = round(a·log₂e) comes from adding {@linkcode ROUNDER} (j's bits are then ROUNDER's plus n), so 2ⁿ's bits are
 * (j << 23) + the bits of 1.0 — no float-to-integer conversion; pmin/pmax clamp in one instruction each (NaN lanes
 * are zeroed by the mask).
 */
function exp(a: number): number[] {
  const [j, r, keep] = [a + 1, a + 2, a + 3];
  const poly = [1 / 5040, 1 / 720, 1 / 120, 1 / 24, 1 / 6, 1 / 2, 1, 1]; // Horner from r⁷ down to 1
  let p = f32x4(poly[0]);
  for (const c of poly.slice(1)) p = [...p, ...get(r), ...mul, ...f32x4(c), ...add];
  // deno-fmt-ignore
  return [
    ...get(a), ...f32x4(-87), ...gt, ...set(keep),
    ...get(a), ...f32x4(-87), ...pmax, ...f32x4(88), ...pmin, ...set(a),
    ...get(a), ...f32x4(Math.LOG2E), ...mul, ...f32x4(ROUNDER), ...add, ...set(j),
    ...get(j), ...f32x4(ROUNDER), ...sub, ...set(r), // r holds n for the moment
    ...get(a), ...get(r), ...f32x4(0.693145751953125), ...mul, ...sub,
    ...get(r), ...f32x4(1.428606765330187e-6), ...mul, ...sub, ...set(r),
    ...p,
    ...get(j), ...i32c(23), ...i32x4Shl, ...f32x4(1), ...i32x4Add,
    ...mul, ...get(keep), ...and,
  ];
}

/** Scratch v128 locals per lane group: the loaded lanes, exp's four, and three more. */
const GROUP = 8;

/** A function's shape: parameters (the first two i32 are the byte offsets x and y, the third the count n). */
interface FnSpec {
  params: number[];
  result?: number;
  /** Before the loop (constants are set before this). */
  prologue?: number[];
  /** The lanes at byte offset o of the iteration, loaded from x into local l; locals l + 1 … l + GROUP − 1 free. */
  body: (o: number, l: number, group: number) => number[];
  /** After the loop (leaves the result, if any). */
  epilogue?: number[];
  /** Extra v128 locals after the groups (for accumulators), and where they start is passed to the generators. */
  extra?: number;
}

/** A function body looping over n floats at byte offset x (n a multiple of STEP), advancing x and y together. */
function fn(spec: (firstExtra: number) => FnSpec, paramCount: number): number[] {
  const groups = paramCount + 2 * GROUP, s = spec(groups);
  const [x, y, n] = [0, 1, 2];
  const lanes = (o: number, l: number, g: number) => [...load(x, o), ...set(l), ...s.body(o, l, g)];
  pool = { next: groups + (s.extra ?? 0), locals: new Map() };
  const work = [...lanes(0, paramCount, 0), ...lanes(16, paramCount + GROUP, 1)];
  const prologue = s.prologue ?? [], epilogue = s.epilogue ?? [];
  const consts = [...pool.locals];
  pool = null;
  // deno-fmt-ignore
  const code = [
    ...consts.flatMap(([value, local]) => [...constant(value), ...set(local)]),
    ...prologue,
    ...get(x), ...get(n), ...i32c(2), 0x74, 0x6a, ...set(n), // n := end offset
    0x02, 0x40, 0x03, 0x40, // block, loop
    ...get(x), ...get(n), 0x4f, 0x0d, 1, // x ≥ end → exit
    ...work,
    ...get(x), ...i32c(4 * STEP), 0x6a, ...set(x),
    ...get(y), ...i32c(4 * STEP), 0x6a, ...set(y),
    0x0c, 0, 0x0b, 0x0b, // br loop; end loop; end block
    ...epilogue, 0x0b,
  ];
  const locals = vec([[...uleb(2 * GROUP + (s.extra ?? 0) + consts.length), V128]]);
  return [...uleb(locals.length + code.length), ...locals, ...code];
}

const GELU_C = 0.7978845608028654; // √(2/π)
const GELU_K = 0.044715;

/** −2u = x·(−2C − 2CK·x²) from the lanes in local l, on the stack. */
const minus2u = (l: number, x2: number[]) => [
  ...x2,
  ...f32x4(-2 * GELU_C * GELU_K),
  ...mul,
  ...f32x4(-2 * GELU_C),
  ...add,
  ...get(l),
  ...mul,
]; // deno-fmt-ignore

/** gelu(x, y, n): y = gelu_new(x) = x / (1 + e^(−2u)). */
const gelu = () => ({
  params: [I32, I32, I32],
  body: (o: number, l: number) => [
    ...minus2u(l, [...get(l), ...get(l), ...mul]), ...set(l + 1),
    ...store(1, o, [...get(l), ...f32x4(1), ...exp(l + 1), ...add, ...div]),
  ], // deno-fmt-ignore
});

/** gelu_grad(x, y, n): y ·= gelu_new′(x) = s + x·s·(e·s)·2C·(1 + 3K·x²), s = 1 / (1 + e), e = e^(−2u). */
const geluGrad = () => ({
  params: [I32, I32, I32],
  body: (o: number, l: number) => {
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

/** exp_sum(x, y, n, shift) → Σ e^(x + shift) over the n lanes (y unused), in eight float32 partial sums. */
const expSum = (acc: number) => ({
  params: [I32, I32, I32, F32],
  result: F32,
  extra: 3, // acc, acc + 1: the two groups' sums; acc + 2: the shift in every lane
  prologue: [...get(3), ...f32x4Splat, ...set(acc + 2)],
  body: (_o: number, l: number, g: number) => [
    ...get(l),
    ...get(acc + 2),
    ...add,
    ...set(l + 1),
    ...get(acc + g),
    ...exp(l + 1),
    ...add,
    ...set(acc + g),
  ], // deno-fmt-ignore
  // deno-fmt-ignore
  epilogue: [
    ...get(acc), ...get(acc + 1), ...add, ...set(acc),
    ...get(acc), ...lane(0), ...get(acc), ...lane(1), 0x92, ...get(acc), ...lane(2), ...get(acc), ...lane(3), 0x92, 0x92,
  ],
});

/** scaled_exp(x, y, n, shift, scale): y = scale · e^(x + shift). */
const scaledExp = (extra: number) => ({
  params: [I32, I32, I32, F32, F32],
  extra: 2, // the shift and the scale in every lane
  prologue: [...get(3), ...f32x4Splat, ...set(extra), ...get(4), ...f32x4Splat, ...set(extra + 1)],
  body: (o: number, l: number) => [
    ...get(l),
    ...get(extra),
    ...add,
    ...set(l + 1),
    ...store(1, o, [...exp(l + 1), ...get(extra + 1), ...mul]),
  ], // deno-fmt-ignore
});

/** The exported functions, in index order, with their generators. */
const FUNCTIONS: [string, (firstExtra: number) => FnSpec][] = [
  ["gelu", gelu],
  ["gelu_grad", geluGrad],
  ["exp_sum", expSum],
  ["scaled_exp", scaledExp],
];

/** The module: its memory (exported) and the functions above. */
function moduleBytes(): Uint8Array<ArrayBuffer> {
  const specs = FUNCTIONS.map(([, make]) => make(0));
  const types = specs.map((s) => [0x60, ...vec(s.params.map((t) => [t])), ...vec(s.result ? [[s.result]] : [])]);
  const bodies = FUNCTIONS.map(([, make], i) => fn(make, specs[i].params.length));
  const pages = Math.ceil((2 * CHUNK * 4) / 65536);
  // deno-fmt-ignore
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 1, 0, 0, 0,
    ...section(1, vec(types)),
    ...section(3, vec(FUNCTIONS.map((_, i) => [i]))),
    ...section(5, vec([[0, ...uleb(pages)]])),
    ...section(7, vec([[...name("memory"), 2, 0], ...FUNCTIONS.map(([n], i) => [...name(n), 0, i])])),
    ...section(10, [...uleb(bodies.length), ...bodies.flat()]),
  ]);
}

// ------------------------------------------------------------------ the kernels

interface SimdExports {
  memory: WebAssembly.Memory;
  gelu(x: number, y: number, n: number): void;
  gelu_grad(x: number, y: number, n: number): void;
  exp_sum(x: number, y: number, n: number, shift: number): number;
  scaled_exp(x: number, y: number, n: number, shift: number, scale: number): void;
}

let instance: SimdExports | null | undefined;
let xs: Float32Array = new Float32Array(0), ys: Float32Array = new Float32Array(0);

/** The compiled module, or null where WebAssembly SIMD is unavailable (callers then use their scalar loops). */
function kernels(): SimdExports | null {
  if (instance !== undefined) return instance;
  try {
    const k = new WebAssembly.Instance(new WebAssembly.Module(moduleBytes())).exports as unknown as SimdExports;
    xs = new Float32Array(k.memory.buffer, 0, CHUNK);
    ys = new Float32Array(k.memory.buffer, CHUNK * 4, CHUNK);
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

/** Copies src[lo, lo + n) into `to` and pads it with `pad` to a whole number of loop steps; returns that length. */
function stage(to: Float32Array, src: Float32Array, lo: number, n: number, pad: number): number {
  const padded = Math.ceil(n / STEP) * STEP;
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
    k.gelu(0, CHUNK * 4, stage(xs, x, lo, n, 0));
    y.set(ys.subarray(0, n), lo);
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
    stage(ys, g, lo, n, 0);
    k.gelu_grad(0, CHUNK * 4, stage(xs, x, lo, n, 0));
    dx.set(ys.subarray(0, n), lo);
  }
  return true;
}

/**
 * Σ e^(x[i] + shift) for i in [from, to), or NaN where WebAssembly SIMD is unavailable. Terms below e^−87 count as
 * 0; the sum gathers eight float32 partial sums per chunk, chunks added in float64.
 */
export function expSumSimd(x: Float32Array, from: number, to: number, shift: number): number {
  const k = kernels();
  if (!k) return NaN;
  let sum = 0;
  for (let lo = from; lo < to; lo += CHUNK) {
    const n = Math.min(CHUNK, to - lo);
    sum += k.exp_sum(0, 0, stage(xs, x, lo, n, -Infinity), shift);
  }
  return sum;
}

/**
 * y[i] = scale · e^(x[i] + shift) for i in [from, to) (y may be x); false, with nothing written, where WebAssembly
 * SIMD is unavailable.
 */
export function scaledExpSimd(
  x: Float32Array,
  y: Float32Array,
  from: number,
  to: number,
  shift: number,
  scale: number,
): boolean {
  const k = kernels();
  if (!k) return false;
  for (let lo = from; lo < to; lo += CHUNK) {
    const n = Math.min(CHUNK, to - lo);
    k.scaled_exp(0, CHUNK * 4, stage(xs, x, lo, n, 0), shift, scale);
    y.set(ys.subarray(0, n), lo);
  }
  return true;
}
