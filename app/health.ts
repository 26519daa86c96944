/**
 * Run health: whether a PPO step's statistics show a diverged or collapsed policy, and whether the state a
 * checkpoint would hold (policy weights, value head, optimiser moments) is all finite — counted on the GPU with one
 * readback, before anything is written, so a checkpoint never holds Inf or NaN.
 * @module
 */

import { countNonFinite } from "../engine/ops/finite.ts";
import type { Tensor } from "../engine/tensor.ts";
import type { AdamW } from "../engine/optim.ts";
import type { CausalLMWithValueHead } from "../models/value_head.ts";

/** |ppo/loss/total| above this is an exploded loss, whatever else the statistics say. */
export const EXPLODED_LOSS = 1e10;
/** |ppo/loss/total| above this with a policy entropy below {@linkcode COLLAPSED_ENTROPY} is a collapsed policy. */
export const COLLAPSE_LOSS = 1e3;
/** Mean per-token policy entropy (nats) below which a policy with an exploding loss counts as collapsed. */
export const COLLAPSED_ENTROPY = 1e-3;

/** Statistics a divergence shows in first (each is checked for finiteness). */
const WATCHED = ["ppo/loss/total", "ppo/loss/policy", "ppo/loss/value", "objective/kl", "ppo/policy/approxkl"];

/**
 * Why one step's statistics say training has gone wrong, or null: a non-finite statistic, an exploded total loss
 * (> {@linkcode EXPLODED_LOSS}), or a collapsed policy (entropy < {@linkcode COLLAPSED_ENTROPY} nats with a loss over
 * {@linkcode COLLAPSE_LOSS}: sampling has become deterministic while the objective runs away).
 */
export function divergence(stats: Record<string, number>): string | null {
  for (const key of WATCHED) {
    if (key in stats && !Number.isFinite(stats[key])) return `${key} is ${stats[key]}`;
  }
  const bad = Object.entries(stats).find(([, v]) => typeof v === "number" && !Number.isFinite(v));
  if (bad) return `${bad[0]} is ${bad[1]}`;
  const loss = Math.abs(stats["ppo/loss/total"] ?? 0), entropy = stats["ppo/policy/entropy"];
  if (loss > EXPLODED_LOSS) return `ppo/loss/total is ${stats["ppo/loss/total"].toExponential(2)} (exploded)`;
  if (loss > COLLAPSE_LOSS && entropy !== undefined && entropy < COLLAPSED_ENTROPY) {
    return `the policy collapsed: entropy ${entropy.toExponential(2)} nats with ppo/loss/total ${
      stats["ppo/loss/total"].toExponential(2)
    }`;
  }
  return null;
}

/**
 * The tensors a checkpoint saves that hold non-finite values, as "what: count" lines (empty when all are finite):
 * every policy weight and value-head weight by name, and every optimiser buffer by parameter and buffer name. One
 * GPU pass and one readback.
 */
export async function nonFiniteState(policy: CausalLMWithValueHead, optimizer: AdamW): Promise<string[]> {
  const named: [string, Tensor][] = [
    ...[...policy.model.params].map(([n, t]): [string, Tensor] => [`policy weight ${n}`, t]),
    ...[...(policy.model.lora?.params ?? [])].map(([n, t]): [string, Tensor] => [`policy weight ${n}`, t]),
    ...[...policy.vHead].map(([n, t]): [string, Tensor] => [`value head ${n}`, t]),
  ];
  const nameOf = new Map<Tensor, string>(named.map(([n, t]) => [t, n.replace(/^(policy weight|value head) /, "")]));
  const params = optimizer.params;
  for (const s of optimizer.stateTensors()) {
    named.push([`optimizer ${s.name} of ${nameOf.get(params[s.param]) ?? `parameter ${s.param}`}`, s.tensor]);
  }
  const counts = await countNonFinite(named.map(([, t]) => t));
  return named.flatMap(([n, t], i) => counts[i] > 0 ? [`${n}: ${counts[i]} of ${t.size} values non-finite`] : []);
}

/**
 * The warning for a negative `objective/kl` (TRL warns likewise), or null when it is ≥ 0. The estimate is a mean of
 * log π(y)/π_ref(y) over the policy's own samples, so a negative value means the samples are not drawn from the
 * distribution whose log-probabilities PPO scores: sampling settings are the usual cause.
 */
export function negativeKlWarning(stats: Record<string, number>, step: number): string | null {
  const kl = stats["objective/kl"];
  if (!(kl < 0)) return null;
  return `warning: objective/kl is negative at step ${step} (${kl.toPrecision(3)}): the replies are rarer under the ` +
    "policy than under the reference, which PPO's KL estimate does not expect — check the sampling settings " +
    "(top-k/top-p, temperature, suppressed tokens, --min-new-tokens) or lower the learning rate; this may precede a " +
    "failed run (said once per run)";
}
