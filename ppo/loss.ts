/**
 * The fused, differentiable PPO loss ({@linkcode ppoLoss}, TRL's `PPOTrainer.loss`) and the full-distribution
 * KL used by `kl_penalty: "full"` ({@linkcode fullKl}). Kernels: `shaders/ppo_loss.wgsl`, `shaders/ppo_kl.wgsl`.
 * @module
 */

import { grid1d } from "../engine/runtime.ts";
import { PPO_KL, PPO_LOSS, PPO_LOSS_GRAD } from "../engine/kernels/loss.ts";
import { check, empty, runtime, type Tensor } from "../engine/tensor.ts";
import { needsGrad, record, saveForBackward } from "../engine/autograd.ts";
// Side effect: installs the ops autograd needs (ones for a scalar root, add for accumulation).
import "../engine/ops/elementwise.ts";

/** Tensors of the current policy, `[b, R]` f32, normally requiring grad. */
export interface PPOLossInputs {
  /** Log-probabilities of the response tokens under the current policy. */
  logprobs: Tensor;
  /** Value predictions. */
  vpreds: Tensor;
}

/** Rollout data, `[b, R]` f32 tensors without gradient. */
export interface PPOLossData {
  /** Log-probabilities at rollout time. */
  oldLogprobs: Tensor;
  /** Values at rollout time (the centre of the value clipping). */
  oldValues: Tensor;
  /** Whitened advantages. */
  advantages: Tensor;
  /** Returns (value targets). */
  returns: Tensor;
  /** 1 for response tokens, 0 for padding (masked entries have no effect at all, even if not finite). */
  mask: Tensor;
  /** Optional per-token policy entropy, only averaged into the stats. */
  entropy?: Tensor;
}

/** Hyper-parameters of {@linkcode ppoLoss} (TRL's names in camelCase). */
export interface PPOLossOptions {
  /** Ratio clip range c: the ratio is clamped to [1 − c, 1 + c]. */
  cliprange: number;
  /** Value clip range around the old values. */
  cliprangeValue: number;
  /** Weight of the value loss. */
  vfCoef: number;
  /** When the masked mean ratio exceeds this, the loss and its gradients are multiplied by 0. */
  ratioThreshold: number;
}

/** Indices into the stats vector returned by {@linkcode ppoLoss}. */
export const PPO_STATS = {
  pgLoss: 0,
  vfLoss: 1,
  loss: 2,
  approxkl: 3,
  policykl: 4,
  pgClipfrac: 5,
  vfClipfrac: 6,
  vpred: 7,
  returnsMean: 8,
  returnsVar: 9,
  valError: 10,
  valMean: 11,
  valVar: 12,
  advantagesMean: 13,
  ratioMean: 14,
  skipped: 15,
  entropy: 16,
  count: 17,
} as const;

/** Length of the stats vector. */
export const PPO_STATS_SIZE = 20;

/** TRL's `ppo/…` stat names of the stats vector entries (plus `ppo/policy/ratio_mean` and `ppo/skipped`). */
export const PPO_STAT_NAMES: readonly (readonly [string, number])[] = [
  ["ppo/loss/policy", PPO_STATS.pgLoss],
  ["ppo/loss/value", PPO_STATS.vfLoss],
  ["ppo/loss/total", PPO_STATS.loss],
  ["ppo/policy/entropy", PPO_STATS.entropy],
  ["ppo/policy/approxkl", PPO_STATS.approxkl],
  ["ppo/policy/policykl", PPO_STATS.policykl],
  ["ppo/policy/clipfrac", PPO_STATS.pgClipfrac],
  ["ppo/policy/advantages_mean", PPO_STATS.advantagesMean],
  ["ppo/policy/ratio_mean", PPO_STATS.ratioMean],
  ["ppo/returns/mean", PPO_STATS.returnsMean],
  ["ppo/returns/var", PPO_STATS.returnsVar],
  ["ppo/val/vpred", PPO_STATS.vpred],
  ["ppo/val/error", PPO_STATS.valError],
  ["ppo/val/clipfrac", PPO_STATS.vfClipfrac],
  ["ppo/val/mean", PPO_STATS.valMean],
  ["ppo/val/var", PPO_STATS.valVar],
  ["ppo/skipped", PPO_STATS.skipped],
];

/** One mini-batch's stats vector (read back) as a record keyed by {@linkcode PPO_STAT_NAMES}. */
export function ppoStatsRecord(row: ArrayLike<number>): Record<string, number> {
  return Object.fromEntries(PPO_STAT_NAMES.map(([n, i]) => [n, row[i]]));
}

/**
 * The step's `ppo/…` stats as TRL reports them: each averaged over all mini-batches, plus
 * ppo/val/var_explained = 1 − val/error / returns/var (of the averages), ppo/skipped_minibatches (how many were
 * zeroed by ratio_threshold) and ppo/minibatches.
 */
export function averagePPOStats(rows: readonly ArrayLike<number>[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [n, i] of PPO_STAT_NAMES) {
    if (n !== "ppo/skipped") out[n] = rows.reduce((a, r) => a + r[i], 0) / rows.length;
  }
  out["ppo/val/var_explained"] = 1 - out["ppo/val/error"] / out["ppo/returns/var"];
  out["ppo/skipped_minibatches"] = rows.reduce((a, r) => a + r[PPO_STATS.skipped], 0);
  out["ppo/minibatches"] = rows.length;
  return out;
}

/** Output of {@linkcode ppoLoss}. */
export interface PPOLossOutput {
  /** The scalar loss pg_loss + vf_coef·vf_loss (0 when skipped), differentiable. */
  loss: Tensor;
  /** `[PPO_STATS_SIZE]` stats on the GPU, laid out as {@linkcode PPO_STATS}. */
  stats: Tensor;
}

/**
 * TRL's PPO loss in one kernel (one workgroup loops over the b·R tokens; mask sums of 0 give NaN as in TRL):
 * - vpredclipped = clamp(vpreds, oldValues − cv, oldValues + cv) (TRL's `clip_by_value`, a max of a min);
 *   vf_loss = ½·maskedMean(max((vpreds − returns)², (vpredclipped − returns)²));
 * - ratio = exp(logprobs − oldLogprobs);
 *   pg_loss = maskedMean(max(−A·ratio, −A·clamp(ratio, 1 − c, 1 + c)));
 * - loss = pg_loss + vf_coef·vf_loss; when maskedMean(ratio) > ratioThreshold, pg_loss, vf_loss and loss (and
 *   so the gradients) are multiplied by 0, as TRL does (it still takes the optimiser step).
 *
 * The stats (see {@linkcode PPO_STATS}) are pg_loss, vf_loss, loss, approxkl = ½·maskedMean((lp − old)²),
 * policykl = maskedMean(old − lp), pg_clipfrac = maskedMean(pg2 > pg1), vf_clipfrac = maskedMean(vf2 > vf1),
 * the masked means of vpreds, returns, (vpreds − returns)², old values, advantages, ratio and entropy, the
 * unbiased masked variances of returns and old values, the skipped flag and the mask sum. They stay on the GPU.
 *
 * Backward (w.r.t. logprobs and vpreds) follows PyTorch's autograd for TRL's expression: `torch.max(a, b)`
 * (elementwise maximum) gives the whole gradient to the larger input and splits it in halves on ties (the
 * usual case for an unclipped ratio, where both branches are equal, which sums to the plain gradient);
 * `torch.clamp` passes the gradient on the closed interval; the value clip's `torch.min`/`torch.max` also
 * split ties in halves, so a prediction exactly on a clip boundary gets half its gradient through that branch.
 * @param inputs `logprobs` and `vpreds`, `[b, R]` f32
 * @param data rollout tensors, `[b, R]` f32 (no gradient flows to them)
 * @param options cliprange, cliprangeValue, vfCoef, ratioThreshold
 * @returns the scalar loss and the stats vector
 */
export function ppoLoss(inputs: PPOLossInputs, data: PPOLossData, options: PPOLossOptions): PPOLossOutput {
  const { logprobs, vpreds } = inputs;
  checkPPOLossArgs(inputs, data, options);
  const n = logprobs.size;
  const uniforms = {
    n,
    has_entropy: data.entropy ? 1 : 0,
    cliprange: options.cliprange,
    cliprange_value: options.cliprangeValue,
    vf_coef: options.vfCoef,
    ratio_threshold: options.ratioThreshold,
  };
  const packed = packRolloutData(data, n);
  const loss = empty([]);
  const stats = empty([PPO_STATS_SIZE]);
  const policy = { lp: logprobs.storage, vp: vpreds.storage, packed: packed.storage };
  runtime().run(PPO_LOSS, uniforms, { ...policy, stats: stats.storage, scalar: loss.storage }, [1]);
  if (!needsGrad(logprobs, vpreds)) {
    packed.dispose();
    return { loss, stats };
  }
  const saved = [logprobs, vpreds, packed, stats].map(saveForBackward);
  packed.dispose();
  record(loss, "ppoLoss", [logprobs, vpreds], (g) => {
    const [lp, vp, packedData, savedStats] = saved.map((t) => t.storage);
    const dlp = empty(logprobs.shape), dvp = empty(logprobs.shape);
    const bindings = { lp, vp, packed: packedData, stats: savedStats, scalar: g.storage };
    runtime().run(PPO_LOSS_GRAD, uniforms, { ...bindings, dlp: dlp.storage, dvp: dvp.storage }, grid1d(n));
    return [dlp, dvp];
  }, saved);
  return { loss, stats };
}

/** Throws unless every input is f32 [batch, responseLength] like `logprobs` and every option is a number. */
function checkPPOLossArgs(inputs: PPOLossInputs, data: PPOLossData, options: PPOLossOptions): void {
  const op = "ppoLoss";
  const shape = inputs.logprobs.shape;
  const named: [string, Tensor | undefined][] = [
    ["logprobs", inputs.logprobs],
    ["vpreds", inputs.vpreds],
    ["oldLogprobs", data.oldLogprobs],
    ["oldValues", data.oldValues],
    ["advantages", data.advantages],
    ["returns", data.returns],
    ["mask", data.mask],
    ["entropy", data.entropy],
  ];
  check(shape.length === 2, op, `logprobs must be [batch, responseLength], got [${shape}]`);
  for (const [name, t] of named) {
    if (!t) continue;
    check(t.dtype === "f32", op, `${name} must be f32, got ${t.dtype}`);
    check(t.shape.join() === shape.join(), op, `${name} has shape [${t.shape}], logprobs [${shape}]`);
  }
  const { cliprange, cliprangeValue, vfCoef, ratioThreshold } = options;
  for (const [k, v] of Object.entries({ cliprange, cliprangeValue, vfCoef, ratioThreshold })) {
    check(typeof v === "number" && !Number.isNaN(v), op, `option ${k} must be a number, got ${v}`);
  }
  check(inputs.logprobs.size > 0, op, "empty inputs");
}

/** The six no-grad rollout inputs packed into one [6, n] buffer (keeps the kernels within 8 storage bindings). */
function packRolloutData(data: PPOLossData, n: number): Tensor {
  const packed = empty([6, n]);
  const parts = [data.oldLogprobs, data.oldValues, data.advantages, data.returns, data.mask, data.entropy];
  parts.forEach((t, k) => {
    if (t) runtime().copy(t.storage, 0, packed.storage, k * n * 4, n * 4);
  });
  return packed;
}

/**
 * Per-row KL(p‖q) between the softmax distributions of two logit tensors over the last axis, with both
 * logits divided by `temperature`: Σ p·(log p − log q) — TRL's `kl_penalty: "full"` (its
 * `F.kl_div(ref_logprob, logprob, log_target=True).sum(-1)`). Not differentiable (used under no-grad).
 * @param logits policy logits `[..., V]`
 * @param refLogits reference logits, same shape
 * @param temperature softmax temperature (default 1)
 * @returns f32 `[...]`
 */
export function fullKl(logits: Tensor, refLogits: Tensor, temperature = 1): Tensor {
  const op = "fullKl";
  check(logits.dtype === "f32" && refLogits.dtype === "f32", op, "logits must be f32");
  check(logits.ndim >= 1, op, "logits need a vocabulary axis");
  check(
    logits.shape.join() === refLogits.shape.join(),
    op,
    `logits [${logits.shape}] and refLogits [${refLogits.shape}] differ`,
  );
  check(temperature > 0, op, `temperature must be > 0, got ${temperature}`);
  const lead = logits.shape.slice(0, -1);
  const V = logits.shape[logits.ndim - 1];
  check(V > 0, op, "empty vocabulary axis");
  const rows = lead.reduce((a, d) => a * d, 1);
  const out = empty(lead);
  const bindings = { x: logits.storage, y: refLogits.storage, kl: out.storage };
  runtime().run(PPO_KL, { rows, n: V, inv_temp: 1 / temperature }, bindings, grid1d(rows, 1));
  return out;
}
