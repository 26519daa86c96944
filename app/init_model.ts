/**
 * Randomly initialised model folders for experiments without hub access (`cli.ts init-model`): a GPT-2 causal LM or a
 * BERT sequence classifier of any size, with a tokenizer from a `vocab.txt` or from a tokenizer folder, written as a
 * Hugging Face folder that `loadGPT2` / `loadSequenceClassifier`, `loadTokenizer`, `cli.ts` and `train.ts` load.
 * The weights are those of `GPT2LMHeadModel.random` / `BertForSequenceClassification.random` with the same config and
 * seed, drawn and written on the host (no GPU needed).
 *
 * ```ts
 * await initModel({ like: "gpt2", vocab: "vocab.txt", nLayer: 2, nEmbd: 64, nHead: 4, nPositions: 128, outDir: "tiny" });
 * ```
 * @module
 */

import { basename, dirname, join } from "node:path";
import { type BertConfig, type GPT2Config, parseBertConfig, parseGPT2Config, show } from "../models/config.ts";
import { GPT2LMHeadModel } from "../models/gpt2.ts";
import { BertForSequenceClassification } from "../models/bert.ts";
import { randomParams } from "../models/weights.ts";
import { loadTokenizer, TOKENIZER_FOLDER_FILES } from "../models/tokenizer/load.ts";
import type { Tokenizer } from "../models/tokenizer/base.ts";
import { writeSafetensors } from "../formats/safetensors.ts";
import { writeJsonAtomic } from "../formats/fs_atomic.ts";

export type { BertConfig, GPT2Config };
import { withFlagNames } from "./cli_args.ts";

/** Largest seed (the PRNG keeps 32 bits). */
const MAX_SEED = 2 ** 32 - 1;

/** Options of {@linkcode initModel} (the `cli.ts init-model` flags in camelCase). */
export interface InitModelOptions {
  /** "gpt2": a `GPT2LMHeadModel` (a policy); "bert": a `BertForSequenceClassification` (a reward model). */
  like: "gpt2" | "bert";
  /**
   * A BERT WordPiece `vocab.txt`. A `tokenizer_config.json`, `special_tokens_map.json` and `added_tokens.json` beside
   * it are copied too; without a `tokenizer_config.json` one is written (BertTokenizer, lower-casing, the special
   * tokens the vocabulary has; for "gpt2" `[CLS]` is BOS and `[SEP]` EOS).
   */
  vocab?: string;
  /** A folder with tokenizer files (`tokenizer.json`, or `vocab.json` + `merges.txt`, or `vocab.txt`, …), all copied. */
  tokenizer?: string;
  /** Output folder (created). */
  outDir: string;
  /** Transformer blocks (GPT-2 `n_layer`, BERT `num_hidden_layers`; default 12). */
  nLayer?: number;
  /** Hidden size (GPT-2 `n_embd`, BERT `hidden_size`; default 768). */
  nEmbd?: number;
  /** Attention heads (GPT-2 `n_head`, BERT `num_attention_heads`; default 12); must divide nEmbd. */
  nHead?: number;
  /** Positions (GPT-2 `n_positions`, default 1024; BERT `max_position_embeddings`, default 512). */
  nPositions?: number;
  /** MLP width (GPT-2 `n_inner`, BERT `intermediate_size`; default 4 × nEmbd). */
  nInner?: number;
  /** Class names of a "bert" classifier, in id order (default ["negative", "positive"]). */
  labels?: readonly string[];
  /** Seed of the N(0, 0.02²) initialisation (default 0). */
  seed?: number;
  /** Write into a non-empty outDir (its model and tokenizer files are replaced, other files stay). */
  force?: boolean;
}

/** A problem with the options themselves (bad usage), as opposed to a missing file or a full disk. */
export class InitModelUsageError extends Error {
  /** Creates the error with its message. */
  constructor(message: string) {
    super(message);
    this.name = "InitModelUsageError";
  }
}

/** What {@linkcode initModel} wrote. */
export interface InitModelResult {
  /** The folder. */
  outDir: string;
  /** The config written to config.json. */
  config: GPT2Config | BertConfig;
  /** Number of weights. */
  parameters: number;
  /** Names of the files written, sorted. */
  files: string[];
  /** Files of an earlier model removed from outDir (with force). */
  replaced: string[];
}

/** Files beside a vocab.txt that are copied with it. */
const VOCAB_SIDE_FILES = ["tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"];
/** Files of a model folder that would shadow or contradict the new ones (removed from outDir with force). */
const MODEL_FILES = [
  ...TOKENIZER_FOLDER_FILES,
  "config.json",
  "model.safetensors",
  "model.safetensors.index.json",
  "pytorch_model.bin",
  "pytorch_model.bin.index.json",
  "generation_config.json",
];

/** Option → flag, for messages. */
const FLAGS: Record<string, string> = {
  n_layer: "--n-layer",
  num_hidden_layers: "--n-layer",
  n_embd: "--n-embd",
  hidden_size: "--n-embd",
  n_head: "--n-head",
  num_attention_heads: "--n-head",
  n_positions: "--n-positions",
  max_position_embeddings: "--n-positions",
  n_inner: "--n-inner",
  intermediate_size: "--n-inner",
  num_labels: "--labels",
};

async function statOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw new Error(`${path}: cannot read (${(e as Error).message})`);
  }
}

function checkSize(name: string, value: number | undefined): void {
  if (value !== undefined && !(Number.isInteger(value) && value >= 1)) {
    throw new InitModelUsageError(`${name} must be a positive integer (got ${show(value)})`);
  }
}

/** The tokenizer files for the new folder (name → bytes) and the loaded tokenizer. */
async function stageTokenizer(options: InitModelOptions, staging: string): Promise<Tokenizer> {
  if (options.vocab !== undefined) {
    const info = await statOrNull(options.vocab);
    if (!info) throw new Error(`--vocab ${options.vocab}: no such file`);
    if (!info.isFile) {
      throw new Error(`--vocab ${options.vocab}: not a file (a BERT vocab.txt; for a folder use --tokenizer)`);
    }
    await Deno.copyFile(options.vocab, join(staging, "vocab.txt"));
    const from = dirname(options.vocab);
    let copiedConfig = false;
    if (basename(options.vocab) === "vocab.txt") {
      for (const f of VOCAB_SIDE_FILES) {
        if ((await statOrNull(join(from, f)))?.isFile) {
          await Deno.copyFile(join(from, f), join(staging, f));
          copiedConfig ||= f === "tokenizer_config.json";
        }
      }
    }
    if (!copiedConfig) await writeBertTokenizerConfig(staging, options);
  } else {
    const dir = options.tokenizer!;
    const info = await statOrNull(dir);
    if (!info) throw new Error(`--tokenizer ${dir}: no such folder`);
    if (!info.isDirectory) throw new Error(`--tokenizer ${dir}: not a folder (for a vocab.txt file use --vocab)`);
    for (const f of TOKENIZER_FOLDER_FILES) {
      if ((await statOrNull(join(dir, f)))?.isFile) await Deno.copyFile(join(dir, f), join(staging, f));
    }
  }
  try {
    return await loadTokenizer(staging);
  } catch (e) {
    const source = options.vocab !== undefined ? `--vocab ${options.vocab}` : `--tokenizer ${options.tokenizer}`;
    throw new Error(`${source}: ${(e as Error).message.replaceAll(staging, "(copied files)")}`);
  }
}

/** A BertTokenizer `tokenizer_config.json` naming the BERT special tokens the vocabulary has. */
async function writeBertTokenizerConfig(dir: string, options: InitModelOptions): Promise<void> {
  const vocab = new Set((await Deno.readTextFile(join(dir, "vocab.txt"))).split(/\r?\n/));
  const config: Record<string, unknown> = { tokenizer_class: "BertTokenizer", do_lower_case: true };
  const named = {
    unk_token: "[UNK]",
    sep_token: "[SEP]",
    pad_token: "[PAD]",
    cls_token: "[CLS]",
    mask_token: "[MASK]",
  };
  for (const [key, token] of Object.entries(named)) if (vocab.has(token)) config[key] = token;
  if (options.like === "gpt2" && vocab.has("[CLS]") && vocab.has("[SEP]")) {
    Object.assign(config, { bos_token: "[CLS]", eos_token: "[SEP]", padding_side: "left" });
  }
  if (options.nPositions !== undefined) config.model_max_length = options.nPositions;
  await writeJsonAtomic(join(dir, "tokenizer_config.json"), config);
}

/** config.json fields of the new model. */
function modelConfig(options: InitModelOptions, tok: Tokenizer): GPT2Config | BertConfig {
  const bertVocab = tok.clsTokenId !== undefined && tok.sepTokenId !== undefined;
  try {
    if (options.like === "gpt2") {
      const eos = bertVocab ? tok.sepTokenId : tok.eosTokenId;
      const bos = bertVocab ? tok.clsTokenId : tok.bosTokenId ?? eos;
      return parseGPT2Config({
        architectures: ["GPT2LMHeadModel"],
        model_type: "gpt2",
        vocab_size: tok.vocabSize,
        n_layer: options.nLayer,
        n_embd: options.nEmbd,
        n_head: options.nHead,
        n_positions: options.nPositions,
        n_inner: options.nInner ?? null,
        bos_token_id: bos ?? null,
        eos_token_id: eos ?? null,
        ...(tok.padTokenId !== undefined ? { pad_token_id: tok.padTokenId } : {}),
      }, "init-model");
    }
    const labels = options.labels ?? ["negative", "positive"];
    const id2label = Object.fromEntries(labels.map((l, i) => [String(i), l]));
    const hidden = options.nEmbd ?? 768;
    return parseBertConfig({
      architectures: ["BertForSequenceClassification"],
      model_type: "bert",
      vocab_size: tok.vocabSize,
      num_hidden_layers: options.nLayer,
      hidden_size: hidden,
      num_attention_heads: options.nHead,
      max_position_embeddings: options.nPositions,
      intermediate_size: options.nInner ?? 4 * hidden,
      pad_token_id: tok.padTokenId ?? 0,
      num_labels: labels.length,
      id2label,
      label2id: Object.fromEntries(labels.map((l, i) => [l, i])),
    }, "init-model");
  } catch (e) {
    // `init-model: field "n_head" (3) must divide n_embd (16)` → `init-model: --n-head (3) must divide --n-embd (16)`
    throw new Error(withFlagNames((e as Error).message.replace(/: field "/, ': "'), FLAGS));
  }
}

/**
 * Writes a randomly initialised model folder: `config.json`, `model.safetensors` (HF names, tied weights once,
 * metadata `{"format":"pt"}`) and the tokenizer files; `vocab_size` is the tokenizer's. Nothing is written when a
 * check fails (sizes, labels, tokenizer, a non-empty outDir without `force`); problems with the options themselves
 * throw {@linkcode InitModelUsageError}. Messages name the `cli.ts init-model` flags.
 * @param options what to make
 * @returns what was written
 */
export async function initModel(options: InitModelOptions): Promise<InitModelResult> {
  const seed = checkInitOptions(options);
  const out = options.outDir.replace(/(.)\/+$/, "$1");
  const present = await outDirContents(out, Boolean(options.force));
  await Deno.mkdir(dirname(out), { recursive: true });
  // Everything is made in a staging folder beside outDir and moved in at the end.
  const staging = await Deno.makeTempDir({ dir: dirname(out), prefix: `.${basename(out)}.init-` });
  try {
    const tokenizer = await stageTokenizer(options, staging);
    const config = modelConfig(options, tokenizer);
    const parameters = await writeRandomWeights(options.like, config, seed, staging);
    await writeJsonAtomic(join(staging, "config.json"), config);
    await Deno.mkdir(out, { recursive: true });
    const replaced = present.filter((f) => MODEL_FILES.includes(f));
    for (const f of replaced) await Deno.remove(join(out, f), { recursive: true });
    const files: string[] = [];
    for await (const e of Deno.readDir(staging)) files.push(e.name);
    files.sort();
    for (const f of files) await Deno.rename(join(staging, f), join(out, f));
    return { outDir: out, config, parameters, files, replaced };
  } finally {
    await Deno.remove(staging, { recursive: true }).catch(() => {});
  }
}

/** Checks the options (throwing {@linkcode InitModelUsageError}, naming the flags); returns the seed. */
function checkInitOptions(options: InitModelOptions): number {
  const usage = (message: string) => new InitModelUsageError(message);
  if (options.like === undefined) throw usage("init-model: --like gpt2|bert is required");
  if (options.like !== "gpt2" && options.like !== "bert") {
    throw usage(`--like must be gpt2 or bert (got ${show(options.like)})`);
  }
  if ((options.vocab === undefined) === (options.tokenizer === undefined)) {
    throw usage("init-model: give exactly one of --vocab FILE (a BERT vocab.txt) and --tokenizer DIR");
  }
  checkSizes(options);
  const seed = options.seed ?? 0;
  if (!(Number.isInteger(seed) && seed >= 0 && seed <= MAX_SEED)) {
    throw usage(`--seed must be an integer in [0, ${MAX_SEED}] (got ${show(seed)})`);
  }
  const labels = options.labels;
  if (labels !== undefined) {
    if (options.like !== "bert") throw usage("--labels is for --like bert (a sequence classifier)");
    if (labels.length === 0 || labels.some((l) => l.trim() === "")) {
      throw usage(`--labels needs comma-separated class names (got ${show(labels.join(","))})`);
    }
    const duplicate = labels.find((l, i) => labels.indexOf(l) !== i);
    if (duplicate !== undefined) throw usage(`--labels names ${show(duplicate)} twice`);
  }
  if (!options.outDir) throw usage("init-model: --out DIR is required");
  return seed;
}

/** Checks the size flags, and that the number of heads divides the width (defaults 12 and 768). */
function checkSizes(options: InitModelOptions): void {
  const sizes = [["--n-layer", options.nLayer], ["--n-embd", options.nEmbd], ["--n-head", options.nHead]] as const;
  for (const [flag, value] of sizes) checkSize(flag, value);
  checkSize("--n-positions", options.nPositions);
  checkSize("--n-inner", options.nInner);
  const embd = options.nEmbd ?? 768, heads = options.nHead ?? 12;
  if (embd % heads !== 0) {
    const what = (flag: string, v: number, given: unknown) =>
      `${flag} (${v}${given === undefined ? ", the default" : ""})`;
    throw new InitModelUsageError(
      `${what("--n-head", heads, options.nHead)} must divide ${what("--n-embd", embd, options.nEmbd)}`,
    );
  }
}

/** The names in `out` (sorted; none when it does not exist); throws for a file, or a non-empty folder without force. */
async function outDirContents(out: string, force: boolean): Promise<string[]> {
  const existing = await statOrNull(out);
  const present: string[] = [];
  if (!existing) return present;
  if (!existing.isDirectory) throw new Error(`--out ${out}: exists and is not a folder`);
  for await (const e of Deno.readDir(out)) present.push(e.name);
  present.sort();
  if (present.length && !force) {
    throw new Error(
      `--out ${out} is not empty (${present.slice(0, 4).join(", ")}${present.length > 4 ? ", …" : ""}): ` +
        "give --force to write the model there (its model and tokenizer files are replaced), or another --out",
    );
  }
  return present;
}

/** Writes `model.safetensors` with seeded random weights for `config`; returns the number of parameters. */
async function writeRandomWeights(
  like: "gpt2" | "bert",
  config: GPT2Config | BertConfig,
  seed: number,
  dir: string,
): Promise<number> {
  const spec = like === "gpt2"
    ? GPT2LMHeadModel.paramSpec(config as GPT2Config)
    : BertForSequenceClassification.paramSpec(config as BertConfig);
  const host = randomParams(spec, seed);
  let parameters = 0;
  const tensors = new Map<string, { dtype: "F32"; shape: number[]; data: Float32Array }>();
  for (const [name, t] of host) {
    parameters += t.data.length;
    tensors.set(name, { dtype: "F32", shape: t.shape, data: t.data as Float32Array });
  }
  await writeSafetensors(join(dir, "model.safetensors"), tensors, { format: "pt" });
  return parameters;
}

/**
 * One line on a model made by {@linkcode initModel}: its class, sizes and vocabulary (and labels for a classifier).
 * @param like "gpt2" or "bert", as given to initModel
 * @param config the model's config.json fields
 */
export function describeModelConfig(like: "gpt2" | "bert", config: Record<string, unknown>): string {
  const c = config;
  const layers = (n: unknown) => `${n} layer${n === 1 ? "" : "s"}`;
  const shape = like === "gpt2"
    ? `GPT2LMHeadModel, ${layers(c.n_layer)}, n_embd ${c.n_embd}, ${c.n_head} heads, ${c.n_positions} positions`
    : `BertForSequenceClassification, ${layers(c.num_hidden_layers)}, hidden ${c.hidden_size}, ` +
      `${c.num_attention_heads} heads, ${c.max_position_embeddings} positions, labels ${
        Object.values(c.id2label as Record<string, string>).join("/")
      }`;
  return `${shape}, vocabulary ${c.vocab_size}`;
}
