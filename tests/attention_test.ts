import { assert, assertClose, gradCheck, randArray, ready } from "./helpers.ts";
import { noGrad, readAll, type Tensor, tensor } from "../engine/tensor.ts";
import { backward } from "../engine/autograd.ts";
import { type AttentionOptions, scaledDotProductAttention } from "../engine/ops/attention.ts";
import { dropoutMaskRef } from "../engine/ops/dropout.ts";

interface Cfg {
  B: number;
  H: number;
  Tq: number;
  Tk: number;
  D: number;
  causal?: boolean;
  mask?: number[]; // [B, Tk], 1 = attend
  maskDtype?: "i32" | "f32";
  scale?: number;
  p?: number;
  seed?: number;
}

/** Probabilities P (after softmax, before dropout) and dropout factors Z, float64, [B·H·Tq, Tk]. */
function probs(q: Float64Array, k: Float64Array, c: Cfg): { P: Float64Array; Z: Float64Array } {
  const { B, H, Tq, Tk, D } = c;
  const scale = c.scale ?? 1 / Math.sqrt(D);
  const P = new Float64Array(B * H * Tq * Tk), Z = new Float64Array(B * H * Tq * Tk).fill(1);
  for (let bh = 0; bh < B * H; bh++) {
    const b = Math.floor(bh / H);
    for (let i = 0; i < Tq; i++) {
      const row = (bh * Tq + i) * Tk;
      const ok = (j: number) => !(c.causal && j > Tk - Tq + i) && (!c.mask || c.mask[b * Tk + j] !== 0);
      let m = -Infinity;
      const s = new Float64Array(Tk);
      for (let j = 0; j < Tk; j++) {
        if (!ok(j)) continue;
        let dot = 0;
        for (let d = 0; d < D; d++) dot += q[(bh * Tq + i) * D + d] * k[(bh * Tk + j) * D + d];
        s[j] = dot * scale;
        m = Math.max(m, s[j]);
      }
      let sum = 0;
      for (let j = 0; j < Tk; j++) if (ok(j)) sum += Math.exp(s[j] - m);
      for (let j = 0; j < Tk; j++) {
        P[row + j] = ok(j) ? Math.exp(s[j] - m) / sum : 0;
        if (c.p) Z[row + j] = dropoutMaskRef(c.seed!, row + j, c.p) ? 1 / (1 - c.p) : 0;
      }
    }
  }
  return { P, Z };
}

/** float64 reference of the forward pass. */
function attnRef(q: Float64Array, k: Float64Array, v: Float64Array, c: Cfg): Float64Array {
  const { B, H, Tq, Tk, D } = c;
  const { P, Z } = probs(q, k, c);
  const out = new Float64Array(B * H * Tq * D);
  for (let bh = 0; bh < B * H; bh++) {
    for (let i = 0; i < Tq; i++) {
      for (let j = 0; j < Tk; j++) {
        const w = P[(bh * Tq + i) * Tk + j] * Z[(bh * Tq + i) * Tk + j];
        if (w === 0) continue;
        for (let d = 0; d < D; d++) out[(bh * Tq + i) * D + d] += w * v[(bh * Tk + j) * D + d];
      }
    }
  }
  return out;
}

/** Analytic float64 backward (for shapes too large for finite differences). */
function attnGradRef(q: Float64Array, k: Float64Array, v: Float64Array, dO: Float64Array, c: Cfg): Float64Array[] {
  const { B, H, Tq, Tk, D } = c;
  const scale = c.scale ?? 1 / Math.sqrt(D);
  const { P, Z } = probs(q, k, c);
  const dq = new Float64Array(q.length), dk = new Float64Array(k.length), dv = new Float64Array(v.length);
  for (let bh = 0; bh < B * H; bh++) {
    for (let i = 0; i < Tq; i++) {
      const qi = (bh * Tq + i) * D, row = (bh * Tq + i) * Tk;
      const dP = new Float64Array(Tk);
      let delta = 0;
      for (let j = 0; j < Tk; j++) {
        if (P[row + j] === 0) continue;
        for (let d = 0; d < D; d++) dP[j] += dO[qi + d] * v[(bh * Tk + j) * D + d];
        dP[j] *= Z[row + j];
        delta += P[row + j] * dP[j];
      }
      for (let j = 0; j < Tk; j++) {
        if (P[row + j] === 0) continue;
        const ds = P[row + j] * (dP[j] - delta) * scale, kj = (bh * Tk + j) * D;
        for (let d = 0; d < D; d++) {
          dq[qi + d] += ds * k[kj + d];
          dk[kj + d] += ds * q[qi + d];
          dv[kj + d] += P[row + j] * Z[row + j] * dO[qi + d];
        }
      }
    }
  }
  return [dq, dk, dv];
}

function inputs(c: Cfg, seed: number): Float64Array[] {
  const { B, H, Tq, Tk, D } = c;
  return [
    randArray(B * H * Tq * D, seed, -2, 2),
    randArray(B * H * Tk * D, seed + 1, -2, 2),
    randArray(B * H * Tk * D, seed + 2),
  ];
}

function options(c: Cfg): AttentionOptions {
  const mask = c.mask
    ? (c.maskDtype === "f32"
      ? tensor(Float32Array.from(c.mask), [c.B, c.Tk])
      : tensor(Int32Array.from(c.mask), [c.B, c.Tk]))
    : undefined;
  return { causal: c.causal, keyPaddingMask: mask, scale: c.scale, dropoutP: c.p, seed: c.seed };
}

function run(c: Cfg, [q, k, v]: Float64Array[]): Tensor {
  return noGrad(() =>
    scaledDotProductAttention(
      tensor(Float32Array.from(q), [c.B, c.H, c.Tq, c.D]),
      tensor(Float32Array.from(k), [c.B, c.H, c.Tk, c.D]),
      tensor(Float32Array.from(v), [c.B, c.H, c.Tk, c.D]),
      options(c),
    )
  );
}

// left padding: batch 0 has 2 pad tokens, batch 1 none
const leftPad = (B: number, Tk: number, pads: number[]) =>
  Array.from({ length: B * Tk }, (_, i) => (i % Tk) < pads[Math.floor(i / Tk)] ? 0 : 1);

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
