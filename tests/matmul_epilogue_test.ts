// Fused epilogues of `linear` (activation, residual): forward vs float64 on every kernel path,
// backward vs finite differences, the pre-activation kept only for backward, and the dispatches
// they save in a GPT-2 block (whose output must equal the unfused composition).
import { assert, assertClose, gradCheck, onCpuBackend, randArray, ready } from "./helpers.ts";
import { noGrad, runtime, type Tensor, tensor, tidy } from "../engine/tensor.ts";
import { linear, type LinearActivation, resetMatmulTuning, setMatmulTuning } from "../engine/ops/matmul.ts";
import { backward } from "../engine/autograd.ts";
import { add, geluNew } from "../engine/ops/elementwise.ts";
import { layerNorm } from "../engine/ops/norm.ts";
import { embedding } from "../engine/ops/index_ops.ts";
import { mergeHeads, splitHeads } from "../engine/ops/heads.ts";
import { scaledDotProductAttention } from "../engine/ops/attention.ts";
import { GPT2LMHeadModel } from "../models/gpt2.ts";
import { ACT64, refEpilogue } from "./matmul_ref.ts";

const numel = (s: readonly number[]) => s.reduce((x, y) => x * y, 1);
const t32 = (d: Float64Array, shape: number[]) => tensor(Float32Array.from(d), shape);

const ACTS: (LinearActivation | undefined)[] = [undefined, "gelu", "gelu_new", "relu"];
// [x shape, in, out]: tiled kernel (> 4 rows and columns), few rows (matrix–vector), few columns.
const EPI_SHAPES: [number[], number, number][] = [
  [[13, 33], 33, 19],
  [[2, 7, 36], 36, 20],
  [[1, 33], 33, 70],
  [[3, 17], 17, 9],
  [[4, 9], 9, 13],
  [[11, 9], 9, 3],
];

Deno.test("linear epilogues (activation, residual) match float64 on the tiled and matrix–vector kernels", async () => {
  await ready;
  let seed = 700, k = 0;
  // gemvMaxRows 4: shapes over 4 rows and columns take the tiled kernel; 32 (default): up to 32.
  for (const [gemvMaxRows, [xs, inF, outF]] of [4, 32].flatMap((g) => EPI_SHAPES.map((s) => [g, s] as const))) {
    setMatmulTuning({ gemvMaxRows });
    for (const act of ACTS) {
      for (const withResidual of [false, true]) {
        const outIn = k++ % 3 === 0, ws = outIn ? [outF, inF] : [inF, outF], os = [...xs.slice(0, -1), outF];
        const d = [randArray(numel(xs), seed++, -2, 2), randArray(inF * outF, seed++), randArray(outF, seed++)];
        d.push(randArray(numel(os), seed++));
        const ref = refEpilogue(d, inF, outF, outIn, act, withResidual);
        // With a gradient to compute the kernel also writes the pre-activation; the output is the same.
        for (const grad of act ? [false, true] : [false]) {
          const y = tidy(() => {
            const [x, w, b, r] = d.map((v, i) => t32(v, [xs, ws, [outF], os][i]).requireGrad(grad));
            const opts = { weightLayout: outIn ? "out_in" as const : "in_out" as const, activation: act };
            return linear(x, w, b, withResidual ? { ...opts, residual: r } : opts);
          });
          const what = `linear [${xs}]→${outF} ${act ?? "none"} residual=${withResidual} grad=${grad}`;
          assertClose(await y.toArray(), ref, 1e-5, 1e-4, `${what} gemvMaxRows=${gemvMaxRows}`);
          y.dispose();
        }
      }
    }
    resetMatmulTuning();
  }
});

Deno.test("linear epilogue keeps the pre-activation only when a gradient needs it", async () => {
  await ready;
  const rt = runtime();
  const x = t32(randArray(13 * 33, 1), [13, 33]), w = t32(randArray(33 * 19, 2), [33, 19]);
  const live = (fn: () => Tensor) => {
    const before = rt.stats.liveBytes;
    const y = fn();
    const grown = rt.stats.liveBytes - before;
    y.dispose();
    return grown;
  };
  const plain = noGrad(() => live(() => linear(x, w)));
  assert.equal(noGrad(() => live(() => linear(x, w, null, { activation: "gelu" }))), plain);
  w.requireGrad();
  assert.equal(live(() => linear(x, w, null, { activation: "gelu" })), 2 * plain, "pre-activation kept for backward");
});

for (const act of ["gelu", "gelu_new", "relu"] as const) {
  Deno.test(`linear backward with ${act} and a residual matches finite differences (all kernel paths)`, async () => {
    await ready;
    let seed = 800;
    const shapes = [[[2, 5, 7], 6], [[3, 7], 6], [[9, 7], 3]] as [number[], number][];
    for (const [gemvMaxRows, [xs, outF]] of [4, 32].flatMap((g) => shapes.map((s) => [g, s] as const))) {
      setMatmulTuning({ gemvMaxRows });
      const inF = 7, outIn = xs.length === 2, os = [...xs.slice(0, -1), outF];
      const inputs = [
        { data: randArray(numel(xs), seed++), shape: xs },
        { data: randArray(inF * outF, seed++), shape: outIn ? [outF, inF] : [inF, outF] },
        { data: randArray(outF, seed++), shape: [outF] },
        { data: randArray(numel(os), seed++), shape: os },
      ];
      const layout = outIn ? "out_in" as const : "in_out" as const;
      await gradCheck(
        (t) => linear(t[0], t[1], t[2], { weightLayout: layout, activation: act, residual: t[3] }),
        (d) => refEpilogue(d, inF, outF, outIn, act, true),
        inputs,
      );
      // Activation alone (no bias, no residual).
      await gradCheck(
        (t) => linear(t[0], t[1], null, { weightLayout: layout, activation: act }),
        (d) => refEpilogue([d[0], d[1]], inF, outF, outIn, act),
        inputs.slice(0, 2),
      );
      resetMatmulTuning();
    }
  });
}

Deno.test("linear backward: residual alone, and only the residual requiring a gradient", async () => {
  await ready;
  const xs = [6, 5], os = [6, 4];
  await gradCheck(
    (t) => linear(t[0], t[1], t[2], { residual: t[3] }),
    (d) => refEpilogue(d, 5, 4, false, undefined, true),
    [[xs], [[5, 4]], [[4]], [os]].map(([s], i) => ({ data: randArray(numel(s), 900 + i), shape: s })),
  );
  const x = t32(randArray(30, 910), xs), w = t32(randArray(20, 911), [5, 4]);
  const r = t32(randArray(24, 912), os).requireGrad();
  const gw = randArray(24, 913);
  backward(linear(x, w, null, { activation: "gelu", residual: r }), t32(gw, os));
  assertClose(await r.grad!.toArray(), Float32Array.from(gw), 0, 0, "d residual = upstream gradient");
  assert.equal(x.grad, null);
});

const dispatches = (fn: () => unknown) => {
  const rt = runtime(), before = rt.stats.dispatches;
  tidy(fn);
  return rt.stats.dispatches - before;
};

Deno.test("fused epilogues cut dispatches: one kernel for linear + activation + residual", async () => {
  await ready;
  const x = t32(randArray(10 * 8, 1), [10, 8]), w = t32(randArray(8 * 8, 2), [8, 8]), b = t32(randArray(8, 3), [8]);
  for (const grad of [false, true]) {
    w.requireGrad(grad);
    const unfused = dispatches(() => add(geluNew(linear(x, w, b)), x));
    const fused = dispatches(() => linear(x, w, b, { activation: "gelu_new", residual: x }));
    assert.equal(fused, 1, `grad=${grad}`);
    assert.equal(unfused, 3, `grad=${grad}`);
  }
});

Deno.test("GPT-2 blocks: fused layers equal the unfused composition, with 3 fewer dispatches per layer", async () => {
  await ready;
  const cfg = { n_embd: 16, n_head: 2, vocab_size: 37, n_positions: 16 };
  const one = GPT2LMHeadModel.random({ ...cfg, n_layer: 1 }, 5),
    two = GPT2LMHeadModel.random({ ...cfg, n_layer: 2 }, 5);
  const P = (n: string) => one.params.get(n)!;
  // Layer 0 as before fusion: linear, then gelu_new and residual adds as separate ops.
  const block = (h: Tensor) => {
    const p = (n: string) => P("transformer.h.0." + n);
    const a = layerNorm(h, p("ln_1.weight"), p("ln_1.bias"), 1e-5);
    const [q, k, v] = splitHeads(linear(a, p("attn.c_attn.weight"), p("attn.c_attn.bias")), 2, 3);
    const o = scaledDotProductAttention(q, k, v, { causal: true, scale: 1 / Math.sqrt(8) });
    const h1 = add(h, linear(mergeHeads(o), p("attn.c_proj.weight"), p("attn.c_proj.bias")));
    const m = layerNorm(h1, p("ln_2.weight"), p("ln_2.bias"), 1e-5);
    const act = geluNew(linear(m, p("mlp.c_fc.weight"), p("mlp.c_fc.bias")));
    return add(h1, linear(act, p("mlp.c_proj.weight"), p("mlp.c_proj.bias")));
  };
  // Training-sized rows (tiled kernels) and one-token decoding rows (matrix–vector kernels).
  for (const T of [5, 1]) {
    const ids = tensor(Int32Array.from({ length: 2 * T }, (_, i) => (i * 7) % 37), [2, T], "i32");
    const pos = tensor(Int32Array.from({ length: 2 * T }, (_, i) => i % T), [2, T], "i32");
    for (const grad of [false, true]) {
      const run = <R>(fn: () => R): R => grad ? fn() : noGrad(fn);
      const fwd = (m: GPT2LMHeadModel) => () =>
        run(() => m.forward({ inputIds: ids, skipLogits: true, outputHidden: true }));
      const perLayer = dispatches(fwd(two)) - dispatches(fwd(one));
      const h0 = run(() =>
        add(embedding(P("transformer.wte.weight"), ids), embedding(P("transformer.wpe.weight"), pos))
      );
      assert.equal(perLayer, dispatches(() => run(() => block(h0))) - 3, `T=${T} grad=${grad}`);
      const [got, want] = tidy(() => {
        const fused = fwd(one)().hidden!;
        const ref = layerNorm(run(() => block(h0)), P("transformer.ln_f.weight"), P("transformer.ln_f.bias"), 1e-5);
        return [fused, ref];
      });
      assertClose(await got.toArray(), await want.toArray(), 1e-5, 1e-4, `hidden T=${T} grad=${grad}`);
      for (const t of [got, want, h0]) t.dispose();
    }
  }
});

Deno.test("split K with an epilogue: plain partial products, then bias, activation, residual and pre-activation in the sum", async () => {
  await ready;
  let seed = 900;
  const tile = { wgX: 8, wgY: 8, tm: 4 as const, tn: 4 as const, bk: 16 };
  for (const act of ACTS) {
    for (const withResidual of [false, true]) {
      const [rows, inF, outF] = [40, 70, 36];
      const d = [randArray(rows * inF, seed++), randArray(inF * outF, seed++), randArray(outF, seed++)];
      d.push(randArray(rows * outF, seed++));
      const ref = refEpilogue(d, inF, outF, false, act, withResidual);
      setMatmulTuning({
        tiers: [{ tile, minWorkgroups: 0, minUtilization: 0 }],
        gemvMaxRows: 0,
        splitK: { withEpilogue: true, minK: 0, maxWorkgroups: 1e9, targetWorkgroups: 24, maxSplits: 8 },
      });
      try {
        for (const grad of [false, true]) {
          const [x, w, b, r] = d.map((v, i) => t32(v, [[rows, inF], [inF, outF], [outF], [rows, outF]][i]));
          w.requireGrad(grad);
          const run = () => linear(x, w, b, withResidual ? { activation: act, residual: r } : { activation: act });
          // 3 × 2 tiles of 32 × 32, K = 70 in 5 splits of 16: the partial products, then the epilogue's sum.
          // (The CPU backend never splits: one BLAS call per product does the whole K.)
          assert.equal(dispatches(run), onCpuBackend() ? 1 : 2, "split into partial products and one epilogue sum");
          const y = run();
          const what = `split-K linear ${act ?? "none"} residual=${withResidual} grad=${grad}`;
          assertClose(await y.toArray(), ref, 1e-5, 1e-4, what);
          if (grad && act) {
            // The pre-activation written by the sum feeds the backward pass: dW matches float64.
            const ones = tensor(new Float32Array(rows * outF).fill(1), [rows, outF]);
            backward(y, ones);
            ones.dispose();
            const dy = new Float64Array(rows * outF).fill(1);
            const pre = refEpilogue(d.slice(0, 3), inF, outF, false);
            const f = ACT64[act], h = 1e-5;
            const g = pre.map((v) => (f(v + h) - f(v - h)) / (2 * h) * dy[0]);
            const dw = new Float64Array(inF * outF);
            for (let i = 0; i < inF; i++) {
              for (let j = 0; j < outF; j++) {
                let s = 0;
                for (let n = 0; n < rows; n++) s += d[0][n * inF + i] * g[n * outF + j];
                dw[i * outF + j] = s;
              }
            }
            assertClose(await w.grad!.toArray(), dw, 1e-4, 1e-4, `${what} dW`);
          }
          [x, w, b, r, y].forEach((t) => t.dispose());
        }
      } finally {
        resetMatmulTuning();
      }
    }
  }
});
