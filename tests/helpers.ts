/** Shared test utilities: engine start-up, float64 references, finite-difference gradient checks. */
import assert from "node:assert/strict";
import { initEngine, noGrad, type Tensor, tensor } from "../engine/tensor.ts";
import { backward } from "../engine/autograd.ts";
import { mulberry32 } from "../engine/random.ts";
import { setMatmulPrecision } from "../engine/ops/matmul_coop.ts";

export { assert };

// Tests compare with float64 references and HF fixtures at fp32 tolerances: exact fp32 products everywhere (on a GPU
// with cooperative matrices the default would be mixed precision). tests/matmul_coop_test.ts tests that path.
setMatmulPrecision("fp32");

/** Starts the engine once per test file. */
export const ready: Promise<unknown> = initEngine({ verbose: false });

/** Seeded PRNG (mulberry32) returning floats in [0, 1). */
export const rng: (seed: number) => () => number = mulberry32;

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
    const base = inputs.map((i) => Float64Array.from(i.data));
    const num = new Float64Array(inputs[k].data.length);
    for (let j = 0; j < num.length; j++) {
      const orig = base[k][j];
      base[k][j] = orig + eps;
      const yp = ref(base);
      base[k][j] = orig - eps;
      const ym = ref(base);
      base[k][j] = orig;
      let s = 0;
      for (let i = 0; i < yp.length; i++) s += w[i] * (yp[i] - ym[i]);
      num[j] = s / (2 * eps);
    }
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
