/**
 * PPO hyper-parameters with the classic TRL `PPOConfig` names and defaults (snake_case, so TRL configs can be
 * copied as they are; camelCase spellings of the same keys are accepted too), validated with errors that name
 * the field.
 *
 * The defaults are those of TRL v0.11.4, the last release with the classic `PPOConfig`/`PPOTrainer`. Three of them
 * differ from TRL v0.7.10 and earlier (they changed in v0.8.0): `learning_rate` (v0.7.10: 1e-5), `batch_size`
 * (v0.7.10: 256) and `mini_batch_size` (v0.7.10: 1). The fields TRL's `PPOConfig` lacks (`temperature`, the Adam
 * settings, `weight_decay`, `train_dropout`) default to what TRL's trainer does
 * (temperature 1, torch's Adam without weight decay, forward passes in eval mode).
 * @module
 */

import { show } from "../models/config.ts";
import { printable } from "../formats/safetensors.ts";

/** How the per-token KL penalty is estimated (TRL's `kl_penalty`). */
export type KLPenaltyKind = "kl" | "abs" | "mse" | "full";

/**
 * The validated PPO configuration ({@linkcode ppoConfig} fills in the defaults: TRL v0.11.4's; where a default
 * differs from TRL v0.7.10's, both are named).
 */
export interface PPOConfig {
  /** Adam learning rate (default 1.41e-5, TRL v0.8.0 to v0.11.4; TRL v0.7.10: 1e-5). */
  learning_rate: number;
  /** Samples per `step()` (default 128, TRL v0.8.0 to v0.11.4; TRL v0.7.10: 256). */
  batch_size: number;
  /**
   * Samples per optimisation micro-batch, also the chunk size of the rollout forward passes (default 128, TRL v0.8.0
   * to v0.11.4; TRL v0.7.10: 1). TRL's deprecated `forward_batch_size` is accepted as another name for it.
   */
  mini_batch_size: number;
  /** Micro-batches whose gradients are accumulated before each optimiser step (default 1). */
  gradient_accumulation_steps: number;
  /** Derived: mini_batch_size × gradient_accumulation_steps (samples per optimiser step). */
  backward_batch_size: number;
  /** Optimisation epochs over each batch (default 4). */
  ppo_epochs: number;
  /** Discount factor (default 1). */
  gamma: number;
  /** GAE λ (default 0.95). */
  lam: number;
  /** PPO ratio clip range (default 0.2). */
  cliprange: number;
  /** Value clip range (default 0.2). */
  cliprange_value: number;
  /** Value-loss coefficient (default 0.1). */
  vf_coef: number;
  /** Adaptive KL controller (default true) or a fixed coefficient. */
  adap_kl_ctrl: boolean;
  /** Initial KL coefficient β (default 0.2). */
  init_kl_coef: number;
  /** KL estimator: "kl" (default), "abs", "mse" or "full". */
  kl_penalty: KLPenaltyKind;
  /** Target KL of the adaptive controller (default 6). */
  target: number;
  /** Horizon of the adaptive controller (default 10000). */
  horizon: number;
  /** A mini-batch whose mean ratio exceeds this has its loss zeroed (default 10). */
  ratio_threshold: number;
  /** Stop the epochs when the policy KL exceeds 1.5 × target_kl (default false). */
  early_stopping: boolean;
  /** KL bound for early stopping (default 1). */
  target_kl: number;
  /** Clip the gradient norm to this value (default null: no clipping). */
  max_grad_norm: number | null;
  /** Divide scores by their running standard deviation (default false). */
  use_score_scaling: boolean;
  /** With use_score_scaling, also subtract the running mean (default false). */
  use_score_norm: boolean;
  /** Clip scores to ±score_clip after scaling (default null). */
  score_clip: number | null;
  /** Whiten the rewards before GAE (default false). */
  whiten_rewards: boolean;
  /** Seed of the trainer's shuffling RNG (default 0). */
  seed: number;
  /**
   * Softmax temperature of the log-probabilities; must equal the sampling temperature (default 1; not a TRL
   * `PPOConfig` field).
   */
  temperature: number;
  /** Adam β1 (default 0.9, torch's; not a TRL `PPOConfig` field). */
  adam_beta1: number;
  /** Adam β2 (default 0.999, torch's; not a TRL `PPOConfig` field). */
  adam_beta2: number;
  /** Adam ε (default 1e-8, torch's; not a TRL `PPOConfig` field). */
  adam_epsilon: number;
  /** Decoupled (AdamW) weight decay (default 0, i.e. plain Adam as in TRL). */
  weight_decay: number;
  /** Run the optimisation forward passes with dropout on (default false: TRL runs them in eval mode). */
  train_dropout: boolean;
  /** Number of training steps, for the caller's loop (TRL's `steps`, default 20000; unused by the trainer). */
  steps: number;
}

/** Largest `seed`: the PRNGs keep 32 bits, so larger seeds would repeat smaller ones. */
export const MAX_SEED = 2 ** 32 - 1;

/** Input of {@linkcode ppoConfig}: any subset of the fields, snake_case or camelCase. */
export type PPOConfigInput = Partial<PPOConfig> & Record<string, unknown>;

const DEFAULTS: Omit<PPOConfig, "backward_batch_size"> = {
  learning_rate: 1.41e-5,
  batch_size: 128,
  mini_batch_size: 128,
  gradient_accumulation_steps: 1,
  ppo_epochs: 4,
  gamma: 1,
  lam: 0.95,
  cliprange: 0.2,
  cliprange_value: 0.2,
  vf_coef: 0.1,
  adap_kl_ctrl: true,
  init_kl_coef: 0.2,
  kl_penalty: "kl",
  target: 6,
  horizon: 10000,
  ratio_threshold: 10.0,
  early_stopping: false,
  target_kl: 1,
  max_grad_norm: null,
  use_score_scaling: false,
  use_score_norm: false,
  score_clip: null,
  whiten_rewards: false,
  seed: 0,
  temperature: 1,
  adam_beta1: 0.9,
  adam_beta2: 0.999,
  adam_epsilon: 1e-8,
  weight_decay: 0,
  train_dropout: false,
  steps: 20000,
};

/**
 * TRL `PPOConfig` fields that only matter to TRL's logging, hub and accelerate plumbing. They are accepted (so a
 * TRL config can be pasted) and ignored.
 */
export const IGNORED_TRL_KEYS: readonly string[] = [
  "exp_name",
  "task_name",
  "model_name",
  "query_dataset",
  "reward_model",
  "remove_unused_columns",
  "log_with",
  "tracker_kwargs",
  "accelerator_kwargs",
  "project_kwargs",
  "tracker_project_name",
  "push_to_hub_if_best_kwargs",
  "optimize_cuda_cache",
  "optimize_device_cache",
  "gradient_checkpointing",
  "compare_steps",
  "world_size",
  "is_encoder_decoder",
  "is_peft_model",
  "global_backward_batch_size",
  "global_batch_size",
  "dataset_num_proc",
  "total_ppo_epochs",
];

const KL_KINDS: readonly KLPenaltyKind[] = ["kl", "abs", "mse", "full"];

/** `learningRate` → `learning_rate`. */
function snake(key: string): string {
  return key.replace(/[A-Z]/g, (c) => "_" + c.toLowerCase());
}

function fail(field: string, reason: string): never {
  throw new Error(`ppoConfig: "${printable(field, 60)}" ${reason}`);
}

/** Throws unless `settings[key]` is a number for which `ok` holds (`what` says which numbers do). */
function checkNumber(settings: Record<string, unknown>, key: string, ok: (x: number) => boolean, what: string): void {
  const value = settings[key];
  if (typeof value !== "number" || Number.isNaN(value) || !ok(value)) fail(key, `must be ${what}, got ${show(value)}`);
}

const posInt = (x: number) => Number.isInteger(x) && x > 0;

/** Options of {@linkcode ppoConfig}. */
export interface PPOConfigOptions {
  /**
   * Receives deprecation warnings (such as for TRL's `forward_batch_size`). Default: `console.warn`, each distinct
   * warning once per process (the configuration is validated more than once on the way to a run).
   */
  onWarning?: (message: string) => void;
}

const warned = new Set<string>();

function warnOnce(message: string): void {
  if (warned.has(message)) return;
  warned.add(message);
  console.warn(`warning: ${message}`);
}

/**
 * Fills in TRL's defaults and validates a PPO configuration. Keys may be snake_case (TRL) or camelCase;
 * unknown keys (typos) throw an error listing them, as do out-of-range values, a `batch_size` that is not a
 * multiple of `mini_batch_size × gradient_accumulation_steps`, and an unknown `kl_penalty`. TRL's deprecated
 * `forward_batch_size` is accepted as TRL accepts it: it sets `mini_batch_size`, with a warning (given together with a
 * different `mini_batch_size`, it is an error rather than TRL's silent override).
 * @param partial any subset of {@linkcode PPOConfig}'s fields
 * @param options where warnings go
 * @returns a complete, validated configuration (a new object)
 */
export function ppoConfig(partial: PPOConfigInput = {}, options: PPOConfigOptions = {}): PPOConfig {
  if (partial === null || typeof partial !== "object" || Array.isArray(partial)) {
    throw new Error("ppoConfig: expected an object of settings");
  }
  const given = knownSettings(partial);
  applyForwardBatchSize(given, options);
  const settings: Record<string, unknown> = { ...DEFAULTS };
  for (const [k, v] of Object.entries(given)) {
    if (v !== undefined && k !== "backward_batch_size" && k !== "forward_batch_size") settings[k] = v;
  }
  checkSettingTypes(settings);
  const backwardBatchSize = checkBatchSizes(settings, given);
  return { ...(settings as unknown as PPOConfig), backward_batch_size: backwardBatchSize };
}

/** The given settings under their snake_case names; throws listing unknown keys, or for a key given twice. */
function knownSettings(partial: PPOConfigInput): Record<string, unknown> {
  const given: Record<string, unknown> = {};
  const unknown: string[] = [];
  for (const [raw, v] of Object.entries(partial)) {
    const k = snake(raw);
    if (Object.hasOwn(given, k)) fail(k, `is given twice (as "${raw}" and in another spelling)`);
    if (Object.hasOwn(DEFAULTS, k) || k === "backward_batch_size" || k === "forward_batch_size") given[k] = v;
    else if (!IGNORED_TRL_KEYS.includes(k)) unknown.push(raw);
  }
  if (unknown.length) {
    throw new Error(
      `ppoConfig: unknown key${unknown.length > 1 ? "s" : ""} ${unknown.slice(0, 10).map((k) => show(k)).join(", ")}` +
        (unknown.length > 10 ? ` and ${unknown.length - 10} more` : ""),
    );
  }
  return given;
}

/** TRL's deprecated forward_batch_size: sets mini_batch_size (with a warning); an error beside a different one. */
function applyForwardBatchSize(given: Record<string, unknown>, options: PPOConfigOptions): void {
  const forwardBatchSize = given.forward_batch_size;
  if (forwardBatchSize === undefined || forwardBatchSize === null) return;
  if (typeof forwardBatchSize !== "number" || !posInt(forwardBatchSize)) {
    fail("forward_batch_size", `must be a positive integer, got ${show(forwardBatchSize)}`);
  }
  const miniBatchSize = given.mini_batch_size;
  if (miniBatchSize !== undefined && miniBatchSize !== forwardBatchSize) {
    fail(
      "forward_batch_size",
      `(${forwardBatchSize}) is TRL's deprecated name for mini_batch_size, which is given as well ` +
        `(${show(miniBatchSize)}): give only one`,
    );
  }
  const message =
    `ppoConfig: "forward_batch_size" is deprecated in TRL; using it as mini_batch_size (${forwardBatchSize}) — ` +
    "rename it to mini_batch_size";
  if (options.onWarning) options.onWarning(message);
  else warnOnce(message);
  given.mini_batch_size = forwardBatchSize;
}

/** Checks every setting's type and range (throws naming the first bad one). */
function checkSettingTypes(settings: Record<string, unknown>): void {
  for (const k of ["batch_size", "mini_batch_size", "gradient_accumulation_steps", "ppo_epochs", "steps"]) {
    checkNumber(settings, k, posInt, "a positive integer");
  }
  checkNumber(settings, "learning_rate", (x) => x >= 0 && Number.isFinite(x), "a finite number ≥ 0");
  checkNumber(settings, "gamma", (x) => x >= 0 && x <= 1, "in [0, 1]");
  checkNumber(settings, "lam", (x) => x >= 0 && x <= 1, "in [0, 1]");
  checkNumber(settings, "cliprange", (x) => x > 0 && x < 1, "in (0, 1)");
  checkNumber(settings, "cliprange_value", (x) => x > 0 && Number.isFinite(x), "a finite number > 0");
  checkNumber(settings, "vf_coef", (x) => x >= 0 && Number.isFinite(x), "a finite number ≥ 0");
  checkNumber(settings, "init_kl_coef", (x) => x >= 0 && Number.isFinite(x), "a finite number ≥ 0");
  checkNumber(settings, "target", (x) => x > 0 && Number.isFinite(x), "a finite number > 0");
  checkNumber(settings, "horizon", (x) => x > 0 && Number.isFinite(x), "a finite number > 0");
  checkNumber(settings, "ratio_threshold", (x) => x > 0, "a number > 0");
  checkNumber(settings, "target_kl", (x) => x > 0 && Number.isFinite(x), "a finite number > 0");
  checkNumber(settings, "temperature", (x) => x > 0 && Number.isFinite(x), "a finite number > 0");
  checkNumber(
    settings,
    "seed",
    (x) => Number.isInteger(x) && x >= 0 && x <= MAX_SEED,
    `an integer in [0, ${MAX_SEED}]`,
  );
  checkNumber(settings, "adam_beta1", (x) => x >= 0 && x < 1, "in [0, 1)");
  checkNumber(settings, "adam_beta2", (x) => x >= 0 && x < 1, "in [0, 1)");
  checkNumber(settings, "adam_epsilon", (x) => x > 0 && Number.isFinite(x), "a finite number > 0");
  checkNumber(settings, "weight_decay", (x) => x >= 0 && Number.isFinite(x), "a finite number ≥ 0");
  for (const k of ["max_grad_norm", "score_clip"]) {
    if (settings[k] !== null) {
      checkNumber(settings, k, (x) => x > 0 && Number.isFinite(x), "null or a finite number > 0");
    }
  }
  checkChoiceSettings(settings);
}

/** Throws unless the boolean settings are booleans and kl_penalty is a known estimator. */
function checkChoiceSettings(settings: Record<string, unknown>): void {
  for (const k of ["adap_kl_ctrl", "early_stopping", "use_score_scaling", "use_score_norm", "whiten_rewards"]) {
    if (typeof settings[k] !== "boolean") fail(k, `must be a boolean, got ${show(settings[k])}`);
  }
  if (typeof settings.train_dropout !== "boolean") {
    fail("train_dropout", `must be a boolean, got ${show(settings.train_dropout)}`);
  }
  if (!KL_KINDS.includes(settings.kl_penalty as KLPenaltyKind)) {
    fail(
      "kl_penalty",
      `must be one of ${KL_KINDS.map((k) => `"${k}"`).join(", ")}, got ${show(settings.kl_penalty)}`,
    );
  }
}

/**
 * backward_batch_size = mini_batch_size × gradient_accumulation_steps, which must divide batch_size (and equal a
 * given backward_batch_size); returns it.
 */
function checkBatchSizes(settings: Record<string, unknown>, given: Record<string, unknown>): number {
  const backwardBatchSize = (settings.mini_batch_size as number) * (settings.gradient_accumulation_steps as number);
  if (given.backward_batch_size !== undefined && given.backward_batch_size !== backwardBatchSize) {
    fail(
      "backward_batch_size",
      `is derived (mini_batch_size × gradient_accumulation_steps = ${backwardBatchSize}), ` +
        `got ${given.backward_batch_size}`,
    );
  }
  if ((settings.batch_size as number) % backwardBatchSize !== 0) {
    fail(
      "batch_size",
      `(${settings.batch_size}) must be a multiple of backward_batch_size = mini_batch_size (${settings.mini_batch_size}) × ` +
        `gradient_accumulation_steps (${settings.gradient_accumulation_steps}) = ${backwardBatchSize}` +
        (given.mini_batch_size === undefined
          ? `; mini_batch_size was not given and defaults to ${DEFAULTS.mini_batch_size} (TRL v0.11.4's default)`
          : ""),
    );
  }
  return backwardBatchSize;
}
