/**
 * The classic TRL `PPOTrainer` (generate → score → step) on the engine: one rollout pass of policy and reference
 * (one readback), rewards and GAE on the CPU, then `ppo_epochs` of shuffled mini-batch updates with the fused
 * PPO loss, gradient accumulation, optional clipping, AdamW; training stats are read back once per step.
 * @module
 */

import { empty, keep, readAll, runtime, type Tensor } from "../engine/tensor.ts";
import { AdamW, type AdamWHyper, type OptimizerStateDict } from "../engine/optim.ts";
import { GPT2LMHeadModel } from "../models/gpt2.ts";
import type { CausalLMWithValueHead } from "../models/value_head.ts";
import { baseModelView } from "../models/lora_peft.ts";
import { trainableParameters } from "../models/lora_policy.ts";
import { generate, type GenerateOptions, type GenerateOutput } from "../models/generate.ts";
import { type PPOConfig, ppoConfig, type PPOConfigInput } from "./config.ts";
import { computeAdvantages } from "./advantages.ts";
import { checkResponseMasks, checkStepInputs, layoutBatch, type PaddedBatch } from "./batch.ts";
import {
  AdaptiveKLController,
  FixedKLController,
  type KLController,
  klControllerFromJSON,
  type KLControllerState,
} from "./kl_control.ts";
import { RunningMoments, type RunningMomentsState } from "./moments.ts";
import { computeRewards, processScores } from "./rewards.ts";
import type { Rows } from "./rows.ts";
import { rolloutStats, type RolloutStatsInput } from "./stats.ts";
import { SeededRng } from "../engine/random.ts";
import { averagePPOStats, ppoStatsRecord } from "./loss.ts";
import { optimizeEpochs } from "./optimize.ts";
import { type RolloutForward, rolloutForward } from "./rollout.ts";

/** What the trainer needs from a tokenizer: its padding and end-of-sequence ids. */
export interface TokenizerLike {
  /** Padding id (falls back to EOS, then the model config's ids, then 0). */
  readonly padTokenId?: number;
  /** End-of-sequence id. */
  readonly eosTokenId?: number | null;
}

/** Stats of one `step()`, keyed by TRL's names (all numbers). */
export type PPOStats = Record<string, number>;

/** Checkpointable trainer state (the policy's weights are saved separately with `savePretrained`). */
export interface PPOTrainerState {
  /** AdamW moments and hyper-parameters. */
  optimizer: OptimizerStateDict<AdamWHyper>;
  /** KL controller. */
  klCtl: KLControllerState;
  /** Running score moments. */
  runningMoments: RunningMomentsState;
  /** Steps taken. */
  stepCount: number;
  /** The shuffling RNG's state. */
  rng: number;
  /** Calls of `generate()` (they derive sampling seeds). */
  generateCalls: number;
  /** The policy's dropout seed counter. */
  dropoutSeed: number;
}

/** Host copies of one step's rollout, `[batch_size, R]` rows (R = the longest response). */
export interface PPORollout {
  /** Policy log-probabilities of the response tokens (temperature-scaled). */
  logprobs: Rows;
  /** Reference log-probabilities. */
  refLogprobs: Rows;
  /** Values·mask. */
  values: Rows;
  /** Per-token KL penalties. */
  kls: Rows;
  /** −β·kl per token. */
  nonScoreRewards: Rows;
  /** Per-token rewards. */
  rewards: Rows;
  /** Whitened advantages. */
  advantages: Rows;
  /** Returns. */
  returns: Rows;
  /** 1 for response tokens. */
  mask: Rows;
  /** Scores after scaling and clipping. */
  scores: number[];
}

/** Options of {@linkcode PPOTrainer.generate}: generate()'s options with TRL's sampling defaults. */
export type PPOGenerateOptions = Partial<GenerateOptions> & { maxNewTokens: number };

const now = () => performance.now() / 1000;

/**
 * TRL's classic `PPOTrainer` for a GPT-2 policy with a value head. `step(queries, responses, scores)`:
 * 1. scores are scaled/normalised/clipped as configured; queries are left-padded, responses right-padded, and
 *    response token t is scored from column Tq − 1 + t (log-prob and value);
 * 2. rollout: policy and reference in eval mode without gradients, in chunks of `mini_batch_size` (TRL's
 *    `batched_forward_pass`), logits divided by `temperature`; one readback;
 * 3. rewards (−β·kl per token, score at the last token) and GAE on the CPU;
 * 4. `ppo_epochs` × a seeded permutation × backward batches of mini_batch_size × gradient_accumulation_steps:
 *    forward in eval mode (dropout off, as TRL; `train_dropout` turns it on), fused PPO loss divided by the
 *    accumulation steps, backward; then optional gradient clipping, an AdamW step (plain Adam at the default
 *    weight_decay 0, like TRL's default optimiser) and zeroGrad. With `early_stopping`, the epochs stop when
 *    the last mini-batch of an epoch has policykl > 1.5·target_kl (TRL's epoch-level check);
 * 5. stats are read back once, and the KL controller is updated with objective/kl and batch_size.
 *
 * Stats are numbers only: TRL's array-valued entries (kl_dist, logprobs, ratio, advantages, token length
 * distributions) are left out — {@linkcode PPOTrainer.rollout} and {@linkcode PPOTrainer.minibatchStats} hold
 * that data. Extra entries: objective/non_score_reward, ppo/policy/ratio_mean, ppo/skipped_minibatches,
 * ppo/minibatches, ppo/early_stopped.
 */
export class PPOTrainer {
  /** The validated configuration. */
  readonly config: PPOConfig;
  /** The policy (trained). */
  readonly policy: CausalLMWithValueHead;
  /** The frozen reference model (for a LoRA policy by default its base weights without the adapter: no copy). */
  readonly ref: GPT2LMHeadModel;
  /** AdamW over the policy's parameters (lr, betas, eps and weight decay from the config). */
  readonly optimizer: AdamW;
  /** KL coefficient controller. */
  klCtl: KLController;
  /** Running moments of the scores (use_score_scaling). */
  runningMoments: RunningMoments = new RunningMoments();
  /** Steps taken. */
  stepCount = 0;
  /** The shuffling RNG. */
  readonly rng: SeededRng;
  /** Calls of {@linkcode generate} so far. */
  generateCalls = 0;
  /** Padding id used for queries and responses. */
  readonly padTokenId: number;
  /** End-of-sequence id (null when unknown). */
  readonly eosTokenId: number | null;
  /** The stats of every mini-batch of the last step, in order (same names as the `ppo/…` stats). */
  minibatchStats: PPOStats[] = [];
  /** The last step's rollout (host arrays), for inspection. */
  rollout: PPORollout | null = null;
  #ownsRef: boolean;

  /**
   * Validates the config, makes the reference copy when `ref` is null (for a policy with a LoRA adapter, a view of
   * its base weights without the adapter instead, as TRL with peft: no second copy) and creates the AdamW optimiser
   * over the policy's trainable (flat) parameters (with LoRA: the adapter's and the value head's).
   * @param config a PPO config (validated with {@linkcode ppoConfig})
   * @param policy the policy with its value head
   * @param ref the reference model, or null for a frozen GPU copy of the policy's current weights (LoRA: its base)
   * @param tokenizer supplies the pad and EOS ids (null: the model config's)
   */
  constructor(
    config: PPOConfig | PPOConfigInput,
    policy: CausalLMWithValueHead,
    ref: GPT2LMHeadModel | null,
    tokenizer: TokenizerLike | null,
  ) {
    const { backward_batch_size: _derived, ...rest } = config as PPOConfigInput;
    this.config = ppoConfig(rest);
    const c = this.config;
    this.policy = policy;
    if (ref === policy.model) throw new Error("PPOTrainer: ref is the policy's own model; pass null for a frozen copy");
    this.#ownsRef = ref === null && !policy.model.lora;
    this.ref = ref ?? (policy.model.lora ? baseModelView(policy.model) : copyModel(policy.model));
    const policyConfig = policy.model.config, refConfig = this.ref.config;
    if (policyConfig.vocab_size !== refConfig.vocab_size) {
      throw new Error(
        `PPOTrainer: policy vocab_size ${policyConfig.vocab_size} ≠ reference vocab_size ${refConfig.vocab_size}`,
      );
    }
    ({ eosTokenId: this.eosTokenId, padTokenId: this.padTokenId } = specialTokenIds(tokenizer, policyConfig));
    this.optimizer = new AdamW(trainableParameters(policy), {
      lr: c.learning_rate,
      betas: [c.adam_beta1, c.adam_beta2],
      eps: c.adam_epsilon,
      weightDecay: c.weight_decay,
    });
    this.klCtl = c.adap_kl_ctrl
      ? new AdaptiveKLController(c.init_kl_coef, c.target, c.horizon)
      : new FixedKLController(c.init_kl_coef);
    this.rng = new SeededRng(c.seed);
  }

  /** Releases the reference copy (when the trainer made it) and the optimiser state. */
  dispose(): void {
    if (this.#ownsRef) { for (const t of this.ref.parameters()) t.dispose(); }
    this.optimizer.dispose();
  }

  /**
   * Samples responses with the policy's LM in eval mode and TRL's recommended settings (doSample true,
   * topK 0, topP 1, temperature = config.temperature, pad/EOS from the tokenizer); `options` override them.
   * Without a seed, one is derived from the config seed and a call counter (saved in the state).
   */
  async generate(queries: number[][], options: PPOGenerateOptions): Promise<GenerateOutput> {
    return await this.#sample(this.policy.model, queries, options, true);
  }

  /**
   * Samples from the frozen reference model with the same settings as {@linkcode generate} (TRL's `ref_response`),
   * e.g. to show its replies beside the policy's; does not advance the call counter, so training is unaffected.
   */
  async generateReference(queries: number[][], options: PPOGenerateOptions): Promise<GenerateOutput> {
    return await this.#sample(this.ref, queries, options, false);
  }

  async #sample(
    model: GPT2LMHeadModel,
    queries: number[][],
    options: PPOGenerateOptions,
    countCall: boolean,
  ): Promise<GenerateOutput> {
    const settings: GenerateOptions = {
      doSample: true,
      topK: 0,
      topP: 1,
      temperature: this.config.temperature,
      padTokenId: this.padTokenId,
      ...(this.eosTokenId !== null ? { eosTokenId: this.eosTokenId } : {}),
      ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)),
    } as GenerateOptions;
    if (settings.doSample && settings.temperature !== this.config.temperature) {
      throw new Error(
        `PPOTrainer.generate: temperature ${settings.temperature} differs from config.temperature ` +
          `${this.config.temperature}; the log-probabilities must use the sampling temperature`,
      );
    }
    if (options.seed === undefined) settings.seed = (Math.imul(this.config.seed, 1000003) + this.generateCalls) >>> 0;
    if (countCall) this.generateCalls++;
    model.eval();
    return await generate(model, queries, settings);
  }

  /** Snapshot of everything needed to resume (besides the policy weights). */
  async stateDict(): Promise<PPOTrainerState> {
    return {
      optimizer: await this.optimizer.stateDict(),
      klCtl: this.klCtl.toJSON(),
      runningMoments: this.runningMoments.toJSON(),
      stepCount: this.stepCount,
      rng: this.rng.state,
      generateCalls: this.generateCalls,
      dropoutSeed: this.policy.model.dropoutSeed,
    };
  }

  /** Restores a {@linkcode stateDict} snapshot. */
  loadStateDict(s: PPOTrainerState): void {
    if (!s || typeof s !== "object") throw new Error("PPOTrainer.loadStateDict: expected a state object");
    for (const k of ["stepCount", "rng", "generateCalls", "dropoutSeed"] as const) {
      if (!Number.isInteger(s[k])) throw new Error(`PPOTrainer.loadStateDict: "${k}" must be an integer`);
    }
    const klCtl = klControllerFromJSON(s.klCtl);
    const runningMoments = RunningMoments.fromJSON(s.runningMoments);
    this.optimizer.loadStateDict(s.optimizer);
    this.klCtl = klCtl;
    this.runningMoments = runningMoments;
    this.stepCount = s.stepCount;
    this.rng.state = s.rng >>> 0;
    this.generateCalls = s.generateCalls;
    this.policy.model.dropoutSeed = s.dropoutSeed;
  }

  /**
   * One PPO step on a batch of `batch_size` (query, response, score) triples, as TRL's `PPOTrainer.step`.
   * @param queries prompt token ids per sample (non-empty)
   * @param responses response token ids per sample (non-empty)
   * @param scores one finite reward per sample
   * @param responseMasks optional 0/1 per response token (TRL's `response_masks`): tokens marked 0 (e.g. text a
   *   tool inserted) are kept in the context but left out of the KL penalty, the advantages and the losses; the
   *   score goes to the last token marked 1, so every row needs one
   * @returns the step's stats under TRL's names
   */
  async step(
    queries: number[][],
    responses: number[][],
    scores: number[],
    responseMasks?: readonly (readonly number[])[],
  ): Promise<PPOStats> {
    const config = this.config;
    const startedAt = now();
    const { batch, processedScores } = this.#prepareBatch(queries, responses, scores, responseMasks);
    const { rollout, klCoef, timings } = await this.#rollout(batch, processedScores);
    this.rollout = rollout;

    let t = now();
    const { stats: gpuStats, earlyStopped } = await optimizeEpochs(this, batch, rollout);
    const optimizeSeconds = now() - t;

    t = now();
    const stats = await this.#collectStats(gpuStats, earlyStopped, {
      queries,
      responses,
      rawScores: scores,
      scores: processedScores,
      klCoef,
      kls: rollout.kls,
      nonScoreRewards: rollout.nonScoreRewards,
      logprobs: rollout.logprobs,
      mask: batch.mask,
    });
    const statsSeconds = now() - t;

    this.klCtl.update(stats["objective/kl"], config.batch_size);
    this.stepCount++;
    stats["time/ppo/forward_pass"] = timings.forward;
    stats["time/ppo/compute_rewards"] = timings.rewards;
    stats["time/ppo/compute_advantages"] = timings.advantages;
    stats["time/ppo/optimize_step"] = optimizeSeconds;
    stats["time/ppo/calc_stats"] = statsSeconds;
    stats["time/ppo/total"] = now() - startedAt;
    return stats;
  }

  /** Checks the inputs, processes the scores and lays out the batch (response masks applied). */
  #prepareBatch(
    queries: number[][],
    responses: number[][],
    scores: number[],
    responseMasks?: readonly (readonly number[])[],
  ): { batch: PaddedBatch; processedScores: number[] } {
    const config = this.config;
    const model = this.policy.model.config;
    checkStepInputs(queries, responses, scores, {
      batchSize: config.batch_size,
      vocabSize: model.vocab_size,
      nPositions: Math.min(model.n_positions, this.ref.config.n_positions),
    });
    if (responseMasks !== undefined) checkResponseMasks(responseMasks, responses);
    const processedScores = processScores(scores, this.runningMoments, {
      scaling: config.use_score_scaling,
      norm: config.use_score_norm,
      clip: config.score_clip,
    });
    const batch = layoutBatch(queries, responses, this.padTokenId);
    responseMasks?.forEach((row, b) => row.forEach((m, t) => batch.mask[b][t] *= m));

    return { batch, processedScores };
  }

  /** The rollout pass, then rewards (with the current β) and advantages on the CPU, each timed. */
  async #rollout(batch: PaddedBatch, scores: number[]) {
    const config = this.config;
    let t = now();
    const forward: RolloutForward = await rolloutForward(this.policy, this.ref, batch, {
      chunkSize: config.mini_batch_size,
      temperature: config.temperature,
      fullKl: config.kl_penalty === "full",
    });
    const forwardSeconds = now() - t;
    t = now();
    const klCoef = this.klCtl.value;
    const { logprobs, refLogprobs } = forward;
    const rewards = computeRewards(
      scores,
      logprobs,
      refLogprobs,
      batch.mask,
      klCoef,
      config.kl_penalty,
      forward.kls ?? undefined,
    );
    const rewardsSeconds = now() - t;
    t = now();
    const { gamma, lam, whiten_rewards } = config;
    const advantages = computeAdvantages(forward.values, rewards.rewards, batch.mask, gamma, lam, whiten_rewards);
    const advantagesSeconds = now() - t;
    const rollout: PPORollout = { logprobs, refLogprobs, ...rewards, ...advantages, mask: batch.mask, scores };
    const timings = { forward: forwardSeconds, rewards: rewardsSeconds, advantages: advantagesSeconds };
    return { rollout, klCoef, timings };
  }

  /** Reads the mini-batch stats back (disposing them) and returns the step's stats, TRL's names. */
  async #collectStats(gpuStats: Tensor[], earlyStopped: boolean, input: RolloutStatsInput): Promise<PPOStats> {
    let minibatchRows: Float32Array[] = [];
    try {
      minibatchRows = (await readAll(gpuStats)) as Float32Array[];
    } finally {
      for (const x of gpuStats) x.dispose();
    }
    this.minibatchStats = minibatchRows.map(ppoStatsRecord);
    return {
      ...rolloutStats(input),
      ...averagePPOStats(minibatchRows),
      "ppo/early_stopped": earlyStopped ? 1 : 0,
      "ppo/learning_rate": this.optimizer.lr,
    };
  }
}

/**
 * The EOS id (an explicit null from the tokenizer means "no EOS"; undefined falls back to the model config) and the
 * padding id (the tokenizer's, else EOS, else the config's, else 0), checked against the vocabulary.
 */
function specialTokenIds(
  tokenizer: TokenizerLike | null,
  config: GPT2LMHeadModel["config"],
): { eosTokenId: number | null; padTokenId: number } {
  const eosTokenId = tokenizer?.eosTokenId !== undefined ? tokenizer.eosTokenId : config.eos_token_id ?? null;
  const padTokenId = tokenizer?.padTokenId ?? eosTokenId ?? config.pad_token_id ?? 0;
  if (!Number.isInteger(padTokenId) || padTokenId < 0 || padTokenId >= config.vocab_size) {
    throw new Error(`PPOTrainer: pad token id ${padTokenId} is outside the vocabulary (${config.vocab_size})`);
  }
  return { eosTokenId, padTokenId };
}

/** A frozen copy of a model's parameters (GPU-side copies, no gradients). */
function copyModel(model: GPT2LMHeadModel): GPT2LMHeadModel {
  const rt = runtime();
  const params = new Map<string, Tensor>();
  for (const [name, p] of model.params) {
    const t = keep(empty(p.shape));
    if (p.size > 0) rt.copy(p.storage, 0, t.storage, 0, p.size * 4);
    t.name = name;
    params.set(name, t);
  }
  return new GPT2LMHeadModel(model.config, params).eval();
}
