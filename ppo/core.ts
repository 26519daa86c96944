/**
 * PPO's host-side math, as TRL computes it, in float64 on small `[batch, responseLength]` arrays (rows of
 * numbers): KL penalties, rewards, masked statistics and whitening, GAE advantages, the KL controllers,
 * running score moments, and the trainer's serialisable shuffling RNG. These arrays are tiny (a few thousand
 * numbers), so the trainer reads the rollout back once and does this on the CPU.
 * @module
 */

import type { KLPenaltyKind } from "./config.ts";
import { positionIdsFromMask } from "../models/gpt2.ts";
import { mulberry32Next } from "../engine/random.ts";

/** A `[rows, cols]` array of numbers (one row per sample). */
export type Rows = number[][];

function sameShape(op: string, a: Rows, b: Rows, an: string, bn: string): void {
  if (a.length !== b.length || a.some((r, i) => r.length !== b[i].length)) {
    throw new Error(`${op}: ${an} and ${bn} must have the same shape`);
  }
}

/**
 * Per-token KL penalty between policy and reference log-probabilities (TRL's `_kl_penalty`):
 * "kl": lp − ref; "abs": |lp − ref|; "mse": ½(lp − ref)². "full" needs the full distributions and is computed
 * on the GPU ({@linkcode import("./loss.ts").fullKl}); passing it here throws.
 * @param logp policy log-probabilities of the sampled tokens
 * @param refLogp reference log-probabilities of the same tokens
 * @param kind the estimator
 * @returns the penalty per token
 */
export function klPenalty(logp: Rows, refLogp: Rows, kind: KLPenaltyKind): Rows {
  sameShape("klPenalty", logp, refLogp, "logp", "refLogp");
  const f = kind === "kl"
    ? (d: number) => d
    : kind === "abs"
    ? (d: number) => Math.abs(d)
    : kind === "mse"
    ? (d: number) => 0.5 * d * d
    : null;
  if (!f) {
    throw new Error(
      kind === "full"
        ? 'klPenalty: "full" needs the full distributions; compute it with fullKl() on the GPU'
        : `klPenalty: unknown kind ${JSON.stringify(kind)}`,
    );
  }
  return logp.map((row, i) => row.map((lp, t) => f(lp - refLogp[i][t])));
}

/** Result of {@linkcode computeRewards}. */
export interface Rewards {
  /** Per-token rewards: −β·kl, plus the score at the last unmasked token. */
  rewards: Rows;
  /** −β·kl per token (not masked, as in TRL). */
  nonScoreRewards: Rows;
  /** The KL penalty per token. */
  kls: Rows;
}

/**
 * TRL's `compute_rewards`: reward_t = −β·kl_t for every token, and the row's score is added at the last
 * non-masked token.
 * @param scores one score per row
 * @param logprobs policy log-probabilities [B, R]
 * @param refLogprobs reference log-probabilities [B, R]
 * @param masks 1 for response tokens, 0 for padding [B, R]
 * @param klCoef β
 * @param kind the KL estimator
 * @param fullKls per-token KL(π‖π_ref) over the vocabulary, required when `kind` is "full"
 * @returns rewards, non-score rewards and KLs
 */
export function computeRewards(
  scores: readonly number[],
  logprobs: Rows,
  refLogprobs: Rows,
  masks: Rows,
  klCoef: number,
  kind: KLPenaltyKind,
  fullKls?: Rows,
): Rewards {
  sameShape("computeRewards", logprobs, masks, "logprobs", "masks");
  if (scores.length !== logprobs.length) {
    throw new Error(`computeRewards: ${scores.length} scores for ${logprobs.length} rows`);
  }
  let kls: Rows;
  if (kind === "full") {
    if (!fullKls) throw new Error('computeRewards: kind "full" needs the per-token fullKls');
    sameShape("computeRewards", fullKls, masks, "fullKls", "masks");
    kls = fullKls.map((r) => [...r]);
  } else kls = klPenalty(logprobs, refLogprobs, kind);
  const nonScoreRewards = kls.map((r) => r.map((k) => -klCoef * k));
  const rewards = nonScoreRewards.map((r, i) => {
    const out = [...r];
    const last = masks[i].findLastIndex((m) => m !== 0);
    if (last < 0) throw new Error(`computeRewards: row ${i} has no unmasked token`);
    out[last] += scores[i];
    return out;
  });
  return { rewards, nonScoreRewards, kls };
}

/** Σ x·mask / Σ mask over every element (NaN when the mask is all zeros, as in TRL). */
export function maskedMean(x: Rows, mask: Rows): number {
  let s = 0, n = 0;
  x.forEach((r, i) =>
    r.forEach((v, t) => {
      if (mask[i][t]) {
        s += v * mask[i][t];
        n += mask[i][t];
      }
    })
  );
  return s / n;
}

/**
 * Masked variance: maskedMean((x − maskedMean(x))²), times n/(n − 1) when `unbiased` (TRL's default; n is
 * the mask sum, so a single unmasked element gives NaN or ∞ as in TRL).
 */
export function maskedVar(x: Rows, mask: Rows, unbiased = true): number {
  const mean = maskedMean(x, mask);
  const v = maskedMean(x.map((r) => r.map((e) => (e - mean) ** 2)), mask);
  if (!unbiased) return v;
  const n = mask.reduce((a, r) => a + r.reduce((b, m) => b + m, 0), 0);
  if (n === 0) throw new Error("maskedVar: the mask is all zeros");
  return v * n / (n - 1);
}

/**
 * TRL's `masked_whiten`: (x − mean)·rsqrt(var + 1e-8) with the masked mean and unbiased masked variance;
 * with `shiftMean` false the mean is added back. Every element (masked or not) is transformed.
 */
export function maskedWhiten(x: Rows, mask: Rows, shiftMean = true): Rows {
  const mean = maskedMean(x, mask);
  const scale = 1 / Math.sqrt(maskedVar(x, mask) + 1e-8);
  return x.map((r) => r.map((v) => (v - mean) * scale + (shiftMean ? 0 : mean)));
}

/** Result of {@linkcode computeAdvantages}. */
export interface Advantages {
  /** values·mask (the old values the loss clips around). */
  values: Rows;
  /** Whitened GAE advantages. */
  advantages: Rows;
  /** Unwhitened advantages + values. */
  returns: Rows;
}

/**
 * TRL's `compute_advantages`: values and rewards are multiplied by the mask; optionally the rewards are
 * whitened (shift_mean false) and re-masked (as newer TRL does, so padding never leaks into the advantages);
 * then GAE runs backwards over the response with next value 0 after the end:
 * δ_t = r_t + γ·v_{t+1} − v_t, A_t = δ_t + γλ·A_{t+1}; returns = A + values; advantages = maskedWhiten(A).
 */
export function computeAdvantages(
  values: Rows,
  rewards: Rows,
  mask: Rows,
  gamma: number,
  lam: number,
  whitenRewards = false,
): Advantages {
  sameShape("computeAdvantages", values, mask, "values", "mask");
  sameShape("computeAdvantages", rewards, mask, "rewards", "mask");
  // x·mask, except that masked entries become exactly 0 even when not finite.
  const apply = (x: Rows) => x.map((r, i) => r.map((e, t) => mask[i][t] ? e * mask[i][t] : 0));
  const v = apply(values);
  let rw = apply(rewards);
  if (whitenRewards) rw = apply(maskedWhiten(rw, mask, false));
  const adv = v.map((row, i) => {
    const n = row.length;
    const out = new Array<number>(n);
    let last = 0;
    for (let t = n - 1; t >= 0; t--) {
      const next = t < n - 1 ? row[t + 1] : 0;
      const delta = rw[i][t] + gamma * next - row[t];
      last = delta + gamma * lam * last;
      out[t] = last;
    }
    return out;
  });
  const returns = adv.map((r, i) => r.map((a, t) => a + v[i][t]));
  return { values: v, advantages: maskedWhiten(adv, mask), returns };
}

/** Serialised state of a KL controller. */
export interface KLControllerState {
  /** "adaptive" or "fixed". */
  kind: "adaptive" | "fixed";
  /** Current coefficient. */
  value: number;
  /** Target KL (adaptive only). */
  target?: number;
  /** Horizon (adaptive only). */
  horizon?: number;
}

/** The KL coefficient β and its update rule. */
export interface KLController {
  /** Current β. */
  value: number;
  /** Updates β after a step with mean KL `current` over `nSteps` samples. */
  update(current: number, nSteps: number): void;
  /** Serialisable state. */
  toJSON(): KLControllerState;
}

/** Ziegler et al.'s adaptive KL controller (TRL's `AdaptiveKLController`). */
export class AdaptiveKLController implements KLController {
  /** Current β. */
  value: number;
  /** Creates the controller. */
  constructor(initKlCoef: number, readonly target: number, readonly horizon: number) {
    this.value = initKlCoef;
  }
  /** e = clip(current/target − 1, −0.2, 0.2); β ← β·(1 + e·nSteps/horizon). */
  update(current: number, nSteps: number): void {
    const e = Math.min(0.2, Math.max(-0.2, current / this.target - 1));
    this.value *= 1 + e * nSteps / this.horizon;
  }
  /** Serialisable state. */
  toJSON(): KLControllerState {
    return { kind: "adaptive", value: this.value, target: this.target, horizon: this.horizon };
  }
}

/** A constant β (TRL's `FixedKLController`). */
export class FixedKLController implements KLController {
  /** Creates the controller. */
  constructor(public value: number) {}
  /** Does nothing. */
  update(_current: number, _nSteps: number): void {}
  /** Serialisable state. */
  toJSON(): KLControllerState {
    return { kind: "fixed", value: this.value };
  }
}

/** Rebuilds a controller from {@linkcode KLController.toJSON}'s output. */
export function klControllerFromJSON(s: KLControllerState): KLController {
  if (!s || typeof s.value !== "number") throw new Error("klControllerFromJSON: invalid state");
  if (s.kind === "fixed") return new FixedKLController(s.value);
  if (s.kind === "adaptive" && typeof s.target === "number" && typeof s.horizon === "number") {
    return new AdaptiveKLController(s.value, s.target, s.horizon);
  }
  throw new Error(`klControllerFromJSON: invalid state ${JSON.stringify(s)}`);
}

/** Serialised {@linkcode RunningMoments}. */
export interface RunningMomentsState {
  /** Running mean. */
  mean: number;
  /** Running (population) variance. */
  var: number;
  /** Bessel-corrected running standard deviation. */
  std: number;
  /** Number of values seen (starts at 1e-24). */
  count: number;
}

/** TRL's `RunningMoments`: mean and variance of every score seen so far, combined batch by batch. */
export class RunningMoments {
  /** Running mean. */
  mean = 0;
  /** Running population variance. */
  var = 1;
  /** Running standard deviation with Bessel's correction. */
  std = 1;
  /** Values seen (tiny initial count, as TRL). */
  count = 1e-24;

  /**
   * Merges a batch (Chan et al.'s parallel update) and returns the batch's own mean and unbiased std.
   * @param xs the batch's values
   * @returns [batch mean, batch std (unbiased)]
   */
  update(xs: readonly number[]): [number, number] {
    const n = xs.length;
    if (n === 0) throw new Error("RunningMoments.update: empty batch");
    const m = xs.reduce((a, b) => a + b, 0) / n;
    const v = xs.reduce((a, b) => a + (b - m) ** 2, 0) / n;
    const delta = m - this.mean;
    const tot = this.count + n;
    const oldSum = this.var * this.count + delta * delta * this.count * n / tot;
    this.mean += delta * n / tot;
    this.var = (oldSum + v * n) / tot;
    this.std = Math.sqrt(this.var * tot / (tot - 1));
    this.count = tot;
    return [m, Math.sqrt(v * n / (n - 1))];
  }

  /** Serialisable state. */
  toJSON(): RunningMomentsState {
    return { mean: this.mean, var: this.var, std: this.std, count: this.count };
  }

  /** Restores a state from {@linkcode toJSON}. */
  static fromJSON(s: RunningMomentsState): RunningMoments {
    const r = new RunningMoments();
    for (const k of ["mean", "var", "std", "count"] as const) {
      if (typeof s?.[k] !== "number") throw new Error(`RunningMoments.fromJSON: missing "${k}"`);
      r[k] = s[k];
    }
    return r;
  }
}

/** A seeded PRNG (mulberry32) whose whole state is one 32-bit integer, so runs can be resumed exactly. */
export class SeededRng {
  /** The 32-bit state. */
  state: number;
  /** Seeds the generator. */
  constructor(seed: number) {
    this.state = (Math.imul(seed | 0, 0x9e3779b1) ^ 0x85ebca6b) >>> 0;
  }
  /** A float in [0, 1). */
  next(): number {
    const r = mulberry32Next(this.state);
    this.state = r.state;
    return r.value;
  }
  /** A 32-bit unsigned integer. */
  nextU32(): number {
    return Math.floor(this.next() * 4294967296) >>> 0;
  }
  /** A uniformly random permutation of 0..n−1 (Fisher–Yates). */
  permutation(n: number): number[] {
    const p = Array.from({ length: n }, (_, i) => i);
    for (let i = n - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [p[i], p[j]] = [p[j], p[i]];
    }
    return p;
  }
}

// ------------------------------------------------------------------ batch layout, scores and step stats

const F32_EPS = 1.1920928955078125e-7;
const mean = (x: readonly number[]) => x.reduce((a, b) => a + b, 0) / x.length;
const std = (x: readonly number[]) => {
  const m = mean(x);
  return Math.sqrt(x.reduce((a, b) => a + (b - m) ** 2, 0) / (x.length - 1));
};

/** Options of {@linkcode processScores} (TRL's use_score_scaling, use_score_norm, score_clip). */
export interface ScoreOptions {
  /** Divide by the running std (+ float32 eps), updating the moments with this batch first. */
  scaling: boolean;
  /** With scaling, subtract the running mean first. */
  norm: boolean;
  /** Clamp to ±clip afterwards (null: off). */
  clip: number | null;
}

/** TRL's score preprocessing in `step()`: optional running scaling/normalisation, then clipping. */
export function processScores(scores: readonly number[], moments: RunningMoments, o: ScoreOptions): number[] {
  let s = [...scores];
  if (o.scaling) {
    moments.update(s);
    const factor = moments.std + F32_EPS, m = moments.mean;
    s = s.map((x) => o.norm ? (x - m) / factor : x / factor);
  }
  const clip = o.clip;
  if (clip !== null) s = s.map((x) => Math.min(clip, Math.max(-clip, x)));
  return s;
}

/** A padded PPO batch: queries left-padded to Tq, responses right-padded to R, input = [query | response]. */
export interface PaddedBatch {
  /** Rows. */
  B: number;
  /** Longest query. */
  Tq: number;
  /** Longest response. */
  R: number;
  /** Input ids [B, Tq + R]. */
  ids: number[][];
  /** Attention mask [B, Tq + R] (0 on every pad). */
  attn: number[][];
  /** Position ids from the mask. */
  pos: number[][];
  /** Response ids [B, R] (padded). */
  resp: number[][];
  /** Response mask [B, R]. */
  mask: Rows;
}

/** Lays out a batch; response token t's log-prob and value come from column Tq − 1 + t. */
export function layoutBatch(queries: number[][], responses: number[][], pad: number): PaddedBatch {
  const B = queries.length;
  const Tq = Math.max(...queries.map((q) => q.length));
  const R = Math.max(...responses.map((r) => r.length));
  const ids: number[][] = [], attn: number[][] = [], resp: number[][] = [], mask: Rows = [];
  for (let b = 0; b < B; b++) {
    const q = queries[b], r = responses[b];
    const qp = Tq - q.length, rp = R - r.length;
    resp.push([...r, ...new Array(rp).fill(pad)]);
    mask.push([...new Array(r.length).fill(1), ...new Array(rp).fill(0)]);
    ids.push([...new Array(qp).fill(pad), ...q, ...resp[b]]);
    attn.push([...new Array(qp).fill(0), ...new Array(q.length).fill(1), ...mask[b]]);
  }
  return { B, Tq, R, ids, attn, pos: positionIdsFromMask(attn), resp, mask };
}

/** Validates TRL's `response_masks`: one row of 0/1 per response, as long as it, with at least one 1. */
export function checkResponseMasks(masks: readonly (readonly number[])[], responses: number[][]): void {
  const fail = (m: string) => {
    throw new Error(`PPOTrainer.step: responseMasks ${m}`);
  };
  if (!Array.isArray(masks) || masks.length !== responses.length) {
    fail(`needs one row per response (${responses.length}), got ${Array.isArray(masks) ? masks.length : typeof masks}`);
  }
  masks.forEach((row, b) => {
    if (!Array.isArray(row) || row.length !== responses[b].length) {
      fail(`row ${b} must have ${responses[b].length} entries (one per response token)`);
    }
    if (!row.every((m) => m === 0 || m === 1)) fail(`row ${b} must hold only 0 and 1`);
    if (!row.includes(1)) fail(`row ${b} masks every token (the score needs a token marked 1)`);
  });
}

/** Inputs of {@linkcode rolloutStats}. */
export interface RolloutStatsInput {
  /** The step's queries. */
  queries: number[][];
  /** The step's responses. */
  responses: number[][];
  /** Scores as given. */
  rawScores: readonly number[];
  /** Scores after scaling/clipping. */
  scores: readonly number[];
  /** β used for the rewards. */
  klCoef: number;
  /** Per-token KLs. */
  kls: Rows;
  /** Per-token non-score rewards. */
  nonScoreRewards: Rows;
  /** Policy log-probabilities. */
  logprobs: Rows;
  /** Response mask. */
  mask: Rows;
}

/**
 * TRL's `record_step_stats` (plus its `log_stats` env/ entries): objective/kl = mean over rows of Σ kl·mask,
 * objective/entropy = mean over rows of Σ −logprob·mask, objective/non_score_reward = mean over rows of
 * Σ non_score_reward·mask, ppo/mean_non_score_reward = masked mean, ppo/mean_scores and ppo/std_scores of the
 * processed scores, env/reward_mean and env/reward_std of the raw scores, tokens/ lengths (stds unbiased).
 */
export function rolloutStats(d: RolloutStatsInput): Record<string, number> {
  const rowSums = (x: Rows, sign = 1) =>
    x.map((r, b) => r.reduce((a, v, t) => a + (d.mask[b][t] ? sign * v * d.mask[b][t] : 0), 0));
  const ql = d.queries.map((q) => q.length), rl = d.responses.map((r) => r.length);
  return {
    "objective/kl": mean(rowSums(d.kls)),
    "objective/kl_coef": d.klCoef,
    "objective/entropy": mean(rowSums(d.logprobs, -1)),
    "objective/non_score_reward": mean(rowSums(d.nonScoreRewards)),
    "ppo/mean_non_score_reward": maskedMean(d.nonScoreRewards, d.mask),
    "ppo/mean_scores": mean(d.scores),
    "ppo/std_scores": std(d.scores),
    "tokens/queries_len_mean": mean(ql),
    "tokens/queries_len_std": std(ql),
    "tokens/responses_len_mean": mean(rl),
    "tokens/responses_len_std": std(rl),
    "env/reward_mean": mean(d.rawScores),
    "env/reward_std": std(d.rawScores),
  };
}
