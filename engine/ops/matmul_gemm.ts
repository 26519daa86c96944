/**
 * The matrix-product dispatcher behind `matmul` and `linear` (engine/ops/matmul.ts): {@linkcode gemm}, which
 * routes one product (with the knobs and tile plans of engine/ops/matmul_tuning.ts) to
 * `shaders/matmul_gemv.wgsl` (few output rows or columns: 4, 8 or 16 rows per workgroup, so each
 * weight is read once per block of rows) or to the tiled `shaders/matmul.wgsl` (optionally splitting K into
 * partial products when the tile grid is small, summed by `reduce.wgsl`'s `sum_cols` or, with an epilogue, by
 * `shaders/matmul_splitk.wgsl`), or, in mixed precision, to its tensor-core twin `shaders/matmul_coop.wgsl`
 * (engine/ops/matmul_coop.ts).
 * @module
 */

import { f32Bits, grid1d, type Runtime, type Storage } from "../runtime.ts";
import { check, empty, runtime, type Tensor } from "../tensor.ts";
import { coopConstants, coopSubgroup, coopTileDims, recordAmax } from "./matmul_coop.ts";
import { coopTilePlan, currentTuning, tilePlan } from "./matmul_tuning.ts";

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
export function gemvRowsFor(rows: number, cap: 4 | 8 | 16 = currentTuning().gemvRows): 4 | 8 | 16 {
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
  if (M <= currentTuning().gemvMaxRows || N <= currentTuning().gemvMaxRows) {
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
  const gemvRows = M <= currentTuning().gemvMaxRows && (M <= N || N > currentTuning().gemvMaxRows);
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
  const [wc, ws] = kmajor ? currentTuning().gemvK : currentTuning().gemvN;
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
  const splittable = plain || currentTuning().splitK.withEpilogue;
  const lim = rt.device.limits;
  const sg = coopSubgroup(rt);
  const epi = epilogueBindings(rt, pr);
  const flags = {
    TRANS_A: a.trans ? 1 : 0,
    TRANS_B: b.trans ? 1 : 0,
    VEC_A: (a.trans ? M : K) % 4 === 0 && sa.every((s) => s % 4 === 0) ? 1 : 0,
    VEC_B: (b.trans ? K : N) % 4 === 0 && sb.every((s) => s % 4 === 0) ? 1 : 0,
    BIAS: pr.bias ? 1 : 0,
    ...epi.consts,
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
    ...epi.storages,
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
    const sumSpec = {
      shader: "matmul_splitk",
      bindings: ["read", "read", "rw", "read", "rw"] as ("read" | "rw")[],
      constants: { BIAS: pr.bias ? 1 : 0, ...epi.consts },
    };
    const storages = [part.storage, pr.bias ?? dz, out.storage, ...epi.storages];
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
