/**
 * The step statistics PPO derives from the rollout alone (TRL's `record_step_stats` and its `log_stats`
 * env/ and tokens/ entries).
 * @module
 */

import { maskedMean } from "./masked_stats.ts";
import type { Rows } from "./rows.ts";

/** Mean of a list of numbers. */
const mean = (x: readonly number[]) => x.reduce((a, b) => a + b, 0) / x.length;
/** Unbiased (Bessel-corrected) standard deviation of a list of numbers. */
const std = (x: readonly number[]) => {
  const m = mean(x);
  return Math.sqrt(x.reduce((a, b) => a + (b - m) ** 2, 0) / (x.length - 1));
};

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
export function rolloutStats(input: RolloutStatsInput): Record<string, number> {
  const rowSums = (x: Rows, sign = 1) =>
    x.map((r, b) => r.reduce((a, v, t) => a + (input.mask[b][t] ? sign * v * input.mask[b][t] : 0), 0));
  const queryLengths = input.queries.map((q) => q.length);
  const responseLengths = input.responses.map((r) => r.length);
  return {
    "objective/kl": mean(rowSums(input.kls)),
    "objective/kl_coef": input.klCoef,
    "objective/entropy": mean(rowSums(input.logprobs, -1)),
    "objective/non_score_reward": mean(rowSums(input.nonScoreRewards)),
    "ppo/mean_non_score_reward": maskedMean(input.nonScoreRewards, input.mask),
    "ppo/mean_scores": mean(input.scores),
    "ppo/std_scores": std(input.scores),
    "tokens/queries_len_mean": mean(queryLengths),
    "tokens/queries_len_std": std(queryLengths),
    "tokens/responses_len_mean": mean(responseLengths),
    "tokens/responses_len_std": std(responseLengths),
    "env/reward_mean": mean(input.rawScores),
    "env/reward_std": std(input.rawScores),
  };
}
