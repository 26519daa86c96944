/**
 * Progress for long runs (PPO steps, the demo's pretraining): the time of the latest step and an ETA from the
 * recent pace. The first step of a run also compiles the GPU kernels it uses, so it is never part of the pace.
 * @module
 */

import type { DeviceHandle } from "../engine/device.ts";
import { runtime } from "../engine/tensor.ts";

/** Whether the backend compiles kernels on first use (every WebGPU backend; not the CPU backend). */
export function compilesKernels(h: Pick<DeviceHandle, "backend">): boolean {
  return h.backend !== "cpu";
}

/** How long the first use of the GPU kernels takes on this device, for the line that announces it. */
export function compileNote(h: Pick<DeviceHandle, "graphicsApi" | "isFallbackAdapter">): string {
  if (h.graphicsApi === "gl" && h.isFallbackAdapter) {
    return "minutes on wgpu's OpenGL backend, until Mesa's shader cache holds them";
  }
  return h.isFallbackAdapter ? "seconds on a CPU adapter" : "a few seconds";
}

/** `83.4` → "1m23s"; `3723` → "1h02m"; under a minute "12.3s". */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  if (seconds < 60) return `${seconds.toFixed(1)}s`;
  const s = Math.round(seconds);
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  const m = Math.round(s / 60);
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}m`;
}

/** What {@linkcode StepClock.tick} reports. */
export interface StepTiming {
  /** Seconds per step over the steps since the previous tick (the latest step when ticking every step). */
  stepSeconds: number;
  /**
   * Estimated seconds until `total` steps are done (0 when done); NaN after the first tick while steps remain, since
   * that tick's pace includes the kernel compilation.
   */
  etaSeconds: number;
  /** Seconds since the clock started. */
  elapsedSeconds: number;
}

/**
 * Times steps `start+1 … total`. Call {@linkcode tick} after step `n` completes (every step, or every few steps
 * after a readback). The ETA uses the pace of the last `window` ticked steps after the first tick, which holds the
 * kernel compilation and so is never part of the pace.
 */
export class StepClock {
  private readonly t0: number;
  private lastTime: number;
  private lastStep: number;
  /** [steps, seconds] of the later ticks, oldest first. */
  private recent: [number, number][] = [];

  /**
   * Starts the clock of a run.
   * @param total step number at which the run ends (may be lowered later, e.g. by a time cap)
   * @param start steps already done before the clock started (a resumed run)
   * @param window how many recent steps set the pace (default 10)
   * @param now the clock in milliseconds (default `performance.now`)
   */
  constructor(
    public total: number,
    readonly start = 0,
    readonly window = 10,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.lastStep = start;
    this.t0 = this.lastTime = now();
  }

  /** Records that steps up to `step` are done and returns the latest pace and the ETA. */
  tick(step: number): StepTiming {
    const now = this.now();
    const steps = Math.max(1, step - this.lastStep);
    const secs = (now - this.lastTime) / 1000;
    if (this.lastStep !== this.start) this.recent.push([steps, secs]); // the first tick holds the compilation
    this.lastStep = step;
    this.lastTime = now;
    let n = 0, t = 0;
    for (let i = this.recent.length - 1; i >= 0 && n < this.window; i--) {
      n += this.recent[i][0];
      t += this.recent[i][1];
    }
    if (this.recent.length > 64) this.recent.splice(0, this.recent.length - 64);
    const left = Math.max(0, this.total - step);
    return {
      stepSeconds: secs / steps,
      etaSeconds: left === 0 ? 0 : n > 0 ? left * t / n : NaN,
      elapsedSeconds: (now - this.t0) / 1000,
    };
  }
}

/** A text progress bar of `width` cells, `frac` of them full. */
export function progressBar(frac: number, width = 24): string {
  const k = Math.round(Math.max(0, Math.min(1, frac)) * width);
  return "█".repeat(k) + "░".repeat(width - k);
}

/** The per-step progress line of a PPO run (redrawn in place on a terminal) and the first step's compile note. */
export class ProgressLog {
  readonly #tty = Deno.stderr.isTerminal();
  readonly #startedAt = performance.now();
  readonly #clock: StepClock;
  readonly #runtime = runtime();
  readonly #kernelsBefore = this.#runtime.stats.pipelines;
  #tokens = 0;

  /** Starts timing a run of steps `start + 1 … totalSteps`; lines go to `log` (or in place on a terminal). */
  constructor(readonly totalSteps: number, readonly start: number, readonly log: (line: string) => void) {
    this.#clock = new StepClock(totalSteps, start);
  }

  /** Says that the first step compiles the GPU kernels. */
  announceCompilation(step: number): void {
    if (!compilesKernels(this.#runtime.handle)) return;
    this.log(
      `step ${step} compiles the GPU kernels for generation, scoring and PPO on first use (${
        compileNote(this.#runtime.handle)
      }); later steps are faster`,
    );
  }

  /** Ends the in-place line on a terminal, so that a log line does not overwrite it. */
  endLine(): void {
    if (this.#tty) Deno.stderr.writeSync(new TextEncoder().encode("\n"));
  }

  /** Shows step `step`'s reward, KL, pace, ETA and throughput (and, after the first step, its compile time). */
  stepDone(step: number, stats: Record<string, number>, responses: number[][]): void {
    this.#tokens += responses.reduce((s, r) => s + r.length, 0);
    const elapsed = (performance.now() - this.#startedAt) / 1000;
    const time = this.#clock.tick(step);
    const line = `${progressBar(step / this.totalSteps)} step ${step}/${this.totalSteps}  ` +
      `reward ${stats["env/reward_mean"].toFixed(4)}  kl ${stats["objective/kl"].toFixed(4)}  ` +
      `${time.stepSeconds.toFixed(2)} s/step  ETA ${formatDuration(time.etaSeconds)}  ` +
      `${(this.#tokens / elapsed).toFixed(1)} tok/s`;
    if (this.#tty) Deno.stderr.writeSync(new TextEncoder().encode(`\r${line}\x1b[K`));
    else this.log(line);
    if (step - this.start === 1) {
      this.endLine();
      const kernels = this.#runtime.stats.pipelines - this.#kernelsBefore;
      const compiled = this.#runtime.handle.backend === "cpu" ? "" : `, compiling ${kernels} GPU kernels`;
      this.log(`step ${step} took ${formatDuration(time.stepSeconds)}${compiled}`);
    }
  }
}
