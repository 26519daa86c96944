/**
 * Timing helpers for the GPU benchmarks (`bench/gpu.ts`).
 *
 * GPU work is recorded lazily and only waited for at a sync, and each sync costs a fixed latency
 * (about 11 ms with Deno's built-in WebGPU, ~0.1 ms with Dawn). {@linkcode timeGpu} therefore
 * records many iterations between two syncs, sized so that one batch lasts about `targetMs`, and
 * subtracts the measured latency of one sync ({@linkcode measureSyncOverhead}) from each batch.
 * @module
 */

import { runtime, type Tensor, tensor } from "../engine/tensor.ts";
import type { MatmulTuningPatch } from "../engine/ops/matmul_tuning.ts";
import type { BackendChoice, DawnModule, DeviceOptions } from "../engine/device.ts";

/** Milliseconds since an arbitrary origin (high resolution). */
export function now(): number {
  return performance.now();
}

/** Median of a non-empty list (mean of the two middle values for even lengths). */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Rounds to `digits` significant digits (keeps JSON short); non-finite values pass through. */
export function sig(x: number, digits = 4): number {
  if (!Number.isFinite(x) || x === 0) return x;
  return Number(x.toPrecision(digits));
}

/** Options of {@linkcode timeGpu}. */
export interface GpuTimingOptions {
  /** Untimed iterations first (each followed by a sync; compiles pipelines, fills the pool). Default 1. */
  warmup?: number;
  /** Timed batches; the median is reported. Default 5. */
  repeats?: number;
  /** Wanted length of one timed batch in ms (sets iterations per batch). Default 200. */
  targetMs?: number;
  /** Most iterations in one batch. Default 1000. */
  maxIters?: number;
  /** Latency of one sync in ms, subtracted from every batch. Default 0. */
  overheadMs?: number;
  /** Soft limit on the whole measurement in ms: repeats and batch size shrink to fit. Default Infinity. */
  budgetMs?: number;
  /**
   * Submits recorded work without waiting (e.g. `() => runtime().flush()`). When given, a batch is submitted in
   * about 8 chunks so that the GPU runs while the CPU records the rest.
   */
  flush?: () => void;
}

/** Result of {@linkcode timeGpu}. */
export interface GpuTiming {
  /** Median time per iteration over the batches, ms. */
  ms: number;
  /** Fastest batch's time per iteration, ms. */
  minMs: number;
  /** Iterations per timed batch. */
  iters: number;
  /** Timed batches. */
  repeats: number;
  /** CPU time spent inside `step` per iteration (median batch), ms: when close to `ms`, recording is the bottleneck. */
  cpuMs: number;
}

/**
 * Times `step` (which records GPU work and returns without waiting) by running it `iters` times
 * between syncs. Per-iteration time of a batch = (wall time − `overheadMs`) / iters, floored at 1 %
 * of the raw wall time per iteration (so a mis-estimated overhead never yields zero or negative times).
 * @param step records one iteration of GPU work (may be async, e.g. when it reads back)
 * @param sync waits for all recorded GPU work (e.g. `() => runtime().sync()`)
 * @param options warm-up, repeats, batch sizing and the sync latency to subtract
 * @returns median and best per-iteration times with the batch layout used
 */
export async function timeGpu(
  step: () => void | Promise<void>,
  sync: () => Promise<void>,
  options: GpuTimingOptions = {},
): Promise<GpuTiming> {
  const warmup = options.warmup ?? 1, target = options.targetMs ?? 200, maxIters = options.maxIters ?? 1000;
  const overhead = options.overheadMs ?? 0, budget = options.budgetMs ?? Infinity;
  let repeats = Math.max(1, options.repeats ?? 5);
  const start = now();
  for (let i = 0; i < warmup; i++) {
    await step();
    await sync();
  }
  // Calibration: synced batches of 1, 4, 16, ... iterations until one lasts a quarter of the target (or the
  // budget's third is spent); the last one estimates the cost per iteration, free of one slow outlier.
  await sync();
  let t0 = 0, n = 1, est = 0;
  for (;;) {
    t0 = now();
    for (let i = 0; i < n; i++) await step();
    await sync();
    const wall = now() - t0;
    est = Math.max(wall - overhead, wall * 0.01, 1e-3) / n;
    if (wall >= target / 4 || n >= maxIters || now() - start > budget / 3) break;
    n = Math.min(maxIters, n * 4);
  }
  let iters = Math.max(1, Math.min(maxIters, Math.round(target / est)));
  const left = budget - (now() - start);
  if (Number.isFinite(left)) {
    // Fit repeats × iters × est (+ one sync per batch) into what is left of the budget.
    const perBatch = (n: number) => n * est + overhead;
    while (repeats > 1 && repeats * perBatch(iters) > left) repeats--;
    while (iters > 1 && repeats * perBatch(iters) > left) iters = Math.max(1, Math.floor(iters / 2));
  }
  const samples: number[] = [], cpu: number[] = [];
  const chunk = options.flush ? Math.max(1, Math.ceil(iters / 8)) : Infinity;
  for (let r = 0; r < repeats; r++) {
    let busy = 0;
    t0 = now();
    for (let i = 0; i < iters; i++) {
      const c0 = now();
      await step();
      busy += now() - c0;
      if ((i + 1) % chunk === 0) options.flush?.();
    }
    await sync();
    const wall = now() - t0;
    samples.push(Math.max(wall - overhead, wall * 0.01) / iters);
    cpu.push(busy / iters);
  }
  return { ms: median(samples), minMs: Math.min(...samples), iters, repeats, cpuMs: median(cpu) };
}

/** Options of {@linkcode timeCalls}. */
export interface CallTimingOptions {
  /** Untimed calls first. Default 1. */
  warmup?: number;
  /** Timed calls; the median is reported. Default 3. */
  repeats?: number;
  /** Soft limit in ms: stops repeating once exceeded (at least one timed call runs). Default Infinity. */
  budgetMs?: number;
}

/**
 * Wall time of whole calls that end by waiting for the GPU themselves (e.g. generation, which
 * reads its tokens back): no overhead is subtracted.
 * @param fn one complete call
 * @param options warm-up, repeats and a soft time limit
 * @returns median and best call times in ms
 */
export async function timeCalls(
  fn: () => Promise<unknown>,
  options: CallTimingOptions = {},
): Promise<{ ms: number; minMs: number; repeats: number }> {
  const warmup = options.warmup ?? 1, repeats = Math.max(1, options.repeats ?? 3);
  const budget = options.budgetMs ?? Infinity;
  const start = now();
  for (let i = 0; i < warmup; i++) await fn();
  const samples: number[] = [];
  for (let r = 0; r < repeats; r++) {
    const t0 = now();
    await fn();
    const t = now() - t0;
    samples.push(t);
    // Stop early when another call would overrun the budget.
    if (now() - start + t > budget) break;
  }
  return { ms: median(samples), minMs: Math.min(...samples), repeats: samples.length };
}

/**
 * Latency of one sync: median wall time of `record(); await sync()` where `record` queues a
 * negligible amount of work (so the submit path is the real one).
 * @param record queues a tiny piece of GPU work
 * @param sync waits for the GPU
 * @param n measurements (default 7)
 * @returns median ms
 */
export async function measureSyncOverhead(
  record: () => void,
  sync: () => Promise<void>,
  n = 7,
): Promise<number> {
  record();
  await sync();
  const xs: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = now();
    record();
    await sync();
    xs.push(now() - t0);
  }
  return median(xs);
}

const sigFmt = (x: number) => String(sig(x, 3));

/** Raised by {@linkcode withTimeout}. */
export class TimeoutError extends Error {
  /**
   * Names what timed out and the limit.
   * @param what what timed out
   * @param ms the limit in milliseconds
   */
  constructor(what: string, ms: number) {
    super(`${what} did not finish within ${sigFmt(ms / 1000)} s`);
    this.name = "TimeoutError";
  }
}

/**
 * Resolves like `p`, or rejects with {@linkcode TimeoutError} after `ms` (the work itself is not
 * cancelled). The timer never keeps the process alive after `p` settles.
 * @param p the work
 * @param ms limit in milliseconds (Infinity = none)
 * @param what name used in the error message
 */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  if (!Number.isFinite(ms)) return p;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(what, ms)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/**
 * The checkout's commit: env GIT_COMMIT when set (a copied tree, e.g. on a GPU machine), else `git rev-parse HEAD`
 * (with "-dirty" when tracked files changed), else null.
 */
export async function gitCommit(): Promise<string | null> {
  const fromEnv = Deno.env.get("GIT_COMMIT");
  if (fromEnv) return fromEnv;
  const run = async (args: string[]): Promise<string | null> => {
    try {
      const out = await new Deno.Command("git", { args, stdout: "piped", stderr: "null" }).output();
      return out.success ? new TextDecoder().decode(out.stdout).trim() : null;
    } catch {
      return null;
    }
  };
  const head = await run(["rev-parse", "HEAD"]);
  if (head) {
    const status = await run(["status", "--porcelain", "--untracked-files=no"]);
    return status ? `${head}-dirty` : head;
  }
  return null;
}

/** Command-line options of `bench/gpu.ts`. */
export interface BenchArgs {
  /** Tiny shapes for software adapters and smoke tests. */
  small: boolean;
  /** Benchmark names to run (all when null). */
  only: string[] | null;
  /** Also write the JSON here (rewritten after every benchmark, so partial results survive). */
  out: string | null;
  /** Whole-run time budget in seconds: later benchmarks are skipped once it is spent. */
  budgetS: number;
  /**
   * WebGPU implementation; null: the environment's `RLHF_WEBGPU_BACKEND`, else "webgpu" (GPU microbenchmarks measure
   * WebGPU kernels, so they do not follow auto to the CPU backend on a software adapter unless asked with "auto").
   */
  backend: "webgpu" | "auto" | "deno" | "dawn" | null;
  /** Print the benchmark names and exit. */
  list: boolean;
  /** Also attribute GPU time per kernel with timestamp queries (one extra, profiled iteration). */
  profile: boolean;
  /**
   * Per-benchmark hard timeout in seconds; NaN: the default (4× the benchmark's soft budget, at least 60 s);
   * 0: none (smoke runs on slow adapters, where a timeout says nothing about correctness).
   */
  hardTimeoutS: number;
  /** Matmul kernel-selection knobs applied before the run (JSON of a `MatmulTuningPatch`), or null. */
  tuning: MatmulTuningPatch | null;
}

/**
 * Parses `[--small] [--only a,b] [--out FILE] [--budget-s N] [--hard-timeout-s N] [--backend webgpu|auto|deno|dawn]
 * [--profile] [--list] [--tuning JSON]`
 * (`--flag=value` also works). Throws on unknown flags.
 * @param args `Deno.args`
 */
export function parseBenchArgs(args: readonly string[]): BenchArgs {
  const r: BenchArgs = {
    small: false,
    only: null,
    out: null,
    budgetS: NaN,
    backend: null,
    list: false,
    profile: false,
    hardTimeoutS: NaN,
    tuning: null,
  };
  for (let i = 0; i < args.length; i++) {
    let a = args[i], v: string | undefined;
    const eq = a.indexOf("=");
    if (a.startsWith("--") && eq > 0) [a, v] = [a.slice(0, eq), a.slice(eq + 1)];
    const value = () => {
      const x = v ?? args[++i];
      if (x === undefined) throw new Error(`${a} needs a value`);
      return x;
    };
    switch (a) {
      case "--small":
        r.small = true;
        break;
      case "--list":
        r.list = true;
        break;
      case "--profile":
        r.profile = true;
        break;
      case "--only":
        r.only = value().split(",").map((s) => s.trim()).filter((s) => s);
        break;
      case "--out":
        r.out = value();
        break;
      case "--budget-s": {
        const n = Number(value());
        if (!(n > 0)) throw new Error(`--budget-s must be a positive number of seconds`);
        r.budgetS = n;
        break;
      }
      case "--hard-timeout-s": {
        const n = Number(value());
        if (!(n >= 0)) throw new Error(`--hard-timeout-s must be a number of seconds ≥ 0 (0: none)`);
        r.hardTimeoutS = n;
        break;
      }
      case "--tuning": {
        const t = value();
        try {
          r.tuning = JSON.parse(t);
        } catch (e) {
          throw new Error(`--tuning must be JSON (a MatmulTuningPatch): ${(e as Error).message}`);
        }
        break;
      }
      case "--backend": {
        const b = value();
        if (b !== "webgpu" && b !== "auto" && b !== "deno" && b !== "dawn") {
          throw new Error(`--backend must be webgpu, auto, deno or dawn`);
        }
        r.backend = b;
        break;
      }
      default:
        throw new Error(
          `unknown argument "${
            args[i]
          }" (use --small, --only, --out, --budget-s, --backend, --profile, --list, --tuning)`,
        );
    }
  }
  return r;
}

/**
 * Dawn's npm package; imported only when a benchmark asks for Dawn (a variable, so no tool fetches it ahead). Such a
 * run adds it to deno.lock: leave that out of commits, as `deno task` installs every locked package for every user
 * (tests/setup_test.ts checks).
 */
const DAWN_PACKAGE = "npm:webgpu@0.6.2";

/**
 * `initEngine` options for a `--backend` choice (null: the environment's `RLHF_WEBGPU_BACKEND`, else "webgpu"); for
 * Dawn its module is imported here, as the library leaves that to the program.
 */
export async function engineOptions(backend: BenchArgs["backend"]): Promise<DeviceOptions> {
  const choice = (backend ?? Deno.env.get("RLHF_WEBGPU_BACKEND") ?? "webgpu") as BackendChoice;
  if (choice !== "dawn") return { backend: choice };
  const spec = DAWN_PACKAGE;
  return { backend: "dawn", dawn: await import(spec) as DawnModule };
}

// ------------------------------------------------------------------ data helpers

/**
 * Seeded random token ids in [0, vocab).
 * @param rows number of rows
 * @param cols ids per row
 * @param vocab vocabulary size
 * @param seed any integer
 */
export function randIds(rows: number, cols: number, vocab: number, seed: number): number[][] {
  let s = (Math.imul(seed, 2246822519) + 1) >>> 0;
  return Array.from({ length: rows }, () =>
    Array.from({ length: cols }, () => {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      return (s >>> 8) % vocab;
    }));
}

// ------------------------------------------------------------------ suite runner

/** What every benchmark gets. */
export interface Ctx {
  /** Tiny shapes (`--small`). */
  small: boolean;
  /** Latency of one sync, ms (subtracted from timed batches). */
  overheadMs: number;
  /** Milliseconds left of this benchmark's soft budget (negative once spent). */
  left(): number;
  /** Writes a progress line to stderr. */
  log(msg: string): void;
  /** Whether `--profile` asked for per-kernel GPU times (see {@linkcode profileOnce}). */
  profile: boolean;
}

/** One benchmark's figures (or `{error}` / `{skipped}`). */
export type Result = Record<string, unknown>;

/** A named benchmark. */
export interface Bench {
  /** Key in the report's `results`. */
  name: string;
  /** Soft budget in seconds at full size (a quarter with `--small`); timing shrinks repeats to fit. */
  capS: number;
  /** Runs it; must free its GPU memory before returning or throwing. */
  run(ctx: Ctx): Promise<Result>;
}

/**
 * How long the smoke tests let a benchmark subprocess run before calling it hung: far above the slowest adapter's
 * time (wgpu's GL backend with a cold shader cache: about 4 minutes for `gpu.ts --small`), so never a speed check.
 */
export const HANG_GUARD_MS = 20 * 60_000;

/** Options of {@linkcode runSuite}. */
export interface SuiteOptions {
  /** Tiny shapes. */
  small: boolean;
  /** Per-kernel GPU times (`--profile`). */
  profile?: boolean;
  /** Latency of one sync, ms. */
  overheadMs: number;
  /** Whole-run budget, ms: later benchmarks are skipped once it is spent. */
  budgetMs: number;
  /** Per-benchmark hard timeout, ms: undefined/NaN for the default, 0 for none. */
  hardTimeoutMs?: number;
  /** `now()` at the start of the run. */
  started: number;
  /** Where results go, by benchmark name. */
  results: Record<string, Result>;
  /** Progress output. */
  log(msg: string): void;
  /** Called after every benchmark (e.g. to save partial results). */
  afterEach(): Promise<void>;
}

/**
 * Runs benchmarks one after another on the engine's runtime. Each runs under its soft budget and a hard
 * timeout (4× the budget, at least 60 s, and at most 60 s past the whole-run budget; `hardTimeoutMs` overrides it,
 * 0 for none); an error becomes
 * `{error}`; after a timeout the remaining ones are `{skipped}` (the GPU may still be busy). Every entry
 * gets `peak_bytes` (live-tensor high-water mark above what was live before), `pool_bytes` (pool size before
 * trimming) and `wall_s`; the buffer pool is trimmed between benchmarks.
 * @param benches the benchmarks, in run order
 * @param o budgets, sync latency, the results object and hooks
 */
export async function runSuite(benches: readonly Bench[], o: SuiteOptions): Promise<void> {
  const rt = runtime();
  let aborted: string | null = null;
  for (const b of benches) {
    const spent = now() - o.started;
    if (aborted) {
      o.results[b.name] = { skipped: aborted };
      continue;
    }
    if (spent > o.budgetMs) {
      o.results[b.name] = { skipped: `time budget of ${o.budgetMs / 1000} s spent (raise it with --budget-s)` };
      o.log(`${b.name}: skipped (time budget spent)`);
      continue;
    }
    const capMs = Math.min(b.capS * 1000 * (o.small ? 0.25 : 1), o.budgetMs - spent);
    const hardMs = o.hardTimeoutMs === 0
      ? Infinity
      : Number.isFinite(o.hardTimeoutMs)
      ? o.hardTimeoutMs!
      : Math.min(Math.max(60_000, 4 * capMs), o.budgetMs - spent + 60_000);
    const t0 = now();
    const ctx: Ctx = {
      small: o.small,
      overheadMs: o.overheadMs,
      left: () => capMs - (now() - t0),
      log: (m) => o.log(`${b.name}: ${m}`),
      profile: o.profile ?? false,
    };
    // Per-benchmark high-water mark: the runtime only keeps a global one, so restart it here.
    rt.stats.peakBytes = rt.stats.liveBytes;
    const live0 = rt.stats.liveBytes;
    o.log(`${b.name}: running`);
    let res: Result;
    try {
      res = hardMs === Infinity ? await b.run(ctx) : await withTimeout(b.run(ctx), hardMs, b.name);
    } catch (e) {
      res = { error: e instanceof Error ? e.message : String(e) };
      if (e instanceof TimeoutError) aborted = `not run: ${b.name} timed out (the GPU may still be busy)`;
    }
    if (!aborted) {
      try {
        await rt.sync();
      } catch (e) {
        res.error ??= `after the benchmark: ${(e as Error).message}`;
      }
    }
    res.peak_bytes = rt.stats.peakBytes - live0;
    res.pool_bytes = rt.stats.pooledBytes;
    res.wall_s = sig((now() - t0) / 1000, 3);
    if (!aborted) rt.trimPool();
    o.results[b.name] = res;
    o.log(`${b.name}: ${JSON.stringify(res)}`);
    await o.afterEach();
  }
}

// ------------------------------------------------------------------ shared by the benchmark files

/** Waits for the GPU queue to drain. */
export const sync = () => runtime().sync();

/** Timing knobs: short batches and few repeats in --small mode. */
export function knobs(ctx: Ctx, full: { targetMs: number; repeats: number; maxIters?: number; warmup?: number }): {
  overheadMs: number;
  targetMs: number;
  repeats: number;
  maxIters: number;
  warmup: number;
  budgetMs: number;
  flush: () => void;
} {
  return {
    overheadMs: ctx.overheadMs,
    targetMs: ctx.small ? Math.min(full.targetMs, 20) : full.targetMs,
    repeats: ctx.small ? Math.min(full.repeats, 2) : full.repeats,
    maxIters: ctx.small ? Math.min(full.maxIters ?? 1000, 20) : full.maxIters ?? 1000,
    warmup: full.warmup ?? 1,
    budgetMs: ctx.left(),
    flush: () => runtime().flush(),
  };
}

/** The common timing fields of a result. */
export function timingFields(t: GpuTiming): Result {
  return { min_ms: sig(t.minMs), cpu_ms: sig(t.cpuMs), iters: t.iters, repeats: t.repeats };
}
/** Disposes tensors and their gradients (null entries are skipped). */
export function disposeAll(ts: Iterable<Tensor | null | undefined>): void {
  for (const t of ts) {
    if (!t) continue;
    t.grad?.dispose();
    t.grad = null;
    t.dispose();
  }
}

/**
 * Seeded values in [-1, 1): a block of ≤ 2²⁰ + 7 LCG draws repeated (cheap for the 400 M-element LM-head gradient).
 * @param shape dimensions
 * @param seed any integer
 */
export function randTensor(shape: readonly number[], seed: number): Tensor {
  const n = shape.reduce((a, b) => a * b, 1), period = Math.min(n, (1 << 20) + 7);
  const data = new Float32Array(n);
  let s = Math.imul(seed + 1, 2654435761) >>> 0;
  for (let i = 0; i < period; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    data[i] = s / 2147483648 - 1;
  }
  for (let i = period; i < n; i += period) data.copyWithin(i, 0, Math.min(period, n - i));
  return tensor(data, shape);
}

/**
 * Runs `fn` once more with per-kernel timestamp queries when `--profile` was given and the device has them:
 * `{kernel_ms, dispatches, copies, submits, kernels: [[name, count, ms, % of kernel time], …]}` (top `top`
 * kernels by GPU time), or undefined. The profiled run is not a timed run (one pass per dispatch).
 * @param ctx the benchmark context
 * @param fn one iteration (its promise is awaited)
 * @param top how many kernels to list
 */
export async function profileOnce(ctx: Ctx, fn: () => unknown, top = 25): Promise<Result | undefined> {
  const rt = runtime();
  if (!ctx.profile) return undefined;
  if (!rt.startProfile()) return { unavailable: "no timestamp-query on this device" };
  let failure: unknown = null;
  try {
    await fn();
  } catch (e) {
    failure = e;
  }
  const p = await rt.stopProfile();
  if (failure) throw failure;
  if (!p) return undefined;
  ctx.log(`profile: ${p.dispatches} dispatches, ${p.kernelMs.toFixed(2)} ms of kernel time`);
  return {
    kernel_ms: sig(p.kernelMs),
    dispatches: p.dispatches,
    copies: p.copies,
    submits: p.submits,
    kernels: p.kernels.slice(0, top).map((k) => [k.name, k.count, sig(k.ms), sig(100 * k.ms / p.kernelMs, 3)]),
  };
}
