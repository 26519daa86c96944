/**
 * TRL's `compute_advantages`: generalised advantage estimation (GAE) over the response tokens, the returns
 * the value loss fits, and the whitened advantages the policy loss uses.
 * @module
 */

import { maskedWhiten } from "./masked_stats.ts";
import { assertSameShape, type Rows } from "./rows.ts";

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
  assertSameShape("computeAdvantages", values, mask, "values", "mask");
  assertSameShape("computeAdvantages", rewards, mask, "rewards", "mask");
  // x·mask, except that masked entries become exactly 0 even when not finite.
  const applyMask = (x: Rows) => x.map((row, i) => row.map((e, t) => mask[i][t] ? e * mask[i][t] : 0));
  const maskedValues = applyMask(values);
  let maskedRewards = applyMask(rewards);
  if (whitenRewards) maskedRewards = applyMask(maskedWhiten(maskedRewards, mask, false));
  const gae = maskedValues.map((rowValues, i) => {
    const n = rowValues.length;
    const out = new Array<number>(n);
    let last = 0;
    for (let t = n - 1; t >= 0; t--) {
      const nextValue = t < n - 1 ? rowValues[t + 1] : 0;
      const delta = maskedRewards[i][t] + gamma * nextValue - rowValues[t];
      last = delta + gamma * lam * last;
      out[t] = last;
    }
    return out;
  });
  const returns = gae.map((row, i) => row.map((a, t) => a + maskedValues[i][t]));
  return { values: maskedValues, advantages: maskedWhiten(gae, mask), returns };
}
