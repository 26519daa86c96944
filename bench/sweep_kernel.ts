/**
 * The sweep of one kernel on one shape, shared by the matmul sweep in `bench/sweep.ts` and the attention sweep in
 * `bench/sweep_attention.ts`: forces each candidate setting, checks it against the default setting's output and
 * times it, then picks the fastest correct one.
 * @module
 */

import { abs, max, noGrad, readAll, runtime, sub, sum, type Tensor, tidy } from "../engine/mod.ts";
import { type GpuTiming, now, type Result, sig, sync, timeGpu, TimeoutError, withTimeout } from "./lib.ts";

// ------------------------------------------------------------------ helpers

/** Waits for the GPU queue to drain. */
/** Writes a progress line to stderr. */
export const log = (m: string): void => console.error(`[sweep] ${m}`);
/** The message of an error (or the value as a string). */
export const errMsg = (e: unknown): string => e instanceof Error ? e.message : String(e);

/** Max |a − b| over pairs of tensors (NaN when any difference is not finite) and max |ref|. */
export async function compare(outs: Tensor[], refs: Tensor[]): Promise<{ diff: number; refMax: number }> {
  const red = noGrad(() =>
    tidy(() =>
      outs.flatMap((o, i) => {
        const d = abs(sub(o, refs[i]));
        return [max(d, null), sum(d), max(abs(refs[i]), null)];
      })
    )
  );
  const vals = (await readAll(red)).map((a) => a[0]);
  for (const t of red) t.dispose();
  let diff = 0, refMax = 0;
  for (let i = 0; i < vals.length; i += 3) {
    diff = Number.isFinite(vals[i + 1]) ? Math.max(diff, vals[i]) : NaN;
    refMax = Math.max(refMax, vals[i + 2]);
    if (Number.isNaN(diff)) break;
  }
  return { diff, refMax };
}

// ------------------------------------------------------------------ the sweep of one kernel on one shape

/** A setting to force: a label, what to report and how to apply it (null problem = valid on this device). */
export interface Candidate {
  label: string;
  setting: unknown;
  info: Result;
  problem: string | null;
  apply(): void;
}

/** What one kernel sweep needs: outputs to check (caller disposes), one timed iteration, the candidates. */
export interface KernelSweep {
  candidates: Candidate[];
  default: { setting: unknown; info: Result };
  produce(): Tensor[];
  step(): void;
  reset(): void;
  /** FLOPs per iteration, for TFLOP/s (matmul). */
  flops?: number;
}

/** Shared run state. */
export interface Run {
  small: boolean;
  overheadMs: number;
  /** Absolute `now()` at which the whole budget is spent. */
  endAt: number;
  /** Set after a hard timeout: the GPU may still be busy, so nothing else runs. */
  aborted: string | null;
}

/** timeGpu with the sweep's knobs; the correctness run before it already compiled the pipelines. */
export function timing(run: Run, step: () => void, budgetMs: number, warmup = 0): Promise<GpuTiming> {
  return timeGpu(step, sync, {
    warmup,
    repeats: 3,
    targetMs: run.small ? 5 : Math.min(100, Math.max(20, budgetMs / 6)),
    maxIters: run.small ? 20 : 1000,
    overheadMs: run.overheadMs,
    budgetMs,
    flush: () => runtime().flush(),
  });
}

/**
 * Checks every candidate once against the default setting's output, times it, and picks the fastest correct one
 * (max abs diff ≤ 1e-3 · max |reference| + 1e-5). Stops at `endAt` (later candidates are `skipped`).
 */
export async function sweepKernel(run: Run, k: KernelSweep, endAt: number): Promise<Result> {
  const t0 = now();
  k.reset();
  let refs: Tensor[] = [];
  const rows: Result[] = [];
  const perf = (ms: number): Result => ({ ms: sig(ms), ...(k.flops ? { tflops: sig(k.flops / (ms * 1e9)) } : {}) });
  try {
    const hard = (budget: number) => Math.max(30_000, 4 * budget);
    const defBudget = (endAt - now()) / (k.candidates.filter((c) => !c.problem).length + 1);
    const def = await withTimeout(
      (async () => {
        refs = k.produce();
        await sync();
        return await timing(run, k.step, defBudget, 1); // the first timing also fills the buffer pool
      })(),
      hard(defBudget),
      "default setting",
    );
    const result: Result = {
      default: { setting: k.default.setting, ...k.default.info, ...perf(def.ms), min_ms: sig(def.minMs) },
    };
    for (let i = 0; i < k.candidates.length; i++) {
      const c = k.candidates[i];
      const row: Result = { label: c.label, setting: c.setting, ...c.info };
      rows.push(row);
      if (c.problem) {
        row.skipped = c.problem;
        continue;
      }
      const left = endAt - now();
      if (run.aborted || left <= 0) {
        row.skipped = run.aborted ?? "time budget spent";
        continue;
      }
      const budget = left / k.candidates.slice(i).filter((x) => !x.problem).length;
      try {
        c.apply();
        const r = await withTimeout(
          (async () => {
            const outs = k.produce();
            try {
              const cmp = await compare(outs, refs);
              return { cmp, t: await timing(run, k.step, budget * 0.8) };
            } finally {
              for (const o of outs) o.dispose();
            }
          })(),
          hard(budget),
          c.label,
        );
        const ok = Number.isFinite(r.cmp.diff) && r.cmp.diff <= 1e-3 * r.cmp.refMax + 1e-5;
        Object.assign(row, perf(r.t.ms), { min_ms: sig(r.t.minMs), iters: r.t.iters, repeats: r.t.repeats });
        Object.assign(row, { max_abs_diff: sig(r.cmp.diff, 3), ref_abs_max: sig(r.cmp.refMax, 3), ok });
      } catch (e) {
        row.error = errMsg(e);
        if (e instanceof TimeoutError) run.aborted = `not run: ${c.label} timed out (the GPU may still be busy)`;
      } finally {
        k.reset();
      }
    }
    const good = rows.filter((r) => r.ok === true && typeof r.ms === "number") as (Result & { ms: number })[];
    const best = good.reduce<(Result & { ms: number }) | null>((b, r) => (!b || r.ms < b.ms ? r : b), null);
    const defMs = (result.default as { ms: number }).ms;
    result.best = best
      ? { label: best.label, setting: best.setting, ...perf(best.ms), speedup_vs_default: sig(defMs / best.ms, 3) }
      : null;
    result.candidates = rows;
    result.wall_s = sig((now() - t0) / 1000, 3);
    return result;
  } catch (e) {
    if (e instanceof TimeoutError) run.aborted = `not run: ${e.message}`;
    return { error: errMsg(e), candidates: rows, wall_s: sig((now() - t0) / 1000, 3) };
  } finally {
    k.reset();
    for (const r of refs) r.dispose();
  }
}
