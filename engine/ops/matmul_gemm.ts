/**
 * The matrix-product dispatcher behind `matmul` and `linear` (engine/ops/matmul.ts): kernel selection
 * knobs ({@linkcode setMatmulTuning}) and {@linkcode gemm}, which routes one product to
 * `shaders/matmul_gemv.wgsl` (few output rows or columns: 4, 8 or 16 rows per workgroup, so each
 * weight is read once per block of rows) or to the tiled `shaders/matmul.wgsl` (optionally splitting a
 * long K into partial products summed by `reduce.wgsl`'s `sum_cols` when the tile grid is small), or, in mixed
 * precision, to its tensor-core twin `shaders/matmul_coop.wgsl` (engine/ops/matmul_coop.ts).
 * @module
 */

import { f32Bits, grid1d, type Runtime, type Storage } from "../runtime.ts";
import { check, empty, runtime, type Tensor } from "../tensor.ts";
import {
  coopConstants,
  coopSubgroup,
  coopTileDims,
  coopTileProblem,
  type MatmulCoopTile,
  recordAmax,
} from "./matmul_coop.ts";

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
// splitK: the target of 528 workgroups is 4 per SM of a 132-SM H100/H200; 264 (2 per SM) is where the
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
    minK: 4096,
    targetWorkgroups: 528,
    maxSplits: 64,
    longK: 32768,
    longTargetWorkgroups: 2112,
    withEpilogue: false,
  },
};

let tuning: MatmulTuning = structuredClone(DEFAULT_TUNING);

function tileProblem(c: MatmulTileConfig): string | null {
  const ok = (v: number) => Number.isInteger(v) && v > 0;
  if (!ok(c.wgX) || !ok(c.wgY) || !ok(c.bk) || c.bk % 4 !== 0) return "wgX, wgY, bk must be positive, bk % 4 = 0";
  if (c.tm !== 4 && c.tm !== 8) return "tm must be 4 or 8";
  if (c.tn !== 4 && c.tn !== 8) return "tn must be 4 or 8";
  return null;
}

/** Threads and workgroup-memory bytes a tile configuration needs. */
function tileCost(c: MatmulTileConfig): { threads: number; bytes: number } {
  return { threads: c.wgX * c.wgY, bytes: 4 * c.bk * (c.wgY * c.tm + c.wgX * c.tn) };
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
  const s = next.splitK;
  ok(
    [s.maxWorkgroups, s.minK, s.targetWorkgroups, s.longK, s.longTargetWorkgroups].every((v) => v >= 0) &&
      Number.isInteger(s.maxSplits) &&
      s.maxSplits >= 1,
    `splitK ${JSON.stringify(s)}: fields must be ≥ 0, maxSplits an integer ≥ 1`,
  );
  const prev = tuning;
  tuning = next;
  return prev;
}

/** The current kernel selection knobs (a copy). */
export function getMatmulTuning(): MatmulTuning {
  return structuredClone(tuning);
}

/** Restores the default kernel selection knobs. */
export function resetMatmulTuning(): void {
  tuning = structuredClone(DEFAULT_TUNING);
}

// ------------------------------------------------------------------ core dispatch

const dummies = new WeakMap<Runtime, [read: Storage, write: Storage]>();

/**
 * Small storages bound where a kernel declares a binding it does not use: one for read-only
 * bindings, another for read-write ones (one buffer may not be bound both ways in a dispatch).
 */
function dummy(rt: Runtime): [read: Storage, write: Storage] {
  let d = dummies.get(rt);
  if (!d) dummies.set(rt, d = [rt.alloc(256), rt.alloc(256)]);
  return d;
}

/** One operand of a product: its storage, whether it is stored transposed, its batch strides. */
export interface Operand {
  /** The storage holding the operand. */
  s: Storage;
  /** Stored with its last two dims swapped. */
  trans: boolean;
  /** Element stride per output batch dim (0 where broadcast). */
  strides: number[];
  /**
   * A gradient: in mixed precision scaled by a power of two from its largest magnitude before rounding to f16
   * (see engine/ops/matmul_coop.ts). Ignored by the fp32 kernels.
   */
  scaled?: boolean;
}

/** The fused store: C = act(alpha·A·B + bias) (+ residual), optionally keeping the pre-activation. */
export interface Epilogue {
  /** Activation code of shaders/activation.wgsl (0 none). */
  act: number;
  /** Added after the activation, laid out like C. */
  resid: Storage | null;
  /** Receives alpha·A·B + bias (before the activation), laid out like C. */
  pre: Storage | null;
}

/** No epilogue beyond alpha. */
export const NO_EPILOGUE: Epilogue = { act: 0, resid: null, pre: null };

/** C[batch…] = alpha · op(A) · op(B) (+ bias[n]) through `epi`, written to a new tensor of `outShape`. */
export interface Product {
  /** Left operand, op(A) [M, K]. */
  a: Operand;
  /** Right operand, op(B) [K, N]. */
  b: Operand;
  /** Output batch dims. */
  batch: number[];
  /** Output rows. */
  M: number;
  /** Output columns. */
  N: number;
  /** Reduction length. */
  K: number;
  /** Scale of the product. */
  alpha: number;
  /** bias[n], or null. */
  bias: Storage | null;
  /** The fused store. */
  epi: Epilogue;
  /** Shape of the new output tensor (its size is batch · M · N). */
  outShape: number[];
}

const MAX_GRID = 65535;
/** Largest partial-product buffer of a split-K product (bytes), besides the device's binding limit. */
const SPLIT_MAX_BYTES = 256 * 2 ** 20;

/** Drops size-1 batch dims and merges neighbours both operands step through uniformly. */
function mergeBatch(batch: number[], sa: number[], sb: number[]): { shape: number[]; sa: number[]; sb: number[] } {
  const shape: number[] = [], ma: number[] = [], mb: number[] = [];
  for (let d = batch.length - 1; d >= 0; d--) {
    if (batch[d] === 1) continue;
    if (shape.length > 0 && sa[d] === ma[0] * shape[0] && sb[d] === mb[0] * shape[0]) {
      shape[0] *= batch[d];
      continue;
    }
    shape.unshift(batch[d]);
    ma.unshift(sa[d]);
    mb.unshift(sb[d]);
  }
  return { shape, sa: ma, sb: mb };
}

function pad4(v: number[], fill: number): number[] {
  return [...new Array(4 - v.length).fill(fill), ...v];
}

/** Rows per workgroup of the matrix–vector kernel for `rows` output rows (≤ the tuning cap). */
export function gemvRowsFor(rows: number, cap: 4 | 8 | 16 = tuning.gemvRows): 4 | 8 | 16 {
  const fit = rows <= 4 ? 4 : rows <= 8 ? 8 : 16;
  return Math.min(fit, cap) as 4 | 8 | 16;
}

/** Dispatches one product (see {@linkcode Product}) and returns its output. */
export function gemm(pr: Product): Tensor {
  const rt = runtime();
  const out = empty(pr.outShape);
  let { M } = pr;
  const { N, K, a, b } = pr;
  let { shape: bshape, sa, sb } = mergeBatch(pr.batch, a.strides, b.strides);
  // B shared by every batch and A's batches stacked row-wise: one product with batch·M rows.
  if (bshape.length === 1 && sb[0] === 0 && sa[0] === M * K && !a.trans) {
    M *= bshape[0];
    bshape = [];
    sa = [];
    sb = [];
  }
  check(bshape.length <= 4, "matmul", `batch dims [${pr.batch}] do not merge into 4 strided dims`);
  const nb = bshape.reduce((x, y) => x * y, 1);
  if (out.size === 0) return out;
  if (M <= tuning.gemvMaxRows || N <= tuning.gemvMaxRows) {
    if (gemv(rt, pr, out, M, bshape, sa, sb, nb)) return out;
  }
  tiled(rt, pr, out, M, bshape, sa, sb, nb);
  return out;
}

function epilogueBindings(rt: Runtime, pr: Product) {
  const [dz, dw] = dummy(rt);
  const { epi } = pr;
  return {
    consts: { ACT: epi.act, RESID: epi.resid ? 1 : 0, PRE: epi.pre ? 1 : 0 },
    storages: [epi.resid ?? dz, epi.pre ?? dw],
  };
}

/** The matrix–vector kernel; false when its workgroup does not fit the device (the tiled kernel then runs). */
function gemv(
  rt: Runtime,
  pr: Product,
  out: Tensor,
  M: number,
  bshape: number[],
  sa: number[],
  sb: number[],
  nb: number,
): boolean {
  const { N, K, a, b } = pr;
  const [dz] = dummy(rt);
  const gemvRows = M <= tuning.gemvMaxRows && (M <= N || N > tuning.gemvMaxRows);
  // A' [M', K] and B' [K, N'] as strides; for few columns compute Cᵀ = op(B)ᵀ·op(A)ᵀ instead.
  const aStr = a.trans ? [1, M] : [K, 1]; // (m, k)
  const bStr = b.trans ? [1, K] : [N, 1]; // (k, n)
  let words: number[], sA = a.s, sB = b.s, rows = M, cols = N, kmajor: boolean, bsA = sa, bsB = sb;
  if (gemvRows) {
    words = [M, N, K, 0, f32Bits(pr.alpha), aStr[0], aStr[1], bStr[0], bStr[1], N, 1, 0];
    kmajor = b.trans;
  } else {
    // A'(m', k) = B(k, m'), B'(k, n') = A(n', k).
    words = [N, M, K, 0, f32Bits(pr.alpha), bStr[1], bStr[0], aStr[1], aStr[0], 1, N, 0];
    [sA, sB, rows, cols, bsA, bsB] = [b.s, a.s, N, M, sb, sa];
    kmajor = !a.trans;
  }
  const [wc, ws] = kmajor ? tuning.gemvK : tuning.gemvN;
  const lim = rt.device.limits;
  let rpw = gemvRowsFor(rows);
  while (rpw > 4 && wc * ws * rpw * 4 > lim.maxComputeWorkgroupStorageSize) rpw = (rpw / 2) as 4 | 8;
  if (wc * ws * rpw * 4 > lim.maxComputeWorkgroupStorageSize || wc * ws > lim.maxComputeInvocationsPerWorkgroup) {
    return false;
  }
  const gx = Math.ceil(cols / wc), gy = Math.ceil(rows / rpw);
  check(gx <= MAX_GRID && gy <= MAX_GRID, "matmul", `output [${pr.outShape}] is too large for one dispatch`);
  const [, , , , , sam, sak, sbk, sbn] = words;
  const vec4ok = (...v: number[]) => K % 4 === 0 && v.every((x) => x % 4 === 0);
  const vecA = sak === 1 && vec4ok(sam, ...bsA);
  const vecB = kmajor && sbk === 1 && vec4ok(sbn, ...bsB);
  const epi = epilogueBindings(rt, pr);
  const spec = {
    shader: "matmul_gemv",
    bindings: ["read", "read", "read", "rw", "read", "rw", "read", "read"] as ("read" | "rw")[],
    constants: {
      COLS: wc,
      SLICES: ws,
      ROWS: rpw,
      KMAJOR: kmajor ? 1 : 0,
      VEC_A: vecA ? 1 : 0,
      VEC_B: vecB ? 1 : 0,
      BIAS: pr.bias ? (gemvRows ? 1 : 2) : 0,
      ...epi.consts,
    },
  };
  const storages = [sA, sB, pr.bias ?? dz, out.storage, ...epi.storages, vecA ? sA : dz, vecB ? sB : dz];
  const zt = [...pad4(bshape, 1), ...pad4(bsA, 0), ...pad4(bsB, 0)];
  for (let z0 = 0; z0 < nb; z0 += MAX_GRID) {
    words[3] = z0;
    rt.dispatch(spec, storages, [...words, ...zt], [gx, gy, Math.min(nb - z0, MAX_GRID)]);
  }
  return true;
}

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

/** Tier selection and split K for any tile kind (see {@linkcode tilePlan}). */
function planTiles<T>(
  tiers: { tile: T; minWorkgroups: number; minUtilization: number }[],
  dims: (t: T) => TileDims,
  fallback: T,
  M: number,
  N: number,
  K: number,
  nb: number,
  plain: boolean,
  limits: MatmulLimits,
): { tile: T; splits: number; kchunk: number } {
  const fits = (t: T) => {
    const d = dims(t);
    return d.threads <= limits.maxComputeInvocationsPerWorkgroup && d.bytes <= limits.maxComputeWorkgroupStorageSize &&
      d.wgX <= limits.maxComputeWorkgroupSizeX && d.wgY <= limits.maxComputeWorkgroupSizeY;
  };
  const groups = (t: T) => {
    const d = dims(t);
    return Math.ceil(M / d.bm) * Math.ceil(N / d.bn) * nb;
  };
  const util = (t: T) => {
    const { bm, bn } = dims(t);
    return (M * N) / (Math.ceil(M / bm) * bm * Math.ceil(N / bn) * bn);
  };
  const usable = tiers.filter((t) => fits(t.tile));
  const pick = (splitsOf: (t: T) => number) =>
    usable.find((t) => groups(t.tile) * splitsOf(t.tile) >= t.minWorkgroups && util(t.tile) >= t.minUtilization)
      ?.tile ?? usable[usable.length - 1]?.tile ?? fallback;
  let tile = pick(() => 1);
  // Split K: S partial products over K ranges of a multiple of bk, into [S, batch, M, N], then summed.
  const sk = tuning.splitK;
  const maxSplits = Math.min(
    sk.maxSplits,
    Math.floor(Math.min(SPLIT_MAX_BYTES, limits.maxStorageBufferBindingSize) / (4 * nb * M * N)),
  );
  const long = K >= sk.longK;
  const target = long ? sk.longTargetWorkgroups : sk.targetWorkgroups;
  const splitsOf = (t: T) => {
    const s = Math.max(1, Math.min(maxSplits, Math.ceil(target / groups(t))));
    const bk = dims(t).bk;
    return Math.ceil(K / (Math.ceil(K / s / bk) * bk));
  };
  let splits = 1;
  if (plain && K >= Math.max(sk.minK, 1) && (long || groups(tile) < sk.maxWorkgroups) && maxSplits > 1) {
    tile = pick(splitsOf);
    splits = splitsOf(tile);
  }
  const bk = dims(tile).bk;
  return { tile, splits, kchunk: splits > 1 ? Math.ceil(K / splits / bk) * bk : K };
}

function fp32Dims(c: MatmulTileConfig): TileDims {
  const { threads, bytes } = tileCost(c);
  return { bm: c.wgY * c.tm, bn: c.wgX * c.tn, bk: c.bk, threads, bytes, wgX: c.wgX, wgY: c.wgY };
}

/**
 * The tiled kernel's plan for a product of `nb` batches of M×N over K under the current tuning: the
 * tile, and the K splits (1 = none; `plain` = no bias/activation/residual, which splitting needs).
 */
export function tilePlan(
  M: number,
  N: number,
  K: number,
  nb: number,
  plain: boolean,
  limits: MatmulLimits,
): { tile: MatmulTileConfig; splits: number; kchunk: number } {
  return planTiles(tuning.tiers, fp32Dims, DEFAULT_TILE, M, N, K, nb, plain, limits);
}

/** {@linkcode tilePlan} for the mixed-precision kernel with subgroups of `sg` invocations. */
export function coopTilePlan(
  M: number,
  N: number,
  K: number,
  nb: number,
  plain: boolean,
  limits: MatmulLimits,
  sg: number,
): { tile: MatmulCoopTile; splits: number; kchunk: number } {
  const dims = (t: MatmulCoopTile): TileDims => {
    const d = coopTileDims(t, sg);
    return { ...d, wgX: d.threads, wgY: 1 };
  };
  const tiers = tuning.coopTiers;
  return planTiles(tiers, dims, tiers[tiers.length - 1].tile, M, N, K, nb, plain, limits);
}

/** The tiled kernel, splitting K when the grid is small, K long and there is no epilogue. */
function tiled(
  rt: Runtime,
  pr: Product,
  out: Tensor,
  M: number,
  bshape: number[],
  sa: number[],
  sb: number[],
  nb: number,
): void {
  const { N, K, a, b } = pr;
  const [dz] = dummy(rt);
  const plain = !pr.bias && pr.epi.act === 0 && !pr.epi.resid && !pr.epi.pre;
  const splittable = plain || tuning.splitK.withEpilogue;
  const lim = rt.device.limits;
  const sg = coopSubgroup(rt);
  const flags = {
    TRANS_A: a.trans ? 1 : 0,
    TRANS_B: b.trans ? 1 : 0,
    VEC_A: (a.trans ? M : K) % 4 === 0 && sa.every((s) => s % 4 === 0) ? 1 : 0,
    VEC_B: (b.trans ? K : N) % 4 === 0 && sb.every((s) => s % 4 === 0) ? 1 : 0,
    BIAS: pr.bias ? 1 : 0,
    ...epilogueBindings(rt, pr).consts,
  };
  let spec, bm: number, bn: number, splits: number, kchunk: number, amax: Storage | null = null;
  if (sg > 0) {
    const plan = coopTilePlan(M, N, K, nb, splittable, lim, sg);
    ({ bm, bn } = coopTileDims(plan.tile, sg));
    ({ splits, kchunk } = plan);
    const scaleA = a.scaled === true, scaleB = b.scaled === true;
    spec = {
      shader: "matmul_coop",
      bindings: ["read", "read", "read", "read", "read", "rw", "read", "rw", "read"] as ("read" | "rw")[],
      constants: { ...coopConstants(plan.tile, sg), ...flags, SCALE_A: scaleA ? 1 : 0, SCALE_B: scaleB ? 1 : 0 },
    };
    amax = scaleA || scaleB ? recordAmax(rt, scaleA ? a.s : null, scaleB ? b.s : null) : null;
  } else {
    const plan = tilePlan(M, N, K, nb, splittable, lim);
    const cfg = plan.tile;
    [bm, bn] = [cfg.wgY * cfg.tm, cfg.wgX * cfg.tn];
    ({ splits, kchunk } = plan);
    spec = {
      shader: "matmul",
      bindings: ["read", "read", "read", "read", "read", "rw", "read", "rw"] as ("read" | "rw")[],
      constants: { WG_X: cfg.wgX, WG_Y: cfg.wgY, TM: cfg.tm, TN: cfg.tn, BK: cfg.bk, ...flags },
    };
  }
  const gx = Math.ceil(N / bn), gy = Math.ceil(M / bm);
  check(gx <= MAX_GRID && gy <= MAX_GRID, "matmul", `output [${pr.outShape}] is too large for one dispatch`);
  const part = splits > 1 ? empty([splits, out.size]) : out;
  // Split with an epilogue: plain partial products here, the epilogue in the sum (matmul_splitk.wgsl).
  if (splits > 1 && !plain) spec.constants = { ...spec.constants, BIAS: 0, ACT: 0, RESID: 0, PRE: 0 };
  const storages = [
    a.s,
    flags.VEC_A ? a.s : dz,
    b.s,
    flags.VEC_B ? b.s : dz,
    pr.bias ?? dz,
    part.storage,
    ...epilogueBindings(rt, pr).storages,
    ...(sg > 0 ? [amax ?? dz] : []),
  ];
  const tail = [...pad4(bshape, 1), ...pad4(sa, 0), ...pad4(sb, 0)];
  const words = [M, N, K, 0, f32Bits(pr.alpha), nb, kchunk, 0, ...tail];
  const nz = nb * splits;
  for (let z0 = 0; z0 < nz; z0 += MAX_GRID) {
    words[3] = z0;
    rt.dispatch(spec, storages, words, [gx, gy, Math.min(nz - z0, MAX_GRID)]);
  }
  amax?.release();
  if (part === out) return;
  if (!plain) {
    const e = epilogueBindings(rt, pr);
    const sumSpec = {
      shader: "matmul_splitk",
      bindings: ["read", "read", "rw", "read", "rw"] as ("read" | "rw")[],
      constants: { BIAS: pr.bias ? 1 : 0, ...e.consts },
    };
    const storages = [part.storage, pr.bias ?? dz, out.storage, ...e.storages];
    rt.dispatch(sumSpec, storages, [out.size, splits, N, 0], grid1d(out.size));
    part.dispose();
    return;
  }
  // out[i] = Σ_s part[s, i]: reduce.wgsl's column sum over the [1, S, size] view.
  const sumSpec = { shader: "reduce", entry: "sum_cols", bindings: ["read", "rw"] as ("read" | "rw")[] };
  const sumWords = [1, splits, out.size, f32Bits(1), splits * out.size, 0, 0, 0];
  rt.dispatch(sumSpec, [part.storage, out.storage], sumWords, grid1d(out.size));
  part.dispose();
}
