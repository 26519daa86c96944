/**
 * Kernel tile sweep: times every tile setting of the matmul and tiled-attention kernels on the benchmark shapes
 * and reports the fastest correct one per shape.
 *
 *     deno run -A bench/sweep.ts [--small] [--budget-s N] [--out FILE] [--only matmul,attention,KEY] [--list]
 *         [--backend auto|deno|dawn]
 *
 * Prints one JSON object on stdout (progress and a ready-to-paste JSON of the best settings on stderr). A setting is
 * forced through `setMatmulTuning` / `setAttentionTuning` (one tier only), checked once against the default setting's
 * output (max abs diff), then timed like `bench/gpu.ts` (many iterations per sync, median of 3 batches). Default
 * tuning is restored after every candidate. See `bench/README.md`.
 * @module
 */

import {
  abs,
  type AttentionTileConfig,
  type AttentionTuning,
  backward,
  getAttentionTuning,
  getMatmulTuning,
  initEngine,
  matmul,
  type MatmulTileConfig,
  max,
  noGrad,
  readAll,
  resetAttentionTuning,
  resetMatmulTuning,
  runtime,
  scaledDotProductAttention,
  setAttentionTuning,
  setMatmulTuning,
  sub,
  sum,
  type Tensor,
  tensor,
  tidy,
} from "../engine/mod.ts";
import {
  gitCommit,
  measureSyncOverhead,
  now,
  parseBenchArgs,
  type Result,
  sig,
  timeGpu,
  TimeoutError,
  withTimeout,
} from "./lib.ts";

// ------------------------------------------------------------------ helpers

const sync = () => runtime().sync();
const log = (m: string) => console.error(`[sweep] ${m}`);
const errMsg = (e: unknown) => e instanceof Error ? e.message : String(e);

/**
 * Seeded values in [-1, 1): a block of ≤ 2²⁰ + 7 LCG draws repeated (cheap for the 400 M-element LM-head gradient).
 * @param shape dimensions
 * @param seed any integer
 */
function randTensor(shape: readonly number[], seed: number): Tensor {
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

/** Max |a − b| over pairs of tensors (NaN when any difference is not finite) and max |ref|. */
async function compare(outs: Tensor[], refs: Tensor[]): Promise<{ diff: number; refMax: number }> {
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
interface Candidate {
  label: string;
  setting: unknown;
  info: Result;
  problem: string | null;
  apply(): void;
}

/** What one kernel sweep needs: outputs to check (caller disposes), one timed iteration, the candidates. */
interface KernelSweep {
  candidates: Candidate[];
  default: { setting: unknown; info: Result };
  produce(): Tensor[];
  step(): void;
  reset(): void;
  /** FLOPs per iteration, for TFLOP/s (matmul). */
  flops?: number;
}

/** Shared run state. */
interface Run {
  small: boolean;
  overheadMs: number;
  /** Absolute `now()` at which the whole budget is spent. */
  endAt: number;
  /** Set after a hard timeout: the GPU may still be busy, so nothing else runs. */
  aborted: string | null;
}

/** timeGpu with the sweep's knobs; the correctness run before it already compiled the pipelines. */
function timing(run: Run, step: () => void, budgetMs: number, warmup = 0) {
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
async function sweepKernel(run: Run, k: KernelSweep, endAt: number): Promise<Result> {
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

// ------------------------------------------------------------------ matmul

/** Tiles tried for every matmul shape, besides the default tiers (the kernel takes tm, tn ∈ {4, 8}, bk % 4 = 0). */
// --small takes the 1st, 6th, 7th and 9th.
const mt = (wgX: number, wgY: number, tm: 4 | 8, tn: 4 | 8, bk: number): MatmulTileConfig => ({ wgX, wgY, tm, tn, bk });
const MATMUL_TILES: MatmulTileConfig[] = [
  mt(16, 16, 8, 8, 8),
  mt(16, 16, 8, 8, 32),
  mt(16, 16, 8, 4, 32),
  mt(16, 16, 4, 8, 16),
  mt(16, 16, 4, 4, 32),
  mt(8, 16, 8, 8, 16),
  mt(16, 8, 8, 8, 16),
  mt(8, 8, 8, 8, 16),
  mt(8, 8, 4, 4, 32),
];

const tileLabel = (c: MatmulTileConfig) =>
  `${c.wgY * c.tm}x${c.wgX * c.tn}_t${c.tm}x${c.tn}_k${c.bk}_wg${c.wgX}x${c.wgY}`;

/** Fit and grid facts of a tile (mirrors the checks in engine/ops/matmul.ts). */
function matmulTileInfo(c: MatmulTileConfig, M: number, N: number): { info: Result; problem: string | null } {
  const lim = runtime().device.limits;
  const threads = c.wgX * c.wgY, bytes = 4 * c.bk * (c.wgY * c.tm + c.wgX * c.tn);
  const bm = c.wgY * c.tm, bn = c.wgX * c.tn, gm = Math.ceil(M / bm), gn = Math.ceil(N / bn);
  const info = { workgroups: gm * gn, utilization: sig(M * N / (gm * bm * gn * bn), 3), threads, wg_bytes: bytes };
  const problem = threads > lim.maxComputeInvocationsPerWorkgroup
    ? `${threads} threads > maxComputeInvocationsPerWorkgroup ${lim.maxComputeInvocationsPerWorkgroup}`
    : bytes > lim.maxComputeWorkgroupStorageSize
    ? `${bytes} B of workgroup memory > maxComputeWorkgroupStorageSize ${lim.maxComputeWorkgroupStorageSize}`
    : c.wgX > lim.maxComputeWorkgroupSizeX || c.wgY > lim.maxComputeWorkgroupSizeY
    ? "workgroup size over the device's limits"
    : null;
  return { info, problem };
}

/** The tile the default tiers pick for an M×N product (as engine/ops/matmul.ts does). */
function defaultMatmulTile(M: number, N: number): MatmulTileConfig | undefined {
  const usable = getMatmulTuning().tiers.filter((t) => !matmulTileInfo(t.tile, M, N).problem);
  const pick = usable.find((t) => {
    const i = matmulTileInfo(t.tile, M, N).info as { workgroups: number; utilization: number };
    return i.workgroups >= t.minWorkgroups && i.utilization >= t.minUtilization;
  });
  return (pick ?? usable[usable.length - 1])?.tile;
}

/** A stored [M, K] (or [K, M] with transA), B stored [K, N] (or [N, K] with transB); weight: share of the budget. */
type MatmulShape = { key: string; M: number; N: number; K: number; transA?: boolean; transB?: boolean; weight: number };

async function matmulShape(run: Run, s: MatmulShape, endAt: number): Promise<Result> {
  const { M, N, K } = s, transA = s.transA ?? false, transB = s.transB ?? false;
  resetMatmulTuning();
  const extra = run.small ? [0, 5, 6, 8].map((i) => MATMUL_TILES[i]) : MATMUL_TILES;
  const tiles = [...getMatmulTuning().tiers.map((t) => t.tile), ...extra]
    .filter((t, i, all) => all.findIndex((u) => tileLabel(u) === tileLabel(t)) === i);
  const a = randTensor(transA ? [K, M] : [M, K], 1), b = randTensor(transB ? [N, K] : [K, N], 2);
  const def = defaultMatmulTile(M, N);
  try {
    const res = await sweepKernel(run, {
      candidates: tiles.map((tile) => ({
        label: tileLabel(tile),
        setting: tile,
        ...matmulTileInfo(tile, M, N),
        apply: () => setMatmulTuning({ tiers: [{ tile, minWorkgroups: 0, minUtilization: 0 }] }),
      })),
      default: { setting: def ?? null, info: { label: def ? tileLabel(def) : null } },
      produce: () => [matmul(a, b, { transA, transB })],
      step: () => matmul(a, b, { transA, transB }).dispose(),
      reset: resetMatmulTuning,
      flops: 2 * M * N * K,
    }, endAt);
    return { op: "matmul", M, N, K, transA, transB, ...res };
  } finally {
    a.dispose();
    b.dispose();
  }
}

// ------------------------------------------------------------------ attention

type AttnKernel = "forward" | "gradQ" | "gradKV";
const SHARES = [0.25, 0.33, 0.33];

/** Workgroup cost of a tile (mirrors `tileLayout` in engine/ops/attention.ts) and why it cannot run, if so. */
function attnTileInfo(kind: AttnKernel, c: AttentionTileConfig, D: number, BH: number, T: number) {
  const lim = runtime().device.limits;
  const dp4 = Math.ceil(D / 4), rd4 = Math.ceil(dp4 / c.tc), rows = 4 * c.tq, threads = c.tq * c.tc;
  let sr = Math.max(dp4, rd4 * c.tc);
  if (sr % 2 === 0) sr++;
  const w = kind === "gradKV" ? 2 : 1;
  const vec4s = kind === "forward"
    ? rows * sr + 2 * c.bt * sr + c.bt * c.tq + 2 * threads
    : 2 * rows * sr + 2 * c.bt * sr + w * c.bt * c.tq;
  const bytes = 16 * vec4s + 4 * c.bt * w;
  const info = { workgroups: BH * Math.ceil(T / rows), threads, wg_bytes: bytes };
  const problem = c.bt % c.tc !== 0 || c.bt / c.tc > 16
    ? "bt must be tc·(1..16)"
    : rd4 > 8
    ? "head size too large for tc"
    : threads > Math.min(lim.maxComputeInvocationsPerWorkgroup, lim.maxComputeWorkgroupSizeX)
    ? `${threads} threads over the device's limits`
    : bytes > lim.maxComputeWorkgroupStorageSize
    ? `${bytes} B of workgroup memory > maxComputeWorkgroupStorageSize ${lim.maxComputeWorkgroupStorageSize}`
    : null;
  return { info, problem };
}

/** The tier the default tuning picks (as `pickTile` in engine/ops/attention.ts does). */
function defaultAttnTile(kind: AttnKernel, D: number, BH: number, T: number): AttentionTileConfig | "row" {
  const t = getAttentionTuning();
  if (T < t.minTiledQueries || D > t.maxTiledHeadDim) return "row";
  const usable = t[kind].filter((c) => !attnTileInfo(kind, c, D, BH, T).problem);
  const enough = usable.find((c) => BH * Math.ceil(T / (4 * c.tq)) >= (c.minWorkgroups ?? 0));
  const c = enough ?? usable[usable.length - 1];
  return c ? { tq: c.tq, tc: c.tc, bt: c.bt } : "row";
}

const attnLabel = (c: AttentionTileConfig | "row") => c === "row" ? "row" : `tq${c.tq}_tc${c.tc}_bt${c.bt}`;

/** An attention shape [B, H, T, D] (causal) and its share of the time budget. */
type AttnShape = { key: string; B: number; H: number; T: number; D: number; weight: number };

/** Sweeps the forward, dQ and dK/dV kernels of causal attention, then times fwd+bwd with the best of each. */
async function attentionShape(run: Run, s: AttnShape, endAt: number, save: () => Promise<void>): Promise<Result> {
  const { B, H, T, D } = s, BH = B * H, shape = [B, H, T, D];
  const q = randTensor(shape, 6), k = randTensor(shape, 7), v = randTensor(shape, 8), g = randTensor(shape, 9);
  const qkv = [q, k, v];
  const attn = () => scaledDotProductAttention(q, k, v, { causal: true });
  /** Runs fwd+bwd for the inputs flagged in `want` and returns their gradients. */
  const grads = (want: number[]): Tensor[] => {
    qkv.forEach((t, i) => t.requireGrad(want[i] === 1));
    tidy(() => backward(attn(), g));
    return qkv.filter((_, i) => want[i]).map((t) => {
      const gr = t.grad!;
      t.grad = null;
      return gr;
    });
  };
  const wants: Record<AttnKernel, number[]> = { forward: [0, 0, 0], gradQ: [1, 0, 0], gradKV: [0, 1, 1] };
  const grid: AttentionTileConfig[] = [];
  const [tqs, tcs, bts] = run.small ? [[4, 8], [4, 8], [16, 32]] : [[4, 8, 16], [4, 8, 16], [16, 32, 64]];
  for (const tq of tqs) for (const tc of tcs) for (const bt of bts) grid.push({ tq, tc, bt });
  const out: Result = { op: "attention", B, H, T, D, causal: true };
  const best: Partial<Record<AttnKernel, AttentionTileConfig | "row">> = {};
  const kinds: AttnKernel[] = ["forward", "gradQ", "gradKV"];
  try {
    for (const [i, kind] of kinds.entries()) {
      resetAttentionTuning();
      const tiles = [...getAttentionTuning()[kind] as AttentionTileConfig[], ...grid]
        .map((c) => ({ tq: c.tq, tc: c.tc, bt: c.bt }))
        .filter((c, j, all) => all.findIndex((u) => attnLabel(u) === attnLabel(c)) === j);
      const cands: Candidate[] = tiles.map((c) => ({
        label: attnLabel(c),
        setting: c,
        ...attnTileInfo(kind, c, D, BH, T),
        apply: () => setAttentionTuning({ [kind]: [c] }),
      }));
      if (T <= 256) {
        // no tier at all: this kernel falls back to its row kernel (one workgroup per row)
        const apply = () => setAttentionTuning({ [kind]: [] });
        cands.push({ label: "row", setting: "row", info: { workgroups: BH * T }, problem: null, apply });
      }
      const def = defaultAttnTile(kind, D, BH, T);
      const want = wants[kind];
      // shares of the shape's time: forward 25 %, dQ 33 %, dK/dV 33 %, fwd+bwd check of the best 9 %
      const kindEnd = now() + (endAt - now()) * SHARES[i] / (1 - SHARES.slice(0, i).reduce((x, y) => x + y, 0));
      const res = await sweepKernel(run, {
        candidates: cands,
        default: { setting: def, info: { label: attnLabel(def) } },
        produce: kind === "forward" ? () => [noGrad(attn)] : () => grads(want),
        step: kind === "forward" ? () => noGrad(attn).dispose() : () => grads(want).forEach((t) => t.dispose()),
        reset: resetAttentionTuning,
      }, Math.min(kindEnd, endAt - (run.small ? 0 : 1500)));
      out[kind] = res;
      const b = res.best as { setting: AttentionTileConfig | "row" } | null | undefined;
      if (b) best[kind] = b.setting;
      await save();
    }
    // fwd+bwd of all three inputs: default tuning against the best tile of each kernel.
    const combo: Partial<AttentionTuning> = {};
    for (const kind of kinds) {
      const c = best[kind];
      if (c) (combo[kind] as AttentionTileConfig[]) = c === "row" ? [] : [c];
    }
    out.fwd_bwd = await sweepKernel(run, {
      candidates: [{
        label: "best_of_each",
        setting: best,
        info: {},
        problem: Object.keys(best).length ? null : "no kernel has a correct best setting",
        apply: () => setAttentionTuning(combo),
      }],
      default: { setting: "default", info: { label: "default" } },
      produce: () => grads([1, 1, 1]),
      step: () => grads([1, 1, 1]).forEach((t) => t.dispose()),
      reset: resetAttentionTuning,
    }, endAt);
    out.best = best;
    return out;
  } finally {
    resetAttentionTuning();
    for (const t of [q, k, v, g]) {
      t.grad?.dispose();
      t.grad = null;
      t.dispose();
    }
  }
}

// ------------------------------------------------------------------ shapes

/** The swept shapes; keys name the full-size shapes, `--small` shrinks the dimensions (each entry reports its own). */
function shapes(small: boolean): { matmul: MatmulShape[]; attention: AttnShape[] } {
  // GPT-2 124M, B8×T1024: x [8192, 768]; c_attn 768→2304, c_fc 768→3072, c_proj (MLP) 3072→768, LM head 768→50257.
  const [R, C, V, S, r] = small ? [96, 40, 130, 72, 24] : [8192, 768, 50257, 4096, 1024];
  const mm = (key: string, M: number, N: number, K: number, o: Partial<MatmulShape> = {}): MatmulShape => (
    { key: `matmul_${key}`, M, N, K, weight: 1, ...o }
  );
  const matmuls = [mm("4096", S, S, S)];
  for (const [name, n, k] of [["qkv", 3 * C, C], ["fc", 4 * C, C], ["proj", C, 4 * C]] as const) {
    matmuls.push(mm(`${name}_M8192`, R, n, k)); // y = x·W
    matmuls.push(mm(`${name}_dX_M8192`, R, k, n, { transB: true })); // dx = dy·Wᵀ
    matmuls.push(mm(`${name}_dW_M8192`, k, n, R, { transA: true })); // dW = xᵀ·dy
  }
  matmuls.push(mm("lmhead_M8192", R, V, C, { transB: true, weight: 1.5 })); // logits = x·Eᵀ
  matmuls.push(mm("lmhead_dX_M8192", R, C, V, { weight: 1.5 })); // dx = dlogits·E
  matmuls.push(mm("lmhead_dW_M8192", V, C, R, { transA: true, weight: 1.5 })); // dE = dlogitsᵀ·x
  matmuls.push(mm("fc_M1024", r, 4 * C, C));
  const at = (B: number, T: number, weight: number, [b, h, t, d]: number[]): AttnShape => ({
    key: `attention_B${B}_H12_T${T}_D64`,
    ...(small ? { B: b, H: h, T: t, D: d } : { B, H: 12, T, D: 64 }),
    weight,
  });
  return {
    matmul: matmuls,
    attention: [at(8, 1024, 5, [1, 2, 40, 16]), at(16, 1024, 5, [2, 2, 32, 16]), at(16, 64, 3, [2, 2, 12, 16])],
  };
}

/** One line per kernel sweep: default → best, with the speed-up. */
function summary(results: Record<string, Result>): string[] {
  const line = (name: string, r: Result | undefined): string => {
    if (!r || r.error || r.skipped) return `${name}: ${r?.error ?? r?.skipped ?? "not run"}`;
    const d = r.default as Result, b = r.best as Result | null;
    const rows = r.candidates as Result[];
    const timed = rows.filter((c) => typeof c.ms === "number").length, bad = rows.filter((c) => c.ok === false).length;
    const best = b ? `${b.label} ${b.ms} ms (×${b.speedup_vs_default})` : "none";
    return `${name}: default ${d.label ?? ""} ${d.ms} ms → best ${best}; ${timed}/${rows.length} timed, ${bad} wrong`;
  };
  const out = ["[sweep] summary:"];
  for (const [key, r] of Object.entries(results)) {
    if (r.op !== "attention") out.push(line(key, r));
    else for (const k of ["forward", "gradQ", "gradKV", "fwd_bwd"]) out.push(line(`${key}.${k}`, r[k] as Result));
  }
  return out;
}

// ------------------------------------------------------------------ main

async function main(): Promise<void> {
  const args = parseBenchArgs(Deno.args);
  const z = shapes(args.small);
  const all = [
    ...z.matmul.map((s) => ({ group: "matmul", s })),
    ...z.attention.map((s) => ({ group: "attention", s })),
  ];
  if (args.list) {
    console.log(all.map((x) => x.s.key).join("\n"));
    return;
  }
  const bad = (args.only ?? []).filter((o) => o !== "matmul" && o !== "attention" && !all.some((x) => x.s.key === o));
  if (bad.length) throw new Error(`unknown --only entries ${bad.join(", ")}: use matmul, attention or keys of --list`);
  const selected = args.only ? all.filter((x) => args.only!.includes(x.group) || args.only!.includes(x.s.key)) : all;
  const budgetMs = (Number.isFinite(args.budgetS) ? args.budgetS : 240) * 1000;
  const started = now();

  const rt = await initEngine({ ...(args.backend ? { backend: args.backend } : {}), verbose: true });
  const probe = randTensor([256], 0);
  const overheadMs = await measureSyncOverhead(
    () => rt.dispatch({ shader: "fill", bindings: ["rw"] }, [probe.storage], [256, 0, 0, 0], [1]),
    () => rt.sync(),
  );
  probe.dispose();
  const h = rt.handle, lim = rt.device.limits;
  log(`${h.backend} WebGPU on ${h.adapterName}; one sync costs ${overheadMs.toFixed(2)} ms`);
  const run: Run = { small: args.small, overheadMs, endAt: started + budgetMs, aborted: null };
  const bestSettings = { matmul: {} as Record<string, unknown>, attention: {} as Record<string, unknown> };
  const report = {
    date: new Date().toISOString(),
    deno: Deno.version.deno,
    backend: h.backend,
    adapter: h.adapterName,
    device: {
      max_compute_workgroup_storage_size: lim.maxComputeWorkgroupStorageSize,
      max_compute_invocations_per_workgroup: lim.maxComputeInvocationsPerWorkgroup,
      max_storage_buffer_binding_size: lim.maxStorageBufferBindingSize,
    },
    commit: await gitCommit(),
    small: args.small,
    args: Deno.args,
    sync_overhead_ms: sig(overheadMs),
    budget_s: budgetMs / 1000,
    total_s: 0,
    complete: false,
    results: {} as Record<string, Result>,
    best_settings: bestSettings,
  };
  const save = async () => {
    report.total_s = sig((now() - started) / 1000);
    if (!args.out) return;
    await Deno.writeTextFile(args.out, JSON.stringify(report, null, 1) + "\n")
      .catch((e) => log(`cannot write ${args.out}: ${errMsg(e)}`));
  };

  let weightLeft = selected.reduce((a, x) => a + x.s.weight, 0);
  for (const { group, s } of selected) {
    const left = run.endAt - now();
    if (run.aborted || left <= 0) {
      report.results[s.key] = { skipped: run.aborted ?? `time budget of ${budgetMs / 1000} s spent (--budget-s)` };
      weightLeft -= s.weight;
      continue;
    }
    const endAt = now() + left * s.weight / weightLeft;
    weightLeft -= s.weight;
    log(`${s.key}: ${((endAt - now()) / 1000).toFixed(1)} s`);
    const t0 = now();
    let res: Result;
    try {
      res = group === "matmul"
        ? await matmulShape(run, s as MatmulShape, endAt)
        : await attentionShape(run, s as AttnShape, endAt, save);
    } catch (e) {
      res = { error: errMsg(e) };
    }
    res.wall_s = sig((now() - t0) / 1000, 3);
    if (!run.aborted) rt.trimPool();
    report.results[s.key] = res;
    if (res.best) {
      if (group === "matmul") bestSettings.matmul[s.key] = (res.best as { setting: unknown }).setting;
      else bestSettings.attention[s.key] = res.best;
    }
    log(`${s.key}: best ${JSON.stringify(res.best ?? null)} in ${res.wall_s} s`);
    await save();
  }
  report.complete = !run.aborted && selected.every((x) => !("skipped" in report.results[x.s.key]));
  await save();
  console.log(JSON.stringify(report, null, 1));
  console.error(summary(report.results).join("\n"));
  // one shape per line, so that the snippet survives in a short output tail
  const block = (o: Record<string, unknown>) =>
    Object.entries(o).map(([k, v]) => `    ${JSON.stringify(k)}: ${JSON.stringify(v)}`).join(",\n");
  console.error(
    `[sweep] best settings (JSON, ready to paste):\n{\n  "matmul": {\n${block(bestSettings.matmul)}\n  },\n` +
      `  "attention": {\n${block(bestSettings.attention)}\n  }\n}`,
  );
}

if (import.meta.main) {
  let code = 0;
  try {
    await main();
  } catch (e) {
    console.error(`sweep: ${(e as Error).stack ?? e}`);
    code = 1;
  }
  // A WebGPU device (or a timed-out candidate) can keep the event loop alive: exit explicitly.
  Deno.exit(code);
}
