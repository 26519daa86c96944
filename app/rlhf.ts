/**
 * The RLHF run behind `train.ts`: TRL's generate → score → step loop over a prompt set, with a
 * sequence classifier as the reward model, `metrics.jsonl` per step, atomic checkpoints every N
 * steps (never of a diverged state), exact resumption (from the newest intact checkpoint, logs cut
 * back to it), one run per output folder (locked), clean Ctrl-C handling and a final `report.html`.
 * @module
 */

import { initEngine, runtime } from "../engine/tensor.ts";
import { writeFileAtomic } from "../formats/fs_atomic.ts";
import { loadGPT2, loadSequenceClassifier } from "../models/auto.ts";
import { CausalLMWithValueHead } from "../models/value_head.ts";
import { loadTokenizer } from "../models/tokenizer/mod.ts";
import { classifyTexts, promptFormat } from "../models/text.ts";
import { ppoConfig, type PPOConfigInput } from "../ppo/config.ts";
import { SeededRng } from "../engine/random.ts";
import { PPOTrainer } from "../ppo/trainer.ts";
import { loadCheckpoint, saveCheckpoint } from "./checkpoint.ts";
import { divergence, negativeKlWarning, nonFiniteState } from "./health.ts";
import { lockOutDir, prepareOutDir } from "./outdir.ts";
import { type MetricsRow, type SampleRow, writeReport } from "./report.ts";
import { compileNote, formatDuration, StepClock } from "./progress.ts";

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

/**
 * The rows of a run's JSONL log (`metrics.jsonl`, `samples.jsonl`; none when the file is missing). A last line
 * without its newline that does not parse — torn when a crash or a full disk stopped the append — is dropped with a
 * line to `log`; any other bad line (not JSON, or without an integer "step") is an error naming file and line.
 */
export async function readRunLog<T extends { step: number }>(
  path: string,
  log: (line: string) => void = () => {},
): Promise<T[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw new Error(`${path}: unreadable (${(e as Error).message})`);
  }
  const lines = text.split("\n");
  const rows: T[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (!line.trim()) continue;
    try {
      const v = JSON.parse(line);
      if (!v || typeof v !== "object" || !Number.isInteger(v.step)) throw new Error('no integer "step"');
      rows.push(v as T);
    } catch (e) {
      if (i === lines.length - 1) {
        log(`${path}: dropped a torn last line (line ${i + 1}, ${line.length} characters without a newline)`);
        continue;
      }
      throw new Error(`${path}:${i + 1}: bad line (${(e as Error).message}); remove or repair it to resume`);
    }
  }
  return rows;
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

function bar(frac: number, width = 24): string {
  const k = Math.round(Math.max(0, Math.min(1, frac)) * width);
  return "█".repeat(k) + "░".repeat(width - k);
}

/**
 * Runs PPO; see {@linkcode RLHFOptions}. Holds the output folder's lock for the whole run; refuses a folder that
 * already holds a run unless `resume` or `overwrite` is set.
 */
export async function runRLHF(o: RLHFOptions): Promise<RLHFResult> {
  const log = o.log ?? ((l: string) => console.error(l));
  const cfg = ppoConfig(o.ppo);
  if (!Number.isInteger(o.steps) || o.steps < 1) throw new Error("steps must be a positive integer");
  if (!Number.isInteger(o.maxNewTokens) || o.maxNewTokens < 1) throw new Error("max new tokens must be ≥ 1");
  if (o.prompts.length === 0) throw new Error("no prompts");
  if (o.resume && o.overwrite) throw new Error("resume and overwrite exclude each other");
  const lock = await lockOutDir(o.outDir, log);
  try {
    if (!o.overwrite) await prepareOutDir(o.outDir, o, log); // refuses a folder holding a run (unless resuming)
    return await runLocked(o, cfg, log);
  } finally {
    await lock.release();
  }
}

async function runLocked(
  o: RLHFOptions,
  cfg: ReturnType<typeof ppoConfig>,
  log: (line: string) => void,
): Promise<RLHFResult> {
  // Load and check everything before any training.
  const [policyTok, rewardTok] = await Promise.all([loadTokenizer(o.policyDir), loadTokenizer(o.rewardDir)]);
  await initEngine({ verbose: false });
  const reward = (await loadSequenceClassifier(o.rewardDir)).eval();
  const labels = reward.labels;
  const labelIdx = labels.findIndex((l) => l.toLowerCase() === o.rewardLabel.toLowerCase());
  if (labelIdx < 0) {
    throw new Error(
      `${o.rewardDir}: reward label "${o.rewardLabel}" not among the model's labels (${labels.join(", ")})`,
    );
  }
  const ckpt = o.resume ? await loadCheckpoint(o.outDir, log) : null;
  if (o.resume && !ckpt) log(`resume: no checkpoint in ${o.outDir}; starting from step 0`);
  const policy = await CausalLMWithValueHead.fromPretrained(ckpt ? ckpt.dir : o.policyDir, cfg.seed);
  const ref = ckpt ? (await loadGPT2(o.policyDir)).eval() : null;
  const fmt = promptFormat(policyTok, policy.model.config);
  const room = policy.model.config.n_positions - o.maxNewTokens;
  const encoded: { text: string; ids: number[] }[] = [];
  let dropped = 0;
  for (const text of o.prompts) {
    try {
      const ids = fmt.encode(text);
      if (ids.length <= room) encoded.push({ text, ids });
      else dropped++;
    } catch {
      dropped++;
    }
  }
  if (dropped) log(`prompts: ${dropped} skipped (empty after tokenization or longer than ${room} tokens)`);
  if (encoded.length === 0) throw new Error("no prompt fits the policy's context");
  const trainer = new PPOTrainer(cfg, policy, ref, fmt);
  const suppressTokens = o.suppressTokens ?? defaultSuppressTokens(policyTok);
  if (suppressTokens.length) {
    const names = suppressTokens.slice(0, 5).map((id) => `${policyTok.idToToken(id) ?? "?"} (${id})`);
    log(
      `sampling: never generating ${names.join(", ")}${suppressTokens.length > 5 ? ", …" : ""}${
        o.suppressTokens === undefined ? " — the default for this tokenizer; --suppress-tokens none allows it" : ""
      }`,
    );
  }
  let start = 0;
  if (o.overwrite) await prepareOutDir(o.outDir, o, log); // everything loaded: now replace the previous run
  const metricsFile = `${o.outDir}/metrics.jsonl`, samplesFile = `${o.outDir}/samples.jsonl`;
  let metrics: MetricsRow[] = [];
  let samples: SampleRow[] = [];
  if (ckpt) {
    trainer.loadStateDict(ckpt.trainer);
    start = ckpt.step;
    const allMetrics = await readRunLog<MetricsRow>(metricsFile, log);
    metrics = allMetrics.filter((r) => r.step <= start);
    samples = (await readRunLog<SampleRow>(samplesFile, log)).filter((r) => r.step <= start);
    if (allMetrics.length > metrics.length) {
      log(
        `${metricsFile}: dropped ${
          allMetrics.length - metrics.length
        } rows after step ${start} (not in the checkpoint)`,
      );
    }
    log(`resumed from ${ckpt.dir} (step ${start})`);
  }
  const toJsonl = (rows: unknown[]) => rows.map((r) => JSON.stringify(r) + "\n").join("");
  await writeFileAtomic(metricsFile, toJsonl(metrics));
  await writeFileAtomic(samplesFile, toJsonl(samples));
  await writeFileAtomic(`${o.outDir}/run.json`, JSON.stringify({ ...o, prompts: undefined, log: undefined }, null, 2));

  let interrupted = false;
  const onSigint = () => {
    if (interrupted) Deno.exit(130);
    interrupted = true;
    log("\ninterrupt: finishing the current step, then saving a checkpoint (Ctrl-C again to abort)");
  };
  try {
    Deno.addSignalListener("SIGINT", onSigint);
  } catch { /* signals unsupported here */ }
  const saveEvery = o.saveEvery ?? 10;
  const sampleEvery = o.sampleEvery ?? Math.max(1, Math.floor(o.steps / 10));
  const tty = Deno.stderr.isTerminal();
  const t0 = performance.now();
  const clock = new StepClock(o.steps, start);
  let step = start;
  let tokens = 0;
  let warnedKl = false;
  const save = async () => {
    // Never save a diverged state: every weight, the value head and the optimiser moments, checked on the GPU.
    const bad = await nonFiniteState(policy, trainer.optimizer);
    if (bad.length) {
      throw new Error(
        `step ${step}: training diverged — ${bad.length} tensor(s) of the checkpoint hold non-finite values (${
          bad.slice(0, 3).join("; ")
        }${bad.length > 3 ? "; …" : ""}); not saved, the last good checkpoint in ${o.outDir} stays (try a lower ` +
          "--lr or --kl-coef)",
      );
    }
    const run = { step, prompts: encoded.length };
    const dir = await saveCheckpoint(o.outDir, step, policy, await trainer.stateDict(), run, {
      totalLimit: o.saveTotalLimit,
      sideFilesFrom: o.policyDir,
    });
    return dir;
  };
  try {
    const rt = runtime();
    const kernelsBefore = rt.stats.pipelines;
    if (start < o.steps) {
      log(
        `step ${start + 1} compiles the GPU kernels for generation, scoring and PPO on first use (${
          compileNote(rt.handle)
        }); later steps are faster`,
      );
    }
    for (step = start + 1; step <= o.steps; step++) {
      const ts = performance.now();
      const idx = batchIndices(encoded.length, cfg.batch_size, step, cfg.seed);
      const queries = idx.map((i) => encoded[i].ids);
      const gen = await trainer.generate(queries, {
        maxNewTokens: o.maxNewTokens,
        minNewTokens: o.minNewTokens,
        suppressTokens,
        seed: (Math.imul(cfg.seed + 1, 0x9e3779b1) + step) >>> 0,
      });
      const texts = gen.responses.map((r) => fmt.decode(r));
      const scoreInput = texts.map((t, i) => o.scoreWithQuery ? `${encoded[idx[i]].text} ${t}` : t);
      const cls = await classifyTexts(reward, rewardTok, scoreInput);
      const scores = (o.rewardKind === "logit" ? cls.logits : cls.probabilities).map((p) => p[labelIdx]);
      if (!scores.every(Number.isFinite)) {
        throw new Error(`step ${step}: the reward model returned a non-finite score; stopping before training on it`);
      }
      const stats = await trainer.step(queries, gen.responses, scores);
      const wrong = divergence(stats);
      if (wrong) {
        throw new Error(
          `step ${step}: ${wrong} — training diverged (try a lower --lr or --kl-coef); ` +
            `the last checkpoint in ${o.outDir} is from before this step`,
        );
      }
      const klWarning = warnedKl ? null : negativeKlWarning(stats, step);
      if (klWarning) {
        warnedKl = true;
        if (tty) Deno.stderr.writeSync(new TextEncoder().encode("\n"));
        log(klWarning);
      }
      tokens += gen.responses.reduce((s, r) => s + r.length, 0);
      const row: MetricsRow = { step, ...stats, "time/step": (performance.now() - ts) / 1000 };
      metrics.push(row);
      await Deno.writeTextFile(metricsFile, JSON.stringify(row) + "\n", { append: true });
      if (step === 1 || step % sampleEvery === 0 || step === o.steps) {
        // The reference model's replies to the same prompts, same settings and seed, scored alike (TRL's ref_response).
        const shown = Math.min(6, texts.length);
        const refGen = await trainer.generateReference(queries.slice(0, shown), {
          maxNewTokens: o.maxNewTokens,
          minNewTokens: o.minNewTokens,
          suppressTokens,
          seed: (Math.imul(cfg.seed + 1, 0x9e3779b1) + step) >>> 0,
        });
        const refTexts = refGen.responses.map((r) => fmt.decode(r));
        const refCls = await classifyTexts(
          reward,
          rewardTok,
          refTexts.map((t, i) => o.scoreWithQuery ? `${encoded[idx[i]].text} ${t}` : t),
        );
        const refScores = (o.rewardKind === "logit" ? refCls.logits : refCls.probabilities).map((p) => p[labelIdx]);
        const rows = texts.slice(0, shown).map((response, i) => ({
          step,
          prompt: encoded[idx[i]].text,
          response,
          score: scores[i],
          refResponse: refTexts[i],
          refScore: refScores[i],
        }));
        samples.push(...rows);
        await Deno.writeTextFile(samplesFile, rows.map((r) => JSON.stringify(r) + "\n").join(""), { append: true });
      }
      const el = (performance.now() - t0) / 1000;
      const done = step - start;
      const time = clock.tick(step);
      const line = `${bar(step / o.steps)} step ${step}/${o.steps}  reward ${stats["env/reward_mean"].toFixed(4)}  ` +
        `kl ${stats["objective/kl"].toFixed(4)}  ${time.stepSeconds.toFixed(2)} s/step  ETA ${
          formatDuration(time.etaSeconds)
        }  ${(tokens / el).toFixed(1)} tok/s`;
      if (tty) Deno.stderr.writeSync(new TextEncoder().encode(`\r${line}\x1b[K`));
      else log(line);
      if (done === 1) {
        if (tty) Deno.stderr.writeSync(new TextEncoder().encode("\n"));
        log(
          `step ${step} took ${formatDuration(time.stepSeconds)}, compiling ${
            rt.stats.pipelines - kernelsBefore
          } GPU kernels`,
        );
      }
      const stopHere = interrupted || (o.stopAfter !== undefined && done >= o.stopAfter);
      if (step % saveEvery === 0 || step === o.steps || stopHere) {
        const dir = await save();
        if (tty) Deno.stderr.writeSync(new TextEncoder().encode("\n"));
        log(`saved ${dir}`);
      }
      if (stopHere) break;
    }
  } finally {
    try {
      Deno.removeSignalListener("SIGINT", onSigint);
    } catch { /* ignore */ }
  }
  const last = Math.min(step, o.steps);
  const report = `${o.outDir}/report.html`;
  await writeReport(
    report,
    o.title ?? `RLHF: ${baseName(o.policyDir)} steered by ${baseName(o.rewardDir)} ("${labels[labelIdx]}")`,
    {
      policy: o.policyDir,
      reward: `${o.rewardDir} (label "${labels[labelIdx]}", ${o.rewardKind ?? "prob"})`,
      steps: `${last} of ${o.steps}`,
      "batch size / mini-batch": `${cfg.batch_size} / ${cfg.mini_batch_size}`,
      "learning rate": String(cfg.learning_rate),
      "max new tokens": String(o.maxNewTokens),
      date: new Date().toISOString(),
    },
    metrics,
    samples,
  );
  if (interrupted) log(`interrupted after step ${last}; continue with --resume`);
  trainer.dispose();
  for (const p of [...policy.parameters(), ...reward.parameters()]) p.dispose();
  return { step: last, metrics, report, interrupted };
}
