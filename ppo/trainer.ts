/**
 * The classic TRL `PPOTrainer` (generate → score → step) on the engine: one rollout pass of policy and reference
 * (one readback), rewards and GAE on the CPU, then `ppo_epochs` of shuffled mini-batch updates with the fused
 * PPO loss, gradient accumulation, optional clipping, AdamW; training stats are read back once per step.
 * @module
 */

import { empty, keep, noGrad, readAll, runtime, type Tensor, tensor, tidy } from "../engine/tensor.ts";
import { backward } from "../engine/autograd.ts";
import { mulScalar } from "../engine/ops/elementwise.ts";
import { matmul } from "../engine/ops/matmul.ts";
import { slice } from "../engine/ops/shape.ts";
import { entropyFromLogits, logProbsOf } from "../engine/ops/loss.ts";
import { AdamW, type AdamWHyper, clipGradNorm, type OptimizerStateDict } from "../engine/optim.ts";
import { GPT2LMHeadModel } from "../models/gpt2.ts";
import type { CausalLMWithValueHead } from "../models/value_head.ts";
import { generate, type GenerateOptions, type GenerateOutput } from "../models/generate.ts";
import { type PPOConfig, ppoConfig, type PPOConfigInput } from "./config.ts";
import { computeAdvantages } from "./advantages.ts";
import { checkResponseMasks, layoutBatch, type PaddedBatch } from "./batch.ts";
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
import { rolloutStats } from "./stats.ts";
import { SeededRng } from "../engine/random.ts";
import { averagePPOStats, fullKl, PPO_STATS, ppoLoss, ppoStatsRecord } from "./loss.ts";

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

const toRows = (flat: ArrayLike<number>, B: number, R: number): Rows =>
  Array.from({ length: B }, (_, b) => Array.from({ length: R }, (_, t) => flat[b * R + t]));

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
  /** The frozen reference model. */
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
   * Validates the config, makes the reference copy when `ref` is null and creates the AdamW optimiser over the
   * policy's (flat) parameters.
   * @param config a PPO config (validated with {@linkcode ppoConfig})
   * @param policy the policy with its value head
   * @param ref the reference model, or null for a frozen GPU copy of the policy's current weights
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
    this.#ownsRef = ref === null;
    this.ref = ref ?? copyModel(policy.model);
    const pc = policy.model.config, rc = this.ref.config;
    if (pc.vocab_size !== rc.vocab_size) {
      throw new Error(`PPOTrainer: policy vocab_size ${pc.vocab_size} ≠ reference vocab_size ${rc.vocab_size}`);
    }
    // An explicit null means "no EOS"; undefined falls back to the model config.
    const eos = tokenizer?.eosTokenId !== undefined ? tokenizer.eosTokenId : pc.eos_token_id ?? null;
    this.eosTokenId = eos;
    this.padTokenId = tokenizer?.padTokenId ?? eos ?? pc.pad_token_id ?? 0;
    if (!Number.isInteger(this.padTokenId) || this.padTokenId < 0 || this.padTokenId >= pc.vocab_size) {
      throw new Error(`PPOTrainer: pad token id ${this.padTokenId} is outside the vocabulary (${pc.vocab_size})`);
    }
    this.optimizer = new AdamW(policy.parameters(), {
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
    count: boolean,
  ): Promise<GenerateOutput> {
    const o: GenerateOptions = {
      doSample: true,
      topK: 0,
      topP: 1,
      temperature: this.config.temperature,
      padTokenId: this.padTokenId,
      ...(this.eosTokenId !== null ? { eosTokenId: this.eosTokenId } : {}),
      ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)),
    } as GenerateOptions;
    if (o.doSample && o.temperature !== this.config.temperature) {
      throw new Error(
        `PPOTrainer.generate: temperature ${o.temperature} differs from config.temperature ` +
          `${this.config.temperature}; the log-probabilities must use the sampling temperature`,
      );
    }
    if (options.seed === undefined) o.seed = (Math.imul(this.config.seed, 1000003) + this.generateCalls) >>> 0;
    if (count) this.generateCalls++;
    model.eval();
    return await generate(model, queries, o);
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
    const kl = klControllerFromJSON(s.klCtl);
    const rm = RunningMoments.fromJSON(s.runningMoments);
    this.optimizer.loadStateDict(s.optimizer);
    this.klCtl = kl;
    this.runningMoments = rm;
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
    const c = this.config;
    const t0 = now();
    this.#checkInputs(queries, responses, scores);
    if (responseMasks !== undefined) checkResponseMasks(responseMasks, responses);
    const sc = processScores(scores, this.runningMoments, {
      scaling: c.use_score_scaling,
      norm: c.use_score_norm,
      clip: c.score_clip,
    });
    const batch = layoutBatch(queries, responses, this.padTokenId);
    const { mask } = batch;
    responseMasks?.forEach((row, b) => row.forEach((m, t) => mask[b][t] *= m));

    let t = now();
    const roll = await this.#rollout(batch);
    const tForward = now() - t;

    t = now();
    const klCoef = this.klCtl.value;
    const rw = computeRewards(sc, roll.logprobs, roll.refLogprobs, mask, klCoef, c.kl_penalty, roll.kls ?? undefined);
    const tRewards = now() - t;
    t = now();
    const adv = computeAdvantages(roll.values, rw.rewards, mask, c.gamma, c.lam, c.whiten_rewards);
    const tAdv = now() - t;
    const rollout = { logprobs: roll.logprobs, refLogprobs: roll.refLogprobs, ...rw, ...adv, mask, scores: sc };
    this.rollout = rollout;

    t = now();
    const { stats: gpuStats, earlyStopped } = await this.#optimize(batch, rollout);
    const tOpt = now() - t;

    t = now();
    let mbRows: Float32Array[] = [];
    try {
      mbRows = (await readAll(gpuStats)) as Float32Array[];
    } finally {
      for (const x of gpuStats) x.dispose();
    }
    this.minibatchStats = mbRows.map(ppoStatsRecord);
    const stats: PPOStats = {
      ...rolloutStats({
        queries,
        responses,
        rawScores: scores,
        scores: sc,
        klCoef,
        ...rw,
        logprobs: roll.logprobs,
        mask,
      }),
      ...averagePPOStats(mbRows),
      "ppo/early_stopped": earlyStopped ? 1 : 0,
      "ppo/learning_rate": this.optimizer.lr,
    };
    const tStats = now() - t;

    this.klCtl.update(stats["objective/kl"], c.batch_size);
    this.stepCount++;
    stats["time/ppo/forward_pass"] = tForward;
    stats["time/ppo/compute_rewards"] = tRewards;
    stats["time/ppo/compute_advantages"] = tAdv;
    stats["time/ppo/optimize_step"] = tOpt;
    stats["time/ppo/calc_stats"] = tStats;
    stats["time/ppo/total"] = now() - t0;
    return stats;
  }

  #checkInputs(queries: number[][], responses: number[][], scores: number[]): void {
    const bs = this.config.batch_size;
    const V = this.policy.model.config.vocab_size;
    for (const [name, x] of [["queries", queries], ["responses", responses], ["scores", scores]] as const) {
      if (!Array.isArray(x)) throw new Error(`PPOTrainer.step: ${name} must be an array`);
      if (x.length !== bs) {
        throw new Error(
          `PPOTrainer.step: got ${x.length} ${name}, but batch_size is ${bs} (TRL requires exactly that)`,
        );
      }
    }
    for (const [name, rows] of [["query", queries], ["response", responses]] as const) {
      rows.forEach((r, i) => {
        if (!Array.isArray(r) || r.length === 0) throw new Error(`PPOTrainer.step: ${name} ${i} is empty`);
        const bad = r.find((id) => !Number.isInteger(id) || id < 0 || id >= V);
        if (bad !== undefined) {
          throw new Error(`PPOTrainer.step: ${name} ${i} has token id ${bad} outside the vocabulary (${V})`);
        }
      });
    }
    scores.forEach((x, i) => {
      if (typeof x !== "number" || !Number.isFinite(x)) {
        throw new Error(`PPOTrainer.step: score ${i} is not finite (${x})`);
      }
    });
    const T = Math.max(...queries.map((q) => q.length)) + Math.max(...responses.map((r) => r.length));
    const np = Math.min(this.policy.model.config.n_positions, this.ref.config.n_positions);
    if (T > np) throw new Error(`PPOTrainer.step: longest query + longest response = ${T} exceeds n_positions (${np})`);
  }

  /** Logits of the response positions (columns Tq−1 … Tq+R−2) divided by the temperature: [b, R, V]. */
  #responseLogits(model: GPT2LMHeadModel, hidden: Tensor, Tq: number, R: number): Tensor {
    const h = slice(hidden, 1, Tq - 1, Tq - 1 + R);
    return matmul(h, model.lmHead, { transB: true, alpha: 1 / this.config.temperature });
  }

  /** Model inputs for rows `idx` of the batch. */
  #inputs(batch: PaddedBatch, idx: number[]) {
    const T = batch.Tq + batch.R;
    return {
      inputIds: tensor(idx.flatMap((i) => batch.ids[i]), [idx.length, T], "i32"),
      attentionMask: idx.map((i) => batch.attn[i]),
      positionIds: tensor(idx.flatMap((i) => batch.pos[i]), [idx.length, T], "i32"),
      respIds: tensor(idx.flatMap((i) => batch.resp[i]), [idx.length, batch.R], "i32"),
    };
  }

  /** Eval-mode no-grad forward of policy and reference in chunks of mini_batch_size; one readback. */
  async #rollout(batch: PaddedBatch): Promise<{ logprobs: Rows; refLogprobs: Rows; values: Rows; kls: Rows | null }> {
    const { B, Tq, R } = batch;
    const full = this.config.kl_penalty === "full";
    this.policy.eval();
    this.ref.eval();
    const fbs = this.config.mini_batch_size;
    const chunks: Tensor[][] = [];
    try {
      for (let s = 0; s < B; s += fbs) {
        const idx = Array.from({ length: Math.min(fbs, B - s) }, (_, k) => s + k);
        chunks.push(keep(tidy(() =>
          noGrad(() => {
            const { respIds, ...inp } = this.#inputs(batch, idx);
            const out = this.policy.forward({ ...inp, skipLogits: true });
            const logits = this.#responseLogits(this.policy.model, out.hidden!, Tq, R);
            const refOut = this.ref.forward({ ...inp, skipLogits: true, outputHidden: true });
            const refLogits = this.#responseLogits(this.ref, refOut.hidden!, Tq, R);
            const res = [
              logProbsOf(logits, respIds),
              logProbsOf(refLogits, respIds),
              slice(out.values, 1, Tq - 1, Tq - 1 + R),
            ];
            if (full) res.push(fullKl(logits, refLogits));
            return res;
          })
        )));
      }
      const flat = await readAll(chunks.flat());
      const per = full ? 4 : 3;
      const join = (k: number) => {
        const out = new Float32Array(B * R);
        chunks.forEach((_, ci) => out.set(flat[ci * per + k], ci * fbs * R));
        return toRows(out, B, R);
      };
      return { logprobs: join(0), refLogprobs: join(1), values: join(2), kls: full ? join(3) : null };
    } finally {
      for (const t of chunks.flat()) t.dispose();
    }
  }

  /** ppo_epochs × shuffled backward batches × micro-batches; returns the per-mini-batch GPU stats. */
  async #optimize(batch: PaddedBatch, data: PPORollout): Promise<{ stats: Tensor[]; earlyStopped: boolean }> {
    const c = this.config;
    const { B, Tq, R, mask } = batch;
    const params = this.policy.parameters();
    const stats: Tensor[] = [];
    const up = (rows: Rows, idx: number[]) => tensor(idx.flatMap((i) => rows[i]), [idx.length, R]);
    let earlyStopped = false;
    this.optimizer.zeroGrad();
    try {
      for (let epoch = 0; epoch < c.ppo_epochs && !earlyStopped; epoch++) {
        const perm = this.rng.permutation(B);
        for (let bs = 0; bs < B; bs += c.backward_batch_size) {
          for (let ms = bs; ms < bs + c.backward_batch_size; ms += c.mini_batch_size) {
            const idx = perm.slice(ms, ms + c.mini_batch_size);
            stats.push(keep(tidy(() => {
              this.policy.train(c.train_dropout);
              const { respIds, ...inp } = this.#inputs(batch, idx);
              const out = this.policy.forward({ ...inp, skipLogits: true });
              const logits = this.#responseLogits(this.policy.model, out.hidden!, Tq, R);
              const logprobs = logProbsOf(logits, respIds);
              const vpreds = slice(out.values, 1, Tq - 1, Tq - 1 + R);
              const entropy = noGrad(() => entropyFromLogits(logits));
              const res = ppoLoss({ logprobs, vpreds }, {
                oldLogprobs: up(data.logprobs, idx),
                oldValues: up(data.values, idx),
                advantages: up(data.advantages, idx),
                returns: up(data.returns, idx),
                mask: up(mask, idx),
                entropy,
              }, {
                cliprange: c.cliprange,
                cliprangeValue: c.cliprange_value,
                vfCoef: c.vf_coef,
                ratioThreshold: c.ratio_threshold,
              });
              const gas = c.gradient_accumulation_steps;
              backward(gas > 1 ? mulScalar(res.loss, 1 / gas) : res.loss);
              return res.stats;
            })));
          }
          tidy(() => {
            if (c.max_grad_norm !== null) clipGradNorm(params, c.max_grad_norm).dispose();
            this.optimizer.step();
            this.optimizer.zeroGrad();
          });
        }
        if (c.early_stopping) {
          // TRL checks at the end of each epoch, with the last mini-batch's policy KL.
          const [last] = await readAll([stats[stats.length - 1]]);
          if (last[PPO_STATS.policykl] > 1.5 * c.target_kl) earlyStopped = true;
        }
      }
    } catch (e) {
      for (const t of stats) t.dispose();
      this.optimizer.zeroGrad();
      throw e;
    } finally {
      this.policy.eval();
    }
    return { stats, earlyStopped };
  }
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
