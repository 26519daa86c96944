/**
 * The built-in default of `train.ts`: with no model hub reachable, it builds its own small policy
 * (GPT-2) and reward model (BERT sentiment classifier) from openly licensed npm data (see
 * `app/demo/data.ts`), caches them as Hugging Face folders, and hands back their paths and PPO prompts.
 *
 * ```ts
 * const { policyDir, rewardDir, prompts } = await prepareDefault();
 * ```
 * @module
 */

import { fileURLToPath } from "node:url";
import { initEngine } from "../../engine/init.ts";
import { runtime } from "../../engine/tensor.ts";
import { exists, writeJsonAtomic } from "../../formats/fs_atomic.ts";
import { savePretrained } from "../../models/auto.ts";
import { generate } from "../../models/generate.ts";
import type { GPT2LMHeadModel } from "../../models/gpt2.ts";
import { loadTokenizer } from "../../models/tokenizer/load.ts";
import type { Tokenizer } from "../../models/tokenizer/base.ts";
import {
  DATA_SOURCES,
  dataFingerprint,
  type DemoData,
  type DemoDataOptions,
  loadDemoData,
  sha256Hex,
  UNK_ID,
  writeTokenizerFiles,
} from "./data.ts";
import { GPT2_PRETRAIN_DEFAULTS, type GPT2PretrainConfig, pretrainGPT2 } from "./pretrain.ts";
import {
  CLASSIFIER_DEFAULTS,
  type ClassifierConfig,
  type ClassifierExample,
  trainSentimentClassifier,
} from "./classifier.ts";
import { type Log, stderrLog } from "./train_loop.ts";
import { compileNote, compilesKernels } from "../progress.ts";

export * from "./data.ts";
export * from "./train_loop.ts";
export * from "./pretrain.ts";
export * from "./classifier.ts";

/** Bumped whenever the way the default models are built changes (invalidates caches). */
export const DEMO_FORMAT_VERSION = 2;

/** Options of {@linkcode prepareDefault}. */
export interface PrepareDefaultOptions {
  /** Cache folder (default `.cache/default-models/` under the project root). */
  cacheDir?: string;
  /** Rebuild even when the cache is valid. */
  force?: boolean;
  /** Progress sink (default: stderr); pass `() => {}` for silence. */
  log?: Log;
  /** Data options (vocabulary size, splits, prompt count, seed). */
  data?: DemoDataOptions;
  /** GPT-2 pretraining overrides. */
  gpt2?: Partial<GPT2PretrainConfig>;
  /** Classifier overrides. */
  classifier?: Partial<ClassifierConfig>;
  /** Greedy sample generations to print after pretraining (default 3). */
  samples?: number;
}

/** What {@linkcode prepareDefault} builds or finds; also the content of `manifest.json`. */
export interface PreparedDefault {
  /** GPT-2 folder (config.json, model.safetensors, vocab.txt, tokenizer_config.json). */
  policyDir: string;
  /** BERT sentiment-classifier folder (same files; id2label {0: negative, 1: positive}). */
  rewardDir: string;
  /** PPO prompts of 2–4 words (from held-out sentences); the policy expects `[CLS] prompt [SEP]` ({@linkcode encodePrompt}). */
  prompts: string[];
  /** Label the reward model should score for PPO. */
  positiveLabel: "positive";
  /** True when the models came from the cache. */
  cached: boolean;
  /** Fingerprint of data, hyper-parameters and format version. */
  key: string;
  /** Training results of the build: LM losses, classifier held-out accuracy, steps run. */
  metrics: {
    /** Mean GPT-2 training loss over the last steps. */
    lmLoss: number;
    /** GPT-2 loss on held-out sentences. */
    lmHeldOutLoss: number;
    /** Classifier accuracy on the held-out labelled sentences. */
    classifierAccuracy: number;
    /** GPT-2 optimiser steps run. */
    gpt2Steps: number;
    /** Classifier optimiser steps run. */
    classifierSteps: number;
  };
  /** Seconds spent: data loading, GPT-2, classifier, and the whole call (this call, not the build). */
  timings: { data: number; gpt2: number; classifier: number; total: number };
}

/** The default cache folder: `.cache/default-models` in the project root (or the working directory). */
export function defaultCacheDir(): string {
  const url = new URL("../../.cache/default-models", import.meta.url);
  return url.protocol === "file:" ? fileURLToPath(url) : ".cache/default-models";
}

/**
 * Prompt token ids for the default policy, in the dialog format it was trained on: `[CLS] prompt [SEP]`
 * (what `models/text.ts`'s `promptFormat` produces for a tokenizer with [CLS]/[SEP]).
 */
export function encodePrompt(tokenizer: Tokenizer, prompt: string): number[] {
  return tokenizer.encode(prompt);
}

/**
 * The cache key of a build: SHA-256 over the format version, the data fingerprint and options, and the
 * hyper-parameters of both trainers (logging frequency excluded).
 */
export async function cacheKey(
  data: DemoData,
  gpt2: GPT2PretrainConfig,
  classifier: ClassifierConfig,
): Promise<string> {
  const hyper = { gpt2: { ...gpt2, logEvery: 0 }, classifier: { ...classifier, logEvery: 0 } };
  return await sha256Hex(
    JSON.stringify({ format: DEMO_FORMAT_VERSION, data: await dataFingerprint(data), opts: data.options, hyper }),
  );
}

async function readManifest(file: string): Promise<(PreparedDefault & { format: number }) | null> {
  try {
    return JSON.parse(await Deno.readTextFile(file));
  } catch {
    return null;
  }
}

/**
 * Builds (or reuses from the cache) the default policy and reward model. The cache is valid when
 * `manifest.json` carries the same key (data + hyper-parameters + format) and both folders are complete.
 */
export async function prepareDefault(options: PrepareDefaultOptions = {}): Promise<PreparedDefault> {
  const startedAt = performance.now();
  const log = options.log ?? stderrLog;
  const cacheDir = options.cacheDir ?? defaultCacheDir();
  const build = await loadBuildInputs(options, log, startedAt);
  const cached = options.force ? null : await reuseCache(cacheDir, build, log, startedAt);
  return cached ?? await buildDefaultModels(cacheDir, build, options, log, startedAt);
}

/** Seconds since `startedAt` (a `performance.now()` value). */
const secondsSince = (startedAt: number) => (performance.now() - startedAt) / 1000;

/** The data and the hyper-parameters of a build, and the cache key they give. */
interface BuildInputs {
  data: DemoData;
  /** Seconds spent loading the data. */
  dataSeconds: number;
  gpt2Config: GPT2PretrainConfig;
  classifierConfig: ClassifierConfig;
  key: string;
}

async function loadBuildInputs(options: PrepareDefaultOptions, log: Log, startedAt: number): Promise<BuildInputs> {
  log(`default models: loading data (${DATA_SOURCES.corpus}, ${DATA_SOURCES.sentiment})`);
  const data = await loadDemoData(options.data);
  const dataSeconds = secondsSince(startedAt);
  const gpt2Config = { ...GPT2_PRETRAIN_DEFAULTS, ...options.gpt2 };
  const classifierConfig = { ...CLASSIFIER_DEFAULTS, ...options.classifier };
  const key = await cacheKey(data, gpt2Config, classifierConfig);
  log(
    `default models: ${data.lmTrain.length} LM sentences, ${data.sentimentTrain.length}+${data.sentimentTest.length} ` +
      `labelled sentences, vocabulary ${data.vocab.length}, ${data.prompts.length} prompts (${
        dataSeconds.toFixed(1)
      }s)`,
  );
  return { data, dataSeconds, gpt2Config, classifierConfig, key };
}

/** The files a cached model folder must hold. */
const MODEL_FOLDER_FILES = ["config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"];

async function isCompleteModelFolder(dir: string): Promise<boolean> {
  return (await Promise.all(MODEL_FOLDER_FILES.map((f) => exists(`${dir}/${f}`)))).every(Boolean);
}

/** The cached build when its manifest has this build's key and both folders are complete; else null. */
async function reuseCache(
  cacheDir: string,
  build: BuildInputs,
  log: Log,
  startedAt: number,
): Promise<PreparedDefault | null> {
  const policyDir = `${cacheDir}/policy`, rewardDir = `${cacheDir}/reward`;
  const manifest = await readManifest(`${cacheDir}/manifest.json`);
  if (
    manifest?.format !== DEMO_FORMAT_VERSION || manifest.key !== build.key || !await isCompleteModelFolder(policyDir) ||
    !await isCompleteModelFolder(rewardDir)
  ) return null;
  log(`default models: reusing ${cacheDir} (key ${build.key.slice(0, 12)})`);
  // The browser page (web/) reads the prompts from the manifest; caches written before it held them get them now.
  if (!Array.isArray(manifest.prompts)) {
    await writeJsonAtomic(`${cacheDir}/manifest.json`, { ...manifest, prompts: build.data.prompts });
  }
  const { format: _format, ...built } = manifest;
  return {
    ...built,
    policyDir,
    rewardDir,
    prompts: build.data.prompts,
    cached: true,
    timings: { data: build.dataSeconds, gpt2: 0, classifier: 0, total: secondsSince(startedAt) },
  };
}

/** Trains both models into the cache folder and writes its manifest last. */
async function buildDefaultModels(
  cacheDir: string,
  build: BuildInputs,
  options: PrepareDefaultOptions,
  log: Log,
  startedAt: number,
): Promise<PreparedDefault> {
  const { data, gpt2Config } = build;
  const policyDir = `${cacheDir}/policy`, rewardDir = `${cacheDir}/reward`;
  const manifestFile = `${cacheDir}/manifest.json`;
  await initEngine();
  await Deno.remove(manifestFile).catch(() => {});
  await writeTokenizerFiles(policyDir, data.vocab, "gpt2", gpt2Config.nPositions);
  await writeTokenizerFiles(rewardDir, data.vocab, "bert", 64);
  const tokenizer = await loadTokenizer(policyDir);
  const lm = await pretrainPolicy(build, tokenizer, log);
  await savePretrained(lm.model, policyDir);
  await logSamples(lm.model, tokenizer, data.prompts, options.samples ?? 3, log);
  const classifier = await trainRewardModel(build, tokenizer, lm.model, log);
  await savePretrained(classifier.model, rewardDir);
  for (const t of [...lm.model.parameters(), ...classifier.model.parameters()]) t.dispose();
  const result: PreparedDefault = {
    policyDir,
    rewardDir,
    prompts: data.prompts,
    positiveLabel: "positive",
    cached: false,
    key: build.key,
    metrics: {
      lmLoss: lm.finalLoss,
      lmHeldOutLoss: lm.heldOutLoss,
      classifierAccuracy: classifier.testAccuracy,
      gpt2Steps: lm.steps,
      classifierSteps: classifier.steps,
    },
    timings: {
      data: build.dataSeconds,
      gpt2: lm.seconds,
      classifier: classifier.seconds,
      total: secondsSince(startedAt),
    },
  };
  await writeJsonAtomic(manifestFile, { format: DEMO_FORMAT_VERSION, ...result }); // prompts included, for web/
  log(`default models: built in ${result.timings.total.toFixed(1)}s → ${cacheDir}`);
  return result;
}

/** Pretrains the GPT-2 policy on the LM sentences (held-out loss on the first 256 held-out ones). */
async function pretrainPolicy(build: BuildInputs, tokenizer: Tokenizer, log: Log) {
  const { data, gpt2Config } = build;
  const encode = (s: string) => tokenizer.encode(s, { addSpecialTokens: false });
  const lmTrain = data.lmTrain.map(encode), lmHeldOut = data.lmHeldOut.map(encode);
  if (lmTrain.some((r) => r.includes(UNK_ID))) throw new Error("prepareDefault: LM sentence with [UNK] (vocab bug)");
  const handle = runtime().handle;
  const compiling = compilesKernels(handle) ? `; the first step compiles the GPU kernels (${compileNote(handle)})` : "";
  log(
    `default models: pretraining GPT-2 (${gpt2Config.nLayer} layers, width ${gpt2Config.nEmbd}, ` +
      `${gpt2Config.steps} steps)${compiling}`,
  );
  return await pretrainGPT2(lmTrain, lmHeldOut.slice(0, 256), data.vocab.length, gpt2Config, log);
}

/** Trains the sentiment classifier (its embeddings start from the policy's when the widths match). */
async function trainRewardModel(build: BuildInputs, tokenizer: Tokenizer, policy: GPT2LMHeadModel, log: Log) {
  const { data, gpt2Config, classifierConfig } = build;
  const toExample = (x: { text: string; label: number }): ClassifierExample => ({
    ids: tokenizer.encode(x.text),
    label: x.label,
  });
  const schedule = classifierConfig.steps ? `${classifierConfig.steps} steps` : `${classifierConfig.epochs} epochs`;
  log(`default models: training the sentiment classifier (${schedule})`);
  const wte = policy.params.get("transformer.wte.weight")!;
  return await trainSentimentClassifier(
    data.sentimentTrain.map(toExample),
    data.sentimentTest.map(toExample),
    data.vocab.length,
    classifierConfig,
    log,
    classifierConfig.hidden === gpt2Config.nEmbd ? wte : undefined,
  );
}

/** Prints a greedy and a sampled response to each of the first `n` prompts. */
async function logSamples(model: GPT2LMHeadModel, tokenizer: Tokenizer, prompts: string[], n: number, log: Log) {
  if (n <= 0 || prompts.length === 0) return;
  const chosen = prompts.slice(0, n);
  const ids = chosen.map((p) => encodePrompt(tokenizer, p));
  const greedy = await generate(model, ids, { maxNewTokens: 16 });
  const sampled = await generate(model, ids, { maxNewTokens: 16, doSample: true, seed: 1 });
  const text = (r: number[]) => tokenizer.decode(r, { skipSpecialTokens: true });
  chosen.forEach((p, i) =>
    log(`  sample: ${p} → ${text(greedy.responses[i])} | sampled: ${text(sampled.responses[i])}`)
  );
}
