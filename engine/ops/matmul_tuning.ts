/**
 * Kernel-selection knobs of the matrix products ({@linkcode setMatmulTuning}) and the tile planner that applies
 * them: which tile of `shaders/matmul.wgsl` (fp32) or `shaders/matmul_coop.wgsl` (mixed precision) a product gets,
 * and into how many K ranges it is split.
 * @module
 */

import { check } from "../tensor.ts";
import { coopTileDims, coopTileProblem, type MatmulCoopTile } from "./matmul_coop.ts";

// ------------------------------------------------------------------ tuning

/** One tile configuration of the tiled kernel: a (wgY·tm) × (wgX·tn) output tile per workgroup. */
export interface MatmulTileConfig {
  /** Threads along N. */
  wgX: number;
  /** Threads along M. */
  wgY: number;
  /** Output rows per thread (4 or 8). */
  tm: 4 | 8;
  /** Output columns per thread (4 or 8). */
  tn: 4 | 8;
  /** Depth of the k tile staged in workgroup memory (a multiple of 4). */
  bk: number;
}

/** A tile the tiled kernel may use, and when: the first tier whose conditions hold is taken. */
export interface MatmulTileTier {
  /** The tile configuration. */
  tile: MatmulTileConfig;
  /** Use it only if the product needs at least this many workgroups (to fill the GPU). */
  minWorkgroups: number;
  /** Use it only if at least this fraction of the padded tile area is real output (0..1). */
  minUtilization: number;
}

/**
 * Split K of the tiled kernel: a product without bias, activation or residual whose tile grid has
 * fewer than `maxWorkgroups` workgroups and whose K is at least `minK` is computed as S partial
 * products over K ranges (S ≤ `maxSplits`, about `targetWorkgroups` / grid workgroups), then summed.
 */
export interface MatmulSplitK {
  /** Split only when the unsplit tile grid has fewer workgroups than this (0: only from `longK` on). */
  maxWorkgroups: number;
  /** Split only when K is at least this. */
  minK: number;
  /** Workgroups the split grid aims for (grid workgroups × S). */
  targetWorkgroups: number;
  /** At most this many splits. */
  maxSplits: number;
  /**
   * K from which a product is split whatever its grid (reductions over a vocabulary, e.g. the LM head's
   * input gradient), aiming at `longTargetWorkgroups` (Infinity disables).
   */
  longK: number;
  /** Workgroups the split grid aims for when K ≥ `longK`. */
  longTargetWorkgroups: number;
  /**
   * Also split products with a bias, activation or residual: the partial products are plain and
   * `shaders/matmul_splitk.wgsl` applies the epilogue while summing them.
   */
  withEpilogue: boolean;
}

/** A tile of the cooperative-matrix kernel and when to use it (as {@linkcode MatmulTileTier}). */
export interface MatmulCoopTier {
  /** The tile. */
  tile: MatmulCoopTile;
  /** Use it only if the product needs at least this many workgroups. */
  minWorkgroups: number;
  /** Use it only if at least this fraction of the padded tile area is real output (0..1). */
  minUtilization: number;
}

/** Kernel selection knobs, for benchmarks to tune (see {@linkcode setMatmulTuning}). */
export interface MatmulTuning {
  /** Tiles of the tiled kernel, tried in order (the last one is the fallback whatever its conditions). */
  tiers: MatmulTileTier[];
  /** Tiles of the mixed-precision (cooperative-matrix) kernel, tried in order like `tiers`. */
  coopTiers: MatmulCoopTier[];
  /** Products with at most this many output rows (or columns) use the matrix–vector kernel. */
  gemvMaxRows: number;
  /**
   * Most output rows per workgroup of the matrix–vector kernel (4, 8 or 16): a product with M rows
   * takes the smallest of 4, 8, 16 that holds M, at most this (then ⌈M / rows⌉ row blocks).
   */
  gemvRows: 4 | 8 | 16;
  /** Matrix–vector kernel, B contiguous along n: columns per workgroup and threads per column. */
  gemvN: [cols: number, slices: number];
  /** Matrix–vector kernel, B contiguous along k: columns per workgroup and threads per column. */
  gemvK: [cols: number, slices: number];
  /** When the tiled kernel splits a long K (see {@linkcode MatmulSplitK}). */
  splitK: MatmulSplitK;
}

// Tiers chosen from timings on an H200 through Deno's WebGPU (wgpu/Vulkan), GPT-2-sized shapes:
// 128×128 (8×8 per thread) wins only on big squares; 128×64 (8×4) on mid-sized products; 64×64 when
// fewer workgroups would leave SMs idle; 32×32 for the rest (few rows past gemvMaxRows, small shapes).
//
// gemvMaxRows = 32 (not yet measured on a GPU): decoding with 16 rows on the 32×32 tier took ~205 µs
// per GPT-2 product (half of each tile idle, ≤ 72 workgroups of 64 threads) against ~2–5 µs to read
// the weights once. With 16 rows per workgroup the matrix–vector kernel reads the weights once up to
// 16 rows and twice (the second pass mostly from L2: a GPT-2 weight is ≤ 9.4 MB) up to 32; beyond that
// the 32×32 tier's row tiles are full and it reuses each loaded weight 32 times from workgroup memory.
// splitK: products with K ≥ 512 whose grid is under 264 workgroups are split, epilogues included (applied in the
// sum): on an H200 (2026-12-04, bench/RESULTS.md run 4) that took BERT-base's forward from 15.9 to 10.4 ms, the
// PPO iteration from 407 to 358 ms and GPT-2 B16×T64 training from 59.1 to 51.7 ms (their [736–1024, 768]
// products had 144 workgroups of 64×64 for 132 SMs). The target of 528 workgroups is 4 per SM of a 132-SM H100/H200; 264 (2 per SM) is where the
// tiers start calling a grid full. bench/sweep.ts times both against the plain paths. Reductions over a
// vocabulary (K ≥ 32768) always split, aiming at 2112 workgroups: on an H200 (2026-11-26 sweep) PPO's
// LM-head input gradient (736 × 768, K = 50257) took 7.1–9.6 ms on the best unsplit tiles, 3.1 ms with 8
// splits and 2.3 ms with 59 (2112 workgroups of 128×128 tiles).
const DEFAULT_TILE: MatmulTileConfig = { wgX: 16, wgY: 16, tm: 4, tn: 4, bk: 16 };
const DEFAULT_TUNING: MatmulTuning = {
  tiers: [
    { tile: { wgX: 16, wgY: 16, tm: 8, tn: 8, bk: 16 }, minWorkgroups: 1024, minUtilization: 0.9 },
    { tile: { wgX: 16, wgY: 16, tm: 8, tn: 4, bk: 16 }, minWorkgroups: 264, minUtilization: 0.75 },
    { tile: DEFAULT_TILE, minWorkgroups: 128, minUtilization: 0.5 },
    { tile: { wgX: 8, wgY: 8, tm: 4, tn: 4, bk: 16 }, minWorkgroups: 0, minUtilization: 0 },
  ],
  // Not yet timed on a GPU: 128×128 (8 subgroups of 64×32) for big grids, then 64×64, then 32×32.
  coopTiers: [
    { tile: { wm: 2, wn: 4, fm: 4, fn: 2, bk: 32 }, minWorkgroups: 264, minUtilization: 0.75 },
    { tile: { wm: 2, wn: 2, fm: 4, fn: 2, bk: 32 }, minWorkgroups: 264, minUtilization: 0.75 },
    { tile: { wm: 2, wn: 2, fm: 2, fn: 2, bk: 32 }, minWorkgroups: 128, minUtilization: 0.5 },
    { tile: { wm: 1, wn: 1, fm: 2, fn: 2, bk: 32 }, minWorkgroups: 0, minUtilization: 0 },
  ],
  gemvMaxRows: 32,
  gemvRows: 16,
  gemvN: [8, 32],
  gemvK: [8, 32],
  splitK: {
    maxWorkgroups: 264,
    minK: 512,
    targetWorkgroups: 528,
    maxSplits: 64,
    longK: 32768,
    longTargetWorkgroups: 2112,
    withEpilogue: true,
  },
};

let tuning: MatmulTuning = structuredClone(DEFAULT_TUNING);

function tileProblem(tile: MatmulTileConfig): string | null {
  const ok = (v: number) => Number.isInteger(v) && v > 0;
  if (!ok(tile.wgX) || !ok(tile.wgY) || !ok(tile.bk) || tile.bk % 4 !== 0) {
    return "wgX, wgY, bk must be positive, bk % 4 = 0";
  }
  if (tile.tm !== 4 && tile.tm !== 8) return "tm must be 4 or 8";
  if (tile.tn !== 4 && tile.tn !== 8) return "tn must be 4 or 8";
  return null;
}

/** Threads and workgroup-memory bytes a tile configuration needs. */
function tileCost(tile: MatmulTileConfig): { threads: number; bytes: number } {
  return { threads: tile.wgX * tile.wgY, bytes: 4 * tile.bk * (tile.wgY * tile.tm + tile.wgX * tile.tn) };
}

/** Knobs to change: any of {@linkcode MatmulTuning}'s, `splitK` field by field. */
export type MatmulTuningPatch = Partial<Omit<MatmulTuning, "splitK">> & { splitK?: Partial<MatmulSplitK> };

/**
 * Changes the kernel selection knobs (merged into the current ones; `splitK` field by field);
 * returns the previous knobs so a benchmark can restore them. Tile configurations are validated
 * here, device limits at dispatch (tiers whose tile exceeds the device's limits are skipped).
 */
export function setMatmulTuning(t: MatmulTuningPatch): MatmulTuning {
  const { splitK, ...rest } = structuredClone(t);
  const next: MatmulTuning = { ...tuning, ...rest, splitK: { ...tuning.splitK, ...splitK } };
  const ok = (cond: boolean, msg: string) => check(cond, "setMatmulTuning", msg);
  ok(next.tiers.length > 0, "at least one tile tier is needed");
  for (const { tile } of next.tiers) {
    const problem = tileProblem(tile);
    ok(problem === null, `tile ${JSON.stringify(tile)}: ${problem}`);
  }
  ok(next.coopTiers.length > 0, "at least one cooperative-matrix tile tier is needed");
  for (const { tile } of next.coopTiers) {
    const problem = coopTileProblem(tile);
    ok(problem === null, `cooperative-matrix tile ${JSON.stringify(tile)}: ${problem}`);
  }
  ok(Number.isInteger(next.gemvMaxRows) && next.gemvMaxRows >= 0, "gemvMaxRows must be an integer ≥ 0");
  ok([4, 8, 16].includes(next.gemvRows), "gemvRows must be 4, 8 or 16");
  for (const [cols, slices] of [next.gemvN, next.gemvK]) {
    ok(
      cols > 0 && slices > 0 && Number.isInteger(cols) && (slices & (slices - 1)) === 0,
      `gemv [cols, slices] = [${cols}, ${slices}]: slices must be a power of two`,
    );
  }
  const split = next.splitK;
  const limits = [split.maxWorkgroups, split.minK, split.targetWorkgroups, split.longK, split.longTargetWorkgroups];
  ok(
    limits.every((v) => v >= 0) && Number.isInteger(split.maxSplits) && split.maxSplits >= 1,
    `splitK ${JSON.stringify(split)}: fields must be ≥ 0, maxSplits an integer ≥ 1`,
  );
  const prev = tuning;
  tuning = next;
  return prev;
}

/** The current knobs (not a copy: for the dispatcher, which must not change them). */
export function currentTuning(): Readonly<MatmulTuning> {
  return tuning;
}

/** The current kernel selection knobs (a copy). */
export function getMatmulTuning(): MatmulTuning {
  return structuredClone(tuning);
}

/** Restores the default kernel selection knobs. */
export function resetMatmulTuning(): void {
  tuning = structuredClone(DEFAULT_TUNING);
}

/** Largest partial-product buffer of a split-K product (bytes), besides the device's binding limit. */
const SPLIT_MAX_BYTES = 256 * 2 ** 20;

/** Device limits the kernel choice looks at. */
export type MatmulLimits = Pick<
  GPUSupportedLimits,
  | "maxComputeInvocationsPerWorkgroup"
  | "maxComputeWorkgroupStorageSize"
  | "maxComputeWorkgroupSizeX"
  | "maxComputeWorkgroupSizeY"
  | "maxStorageBufferBindingSize"
>;

/** What the planner needs of a tile: its output block, k depth, threads and workgroup-memory bytes. */
interface TileDims {
  bm: number;
  bn: number;
  bk: number;
  threads: number;
  bytes: number;
  /** Workgroup size along x and y (checked against the device's per-dimension limits). */
  wgX: number;
  wgY: number;
}

/** A product to plan: M×N outputs over K in `batches` batches; `plain` when it may be split along K. */
interface PlanProblem {
  M: number;
  N: number;
  K: number;
  batches: number;
  plain: boolean;
}

/** Tier selection and split K for any tile kind (see {@linkcode tilePlan}). */
function planTiles<T>(
  tiers: { tile: T; minWorkgroups: number; minUtilization: number }[],
  dims: (t: T) => TileDims,
  fallback: T,
  problem: PlanProblem,
  limits: MatmulLimits,
): { tile: T; splits: number; kchunk: number } {
  const { M, N, K } = problem;
  const fits = (t: T) => {
    const d = dims(t);
    return d.threads <= limits.maxComputeInvocationsPerWorkgroup && d.bytes <= limits.maxComputeWorkgroupStorageSize &&
      d.wgX <= limits.maxComputeWorkgroupSizeX && d.wgY <= limits.maxComputeWorkgroupSizeY;
  };
  const workgroups = (t: T) => {
    const d = dims(t);
    return Math.ceil(M / d.bm) * Math.ceil(N / d.bn) * problem.batches;
  };
  const utilization = (t: T) => {
    const { bm, bn } = dims(t);
    return (M * N) / (Math.ceil(M / bm) * bm * Math.ceil(N / bn) * bn);
  };
  const usable = tiers.filter((t) => fits(t.tile));
  const pick = (splitsOf: (t: T) => number) =>
    usable.find((t) =>
      workgroups(t.tile) * splitsOf(t.tile) >= t.minWorkgroups && utilization(t.tile) >= t.minUtilization
    )?.tile ?? usable[usable.length - 1]?.tile ?? fallback;
  let tile = pick(() => 1);
  const splitsOf = splitCount(problem, limits, workgroups, (t) => dims(t).bk);
  let splits = 1;
  if (splitsOf && (K >= tuning.splitK.longK || workgroups(tile) < tuning.splitK.maxWorkgroups)) {
    tile = pick(splitsOf);
    splits = splitsOf(tile);
  }
  const bk = dims(tile).bk;
  return { tile, splits, kchunk: splits > 1 ? Math.ceil(K / splits / bk) * bk : K };
}

/**
 * Split K: S partial products over K ranges of a multiple of the tile's k depth, into [S, batch, M, N], then summed.
 * Returns how many splits a tile would get, or null when the product may not be split (not plain, K short, or no
 * room for two partial products).
 */
function splitCount<T>(
  problem: PlanProblem,
  limits: MatmulLimits,
  workgroups: (t: T) => number,
  kDepth: (t: T) => number,
): ((t: T) => number) | null {
  const { M, N, K, batches } = problem;
  const splitK = tuning.splitK;
  const maxSplits = Math.min(
    splitK.maxSplits,
    Math.floor(Math.min(SPLIT_MAX_BYTES, limits.maxStorageBufferBindingSize) / (4 * batches * M * N)),
  );
  if (!problem.plain || K < Math.max(splitK.minK, 1) || maxSplits <= 1) return null;
  const target = K >= splitK.longK ? splitK.longTargetWorkgroups : splitK.targetWorkgroups;
  return (t: T) => {
    const s = Math.max(1, Math.min(maxSplits, Math.ceil(target / workgroups(t))));
    const bk = kDepth(t);
    return Math.ceil(K / (Math.ceil(K / s / bk) * bk));
  };
}

function fp32Dims(tile: MatmulTileConfig): TileDims {
  const { threads, bytes } = tileCost(tile);
  const { wgX, wgY, tm, tn, bk } = tile;
  return { bm: wgY * tm, bn: wgX * tn, bk, threads, bytes, wgX, wgY };
}

/**
 * The tiled kernel's plan for a product of `batches` batches of M×N over K under the current tuning: the
 * tile, and the K splits (1 = none; `plain` = no bias/activation/residual, which splitting needs).
 */
export function tilePlan(
  M: number,
  N: number,
  K: number,
  batches: number,
  plain: boolean,
  limits: MatmulLimits,
): { tile: MatmulTileConfig; splits: number; kchunk: number } {
  return planTiles(tuning.tiers, fp32Dims, DEFAULT_TILE, { M, N, K, batches, plain }, limits);
}

/** {@linkcode tilePlan} for the mixed-precision kernel with subgroups of `subgroup` invocations. */
export function coopTilePlan(
  M: number,
  N: number,
  K: number,
  batches: number,
  plain: boolean,
  limits: MatmulLimits,
  subgroup: number,
): { tile: MatmulCoopTile; splits: number; kchunk: number } {
  const dims = (t: MatmulCoopTile): TileDims => {
    const d = coopTileDims(t, subgroup);
    return { ...d, wgX: d.threads, wgY: 1 };
  };
  const tiers = tuning.coopTiers;
  return planTiles(tiers, dims, tiers[tiers.length - 1].tile, { M, N, K, batches, plain }, limits);
}
