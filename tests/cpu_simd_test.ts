/**
 * The CPU backend's WebAssembly SIMD kernels (engine/cpu/simd.ts) against float64 formulas: gelu_new and its
 * gradient, exponential sums and scaled exponentials, over ranges that cross the clamps, with lengths that are not
 * whole loop steps, chunk boundaries, offsets, in-place use and NaN.
 */

import assert from "node:assert/strict";
import { CHUNK, expSumSimd, geluGradSimd, geluSimd, hasSimd, scaledExpSimd } from "../engine/cpu/simd.ts";
import { mulberry32 } from "../engine/random.ts";

/** |got − want| ≤ rel(i) · |want| + abs for every element. */
function assertNear(
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  rel: number | ((i: number) => number),
  abs: number,
  what: string,
) {
  assert.equal(got.length, want.length);
  for (let i = 0; i < want.length; i++) {
    const tol = (typeof rel === "number" ? rel : rel(i)) * Math.abs(want[i]) + abs;
    assert.ok(Math.abs(got[i] - want[i]) <= tol, `${what}[${i}]: ${got[i]} vs ${want[i]} (tolerance ${tol})`);
  }
}

const C = Math.sqrt(2 / Math.PI), K = 0.044715;
/** gelu_new in float64 as x·σ(2u) (no clamp: the shaders' tanh clamp at ±15 moves gelu by < 4e-12 below x = −10). */
const gelu = (x: number) => x / (1 + Math.exp(-2 * C * (x + K * x * x * x)));
/** Its derivative: σ + x·σ·(1 − σ)·2C·(1 + 3K·x²). */
function geluGrad(x: number): number {
  const s = 1 / (1 + Math.exp(-2 * C * (x + K * x * x * x)));
  return s + x * s * (1 - s) * 2 * C * (1 + 3 * K * x * x);
}

/** x over [−12, 12] densely, the clamps' neighbourhoods and a few special values. */
function inputs(n: number, seed: number): Float32Array {
  const rnd = mulberry32(seed);
  const special = [0, -0, 1e-30, -1e-30, 40, -40, 1e4, -1e4, 6.2, -6.2];
  return Float32Array.from({ length: n }, (_, i) => i < special.length ? special[i] : rnd() * 24 - 12);
}

Deno.test("cpu simd: WebAssembly SIMD compiles in Deno", () => {
  assert.ok(hasSimd(), "the generated module must compile (WebAssembly SIMD is part of Deno's V8)");
});

for (const n of [1, 7, 8, 13, 1000, CHUNK + 5]) {
  Deno.test(`cpu simd: gelu_new and its gradient, ${n} elements, against float64`, () => {
    const x = inputs(n + 6, n), g = inputs(n + 6, n + 1);
    const from = 3, to = from + n;
    const y = new Float32Array(n + 6).fill(7), dx = new Float32Array(n + 6).fill(7);
    assert.ok(geluSimd(x, y, from, to));
    assert.ok(geluGradSimd(x, g, dx, from, to));
    const idx = Array.from({ length: n }, (_, i) => from + i);
    assertNear(idx.map((i) => y[i]), idx.map((i) => gelu(x[i])), 2e-6, 1e-10, "gelu");
    assertNear(idx.map((i) => dx[i]), idx.map((i) => g[i] * geluGrad(x[i])), 2e-6, 1e-6, "gelu grad");
    for (const i of [0, 1, 2, to, to + 1, to + 2]) assert.equal(y[i] + dx[i], 14, `element ${i} outside the range`);
    // In place: y = x and dx = g give the same results.
    const xi = x.slice(), gi = g.slice();
    geluSimd(xi, xi, from, to);
    geluGradSimd(x, gi, gi, from, to);
    assert.deepEqual(xi.subarray(from, to), y.subarray(from, to));
    assert.deepEqual(gi.subarray(from, to), dx.subarray(from, to));
  });
}

Deno.test("cpu simd: NaN stays NaN through gelu_new and its gradient; large |x| reaches the limits", () => {
  const x = Float32Array.of(NaN, 1, 100, -100, 9, -9, 0.5, 2), y = new Float32Array(8), dx = new Float32Array(8);
  geluSimd(x, y, 0, 8);
  geluGradSimd(x, new Float32Array(8).fill(1), dx, 0, 8);
  assert.ok(Number.isNaN(y[0]) && Number.isNaN(dx[0]));
  assert.equal(y[2], 100);
  assert.equal(dx[2], 1);
  assert.ok(Math.abs(y[3]) < 1e-30 && Math.abs(dx[3]) < 1e-30, `${y[3]} ${dx[3]}`);
});

for (const n of [5, 1024, 50257]) {
  Deno.test(`cpu simd: exponential sums and scaled exponentials of ${n} logits against float64`, () => {
    const rnd = mulberry32(n);
    const x = Float32Array.from({ length: n }, (_, i) => i % 97 === 3 ? -Infinity : rnd() * 30 - 20);
    let m = -Infinity;
    for (const v of x) m = Math.max(m, v);
    let want = 0;
    for (const v of x) want += Math.exp(v - m);
    const got = expSumSimd(x, 0, n, -m);
    assert.ok(Math.abs(got - want) <= 1e-6 * want, `${got} vs ${want}`);
    assert.ok(
      Math.abs(expSumSimd(x, 1, n - 1, -m) - (want - Math.exp(x[0] - m) - Math.exp(x[n - 1] - m))) <= 1e-6 * want,
    );
    const lse = m + Math.log(want), y = new Float32Array(n);
    assert.ok(scaledExpSimd(x, y, 0, n, -lse, -0.25));
    // x − lse is formed in float32 (as in the shaders and PyTorch), the shift rounded to float32: an exponent off by up
    // to an ulp of |x − lse|.
    const rel = (i: number) => 2e-6 + 1.2e-7 * (Number.isFinite(x[i]) ? Math.abs(x[i] - lse) : 0);
    assertNear(y, Array.from(x, (v) => -0.25 * Math.exp(v - lse)), rel, 1e-38, "scaled exp");
    for (let i = 3; i < n; i += 97) assert.ok(y[i] === 0, "−∞ gives exactly 0 (−0 here, as the scale is negative)");
  });
}

Deno.test("cpu simd: terms below e^−87 count as 0, not as float32 denormals or NaN", () => {
  const x = Float32Array.of(0, -86, -88, -200, -Infinity, -3.4e38, 0, 0, 0);
  const y = new Float32Array(x.length);
  scaledExpSimd(x, y, 0, x.length, 0, 1);
  assert.deepEqual(Array.from(y.subarray(2, 6)), [0, 0, 0, 0]);
  assert.ok(Math.abs(y[1] - Math.exp(-86)) <= 2e-6 * Math.exp(-86));
  assert.ok(Math.abs(expSumSimd(x, 0, x.length, 0) - (4 + Math.exp(-86))) < 1e-6);
});
