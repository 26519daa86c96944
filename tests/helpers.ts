/**
 * Shared test utilities: engine start-up, float64 references, finite-difference gradient checks, and
 * {@linkcode checkOp}, which tests an op's forward and backward against a float64 reference in one call.
 */
import assert from "node:assert/strict";
import { initEngine } from "../engine/init.ts";
import { noGrad, runtime, type Tensor, tensor } from "../engine/tensor.ts";
import { backward } from "../engine/autograd.ts";
import { mulberry32 } from "../engine/random.ts";
import { setMatmulPrecision } from "../engine/ops/matmul_coop.ts";

export { assert };

// Tests compare with float64 references and HF fixtures at fp32 tolerances: exact fp32 products everywhere (on a GPU
// with cooperative matrices the default would be mixed precision). tests/matmul_coop_test.ts tests that path.
setMatmulPrecision("fp32");

// The suite runs on the backend RLHF_WEBGPU_BACKEND names (`deno task test`: webgpu, `deno task test:cpu`: cpu);
// unset, on WebGPU — also in the processes tests start, which inherit it — rather than on auto's choice.
if (!Deno.env.get("RLHF_WEBGPU_BACKEND")) Deno.env.set("RLHF_WEBGPU_BACKEND", "webgpu");
/** Starts the engine once per test file. */
export const ready: Promise<unknown> = initEngine({ verbose: false });

/** Seeded PRNG (mulberry32) returning floats in [0, 1). */
export const rng: (seed: number) => () => number = mulberry32;

/** Whether the suite runs on the CPU backend (`RLHF_WEBGPU_BACKEND=cpu`); call after `ready`. */
export function onCpuBackend(): boolean {
  return runtime().handle.backend === "cpu";
}

/** Row-major strides of a shape. */
export function strides(shape: readonly number[]): number[] {
  const st: number[] = [];
  let s = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    st[d] = s;
    s *= shape[d];
  }
  return st;
}

/** Multi-index of flat index `i` in a row-major shape. */
export function coords(i: number, shape: readonly number[]): number[] {
  const c: number[] = [];
  for (let d = shape.length - 1; d >= 0; d--) {
    c[d] = i % shape[d];
    i = Math.floor(i / shape[d]);
  }
  return c;
}

/** Flat index, in a tensor of `shape` broadcast to `outShape`, of the element at coordinates `c` of `outShape`. */
export function bindex(c: readonly number[], shape: readonly number[], outShape: readonly number[]): number {
  const off = outShape.length - shape.length;
  let k = 0;
  for (let d = 0; d < shape.length; d++) k = k * shape[d] + (shape[d] === 1 ? 0 : c[d + off]);
  return k;
}

/** Random data in [lo, hi). */
export function randArray(n: number, seed: number, lo = -1, hi = 1): Float64Array {
  const r = rng(seed);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * r();
  return out;
}

/** Asserts |actual − expected| ≤ atol + rtol·|expected| element-wise, naming the worst index. */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  atol = 1e-5,
  rtol = 1e-4,
  what = "values",
): void {
  assert.equal(actual.length, expected.length, `${what}: length ${actual.length} ≠ ${expected.length}`);
  let worst = -1, worstErr = 0;
  for (let i = 0; i < actual.length; i++) {
    const err = Math.abs(actual[i] - expected[i]) - (atol + rtol * Math.abs(expected[i]));
    if (!(err <= 0) && (worst < 0 || err > worstErr || Number.isNaN(err))) {
      worst = i;
      worstErr = Number.isNaN(err) ? Infinity : err;
    }
  }
  if (worst >= 0) {
    assert.fail(
      `${what}: index ${worst}: got ${actual[worst]}, expected ${expected[worst]} (atol ${atol}, rtol ${rtol})`,
    );
  }
}

/**
 * Central finite differences, in float64, of Σᵢ wᵢ·ref(inputs)ᵢ with respect to each element of input k
 * (`inputs` is not modified).
 */
export function numericGrad(
  ref: (xs: Float64Array[]) => ArrayLike<number>,
  inputs: readonly ArrayLike<number>[],
  k: number,
  w: ArrayLike<number>,
  eps = 1e-3,
): Float64Array {
  const base = inputs.map((d) => Float64Array.from(d));
  const num = new Float64Array(base[k].length);
  for (let j = 0; j < num.length; j++) {
    const orig = base[k][j];
    base[k][j] = orig + eps;
    // Copies: a reference may return (a view of) its input.
    const yp = Float64Array.from(ref(base));
    base[k][j] = orig - eps;
    const ym = Float64Array.from(ref(base));
    base[k][j] = orig;
    assert.equal(yp.length, w.length, `reference gives ${yp.length} outputs, the op ${w.length}`);
    let s = 0;
    for (let i = 0; i < yp.length; i++) s += w[i] * (yp[i] - ym[i]);
    num[j] = s / (2 * eps);
  }
  return num;
}

/**
 * Checks autograd gradients of `f(inputs)` (reduced to a scalar by a fixed random weighting)
 * against central finite differences computed in float64 from `ref` (a CPU float64 reference of f).
 */
export async function gradCheck(
  f: (xs: Tensor[]) => Tensor,
  ref: (xs: Float64Array[]) => Float64Array,
  inputs: { data: Float64Array; shape: number[] }[],
  opts: { atol?: number; rtol?: number; eps?: number; seed?: number } = {},
): Promise<void> {
  const xs = inputs.map((i) => tensor(Float32Array.from(i.data), i.shape).requireGrad());
  const y = f(xs);
  const w = randArray(y.size, opts.seed ?? 99);
  const wt = tensor(Float32Array.from(w), [...y.shape]);
  backward(y, wt);
  const eps = opts.eps ?? 1e-3;
  for (let k = 0; k < inputs.length; k++) {
    const got = await xs[k].grad!.toArray();
    const num = numericGrad(ref, inputs.map((i) => i.data), k, w, eps);
    assertClose(got, num, opts.atol ?? 1e-3, opts.rtol ?? 1e-2, `grad of input ${k}`);
  }
  noGrad(() => {
    for (const x of xs) {
      x.grad?.dispose();
      x.dispose();
    }
    y.dispose();
    wt.dispose();
  });
}

// ------------------------------------------------------------------ checkOp

/**
 * One input of {@linkcode checkOp}: a shape (random f32 data in the options' `range`) or a description.
 * `data` is used as given (rounded to the dtype); random i32 data are integers in [range[0], range[1]).
 * `grad: false` leaves an f32 input out of the gradient check (a mask, a condition); i32 inputs never have one.
 */
export type OpInput = readonly number[] | {
  shape: readonly number[];
  data?: ArrayLike<number>;
  range?: readonly [number, number];
  dtype?: "f32" | "i32";
  grad?: boolean;
};

/** Options of {@linkcode checkOp}; tolerances are those of {@linkcode assertClose}. */
export interface CheckOpOptions {
  /** Range of random inputs (default [-1, 1)); an input's own `range` wins. */
  range?: readonly [number, number];
  /** Points random f32 inputs keep at least 0.05 away from (kinks, where finite differences are meaningless). */
  avoid?: readonly number[];
  /** Seed of input k's random data is seed + k (default 1). */
  seed?: number;
  /** The output shape and dtype the op must produce. */
  shape?: readonly number[];
  dtype?: "f32" | "i32";
  /** Forward tolerances (default 1e-5, 1e-5; exact copies pass 0, 0). */
  atol?: number;
  rtol?: number;
  /** false: forward only (ops without a backward, integer outputs). */
  grad?: boolean;
  /** Gradient tolerances (default 1e-3, 1e-2) and finite-difference step (default 1e-3), as in {@linkcode gradCheck}. */
  gradAtol?: number;
  gradRtol?: number;
  eps?: number;
  /** Prefix of failure messages. */
  name?: string;
}

/**
 * tinygrad-style op test: builds seeded inputs, checks `fn` (run with and without autograd) against the float64
 * reference `ref64` (given the inputs exactly as the engine sees them, i.e. rounded to f32), then checks the
 * gradient of every f32 input against central finite differences of `ref64` for a random-weighted sum of the
 * outputs.
 */
export async function checkOp(
  fn: (...xs: Tensor[]) => Tensor,
  ref64: (...xs: Float64Array[]) => ArrayLike<number>,
  inputs: readonly OpInput[],
  opts: CheckOpOptions = {},
): Promise<void> {
  await ready;
  const specs = inputs.map((i) => "shape" in i ? i : { shape: i });
  const seed = opts.seed ?? 1, name = opts.name ?? "op";
  const data = specs.map((s, k) => {
    const n = s.shape.reduce((a, b) => a * b, 1);
    if (s.data) {
      assert.equal(s.data.length, n, `${name}: input ${k} has ${s.data.length} values for shape [${s.shape}]`);
    }
    const [lo, hi] = s.range ?? opts.range ?? [-1, 1];
    const r = rng(seed + k);
    const draw = s.dtype === "i32" ? () => lo + Math.floor((hi - lo) * r()) : () => {
      let v: number;
      do v = lo + (hi - lo) * r(); while (opts.avoid?.some((p) => Math.abs(v - p) < 0.05));
      return v;
    };
    const raw = s.data ?? Float64Array.from({ length: n }, draw);
    return Float64Array.from(s.dtype === "i32" ? Int32Array.from(raw) : Float32Array.from(raw));
  });
  const make = (k: number) =>
    tensor(specs[k].dtype === "i32" ? Int32Array.from(data[k]) : Float32Array.from(data[k]), specs[k].shape);
  const expected = ref64(...data.map((d) => d.slice()));
  const atol = opts.atol ?? 1e-5, rtol = opts.rtol ?? 1e-5;
  const forward = async (y: Tensor, what: string) => {
    if (opts.shape) assert.deepEqual([...y.shape], [...opts.shape], `${name} ${what}: output shape`);
    if (opts.dtype) assert.equal(y.dtype, opts.dtype, `${name} ${what}: output dtype`);
    const out = await y.toArray();
    assertClose(out, expected, atol, rtol, `${name} ${what}`);
  };

  const xs = specs.map((_, k) => make(k));
  const y0 = noGrad(() => fn(...xs));
  await forward(y0, "forward");
  for (const t of [y0, ...xs]) t.dispose();
  if (opts.grad === false) return;

  const checked = specs.map((s) => s.dtype !== "i32" && s.grad !== false);
  assert.ok(checked.some((c) => c), `${name}: no f32 input to check gradients of (pass grad: false)`);
  const ts = specs.map((_, k) => make(k).requireGrad(checked[k]));
  const y = fn(...ts);
  await forward(y, "forward with autograd");
  const w = randArray(y.size, 99);
  const wt = tensor(Float32Array.from(w), [...y.shape]);
  backward(y, wt);
  const eps = opts.eps ?? 1e-3;
  for (let k = 0; k < specs.length; k++) {
    if (!checked[k]) continue;
    assert.ok(ts[k].grad, `${name}: input ${k} got no gradient`);
    const got = await ts[k].grad!.toArray();
    const num = numericGrad((b) => ref64(...b), data, k, w, eps);
    assertClose(got, num, opts.gradAtol ?? 1e-3, opts.gradRtol ?? 1e-2, `${name}: grad of input ${k}`);
  }
  noGrad(() => {
    for (const t of ts) {
      t.grad?.dispose();
      t.dispose();
    }
    y.dispose();
    wt.dispose();
  });
}
