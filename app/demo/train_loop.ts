/**
 * The optimisation loop shared by the demo's trainers (`app/demo/pretrain.ts`, `app/demo/classifier.ts`):
 * AdamW with linear warm-up and cosine decay, every step in `tidy` (GPU memory stays flat), losses
 * read back only every `logEvery` steps (one round trip per window) with the pace and an ETA, and an opt-in
 * wall-clock cap (off by default, so the demo trains the same steps on every machine).
 * @module
 */

import { readAll, runtime, type Tensor, tidy } from "../../engine/tensor.ts";
import { backward } from "../../engine/autograd.ts";
import type { AdamW } from "../../engine/optim.ts";
import { shuffled } from "./data.ts";
import { compilesKernels, formatDuration, StepClock } from "../progress.ts";

/** A progress sink (default: stderr). */
export type Log = (line: string) => void;

/** Default progress sink: one line on stderr. */
export const stderrLog: Log = (line: string): void => console.error(line);

/** Learning rate at `step` (0-based): linear warm-up, then cosine decay to `minRatio · peak`. */
export function lrAt(step: number, total: number, peak: number, warmup: number, minRatio: number): number {
  if (step < warmup) return peak * (step + 1) / warmup;
  const t = total > warmup ? (step - warmup) / (total - warmup) : 1;
  return peak * (minRatio + (1 - minRatio) * 0.5 * (1 + Math.cos(Math.PI * Math.min(1, t))));
}

/**
 * Step budget under a time cap: after a loss readback at `step` (steps done), `elapsed` seconds in, where
 * `windowSteps` recent steps took `windowSeconds`, the total number of steps that fits in `maxSeconds`
 * (never more than `planned`, never fewer than `step`).
 */
export function fitSteps(
  planned: number,
  step: number,
  elapsed: number,
  windowSteps: number,
  windowSeconds: number,
  maxSeconds: number,
): number {
  if (!(maxSeconds > 0) || windowSteps <= 0) return planned;
  const perStep = windowSeconds / windowSteps;
  return Math.max(step, Math.min(planned, step + Math.floor((maxSeconds - elapsed) / perStep)));
}

/** Endless batches of `size` items (full batches only, unless fewer items exist), reshuffled (seeded) every epoch. */
export function* batches<T>(items: readonly T[], size: number, seed: number): Generator<T[]> {
  for (let epoch = 0;; epoch++) {
    const s = shuffled(items, seed + epoch * 7919);
    for (let i = 0; i + size <= s.length || (i === 0 && s.length > 0); i += size) yield s.slice(i, i + size);
  }
}

/** Mean of the last `n` values (NaN when empty). */
export function tailMean(values: readonly number[], n: number): number {
  const tail = values.slice(-Math.max(1, n));
  return tail.length ? tail.reduce((a, b) => a + b, 0) / tail.length : NaN;
}

/** Seconds since `t0` (a `performance.now()` value). */
export function seconds(t0: number): number {
  return (performance.now() - t0) / 1000;
}

/** Schedule settings of {@linkcode trainLoop}. */
export interface LoopConfig {
  /** Peak learning rate. */
  lr: number;
  /** Linear warm-up steps. */
  warmupSteps: number;
  /** Final learning rate as a fraction of the peak. */
  minLrRatio: number;
  /** Read back and print the mean loss every this many steps. */
  logEvery: number;
  /** Opt-in wall-clock cap in seconds (0 = none, the default): cuts the schedule and says so. */
  maxSeconds: number;
}

/**
 * The optimisation loop: `lossFn` builds one batch's loss (inside a `tidy` scope); backward, AdamW step
 * and gradient release follow. Losses are kept on the GPU and read back, averaged, after the first step (which
 * compiles the kernels; the line says how many) and then every `logEvery` steps, with the pace and
 * an ETA. An opt-in time cap (`maxSeconds` > 0) may shorten the run, and says so when it does. Returns every
 * step's loss and the steps run; disposes `opt`.
 */
export async function trainLoop(
  name: string,
  planned: number,
  c: LoopConfig,
  opt: AdamW,
  t0: number,
  log: Log,
  lossFn: () => Tensor,
): Promise<{ losses: number[]; steps: number }> {
  const losses: number[] = [];
  let window: Tensor[] = [];
  const progress = new LoopProgress(name, planned, c, log);
  try {
    let step = 0;
    for (; step < progress.total; step++) {
      opt.lr = lrAt(step, progress.total, c.lr, c.warmupSteps, c.minLrRatio);
      window.push(tidy(() => {
        const loss = lossFn();
        backward(loss);
        opt.step();
        opt.zeroGrad();
        return loss.detach();
      }));
      if (step !== 0 && (step + 1) % c.logEvery !== 0 && step + 1 !== progress.total) continue;
      const values = await readAll(window);
      window.forEach((t) => t.dispose());
      const mean = values.reduce((s, v) => s + v[0], 0) / values.length;
      losses.push(...values.map((v) => v[0]));
      window = [];
      progress.report(step, mean, opt.lr, seconds(t0));
    }
    return { losses, steps: step };
  } finally {
    window.forEach((t) => t.dispose());
    opt.dispose();
  }
}

/** {@linkcode trainLoop}'s progress lines, and the total steps an opt-in time cap leaves. */
class LoopProgress {
  /** Steps to run (planned, or fewer under the time cap). */
  total: number;
  #firstStep = 0;
  #firstTime = 0;
  #capSaid = false;
  readonly #runtime = runtime();
  readonly #kernelsBefore = this.#runtime.stats.pipelines;
  readonly #clock: StepClock;

  constructor(readonly name: string, readonly planned: number, readonly c: LoopConfig, readonly log: Log) {
    this.total = planned;
    this.#clock = new StepClock(planned);
  }

  /** Logs step `step` (0-based) with the mean loss since the last line; `now` is the loop's elapsed seconds. */
  report(step: number, mean: number, lr: number, now: number): void {
    const { name, c } = this;
    // The first step includes shader compilation; the step time is measured from its end on.
    if (this.#firstStep === 0) [this.#firstStep, this.#firstTime] = [step + 1, now];
    else if (c.maxSeconds > 0) {
      const measured = step + 1 - this.#firstStep;
      this.total = fitSteps(this.planned, step + 1, now, measured, now - this.#firstTime, c.maxSeconds);
      if (this.total < this.planned && !this.#capSaid) {
        this.#capSaid = true;
        this.log(
          `${name}: time cap ${c.maxSeconds}s (maxSeconds): training cut to ${this.total} of ${this.planned} steps`,
        );
      }
    }
    this.#clock.total = this.total;
    const time = this.#clock.tick(step + 1);
    let line = `${name} step ${step + 1}/${this.total} loss ${mean.toFixed(3)} lr ${lr.toExponential(2)}  ` +
      `${time.stepSeconds.toFixed(2)} s/step  ${formatDuration(now)}`;
    if (step === 0 && compilesKernels(this.#runtime.handle)) {
      line += ` (the first step compiled ${this.#runtime.stats.pipelines - this.#kernelsBefore} GPU kernels)`;
    } else if (step > 0 && step + 1 < this.total) line += `  ETA ${formatDuration(time.etaSeconds)}`;
    this.log(line);
  }
}
