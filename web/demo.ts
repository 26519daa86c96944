/**
 * The embedded default's PPO demo as a few calls that run the same in a browser tab and in Deno: open a models
 * folder (`policy/`, `reward/` and `manifest.json` with the prompts, as `deno task train` caches them in
 * `.cache/default-models/`; a path or an `http(s):` address), take PPO steps, and compare the frozen reference's and
 * the policy's replies to a prompt. Files are read through `formats/files.ts`, so nothing here needs Deno.
 *
 * ```ts
 * const demo = await openDemo("http://localhost:8000/models/", { seed: 1 });
 * for (let s = 1; s <= 3; s++) console.log(await demoStep(demo, s));
 * ```
 * @module
 */

import { filesFor, joinPath } from "../formats/files.ts";
import { loadSequenceClassifier } from "../models/auto.ts";
import type { BertForSequenceClassification } from "../models/bert.ts";
import { classifyTexts, type PromptFormat, promptFormat } from "../models/text.ts";
import type { Tokenizer } from "../models/tokenizer/base.ts";
import { loadTokenizer } from "../models/tokenizer/load.ts";
import { CausalLMWithValueHead } from "../models/value_head.ts";
import { ppoConfig } from "../ppo/config.ts";
import { PPOTrainer } from "../ppo/trainer.ts";
import { noGrad, tensor, tidy } from "../engine/tensor.ts";

/** Settings of a demo run; the defaults are `deno task train`'s embedded default, with fewer steps. */
export interface DemoOptions {
  /** PPO seed (sampling, shuffling, the value head's initialisation). Default 0. */
  seed?: number;
  /** Prompts per step (default 16). */
  batchSize?: number;
  /** PPO mini-batch (default 4). */
  miniBatchSize?: number;
  /** Reply length limit in tokens (default 12). */
  maxNewTokens?: number;
  /** Learning rate (default 1e-3, the embedded default's). */
  learningRate?: number;
  /** Initial KL coefficient (default 0.05, the embedded default's). */
  klCoef?: number;
}

/** An opened demo: the models, tokenizers, trainer and prompts. */
export interface DemoSession {
  /** The policy with its value head (trained). */
  policy: CausalLMWithValueHead;
  /** The reward model (a sentiment classifier). */
  reward: BertForSequenceClassification;
  /** The reward model's tokenizer. */
  rewardTokenizer: Tokenizer;
  /** How prompts are encoded and replies decoded for the policy. */
  format: PromptFormat;
  /** The PPO trainer (its reference is a frozen copy of the policy as loaded). */
  trainer: PPOTrainer;
  /** The prompts, from the folder's `manifest.json`. */
  prompts: string[];
  /** The reward label's index (`positive` when the classifier has it, else its last label). */
  labelIndex: number;
  /** Tokens never sampled (the unknown token, as the embedded default). */
  suppressTokens: number[];
  /** The settings in effect. */
  options: Required<DemoOptions>;
}

/** One PPO step's figures and a few of its replies. */
export interface DemoStep {
  /** 1-based step number. */
  step: number;
  /** Mean reward (the classifier's probability of the label). */
  rewardMean: number;
  /** KL to the reference (TRL's objective/kl). */
  kl: number;
  /** Per-token entropy of the replies. */
  entropy: number;
  /** TRL's ppo/loss/total. */
  loss: number;
  /** The step's sampled response token ids (for comparing runs). */
  responses: number[][];
  /** The first few prompts with the policy's replies and their rewards. */
  samples: { prompt: string; reply: string; reward: number }[];
  /** Wall time of the step in seconds. */
  seconds: number;
}

const DEFAULTS: Required<DemoOptions> = {
  seed: 0,
  batchSize: 16,
  miniBatchSize: 4,
  maxNewTokens: 12,
  learningRate: 1e-3,
  klCoef: 0.05,
};

/** The prompts in `manifest.json` of a models folder; an error names the file when it holds none. */
async function readPrompts(folder: string): Promise<string[]> {
  const file = joinPath(folder, "manifest.json");
  const manifest = JSON.parse(await filesFor(file).readText(file)) as { prompts?: unknown };
  const prompts = Array.isArray(manifest.prompts) ? manifest.prompts.filter((p) => typeof p === "string") : [];
  if (prompts.length === 0) throw new Error(`${file}: no "prompts" (a list of strings)`);
  return prompts as string[];
}

/**
 * Loads the policy, the reward model, their tokenizers and the prompts of a models folder, and makes the PPO trainer.
 * @param folder A folder path or address holding `policy/`, `reward/` and `manifest.json`.
 * @param options Run settings (see {@linkcode DemoOptions}).
 */
export async function openDemo(folder: string, options: DemoOptions = {}): Promise<DemoSession> {
  const o = { ...DEFAULTS, ...options };
  const policyDir = joinPath(folder, "policy/"), rewardDir = joinPath(folder, "reward/");
  const [policy, tok, reward, rewardTokenizer, prompts] = await Promise.all([
    CausalLMWithValueHead.fromPretrained(policyDir, o.seed),
    loadTokenizer(policyDir),
    loadSequenceClassifier(rewardDir),
    loadTokenizer(rewardDir),
    readPrompts(folder),
  ]);
  reward.eval();
  const format = promptFormat(tok, policy.model.config);
  const config = ppoConfig({
    batch_size: o.batchSize,
    mini_batch_size: o.miniBatchSize,
    learning_rate: o.learningRate,
    init_kl_coef: o.klCoef,
    seed: o.seed,
  });
  const trainer = new PPOTrainer(config, policy, null, format);
  const labels = reward.labels;
  const labelIndex = labels.includes("positive") ? labels.indexOf("positive") : labels.length - 1;
  const unk = tok.unkTokenId;
  const suppressTokens = unk !== undefined && unk !== format.eosTokenId ? [unk] : [];
  return { policy, reward, rewardTokenizer, format, trainer, prompts, labelIndex, suppressTokens, options: o };
}

/** The prompts of step `step` (1-based): consecutive slices of the prompt list, wrapping around. */
export function stepPrompts(session: DemoSession, step: number): string[] {
  const { prompts, options } = session;
  return Array.from(
    { length: options.batchSize },
    (_, i) => prompts[((step - 1) * options.batchSize + i) % prompts.length],
  );
}

/** Rewards of replies: the reward model's probability of the session's label. */
export async function scoreReplies(session: DemoSession, replies: readonly string[]): Promise<number[]> {
  const { probabilities } = await classifyTexts(session.reward, session.rewardTokenizer, replies);
  return probabilities.map((p) => p[session.labelIndex]);
}

/** Takes PPO step `step`: sample replies, score them with the reward model, and update the policy. */
export async function demoStep(session: DemoSession, step: number): Promise<DemoStep> {
  const startedAt = performance.now();
  const { trainer, format, options } = session;
  const prompts = stepPrompts(session, step);
  const queries = prompts.map((p) => format.encode(p));
  const { responses } = await trainer.generate(queries, {
    maxNewTokens: options.maxNewTokens,
    suppressTokens: session.suppressTokens,
  });
  const replies = responses.map((r) => format.decode(r));
  const rewards = await scoreReplies(session, replies);
  const stats = await trainer.step(queries, responses, rewards);
  return {
    step,
    rewardMean: stats["env/reward_mean"],
    kl: stats["objective/kl"],
    entropy: stats["objective/entropy"],
    loss: stats["ppo/loss/total"],
    responses,
    samples: prompts.slice(0, 4).map((prompt, i) => ({ prompt, reply: replies[i], reward: rewards[i] })),
    seconds: (performance.now() - startedAt) / 1000,
  };
}

/** The reference's and the policy's replies to one prompt, sampled with the same seed, and their rewards. */
export interface ReplyComparison {
  /** The prompt. */
  prompt: string;
  /** The frozen reference model's reply. */
  reference: string;
  /** The trained policy's reply. */
  policy: string;
  /** Rewards of the two replies, [reference, policy]. */
  rewards: [number, number];
}

/** Samples the reference's and the policy's replies to `prompt` with the same seed and scores both. */
export async function compareReplies(session: DemoSession, prompt: string, seed = 1): Promise<ReplyComparison> {
  const { trainer, format, options } = session;
  const query = [format.encode(prompt)];
  const sampling = { maxNewTokens: options.maxNewTokens, suppressTokens: session.suppressTokens, seed };
  const ref = await trainer.generateReference(query, sampling);
  const pol = await trainer.generate(query, sampling);
  const replies = [format.decode(ref.responses[0]), format.decode(pol.responses[0])];
  const [r0, r1] = await scoreReplies(session, replies);
  return { prompt, reference: replies[0], policy: replies[1], rewards: [r0, r1] };
}

/**
 * A numeric fingerprint of the engine on this device: the policy's next-token logits after the first prompt
 * (a forward pass through every kernel family of the model), for comparing runs on different WebGPU devices.
 */
export async function probeLogits(session: DemoSession): Promise<number[]> {
  const ids = session.format.encode(session.prompts[0]);
  const model = session.policy.model;
  const wasTraining = model.training;
  model.eval();
  try {
    const logits = tidy(() => noGrad(() => model.forward({ inputIds: tensor(ids, [1, ids.length], "i32") }).logits!));
    const all = await logits.toArray();
    logits.dispose();
    const V = model.config.vocab_size;
    return Array.from(all.slice(all.length - V));
  } finally {
    model.train(wasTraining);
  }
}
