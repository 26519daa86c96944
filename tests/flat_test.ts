import { assert, assertClose, randArray, ready } from "./helpers.ts";
import { keep, noGrad, readAll, runtime, type Tensor, tensor } from "../engine/tensor.ts";
import { backward } from "../engine/autograd.ts";
import { AdamW, type AdamWOptions, clipGradNorm, SGD, type SGDOptions } from "../engine/optim.ts";
import { createFlatParameters, FLAT_ALIGN, type FlatParameters, flatSlotOf } from "../engine/flat.ts";
import { GPT2LMHeadModel } from "../models/gpt2.ts";
import { RefAdamW } from "./optim_ref.ts";

const f32 = (a: ArrayLike<number>) => Float64Array.from(Float32Array.from(a));

// Odd sizes: not multiples of 64 (the slot alignment), one a multiple, one 1-element.
const SHAPES = [[7, 13], [5], [1, 300], [64], [129], [3, 3, 3], [1]];

const size = (s: number[]) => s.reduce((a, b) => a * b, 1);
const initial = (seed: number) => SHAPES.map((s, i) => Float32Array.from(randArray(size(s), seed + i)));
/** The SHAPES parameters, flat, in chunks of at most `maxChunkBytes`. */
const flatParams = (seed: number, maxChunkBytes?: number): FlatParameters =>
  createFlatParameters(initial(seed).map((data, i) => ({ shape: SHAPES[i], data })), { maxChunkBytes });
/** The SHAPES parameters, each in a chunk of its own. */
const separate = (seed: number) =>
  initial(seed).map((data, i) => createFlatParameters([{ shape: SHAPES[i], data }]).params[0]);
const setGrad = (p: Tensor, g: ArrayLike<number> | null) => {
  p.grad?.dispose();
  p.grad = g ? tensor(Float32Array.from(g), p.shape) : null;
};
/** Gradient of parameter i at step t, or null: parameter 2 has none on steps 0–2, parameter 5 none on step 1. */
const gradAt = (i: number, t: number) =>
  (i === 2 && t < 3) || (i === 5 && t === 1) ? null : f32(randArray(size(SHAPES[i]), 100 * t + i, -1, 1));
/** Two groups with their own lr and weight decay (parameters 0–3, then 4–6). */
const groups = (ps: readonly Tensor[], second: AdamWOptions = {}) => [
  { params: ps.slice(0, 4), lr: 2e-2, weightDecay: 0.1 },
  { params: ps.slice(4), lr: 5e-3, weightDecay: 0.5, ...second },
];
const kernels = () => runtime().stats.dispatches - runtime().stats.copies;
const cfg = { n_layer: 1, n_head: 2, n_embd: 16, vocab_size: 37, n_positions: 16 };

Deno.test("createFlatParameters: aligned slots, values, names, chunking, freed with the params", async () => {
  await ready;
  const rt = runtime();
  const live0 = rt.stats.liveBytes;
  const data = initial(1);
  const inits = [...SHAPES.map((shape, i) => ({ name: `p${i}`, shape, data: data[i] })), {
    shape: [0, 3],
    data: new Float32Array(0),
  }];
  const flat = createFlatParameters(inits, { maxChunkBytes: 1024 });
  // Slots of 512, 256, 1280, 256, 768, 256 and 256 bytes, packed greedily into ≤ 1 KiB chunks.
  assert.deepEqual(flat.chunks.map((c) => c.slots.length), [2, 1, 2, 2]);
  assert.deepEqual(flat.chunks.map((c) => c.bytes), [768, 1280, 1024, 512]);
  assert.equal(flat.params.length, 8);
  const z = flat.params[7];
  assert.ok(flatSlotOf(z) === null && z.requiresGrad, "zero-size parameters get no slot");
  const ps = flat.params.slice(0, 7);
  for (const [i, p] of ps.entries()) {
    const slot = flatSlotOf(p)!;
    assert.ok(slot && slot.param === p);
    assert.equal(slot.offset % FLAT_ALIGN, 0);
    assert.equal(p.storage.buffer, slot.chunk.storage.buffer, `parameter ${i} views its chunk`);
    assert.ok(p.requiresGrad && p.grad === null && p.gradFn === null && p.name === `p${i}`);
  }
  (await readAll(ps)).forEach((a, i) => assert.deepEqual(Array.from(a), Array.from(data[i]), `values of ${i}`));
  assert.ok(flat.chunks.every((c) => c.grad === null), "no gradient buffer before a backward");
  assert.throws(() => createFlatParameters([{ shape: [2], data: new Float32Array(3) }]), /3 values for shape \[2\]/);
  for (const p of flat.params) p.dispose();
  assert.equal(rt.stats.liveBytes, live0, "chunks are freed with their last parameter");
});

Deno.test("backward writes gradients into the flat gradient buffer in place, same values as plain tensors", async () => {
  await ready;
  const rt = runtime();
  const model = GPT2LMHeadModel.random(cfg, 3);
  const ps = model.parameters();
  const chunk = flatSlotOf(ps[0])!.chunk;
  assert.ok(ps.every((p) => flatSlotOf(p)?.chunk === chunk), "one chunk for the model");
  const plainParams = new Map([...model.params].map(([n, p]) => {
    const t = keep(tensor(new Float32Array(p.size), p.shape)).requireGrad();
    rt.copy(p.storage, 0, t.storage, 0, p.size * 4);
    return [n, t] as const;
  }));
  const plain = new GPT2LMHeadModel(model.config, plainParams);
  const ids = tensor([1, 5, 9, 2, 7, 3], [2, 3], "i32");
  const lossOf = (m: GPT2LMHeadModel) => {
    const loss = m.forward({ inputIds: ids, labels: ids }).loss!;
    backward(loss);
    loss.dispose();
  };
  noGrad(() => model.forward({ inputIds: ids }).logits!.dispose());
  assert.equal(chunk.grad, null, "inference allocates no gradients");
  const c0 = rt.stats.copies;
  lossOf(model);
  // Linear, layer-norm and lm-head products write their first gradient straight into the slot; only the
  // position embedding's gradient (a scatter into a new tensor) is copied there.
  assert.equal(rt.stats.copies - c0, 1, "no copy for gradients written in place");
  assert.ok(chunk.gradsComplete(), "every gradient views its slot");
  const grads = ps.map((p) => p.grad!);
  lossOf(plain);
  const [flatG, plainG] = [await readAll(grads), await readAll([...plainParams.values()].map((p) => p.grad!))];
  flatG.forEach((g, i) => assert.deepEqual(Array.from(g), Array.from(plainG[i]), `gradient ${i}`));
  const c1 = rt.stats.copies;
  lossOf(model); // a second micro-batch accumulates in place
  assert.equal(rt.stats.copies - c1, 0);
  ps.forEach((p, i) => assert.equal(p.grad, grads[i], "the same gradient tensors"));
  lossOf(plain);
  const [sumFlat, sumPlain] = [await readAll(grads), await readAll([...plainParams.values()].map((p) => p.grad!))];
  sumFlat.forEach((g, i) => assert.deepEqual(Array.from(g), Array.from(sumPlain[i]), `accumulated gradient ${i}`));
  for (const p of [...ps, ...plainParams.values()]) p.grad?.dispose(), p.grad = null, p.dispose();
  ids.dispose();
});

for (const chunkBytes of [undefined, 2048]) {
  Deno.test(`flat AdamW = float64, 5 steps, two groups, missing grads, one dispatch per chunk (chunk ${chunkBytes})`, async () => {
    await ready;
    for (const second of [{}, { amsgrad: true, maximize: true, betas: [0.3, 0.5] as [number, number] }]) {
      const base = { lr: 1e-3, betas: [0.9, 0.95] as [number, number], eps: 1e-8, weightDecay: 0, amsgrad: false };
      const flat = flatParams(10, chunkBytes), b = flat.params;
      const ob = new AdamW(groups(b, second), base);
      const refs = b.map((p, i) => {
        const { params: _, ...h } = groups(b, second)[i < 4 ? 0 : 1];
        return new RefAdamW(f32(randArray(p.size, 10 + i)), { ...base, maximize: false, ...h });
      });
      for (let t = 0; t < 5; t++) {
        b.forEach((p, i) => setGrad(p, gradAt(i, t)));
        refs.forEach((r, i) => {
          const g = gradAt(i, t);
          if (g) r.update(g);
        });
        const k0 = kernels(), c0 = runtime().stats.copies;
        ob.step();
        const amsgrad = "amsgrad" in second;
        const flatKernels = flat.chunks.reduce((n, c) => {
          const stepped = c.slots.filter((s) => s.param.grad);
          return n + new Set(stepped.map((s) => amsgrad && b.indexOf(s.param) >= 4)).size;
        }, 0);
        const withGrad = b.filter((p) => p.grad).length;
        // Plus one zero-fill per chunk: its gradient buffer, allocated when the gradients set by hand moved in.
        const fills = flat.chunks.filter((c) => c.slots.some((s) => s.param.grad)).length;
        if (t > 0) assert.equal(kernels() - k0, flatKernels + fills, `dispatches at step ${t}`);
        assert.equal(runtime().stats.copies - c0, withGrad, "gradients set by hand: one copy each");
      }
      (await readAll(b)).forEach((x, i) => assertClose(x, refs[i].p, 1e-7, 1e-6, `parameter ${i}`));
      b.forEach((p, i) => assert.equal(ob.stepCount(p), refs[i].step, `step count of parameter ${i}`));
      assert.equal(ob.stepCount(b[2]), 2);
      const sd = await ob.stateDict();
      for (const k of Object.keys(sd.state).map(Number)) {
        assertClose(sd.state[k].m as Float32Array, refs[k].m, 1e-7, 1e-5, `m ${k}`);
        assertClose(sd.state[k].v as Float32Array, refs[k].v, 1e-9, 1e-5, `v ${k}`);
      }
      ob.zeroGrad(), ob.dispose();
      for (const p of b) p.dispose();
    }
  });
}

Deno.test("flat AdamW: parameters outside the optimiser are untouched; memory freed", async () => {
  await ready;
  const rt = runtime();
  const live0 = rt.stats.liveBytes;
  const flat = flatParams(20, 2048), ps = flat.params;
  const frozen = await ps[6].toArray();
  const opt = new AdamW(ps.slice(0, 6), { weightDecay: 0.3 });
  ps.forEach((p, i) => setGrad(p, randArray(p.size, 30 + i)));
  opt.step(); // allocates the flat m and v
  const k1 = kernels(), c1 = rt.stats.copies;
  opt.step(); // gradients already in place: no copies
  assert.equal(kernels() - k1, flat.chunks.length);
  assert.equal(rt.stats.copies - c1, 0);
  assert.deepEqual(Array.from(await ps[6].toArray()), Array.from(frozen), "not in the optimiser: unchanged");
  opt.zeroGrad();
  ps[6].grad?.dispose();
  ps[6].grad = null;
  opt.dispose();
  for (const p of ps) p.dispose();
  assert.equal(rt.stats.liveBytes, live0, "parameters, gradients and state all freed");
});

Deno.test("flat AdamW: one gradient tensor shared by two parameters", async () => {
  await ready;
  const [a, b] = [separate(80).slice(0, 2), flatParams(80).params.slice(0, 2)];
  const shared = [tensor(randArray(SHAPES[1][0], 9), SHAPES[1]), tensor(randArray(SHAPES[1][0], 9), SHAPES[1])];
  const x = createFlatParameters([{ shape: [5], data: Float32Array.of(1, 2, 3, 4, 5) }]).params[0];
  const y = createFlatParameters([{ shape: [5], data: Float32Array.of(1, 2, 3, 4, 5) }]).params[0];
  const [oa, ob] = [new AdamW([a[1], x]), new AdamW([b[1], y])];
  a[1].grad = shared[0], x.grad = shared[0];
  b[1].grad = tensor(randArray(5, 9), [5]), y.grad = shared[1];
  oa.step(), ob.step();
  const [ra, rb] = [await readAll([a[1], x]), await readAll([b[1], y])];
  ra.forEach((v, i) => assertClose(rb[i], v, 1e-7, 1e-7, `parameter ${i}`));
  assert.deepEqual(Array.from(await a[1].grad!.toArray()), Array.from(await x.grad!.toArray()));
  assert.ok(shared[0].disposed, "a gradient set by hand is owned by its parameter");
  for (const p of [...a, ...b, x, y]) p.grad?.dispose(), p.grad = null, p.dispose();
  oa.dispose(), ob.dispose();
});

Deno.test("flat AdamW: stateDict is per parameter; it loads into other chunk layouts and continues identically", async () => {
  await ready;
  const opts = { lr: 2e-2, betas: [0.8, 0.9] as [number, number], weightDecay: 0.05 };
  const run = (ps: readonly Tensor[], o: AdamW, from: number, to: number) => {
    for (let t = from; t < to; t++) {
      ps.forEach((p, i) => setGrad(p, gradAt(i, t)));
      o.step();
    }
  };
  const r = flatParams(40).params;
  const or = new AdamW(groups(r), opts);
  run(r, or, 0, 3);
  const sd = await or.stateDict();
  assert.deepEqual(Object.keys(sd.state), ["0", "1", "3", "4", "5", "6"], "parameters never stepped have no entry");
  for (const k of Object.keys(sd.state).map(Number)) {
    assert.equal((sd.state[k].m as Float32Array).length, r[k].size, "per-parameter arrays");
  }
  // A copy of the state as it is written to disk: plain host arrays keyed by parameter index.
  const host = structuredClone(sd);
  const values = await readAll(r);
  const resumed = [
    separate(0),
    createFlatParameters(values.map((data, i) => ({ shape: SHAPES[i], data: data as Float32Array })), {
      maxChunkBytes: 1024,
    }).params,
  ];
  resumed[0].forEach((p, i) => runtime().write(p.storage, values[i]));
  run(r, or, 3, 5);
  const want = await readAll(r);
  for (const ps of resumed) {
    const o = new AdamW(groups(ps), { lr: 1 });
    o.loadStateDict(host);
    run(ps, o, 3, 5);
    (await readAll(ps)).forEach((x, i) => assert.deepEqual(Array.from(x), Array.from(want[i]), `parameter ${i}`));
    o.zeroGrad(), o.dispose();
  }
  or.zeroGrad(), or.dispose();
  for (const p of [...r, ...resumed.flat()]) p.dispose();
});

Deno.test("flat SGD (momentum, Nesterov, dampening groups): one chunk = one chunk per parameter", async () => {
  await ready;
  const sets: [SGDOptions, SGDOptions][] = [
    [{ momentum: 0.9, nesterov: true }, { momentum: 0.5, dampening: 0.3, weightDecay: 0.1 }],
    [{ momentum: 0 }, { momentum: 0.8, maximize: true }],
  ];
  for (const [g0, g1] of sets) {
    const mk = (ps: readonly Tensor[]) =>
      new SGD([{ params: ps.slice(0, 4), ...g0 }, { params: ps.slice(4), ...g1 }], { lr: 0.05 });
    const a = separate(50), b = flatParams(50, 4096).params;
    const oa = mk(a), ob = mk(b);
    for (let t = 0; t < 4; t++) {
      a.forEach((p, i) => setGrad(p, gradAt(i, t)));
      b.forEach((p, i) => setGrad(p, gradAt(i, t)));
      oa.step(), ob.step();
    }
    const [pa, pb] = [await readAll(a), await readAll(b)];
    pa.forEach((x, i) => assert.deepEqual(Array.from(pb[i]), Array.from(x), `SGD ${JSON.stringify([g0, g1])} ${i}`));
    oa.zeroGrad(), ob.zeroGrad(), oa.dispose(), ob.dispose();
    for (const p of [...a, ...b]) p.dispose();
  }
});

Deno.test("clipGradNorm over flat chunks: one reduction per chunk, same norm and gradients", async () => {
  await ready;
  for (const normType of [2, 1.5, Infinity]) {
    const a = SHAPES.map((s) => tensor(new Float32Array(size(s)), s).requireGrad()); // plain: one span each
    const flat = flatParams(60, 2048), b = flat.params;
    const g = SHAPES.map((s, i) => f32(randArray(size(s), 70 + i, -3, 3)));
    a.forEach((p, i) => setGrad(p, g[i]));
    b.forEach((p, i) => setGrad(p, g[i]));
    const na = clipGradNorm(a, 0.5, normType);
    const k0 = kernels();
    const nb = clipGradNorm(b, 0.5, normType);
    // Per chunk: zero the new flat gradient buffer, one partial reduction, one scale; plus one finalize.
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
    const [ha, hb] = [await readAll(a.flatMap((p) => p.grad ?? [])), await readAll(b.flatMap((p) => p.grad ?? []))];
    ha.forEach((x, i) => assertClose(hb[i], x, 1e-7, 1e-5, `subset-clipped gradient ${i}`));
    for (const t of [na, nb, sa, sb]) t.dispose();
    for (const p of [...a, ...b]) setGrad(p, null), p.dispose();
  }
});

Deno.test("GPT-2 training step: gradients in place, AdamW with one dispatch and no copies", async () => {
  await ready;
  const model = GPT2LMHeadModel.random(cfg, 3);
  const ids = tensor([1, 5, 9, 2, 7, 3], [2, 3], "i32");
  const opt = new AdamW(model.parameters(), { lr: 1e-2 });
  for (let t = 0; t < 2; t++) {
    opt.zeroGrad();
    const loss = model.forward({ inputIds: ids, labels: ids }).loss!;
    backward(loss);
    loss.dispose();
    const k0 = kernels(), c0 = runtime().stats.copies;
    opt.step();
    if (t === 1) assert.equal(kernels() - k0, 1, "one AdamW dispatch for the whole model");
    assert.equal(runtime().stats.copies - c0, 0, "no gradient copies in the step");
  }
  opt.zeroGrad(), opt.dispose(), ids.dispose();
  for (const p of model.parameters()) p.dispose();
});
