/**
 * The optimisation phase of a PPO step: `ppo_epochs` of seeded permutations of the batch, cut into backward
 * batches of mini-batches; each mini-batch's fused PPO loss (divided by the accumulation steps) is
 * back-propagated, and each backward batch ends with optional gradient clipping and an AdamW step.
 * @module
 */

import { keep, noGrad, readAll, type Tensor, tensor, tidy } from "../engine/tensor.ts";
import { backward } from "../engine/autograd.ts";
import { mulScalar } from "../engine/ops/elementwise.ts";
import { entropyFromLogits, logProbsOf } from "../engine/ops/loss.ts";
import { type AdamW, clipGradNorm } from "../engine/optim.ts";
import type { SeededRng } from "../engine/random.ts";
import type { CausalLMWithValueHead } from "../models/value_head.ts";
import { trainableParameters } from "../models/lora_policy.ts";
import type { PaddedBatch } from "./batch.ts";
import type { PPOConfig } from "./config.ts";
import { PPO_STATS, ppoLoss } from "./loss.ts";
import { batchInputs, responseLogits, responseValues } from "./rollout.ts";
import type { Rows } from "./rows.ts";

/** What the optimisation works on: the trainer's config, policy, optimiser and shuffling RNG. */
export interface PPOOptimization {
  /** The validated configuration. */
  config: PPOConfig;
  /** The policy (trained). */
  policy: CausalLMWithValueHead;
  /** Its optimiser. */
  optimizer: AdamW;
  /** The shuffling RNG (advanced once per epoch). */
  rng: SeededRng;
}

/** The rollout rows the loss needs (old log-probabilities and values, advantages, returns). */
export interface PPOTargets {
  /** Policy log-probabilities of the rollout. */
  logprobs: Rows;
  /** Values·mask of the rollout. */
  values: Rows;
  /** Whitened advantages. */
  advantages: Rows;
  /** Returns. */
  returns: Rows;
}

/**
 * ppo_epochs × shuffled backward batches × mini-batches (early stopping on the last mini-batch's policy KL of an
 * epoch, as TRL); returns the per-mini-batch GPU stats, which the caller reads back and disposes.
 */
export async function optimizeEpochs(
  run: PPOOptimization,
  batch: PaddedBatch,
  targets: PPOTargets,
): Promise<{ stats: Tensor[]; earlyStopped: boolean }> {
  const config = run.config;
  const params = trainableParameters(run.policy);
  const stats: Tensor[] = [];
  let earlyStopped = false;
  run.optimizer.zeroGrad();
  try {
    for (let epoch = 0; epoch < config.ppo_epochs && !earlyStopped; epoch++) {
      const permutation = run.rng.permutation(batch.B);
      for (let start = 0; start < batch.B; start += config.backward_batch_size) {
        const end = start + config.backward_batch_size;
        for (let mini = start; mini < end; mini += config.mini_batch_size) {
          const rows = permutation.slice(mini, mini + config.mini_batch_size);
          stats.push(keep(tidy(() => minibatchBackward(run, batch, targets, rows))));
        }
        tidy(() => {
          if (config.max_grad_norm !== null) clipGradNorm(params, config.max_grad_norm).dispose();
          run.optimizer.step();
          run.optimizer.zeroGrad();
        });
      }
      if (config.early_stopping) {
        // TRL checks at the end of each epoch, with the last mini-batch's policy KL.
        const [last] = await readAll([stats[stats.length - 1]]);
        if (last[PPO_STATS.policykl] > 1.5 * config.target_kl) earlyStopped = true;
      }
    }
  } catch (e) {
    for (const t of stats) t.dispose();
    run.optimizer.zeroGrad();
    throw e;
  } finally {
    run.policy.eval();
  }
  return { stats, earlyStopped };
}

/** One mini-batch: forward (train mode only with train_dropout), fused PPO loss, backward; returns its stats. */
function minibatchBackward(run: PPOOptimization, batch: PaddedBatch, targets: PPOTargets, rows: number[]): Tensor {
  const { config, policy } = run;
  const { Tq, R } = batch;
  const upload = (x: Rows) => tensor(rows.flatMap((i) => x[i]), [rows.length, R]);
  policy.train(config.train_dropout);
  const { respIds, ...inputs } = batchInputs(batch, rows);
  const out = policy.forward({ ...inputs, skipLogits: true });
  const logits = responseLogits(policy.model, out.hidden!, Tq, R, config.temperature);
  const logprobs = logProbsOf(logits, respIds);
  const vpreds = responseValues(out.values, Tq, R);
  const entropy = noGrad(() => entropyFromLogits(logits));
  const result = ppoLoss({ logprobs, vpreds }, {
    oldLogprobs: upload(targets.logprobs),
    oldValues: upload(targets.values),
    advantages: upload(targets.advantages),
    returns: upload(targets.returns),
    mask: upload(batch.mask),
    entropy,
  }, {
    cliprange: config.cliprange,
    cliprangeValue: config.cliprange_value,
    vfCoef: config.vf_coef,
    ratioThreshold: config.ratio_threshold,
  });
  const accumulationSteps = config.gradient_accumulation_steps;
  backward(accumulationSteps > 1 ? mulScalar(result.loss, 1 / accumulationSteps) : result.loss);
  return result.stats;
}
