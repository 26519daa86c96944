import { assert, assertClose, randArray, ready } from "./helpers.ts";
import { readAll, runtime, type Tensor, tensor } from "../engine/tensor.ts";
import { backward } from "../engine/autograd.ts";
import { AdamW, type AdamWOptions, clipGradNorm, SGD, type SGDOptions } from "../engine/optim.ts";
import { FLAT_ALIGN, flatSlotOf, flattenParameters } from "../engine/flat.ts";
import { GPT2LMHeadModel } from "../models/gpt2.ts";
import { RefAdamW } from "./optim_ref.ts";

const f32 = (a: ArrayLike<number>) => Float64Array.from(Float32Array.from(a));

// Odd sizes: not multiples of 64 (the slot alignment), one a multiple, one 1-element.
const SHAPES = [[7, 13], [5], [1, 300], [64], [129], [3, 3, 3], [1]];

const size = (s: number[]) => s.reduce((a, b) => a * b, 1);
const params = (seed: number) =>
  SHAPES.map((s, i) => tensor(Float32Array.from(randArray(size(s), seed + i)), s).requireGrad());
const setGrad = (p: Tensor, g: ArrayLike<number> | null) => {
  p.grad?.dispose();
  p.grad = g ? tensor(Float32Array.from(g), p.shape) : null;
};
/** Gradient of parameter i at step t, or null: parameter 2 has none on steps 0–2, parameter 5 none on step 1. */
const gradAt = (i: number, t: number) =>
  (i === 2 && t < 3) || (i === 5 && t === 1) ? null : f32(randArray(size(SHAPES[i]), 100 * t + i, -1, 1));
/** Two groups with their own lr and weight decay (parameters 0–3, then 4–6). */
const groups = (ps: Tensor[], second: AdamWOptions = {}) => [
  { params: ps.slice(0, 4), lr: 2e-2, weightDecay: 0.1 },
  { params: ps.slice(4), lr: 5e-3, weightDecay: 0.5, ...second },
];
const kernels = () => runtime().stats.dispatches - runtime().stats.copies;

Deno.test("flattenParameters: aligned slots, same values and fields, chunking, idempotent, freed with the params", async () => {
  await ready;
  const rt = runtime();
  const live0 = rt.stats.liveBytes;
  const ps = params(1);
  ps[0].name = "w";
  const before = await readAll(ps);
  const z = tensor(new Float32Array(0), [0, 3]).requireGrad();
  const flat = flattenParameters([...ps, z, ps[1]], { maxChunkBytes: 1024 });
  // 7·13 + 5 + 300 + 64 + 129 + 27 + 1 floats in 256-byte slots, packed greedily into ≤ 1 KiB chunks.
  // Slots of 512, 256, 1280, 256, 768, 256 and 256 bytes.
  assert.deepEqual(flat.chunks.map((c) => c.slots.length), [2, 1, 2, 2]);
  assert.deepEqual(flat.chunks.map((c) => c.bytes), [768, 1280, 1024, 512]);
  assert.equal(flat.chunks[1].bytes, 1280, "a parameter larger than the limit gets its own chunk");
  assert.equal(flat.params.length, 8);
  assert.equal(flatSlotOf(z), null, "zero-size parameters stay as they are");
  for (const [i, p] of ps.entries()) {
    const slot = flatSlotOf(p)!;
    assert.ok(slot && slot.param === p);
    assert.equal(slot.offset % FLAT_ALIGN, 0);
    assert.equal(p.storage.buffer, slot.chunk.storage.buffer, `parameter ${i} views its chunk`);
    assert.ok(p.requiresGrad && p.grad === null && p.gradFn === null);
  }
  assert.equal(ps[0].name, "w");
  const after = await readAll(ps);
  after.forEach((a, i) => assert.deepEqual(Array.from(a), Array.from(before[i]), `values of parameter ${i}`));
  const again = flattenParameters(ps);
  assert.deepEqual(again.chunks, flat.chunks, "flattening again keeps the chunks");
  ps.forEach((p, i) =>
    assert.equal(flatSlotOf(p), flat.chunks.flatMap((c) => c.slots).find((s) => s.param === p)!, `${i}`)
  );
  // Flattening a mix adds only the new parameter.
  const extra = tensor([1, 2, 3], [3]).requireGrad();
  const mix = flattenParameters([ps[0], extra]);
  assert.equal(mix.chunks.length, 2);
  assert.deepEqual(Array.from(await extra.toArray()), [1, 2, 3]);
  for (const p of [...ps, z, extra]) p.dispose();
  assert.equal(rt.stats.liveBytes, live0, "chunks are freed with their last parameter");
});

for (const chunkBytes of [undefined, 2048]) {
  Deno.test(`flat AdamW = per-parameter AdamW = float64, 5 steps, two groups, missing grads (chunk ${chunkBytes})`, async () => {
    await ready;
    for (const second of [{}, { amsgrad: true, maximize: true, betas: [0.3, 0.5] as [number, number] }]) {
      const base = { lr: 1e-3, betas: [0.9, 0.95] as [number, number], eps: 1e-8, weightDecay: 0, amsgrad: false };
      const a = params(10), b = params(10);
      const flat = flattenParameters(b, { maxChunkBytes: chunkBytes });
      const oa = new AdamW(groups(a, second), base), ob = new AdamW(groups(b, second), base);
      const refs = a.map((p, i) => {
        const g = groups(a, second)[i < 4 ? 0 : 1];
        const { params: _, ...h } = g;
        return new RefAdamW(f32(randArray(p.size, 10 + i)), { ...base, maximize: false, ...h });
      });
      for (let t = 0; t < 5; t++) {
        for (let i = 0; i < a.length; i++) {
          const g = gradAt(i, t);
          setGrad(a[i], g), setGrad(b[i], g);
          if (g) refs[i].update(g);
        }
        const k0 = kernels(), c0 = runtime().stats.copies;
        oa.step(), ob.step();
        if (t === 2 || t === 4) {
          // Per-parameter: one kernel per parameter with a grad; flat: one per chunk and kernel variant.
          const withGrad = a.filter((p) => p.grad).length;
          const amsgrad = "amsgrad" in second;
          const flatKernels = flat.chunks.reduce((n, c) => {
            const stepped = c.slots.filter((s) => s.param.grad);
            return n + new Set(stepped.map((s) => amsgrad && b.indexOf(s.param) >= 4)).size;
          }, 0);
          assert.equal(kernels() - k0, withGrad + flatKernels, `dispatches at step ${t}`);
          assert.equal(runtime().stats.copies - c0, withGrad, "one gradient copy per flat parameter");
        }
      }
      const [pa, pb] = [await readAll(a), await readAll(b)];
      pa.forEach((x, i) => {
        assertClose(pb[i], x, 1e-7, 1e-7, `flat vs per-parameter, parameter ${i}`);
        assertClose(pb[i], refs[i].p, 1e-7, 1e-6, `flat vs float64, parameter ${i}`);
      });
      b.forEach((p, i) => assert.equal(ob.stepCount(p), refs[i].step, `step count of parameter ${i}`));
      assert.equal(ob.stepCount(b[2]), 2);
      const [sa, sb] = [await oa.stateDict(), await ob.stateDict()];
      assert.deepEqual(Object.keys(sb.state), Object.keys(sa.state));
      for (const k of Object.keys(sa.state).map(Number)) {
        assert.equal(sb.state[k].step, sa.state[k].step);
        for (const name of ["m", "v", ...("amsgrad" in second && k >= 4 ? ["vMax"] : [])]) {
          assertClose(sb.state[k][name] as Float32Array, sa.state[k][name] as Float32Array, 1e-9, 1e-7, `${name} ${k}`);
        }
      }
      oa.zeroGrad(), ob.zeroGrad(), oa.dispose(), ob.dispose();
      for (const p of [...a, ...b]) p.dispose();
    }
  });
}

Deno.test("flat AdamW: one dispatch per chunk; parameters outside the optimiser are untouched; memory", async () => {
  await ready;
  const rt = runtime();
  const live0 = rt.stats.liveBytes;
  const ps = params(20);
  const flat = flattenParameters(ps, { maxChunkBytes: 2048 });
  const frozen = await ps[6].toArray();
  const opt = new AdamW(ps.slice(0, 6), { weightDecay: 0.3 });
  ps.forEach((p, i) => setGrad(p, randArray(p.size, 30 + i)));
  opt.step(); // allocates the flat m and v
  const k0 = kernels();
  opt.step();
  assert.equal(kernels() - k0, flat.chunks.length, "one AdamW dispatch per chunk, whatever its parameters");
  const k1 = kernels(), c1 = rt.stats.copies;
  opt.step(); // gradients already gathered: no copies
  assert.equal(kernels() - k1, flat.chunks.length);
  assert.equal(rt.stats.copies - c1, 0);
  assert.deepEqual(Array.from(await ps[6].toArray()), Array.from(frozen), "not in the optimiser: unchanged");
  for (const p of ps.slice(0, 6)) assert.ok(flatSlotOf(p)!.chunk.gradAtSlot(flatSlotOf(p)!));
  opt.zeroGrad();
  ps[6].grad?.dispose();
  ps[6].grad = null;
  opt.dispose();
  for (const p of ps) p.dispose();
  assert.equal(rt.stats.liveBytes, live0, "parameters, gradients and state all freed");
});

Deno.test("flat AdamW: one gradient tensor shared by two parameters", async () => {
  await ready;
  const [a, b] = [params(80).slice(0, 2), params(80).slice(0, 2)];
  const [x, y] = [tensor([1, 2, 3, 4, 5], [5]).requireGrad(), tensor([1, 2, 3, 4, 5], [5]).requireGrad()];
  flattenParameters([b[1], y]);
  const shared = [tensor(randArray(5, 9), [5]), tensor(randArray(5, 9), [5])];
  const [oa, ob] = [new AdamW([a[1], x]), new AdamW([b[1], y])];
  a[1].grad = shared[0], x.grad = shared[0];
  b[1].grad = shared[1], y.grad = shared[1];
  oa.step(), ob.step();
  const [ra, rb] = [await readAll([a[1], x]), await readAll([b[1], y])];
  ra.forEach((v, i) => assertClose(rb[i], v, 1e-7, 1e-7, `parameter ${i}`));
  assert.deepEqual(Array.from(await y.grad!.toArray()), Array.from(await x.grad!.toArray()));
  for (const p of [...a, ...b, x, y]) p.grad?.dispose(), p.grad = null, p.dispose();
  for (const t of shared) t.dispose();
  oa.dispose(), ob.dispose();
});

Deno.test("flat AdamW: stateDict round trips between flat and per-parameter optimisers; state from before flattening", async () => {
  await ready;
  const opts = { lr: 2e-2, betas: [0.8, 0.9] as [number, number], weightDecay: 0.05 };
  const grads = (t: number) => SHAPES.map((_, i) => gradAt(i, t));
  const run = (ps: Tensor[], o: AdamW, from: number, to: number) => {
    for (let t = from; t < to; t++) {
      ps.forEach((p, i) => setGrad(p, grads(t)[i]));
      o.step();
    }
  };
  // Reference: per-parameter throughout.
  const r = params(40);
  const or = new AdamW(groups(r), opts);
  run(r, or, 0, 5);
  const want = await readAll(r);
  // Flat for 3 steps, then resumed per-parameter; and per-parameter resumed flat.
  const a = params(40);
  flattenParameters(a);
  const oa = new AdamW(groups(a), opts);
  run(a, oa, 0, 3);
  const sdFlat = await oa.stateDict();
  const r3 = params(40);
  const or3 = new AdamW(groups(r3), opts);
  run(r3, or3, 0, 3);
  const sdPlain = await or3.stateDict();
  assert.deepEqual(Object.keys(sdFlat.state), Object.keys(sdPlain.state));
  for (const k of Object.keys(sdPlain.state).map(Number)) {
    assert.equal(sdFlat.state[k].step, sdPlain.state[k].step);
    assert.equal((sdFlat.state[k].m as Float32Array).length, r[k].size, "per-parameter arrays, same format");
    assertClose(sdFlat.state[k].v as Float32Array, sdPlain.state[k].v as Float32Array, 1e-9, 1e-7, `v ${k}`);
  }
  const toPlain = await Promise.all(a.map(async (p) => tensor(await p.toArray(), p.shape).requireGrad()));
  const ob = new AdamW(groups(toPlain), { lr: 1 });
  ob.loadStateDict(sdFlat);
  run(toPlain, ob, 3, 5);
  const toFlat = await Promise.all(r3.map(async (p) => tensor(await p.toArray(), p.shape).requireGrad()));
  flattenParameters(toFlat);
  const oc = new AdamW(groups(toFlat), { lr: 1 });
  oc.loadStateDict(sdPlain);
  run(toFlat, oc, 3, 5);
  // Stepped per-parameter, then flattened mid-run: its state moves into the flat buffers.
  const late = params(40);
  const od = new AdamW(groups(late), opts);
  run(late, od, 0, 3);
  flattenParameters(late, { maxChunkBytes: 1024 });
  run(late, od, 3, 5);
  for (const [name, ps] of [["flat → plain", toPlain], ["plain → flat", toFlat], ["flattened later", late]] as const) {
    const got = await readAll(ps);
    got.forEach((x, i) => assertClose(x, want[i], 1e-7, 1e-7, `${name}: parameter ${i}`));
  }
  const sdLate = await od.stateDict();
  assertClose(sdLate.state[0].m as Float32Array, (await or.stateDict()).state[0].m as Float32Array, 1e-9, 1e-6, "m");
  for (const o of [or, oa, or3, ob, oc, od]) o.zeroGrad(), o.dispose();
  for (const p of [...r, ...a, ...r3, ...toPlain, ...toFlat, ...late]) p.dispose();
});

Deno.test("flat SGD (momentum, Nesterov, dampening groups) = per-parameter SGD", async () => {
  await ready;
  const sets: [SGDOptions, SGDOptions][] = [
    [{ momentum: 0.9, nesterov: true }, { momentum: 0.5, dampening: 0.3, weightDecay: 0.1 }],
    [{ momentum: 0 }, { momentum: 0.8, maximize: true }],
  ];
  for (const [g0, g1] of sets) {
    const mk = (ps: Tensor[]) =>
      new SGD([{ params: ps.slice(0, 4), ...g0 }, { params: ps.slice(4), ...g1 }], { lr: 0.05 });
    const a = params(50), b = params(50);
    flattenParameters(b, { maxChunkBytes: 4096 });
    const oa = mk(a), ob = mk(b);
    for (let t = 0; t < 4; t++) {
      a.forEach((p, i) => setGrad(p, gradAt(i, t)));
      b.forEach((p, i) => setGrad(p, gradAt(i, t)));
      oa.step(), ob.step();
    }
    const [pa, pb] = [await readAll(a), await readAll(b)];
    pa.forEach((x, i) => assertClose(pb[i], x, 1e-7, 1e-7, `SGD ${JSON.stringify([g0, g1])} parameter ${i}`));
    oa.zeroGrad(), ob.zeroGrad(), oa.dispose(), ob.dispose();
    for (const p of [...a, ...b]) p.dispose();
  }
});

Deno.test("clipGradNorm over flat chunks: one reduction per chunk, same norm and gradients", async () => {
  await ready;
  for (const normType of [2, 1.5, Infinity]) {
    const a = params(60), b = params(60);
    const flat = flattenParameters(b, { maxChunkBytes: 2048 });
    const g = SHAPES.map((s, i) => f32(randArray(size(s), 70 + i, -3, 3)));
    a.forEach((p, i) => setGrad(p, g[i]));
    b.forEach((p, i) => setGrad(p, g[i]));
    const na = clipGradNorm(a, 0.5, normType);
    const k0 = kernels();
    const nb = clipGradNorm(b, 0.5, normType);
    // Per chunk: zero the flat gradient buffer, one partial reduction, one scale; plus one finalize.
    assert.equal(kernels() - k0, 3 * flat.chunks.length + 1, "dispatches do not depend on the parameter count");
    assertClose([await nb.item()], [await na.item()], 0, 1e-5, `norm ${normType}`);
    const [ga, gb] = [await readAll(a.map((p) => p.grad!)), await readAll(b.map((p) => p.grad!))];
    ga.forEach((x, i) => assertClose(gb[i], x, 1e-7, 1e-5, `clipped gradient ${i}`));
    for (const p of b) assert.ok(flatSlotOf(p)!.chunk.gradAtSlot(flatSlotOf(p)!), "gradients now view the flat buffer");
    // A subset of a chunk's parameters, and a parameter without a gradient, fall back to per-gradient spans.
    setGrad(b[1], null);
    setGrad(a[1], null);
    const sa = clipGradNorm(a.slice(0, 5), 0.1, normType), sb = clipGradNorm(b.slice(0, 5), 0.1, normType);
    assertClose([await sb.item()], [await sa.item()], 0, 1e-5, `subset norm ${normType}`);
    const [ha, hb] = [
      await readAll(a.map((p) => p.grad!).filter((x) => x)),
      await readAll(b.flatMap((p) => p.grad ?? [])),
    ];
    ha.forEach((x, i) => assertClose(hb[i], x, 1e-7, 1e-5, `subset-clipped gradient ${i}`));
    for (const t of [na, nb, sa, sb]) t.dispose();
    for (const p of [...a, ...b]) setGrad(p, null), p.dispose();
  }
});

Deno.test("ModelBase.flattenParameters: same weights and outputs; AdamW steps with one dispatch, same result", async () => {
  await ready;
  const cfg = { n_layer: 1, n_head: 2, n_embd: 16, vocab_size: 37, n_positions: 16 };
  const plain = GPT2LMHeadModel.random(cfg, 3), packed = GPT2LMHeadModel.random(cfg, 3);
  const flat = packed.flattenParameters();
  assert.equal(flat.chunks.length, 1);
  assert.equal(flat.params.length, packed.parameters().length);
  const names = [...packed.params.keys()];
  const [wa, wb] = [await readAll([...plain.params.values()]), await readAll([...packed.params.values()])];
  wa.forEach((x, i) => assert.deepEqual(Array.from(wb[i]), Array.from(x), names[i]));
  const ids = tensor([1, 5, 9, 2, 7, 3], [2, 3], "i32");
  const [la, lb] = [plain.forward({ inputIds: ids }).logits!, packed.forward({ inputIds: ids }).logits!];
  assert.deepEqual(Array.from(await lb.toArray()), Array.from(await la.toArray()));
  for (const t of [la, lb]) t.dispose();
  const [oa, ob] = [new AdamW(plain.parameters(), { lr: 1e-2 }), new AdamW(packed.parameters(), { lr: 1e-2 })];
  for (let t = 0; t < 2; t++) {
    for (const [m, o] of [[plain, oa], [packed, ob]] as const) {
      o.zeroGrad();
      const loss = m.forward({ inputIds: ids, labels: ids }).loss!;
      backward(loss);
      loss.dispose();
      const k0 = kernels();
      o.step();
      if (t === 1) assert.equal(kernels() - k0, m === packed ? 1 : m.parameters().length);
    }
  }
  const [pa, pb] = [await readAll(plain.parameters()), await readAll(packed.parameters())];
  pa.forEach((x, i) => assertClose(pb[i], x, 1e-6, 1e-5, `trained ${names[i]}`));
  oa.zeroGrad(), ob.zeroGrad(), oa.dispose(), ob.dispose(), ids.dispose();
  for (const p of [...plain.parameters(), ...packed.parameters()]) p.dispose();
});
