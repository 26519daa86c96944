/**
 * The CPU backend's WebAssembly SIMD kernels (engine/cpu/simd.ts) against float64 formulas: gelu_new and its
 * gradient, exponential sums and scaled exponentials, over ranges that cross the clamps, with lengths that are not
 * whole loop steps, chunk boundaries, offsets, in-place use and NaN.
 */

import assert from "node:assert/strict";
import {
  adamwSimd,
  CHUNK,
  dropoutSimd,
  expSumsSimd,
  geluGradSimd,
  geluSimd,
  hasSimd,
  scaledExpSimd,
} from "../engine/cpu/simd.ts";
import { mulberry32 } from "../engine/random.ts";
import { dropBits } from "../engine/cpu/rng.ts";

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
    const got = expSumsSimd(x, 0, n, -m)![0];
    assert.ok(Math.abs(got - want) <= 1e-6 * want, `${got} vs ${want}`);
    assert.ok(
      Math.abs(expSumsSimd(x, 1, n - 1, -m)![0] - (want - Math.exp(x[0] - m) - Math.exp(x[n - 1] - m))) <= 1e-6 * want,
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
  assert.ok(Math.abs(expSumsSimd(x, 0, x.length, 0)![0] - (4 + Math.exp(-86))) < 1e-6);
});

Deno.test("cpu simd: the entropy's sums and its gradient's affine exponentials against float64", () => {
  for (const n of [9, 1024, CHUNK + 100]) {
    const rnd = mulberry32(n + 5);
    const x = Float32Array.from({ length: n }, (_, i) => i % 50 === 7 ? -Infinity : rnd() * 16 - 8);
    let m = -Infinity, s = 0, u = 0;
    for (const v of x) m = Math.max(m, v);
    for (const v of x) if (v > -Infinity) [s, u] = [s + Math.exp(v - m), u + Math.exp(v - m) * (v - m)];
    const [gs, gu] = expSumsSimd(x, 0, n, -m)!;
    assert.ok(
      Math.abs(gs - s) <= 1e-6 * s && Math.abs(gu - u) <= 2e-6 * Math.abs(u) + 1e-6,
      `${gs} ${gu} vs ${s} ${u}`,
    );
    const lse = m + Math.log(s), shift = u / s - lse, y = new Float32Array(n);
    assert.ok(scaledExpSimd(x, y, 0, n, -lse, 0.5, shift));
    const want = Array.from(x, (v) => v > -Infinity ? 0.5 * Math.exp(v - lse) * (v + shift) : 0);
    const rel = (i: number) => 2e-6 + 1.2e-7 * (Number.isFinite(x[i]) ? Math.abs(x[i] - lse) : 0);
    assertNear(y, want, rel, 1e-7, "entropy gradient");
  }
});

Deno.test("cpu simd: AdamW steps against float64, over chunk boundaries and an offset range", () => {
  const n = CHUNK + 37, from = 5, to = n - 3, rnd = mulberry32(9);
  const rand = (scale: number) => Float32Array.from({ length: n }, () => (rnd() * 2 - 1) * scale);
  const p = rand(1), g = rand(0.1), m = rand(0.01), v = rand(0.001).map(Math.abs);
  const h = { w: 0.1, beta2: 0.999, oneMinusBeta2: 0.001, decay: 1 - 1e-3 * 0.01, stepSize: 1e-3 / 0.19, eps: 1e-8 };
  for (const sign of [1, -1]) {
    const [p1, m1, v1] = [p.slice(), m.slice(), v.slice()];
    const invCorrection = 1 / Math.sqrt(1 - 0.999 ** 3);
    assert.ok(adamwSimd(p1, g, m1, v1, from, to, { ...h, invCorrection, sign }));
    for (let i = 0; i < n; i++) {
      if (i < from || i >= to) {
        assert.ok(p1[i] === p[i] && m1[i] === m[i] && v1[i] === v[i], `element ${i} outside the range`);
        continue;
      }
      const gi = sign * g[i], mi = m[i] + h.w * (gi - m[i]), vi = v[i] * h.beta2 + h.oneMinusBeta2 * gi * gi;
      const pi = p[i] * h.decay - h.stepSize * mi / (Math.sqrt(vi) * invCorrection + h.eps);
      assert.ok(Math.abs(m1[i] - mi) <= 1e-6 * Math.abs(mi) + 1e-9, `m[${i}]: ${m1[i]} vs ${mi}`);
      assert.ok(Math.abs(v1[i] - vi) <= 1e-6 * Math.abs(vi) + 1e-12, `v[${i}]: ${v1[i]} vs ${vi}`);
      assert.ok(Math.abs(p1[i] - pi) <= 2e-7 * Math.abs(pi) + 1e-8, `p[${i}]: ${p1[i]} vs ${pi}`);
    }
  }
});

Deno.test("cpu simd: dropout keeps the scalar kernel's mask bit for bit, and +0 for dropped NaN and ±Infinity", () => {
  for (const [n, key, threshold] of [[5, 1, 2 ** 31], [1000, 0xdeadbeef, 429496729], [CHUNK + 13, 77, 0xc0000000]]) {
    const rnd = mulberry32(n);
    const x = Float32Array.from({ length: n }, (_, i) => [NaN, Infinity, -Infinity][i % 50] ?? rnd() * 4 - 2);
    const y = new Float32Array(n), scale = Math.fround(1 / 0.9);
    assert.ok(dropoutSimd(x, y, n, key, threshold, scale));
    const want = Float32Array.from(x, (v, i) => dropBits(i, key) >= threshold ? v * scale : 0);
    assert.deepEqual(new Uint32Array(y.buffer), new Uint32Array(want.buffer), `n ${n}, key ${key}`);
    const start = 12_345, z = new Float32Array(n); // flat indices from an offset (attention's probability blocks)
    assert.ok(dropoutSimd(x, z, n, key, threshold, scale, start));
    const shifted = Float32Array.from(x, (v, i) => dropBits(start + i, key) >= threshold ? v * scale : 0);
    assert.deepEqual(new Uint32Array(z.buffer), new Uint32Array(shifted.buffer), `start ${start}`);
    const kept = want.filter((_, i) => dropBits(i, key) >= threshold && Number.isFinite(x[i])).length;
    assert.ok(kept > 0 && kept < n, `some kept, some dropped (${kept} of ${n})`);
  }
});
