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
import { initEngine, runtime } from "../../engine/tensor.ts";
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
import { compileNote } from "../progress.ts";

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
  const t0 = performance.now();
  const log = options.log ?? stderrLog;
  const cacheDir = options.cacheDir ?? defaultCacheDir();
  const policyDir = `${cacheDir}/policy`, rewardDir = `${cacheDir}/reward`;
  const manifestFile = `${cacheDir}/manifest.json`;
  const secs = (t: number) => (performance.now() - t) / 1000;

  log(`default models: loading data (${DATA_SOURCES.corpus}, ${DATA_SOURCES.sentiment})`);
  const data = await loadDemoData(options.data);
  const dataSeconds = secs(t0);
  const gpt2Cfg = { ...GPT2_PRETRAIN_DEFAULTS, ...options.gpt2 };
  const clsCfg = { ...CLASSIFIER_DEFAULTS, ...options.classifier };
  const key = await cacheKey(data, gpt2Cfg, clsCfg);
  log(
    `default models: ${data.lmTrain.length} LM sentences, ${data.sentimentTrain.length}+${data.sentimentTest.length} ` +
      `labelled sentences, vocabulary ${data.vocab.length}, ${data.prompts.length} prompts (${
        dataSeconds.toFixed(1)
      }s)`,
  );

  const old = await readManifest(manifestFile);
  const complete = async (dir: string) =>
    (await Promise.all(
      ["config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"].map((f) => exists(`${dir}/${f}`)),
    )).every(Boolean);
  if (
    !options.force && old?.format === DEMO_FORMAT_VERSION && old.key === key && await complete(policyDir) &&
    await complete(rewardDir)
  ) {
    log(`default models: reusing ${cacheDir} (key ${key.slice(0, 12)})`);
    const { format: _format, ...built } = old;
    return {
      ...built,
      policyDir,
      rewardDir,
      prompts: data.prompts,
      cached: true,
      timings: { data: dataSeconds, gpt2: 0, classifier: 0, total: secs(t0) },
    };
  }

  await initEngine();
  await Deno.remove(manifestFile).catch(() => {});
  await writeTokenizerFiles(policyDir, data.vocab, "gpt2", gpt2Cfg.nPositions);
  await writeTokenizerFiles(rewardDir, data.vocab, "bert", 64);
  const tok = await loadTokenizer(policyDir);
  const encode = (s: string) => tok.encode(s, { addSpecialTokens: false });
  const lmTrain = data.lmTrain.map(encode), lmHeld = data.lmHeldOut.map(encode);
  if (lmTrain.some((r) => r.includes(UNK_ID))) throw new Error("prepareDefault: LM sentence with [UNK] (vocab bug)");

  log(
    `default models: pretraining GPT-2 (${gpt2Cfg.nLayer} layers, width ${gpt2Cfg.nEmbd}, ${gpt2Cfg.steps} steps); ` +
      `the first step compiles the GPU kernels (${compileNote(runtime().handle)})`,
  );
  const lm = await pretrainGPT2(lmTrain, lmHeld.slice(0, 256), data.vocab.length, gpt2Cfg, log);
  await savePretrained(lm.model, policyDir);
  await logSamples(lm.model, tok, data.prompts, options.samples ?? 3, log);

  const toExample = (x: { text: string; label: number }): ClassifierExample => ({
    ids: tok.encode(x.text),
    label: x.label,
  });
  log(
    `default models: training the sentiment classifier (${
      clsCfg.steps ? `${clsCfg.steps} steps` : `${clsCfg.epochs} epochs`
    })`,
  );
  const wte = lm.model.params.get("transformer.wte.weight")!;
  const cls = await trainSentimentClassifier(
    data.sentimentTrain.map(toExample),
    data.sentimentTest.map(toExample),
    data.vocab.length,
    clsCfg,
    log,
    clsCfg.hidden === gpt2Cfg.nEmbd ? wte : undefined,
  );
  await savePretrained(cls.model, rewardDir);
  for (const t of [...lm.model.parameters(), ...cls.model.parameters()]) t.dispose();

  const result: PreparedDefault = {
    policyDir,
    rewardDir,
    prompts: data.prompts,
    positiveLabel: "positive",
    cached: false,
    key,
    metrics: {
      lmLoss: lm.finalLoss,
      lmHeldOutLoss: lm.heldOutLoss,
      classifierAccuracy: cls.testAccuracy,
      gpt2Steps: lm.steps,
      classifierSteps: cls.steps,
    },
    timings: { data: dataSeconds, gpt2: lm.seconds, classifier: cls.seconds, total: secs(t0) },
  };
  await writeJsonAtomic(manifestFile, { format: DEMO_FORMAT_VERSION, ...result, prompts: undefined });
  log(`default models: built in ${result.timings.total.toFixed(1)}s → ${cacheDir}`);
  return result;
}

/** Prints a greedy and a sampled response to each of the first `n` prompts. */
async function logSamples(model: GPT2LMHeadModel, tok: Tokenizer, prompts: string[], n: number, log: Log) {
  if (n <= 0 || prompts.length === 0) return;
  const chosen = prompts.slice(0, n);
  const ids = chosen.map((p) => encodePrompt(tok, p));
  const greedy = await generate(model, ids, { maxNewTokens: 16 });
  const sampled = await generate(model, ids, { maxNewTokens: 16, doSample: true, seed: 1 });
  const text = (r: number[]) => tok.decode(r, { skipSpecialTokens: true });
  chosen.forEach((p, i) =>
    log(`  sample: ${p} → ${text(greedy.responses[i])} | sampled: ${text(sampled.responses[i])}`)
  );
}
