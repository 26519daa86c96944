/**
 * From scores to per-token rewards, as TRL's `PPOTrainer` computes them: score preprocessing (running
 * scaling/normalisation, clipping), the per-token KL penalty, and the rewards −β·kl plus the score at the
 * last response token.
 * @module
 */

import type { KLPenaltyKind } from "./config.ts";
import type { RunningMoments } from "./moments.ts";
import { assertSameShape, type Rows } from "./rows.ts";

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
  assertSameShape("klPenalty", logp, refLogp, "logp", "refLogp");
  const penaltyOf = kind === "kl"
    ? (d: number) => d
    : kind === "abs"
    ? (d: number) => Math.abs(d)
    : kind === "mse"
    ? (d: number) => 0.5 * d * d
    : null;
  if (!penaltyOf) {
    throw new Error(
      kind === "full"
        ? 'klPenalty: "full" needs the full distributions; compute it with fullKl() on the GPU'
        : `klPenalty: unknown kind ${JSON.stringify(kind)}`,
    );
  }
  return logp.map((row, i) => row.map((lp, t) => penaltyOf(lp - refLogp[i][t])));
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
  assertSameShape("computeRewards", logprobs, masks, "logprobs", "masks");
  if (scores.length !== logprobs.length) {
    throw new Error(`computeRewards: ${scores.length} scores for ${logprobs.length} rows`);
  }
  let kls: Rows;
  if (kind === "full") {
    if (!fullKls) throw new Error('computeRewards: kind "full" needs the per-token fullKls');
    assertSameShape("computeRewards", fullKls, masks, "fullKls", "masks");
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

/** float32's machine epsilon (TRL adds torch.finfo(float32).eps to the running std). */
const F32_EPS = 1.1920928955078125e-7;

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
export function processScores(scores: readonly number[], moments: RunningMoments, options: ScoreOptions): number[] {
  let processed = [...scores];
  if (options.scaling) {
    moments.update(processed);
    const factor = moments.std + F32_EPS, runningMean = moments.mean;
    processed = processed.map((x) => options.norm ? (x - runningMean) / factor : x / factor);
  }
  const clip = options.clip;
  if (clip !== null) processed = processed.map((x) => Math.min(clip, Math.max(-clip, x)));
  return processed;
}
