import { assert, assertClose } from "./helpers.ts";
import { ppoConfig } from "../ppo/config.ts";
import { computeAdvantages } from "../ppo/advantages.ts";
import { AdaptiveKLController, FixedKLController, klControllerFromJSON } from "../ppo/kl_control.ts";
import { maskedMean, maskedVar, maskedWhiten } from "../ppo/masked_stats.ts";
import { RunningMoments } from "../ppo/moments.ts";
import { computeRewards, klPenalty } from "../ppo/rewards.ts";
import { SeededRng } from "../engine/random.ts";

const flat = (x: number[][]) => x.flat();

Deno.test("GAE by hand: γ = 0.9, λ = 0.8, masked tail, then whitening", () => {
  const values = [[0.5, 1.0, -0.5], [2.0, 1.0, 9.0]];
  const rewards = [[0, 0, 1], [0.5, 1, 7]];
  const mask = [[1, 1, 1], [1, 1, 0]];
  const out = computeAdvantages(values, rewards, mask, 0.9, 0.8);
  // Row 0: δ2 = 1 + 0 − (−0.5) = 1.5, A2 = 1.5; δ1 = 0 + 0.9·(−0.5) − 1 = −1.45, A1 = −1.45 + 0.72·1.5 = −0.37;
  //        δ0 = 0 + 0.9·1 − 0.5 = 0.4, A0 = 0.4 + 0.72·(−0.37) = 0.1336.
  // Row 1 (v and r masked: v = [2, 1, 0], r = [0.5, 1, 0]): A2 = 0; δ1 = 1 + 0 − 1 = 0, A1 = 0;
  //        δ0 = 0.5 + 0.9·1 − 2 = −0.6, A0 = −0.6.
  // returns = A + v·mask.
  assertClose(flat(out.returns), [0.6336, 0.63, 1.0, 1.4, 1.0, 0.0], 1e-12, 0, "returns");
  assertClose(flat(out.values), [0.5, 1.0, -0.5, 2.0, 1.0, 0.0], 0, 0, "masked values");
  // Whitening over the 5 unmasked advantages: mean 0.13272, unbiased var 0.669168992; every entry
  // (the masked one too) becomes (A − mean)/√(var + 1e-8).
  assertClose(
    flat(out.advantages),
    [
      0.0010757584465154223,
      -0.6145514616275238,
      1.6714352372176975,
      -0.895715601057685,
      -0.16224393297900422,
      -0.16224393297900422,
    ],
    1e-12,
    0,
    "advantages",
  );
});

Deno.test("GAE with whitened rewards keeps padding at zero (no leak into the last response token)", () => {
  const values = [[0, 0, 0], [0, 0, 0]];
  const rewards = [[1, 2, 3], [4, 5, 6]];
  const mask = [[1, 1, 1], [1, 0, 0]];
  const a = computeAdvantages(values, rewards, mask, 1, 1, true);
  // With γ = λ = 1 and zero values, returns are suffix sums of the whitened rewards; row 1 only has token 0.
  const w = maskedWhiten([[1, 2, 3], [4, 0, 0]], mask, false);
  assertClose(flat(a.returns), [w[0][0] + w[0][1] + w[0][2], w[0][1] + w[0][2], w[0][2], w[1][0], 0, 0], 1e-12, 0);
});

Deno.test("masked mean, variance (Bessel) and whitening by hand", () => {
  const x = [[1, 2], [3, 10]], mask = [[1, 1], [1, 0]];
  assert.equal(maskedMean(x, mask), 2);
  assertClose([maskedVar(x, mask)], [1], 1e-15, 0); // ((1−2)² + 0 + (3−2)²)/3 · 3/2
  assertClose([maskedVar(x, mask, false)], [2 / 3], 1e-15, 0);
  const s = 1 / Math.sqrt(1 + 1e-8);
  assertClose(flat(maskedWhiten(x, mask)), [-s, 0, s, 8 * s], 1e-15, 0);
  assertClose(flat(maskedWhiten(x, mask, false)), [2 - s, 2, 2 + s, 2 + 8 * s], 1e-15, 0);
  assert.ok(Number.isNaN(maskedMean(x, [[0, 0], [0, 0]])));
});

Deno.test("KL penalties of each kind and rewards: −β·kl, score at the last unmasked token", () => {
  const lp = [[-1, -2, -3], [-0.5, -0.5, -9]], ref = [[-1.5, -2, -2], [-1, -0.25, 0]];
  assert.deepEqual(klPenalty(lp, ref, "kl"), [[0.5, 0, -1], [0.5, -0.25, -9]]);
  assert.deepEqual(klPenalty(lp, ref, "abs"), [[0.5, 0, 1], [0.5, 0.25, 9]]);
  assert.deepEqual(klPenalty(lp, ref, "mse"), [[0.125, 0, 0.5], [0.125, 0.03125, 40.5]]);
  assert.throws(() => klPenalty(lp, ref, "full"), /fullKl/);
  const mask = [[1, 1, 0], [1, 1, 1]];
  const r = computeRewards([2, -1], lp, ref, mask, 0.1, "kl");
  assertClose(flat(r.nonScoreRewards), [-0.05, 0, 0.1, -0.05, 0.025, 0.9], 1e-15, 0, "non-score rewards");
  assertClose(flat(r.rewards), [-0.05, 2, 0.1, -0.05, 0.025, -0.1], 1e-15, 0, "rewards");
  assert.deepEqual(r.kls, [[0.5, 0, -1], [0.5, -0.25, -9]]);
  const full = computeRewards([1, 1], lp, ref, mask, 0.5, "full", [[0.2, 0.4, 0.6], [0, 0, 1]]);
  assertClose(flat(full.rewards), [-0.1, 0.8, -0.3, 0, 0, 0.5], 1e-15, 0, "full-KL rewards");
  assert.throws(() => computeRewards([1, 1], lp, ref, mask, 0.5, "full"), /needs the per-token fullKls/);
  assert.throws(() => computeRewards([1], lp, ref, mask, 0.5, "kl"), /1 scores for 2 rows/);
  assert.throws(() => computeRewards([1, 1], lp, ref, [[0, 0, 0], [1, 1, 1]], 0.5, "kl"), /row 0 has no unmasked/);
});

Deno.test("adaptive KL controller numbers; fixed controller; JSON round trip", () => {
  const c = new AdaptiveKLController(0.2, 6, 10000);
  c.update(7.2, 256); // e = clip(7.2/6 − 1) = 0.2 → × (1 + 0.2·256/10000) = 1.00512
  assertClose([c.value], [0.201024], 1e-15, 0);
  c.update(3, 256); // e = −0.5 clipped to −0.2 → × 0.99488
  assertClose([c.value], [0.19999475712], 1e-15, 0);
  c.update(6.6, 100); // e = 0.1 → × 1.001
  assertClose([c.value], [0.20019475187712], 1e-15, 0);
  const back = klControllerFromJSON(JSON.parse(JSON.stringify(c)));
  assert.ok(back instanceof AdaptiveKLController);
  back.update(12, 256);
  c.update(12, 256);
  assert.equal(back.value, c.value);
  const f = new FixedKLController(0.3);
  f.update(100, 256);
  assert.equal(f.value, 0.3);
  assert.deepEqual(klControllerFromJSON(f.toJSON()), f);
});

Deno.test("RunningMoments equals the direct mean and unbiased std of everything seen", () => {
  const rm = new RunningMoments();
  const batches = [[1, 2, 3], [4, 5], [10, -3, 0.5, 7]];
  const seen: number[] = [];
  for (const b of batches) {
    const [m, s] = rm.update(b);
    const bm = b.reduce((a, x) => a + x, 0) / b.length;
    assertClose([m, s], [bm, Math.sqrt(b.reduce((a, x) => a + (x - bm) ** 2, 0) / (b.length - 1))], 1e-12, 0);
    seen.push(...b);
    const mean = seen.reduce((a, x) => a + x, 0) / seen.length;
    const std = Math.sqrt(seen.reduce((a, x) => a + (x - mean) ** 2, 0) / (seen.length - 1));
    assertClose([rm.mean, rm.std], [mean, std], 1e-12, 1e-12, "running mean/std");
  }
  const back = RunningMoments.fromJSON(JSON.parse(JSON.stringify(rm)));
  assert.deepEqual(back.toJSON(), rm.toJSON());
});

Deno.test("SeededRng: permutations, determinism and resumable state", () => {
  const a = new SeededRng(7), b = new SeededRng(7);
  const p = a.permutation(10);
  assert.deepEqual([...p].sort((x, y) => x - y), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.deepEqual(b.permutation(10), p);
  const saved = a.state;
  const next = a.permutation(5);
  const c = new SeededRng(0);
  c.state = saved;
  assert.deepEqual(c.permutation(5), next);
  assert.notDeepEqual(new SeededRng(8).permutation(10), p);
});

Deno.test("ppoConfig: TRL v0.11.4 defaults, camelCase aliases, derived backward_batch_size", () => {
  const c = ppoConfig();
  // TRL v0.11.4's values (v0.7.10 had learning_rate 1e-5, batch_size 256, mini_batch_size 1).
  assert.equal(c.learning_rate, 1.41e-5);
  assert.equal(c.batch_size, 128);
  assert.equal(c.mini_batch_size, 128);
  assert.equal(c.gradient_accumulation_steps, 1);
  assert.equal(c.steps, 20000);
  assert.equal(c.init_kl_coef, 0.2);
  assert.equal(c.adap_kl_ctrl, true);
  assert.equal(c.gamma, 1);
  assert.equal(c.cliprange, 0.2);
  assert.equal(c.cliprange_value, 0.2);
  assert.equal(c.ratio_threshold, 10);
  assert.equal(c.target_kl, 1);
  assert.equal(c.early_stopping, false);
  assert.equal(c.whiten_rewards, false);
  assert.equal(c.score_clip, null);
  assert.equal(c.seed, 0);
  assert.equal(c.ppo_epochs, 4);
  assert.equal(c.lam, 0.95);
  assert.equal(c.vf_coef, 0.1);
  assert.equal(c.kl_penalty, "kl");
  assert.equal(c.target, 6);
  assert.equal(c.horizon, 10000);
  assert.equal(c.max_grad_norm, null);
  assert.equal(c.adam_epsilon, 1e-8);
  assert.equal(c.backward_batch_size, 128);
  const d = ppoConfig({ batchSize: 8, miniBatchSize: 2, gradient_accumulation_steps: 2, log_with: "wandb" });
  assert.equal(d.batch_size, 8);
  assert.equal(d.backward_batch_size, 4);
});

Deno.test("ppoConfig errors name the field", () => {
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ batch_size: 0 }, /"batch_size" must be a positive integer/],
    [{ mini_batch_size: 2.5 }, /"mini_batch_size" must be a positive integer/],
    [{ batch_size: 10, mini_batch_size: 4 }, /"batch_size" \(10\) must be a multiple of backward_batch_size/],
    [{ batch_size: 8, mini_batch_size: 2, gradient_accumulation_steps: 3 }, /= 6/],
    [{ lam: 1.5 }, /"lam" must be in \[0, 1\]/],
    [{ gamma: -0.1 }, /"gamma"/],
    [{ cliprange: 0 }, /"cliprange" must be in \(0, 1\)/],
    [{ kl_penalty: "kl2" }, /"kl_penalty" must be one of "kl", "abs", "mse", "full", got "kl2"/],
    [{ learning_rte: 1e-4 }, /unknown key "learning_rte"/],
    [{ lernRate: 1, bach_size: 2 }, /unknown keys "lernRate", "bach_size"/],
    [{ max_grad_norm: -1 }, /"max_grad_norm" must be null or a finite number > 0/],
    [{ adap_kl_ctrl: "yes" }, /"adap_kl_ctrl" must be a boolean/],
    [{ temperature: 0 }, /"temperature"/],
    [{ learning_rate: 1e-5, learningRate: 2e-5 }, /"learning_rate" is given twice/],
    [{ backward_batch_size: 3 }, /"backward_batch_size" is derived/],
    [{ forward_batch_size: 0 }, /"forward_batch_size" must be a positive integer, got 0/],
    [{ forward_batch_size: 4, mini_batch_size: 2 }, /"forward_batch_size" \(4\) is TRL's deprecated name .* \(2\)/],
    [{ batch_size: 8 }, /mini_batch_size \(128\).*mini_batch_size was not given and defaults to 128/],
  ];
  for (const [cfg, re] of bad) assert.throws(() => ppoConfig(cfg, { onWarning: () => {} }), re, JSON.stringify(cfg));
});

Deno.test("ppoConfig: TRL's deprecated forward_batch_size sets mini_batch_size, with one warning", () => {
  const warnings: string[] = [];
  const c = ppoConfig({ batch_size: 8, forward_batch_size: 4 }, { onWarning: (m) => warnings.push(m) });
  assert.equal(c.mini_batch_size, 4);
  assert.equal(c.backward_batch_size, 4);
  assert.ok(!("forward_batch_size" in c), "not a field of the result");
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /"forward_batch_size" is deprecated .* mini_batch_size \(4\)/);
  // camelCase, and the same value given under both names, are accepted; null (a TRL dump) is "not given".
  assert.equal(ppoConfig({ batchSize: 6, forwardBatchSize: 3 }, { onWarning: () => {} }).mini_batch_size, 3);
  assert.equal(
    ppoConfig({ batch_size: 6, forward_batch_size: 2, mini_batch_size: 2 }, { onWarning: () => {} })
      .mini_batch_size,
    2,
  );
  const quiet: string[] = [];
  assert.equal(ppoConfig({ forward_batch_size: null }, { onWarning: (m) => quiet.push(m) }).mini_batch_size, 128);
  assert.equal(quiet.length, 0);
  // Without onWarning: console.warn, once per process however often the config is validated.
  const seen: unknown[][] = [];
  const original = console.warn;
  console.warn = (...args: unknown[]) => void seen.push(args);
  try {
    for (let i = 0; i < 3; i++) assert.equal(ppoConfig({ batch_size: 10, forward_batch_size: 5 }).mini_batch_size, 5);
  } finally {
    console.warn = original;
  }
  assert.equal(seen.length, 1);
  assert.match(String(seen[0][0]), /^warning: .*forward_batch_size/);
});
