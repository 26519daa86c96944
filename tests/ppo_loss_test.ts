import { assert, assertClose, gradCheck, randArray, ready, rng } from "./helpers.ts";
import { noGrad, readAll, type Tensor, tensor } from "../engine/tensor.ts";
import { backward } from "../engine/autograd.ts";
import { fullKl, PPO_STATS, PPO_STATS_SIZE, ppoLoss, type PPOLossOptions } from "../ppo/loss.ts";

interface Case {
  lp: Float64Array;
  vp: Float64Array;
  old: Float64Array;
  oldV: Float64Array;
  adv: Float64Array;
  ret: Float64Array;
  mask: Float64Array;
  ent: Float64Array;
}

const OPTS: PPOLossOptions = { cliprange: 0.2, cliprangeValue: 0.3, vfCoef: 0.37, ratioThreshold: 10 };

/** float64 TRL loss; returns [loss, ...stats] in PPO_STATS order. */
function reference(c: Case, o: PPOLossOptions): Float64Array {
  const sel = [...c.mask.keys()].filter((i) => c.mask[i] !== 0);
  const n = sel.length;
  const mean = (f: (i: number) => number) => sel.reduce((a, i) => a + f(i), 0) / n;
  const v = (f: (i: number) => number) => {
    const m = mean(f);
    return mean((i) => (f(i) - m) ** 2) * n / (n - 1);
  };
  const ratio = (i: number) => Math.exp(c.lp[i] - c.old[i]);
  const pg1 = (i: number) => -c.adv[i] * ratio(i);
  const pg2 = (i: number) => -c.adv[i] * Math.min(1 + o.cliprange, Math.max(1 - o.cliprange, ratio(i)));
  const vc = (i: number) => Math.max(Math.min(c.vp[i], c.oldV[i] + o.cliprangeValue), c.oldV[i] - o.cliprangeValue);
  const vf1 = (i: number) => (c.vp[i] - c.ret[i]) ** 2;
  const vf2 = (i: number) => (vc(i) - c.ret[i]) ** 2;
  const keep = mean(ratio) > o.ratioThreshold ? 0 : 1;
  const pg = mean((i) => Math.max(pg1(i), pg2(i))) * keep;
  const vf = 0.5 * mean((i) => Math.max(vf1(i), vf2(i))) * keep;
  const s = new Float64Array(PPO_STATS_SIZE);
  s[PPO_STATS.pgLoss] = pg;
  s[PPO_STATS.vfLoss] = vf;
  s[PPO_STATS.loss] = pg + o.vfCoef * vf;
  s[PPO_STATS.approxkl] = 0.5 * mean((i) => (c.lp[i] - c.old[i]) ** 2);
  s[PPO_STATS.policykl] = mean((i) => c.old[i] - c.lp[i]);
  s[PPO_STATS.pgClipfrac] = mean((i) => pg2(i) > pg1(i) ? 1 : 0);
  s[PPO_STATS.vfClipfrac] = mean((i) => vf2(i) > vf1(i) ? 1 : 0);
  s[PPO_STATS.vpred] = mean((i) => c.vp[i]);
  s[PPO_STATS.returnsMean] = mean((i) => c.ret[i]);
  s[PPO_STATS.returnsVar] = v((i) => c.ret[i]);
  s[PPO_STATS.valError] = mean(vf1);
  s[PPO_STATS.valMean] = mean((i) => c.oldV[i]);
  s[PPO_STATS.valVar] = v((i) => c.oldV[i]);
  s[PPO_STATS.advantagesMean] = mean((i) => c.adv[i]);
  s[PPO_STATS.ratioMean] = mean(ratio);
  s[PPO_STATS.skipped] = 1 - keep;
  s[PPO_STATS.entropy] = mean((i) => c.ent[i]);
  s[PPO_STATS.count] = n;
  return Float64Array.of(pg + o.vfCoef * vf, ...s);
}

/** Random data whose ratios and value predictions stay ≥ 2% away from every kink of the loss. */
function makeCase(n: number, seed: number): Case {
  const r = rng(seed);
  const ratios = [0.5, 0.7, 0.9, 1.05, 1.15, 1.3, 1.6];
  const offsets = [-0.8, -0.5, -0.1, 0.05, 0.2, 0.6];
  const c: Case = {
    lp: new Float64Array(n),
    vp: new Float64Array(n),
    old: randArray(n, seed + 1, -3, -0.5),
    oldV: randArray(n, seed + 2),
    adv: randArray(n, seed + 3, -2, 2),
    ret: randArray(n, seed + 4, -1.5, 1.5),
    mask: Float64Array.from({ length: n }, (_, i) => i % 5 === 3 ? 0 : 1),
    ent: randArray(n, seed + 5, 0, 4),
  };
  for (let i = 0; i < n; i++) {
    c.lp[i] = c.old[i] + Math.log(ratios[Math.floor(r() * ratios.length)] * (1 + 0.01 * (r() - 0.5)));
    for (;;) {
      c.vp[i] = c.oldV[i] + offsets[Math.floor(r() * offsets.length)] + 0.01 * (r() - 0.5);
      const vc = Math.max(Math.min(c.vp[i], c.oldV[i] + 0.3), c.oldV[i] - 0.3);
      if (Math.abs(Math.abs(c.vp[i] - c.ret[i]) - Math.abs(vc - c.ret[i])) > 0.05 || vc === c.vp[i]) break;
    }
  }
  return c;
}

function upload(c: Case, shape: number[]) {
  const t = (a: Float64Array) => tensor(Float32Array.from(a), shape);
  return {
    oldLogprobs: t(c.old),
    oldValues: t(c.oldV),
    advantages: t(c.adv),
    returns: t(c.ret),
    mask: t(c.mask),
    entropy: t(c.ent),
  };
}

Deno.test("ppoLoss: loss and every stat match a float64 reference of TRL's loss", async () => {
  await ready;
  const shape = [3, 7];
  const c = makeCase(21, 10);
  const data = upload(c, shape);
  const lp = tensor(Float32Array.from(c.lp), shape), vp = tensor(Float32Array.from(c.vp), shape);
  const out = ppoLoss({ logprobs: lp, vpreds: vp }, data, OPTS);
  const [loss, stats] = await readAll([out.loss, out.stats]);
  const ref = reference(c, OPTS);
  assertClose(loss, ref.subarray(0, 1), 1e-5, 1e-4, "loss");
  assertClose(stats.subarray(0, 18), ref.subarray(1, 19), 1e-5, 1e-4, "stats");
  assert.ok(stats[PPO_STATS.pgClipfrac] > 0 && stats[PPO_STATS.vfClipfrac] > 0, "the case exercises both clips");
  assert.equal(stats[PPO_STATS.skipped], 0);
});

Deno.test("ppoLoss backward matches finite differences of the float64 loss (masked, odd shape)", async () => {
  await ready;
  for (const [shape, seed] of [[[3, 7], 20], [[5, 13], 30]] as [number[], number][]) {
    const n = shape[0] * shape[1];
    const c = makeCase(n, seed);
    const data = upload(c, shape);
    await gradCheck(
      ([lp, vp]) => ppoLoss({ logprobs: lp, vpreds: vp }, data, OPTS).loss,
      ([lp, vp]) => reference({ ...c, lp, vp }, OPTS).subarray(0, 1),
      [{ data: c.lp, shape }, { data: c.vp, shape }],
      { atol: 2e-4, rtol: 1e-2 },
    );
  }
});

async function lossAndGrads(c: Case, shape: number[], o = OPTS): Promise<Float32Array[]> {
  const lp = tensor(Float32Array.from(c.lp), shape).requireGrad();
  const vp = tensor(Float32Array.from(c.vp), shape).requireGrad();
  const out = ppoLoss({ logprobs: lp, vpreds: vp }, upload(c, shape), o);
  backward(out.loss);
  const res = await readAll([out.loss, out.stats, lp.grad!, vp.grad!]);
  noGrad(() => [lp, vp, out.loss, out.stats].forEach((t: Tensor) => (t.grad?.dispose(), t.dispose())));
  return res as Float32Array[];
}

Deno.test("ppoLoss: masked entries have no effect, even when they hold NaN or huge values", async () => {
  await ready;
  const shape = [4, 5];
  const c = makeCase(20, 40);
  const dirty: Case = {
    lp: c.lp.slice(),
    vp: c.vp.slice(),
    old: c.old.slice(),
    oldV: c.oldV.slice(),
    adv: c.adv.slice(),
    ret: c.ret.slice(),
    mask: c.mask,
    ent: c.ent.slice(),
  };
  for (let i = 0; i < 20; i++) {
    if (c.mask[i]) continue;
    dirty.lp[i] = 80;
    dirty.vp[i] = NaN;
    dirty.old[i] = -1e30;
    dirty.adv[i] = Infinity;
    dirty.ret[i] = NaN;
    dirty.ent[i] = NaN;
  }
  const a = await lossAndGrads(c, shape), b = await lossAndGrads(dirty, shape);
  for (let k = 0; k < 4; k++) assertClose(b[k], a[k], 0, 0, ["loss", "stats", "dlogprobs", "dvpreds"][k]);
  for (let i = 0; i < 20; i++) {
    if (!c.mask[i]) assert.ok(b[2][i] === 0 && b[3][i] === 0, `masked entry ${i} gets no gradient`);
  }
});

Deno.test("ppoLoss: a mean ratio above ratio_threshold zeroes the loss and the gradients (stats still reported)", async () => {
  await ready;
  const shape = [2, 6];
  const c = makeCase(12, 50);
  const o = { ...OPTS, ratioThreshold: 0.5 };
  const [loss, stats, dlp, dvp] = await lossAndGrads(c, shape, o);
  const ref = reference(c, o);
  assert.equal(loss[0], 0);
  assert.equal(stats[PPO_STATS.skipped], 1);
  assert.equal(stats[PPO_STATS.pgLoss], 0);
  assert.equal(stats[PPO_STATS.vfLoss], 0);
  assert.ok(dlp.every((g) => g === 0) && dvp.every((g) => g === 0), "all gradients are zero");
  assertClose(
    [stats[PPO_STATS.ratioMean], stats[PPO_STATS.approxkl]],
    [
      ref[1 + PPO_STATS.ratioMean],
      ref[1 + PPO_STATS.approxkl],
    ],
    1e-5,
    1e-4,
    "stats of a skipped batch",
  );
});

Deno.test("ppoLoss ties follow PyTorch: ratio 1 gives −A/n, a prediction on the clip boundary half the clip branch", async () => {
  await ready;
  // One token, mask 1, lp = old (ratio exactly 1: both policy branches tie and clamp passes, so the
  // halves sum to −A·r), v = old_v + cv exactly (min(v, hi) ties: half through vclip; vf1 = vf2 ties):
  // dv = vf_coef · ½ · (½·2(v − R) + ½·2(v − R)·½) = vf_coef · 0.75 · (v − R).
  const c: Case = {
    lp: Float64Array.of(-1.5),
    old: Float64Array.of(-1.5),
    vp: Float64Array.of(0.75),
    oldV: Float64Array.of(0.5),
    adv: Float64Array.of(0.8),
    ret: Float64Array.of(-0.25),
    mask: Float64Array.of(1),
    ent: Float64Array.of(1),
  };
  const o = { ...OPTS, cliprangeValue: 0.25 };
  const [, , dlp, dvp] = await lossAndGrads(c, [1, 1], o);
  assertClose(dlp, [-0.8], 1e-6, 1e-6, "dlogprobs");
  assertClose(dvp, [o.vfCoef * 0.75 * (0.75 + 0.25)], 1e-6, 1e-6, "dvpreds");
});

Deno.test("ppoLoss rejects mismatched shapes and dtypes, naming the tensor", async () => {
  await ready;
  const c = makeCase(6, 60);
  const data = upload(c, [2, 3]);
  const lp = tensor(Float32Array.from(c.lp), [2, 3]);
  assert.throws(
    () => ppoLoss({ logprobs: lp, vpreds: tensor(new Float32Array(6), [3, 2]) }, data, OPTS),
    /ppoLoss: vpreds has shape \[3,2\]/,
  );
  assert.throws(
    () => ppoLoss({ logprobs: lp, vpreds: lp }, { ...data, mask: tensor(new Int32Array(6), [2, 3]) }, OPTS),
    /ppoLoss: mask must be f32/,
  );
  assert.throws(() => ppoLoss({ logprobs: tensor([1, 2]), vpreds: tensor([1, 2]) }, data, OPTS), /\[batch, /);
});

Deno.test("fullKl equals Σ p(log p − log q) with temperature, and 0 for identical logits", async () => {
  await ready;
  const rows = 5, V = 300, temp = 0.7;
  const x = randArray(rows * V, 70, -3, 3), y = randArray(rows * V, 71, -3, 3);
  const xt = tensor(Float32Array.from(x), [1, rows, V]), yt = tensor(Float32Array.from(y), [1, rows, V]);
  const [kl, same] = await readAll([fullKl(xt, yt, temp), fullKl(xt, xt, temp)]);
  const expected = Array.from({ length: rows }, (_, r) => {
    const lsm = (a: Float64Array) => {
      const s = Array.from(a.subarray(r * V, r * V + V), (v) => v / temp);
      const m = Math.max(...s);
      const l = m + Math.log(s.reduce((acc, v) => acc + Math.exp(v - m), 0));
      return s.map((v) => v - l);
    };
    const lp = lsm(x), lq = lsm(y);
    return lp.reduce((acc, v, k) => acc + Math.exp(v) * (v - lq[k]), 0);
  });
  assert.equal(kl.length, rows);
  assertClose(kl, expected, 1e-5, 1e-4, "kl");
  assert.ok(same.every((v) => v === 0), "identical logits give exactly 0");
  assert.throws(() => fullKl(xt, tensor(new Float32Array(V), [1, V])), /fullKl: logits \[1,5,300\]/);
});
