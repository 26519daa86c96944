/**
 * The matmul-based attention path (engine/ops/attention_math.ts: materialised scores, masked-softmax kernel)
 * against float64 references and against the fused kernels.
 */
import { assert, assertClose, gradCheck, randArray, ready } from "./helpers.ts";
import { readAll, runtime, tensor } from "../engine/tensor.ts";
import { backward } from "../engine/autograd.ts";
import { scaledDotProductAttention } from "../engine/ops/attention.ts";
import { attnGradRef, attnRef, causal, type Cfg, inputs, leftPad, options, run, withTuning } from "./attention_ref.ts";

const MATH = { minMathQueries: 1 };
const FUSED = { minMathQueries: Infinity };

const cases: [string, Cfg][] = [
  ["plain, not causal", { B: 2, H: 3, Tq: 7, Tk: 7, D: 5 }],
  ["causal + left padding (fully masked rows)", causal(2, 2, 9, 9, 4, [3, 0])],
  ["Tq=5 < Tk=11, causal, i32 padding", causal(2, 1, 5, 11, 6, [2, 7])],
  ["Tq=12 > Tk=5 (first rows see nothing)", causal(1, 2, 12, 5, 3)],
  ["not causal, f32 mask, row longer than a workgroup", {
    B: 2,
    H: 1,
    Tq: 3,
    Tk: 300,
    D: 4,
    mask: leftPad(2, 300, [0, 120]),
    maskDtype: "f32",
  }],
  ["dropout + padding", causal(2, 2, 10, 10, 8, [4, 0], { p: 0.35, seed: 77 })],
  ["custom scale", { B: 1, H: 2, Tq: 6, Tk: 6, D: 3, causal: true, scale: 0.9 }],
];

async function grads(c: Cfg, xs: Float64Array[], dO: Float64Array) {
  const ts = [
    tensor(Float32Array.from(xs[0]), [c.B, c.H, c.Tq, c.D]).requireGrad(),
    tensor(Float32Array.from(xs[1]), [c.B, c.H, c.Tk, c.D]).requireGrad(),
    tensor(Float32Array.from(xs[2]), [c.B, c.H, c.Tk, c.D]).requireGrad(),
  ];
  backward(
    scaledDotProductAttention(ts[0], ts[1], ts[2], options(c)),
    tensor(Float32Array.from(dO), [c.B, c.H, c.Tq, c.D]),
  );
  return await readAll(ts.map((t) => t.grad!));
}

Deno.test("attention (matmul path): forward and gradients match float64", async () => {
  await ready;
  await withTuning(MATH, async () => {
    for (const [name, c] of cases) {
      const xs = inputs(c, 61);
      assertClose(await run(c, xs).toArray(), attnRef(xs[0], xs[1], xs[2], c), 2e-5, 1e-4, `${name}: output`);
      const dO = randArray(c.B * c.H * c.Tq * c.D, 62);
      const got = await grads(c, xs, dO);
      const ref = attnGradRef(xs[0], xs[1], xs[2], dO, c);
      for (let i = 0; i < 3; i++) assertClose(got[i], ref[i], 1e-4, 1e-3, `${name}: grad ${"qkv"[i]}`);
    }
  });
});

Deno.test("attention (matmul path): backward matches finite differences", async () => {
  await ready;
  const c = causal(2, 1, 5, 7, 3, [2, 0], { p: 0.3, seed: 4 });
  const [q, k, v] = inputs(c, 71);
  await withTuning(MATH, () =>
    gradCheck(
      ([a, b, d]) => scaledDotProductAttention(a, b, d, options(c)),
      ([a, b, d]) => attnRef(a, b, d, c),
      [
        { data: q, shape: [c.B, c.H, c.Tq, c.D] },
        { data: k, shape: [c.B, c.H, c.Tk, c.D] },
        { data: v, shape: [c.B, c.H, c.Tk, c.D] },
      ],
      { atol: 2e-3, rtol: 2e-2 },
    ));
});

Deno.test("attention: matmul path and fused kernels agree, dropping the same probabilities", async () => {
  await ready;
  const c = causal(2, 2, 19, 19, 48, [4, 0], { p: 0.5, seed: 8 });
  const xs = inputs(c, 81);
  const dO = randArray(c.B * c.H * c.Tq * c.D, 82);
  const both = async () => [await run(c, xs).toArray(), ...await grads(c, xs, dO)];
  const viaMath = await withTuning(MATH, both);
  const viaFused = await withTuning(FUSED, both);
  for (let i = 0; i < 4; i++) assertClose(viaMath[i], viaFused[i], 1e-5, 1e-4, ["out", "dq", "dk", "dv"][i]);
  assert.deepEqual(viaMath[0].map((x) => x === 0 ? 1 : 0), viaFused[0].map((x) => x === 0 ? 1 : 0));
});

Deno.test("attention: by default long sequences take the matmul path and short ones the fused kernels", async () => {
  await ready;
  const rt = runtime();
  if (!rt.handle.hasTimestamps) return; // the kernel names come from the profiler
  const kernelsOf = async (T: number) => {
    const c = causal(1, 1, T, T, 8);
    const xs = inputs(c, 91);
    rt.startProfile();
    const out = run(c, xs);
    const prof = (await rt.stopProfile())!;
    out.dispose();
    return prof.kernels.map((k) => k.name.split("{")[0]);
  };
  const long = await kernelsOf(256), short = await kernelsOf(64);
  assert.ok(long.includes("attention_softmax:fwd"), long.join(" "));
  assert.ok(!long.some((n) => n.startsWith("attention_tiled")), long.join(" "));
  assert.ok(short.includes("attention_tiled:fwd"), short.join(" "));
  assert.ok(!short.includes("attention_softmax:fwd"), short.join(" "));
});

Deno.test("attention (matmul path) frees its intermediates, with and without gradients, outside tidy()", async () => {
  await ready;
  const rt = runtime();
  const c = causal(2, 2, 24, 24, 8, [3, 0], { p: 0.2, seed: 1 });
  const xs = inputs(c, 101);
  const dO = randArray(c.B * c.H * c.Tq * c.D, 102);
  await withTuning(MATH, async () => {
    const opts = options(c);
    const ts = xs.map((x, i) => tensor(Float32Array.from(x), [c.B, c.H, i === 0 ? c.Tq : c.Tk, c.D]));
    const g = tensor(Float32Array.from(dO), [c.B, c.H, c.Tq, c.D]);
    const live0 = rt.stats.liveBytes;
    for (let i = 0; i < 3; i++) scaledDotProductAttention(ts[0], ts[1], ts[2], opts).dispose();
    assert.equal(rt.stats.liveBytes, live0, "forward without gradients leaves nothing behind");
    for (const t of ts) t.requireGrad();
    for (let i = 0; i < 3; i++) {
      const out = scaledDotProductAttention(ts[0], ts[1], ts[2], opts);
      backward(out, g);
      out.dispose();
      for (const t of ts) {
        t.grad?.dispose();
        t.grad = null;
      }
    }
    assert.equal(rt.stats.liveBytes, live0, "forward + backward leaves nothing behind");
    await rt.sync();
    for (const t of [...ts, g]) t.dispose();
  });
});
