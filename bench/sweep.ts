/**
 * Kernel tile sweep: times every tile setting of the matmul and tiled-attention kernels on the benchmark shapes
 * and reports the fastest correct one per shape. Matmul candidates: each tile of the tiled kernel (matrix–vector
 * kernel and split K off), and on the shapes that call for them the matrix–vector kernel's rows per workgroup ×
 * thread layouts (`gemv_*`, few-row decode shapes) and split-K targets (`splitk_*`, long K), so a GPU run can
 * confirm `gemvMaxRows`, `gemvRows` and `splitK` of engine/ops/matmul_gemm.ts.
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
  getMatmulTuning,
  initEngine,
  matmul,
  type MatmulTileConfig,
  type MatmulTuningPatch,
  resetMatmulTuning,
  runtime,
  setMatmulTuning,
} from "../engine/mod.ts";
import { FILL } from "../engine/kernels/elementwise.ts";
import {
  engineOptions,
  gitCommit,
  measureSyncOverhead,
  now,
  parseBenchArgs,
  randTensor,
  type Result,
  sig,
} from "./lib.ts";
import { attentionShape, type AttnShape } from "./sweep_attention.ts";
import { type Candidate, errMsg, log, type Run, sweepKernel } from "./sweep_kernel.ts";
import { tilePlan } from "../engine/ops/matmul_tuning.ts";

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
  const lim = runtime().limits;
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

/**
 * A stored [M, K] (or [K, M] with transA), B stored [K, N] (or [N, K] with transB); weight: share of the budget;
 * gemv: also time the matrix–vector kernel's settings; splitK: also time split-K targets.
 */
type MatmulShape = {
  key: string;
  M: number;
  N: number;
  K: number;
  transA?: boolean;
  transB?: boolean;
  weight: number;
  gemv?: boolean;
  splitK?: boolean;
};

/** Forces only the tiled kernel with one tile (no matrix–vector kernel, no split K). */
const tileOnly = (tile: MatmulTileConfig): MatmulTuningPatch => ({
  tiers: [{ tile, minWorkgroups: 0, minUtilization: 0 }],
  gemvMaxRows: 0,
  splitK: { maxWorkgroups: 0 },
});

/** Matrix–vector candidates: rows per workgroup × [columns, threads per column] (both B layouts). */
function gemvCandidates(s: MatmulShape, small: boolean): Candidate[] {
  const lim = runtime().limits, few = Math.min(s.M, s.N), cols = Math.max(s.M, s.N);
  const rowsList = small ? [4, 16] as const : [4, 8, 16] as const;
  const layouts: [number, number][] = small ? [[8, 32], [32, 8]] : [[8, 32], [16, 16], [32, 8], [64, 4], [4, 64]];
  return rowsList.flatMap((rows) =>
    layouts.map(([c, sl]): Candidate => {
      const setting: MatmulTuningPatch = {
        gemvMaxRows: Math.max(few, 1),
        gemvRows: rows,
        gemvN: [c, sl],
        gemvK: [c, sl],
        splitK: { maxWorkgroups: 0 },
      };
      const bytes = c * sl * rows * 4, threads = c * sl;
      const info = { workgroups: Math.ceil(cols / c) * Math.ceil(few / rows), threads, wg_bytes: bytes };
      const problem = threads > lim.maxComputeInvocationsPerWorkgroup
        ? `${threads} threads > maxComputeInvocationsPerWorkgroup`
        : bytes > lim.maxComputeWorkgroupStorageSize
        ? `${bytes} B of workgroup memory > maxComputeWorkgroupStorageSize`
        : null;
      return { label: `gemv_r${rows}_c${c}x${sl}`, setting, info, problem, apply: () => setMatmulTuning(setting) };
    })
  );
}

/** Split-K candidates: the default tiers with split K forced at several workgroup targets. */
function splitKCandidates(s: MatmulShape, small: boolean): Candidate[] {
  const lim = runtime().limits;
  return (small ? [264, 1056] : [132, 264, 528, 1056, 2112]).map((target): Candidate => {
    const setting: MatmulTuningPatch = {
      gemvMaxRows: 0,
      splitK: { maxWorkgroups: 1e9, minK: 0, targetWorkgroups: target, maxSplits: 64 },
    };
    const prev = setMatmulTuning(setting);
    const plan = tilePlan(s.M, s.N, s.K, 1, true, lim);
    setMatmulTuning(prev);
    const info = { splits: plan.splits, kchunk: plan.kchunk, tile: tileLabel(plan.tile) };
    return { label: `splitk_t${target}`, setting, info, problem: null, apply: () => setMatmulTuning(setting) };
  });
}

async function matmulShape(run: Run, s: MatmulShape, endAt: number): Promise<Result> {
  const { M, N, K } = s, transA = s.transA ?? false, transB = s.transB ?? false;
  resetMatmulTuning();
  const extra = run.small ? [0, 5, 6, 8].map((i) => MATMUL_TILES[i]) : MATMUL_TILES;
  const tiles = [...getMatmulTuning().tiers.map((t) => t.tile), ...extra]
    .filter((t, i, all) => all.findIndex((u) => tileLabel(u) === tileLabel(t)) === i);
  const a = randTensor(transA ? [K, M] : [M, K], 1), b = randTensor(transB ? [N, K] : [K, N], 2);
  const def = defaultMatmulTile(M, N);
  const tuned = getMatmulTuning(), few = Math.min(M, N) <= tuned.gemvMaxRows;
  const plan = tilePlan(M, N, K, 1, true, runtime().limits);
  const defLabel = few
    ? `gemv_r${Math.min(tuned.gemvRows, Math.min(M, N) <= 4 ? 4 : Math.min(M, N) <= 8 ? 8 : 16)}`
    : plan.splits > 1
    ? `${tileLabel(plan.tile)}_split${plan.splits}`
    : def
    ? tileLabel(def)
    : null;
  try {
    const res = await sweepKernel(run, {
      candidates: [
        ...tiles.map((tile): Candidate => ({
          label: tileLabel(tile),
          setting: tile,
          ...matmulTileInfo(tile, M, N),
          apply: () => setMatmulTuning(tileOnly(tile)),
        })),
        ...(s.gemv ? gemvCandidates(s, run.small) : []),
        ...(s.splitK ? splitKCandidates(s, run.small) : []),
      ],
      default: { setting: def ?? null, info: { label: defLabel } },
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
  // Decoding 16 sequences one token at a time (M = 16 rows), and the PPO LM-head input gradient (M = 736 rows of
  // 16 responses × 46 tokens, K = vocabulary: few output tiles, long K). Small: the same kinds at tiny sizes.
  const [D, P, Vk] = small ? [16, 40, 1001] : [16, 736, V];
  const dec = { gemv: true, weight: 0.5 };
  matmuls.push(mm("decode_qkv_M16", D, 3 * C, C, dec));
  matmuls.push(mm("decode_attnproj_M16", D, C, C, dec));
  matmuls.push(mm("decode_fc_M16", D, 4 * C, C, dec));
  matmuls.push(mm("decode_mlpproj_M16", D, C, 4 * C, dec));
  matmuls.push(mm("decode_lmhead_M16", D, V, C, { ...dec, transB: true, weight: 1 })); // logits = x·Eᵀ
  matmuls.push(mm("decode_qkv_M64", 4 * D, 3 * C, C, dec)); // where gemvMaxRows should stop
  matmuls.push(mm("ppo_lmhead_dX_M736", P, C, Vk, { splitK: true, weight: 1.5 })); // dx = dlogits·E
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
  if (!Number.isNaN(args.hardTimeoutS)) throw new Error("--hard-timeout-s is an option of bench/gpu.ts, not the sweep");
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

  const rt = await initEngine({ ...(await engineOptions(args.backend)), verbose: true });
  const probe = randTensor([256], 0);
  const overheadMs = await measureSyncOverhead(
    () => rt.run(FILL, { n: 256, bits: 0, start: 0, step: 0 }, { y: probe.storage }, [1]),
    () => rt.sync(),
  );
  probe.dispose();
  const h = rt.handle, lim = rt.limits;
  log(`${h.backend} WebGPU (${h.graphicsApi}) on ${h.adapterName}; one sync costs ${overheadMs.toFixed(2)} ms`);
  const run: Run = { small: args.small, overheadMs, endAt: started + budgetMs, aborted: null };
  const bestSettings = { matmul: {} as Record<string, unknown>, attention: {} as Record<string, unknown> };
  const report = {
    date: new Date().toISOString(),
    deno: Deno.version.deno,
    backend: h.backend,
    graphics_api: h.graphicsApi,
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
