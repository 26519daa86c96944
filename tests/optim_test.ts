import { assert, assertClose, randArray, ready } from "./helpers.ts";
import { readAll, runtime, type Tensor, tensor, tidy } from "../engine/tensor.ts";
import { add } from "../engine/ops/elementwise.ts";
import { AdamW, clipGradNorm, clipGradNormChecked, SGD } from "../engine/optim.ts";
import { createFlatParameters } from "../engine/flat.ts";
import { RefAdamW } from "./optim_ref.ts";

const f32 = (a: ArrayLike<number>) => Float64Array.from(Float32Array.from(a));

/** A flat parameter in a chunk of its own. */
function param(data: ArrayLike<number>, shape: number[]): Tensor {
  return createFlatParameters([{ shape, data: Float32Array.from(data) }]).params[0];
}
function setGrad(p: Tensor, g: Float64Array): void {
  p.grad?.dispose();
  p.grad = tensor(Float32Array.from(g), p.shape);
}

Deno.test("AdamW: 5 steps match a float64 re-implementation of PyTorch's AdamW", async () => {
  await ready;
  const shapes = [[7, 13], [5], [1, 300]];
  // A large eps tells PyTorch's denominator √v/√(1−β2ᵗ) + eps apart from the "eps-hat" variant; β1 < 0.5
  // takes torch.lerp's other branch.
  const variants = [{}, { amsgrad: true }, { maximize: true }, { eps: 1e-3 }, {
    betas: [0.3, 0.5] as [number, number],
  }];
  for (const variant of variants) {
    const h = { lr: 1e-2, betas: [0.9, 0.95] as [number, number], eps: 1e-8, weightDecay: 0.1, ...variant };
    const init = shapes.map((s, i) => f32(randArray(s.reduce((a, b) => a * b), 10 + i, -1, 1)));
    const ps = shapes.map((s, i) => param(init[i], s));
    const refs = init.map((x) => new RefAdamW(Float64Array.from(x), h));
    const opt = new AdamW(ps, h);
    const storages = ps.map((p) => p.storage);
    for (let t = 0; t < 5; t++) {
      ps.forEach((p, i) => {
        // Mix of magnitudes, so that some v are small.
        const g = f32(randArray(p.size, 100 * t + i, -1, 1).map((x, j) => (j % 3 === 0 ? 1e-3 : 1) * x));
        setGrad(p, g);
        refs[i].update(g);
      });
      opt.step();
    }
    const got = await readAll(ps);
    got.forEach((a, i) => assertClose(a, refs[i].p, 1e-7, 1e-6, `param ${i} ${JSON.stringify(variant)}`));
    ps.forEach((p, i) => assert.equal(p.storage, storages[i], "parameters are updated in their existing storage"));
    ps.forEach((p) => assert.equal(opt.stepCount(p), 5));
    const sd = await opt.stateDict();
    assertClose(sd.state[0].m as Float32Array, refs[0].m, 1e-7, 1e-6, "m");
    assertClose(sd.state[0].v as Float32Array, refs[0].v, 1e-9, 1e-6, "v");
    opt.zeroGrad();
    assert.ok(ps.every((p) => p.grad === null));
    opt.dispose();
    ps.forEach((p) => p.dispose());
  }
});

Deno.test("AdamW: one dispatch per flat chunk after the first step; state survives tidy", async () => {
  await ready;
  const inits = [{ shape: [33], data: Float32Array.from(randArray(33, 1)) }, {
    shape: [2, 2],
    data: Float32Array.from(randArray(4, 2)),
  }];
  const ps = [...createFlatParameters(inits).params];
  const opt = new AdamW(ps);
  ps.forEach((p, i) => setGrad(p, randArray(p.size, 3 + i)));
  tidy(() => opt.step()); // allocates m, v inside the scope; they must survive it
  const before = runtime().stats.dispatches;
  opt.step();
  assert.equal(runtime().stats.dispatches - before, 1, "gradients already in place: one dispatch, no copies");
  const sd = await opt.stateDict();
  assert.equal(sd.state[1].step, 2);
  opt.dispose();
  for (const p of ps) p.grad?.dispose(), p.dispose();
});

Deno.test("AdamW: param groups with their own weight decay and lr; lr setter", async () => {
  await ready;
  const a0 = f32(randArray(19, 5)), b0 = f32(randArray(6, 6));
  const a = param(a0, [19]), b = param(b0, [2, 3]);
  const opt = new AdamW([{ params: [a], weightDecay: 0.5 }, { params: [b], lr: 0.05 }], {
    lr: 1e-2,
    weightDecay: 0.1,
  });
  assert.equal(opt.paramGroups[0].weightDecay, 0.5);
  assert.equal(opt.paramGroups[1].weightDecay, 0.1);
  const ra = new RefAdamW(Float64Array.from(a0), { lr: 1e-2, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0.5 });
  const rb = new RefAdamW(Float64Array.from(b0), { lr: 0.05, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0.1 });
  for (let t = 0; t < 3; t++) {
    if (t === 2) {
      opt.lr = 3e-3;
      ra.h.lr = rb.h.lr = 3e-3;
      assert.equal(opt.lr, 3e-3);
    }
    const ga = f32(randArray(19, 40 + t)), gb = f32(randArray(6, 50 + t));
    setGrad(a, ga), setGrad(b, gb);
    ra.update(ga), rb.update(gb);
    opt.step();
  }
  const [ga, gb] = await readAll([a, b]);
  assertClose(ga, ra.p, 1e-7, 1e-6, "group 0");
  assertClose(gb, rb.p, 1e-7, 1e-6, "group 1");
  opt.zeroGrad();
  opt.dispose();
  a.dispose(), b.dispose();
});

Deno.test("AdamW: zero-size params and params without grad (their step does not advance)", async () => {
  await ready;
  const z = param([], [3, 0]);
  const x0 = f32(randArray(9, 8)), y0 = f32(randArray(5, 9));
  const x = param(x0, [9]), y = param(y0, [5]);
  const opt = new AdamW([z, x, y], { lr: 0.1, weightDecay: 0.2 });
  const rx = new RefAdamW(Float64Array.from(x0), { lr: 0.1, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0.2 });
  const ry = new RefAdamW(Float64Array.from(y0), { lr: 0.1, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0.2 });
  for (let t = 0; t < 3; t++) {
    z.grad?.dispose();
    z.grad = tensor(new Float32Array(0), [3, 0]);
    const gx = f32(randArray(9, 60 + t));
    setGrad(x, gx);
    rx.update(gx);
    y.grad?.dispose();
    y.grad = null;
    if (t !== 1) {
      const gy = f32(randArray(5, 70 + t));
      setGrad(y, gy);
      ry.update(gy);
    }
    opt.step();
  }
  assert.equal(opt.stepCount(z), 3);
  assert.equal(opt.stepCount(x), 3);
  assert.equal(opt.stepCount(y), 2);
  const [gx, gy] = await readAll([x, y]);
  assertClose(gx, rx.p, 1e-7, 1e-6, "x");
  assertClose(gy, ry.p, 1e-7, 1e-6, "y (skipped once, no weight decay that step)");
  const sd = await opt.stateDict();
  assert.equal(sd.state[0].step, 3);
  assert.equal((sd.state[0].m as Float32Array).length, 0);
  opt.zeroGrad();
  // A parameter never stepped has no state.
  const w = param([1, 2], [2]);
  const opt2 = new AdamW([w]);
  assert.deepEqual((await opt2.stateDict()).state, {});
  opt2.step();
  assert.deepEqual(Array.from(await w.toArray()), [1, 2]);
  opt.dispose(), opt2.dispose();
  for (const p of [z, x, y, w]) p.dispose();
});

Deno.test("AdamW: stateDict / loadStateDict round trip continues identically", async () => {
  await ready;
  const shapes = [[11], [3, 5]];
  const init = shapes.map((s, i) => f32(randArray(s.reduce((a, b) => a * b), 80 + i)));
  const ps = shapes.map((s, i) => param(init[i], s));
  const opts = { lr: 2e-2, betas: [0.8, 0.9] as [number, number], weightDecay: 0.05, amsgrad: true };
  const a = new AdamW(ps, opts);
  const grads = (t: number) => shapes.map((_, i) => randArray(ps[i].size, 200 + 10 * t + i));
  for (let t = 0; t < 2; t++) {
    ps.forEach((p, i) => setGrad(p, grads(t)[i]));
    a.step();
  }
  const sd = await a.stateDict();
  assert.equal(sd.paramGroups[0].lr, 2e-2);
  assert.deepEqual(sd.paramGroups[0].params, [0, 1]);
  assert.deepEqual(sd.paramGroups[0].betas, [0.8, 0.9]);
  const qs = await Promise.all(ps.map(async (p) => param(await p.toArray(), [...p.shape])));
  const b = new AdamW(qs, { lr: 1 }); // hyper-parameters come from the state dict
  b.loadStateDict(sd);
  assert.equal(b.lr, 2e-2);
  assert.equal(b.paramGroups[0].amsgrad, true);
  for (let t = 2; t < 5; t++) {
    ps.forEach((p, i) => setGrad(p, grads(t)[i]));
    qs.forEach((p, i) => setGrad(p, grads(t)[i]));
    a.step();
    b.step();
  }
  const [pa, pb] = [await readAll(ps), await readAll(qs)];
  pa.forEach((x, i) => assert.deepEqual(Array.from(pb[i]), Array.from(x), `param ${i} after resuming`));
  // Loading again into an optimiser that already has state overwrites it in place.
  b.loadStateDict(sd);
  assert.equal(b.stepCount(qs[0]), 2);
  const sd2 = await b.stateDict();
  assert.deepEqual(Array.from(sd2.state[1].v as Float32Array), Array.from(sd.state[1].v as Float32Array));
  // Mismatches are rejected before anything changes.
  assert.throws(() => b.loadStateDict({ ...sd, paramGroups: [] }), /1 parameter groups|0 parameter groups/);
  const bad = { ...sd, state: { 0: { ...sd.state[0], m: new Float32Array(3) } } };
  assert.throws(() => b.loadStateDict(bad), /AdamW: state of parameter 0: "m" has 3 values, not 11/);
  assert.throws(() => b.loadStateDict({ ...sd, state: { 5: sd.state[0] } }), /unknown parameter 5/);
  const badLr = { ...sd, paramGroups: [{ ...sd.paramGroups[0], lr: -1 }] };
  assert.throws(() => b.loadStateDict(badLr), /invalid learning rate -1/);
  assert.equal(b.lr, 2e-2);
  a.zeroGrad(), b.zeroGrad(), a.dispose(), b.dispose();
  for (const p of [...ps, ...qs]) p.dispose();
});

Deno.test("AdamW and SGD: hyper-parameter and parameter validation", async () => {
  await ready;
  const p = param([1, 2, 3], [3]);
  assert.throws(() => new AdamW([p], { lr: -1 }), /AdamW: invalid learning rate -1/);
  assert.throws(() => new AdamW([p], { betas: [1, 0.9] }), /AdamW: invalid beta parameter at index 0: 1/);
  assert.throws(() => new AdamW([p], { betas: [0.9, -0.1] }), /invalid beta parameter at index 1/);
  assert.throws(() => new AdamW([p], { eps: 0 }), /AdamW: invalid epsilon 0/);
  assert.throws(() => new AdamW([p], { weightDecay: -0.1 }), /AdamW: invalid weightDecay -0.1/);
  assert.throws(() => new AdamW([{ params: [p], lr: NaN }]), /invalid learning rate NaN/);
  assert.throws(() => new AdamW([]), /AdamW: got an empty parameter list/);
  assert.throws(() => new AdamW([p, p]), /appears more than once/);
  assert.throws(
    () => new AdamW([{ params: [p] }, { params: [p] }]),
    /param group 1, parameter 0 appears more than once/,
  );
  const noGradT = tensor([1, 2]);
  assert.throws(() => new AdamW([noGradT]), /AdamW: param group 0, parameter 0 does not require grad/);
  assert.throws(() => new AdamW([tensor([1], [1], "i32")]), /must be an f32 tensor, got i32/);
  const nonLeaf = add(p, p);
  assert.throws(() => new AdamW([nonLeaf]), /is not a leaf tensor/);
  const plain = tensor([1, 2]).requireGrad();
  assert.throws(() => new AdamW([plain]), /AdamW: param group 0, parameter 0 is not a flat parameter/);
  const opt = new AdamW([p]);
  assert.throws(() => opt.lr = -2, /invalid learning rate -2/);
  opt.paramGroups[0].eps = -1;
  p.grad = tensor([1, 1, 1]);
  assert.throws(() => opt.step(), /invalid epsilon -1/);
  opt.paramGroups[0].eps = 1e-8;
  p.grad.dispose();
  p.grad = tensor([1, 1], [2]);
  assert.throws(() => opt.step(), /AdamW: gradient of parameter \[3\] has shape \[2\]/);
  assert.throws(() => new SGD([p], { momentum: -1 }), /SGD: invalid momentum -1/);
  assert.throws(() => new SGD([p], { nesterov: true }), /SGD: Nesterov momentum needs momentum > 0, dampening 0/);
  opt.zeroGrad();
  for (const t of [p, noGradT, nonLeaf, plain]) t.dispose();
});

Deno.test("SGD: momentum, dampening, Nesterov and weight decay match PyTorch's formulas", async () => {
  await ready;
  const cases = [
    { lr: 0.1 },
    { lr: 0.05, momentum: 0.9, weightDecay: 0.01 },
    { lr: 0.05, momentum: 0.8, dampening: 0.3 },
    { lr: 0.05, momentum: 0.9, nesterov: true, maximize: true },
  ];
  for (const c of cases) {
    const x0 = f32(randArray(23, 300));
    const x = param(x0, [23]);
    const opt = new SGD([x], c);
    const ref = Float64Array.from(x0);
    let buf: Float64Array | null = null;
    const { lr, momentum = 0, dampening = 0, weightDecay = 0, nesterov = false, maximize = false } = c as never;
    for (let t = 0; t < 3; t++) {
      const g = f32(randArray(23, 310 + t));
      setGrad(x, g);
      opt.step();
      const d = g.map((v, i) => (maximize ? -v : v) + weightDecay * ref[i]);
      if (momentum) {
        buf = buf ? buf.map((b, i) => b * momentum + (1 - dampening) * d[i]) : Float64Array.from(d);
        const bb = buf;
        if (nesterov) d.forEach((v, i) => d[i] = v + momentum * bb[i]);
        else d.set(bb);
      }
      ref.forEach((v, i) => ref[i] = v - lr * d[i]);
    }
    assertClose(await x.toArray(), ref, 1e-6, 1e-6, JSON.stringify(c));
    opt.zeroGrad(), opt.dispose(), x.dispose();
  }
});

function refNorm(gs: Float64Array[], p: number): number {
  if (p === Infinity) return Math.max(0, ...gs.flatMap((g) => Array.from(g, Math.abs)));
  let s = 0;
  for (const g of gs) for (const v of g) s += Math.abs(v) ** p;
  return s ** (1 / p);
}

Deno.test("clipGradNorm: total norm and scaled gradients match float64, no readback", async () => {
  await ready;
  const sizes = [[70001], [3, 7], [1], [0], [129, 5]];
  for (const normType of [2, 1, 3, Infinity]) {
    for (const maxNorm of [0.5, 1e6]) {
      const gs = sizes.map((s, i) => f32(randArray(s.reduce((a, b) => a * b, 1), 500 + i, -2, 2)));
      const ps = sizes.map((s, i) => param(new Float32Array(gs[i].length), s));
      ps.forEach((p, i) => setGrad(p, gs[i]));
      const extra = param([1, 2], [2]); // no gradient: ignored
      const readbacks = runtime().stats.readbacks;
      const norm = clipGradNorm([...ps, extra], maxNorm, normType);
      assert.equal(runtime().stats.readbacks, readbacks, "clipGradNorm must not read back");
      assert.deepEqual(norm.shape, []);
      const total = refNorm(gs, normType);
      const what = `p=${normType}, max=${maxNorm}`;
      assertClose([await norm.item()], [total], 0, normType === 2 ? 2e-6 : 2e-5, `norm ${what}`);
      const coef = Math.min(1, maxNorm / (total + 1e-6));
      const got = await readAll(ps.map((p) => p.grad!));
      got.forEach((g, i) => {
        if (coef === 1) assert.deepEqual(Array.from(g), Array.from(gs[i]), `unclipped grads unchanged ${what}`);
        else assertClose(g, gs[i].map((v) => v * coef), 1e-7, 2e-5, `grad ${i} ${what}`);
      });
      // The same gradients on plain (non-flat) tensors: one span per gradient, same norm.
      const plain = gs.map((g, i) => tensor(new Float32Array(g.length), sizes[i]).requireGrad());
      plain.forEach((p, i) => setGrad(p, gs[i]));
      const plainNorm = clipGradNorm(plain, maxNorm, normType);
      assertClose([await plainNorm.item()], [await norm.item()], 0, 1e-5, `plain tensors ${what}`);
      for (const p of [...ps, extra, ...plain]) p.grad?.dispose(), p.dispose();
      norm.dispose(), plainNorm.dispose();
    }
  }
});

Deno.test("clipGradNorm: non-finite norms, no gradients, validation, checked variant", async () => {
  await ready;
  const a = param([0, 0, 0], [3]);
  assert.equal(await clipGradNorm([a], 1).item(), 0, "no gradients: norm 0");
  setGrad(a, Float64Array.from([3, NaN, 4]));
  const n = clipGradNorm(a, 1);
  assert.ok(Number.isNaN(await n.item()));
  assert.ok(Array.from(await a.grad!.toArray()).every(Number.isNaN), "NaN propagates to the gradients as in PyTorch");
  setGrad(a, Float64Array.from([3, NaN, 4]));
  assert.ok(Number.isNaN(await clipGradNorm(a, 1, Infinity).item()), "inf-norm propagates NaN");
  setGrad(a, Float64Array.from([3, NaN, 4]));
  await assertRejects(() => clipGradNormChecked([a], 1), /total norm of order 2 for gradients is non-finite/);
  assert.equal((await a.grad!.toArray())[0], 3, "checked variant leaves gradients alone on error");
  setGrad(a, Float64Array.from([3, 0, 4]));
  assertClose([await clipGradNormChecked([a], 1)], [5], 0, 1e-6);
  assertClose(await a.grad!.toArray(), [0.6, 0, 0.8], 1e-6, 1e-6);
  assert.throws(() => clipGradNorm([a], -1), /clipGradNorm: maxNorm must be a number ≥ 0, got -1/);
  assert.throws(() => clipGradNorm([a], 1, 0), /unsupported normType 0/);
  assert.throws(() => clipGradNorm([a], 1, 2, { errorIfNonfinite: true }), /clipGradNormChecked/);
  a.grad?.dispose(), a.dispose(), n.dispose();
});

async function assertRejects(fn: () => Promise<unknown>, re: RegExp): Promise<void> {
  try {
    await fn();
  } catch (e) {
    assert.match((e as Error).message, re);
    return;
  }
  assert.fail(`expected a rejection matching ${re}`);
}
