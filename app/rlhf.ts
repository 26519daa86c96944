/**
 * The RLHF run behind `train.ts`: TRL's generate → score → step loop over a prompt set, with a
 * sequence classifier as the reward model, `metrics.jsonl` per step, atomic checkpoints every N
 * steps (never of a diverged state), exact resumption (from the newest intact checkpoint, logs cut
 * back to it), one run per output folder (locked), clean Ctrl-C handling and a final `report.html`.
 * @module
 */

import { initEngine } from "../engine/init.ts";
import { writeFileAtomic } from "../formats/fs_atomic.ts";
import { loadGPT2, loadSequenceClassifier } from "../models/auto.ts";
import type { BertForSequenceClassification } from "../models/bert.ts";
import type { CausalLMWithValueHead } from "../models/value_head.ts";
import type { LoraOptions } from "../models/lora_peft.ts";
import { disposePolicy, loadRunPolicy, saveMergedPolicy } from "../models/lora_policy.ts";
import { loadTokenizer, type Tokenizer } from "../models/tokenizer/mod.ts";
import { classifyTexts, type PromptFormat, promptFormat } from "../models/text.ts";
import { type PPOConfig, ppoConfig, type PPOConfigInput } from "../ppo/config.ts";
import { SeededRng } from "../engine/random.ts";
import { type PPOGenerateOptions, type PPOStats, PPOTrainer } from "../ppo/trainer.ts";
import { loadCheckpoint, type LoadedCheckpoint, MODEL_SIDE_FILES, saveCheckpoint } from "./checkpoint.ts";
import { divergence, negativeKlWarning, nonFiniteState } from "./health.ts";
import { lockOutDir, prepareOutDir } from "./outdir.ts";
import { type MetricsRow, writeReport } from "./report.ts";
import { ProgressLog } from "./progress.ts";
import { restartRunLogs, type RunLogs, toJsonLines, writeRunLogs } from "./run_log.ts";

/** Everything a run needs (train.ts fills it from its flags). */
export interface RLHFOptions {
  /** Policy model folder (GPT-2, HF format). */
  policyDir: string;
  /** Reward model folder (BERT/RoBERTa sequence classifier, HF format). */
  rewardDir: string;
  /** Prompt texts. */
  prompts: string[];
  /** Label whose probability (or logit) is the score (matched case-insensitively against id2label). */
  rewardLabel: string;
  /** "prob" (softmax probability, default) or "logit". */
  rewardKind?: "prob" | "logit";
  /** Score "prompt + response" instead of the response alone. */
  scoreWithQuery?: boolean;
  /** PPO steps to reach (counting steps already in a resumed checkpoint). */
  steps: number;
  /** PPO configuration (TRL names); batch_size prompts are used per step. */
  ppo: PPOConfigInput;
  /** Tokens to generate per response at most. */
  maxNewTokens: number;
  /** Tokens to generate at least (EOS is forbidden before). */
  minNewTokens?: number;
  /**
   * Token ids never sampled (transformers' `suppress_tokens`), for the policy's and the reference's replies. Default:
   * the tokenizer's unknown token when it has one that is not its EOS (BERT vocabularies' `[UNK]`, as the seed's
   * rollout bans it); `[]` suppresses nothing.
   */
  suppressTokens?: readonly number[];
  /** Output folder: metrics.jsonl, samples.jsonl, checkpoints, report.html. */
  outDir: string;
  /** Continue from the newest checkpoint in outDir. */
  resume?: boolean;
  /**
   * Start afresh in an outDir that already holds a run (its checkpoints, metrics and samples are replaced).
   * Without it (and without `resume`) such an outDir is refused, so nothing a user saved is lost by accident.
   */
  overwrite?: boolean;
  /** Checkpoint every N steps (and at the end, and on Ctrl-C). */
  saveEvery?: number;
  /**
   * Checkpoints to keep, the oldest deleted first (transformers' `save_total_limit`); absent or 0: keep all. Each
   * checkpoint is a complete model folder (the policy's tokenizer files copied in) plus the training state.
   */
  saveTotalLimit?: number;
  /** Record sample responses every N steps (default: about 10 times per run). */
  sampleEvery?: number;
  /** Progress output (default stderr). */
  log?: (line: string) => void;
  /** Title of the report (default: "RLHF: <policy folder> steered by <reward folder> (<label>)"). */
  title?: string;
  /** Stop after this many steps in this process (for tests of resumption). */
  stopAfter?: number;
  /**
   * Train a LoRA adapter (peft's LoraConfig: r, loraAlpha, loraDropout, targetModules) and the value head instead of
   * every weight; the reference is the base without the adapter (no copy), checkpoints hold the adapter in peft's
   * format.
   */
  lora?: LoraOptions;
  /** With `lora`: at the end, write the merged model as a complete Hugging Face folder `<outDir>/merged`. */
  mergeLora?: boolean;
}

/** Summary of a finished (or interrupted) run. */
export interface RLHFResult {
  /** Last completed step. */
  step: number;
  /** Rows of metrics.jsonl. */
  metrics: MetricsRow[];
  /** Path of report.html. */
  report: string;
  /** True when stopped by Ctrl-C. */
  interrupted: boolean;
}

/** The tokens suppressed by default: the unknown token, when the tokenizer has one that is not its EOS. */
export function defaultSuppressTokens(tok: { unkTokenId?: number; eosTokenId?: number | null }): number[] {
  const unk = tok.unkTokenId;
  return unk !== undefined && unk !== tok.eosTokenId ? [unk] : [];
}

const baseName = (dir: string) => dir.replace(/[\\/]+$/, "").split(/[\\/]/).pop() || dir;

/** Prompt indices of step `step` (1-based): consecutive slices of seeded per-epoch permutations. */
export function batchIndices(n: number, batch: number, step: number, seed: number): number[] {
  const out: number[] = [];
  let pos = (step - 1) * batch;
  while (out.length < batch) {
    const epoch = Math.floor(pos / n);
    const perm = new SeededRng((Math.imul(seed, 2654435761) ^ (epoch + 1) * 40503) >>> 0).permutation(n);
    out.push(perm[pos % n]);
    pos++;
  }
  return out;
}

/**
 * Runs PPO; see {@linkcode RLHFOptions}. Holds the output folder's lock for the whole run; refuses a folder that
 * already holds a run unless `resume` or `overwrite` is set.
 */
export async function runRLHF(options: RLHFOptions): Promise<RLHFResult> {
  const log = options.log ?? ((line: string) => console.error(line));
  const config = ppoConfig(options.ppo);
  checkRunOptions(options);
  const lock = await lockOutDir(options.outDir, log);
  try {
    // Refuses a folder holding a run (unless resuming); with overwrite the old run goes once everything has loaded.
    if (!options.overwrite) await prepareOutDir(options.outDir, options, log);
    return await runLocked(options, config, log);
  } finally {
    await lock.release();
  }
}

function checkRunOptions(options: RLHFOptions): void {
  if (!Number.isInteger(options.steps) || options.steps < 1) throw new Error("steps must be a positive integer");
  if (!Number.isInteger(options.maxNewTokens) || options.maxNewTokens < 1) {
    throw new Error("max new tokens must be ≥ 1");
  }
  if (options.prompts.length === 0) throw new Error("no prompts");
  if (options.resume && options.overwrite) throw new Error("resume and overwrite exclude each other");
}

/** A prompt that fits the policy's context, with its token ids. */
interface EncodedPrompt {
  text: string;
  ids: number[];
}

/** Everything a run holds once loaded and checked, before the first step. */
interface LoadedRun {
  options: RLHFOptions;
  config: PPOConfig;
  log: (line: string) => void;
  rewardModel: BertForSequenceClassification;
  rewardTokenizer: Tokenizer;
  /** Index of the reward label among the reward model's labels. */
  labelIndex: number;
  policy: CausalLMWithValueHead;
  trainer: PPOTrainer;
  format: PromptFormat;
  prompts: EncodedPrompt[];
  suppressTokens: readonly number[];
  /** The checkpoint resumed from, if any. */
  checkpoint: LoadedCheckpoint | null;
}

async function runLocked(options: RLHFOptions, config: PPOConfig, log: (line: string) => void): Promise<RLHFResult> {
  const run = await loadRun(options, config, log);
  if (options.overwrite) await prepareOutDir(options.outDir, options, log); // everything loaded: now replace the run
  const logs = await restoreRun(run);
  const interrupts = catchInterrupts(log);
  let last: number;
  try {
    last = await trainSteps(run, logs, interrupts);
  } finally {
    interrupts.release();
  }
  const report = await writeRunReport(run, last, logs);
  if (interrupts.interrupted) log(`interrupted after step ${last}; continue with --resume`);
  if (options.mergeLora && run.policy.model.lora) await writeMerged(run);
  run.trainer.dispose();
  disposePolicy(run.policy);
  for (const p of run.rewardModel.parameters()) p.dispose();
  return { step: last, metrics: logs.metrics, report, interrupted: interrupts.interrupted };
}

/** Loads and checks everything before any training: tokenizers, reward model, policy (or checkpoint), prompts. */
async function loadRun(options: RLHFOptions, config: PPOConfig, log: (line: string) => void): Promise<LoadedRun> {
  const [policyTokenizer, rewardTokenizer] = await Promise.all([
    loadTokenizer(options.policyDir),
    loadTokenizer(options.rewardDir),
  ]);
  await initEngine({ verbose: false });
  const rewardModel = (await loadSequenceClassifier(options.rewardDir)).eval();
  const labelIndex = rewardLabelIndex(options, rewardModel.labels);
  const checkpoint = options.resume ? await loadCheckpoint(options.outDir, log) : null;
  if (options.resume && !checkpoint) log(`resume: no checkpoint in ${options.outDir}; starting from step 0`);
  const policy = await loadRunPolicy(options.policyDir, checkpoint?.dir ?? null, options.lora, config.seed);
  // A resumed full fine-tune needs the original weights as reference; a LoRA policy's base is its reference.
  const reference = checkpoint && !options.lora ? (await loadGPT2(options.policyDir)).eval() : null;
  const format = promptFormat(policyTokenizer, policy.model.config);
  const prompts = encodePrompts(options.prompts, format, policy.model.config.n_positions - options.maxNewTokens, log);
  const trainer = new PPOTrainer(config, policy, reference, format);
  const suppressTokens = options.suppressTokens ?? defaultSuppressTokens(policyTokenizer);
  logSuppressedTokens(suppressTokens, policyTokenizer, options.suppressTokens === undefined, log);
  return {
    options,
    config,
    log,
    rewardModel,
    rewardTokenizer,
    labelIndex,
    policy,
    trainer,
    format,
    prompts,
    suppressTokens,
    checkpoint,
  };
}

/** Writes `<outDir>/merged`: the policy with its adapter merged, with the policy folder's tokenizer files. */
async function writeMerged(run: LoadedRun): Promise<void> {
  const dir = `${run.options.outDir}/merged`;
  await saveMergedPolicy(run.policy, dir, run.options.policyDir, MODEL_SIDE_FILES);
  run.log(`merged LoRA model written to ${dir}`);
}

function rewardLabelIndex(options: RLHFOptions, labels: readonly string[]): number {
  const index = labels.findIndex((label) => label.toLowerCase() === options.rewardLabel.toLowerCase());
  if (index < 0) {
    throw new Error(
      `${options.rewardDir}: reward label "${options.rewardLabel}" not among the model's labels (${labels.join(", ")})`,
    );
  }
  return index;
}

/** The prompts that encode to at most `room` tokens; the others are counted in one log line. */
function encodePrompts(
  texts: readonly string[],
  format: PromptFormat,
  room: number,
  log: (line: string) => void,
): EncodedPrompt[] {
  const encoded: EncodedPrompt[] = [];
  let dropped = 0;
  for (const text of texts) {
    try {
      const ids = format.encode(text);
      if (ids.length <= room) encoded.push({ text, ids });
      else dropped++;
    } catch {
      dropped++;
    }
  }
  if (dropped) log(`prompts: ${dropped} skipped (empty after tokenization or longer than ${room} tokens)`);
  if (encoded.length === 0) throw new Error("no prompt fits the policy's context");
  return encoded;
}

function logSuppressedTokens(
  suppressTokens: readonly number[],
  tokenizer: Tokenizer,
  isDefault: boolean,
  log: (line: string) => void,
): void {
  if (!suppressTokens.length) return;
  const names = suppressTokens.slice(0, 5).map((id) => `${tokenizer.idToToken(id) ?? "?"} (${id})`);
  log(
    `sampling: never generating ${names.join(", ")}${suppressTokens.length > 5 ? ", …" : ""}${
      isDefault ? " — the default for this tokenizer; --suppress-tokens none allows it" : ""
    }`,
  );
}

/**
 * Restores the trainer from the checkpoint (if any), rewrites metrics.jsonl and samples.jsonl cut back to its step
 * (empty for a fresh run), and writes run.json.
 */
async function restoreRun(run: LoadedRun): Promise<RunLogs> {
  const { options, checkpoint, log } = run;
  if (checkpoint) run.trainer.loadStateDict(checkpoint.trainer);
  const logs = await restartRunLogs(options.outDir, checkpoint?.step ?? null, log);
  if (checkpoint) log(`resumed from ${checkpoint.dir} (step ${logs.start})`);
  await writeRunLogs(logs);
  const settings = { ...options, prompts: undefined, log: undefined };
  await writeFileAtomic(`${options.outDir}/run.json`, JSON.stringify(settings, null, 2));
  return logs;
}

/** Ctrl-C handling for the run's duration. */
interface InterruptWatch {
  /** True once Ctrl-C was pressed. */
  readonly interrupted: boolean;
  /** Stops listening. */
  release(): void;
}

/** The first Ctrl-C finishes the current step and saves a checkpoint; a second one exits (130) at once. */
function catchInterrupts(log: (line: string) => void): InterruptWatch {
  let interrupted = false;
  const onSigint = () => {
    if (interrupted) Deno.exit(130);
    interrupted = true;
    log("\ninterrupt: finishing the current step, then saving a checkpoint (Ctrl-C again to abort)");
  };
  try {
    Deno.addSignalListener("SIGINT", onSigint);
  } catch { /* signals unsupported here */ }
  return {
    get interrupted() {
      return interrupted;
    },
    release() {
      try {
        Deno.removeSignalListener("SIGINT", onSigint);
      } catch { /* ignore */ }
    },
  };
}

/** Runs steps `start + 1 …` up to `steps` (or an interrupt or `stopAfter`); returns the last step reached. */
async function trainSteps(run: LoadedRun, logs: RunLogs, interrupts: InterruptWatch): Promise<number> {
  const { options, log } = run;
  const saveEvery = options.saveEvery ?? 10;
  const sampleEvery = options.sampleEvery ?? Math.max(1, Math.floor(options.steps / 10));
  const progress = new ProgressLog(options.steps, logs.start, log);
  let warnedKl = false;
  let step = logs.start + 1;
  if (logs.start < options.steps) progress.announceCompilation(logs.start + 1);
  for (; step <= options.steps; step++) {
    const result = await rolloutAndStep(run, step);
    const klWarning = warnedKl ? null : negativeKlWarning(result.stats, step);
    if (klWarning) {
      warnedKl = true;
      progress.endLine();
      log(klWarning);
    }
    await appendMetrics(logs, { step, ...result.stats, "time/step": (performance.now() - result.startedAt) / 1000 });
    if (step === 1 || step % sampleEvery === 0 || step === options.steps) await recordSamples(run, logs, step, result);
    progress.stepDone(step, result.stats, result.responses);
    const stopHere = interrupts.interrupted ||
      (options.stopAfter !== undefined && step - logs.start >= options.stopAfter);
    if (step % saveEvery === 0 || step === options.steps || stopHere) {
      const dir = await saveHealthyCheckpoint(run, step);
      progress.endLine();
      log(`saved ${dir}`);
    }
    if (stopHere) break;
  }
  return Math.min(step, options.steps);
}

async function appendMetrics(logs: RunLogs, row: MetricsRow): Promise<void> {
  logs.metrics.push(row);
  await Deno.writeTextFile(logs.metricsFile, JSON.stringify(row) + "\n", { append: true });
}

/** One step's batch: its prompts, the policy's responses and their scores, and the trainer's stats. */
interface StepResult {
  /** performance.now() at the step's start. */
  startedAt: number;
  /** Indices of the step's prompts. */
  promptIndices: number[];
  queries: number[][];
  responses: number[][];
  /** The responses decoded. */
  texts: string[];
  scores: number[];
  stats: PPOStats;
}

/** Generates responses to the step's prompts, scores them, and runs one PPO step on them. */
async function rolloutAndStep(run: LoadedRun, step: number): Promise<StepResult> {
  const { options, config, trainer } = run;
  const startedAt = performance.now();
  const promptIndices = batchIndices(run.prompts.length, config.batch_size, step, config.seed);
  const queries = promptIndices.map((i) => run.prompts[i].ids);
  const generated = await trainer.generate(queries, generationOptions(run, step));
  const texts = generated.responses.map((r) => run.format.decode(r));
  const scores = await scoreTexts(run, texts, promptIndices);
  if (!scores.every(Number.isFinite)) {
    throw new Error(`step ${step}: the reward model returned a non-finite score; stopping before training on it`);
  }
  const stats = await trainer.step(queries, generated.responses, scores);
  const wrong = divergence(stats);
  if (wrong) {
    throw new Error(
      `step ${step}: ${wrong} — training diverged (try a lower --lr or --kl-coef); ` +
        `the last checkpoint in ${options.outDir} is from before this step`,
    );
  }
  return { startedAt, promptIndices, queries, responses: generated.responses, texts, scores, stats };
}

/** Sampling settings of a step, for the policy and the reference alike (same seed). */
function generationOptions(run: LoadedRun, step: number): PPOGenerateOptions {
  return {
    maxNewTokens: run.options.maxNewTokens,
    minNewTokens: run.options.minNewTokens,
    suppressTokens: run.suppressTokens,
    seed: (Math.imul(run.config.seed + 1, 0x9e3779b1) + step) >>> 0,
  };
}

/** The reward model's score of each response (with its prompt in front when `scoreWithQuery`). */
async function scoreTexts(run: LoadedRun, texts: string[], promptIndices: number[]): Promise<number[]> {
  const { options } = run;
  const inputs = texts.map((t, i) => options.scoreWithQuery ? `${run.prompts[promptIndices[i]].text} ${t}` : t);
  const classified = await classifyTexts(run.rewardModel, run.rewardTokenizer, inputs);
  const perLabel = options.rewardKind === "logit" ? classified.logits : classified.probabilities;
  return perLabel.map((p) => p[run.labelIndex]);
}

/** Appends up to 6 samples with the reference model's replies to the same prompts (TRL's ref_response). */
async function recordSamples(run: LoadedRun, logs: RunLogs, step: number, result: StepResult): Promise<void> {
  // The reference model's replies to the same prompts, same settings and seed, scored alike.
  const shown = Math.min(6, result.texts.length);
  const reference = await run.trainer.generateReference(result.queries.slice(0, shown), generationOptions(run, step));
  const refTexts = reference.responses.map((r) => run.format.decode(r));
  const refScores = await scoreTexts(run, refTexts, result.promptIndices);
  const rows = result.texts.slice(0, shown).map((response, i) => ({
    step,
    prompt: run.prompts[result.promptIndices[i]].text,
    response,
    score: result.scores[i],
    refResponse: refTexts[i],
    refScore: refScores[i],
  }));
  logs.samples.push(...rows);
  await Deno.writeTextFile(logs.samplesFile, toJsonLines(rows), { append: true });
}

/** Saves a checkpoint of step `step`, never of a diverged state; returns its folder. */
async function saveHealthyCheckpoint(run: LoadedRun, step: number): Promise<string> {
  const { options, policy, trainer } = run;
  // Every weight, the value head and the optimiser moments, checked on the GPU.
  const bad = await nonFiniteState(policy, trainer.optimizer);
  if (bad.length) {
    throw new Error(
      `step ${step}: training diverged — ${bad.length} tensor(s) of the checkpoint hold non-finite values (${
        bad.slice(0, 3).join("; ")
      }${bad.length > 3 ? "; …" : ""}); not saved, the last good checkpoint in ${options.outDir} stays (try a lower ` +
        "--lr or --kl-coef)",
    );
  }
  const runState = { step, prompts: run.prompts.length };
  return await saveCheckpoint(options.outDir, step, policy, await trainer.stateDict(), runState, {
    totalLimit: options.saveTotalLimit,
    sideFilesFrom: options.policyDir,
  });
}

/** Writes report.html for a run that reached step `last`; returns its path. */
async function writeRunReport(run: LoadedRun, last: number, logs: RunLogs): Promise<string> {
  const { options, config } = run;
  const label = run.rewardModel.labels[run.labelIndex];
  const report = `${options.outDir}/report.html`;
  await writeReport(
    report,
    options.title ?? `RLHF: ${baseName(options.policyDir)} steered by ${baseName(options.rewardDir)} ("${label}")`,
    {
      policy: options.policyDir,
      reward: `${options.rewardDir} (label "${label}", ${options.rewardKind ?? "prob"})`,
      steps: `${last} of ${options.steps}`,
      "batch size / mini-batch": `${config.batch_size} / ${config.mini_batch_size}`,
      "learning rate": String(config.learning_rate),
      "max new tokens": String(options.maxNewTokens),
      date: new Date().toISOString(),
    },
    logs.metrics,
    logs.samples,
  );
  return report;
}
