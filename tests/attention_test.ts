import { assert, assertClose, gradCheck, randArray, ready } from "./helpers.ts";
import { noGrad, readAll, tensor } from "../engine/tensor.ts";
import { backward } from "../engine/autograd.ts";
import {
  type AttentionTileConfig,
  type AttentionTuning,
  getAttentionTuning,
  scaledDotProductAttention,
  setAttentionTuning,
  writeKV,
} from "../engine/ops/attention.ts";
import { attnGradRef, attnRef, causal, type Cfg, inputs, leftPad, options, run, withTuning } from "./attention_ref.ts";

const forwardCases: [string, Cfg][] = [
  ["plain", { B: 2, H: 3, Tq: 7, Tk: 7, D: 5 }],
  ["causal, D=3", { B: 1, H: 2, Tq: 6, Tk: 6, D: 3, causal: true }],
  ["causal + left padding (fully masked rows)", {
    B: 2,
    H: 2,
    Tq: 5,
    Tk: 5,
    D: 4,
    causal: true,
    mask: leftPad(2, 5, [2, 0]),
  }],
  ["decode Tq=1 < Tk, f32 mask", {
    B: 2,
    H: 2,
    Tq: 1,
    Tk: 9,
    D: 6,
    causal: true,
    mask: leftPad(2, 9, [3, 1]),
    maskDtype: "f32",
  }],
  ["Tq=3 < Tk=8 causal", { B: 1, H: 3, Tq: 3, Tk: 8, D: 7, causal: true }],
  ["T=1", { B: 3, H: 1, Tq: 1, Tk: 1, D: 2 }],
  ["custom scale, D=64", { B: 1, H: 2, Tq: 4, Tk: 6, D: 64, scale: 0.3 }],
  ["D=130 (several dims per thread)", { B: 1, H: 1, Tq: 3, Tk: 5, D: 130 }],
  ["batch with every key masked", { B: 2, H: 2, Tq: 3, Tk: 4, D: 3, mask: [0, 0, 0, 0, 1, 0, 1, 1] }],
  ["Tk=2100 (three chunks, online softmax)", { B: 1, H: 2, Tq: 3, Tk: 2100, D: 4 }],
  ["Tk=2100 causal decode", { B: 1, H: 1, Tq: 2, Tk: 2100, D: 5, causal: true }],
  ["dropout", { B: 2, H: 2, Tq: 4, Tk: 6, D: 3, causal: true, p: 0.3, seed: 1234 }],
];

for (const [name, c] of forwardCases) {
  Deno.test(`attention forward (${name}) matches float64`, async () => {
    await ready;
    const xs = inputs(c, 1);
    const y = run(c, xs);
    assert.deepEqual([...y.shape], [c.B, c.H, c.Tq, c.D]);
    const got = await y.toArray();
    assert.ok(got.every((x) => Number.isFinite(x)), "non-finite output");
    assertClose(got, attnRef(xs[0], xs[1], xs[2], c), 2e-5, 1e-4, name);
  });
}

Deno.test("attention: fully masked rows give exact zeros", async () => {
  await ready;
  const c: Cfg = { B: 2, H: 1, Tq: 3, Tk: 3, D: 2, causal: true, mask: [0, 0, 1, 0, 0, 0] };
  const got = await run(c, inputs(c, 5)).toArray();
  // batch 0: queries 0 and 1 see only masked keys; batch 1: all masked
  assert.deepEqual(Array.from(got.slice(0, 4)), [0, 0, 0, 0]);
  assert.deepEqual(Array.from(got.slice(6)), [0, 0, 0, 0, 0, 0]);
  assert.ok(got[4] !== 0 && got[5] !== 0);
});

const gradCases: [string, Cfg][] = [
  ["plain B=2,H=2,T=5,D=3", { B: 2, H: 2, Tq: 5, Tk: 5, D: 3 }],
  ["causal + left padding", { B: 2, H: 2, Tq: 5, Tk: 5, D: 3, causal: true, mask: leftPad(2, 5, [2, 1]) }],
  ["decode Tq=2 < Tk=5, padding", { B: 2, H: 1, Tq: 2, Tk: 5, D: 3, causal: true, mask: leftPad(2, 5, [1, 0]) }],
  ["dropout p=0.3 with masks", {
    B: 2,
    H: 2,
    Tq: 5,
    Tk: 5,
    D: 3,
    causal: true,
    mask: leftPad(2, 5, [1, 0]),
    p: 0.3,
    seed: 77,
  }],
];

for (const [name, c] of gradCases) {
  Deno.test(`attention backward (${name}): dq, dk, dv match finite differences`, async () => {
    await ready;
    const [q, k, v] = inputs(c, 3);
    const opts = options(c);
    await gradCheck(
      ([a, b, d]) => scaledDotProductAttention(a, b, d, opts),
      ([a, b, d]) => attnRef(a, b, d, c),
      [
        { data: q, shape: [c.B, c.H, c.Tq, c.D] },
        { data: k, shape: [c.B, c.H, c.Tk, c.D] },
        { data: v, shape: [c.B, c.H, c.Tk, c.D] },
      ],
      { atol: 2e-3, rtol: 2e-2 },
    );
  });
}

Deno.test("attention backward over 1100 queries and keys (chunked) matches the analytic float64 gradient", async () => {
  await ready;
  const c: Cfg = { B: 1, H: 1, Tq: 1100, Tk: 1100, D: 3, causal: true, mask: leftPad(1, 1100, [5]) };
  const xs = inputs(c, 9);
  const dO = randArray(c.Tq * c.D, 12);
  const ts = xs.map((x, i) => tensor(Float32Array.from(x), [1, 1, i === 0 ? c.Tq : c.Tk, c.D]).requireGrad());
  backward(
    scaledDotProductAttention(ts[0], ts[1], ts[2], options(c)),
    tensor(Float32Array.from(dO), [1, 1, c.Tq, c.D]),
  );
  const got = await readAll(ts.map((t) => t.grad!));
  const ref = attnGradRef(xs[0], xs[1], xs[2], dO, c);
  for (let i = 0; i < 3; i++) assertClose(got[i], ref[i], 1e-4, 1e-3, `grad ${"qkv"[i]}`);
});

Deno.test("attention dropout: same seed gives the same output, another seed a different one", async () => {
  await ready;
  const c: Cfg = { B: 1, H: 2, Tq: 6, Tk: 6, D: 4, p: 0.5, seed: 42 };
  const xs = inputs(c, 4);
  const [a, b, d] = await readAll([run(c, xs), run(c, xs), run({ ...c, seed: 43 }, xs)]);
  assert.deepEqual(Array.from(a), Array.from(b));
  assert.notDeepEqual(Array.from(a), Array.from(d));
  const plain = await run({ ...c, p: 0 }, xs).toArray();
  const evalMode = noGrad(() => {
    const [q, k, v] = xs.map((x) => tensor(Float32Array.from(x), [1, 2, 6, 4]));
    return scaledDotProductAttention(q, k, v, { dropoutP: 0.5, seed: 42, training: false });
  });
  assert.deepEqual(Array.from(await evalMode.toArray()), Array.from(plain));
});

Deno.test("attention rejects bad shapes and masks, naming the op", async () => {
  await ready;
  const q = tensor(new Float32Array(2 * 2 * 3 * 4), [2, 2, 3, 4]);
  const k = tensor(new Float32Array(2 * 2 * 5 * 4), [2, 2, 5, 4]);
  const sdpa = scaledDotProductAttention;
  assert.throws(
    () => sdpa(q, tensor(new Float32Array(2 * 2 * 5 * 3), [2, 2, 5, 3]), k),
    /scaledDotProductAttention: k \[2,2,5,3\] does not match q/,
  );
  assert.throws(() => sdpa(q, k, q), /scaledDotProductAttention: v \[2,2,3,4\] must have the shape of k/);
  assert.throws(() => sdpa(tensor(new Float32Array(12), [3, 4]), k, k), /q must be an f32 \[B, H, T, D\] tensor/);
  assert.throws(
    () => sdpa(q, k, k, { keyPaddingMask: tensor(new Int32Array(6), [2, 3]) }),
    /keyPaddingMask must be \[B, Tk\] = \[2, 5\]/,
  );
  assert.throws(() => sdpa(q, k, k, { dropoutP: 1.5, seed: 1 }), /dropout probability must be in \[0, 1\]/);
  const big = tensor(new Float32Array(300), [1, 1, 1, 300]);
  assert.throws(() => sdpa(big, big, big), /head size D must be in \[1, 256\]/);
});

// ---------------------------------------------------------------- tiled kernels, KV cache

const tiles = (c: AttentionTileConfig): Partial<AttentionTuning> => ({
  forward: [c],
  gradQ: [c],
  gradKV: [c],
  minTiledQueries: 1,
});
// tile sets: the defaults (whatever fits this device), tiny tiles (many blocks and tiles on small
// shapes), and sizes that are not powers of two
const tileSets: [string, Partial<AttentionTuning>][] = [
  ["default tiles", { minTiledQueries: 1 }],
  ["tiny tiles", tiles({ tq: 2, tc: 2, bt: 4 })],
  ["odd tiles", tiles({ tq: 3, tc: 4, bt: 12 })],
];

// Each case lists the tile sets (indices into tileSets) it runs with. Kernels are specialised per head
// size and mask type, and compiling them dominates the test time on llvmpipe, so the cases share a
// few (D, mask) pairs: (64, none), (48, i32), (3, f32), (128, none), and (3, i32) in the chunked test.
const tiledCases: [string, Cfg, number[]][] = [
  ["T=1, D=64", causal(2, 1, 1, 1, 64), [0]],
  ["T=130, D=64", causal(1, 1, 130, 130, 64), [0]],
  ["T=17, D=48, left padding", causal(2, 2, 17, 17, 48, [5, 0]), [0, 1, 2]],
  ["Tq=20 > Tk=6 (first rows see nothing), D=48", causal(1, 1, 20, 6, 48, [0]), [0, 1, 2]],
  ["dropout + padding, D=48", causal(2, 2, 17, 17, 48, [3, 0], { p: 0.3, seed: 99 }), [0, 1, 2]],
  ["T=70, D=3, not causal, f32 mask", { ...causal(2, 1, 70, 70, 3, [0, 33]), causal: false, maskDtype: "f32" }, [0]],
  ["Tq=9 < Tk=40, D=128", causal(1, 2, 9, 40, 128), [0]],
];

for (const [set, [setName, tuningSet]] of tileSets.entries()) {
  Deno.test(`attention tiled forward (${setName}) matches float64`, async () => {
    await ready;
    await withTuning(tuningSet, async () => {
      for (const [name, c, sets] of tiledCases) {
        if (!sets.includes(set)) continue;
        const xs = inputs(c, 21);
        const got = await run(c, xs).toArray();
        assertClose(got, attnRef(xs[0], xs[1], xs[2], c), 2e-5, 1e-4, `${setName}, ${name}`);
      }
    });
  });
}

const tiledGradCases: [string, Cfg][] = [
  ["causal + left padding, T=9", causal(2, 1, 9, 9, 48, [2, 0])],
  ["dropout, Tq=6 < Tk=11, causal + padding", causal(2, 1, 6, 11, 48, [1, 4], { p: 0.4, seed: 5 })],
];

for (const [name, c] of tiledGradCases) {
  Deno.test(`attention tiled backward (tiny tiles, ${name}) matches finite differences`, async () => {
    await ready;
    const [q, k, v] = inputs(c, 31);
    const opts = options(c);
    await withTuning(tileSets[1][1], () =>
      gradCheck(
        ([a, b, d]) => scaledDotProductAttention(a, b, d, opts),
        ([a, b, d]) => attnRef(a, b, d, c),
        [
          { data: q, shape: [c.B, c.H, c.Tq, c.D] },
          { data: k, shape: [c.B, c.H, c.Tk, c.D] },
          { data: v, shape: [c.B, c.H, c.Tk, c.D] },
        ],
        { atol: 2e-3, rtol: 2e-2 },
      ));
  });
}

/** Gradients of q, k, v (k, v with Tcap rows) for output gradient dO (f32 results). */
async function grads(c: Cfg, xs: Float64Array[], dO: Float64Array, kvLength?: number, Tcap = c.Tk) {
  const ts = [
    tensor(Float32Array.from(xs[0]), [c.B, c.H, c.Tq, c.D]).requireGrad(),
    tensor(Float32Array.from(xs[1]), [c.B, c.H, Tcap, c.D]).requireGrad(),
    tensor(Float32Array.from(xs[2]), [c.B, c.H, Tcap, c.D]).requireGrad(),
  ];
  const opts = { ...options(c), kvLength };
  backward(scaledDotProductAttention(ts[0], ts[1], ts[2], opts), tensor(Float32Array.from(dO), [c.B, c.H, c.Tq, c.D]));
  return await readAll(ts.map((t) => t.grad!));
}

Deno.test("attention tiled backward on larger shapes matches the analytic float64 gradient", async () => {
  await ready;
  const cases: [string, Cfg][] = [
    ["T=70, D=48, causal + padding", causal(2, 1, 70, 70, 48, [9, 0])],
    ["T=130, D=64, causal", causal(1, 1, 130, 130, 64)],
    ["T=33, D=48, dropout + padding", causal(1, 2, 33, 33, 48, [4], { p: 0.2, seed: 3 })],
  ];
  await withTuning(tileSets[0][1], async () => {
    for (const [name, c] of cases) {
      const xs = inputs(c, 41);
      const dO = randArray(c.B * c.H * c.Tq * c.D, 42);
      const got = await grads(c, xs, dO);
      const ref = attnGradRef(xs[0], xs[1], xs[2], dO, c);
      for (let i = 0; i < 3; i++) assertClose(got[i], ref[i], 1e-4, 1e-3, `${name}: grad ${"qkv"[i]}`);
    }
  });
});

Deno.test("attention: tiled and row kernels agree (forward, gradients, dropout mask)", async () => {
  await ready;
  const c = causal(2, 2, 19, 19, 48, [4, 0], { p: 0.5, seed: 8 });
  const xs = inputs(c, 51);
  const dO = randArray(c.B * c.H * c.Tq * c.D, 52);
  const both = async () => [await run(c, xs).toArray(), ...await grads(c, xs, dO)];
  const viaTiles = await withTuning(tileSets[1][1], both);
  const viaRows = await withTuning({ minTiledQueries: Infinity, minMathQueries: Infinity }, both);
  for (let i = 0; i < 4; i++) assertClose(viaTiles[i], viaRows[i], 1e-5, 1e-4, ["out", "dq", "dk", "dv"][i]);
  // the same probabilities are dropped: exact zeros coincide
  assert.deepEqual(viaTiles[0].map((x) => x === 0 ? 1 : 0), viaRows[0].map((x) => x === 0 ? 1 : 0));
});

Deno.test("attention backward over 1100 queries and keys with the row kernels (chunked) matches float64", async () => {
  await ready;
  const c = causal(1, 1, 1100, 1100, 3, [5]);
  const xs = inputs(c, 9);
  const dO = randArray(c.Tq * c.D, 12);
  const got = await withTuning({ minTiledQueries: Infinity, minMathQueries: Infinity }, () => grads(c, xs, dO));
  const ref = attnGradRef(xs[0], xs[1], xs[2], dO, c);
  for (let i = 0; i < 3; i++) assertClose(got[i], ref[i], 1e-4, 1e-3, `grad ${"qkv"[i]}`);
});

/** [B, H, Tk, D] (H = D = 1 for masks) copied into [B, H, Tcap, D] whose extra positions hold `fill`. */
function toCapacity(x: ArrayLike<number>, c: Cfg, Tcap: number, fill: number): Float64Array {
  const out = new Float64Array(c.B * c.H * Tcap * c.D).fill(fill);
  for (let bh = 0; bh < c.B * c.H; bh++) {
    for (let e = 0; e < c.Tk * c.D; e++) out[bh * Tcap * c.D + e] = x[bh * c.Tk * c.D + e];
  }
  return out;
}

Deno.test("attention with kvLength reads only the valid part of a KV cache (row and tiled kernels)", async () => {
  await ready;
  const Tcap = 50;
  const cases: [Cfg, number][] = [
    [causal(2, 2, 1, 37, 64, [3, 0]), 0], // row kernels
    [causal(2, 1, 9, 30, 48, [0, 7]), 0],
    [{ B: 1, H: 2, Tq: 12, Tk: 12, D: 64 }, 0],
    [causal(2, 1, 9, 30, 48, [1, 7]), 1],
  ];
  for (const [set, tuningSet] of [{}, tileSets[1][1]].entries()) {
    await withTuning(tuningSet, async () => {
      for (const [c, cset] of cases) {
        if (cset !== set) continue;
        const [q, k, v] = inputs(c, 61);
        // the mask is [B, Tcap]: columns ≥ kvLength are ignored (set to 1 here)
        const mask = c.mask && Array.from(toCapacity(c.mask, { ...c, H: 1, D: 1 }, Tcap, 1));
        const cap: Cfg = { ...c, Tk: Tcap, mask };
        const out = noGrad(() =>
          scaledDotProductAttention(
            tensor(Float32Array.from(q), [c.B, c.H, c.Tq, c.D]),
            tensor(Float32Array.from(toCapacity(k, c, Tcap, NaN)), [c.B, c.H, Tcap, c.D]),
            tensor(Float32Array.from(toCapacity(v, c, Tcap, 1e30)), [c.B, c.H, Tcap, c.D]),
            { ...options(cap), kvLength: c.Tk },
          )
        );
        const got = await out.toArray();
        assert.ok(got.every(Number.isFinite), "positions beyond kvLength leaked into the output");
        assertClose(got, attnRef(q, k, v, c), 2e-5, 1e-4, `Tq=${c.Tq}, kvLength=${c.Tk}`);
        // gradients: k and v get zeros beyond kvLength
        const dO = randArray(c.B * c.H * c.Tq * c.D, 62);
        const g = await grads(cap, [q, toCapacity(k, c, Tcap, 0.5), toCapacity(v, c, Tcap, 0.5)], dO, c.Tk, Tcap);
        const ref = attnGradRef(q, k, v, dO, c);
        assertClose(g[0], ref[0], 1e-4, 1e-3, "grad q");
        assertClose(g[1], toCapacity(ref[1], c, Tcap, 0), 1e-4, 1e-3, "grad k");
        assertClose(g[2], toCapacity(ref[2], c, Tcap, 0), 1e-4, 1e-3, "grad v");
      }
    });
  }
});

Deno.test("writeKV writes an update into a cache in place", async () => {
  await ready;
  const [B, H, Tcap, D, T, off] = [2, 3, 6, 5, 2, 3];
  const c0 = randArray(B * H * Tcap * D, 71), u = randArray(B * H * T * D, 72);
  const cache = tensor(Float32Array.from(c0), [B, H, Tcap, D]);
  writeKV(cache, tensor(Float32Array.from(u), [B, H, T, D]), off);
  const want = Float32Array.from(c0);
  for (let bh = 0; bh < B * H; bh++) {
    for (let e = 0; e < T * D; e++) want[(bh * Tcap + off) * D + e] = u[bh * T * D + e];
  }
  assertClose(await cache.toArray(), want, 0, 0, "cache");
});

Deno.test("KV-cache decoding with writeKV + kvLength equals causal attention over the whole sequence", async () => {
  await ready;
  const [B, H, D, T, Tp, Tcap] = [2, 2, 48, 14, 9, 16];
  const c = causal(B, H, T, T, D, [2, 0]);
  const [q, k, v] = inputs(c, 81);
  const full = attnRef(q, k, v, c);
  const maskCap = tensor(Int32Array.from(toCapacity(c.mask!, { ...c, H: 1, D: 1 }, Tcap, 0)), [B, Tcap]);
  const rows = (x: Float64Array, t0: number, t1: number) => {
    const out = new Float32Array(B * H * (t1 - t0) * D);
    for (let bh = 0; bh < B * H; bh++) out.set(x.subarray((bh * T + t0) * D, (bh * T + t1) * D), bh * (t1 - t0) * D);
    return out;
  };
  const kc = tensor(new Float32Array(B * H * Tcap * D).fill(NaN), [B, H, Tcap, D]);
  const vc = tensor(new Float32Array(B * H * Tcap * D).fill(NaN), [B, H, Tcap, D]);
  // the prompt (tiled kernels), then one token per step (row kernels)
  for (const [t0, t1] of [[0, Tp], ...Array.from({ length: T - Tp }, (_, i) => [Tp + i, Tp + i + 1])]) {
    const n = t1 - t0;
    writeKV(kc, tensor(rows(k, t0, t1), [B, H, n, D]), t0);
    writeKV(vc, tensor(rows(v, t0, t1), [B, H, n, D]), t0);
    const o = noGrad(() =>
      scaledDotProductAttention(tensor(rows(q, t0, t1), [B, H, n, D]), kc, vc, {
        causal: true,
        keyPaddingMask: maskCap,
        kvLength: t1,
      })
    );
    assertClose(await o.toArray(), rows(full, t0, t1), 2e-5, 1e-4, `positions ${t0}..${t1 - 1}`);
  }
});

Deno.test("attention kvLength, writeKV and tuning reject bad arguments, naming the op", async () => {
  await ready;
  const q = tensor(new Float32Array(2 * 2 * 3 * 4), [2, 2, 3, 4]);
  const k = tensor(new Float32Array(2 * 2 * 8 * 4), [2, 2, 8, 4]);
  const sdpa = scaledDotProductAttention;
  assert.throws(
    () => sdpa(q, k, k, { kvLength: 9 }),
    /scaledDotProductAttention: kvLength must be an integer in \[0, 8\]/,
  );
  assert.throws(() => sdpa(q, k, k, { kvLength: 2.5 }), /kvLength must be an integer/);
  assert.throws(
    () => sdpa(q, k, k, { kvLength: 6, keyPaddingMask: tensor(new Int32Array(10), [2, 5]) }),
    /keyPaddingMask must be \[B, ≥ kvLength\] = \[2, ≥ 6\], got \[2,5\]/,
  );
  const u = tensor(new Float32Array(2 * 2 * 3 * 4), [2, 2, 3, 4]);
  assert.throws(() => writeKV(k, u, 6), /writeKV: offset 6 \+ T 3 must fit the cache capacity 8/);
  assert.throws(() => writeKV(k, u, -1), /writeKV: offset -1/);
  assert.throws(
    () => writeKV(k, tensor(new Float32Array(2 * 2 * 3 * 5), [2, 2, 3, 5]), 0),
    /writeKV: update \[2,2,3,5\] does not match cache \[2,2,8,4\]/,
  );
  assert.throws(() => writeKV(k, tensor(new Float32Array(12), [3, 4]), 0), /writeKV: cache and update must be f32/);
  assert.throws(() => writeKV(k, k, 0), /writeKV: update must not share the cache's buffer/);
  assert.throws(() => setAttentionTuning({ forward: [{ tq: 4, tc: 3, bt: 8 }] }), /setAttentionTuning: tile/);
  assert.equal(getAttentionTuning().maxTiledHeadDim, 128);
});
