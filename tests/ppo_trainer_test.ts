import { assert, assertClose, ready } from "./helpers.ts";
import { readAll, runtime, tensor } from "../engine/tensor.ts";
import { GPT2LMHeadModel } from "../models/gpt2.ts";
import { CausalLMWithValueHead } from "../models/value_head.ts";
import { downloadParams, uploadParams } from "../models/weights.ts";
import { type PPOStats, PPOTrainer } from "../ppo/trainer.ts";
import type { PPOConfigInput } from "../ppo/config.ts";
import { maskedMean, maskedVar } from "../ppo/masked_stats.ts";
import { SeededRng } from "../engine/random.ts";

const CFG = {
  n_layer: 2,
  n_head: 2,
  n_embd: 32,
  vocab_size: 97,
  n_positions: 64,
  embd_pdrop: 0,
  attn_pdrop: 0,
  resid_pdrop: 0,
};
const QUERIES = [[5, 6, 7], [8, 9], [10, 11, 12, 13, 14], [15]];
const RESPONSES = [[20, 21, 22, 23], [24], [25, 26, 27, 28, 29, 30], [31, 32]];
const SCORES = [1.0, -0.5, 0.25, 2.0];
const QUERIES2 = [[40, 41], [42, 43, 44, 45], [46], [47, 48, 49]];
const RESPONSES2 = [[50, 51, 52], [53, 54], [55, 56, 57, 58, 59], [60]];
const SCORES2 = [-1.0, 0.5, 1.5, 0.0];
const PPO: PPOConfigInput = { batch_size: 4, mini_batch_size: 2, ppo_epochs: 2, learning_rate: 1e-3 };

const policyOf = (seed: number) => new CausalLMWithValueHead(GPT2LMHeadModel.random(CFG, seed), undefined, seed);
const withoutTimes = (s: PPOStats) => Object.fromEntries(Object.entries(s).filter(([k]) => !k.startsWith("time/")));

function logSoftmaxAt(row: ArrayLike<number>, id: number): number {
  let m = -Infinity;
  for (let k = 0; k < row.length; k++) m = Math.max(m, row[k]);
  let s = 0;
  for (let k = 0; k < row.length; k++) s += Math.exp(row[k] - m);
  return row[id] - m - Math.log(s);
}

Deno.test("PPOTrainer layout: rollout log-probs and values equal an unpadded forward of each [query | response]", async () => {
  await ready;
  const policy = policyOf(1);
  const trainer = new PPOTrainer(PPO, policy, null, null);
  await trainer.step(QUERIES, RESPONSES, SCORES);
  const roll = trainer.rollout!;
  const fresh = policyOf(1); // the trained policy has moved; recompute with the initial weights
  for (let b = 0; b < 4; b++) {
    const q = QUERIES[b], r = RESPONSES[b], T = q.length + r.length;
    const out = fresh.forward({ inputIds: tensor([...q, ...r], [1, T], "i32") });
    const [logits, values] = await readAll([out.logits!, out.values]);
    const V = CFG.vocab_size;
    const lp = r.map((id, t) => logSoftmaxAt(logits.subarray((q.length - 1 + t) * V, (q.length + t) * V), id));
    const vals = r.map((_, t) => values[q.length - 1 + t]);
    assertClose(roll.logprobs[b].slice(0, r.length), lp, 2e-5, 1e-4, `logprobs of row ${b}`);
    assertClose(roll.values[b].slice(0, r.length), vals, 2e-5, 1e-4, `values of row ${b}`);
    assert.deepEqual(roll.mask[b], Array.from({ length: 6 }, (_, t) => t < r.length ? 1 : 0));
  }
  trainer.dispose();
});

Deno.test("PPOTrainer with policy = reference: KL 0, first mini-batch ratio exactly 1, approxkl and clipfrac 0", async () => {
  await ready;
  for (const kl_penalty of ["kl", "full"] as const) {
    const trainer = new PPOTrainer({ ...PPO, kl_penalty }, policyOf(2), null, null);
    const stats = await trainer.step(QUERIES, RESPONSES, SCORES);
    assert.equal(stats["objective/kl"], 0, kl_penalty);
    assert.ok(trainer.rollout!.kls.flat().every((k) => k === 0), "every token's KL is 0");
    const first = trainer.minibatchStats[0];
    assert.equal(first["ppo/policy/ratio_mean"], 1);
    assert.equal(first["ppo/policy/approxkl"], 0);
    assert.equal(first["ppo/policy/policykl"], 0);
    assert.equal(first["ppo/policy/clipfrac"], 0);
    assert.equal(trainer.minibatchStats.length, 4, "2 epochs × 2 mini-batches");
    // The first mini-batch holds the first 2 rows of the seeded permutation; with ratio 1 and vpreds = old
    // values its loss follows from the rollout alone: pg = mean(−A), vf = ½·mean((v − R)²).
    const rows = new SeededRng(0).permutation(4).slice(0, 2);
    const ro = trainer.rollout!;
    const pick = (x: number[][]) => rows.map((i) => x[i]);
    const m = pick(ro.mask);
    const err = pick(ro.values).map((r, b) => r.map((v, t) => (v - pick(ro.returns)[b][t]) ** 2));
    const expected = {
      "ppo/loss/policy": -maskedMean(pick(ro.advantages), m),
      "ppo/loss/value": 0.5 * maskedMean(err, m),
      "ppo/val/error": maskedMean(err, m),
      "ppo/policy/advantages_mean": maskedMean(pick(ro.advantages), m),
      "ppo/returns/mean": maskedMean(pick(ro.returns), m),
      "ppo/returns/var": maskedVar(pick(ro.returns), m),
      "ppo/val/mean": maskedMean(pick(ro.values), m),
      "ppo/val/vpred": maskedMean(pick(ro.values), m),
    };
    for (const [k, v] of Object.entries(expected)) assertClose([first[k]], [v], 1e-5, 1e-4, k);
    assert.equal(stats["objective/kl_coef"], 0.2);
    assert.equal(stats["ppo/mean_non_score_reward"], 0);
    assertClose([stats["ppo/mean_scores"], stats["env/reward_mean"]], [0.6875, 0.6875], 1e-12, 0);
    assertClose([stats["tokens/queries_len_mean"], stats["tokens/responses_len_mean"]], [2.75, 3.25], 1e-12, 0);
    const lp = trainer.rollout!.logprobs, mask = trainer.rollout!.mask;
    const ent = lp.reduce((a, r, b) => a + r.reduce((s, v, t) => s - (mask[b][t] ? v : 0), 0), 0) / 4;
    assertClose([stats["objective/entropy"]], [ent], 1e-9, 0, "objective/entropy");
    const keys = `objective/kl objective/kl_coef objective/entropy objective/non_score_reward
      ppo/mean_non_score_reward ppo/mean_scores ppo/std_scores ppo/loss/policy ppo/loss/value ppo/loss/total
      ppo/policy/entropy ppo/policy/approxkl ppo/policy/policykl ppo/policy/clipfrac ppo/policy/advantages_mean
      ppo/returns/mean ppo/returns/var ppo/val/vpred ppo/val/error ppo/val/clipfrac ppo/val/mean ppo/val/var
      ppo/val/var_explained ppo/learning_rate env/reward_mean env/reward_std tokens/queries_len_mean
      tokens/queries_len_std tokens/responses_len_mean tokens/responses_len_std time/ppo/forward_pass
      time/ppo/compute_rewards time/ppo/compute_advantages time/ppo/optimize_step time/ppo/calc_stats
      time/ppo/total`.split(/\s+/);
    for (const k of keys) assert.ok(Number.isFinite(stats[k]), `${k} = ${stats[k]}`);
    assert.equal(stats["ppo/learning_rate"], 1e-3);
    trainer.dispose();
  }
});

Deno.test("one step changes every policy and value-head parameter and no reference parameter", async () => {
  await ready;
  const policy = policyOf(3);
  const trainer = new PPOTrainer(PPO, policy, null, null);
  const names = [...policy.model.params.keys(), ...policy.vHead.keys()];
  const all = () => [...policy.model.params.values(), ...policy.vHead.values()];
  const before = await readAll(all());
  const refBefore = await readAll(trainer.ref.parameters());
  await trainer.step(QUERIES, RESPONSES, SCORES);
  const after = await readAll(all());
  const refAfter = await readAll(trainer.ref.parameters());
  names.forEach((n, i) => assert.ok(after[i].some((v, k) => v !== before[i][k]), `${n} changed`));
  refAfter.forEach((r, i) => assert.deepEqual(r, refBefore[i], "reference parameters are frozen"));
  names.forEach((n, i) => assert.ok(policy.parameters()[i].grad === null, `${n} has no leftover gradient`));
  trainer.dispose();
});

Deno.test("same seed ⇒ identical stats over two steps", async () => {
  await ready;
  const run = async () => {
    const t = new PPOTrainer({ ...PPO, seed: 11 }, policyOf(4), null, null);
    const a = await t.step(QUERIES, RESPONSES, SCORES);
    const b = await t.step(QUERIES2, RESPONSES2, SCORES2);
    t.dispose();
    return [withoutTimes(a), withoutTimes(b)];
  };
  const [x, y] = [await run(), await run()];
  assert.deepEqual(x, y);
  assert.notEqual(x[1]["objective/kl"], 0, "the second step sees a moved policy");
});

Deno.test("stateDict → new trainer → loadStateDict: the next step's stats equal the original trainer's", async () => {
  await ready;
  const cfg = { ...PPO, use_score_scaling: true, use_score_norm: true, score_clip: 1.5, seed: 5 };
  const a = new PPOTrainer(cfg, policyOf(6), GPT2LMHeadModel.random(CFG, 6), null);
  await a.step(QUERIES, RESPONSES, SCORES);
  const sd = JSON.parse(JSON.stringify(await a.stateDict(), (_, v) => v instanceof Float32Array ? [...v] : v));
  for (const e of Object.values(sd.optimizer.state) as Record<string, unknown>[]) {
    for (const k of ["m", "v"]) e[k] = Float32Array.from(e[k] as number[]);
  }
  const copy = async (p: Map<string, import("../engine/tensor.ts").Tensor>) => uploadParams(await downloadParams(p));
  const policyB = new CausalLMWithValueHead(
    new GPT2LMHeadModel(a.policy.model.config, await copy(a.policy.model.params)),
    await copy(a.policy.vHead),
  );
  const b = new PPOTrainer(cfg, policyB, GPT2LMHeadModel.random(CFG, 6), null);
  b.loadStateDict(sd);
  const sa = withoutTimes(await a.step(QUERIES2, RESPONSES2, SCORES2));
  const sb = withoutTimes(await b.step(QUERIES2, RESPONSES2, SCORES2));
  assert.deepEqual(sb, sa);
  assert.notEqual(sa["objective/kl_coef"], 0.2, "the KL controller state was carried over");
  a.dispose();
  b.dispose();
});

Deno.test("live GPU bytes stay flat over 3 steps (accumulation, clipping, full KL, whitening, early stopping)", async () => {
  await ready;
  const cfg = {
    ...PPO,
    mini_batch_size: 1,
    gradient_accumulation_steps: 2,
    max_grad_norm: 0.5,
    kl_penalty: "full" as const,
    whiten_rewards: true,
    early_stopping: true,
    target_kl: 1e-3,
  };
  const policy = policyOf(7);
  const trainer = new PPOTrainer(cfg, policy, null, null);
  const before = runtime().stats.liveBytes;
  const live: number[] = [];
  let stopped = 0;
  for (let i = 0; i < 3; i++) {
    const s = await trainer.step(i % 2 ? QUERIES2 : QUERIES, i % 2 ? RESPONSES2 : RESPONSES, SCORES);
    live.push(runtime().stats.liveBytes);
    // Early stopping is checked after each epoch with the last mini-batch's policy KL (as TRL).
    const perEpoch = 4;
    let expected = 0, shouldStop = false;
    for (let e = 0; e < trainer.config.ppo_epochs && !shouldStop; e++) {
      expected += perEpoch;
      shouldStop = trainer.minibatchStats[expected - 1]["ppo/policy/policykl"] > 1.5e-3;
    }
    assert.equal(s["ppo/early_stopped"], shouldStop ? 1 : 0);
    assert.equal(s["ppo/minibatches"], expected);
    stopped += shouldStop ? 1 : 0;
    // A 1-token response in a 1-row mini-batch makes the Bessel-corrected variances NaN/∞, as in TRL.
    const bad = Object.keys(s).filter((k) => !Number.isFinite(s[k]));
    assert.ok(bad.every((k) => /^ppo\/(returns\/var|val\/var|val\/var_explained)$/.test(k)), `non-finite ${bad}`);
  }
  // After the first step only AdamW's two moment buffers remain, shaped like the parameters' (flat) buffers.
  const buffers = new Set(policy.parameters().map((p) => p.storage.buffer));
  const adam = 2 * [...buffers].reduce((a, b) => a + b.size, 0);
  assert.equal(live[0] - before, adam, "the first step leaves only the optimiser state");
  assert.equal(live[2], live[0], `live bytes after steps: ${live}`);
  assert.ok(stopped > 0, "early stopping triggered at least once");
  trainer.dispose();
});

Deno.test("generate → score → step, and input errors", async () => {
  await ready;
  const trainer = new PPOTrainer({ ...PPO, ppo_epochs: 1 }, policyOf(8), null, { padTokenId: 0, eosTokenId: 1 });
  const gen = await trainer.generate(QUERIES, { maxNewTokens: 5 });
  assert.equal(gen.responses.length, 4);
  assert.ok(gen.responses.every((r) => r.length >= 1 && r.length <= 5));
  const stats = await trainer.step(QUERIES, gen.responses, SCORES);
  assert.ok(Number.isFinite(stats["ppo/loss/total"]));
  await assert.rejects(() => trainer.generate(QUERIES, { maxNewTokens: 2, temperature: 0.5 }), /temperature 0.5/);
  const errs: [() => Promise<unknown>, RegExp][] = [
    [() => trainer.step(QUERIES.slice(0, 3), RESPONSES, SCORES), /got 3 queries, but batch_size is 4/],
    [() => trainer.step(QUERIES, RESPONSES, [1, 2]), /got 2 scores, but batch_size is 4/],
    [() => trainer.step(QUERIES, [[1], [], [2], [3]], SCORES), /response 1 is empty/],
    [() => trainer.step(QUERIES, RESPONSES, [1, NaN, 0, 0]), /score 1 is not finite/],
    [() => trainer.step(QUERIES, [[1], [97], [2], [3]], SCORES), /response 1 has token id 97 outside/],
    [() => trainer.step(QUERIES, [[1], new Array(60).fill(2), [2], [3]], SCORES), /exceeds n_positions \(64\)/],
  ];
  for (const [f, re] of errs) await assert.rejects(f, re);
  assert.throws(() => new PPOTrainer({ batch_size: 6, mini_batch_size: 4 }, policyOf(8), null, null), /batch_size/);
  assert.throws(() => new PPOTrainer(PPO, policyOf(8), null, { padTokenId: 500 }), /pad token id 500/);
  assert.throws(() => new PPOTrainer(PPO, trainer.policy, trainer.policy.model, null), /pass null/);
  trainer.dispose();
});

Deno.test("responseMasks (TRL's response_masks): all ones change nothing; zeros leave tokens out of KL, rewards and mask", async () => {
  await ready;
  const run = async (masks?: number[][]) => {
    const t = new PPOTrainer({ ...PPO, seed: 9 }, policyOf(9), null, null);
    const stats = withoutTimes(await t.step(QUERIES, RESPONSES, SCORES, masks));
    const rollout = t.rollout!;
    t.dispose();
    return { stats, rollout };
  };
  const plain = await run();
  const ones = await run(RESPONSES.map((r) => r.map(() => 1)));
  assert.deepEqual(ones.stats, plain.stats);
  // Mask the first token of row 0 and the last two of row 2.
  const masks = RESPONSES.map((r) => r.map(() => 1));
  masks[0][0] = 0;
  masks[2][4] = masks[2][5] = 0;
  const m = await run(masks);
  assert.deepEqual(m.rollout.mask[0].slice(0, 4), [0, 1, 1, 1]);
  assert.deepEqual(m.rollout.mask[2].slice(0, 6), [1, 1, 1, 1, 0, 0]);
  // objective/kl sums the KL over unmasked tokens only; the score sits on the last unmasked token of row 2.
  const kl = m.rollout.kls.map((r, b) => r.reduce((a, v, t) => a + v * m.rollout.mask[b][t], 0));
  assertClose([m.stats["objective/kl"]], [kl.reduce((a, b) => a + b, 0) / kl.length], 1e-5, 1e-6, "objective/kl");
  const nsr = m.rollout.nonScoreRewards[2], rw = m.rollout.rewards[2];
  assertClose([rw[3] - nsr[3]], [m.rollout.scores[2]], 1e-6, 1e-6, "score on token 3 of row 2");
  assert.equal(rw[5], nsr[5]);
  assert.notDeepEqual(m.stats, plain.stats);
  // Malformed masks are refused before any work.
  const t = new PPOTrainer({ ...PPO, seed: 9 }, policyOf(9), null, null);
  await assert.rejects(t.step(QUERIES, RESPONSES, SCORES, [[1]]), /responseMasks needs one row per response \(4\)/);
  const short = RESPONSES.map((r) => r.map(() => 1));
  short[1] = [];
  await assert.rejects(t.step(QUERIES, RESPONSES, SCORES, short), /row 1 must have 1 entries/);
  const none = RESPONSES.map((r) => r.map(() => 1));
  none[3] = [0, 0];
  await assert.rejects(t.step(QUERIES, RESPONSES, SCORES, none), /row 3 masks every token/);
  t.dispose();
});
