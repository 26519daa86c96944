#!/usr/bin/env -S deno run -A
/**
 * Command-line interface to the models: tokenize text, generate continuations with GPT-2, and score
 * texts with a BERT/RoBERTa sequence classifier, from Hugging Face model folders.
 *
 * ```sh
 * deno run -A cli.ts tokenize --model DIR "text" ...
 * deno run -A cli.ts generate --model DIR [--max-new-tokens N --do-sample --temperature T --top-k K --top-p P --seed S] "prompt" ...
 * deno run -A cli.ts score --model DIR "text" ...
 * deno run -A cli.ts init-model --like gpt2 --vocab vocab.txt --n-layer 2 --n-embd 64 --n-head 4 --out DIR
 * ```
 *
 * `--json` prints machine-readable JSON (an array with one object per input); `--help` explains each
 * command. Relative paths are taken from the directory the command was run in (`INIT_CWD` under `deno task`).
 * Errors print one line `error: …` to stderr: exit code 1 for failures (such as a missing folder or file, named
 * in the message by its absolute path), 2 for bad usage.
 * @module
 */

import { parseArgs } from "node:util";
import { initEngine } from "./engine/init.ts";
import { noGrad, readAll, tensor, tidy } from "./engine/tensor.ts";
import { sum } from "./engine/ops/reduce.ts";
import { classifyTexts, EmptyPromptError, type PromptFormat, promptFormat } from "./models/text.ts";
import { loadGPT2, loadSequenceClassifier } from "./models/auto.ts";
import type { GPT2LMHeadModel } from "./models/gpt2.ts";
import { generate } from "./models/generate.ts";
import { show } from "./models/config.ts";
import { loadTokenizer, type Tokenizer } from "./models/tokenizer/mod.ts";
import { defaultSuppressTokens } from "./app/rlhf.ts";
import { describeTokens, parseSuppressTokens, resolveSuppressTokens, resolveUserPath } from "./app/cli_args.ts";
import { describeModelConfig, initModel, InitModelUsageError } from "./app/init_model.ts";

/** An error reported to the user as one line; `exitCode` 2 marks bad usage. */
export class CliError extends Error {
  /** Creates the error with its message and exit code (1 = failure, 2 = usage). */
  constructor(message: string, readonly exitCode = 1) {
    super(message);
    this.name = "CliError";
  }
}

const USAGE = `Usage: deno run -A cli.ts <command> [options] <text>...

Commands:
  tokenize   Show token ids and tokens of each text
  generate   Continue each prompt with a GPT-2 model
  score      Classify each text with a BERT/RoBERTa sequence classifier
  init-model Write a randomly initialised GPT-2 or BERT classifier folder (no hub access needed)

Common options:
  -m, --model DIR   Hugging Face model folder (config.json, weights, tokenizer files; not for init-model)
      --json        Print JSON (an array with one object per input)
  -h, --help        Show help (also: cli.ts <command> --help)
      --verbose     Name the WebGPU adapter; print stack traces on errors

Relative paths are taken from the directory the command was run in (also under deno task).
Exit codes: 0 success, 1 failure (missing folder or file, bad model, ...), 2 bad usage.`;

const HELP: Record<string, string> = {
  tokenize: `Usage: deno run -A cli.ts tokenize --model DIR [--no-special-tokens] [--json] <text>...

Encodes each text with the folder's tokenizer (tokenizer.json, vocab.txt, or vocab.json + merges.txt)
and prints the ids and the tokens. Does not load the model weights.

Options:
  -m, --model DIR          Folder with the tokenizer files
      --no-special-tokens  Do not add special tokens (BERT adds [CLS] ... [SEP] by default)
      --json               Print [{"text", "ids", "tokens"}, ...]`,
  generate: `Usage: deno run -A cli.ts generate --model DIR [options] <prompt>...

Generates a continuation of each prompt with a GPT-2 model (GPT2LMHeadModel), all prompts in one
left-padded batch.
Prompt format: with a BERT vocabulary (a tokenizer with [CLS] and [SEP], such as the Chinese dialog
model GPT2-dialogbot-base-chinese) a prompt is encoded as "[CLS] prompt [SEP]" and [SEP] ends the
reply; with GPT-2's BPE it is encoded without special tokens and the model's eos_token_id ends it.

Options:
  -m, --model DIR          GPT-2 folder (config.json, weights, tokenizer files)
      --max-new-tokens N   Tokens to generate at most (default: 32, fewer if n_positions is reached)
      --min-new-tokens N   Do not end before N new tokens (default 0; at most --max-new-tokens)
      --do-sample          Sample instead of greedy decoding
      --temperature T      Sampling temperature > 0 (default 1)
      --top-k K            Sample among the K most likely tokens (default 0 = all)
      --top-p P            Nucleus sampling mass in (0, 1] (default 1)
      --seed S             Seed for sampling, an integer in [0, 4294967295] (default 0)
      --no-special-tokens  Encode prompts without special tokens ([CLS]/[SEP]) even for a BERT vocabulary
      --suppress-tokens L  Never generate these: comma-separated token ids (numbers) or tokens ([UNK], Ġthe),
                           or "none". Default: the tokenizer's unknown token unless it is its EOS (BERT's
                           [UNK]; said on stderr), as train.ts does
      --json               Print [{"prompt", "text", "ids", "promptIds", "finished"}, ...]`,
  score: `Usage: deno run -A cli.ts score --model DIR [--json] <text>...

Classifies each text with a sequence classifier (BertForSequenceClassification or
RobertaForSequenceClassification): softmax over the logits, label names from config.json id2label.
Texts longer than the model allows are truncated.

Options:
  -m, --model DIR   Classifier folder (config.json, weights, tokenizer files)
      --json        Print [{"text", "label", "score", "probabilities": {label: p}, "logits"}, ...]`,
  "init-model":
    `Usage: deno run -A cli.ts init-model --like gpt2|bert (--vocab FILE | --tokenizer DIR) [sizes] --out DIR

Writes a Hugging Face folder with a randomly initialised model (N(0, 0.02²), seeded): config.json,
model.safetensors and the tokenizer files. It loads with loadGPT2 / loadSequenceClassifier and loadTokenizer,
and works with generate, score and train.ts (--like gpt2 as --policy, --like bert as --reward). vocab_size is
the tokenizer's. Made on the CPU; no GPU and no hub access needed.

Options:
      --like KIND          gpt2: GPT2LMHeadModel (causal LM); bert: BertForSequenceClassification
      --vocab FILE         A BERT WordPiece vocab.txt (tokenizer_config.json, special_tokens_map.json and
                           added_tokens.json beside it are copied; else a BertTokenizer config is written,
                           lower-casing, with [CLS] as BOS and [SEP] as EOS for gpt2)
      --tokenizer DIR      A folder whose tokenizer files are copied (tokenizer.json, vocab.json + merges.txt, ...)
      --n-layer N          Blocks (GPT-2 n_layer / BERT num_hidden_layers; default 12)
      --n-embd N           Hidden size (n_embd / hidden_size; default 768)
      --n-head N           Attention heads, dividing --n-embd (n_head / num_attention_heads; default 12)
      --n-positions N      Positions (n_positions, default 1024 / max_position_embeddings, default 512)
      --n-inner N          MLP width (n_inner / intermediate_size; default 4 × --n-embd)
      --labels A,B,...     Class names of a bert classifier, in id order (default negative,positive)
      --seed S             Seed of the initialisation, in [0, 4294967295] (default 0)
      --out DIR            Folder to write (created)
      --force              Write into a non-empty --out (its model and tokenizer files are replaced)
      --json               Print {"outDir", "like", "parameters", "files", "replaced", "config"}`,
};

type Flags = Record<string, string | boolean | undefined>;

const COMMON = {
  model: { type: "string", short: "m" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
  verbose: { type: "boolean" },
} as const;

const OPTIONS = {
  tokenize: { ...COMMON, "no-special-tokens": { type: "boolean" } },
  generate: {
    ...COMMON,
    "no-special-tokens": { type: "boolean" },
    "max-new-tokens": { type: "string" },
    "min-new-tokens": { type: "string" },
    "do-sample": { type: "boolean" },
    temperature: { type: "string" },
    "top-k": { type: "string" },
    "top-p": { type: "string" },
    seed: { type: "string" },
    "suppress-tokens": { type: "string" },
  },
  score: { ...COMMON },
  "init-model": {
    json: COMMON.json,
    help: COMMON.help,
    verbose: COMMON.verbose,
    like: { type: "string" },
    vocab: { type: "string" },
    tokenizer: { type: "string" },
    out: { type: "string" },
    "n-layer": { type: "string" },
    "n-embd": { type: "string" },
    "n-head": { type: "string" },
    "n-positions": { type: "string" },
    "n-inner": { type: "string" },
    labels: { type: "string" },
    seed: { type: "string" },
    force: { type: "boolean" },
  },
} as const;

type Command = keyof typeof OPTIONS;

/** Where output goes (replaceable in tests). */
export interface CliIO {
  /** Writes one line of normal output. */
  out(line: string): void;
  /** Writes one line of diagnostics. */
  err(line: string): void;
}

const STD_IO: CliIO = { out: (l) => console.log(l), err: (l) => console.error(l) };

function parseNumber(flags: Flags, name: string, kind: "int" | "float"): number | undefined {
  const raw = flags[name];
  if (raw === undefined) return undefined;
  const v = Number(raw);
  if (typeof raw !== "string" || raw.trim() === "" || !Number.isFinite(v) || (kind === "int" && !Number.isInteger(v))) {
    throw new CliError(`--${name} expects ${kind === "int" ? "an integer" : "a number"}, got "${raw}"`, 2);
  }
  return v;
}

/** Largest seed: the samplers keep 32 bits, so larger seeds would repeat smaller ones. */
const MAX_SEED = 2 ** 32 - 1;

/**
 * Runs each (prompt + reply) once more through the model and returns the 1-based numbers of the rows whose logits
 * are not all finite (one forward per row, unpadded, so no padding position is involved; one readback in all).
 */
async function nonFiniteRows(model: GPT2LMHeadModel, rows: number[][], replies: number[][]): Promise<number[]> {
  const sums = noGrad(() =>
    tidy(() =>
      rows.map((prompt, b) => {
        const ids = [...prompt, ...replies[b]];
        return sum(model.forward({ inputIds: tensor(ids, [1, ids.length], "i32") }).logits!);
      })
    )
  );
  const values = await readAll(sums);
  for (const t of sums) t.dispose();
  return values.flatMap((v, b) => Number.isFinite(v[0]) ? [] : [b + 1]);
}

/** Checks that the model folder exists before anything is loaded from it. */
async function requireFolder(given: string | undefined, command: string): Promise<string> {
  if (!given) throw new CliError(`${command}: --model DIR is required`, 2);
  const dir = resolveUserPath(given);
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(dir);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new CliError(`model folder ${dir} does not exist`);
    throw new CliError(`cannot read model folder ${dir}: ${(e as Error).message}`);
  }
  if (!info.isDirectory) throw new CliError(`${dir} is not a folder (--model expects a model folder)`);
  return dir;
}

async function tokenizeCommand(flags: Flags, texts: string[], io: CliIO): Promise<void> {
  const dir = await requireFolder(flags.model as string | undefined, "tokenize");
  const tok = await loadTokenizer(dir);
  const results = texts.map((text) => {
    const ids = tok.encode(text, { addSpecialTokens: !flags["no-special-tokens"] });
    return { text, ids, tokens: tok.convertIdsToTokens(ids) };
  });
  if (flags.json) return io.out(JSON.stringify(results));
  for (const r of results) {
    io.out(`> ${r.text}`);
    io.out(`ids:    ${r.ids.join(" ")}`);
    io.out(`tokens: ${r.tokens.join(" ")}`);
  }
}

/** The sampling flags of `generate`, checked. */
function generationFlags(flags: Flags) {
  const maxNewTokens = parseNumber(flags, "max-new-tokens", "int");
  const minNewTokens = parseNumber(flags, "min-new-tokens", "int");
  const temperature = parseNumber(flags, "temperature", "float");
  const topK = parseNumber(flags, "top-k", "int");
  const topP = parseNumber(flags, "top-p", "float");
  const seed = parseNumber(flags, "seed", "int");
  if (maxNewTokens !== undefined && maxNewTokens < 1) throw new CliError("--max-new-tokens must be ≥ 1", 2);
  if (minNewTokens !== undefined && minNewTokens < 0) throw new CliError("--min-new-tokens must be ≥ 0", 2);
  if (minNewTokens !== undefined && maxNewTokens !== undefined && minNewTokens > maxNewTokens) {
    throw new CliError(`--min-new-tokens (${minNewTokens}) must not exceed --max-new-tokens (${maxNewTokens})`, 2);
  }
  if (seed !== undefined && !(seed >= 0 && seed <= MAX_SEED)) {
    throw new CliError(`--seed must be an integer in [0, ${MAX_SEED}] (got ${seed})`, 2);
  }
  if (temperature !== undefined && !(temperature > 0)) throw new CliError("--temperature must be > 0", 2);
  if (topK !== undefined && topK < 0) throw new CliError("--top-k must be ≥ 0", 2);
  if (topP !== undefined && !(topP > 0 && topP <= 1)) throw new CliError("--top-p must be in (0, 1]", 2);
  return { maxNewTokens, minNewTokens, temperature, topK, topP, seed };
}

/** --suppress-tokens split into entries (undefined when not given); a malformed list is a usage error. */
function suppressTokensFlag(flags: Flags): string[] | undefined {
  try {
    return parseSuppressTokens(flags["suppress-tokens"] as string | undefined);
  } catch (e) {
    throw new CliError((e as Error).message, 2);
  }
}

/** The ids never generated: the flag's entries resolved, or the tokenizer's default (said on `io.err`). */
function suppressTokenIds(items: string[] | undefined, tokenizer: Tokenizer, io: CliIO): number[] {
  if (items !== undefined) {
    try {
      return resolveSuppressTokens(items, tokenizer);
    } catch (e) {
      throw new CliError((e as Error).message, 2);
    }
  }
  const suppressTokens = defaultSuppressTokens(tokenizer);
  if (suppressTokens.length) {
    io.err(
      `generate: never generating ${describeTokens(suppressTokens, tokenizer)} — the default for this tokenizer; ` +
        "--suppress-tokens none allows it",
    );
  }
  return suppressTokens;
}

/** Each prompt's token ids (an empty prompt is a usage error naming it). */
function encodePrompts(format: PromptFormat, prompts: string[]): number[][] {
  return prompts.map((p, i) => {
    try {
      return format.encode(p);
    } catch (e) {
      if (e instanceof EmptyPromptError) throw new CliError(`prompt ${i + 1} is empty`, 2);
      throw new CliError(`prompt ${i + 1}: ${(e as Error).message}`);
    }
  });
}

/** --max-new-tokens, or by default as many as fit after the longest prompt (at most 32). */
function responseLimit(rows: number[][], nPositions: number, sampling: ReturnType<typeof generationFlags>): number {
  const longest = Math.max(...rows.map((r) => r.length));
  const room = nPositions - longest;
  if (room < 1) {
    throw new CliError(`a prompt has ${longest} tokens; the model's n_positions (${nPositions}) leaves no room`);
  }
  const maxNew = sampling.maxNewTokens ?? Math.min(32, room);
  if (sampling.minNewTokens !== undefined && sampling.minNewTokens > maxNew) {
    throw new CliError(
      `--min-new-tokens (${sampling.minNewTokens}) exceeds the default --max-new-tokens (${maxNew}); ` +
        "give --max-new-tokens",
      2,
    );
  }
  return maxNew;
}

async function generateCommand(flags: Flags, prompts: string[], io: CliIO): Promise<void> {
  const sampling = generationFlags(flags);
  const suppressItems = suppressTokensFlag(flags);
  const dir = await requireFolder(flags.model as string | undefined, "generate");
  const tokenizer = await loadTokenizer(dir);
  const suppressTokens = suppressTokenIds(suppressItems, tokenizer, io);
  await initEngine({ verbose: Boolean(flags.verbose) });
  const model = (await loadGPT2(dir)).eval();
  const format = promptFormat(tokenizer, model.config, { plain: Boolean(flags["no-special-tokens"]) });
  const rows = encodePrompts(format, prompts);
  const eos = format.eosTokenId ?? undefined;
  const generated = await generate(model, rows, {
    maxNewTokens: responseLimit(rows, model.config.n_positions, sampling),
    minNewTokens: sampling.minNewTokens,
    doSample: Boolean(flags["do-sample"]),
    temperature: sampling.temperature,
    topK: sampling.topK,
    topP: sampling.topP,
    seed: sampling.seed,
    eosTokenId: eos ?? null,
    padTokenId: format.padTokenId,
    suppressTokens,
  });
  const broken = await nonFiniteRows(model, rows, generated.responses);
  for (const p of model.parameters()) p.dispose();
  if (broken.length > 0) {
    throw new CliError(
      `the GPT-2 model in ${dir} produced non-finite logits (NaN or Inf) for prompt ${broken.join(", ")}: ` +
        `its weights (model.safetensors or pytorch_model.bin) are broken`,
    );
  }
  const results = prompts.map((prompt, i) => {
    const ids = generated.responses[i];
    const finished = eos !== undefined && ids[ids.length - 1] === eos;
    return { prompt, text: format.decode(ids), ids, promptIds: rows[i], finished };
  });
  if (flags.json) return io.out(JSON.stringify(results));
  for (const r of results) {
    io.out(`> ${r.prompt}`);
    io.out(r.text);
  }
}

async function scoreCommand(flags: Flags, texts: string[], io: CliIO): Promise<void> {
  const dir = await requireFolder(flags.model as string | undefined, "score");
  const tok = await loadTokenizer(dir);
  await initEngine({ verbose: Boolean(flags.verbose) });
  const model = (await loadSequenceClassifier(dir)).eval();
  const labels = model.labels;
  const scores = await classifyTexts(model, tok, texts);
  const results = texts.map((text, b) => {
    const p = scores.probabilities[b];
    let best = 0;
    for (let k = 1; k < p.length; k++) if (p[k] > p[best]) best = k;
    return {
      text,
      label: labels[best],
      score: p[best],
      probabilities: Object.fromEntries(labels.map((l, k) => [l, p[k]])),
      logits: scores.logits[b],
    };
  });
  for (const p of model.parameters()) p.dispose();
  if (flags.json) return io.out(JSON.stringify(results));
  for (const r of results) {
    const all = Object.entries(r.probabilities).map(([l, p]) => `${l} ${p.toFixed(4)}`).join(" | ");
    io.out(`${r.label}\t${r.score.toFixed(4)}\t[${all}]\t${r.text}`);
  }
}

async function initModelCommand(flags: Flags, io: CliIO): Promise<void> {
  const sizes: Record<string, number | undefined> = {};
  for (const name of ["n-layer", "n-embd", "n-head", "n-positions", "n-inner", "seed"]) {
    sizes[name] = parseNumber(flags, name, "int");
  }
  const like = flags.like as "gpt2" | "bert";
  const path = (v: unknown) => v === undefined ? undefined : resolveUserPath(String(v));
  let result;
  try {
    result = await initModel({
      like,
      vocab: path(flags.vocab),
      tokenizer: path(flags.tokenizer),
      outDir: path(flags.out) ?? "",
      nLayer: sizes["n-layer"],
      nEmbd: sizes["n-embd"],
      nHead: sizes["n-head"],
      nPositions: sizes["n-positions"],
      nInner: sizes["n-inner"],
      labels: flags.labels === undefined ? undefined : String(flags.labels).split(",").map((l) => l.trim()),
      seed: sizes.seed,
      force: Boolean(flags.force),
    });
  } catch (e) {
    throw e instanceof InitModelUsageError ? new CliError(e.message, 2) : e;
  }
  if (result.replaced.length) io.err(`init-model: replaced ${result.replaced.join(", ")} in ${result.outDir}`);
  if (flags.json) return io.out(JSON.stringify({ ...result, like }));
  io.out(
    `wrote ${result.outDir}: ${describeModelConfig(like, result.config as Record<string, unknown>)}; ` +
      `${(result.parameters / 1e6).toFixed(2)} M parameters, seed ${sizes.seed ?? 0}`,
  );
  io.out(`files: ${result.files.join(" ")}`);
}

/**
 * Runs the CLI with `args` (without the script name) and returns the exit code; errors are printed
 * as one line, never thrown.
 * @param args Command-line arguments, e.g. `["score", "--model", "dir", "text"]`.
 * @param io Output sinks (default: stdout and stderr).
 * @returns 0 on success, 1 on failure, 2 on bad usage.
 */
export async function main(args: string[], io: CliIO = STD_IO): Promise<number> {
  const verbose = args.includes("--verbose");
  try {
    return await runCommand(args, io);
  } catch (e) {
    const err = e as Error;
    io.err(`error: ${err?.message ?? String(e)}`);
    if (verbose && !(e instanceof CliError)) io.err(String(err?.stack ?? e));
    const code = e instanceof CliError ? e.exitCode : 1;
    if (code === 2) io.err("Run `deno run -A cli.ts --help` for usage.");
    return code;
  }
}

/** Runs one command line (`help X` reads as `X --help`); returns the exit code or throws. */
async function runCommand(args: string[], io: CliIO): Promise<number> {
  let [command, ...rest] = args;
  if (command === "help") {
    command = rest[0] ?? "--help";
    rest = ["--help"];
  }
  if (command === undefined) {
    io.err(USAGE);
    return 2;
  }
  if (command === "--help" || command === "-h") {
    io.out(USAGE);
    return 0;
  }
  const { cmd, flags, texts } = parseCommand(command, rest);
  if (flags.help) {
    io.out(HELP[cmd]);
    return 0;
  }
  if (cmd === "init-model") {
    if (texts.length) throw new CliError(`init-model takes no texts (got ${show(texts[0])})`, 2);
    await initModelCommand(flags, io);
    return 0;
  }
  if (texts.length === 0) throw new CliError(`${cmd}: no input text given`, 2);
  if (cmd === "tokenize") await tokenizeCommand(flags, texts, io);
  else if (cmd === "generate") await generateCommand(flags, texts, io);
  else await scoreCommand(flags, texts, io);
  return 0;
}

/** A known command's flags and texts (usage errors for an unknown command or flag). */
function parseCommand(command: string, rest: string[]): { cmd: Command; flags: Flags; texts: string[] } {
  if (!Object.hasOwn(OPTIONS, command)) {
    throw new CliError(`unknown command ${show(command)} (commands: ${Object.keys(OPTIONS).join(", ")})`, 2);
  }
  const cmd = command as Command;
  try {
    const parsed = parseArgs({ args: rest, options: OPTIONS[cmd], allowPositionals: true, strict: true });
    return { cmd, flags: parsed.values as Flags, texts: parsed.positionals };
  } catch (e) {
    throw new CliError(`${cmd}: ${(e as Error).message}`, 2);
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
