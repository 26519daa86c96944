/**
 * The matrix-product dispatcher behind `matmul` and `linear` (engine/ops/matmul.ts): {@linkcode gemm}, which
 * routes one product (with the knobs and tile plans of engine/ops/matmul_tuning.ts) to
 * `shaders/matmul_gemv.wgsl` (few output rows or columns: 4, 8 or 16 rows per workgroup, so each
 * weight is read once per block of rows) or to the tiled `shaders/matmul.wgsl` (optionally splitting K into
 * partial products when the tile grid is small, summed by `reduce.wgsl`'s `sum_cols` or, with an epilogue, by
 * `shaders/matmul_splitk.wgsl`), or, in mixed precision, to its tensor-core twin `shaders/matmul_coop.wgsl`
 * (engine/ops/matmul_coop.ts). Kernel descriptors: engine/kernels/matmul.ts.
 * @module
 */

import { grid1d, type Storage } from "../runtime.ts";
import type { Backend } from "../backend.ts";
import { check, empty, runtime, type Tensor } from "../tensor.ts";
import { MATMUL, MATMUL_COOP, MATMUL_GEMV, MATMUL_SPLITK_SUM } from "../kernels/matmul.ts";
import { SUM_COLS } from "../kernels/reduce.ts";
import { coopConstants, coopSubgroup, coopTileDims, recordAmax } from "./matmul_coop.ts";
import { coopTilePlan, currentTuning, type MatmulTuning, tilePlan } from "./matmul_tuning.ts";

// ------------------------------------------------------------------ products

/** One operand of a product: its storage, whether it is stored transposed, its batch strides. */
export interface Operand {
  /** The storage holding the operand. */
  storage: Storage;
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

/** C[batch…] = alpha · op(A) · op(B) (+ bias[n]) through `epilogue`, written to a new tensor of `outShape`. */
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
  epilogue: Epilogue;
  /** Shape of the new output tensor (its size is batch · M · N). */
  outShape: number[];
  /** Writes into this tensor of `outShape` (every element) instead of a new one, e.g. a gradient's flat slot. */
  out?: Tensor;
}

/** A product's batch dims after merging: at most 4 dims with each operand's element strides. */
interface BatchLayout {
  /** Output rows (batches stacked into the rows when B is shared and A contiguous). */
  M: number;
  /** Batch dims, innermost last. */
  shape: number[];
  /** A's element stride per batch dim (0 = broadcast). */
  aStrides: number[];
  /** B's element stride per batch dim. */
  bStrides: number[];
  /** Number of batches (product of `shape`). */
  count: number;
}

const MAX_GRID = 65535;

// ------------------------------------------------------------------ dispatch

/** Dispatches one product (see {@linkcode Product}) and returns its output. */
export function gemm(product: Product): Tensor {
  const rt = runtime();
  const out = product.out ?? empty(product.outShape);
  const batches = batchLayout(product);
  if (out.size === 0) return out;
  const tuning = currentTuning();
  if (batches.M <= tuning.gemvMaxRows || product.N <= tuning.gemvMaxRows) {
    if (gemv(rt, product, out, batches)) return out;
  }
  tiled(rt, product, out, batches);
  return out;
}

/** Merges the batch dims of a product; folds them into the rows when B is shared and A's batches are stacked. */
function batchLayout(product: Product): BatchLayout {
  const { M, K, a, b } = product;
  const { shape, aStrides, bStrides } = mergeBatch(product.batch, a.strides, b.strides);
  // B shared by every batch and A's batches stacked row-wise: one product with batch·M rows.
  if (shape.length === 1 && bStrides[0] === 0 && aStrides[0] === M * K && !a.trans) {
    return { M: M * shape[0], shape: [], aStrides: [], bStrides: [], count: 1 };
  }
  check(shape.length <= 4, "matmul", `batch dims [${product.batch}] do not merge into 4 strided dims`);
  return { M, shape, aStrides, bStrides, count: shape.reduce((x, y) => x * y, 1) };
}

/** Drops size-1 batch dims and merges neighbours both operands step through uniformly. */
function mergeBatch(
  batch: number[],
  aStrides: number[],
  bStrides: number[],
): { shape: number[]; aStrides: number[]; bStrides: number[] } {
  const shape: number[] = [], mergedA: number[] = [], mergedB: number[] = [];
  for (let d = batch.length - 1; d >= 0; d--) {
    if (batch[d] === 1) continue;
    if (shape.length > 0 && aStrides[d] === mergedA[0] * shape[0] && bStrides[d] === mergedB[0] * shape[0]) {
      shape[0] *= batch[d];
      continue;
    }
    shape.unshift(batch[d]);
    mergedA.unshift(aStrides[d]);
    mergedB.unshift(bStrides[d]);
  }
  return { shape, aStrides: mergedA, bStrides: mergedB };
}

/** Left-pads a batch vector to the kernels' 4 dims. */
function pad4(v: number[], fill: number): number[] {
  return [...new Array(4 - v.length).fill(fill), ...v];
}

const spares = new WeakMap<Backend, { read: Storage; write: Storage }>();

/**
 * Small storages bound where a kernel declares a binding it does not use: one for read-only
 * bindings, another for read-write ones (one buffer may not be bound both ways in a dispatch).
 */
function spareStorages(rt: Backend): { read: Storage; write: Storage } {
  let spare = spares.get(rt);
  if (!spare) spares.set(rt, spare = { read: rt.alloc(256), write: rt.alloc(256) });
  return spare;
}

/** The epilogue's pipeline constants (bias excepted) and its residual and pre-activation bindings. */
function epilogueBindings(rt: Backend, epilogue: Epilogue) {
  const spare = spareStorages(rt);
  return {
    constants: { ACT: epilogue.act, RESID: epilogue.resid ? 1 : 0, PRE: epilogue.pre ? 1 : 0 },
    resid: epilogue.resid ?? spare.read,
    pre: epilogue.pre ?? spare.write,
  };
}

// ------------------------------------------------------------------ matrix–vector kernel

/** Rows per workgroup of the matrix–vector kernel for `rows` output rows (≤ the tuning cap). */
export function gemvRowsFor(rows: number, cap: 4 | 8 | 16 = currentTuning().gemvRows): 4 | 8 | 16 {
  const fit = rows <= 4 ? 4 : rows <= 8 ? 8 : 16;
  return Math.min(fit, cap) as 4 | 8 | 16;
}

/**
 * The matrix–vector kernel's view of a product: C' = A' [rows, K] · B' [K, cols] through element strides. For few
 * rows it is the product itself; for few columns it computes Cᵀ = op(B)ᵀ · op(A)ᵀ (A and B swap roles).
 */
interface GemvView {
  /** A' and B'. */
  a: Storage;
  b: Storage;
  rows: number;
  cols: number;
  /** Element strides of A' along its rows and along k. */
  aStride: { row: number; k: number };
  /** Element strides of B' along k and along its columns. */
  bStride: { k: number; col: number };
  /** Element strides of C along the rows and columns of C'. */
  outStride: { row: number; col: number };
  /** Batch strides of A' and B'. */
  aBatch: number[];
  bBatch: number[];
  /** B' is contiguous along k: a column's threads sit next to each other. */
  kMajor: boolean;
  /** The bias runs along C's columns, i.e. along C' rows (the swapped view). */
  biasAlongRows: boolean;
}

function gemvView(product: Product, batches: BatchLayout): GemvView {
  const { N, K, a, b } = product;
  const M = batches.M;
  const maxRows = currentTuning().gemvMaxRows;
  const aStride = a.trans ? { m: 1, k: M } : { m: K, k: 1 };
  const bStride = b.trans ? { k: 1, n: K } : { k: N, n: 1 };
  if (M <= maxRows && (M <= N || N > maxRows)) {
    return {
      a: a.storage,
      b: b.storage,
      rows: M,
      cols: N,
      aStride: { row: aStride.m, k: aStride.k },
      bStride: { k: bStride.k, col: bStride.n },
      outStride: { row: N, col: 1 },
      aBatch: batches.aStrides,
      bBatch: batches.bStrides,
      kMajor: b.trans,
      biasAlongRows: false,
    };
  }
  // A'(m', k) = B(k, m'), B'(k, n') = A(n', k).
  return {
    a: b.storage,
    b: a.storage,
    rows: N,
    cols: M,
    aStride: { row: bStride.n, k: bStride.k },
    bStride: { k: aStride.k, col: aStride.m },
    outStride: { row: 1, col: N },
    aBatch: batches.bStrides,
    bBatch: batches.aStrides,
    kMajor: !a.trans,
    biasAlongRows: true,
  };
}

/** The matrix–vector kernel's workgroup (columns, threads per column, rows) for a view, or null if none fits. */
function gemvWorkgroup(rt: Backend, view: GemvView): { columns: number; slices: number; rows: 4 | 8 | 16 } | null {
  const tuning: Readonly<MatmulTuning> = currentTuning();
  const [columns, slices] = view.kMajor ? tuning.gemvK : tuning.gemvN;
  const limits = rt.limits;
  const sharedBytes = (rows: number) => columns * slices * rows * 4;
  let rows = gemvRowsFor(view.rows);
  while (rows > 4 && sharedBytes(rows) > limits.maxComputeWorkgroupStorageSize) rows = (rows / 2) as 4 | 8;
  const fits = sharedBytes(rows) <= limits.maxComputeWorkgroupStorageSize &&
    columns * slices <= limits.maxComputeInvocationsPerWorkgroup;
  return fits ? { columns, slices, rows } : null;
}

/** The matrix–vector kernel; false when its workgroup does not fit the device (the tiled kernel then runs). */
function gemv(rt: Backend, product: Product, out: Tensor, batches: BatchLayout): boolean {
  const view = gemvView(product, batches);
  const wg = gemvWorkgroup(rt, view);
  if (!wg) return false;
  const gx = Math.ceil(view.cols / wg.columns), gy = Math.ceil(view.rows / wg.rows);
  check(gx <= MAX_GRID && gy <= MAX_GRID, "matmul", `output [${product.outShape}] is too large for one dispatch`);
  const vec4ok = (...v: number[]) => product.K % 4 === 0 && v.every((x) => x % 4 === 0);
  const vecA = view.aStride.k === 1 && vec4ok(view.aStride.row, ...view.aBatch);
  const vecB = view.kMajor && view.bStride.k === 1 && vec4ok(view.bStride.col, ...view.bBatch);
  const spare = spareStorages(rt).read;
  const epilogue = epilogueBindings(rt, product.epilogue);
  const overrides = {
    COLS: wg.columns,
    SLICES: wg.slices,
    ROWS: wg.rows,
    KMAJOR: view.kMajor ? 1 : 0,
    VEC_A: vecA ? 1 : 0,
    VEC_B: vecB ? 1 : 0,
    BIAS: product.bias ? (view.biasAlongRows ? 2 : 1) : 0,
    ...epilogue.constants,
  };
  const bindings = {
    a: view.a,
    b: view.b,
    bias: product.bias ?? spare,
    c: out.storage,
    resid: epilogue.resid,
    pre: epilogue.pre,
    aV: vecA ? view.a : spare,
    bV: vecB ? view.b : spare,
  };
  for (let batch0 = 0; batch0 < batches.count; batch0 += MAX_GRID) {
    const grid = [gx, gy, Math.min(batches.count - batch0, MAX_GRID)] as const;
    rt.run(MATMUL_GEMV, gemvParams(view, product, batches, batch0), bindings, grid, overrides);
  }
  return true;
}

/** The matrix–vector kernel's uniforms for the grid layer starting at batch `batch0`. */
function gemvParams(view: GemvView, product: Product, batches: BatchLayout, batch0: number) {
  return {
    M: view.rows,
    N: view.cols,
    K: product.K,
    batch0,
    alpha: product.alpha,
    sam: view.aStride.row,
    sak: view.aStride.k,
    sbk: view.bStride.k,
    sbn: view.bStride.col,
    scm: view.outStride.row,
    scn: view.outStride.col,
    bshape: pad4(batches.shape, 1),
    astride: pad4(view.aBatch, 0),
    bstride: pad4(view.bBatch, 0),
  };
}

// ------------------------------------------------------------------ tiled kernels

/** A tiled kernel chosen for a product: its pipeline constants, output tile and K splits. */
interface TiledChoice {
  /** Subgroup size of the cooperative-matrix kernel, 0 for the fp32 kernel. */
  subgroup: number;
  /** Tile constants (WG_X… or SG, WM…; the operand and epilogue flags are added by the caller). */
  tileConstants: Record<string, number>;
  /** Output rows and columns per workgroup. */
  tileRows: number;
  tileCols: number;
  /** K ranges computed as separate partial products (1 = none), each `kchunk` long. */
  splits: number;
  kchunk: number;
}

/** Whether a product has no bias, activation, residual or pre-activation to store. */
function isPlain(product: Product): boolean {
  const { epilogue } = product;
  return !product.bias && epilogue.act === 0 && !epilogue.resid && !epilogue.pre;
}

/** The tile and split of the tiled kernel (cooperative-matrix in mixed precision) for a product. */
function chooseTiled(rt: Backend, product: Product, batches: BatchLayout): TiledChoice {
  const { N, K } = product, M = batches.M;
  const splittable = isPlain(product) || currentTuning().splitK.withEpilogue;
  const limits = rt.limits;
  const subgroup = coopSubgroup(rt);
  if (subgroup > 0) {
    const plan = coopTilePlan(M, N, K, batches.count, splittable, limits, subgroup);
    const { bm, bn } = coopTileDims(plan.tile, subgroup);
    const tileConstants = coopConstants(plan.tile, subgroup);
    return { subgroup, tileConstants, tileRows: bm, tileCols: bn, splits: plan.splits, kchunk: plan.kchunk };
  }
  // On the CPU backend one BLAS call per layer does the whole K: splitting only adds partial products and a sum.
  const plan = tilePlan(M, N, K, batches.count, splittable && rt.handle.backend !== "cpu", limits);
  const { wgX, wgY, tm, tn, bk } = plan.tile;
  const tileConstants = { WG_X: wgX, WG_Y: wgY, TM: tm, TN: tn, BK: bk };
  return { subgroup, tileConstants, tileRows: wgY * tm, tileCols: wgX * tn, splits: plan.splits, kchunk: plan.kchunk };
}

/** The tiled kernel, splitting K when the grid is small and K long (the sum then applies any epilogue). */
function tiled(rt: Backend, product: Product, out: Tensor, batches: BatchLayout): void {
  const { N, a, b } = product, M = batches.M;
  const choice = chooseTiled(rt, product, batches);
  const gx = Math.ceil(N / choice.tileCols), gy = Math.ceil(M / choice.tileRows);
  check(gx <= MAX_GRID && gy <= MAX_GRID, "matmul", `output [${product.outShape}] is too large for one dispatch`);
  const part = choice.splits > 1 ? empty([choice.splits, out.size]) : out;
  const { bindings, overrides } = tiledBindings(rt, product, batches, choice, part);
  const scaleA = choice.subgroup > 0 && a.scaled === true, scaleB = choice.subgroup > 0 && b.scaled === true;
  const amax = scaleA || scaleB ? recordAmax(rt, scaleA ? a.storage : null, scaleB ? b.storage : null) : null;
  const coopBindings = { ...bindings, amax: amax ?? spareStorages(rt).read };
  const coopOverrides = { ...overrides, SCALE_A: scaleA ? 1 : 0, SCALE_B: scaleB ? 1 : 0 };
  const layers = batches.count * choice.splits;
  for (let batch0 = 0; batch0 < layers; batch0 += MAX_GRID) {
    const params = {
      M,
      N,
      K: product.K,
      batch0,
      alpha: product.alpha,
      nbatch: batches.count,
      kchunk: choice.kchunk,
      bshape: pad4(batches.shape, 1),
      astride: pad4(batches.aStrides, 0),
      bstride: pad4(batches.bStrides, 0),
    };
    const grid = [gx, gy, Math.min(layers - batch0, MAX_GRID)] as const;
    if (choice.subgroup > 0) rt.run(MATMUL_COOP, params, coopBindings, grid, coopOverrides);
    else rt.run(MATMUL, params, bindings, grid, overrides);
  }
  amax?.release();
  if (part !== out) sumSplits(rt, product, part, out, choice.splits);
}

/** Bindings 1–8 and pipeline constants of the tiled kernels (the cooperative-matrix kernel adds its own). */
function tiledBindings(rt: Backend, product: Product, batches: BatchLayout, choice: TiledChoice, part: Tensor) {
  const { N, K, a, b } = product, M = batches.M;
  const vecA = (a.trans ? M : K) % 4 === 0 && batches.aStrides.every((s) => s % 4 === 0);
  const vecB = (b.trans ? K : N) % 4 === 0 && batches.bStrides.every((s) => s % 4 === 0);
  const spare = spareStorages(rt).read;
  const epilogue = epilogueBindings(rt, product.epilogue);
  const bindings = {
    aS: a.storage,
    aV: vecA ? a.storage : spare,
    bS: b.storage,
    bV: vecB ? b.storage : spare,
    bias: product.bias ?? spare,
    c: part.storage,
    resid: epilogue.resid,
    pre: epilogue.pre,
  };
  const overrides = {
    ...choice.tileConstants,
    TRANS_A: a.trans ? 1 : 0,
    TRANS_B: b.trans ? 1 : 0,
    VEC_A: vecA ? 1 : 0,
    VEC_B: vecB ? 1 : 0,
    BIAS: product.bias ? 1 : 0,
    ...epilogue.constants,
    // Split with an epilogue: plain partial products here, the epilogue in the sum (matmul_splitk.wgsl).
    ...(choice.splits > 1 && !isPlain(product) ? { BIAS: 0, ACT: 0, RESID: 0, PRE: 0 } : {}),
  };
  return { bindings, overrides };
}

/** out = epilogue(Σ_s part[s, :]) over the `splits` partial products of a split-K product. */
function sumSplits(rt: Backend, product: Product, part: Tensor, out: Tensor, splits: number): void {
  if (isPlain(product)) {
    // out[i] = Σ_s part[s, i]: reduce.wgsl's column sum over the [1, S, size] view.
    const params = { outer: 1, n: splits, inner: out.size, scale: 1, total: splits * out.size, groups: 0 };
    rt.run(SUM_COLS, params, { x: part.storage, y: out.storage }, grid1d(out.size));
  } else {
    const epilogue = epilogueBindings(rt, product.epilogue);
    const bias = product.bias ?? spareStorages(rt).read;
    const bindings = { part: part.storage, bias, c: out.storage, resid: epilogue.resid, pre: epilogue.pre };
    const overrides = { BIAS: product.bias ? 1 : 0, ...epilogue.constants };
    rt.run(MATMUL_SPLITK_SUM, { size: out.size, splits, N: product.N }, bindings, grid1d(out.size), overrides);
  }
  part.dispose();
}
