/**
 * Matrix multiplication: batched `matmul` with transpose flags and NumPy batch broadcasting, and
 * `linear` (act(x·W + b) + residual, with bias, activation and residual fused into the kernel's
 * store), each with its backward.
 *
 * Kernels: `shaders/matmul.wgsl` (workgroup-memory tiles, a register block of 4×4 to 8×8 outputs
 * per thread) and `shaders/matmul_gemv.wgsl` (matrix–vector style, for ≤ 4 output rows or columns).
 * Transposes are index math in the loads, never materialised; backward passes reuse the same
 * kernels with the transpose flags flipped.
 * @module
 */

import { f32Bits, type Runtime, type Storage } from "../runtime.ts";
import { check, empty, runtime, type Tensor } from "../tensor.ts";
import { needsGrad, record, saveForBackward } from "../autograd.ts";
import { activationGrad, ones, sumTo } from "./elementwise.ts";

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

/** Kernel selection knobs, for benchmarks to tune (see {@linkcode setMatmulTuning}). */
export interface MatmulTuning {
  /** Tiles of the tiled kernel, tried in order (the last one is the fallback whatever its conditions). */
  tiers: MatmulTileTier[];
  /** Products with at most this many output rows (or columns) use the matrix–vector kernel (≤ 4). */
  gemvMaxRows: number;
  /** Matrix–vector kernel, B contiguous along n: columns per workgroup and threads per column. */
  gemvN: [cols: number, slices: number];
  /** Matrix–vector kernel, B contiguous along k: columns per workgroup and threads per column. */
  gemvK: [cols: number, slices: number];
}

// Tiers chosen from timings on an H200 through Deno's WebGPU (wgpu/Vulkan), GPT-2-sized shapes:
// 128×128 (8×8 per thread) wins only on big squares; 128×64 (8×4) on mid-sized products; 64×64 when
// fewer workgroups would leave SMs idle; 32×32 for a few rows (e.g. 16 generation rows × vocabulary).
const DEFAULT_TILE: MatmulTileConfig = { wgX: 16, wgY: 16, tm: 4, tn: 4, bk: 16 };
const DEFAULT_TUNING: MatmulTuning = {
  tiers: [
    { tile: { wgX: 16, wgY: 16, tm: 8, tn: 8, bk: 16 }, minWorkgroups: 1024, minUtilization: 0.9 },
    { tile: { wgX: 16, wgY: 16, tm: 8, tn: 4, bk: 16 }, minWorkgroups: 264, minUtilization: 0.75 },
    { tile: DEFAULT_TILE, minWorkgroups: 128, minUtilization: 0.5 },
    { tile: { wgX: 8, wgY: 8, tm: 4, tn: 4, bk: 16 }, minWorkgroups: 0, minUtilization: 0 },
  ],
  gemvMaxRows: 4,
  gemvN: [8, 32],
  gemvK: [8, 32],
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

/**
 * Changes the kernel selection knobs (merged into the current ones); returns the previous knobs so
 * a benchmark can restore them. Tile configurations are validated here, device limits at dispatch
 * (tiers whose tile exceeds the device's limits are skipped).
 */
export function setMatmulTuning(t: Partial<MatmulTuning>): MatmulTuning {
  const next: MatmulTuning = { ...tuning, ...structuredClone(t) };
  check(next.tiers.length > 0, "setMatmulTuning", "at least one tile tier is needed");
  for (const { tile } of next.tiers) {
    const problem = tileProblem(tile);
    check(problem === null, "setMatmulTuning", `tile ${JSON.stringify(tile)}: ${problem}`);
  }
  check(next.gemvMaxRows >= 0 && next.gemvMaxRows <= 4, "setMatmulTuning", "gemvMaxRows must be in 0..4");
  for (const [cols, slices] of [next.gemvN, next.gemvK]) {
    check(
      cols > 0 && slices > 0 && Number.isInteger(cols) && (slices & (slices - 1)) === 0,
      "setMatmulTuning",
      `gemv [cols, slices] = [${cols}, ${slices}]: slices must be a power of two`,
    );
  }
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
interface Operand {
  s: Storage;
  trans: boolean;
  /** Element stride per output batch dim (0 where broadcast). */
  strides: number[];
}

/** Activation codes of shaders/activation.wgsl. */
const ACT_CODES = { gelu: 1, gelu_new: 2, relu: 3 } as const;

/** The fused store: C = act(alpha·A·B + bias) (+ residual), optionally keeping the pre-activation. */
interface Epilogue {
  /** Activation code (0 none). */
  act: number;
  /** Added after the activation, laid out like C. */
  resid: Storage | null;
  /** Receives alpha·A·B + bias (before the activation), laid out like C. */
  pre: Storage | null;
}

const NO_EPILOGUE: Epilogue = { act: 0, resid: null, pre: null };

/** C[batch…] = alpha · op(A) · op(B) (+ bias[n]) through `epi`, written to a new tensor of `outShape`. */
interface Product {
  a: Operand;
  b: Operand;
  batch: number[];
  M: number;
  N: number;
  K: number;
  alpha: number;
  bias: Storage | null;
  epi: Epilogue;
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

function gemm(pr: Product): Tensor {
  const rt = runtime();
  const out = empty(pr.outShape);
  let { M, N, K } = pr;
  const { a, b } = pr;
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
  const tail = [...pad4(bshape, 1), ...pad4(sa, 0), ...pad4(sb, 0)];
  const [dz, dw] = dummy(rt);
  const { epi } = pr;
  const epiConsts = { ACT: epi.act, RESID: epi.resid ? 1 : 0, PRE: epi.pre ? 1 : 0 };
  const epiStorages = [epi.resid ?? dz, epi.pre ?? dw];

  const gemvRows = M <= tuning.gemvMaxRows, gemvCols = !gemvRows && N <= tuning.gemvMaxRows;
  if (gemvRows || gemvCols) {
    // A' [M', K] and B' [K, N'] as strides; for few columns compute Cᵀ = op(B)ᵀ·op(A)ᵀ instead.
    const aStr = a.trans ? [1, M] : [K, 1]; // (m, k)
    const bStr = b.trans ? [1, K] : [N, 1]; // (k, n)
    let words: number[], sA = a.s, sB = b.s, rows = M, cols = N, kmajor: boolean, zt = tail;
    if (gemvRows) {
      words = [M, N, K, 0, f32Bits(pr.alpha), aStr[0], aStr[1], bStr[0], bStr[1], N, 1, 0];
      kmajor = b.trans;
    } else {
      // A'(m', k) = B(k, m'), B'(k, n') = A(n', k).
      words = [N, M, K, 0, f32Bits(pr.alpha), bStr[1], bStr[0], aStr[1], aStr[0], 1, N, 0];
      [sA, sB, rows, cols] = [b.s, a.s, N, M];
      kmajor = !a.trans;
      zt = [...pad4(bshape, 1), ...pad4(sb, 0), ...pad4(sa, 0)];
    }
    const [wc, ws] = kmajor ? tuning.gemvK : tuning.gemvN;
    const gx = Math.ceil(cols / wc), gy = Math.ceil(rows / 4);
    check(gx <= MAX_GRID && gy <= MAX_GRID, "matmul", `output [${pr.outShape}] is too large for one dispatch`);
    const spec = {
      shader: "matmul_gemv",
      bindings: ["read", "read", "read", "rw", "read", "rw"] as ("read" | "rw")[],
      constants: {
        COLS: wc,
        SLICES: ws,
        KMAJOR: kmajor ? 1 : 0,
        BIAS: pr.bias ? (gemvRows ? 1 : 2) : 0,
        ...epiConsts,
      },
    };
    const storages = [sA, sB, pr.bias ?? dz, out.storage, ...epiStorages];
    for (let z0 = 0; z0 < nb; z0 += MAX_GRID) {
      words[3] = z0;
      rt.dispatch(spec, storages, [...words, ...zt], [gx, gy, Math.min(nb - z0, MAX_GRID)]);
    }
    return out;
  }

  const limits = rt.device.limits;
  const fits = (c: MatmulTileConfig) => {
    const { threads, bytes } = tileCost(c);
    return threads <= limits.maxComputeInvocationsPerWorkgroup && bytes <= limits.maxComputeWorkgroupStorageSize &&
      c.wgX <= limits.maxComputeWorkgroupSizeX && c.wgY <= limits.maxComputeWorkgroupSizeY;
  };
  const groups = (c: MatmulTileConfig) => Math.ceil(M / (c.wgY * c.tm)) * Math.ceil(N / (c.wgX * c.tn)) * nb;
  const util = (c: MatmulTileConfig) => {
    const bm = c.wgY * c.tm, bn = c.wgX * c.tn;
    return (M * N) / (Math.ceil(M / bm) * bm * Math.ceil(N / bn) * bn);
  };
  const usable = tuning.tiers.filter((t) => fits(t.tile));
  const cfg = usable.find((t) => groups(t.tile) >= t.minWorkgroups && util(t.tile) >= t.minUtilization)?.tile ??
    usable[usable.length - 1]?.tile ?? DEFAULT_TILE;
  const gx = Math.ceil(N / (cfg.wgX * cfg.tn)), gy = Math.ceil(M / (cfg.wgY * cfg.tm));
  check(gx <= MAX_GRID && gy <= MAX_GRID, "matmul", `output [${pr.outShape}] is too large for one dispatch`);
  const vecA = (a.trans ? M : K) % 4 === 0 && sa.every((s) => s % 4 === 0);
  const vecB = (b.trans ? K : N) % 4 === 0 && sb.every((s) => s % 4 === 0);
  const spec = {
    shader: "matmul",
    bindings: ["read", "read", "read", "read", "read", "rw", "read", "rw"] as ("read" | "rw")[],
    constants: {
      WG_X: cfg.wgX,
      WG_Y: cfg.wgY,
      TM: cfg.tm,
      TN: cfg.tn,
      BK: cfg.bk,
      TRANS_A: a.trans ? 1 : 0,
      TRANS_B: b.trans ? 1 : 0,
      VEC_A: vecA ? 1 : 0,
      VEC_B: vecB ? 1 : 0,
      BIAS: pr.bias ? 1 : 0,
      ...epiConsts,
    },
  };
  const storages = [a.s, vecA ? a.s : dz, b.s, vecB ? b.s : dz, pr.bias ?? dz, out.storage, ...epiStorages];
  const words = [M, N, K, 0, f32Bits(pr.alpha), 0, 0, 0, ...tail];
  for (let z0 = 0; z0 < nb; z0 += MAX_GRID) {
    words[3] = z0;
    rt.dispatch(spec, storages, words, [gx, gy, Math.min(nb - z0, MAX_GRID)]);
  }
  return out;
}

/** Shorthand for {@linkcode gemm}: C = act(alpha · op(A) · op(B) (+ bias)) (+ residual) of `outShape`. */
function mm(
  a: Operand,
  b: Operand,
  M: number,
  N: number,
  K: number,
  outShape: number[],
  batch: number[] = [],
  alpha = 1,
  bias: Storage | null = null,
  epi: Epilogue = NO_EPILOGUE,
): Tensor {
  return gemm({ a, b, batch, M, N, K, alpha, bias, epi, outShape });
}

// ------------------------------------------------------------------ shapes

const numel = (s: readonly number[]) => s.reduce((x, y) => x * y, 1);

/** Element strides of an operand's batch dims against the output batch shape (0 = broadcast). */
function batchStrides(shape: readonly number[], batch: number[]): number[] {
  const own = shape.slice(0, -2);
  const full = [...new Array(batch.length - own.length).fill(1), ...own];
  const st = new Array(batch.length).fill(0);
  let s = shape[shape.length - 2] * shape[shape.length - 1];
  for (let d = batch.length - 1; d >= 0; d--) {
    st[d] = full[d] === 1 ? 0 : s;
    s *= full[d];
  }
  return st;
}

function contiguous(batch: number[], block: number): number[] {
  const st = new Array(batch.length).fill(0);
  let s = block;
  for (let d = batch.length - 1; d >= 0; d--) {
    st[d] = s;
    s *= batch[d];
  }
  return st;
}

function takeResult(full: Tensor, shape: readonly number[]): Tensor {
  if (full.shape.join() === shape.join()) return full;
  const r = sumTo(full, shape);
  full.dispose();
  return r;
}

// ------------------------------------------------------------------ matmul

/** Options for {@linkcode matmul}. */
export interface MatmulOptions {
  /** `a` is stored [..., K, M] and used transposed. */
  transA?: boolean;
  /** `b` is stored [..., N, K] and used transposed. */
  transB?: boolean;
  /** Scales the product (fused into the kernel's store; default 1). */
  alpha?: number;
}

/**
 * Batched matrix product: `a` [...batch, M, K] · `b` [...batch, K, N] → [...batch, M, N], with
 * NumPy broadcasting of the batch dims (e.g. x [B, T, C] · W [C, N]). `transA` / `transB` use an
 * operand stored with its last two dims swapped, without materialising the transpose.
 * Differentiable in both operands; gradients of broadcast operands are summed over the batch.
 */
export function matmul(a: Tensor, b: Tensor, options: MatmulOptions = {}): Tensor {
  const transA = options.transA ?? false, transB = options.transB ?? false, alpha = options.alpha ?? 1;
  const desc = `a [${a.shape}]${transA ? " (transA)" : ""} and b [${b.shape}]${transB ? " (transB)" : ""}`;
  check(a.dtype === "f32" && b.dtype === "f32", "matmul", `expects f32 tensors, got ${a.dtype} and ${b.dtype}`);
  check(a.ndim >= 2 && b.ndim >= 2, "matmul", `needs operands with at least 2 dims, got ${desc}`);
  const ar = a.shape[a.ndim - 2], ac = a.shape[a.ndim - 1];
  const br = b.shape[b.ndim - 2], bc = b.shape[b.ndim - 1];
  const [M, Ka] = transA ? [ac, ar] : [ar, ac];
  const [Kb, N] = transB ? [bc, br] : [br, bc];
  check(Ka === Kb, "matmul", `inner dimensions differ (${Ka} vs ${Kb}) for ${desc}`);
  const K = Ka;
  const ab = a.shape.slice(0, -2), bb = b.shape.slice(0, -2);
  const nbd = Math.max(ab.length, bb.length);
  const batch: number[] = [];
  for (let i = 0; i < nbd; i++) {
    const da = ab[ab.length - nbd + i] ?? 1, db = bb[bb.length - nbd + i] ?? 1;
    check(da === db || da === 1 || db === 1, "matmul", `batch dims do not broadcast for ${desc}`);
    batch.push(da === 1 ? db : da);
  }
  const outShape = [...batch, M, N];
  const aOp: Operand = { s: a.storage, trans: transA, strides: batchStrides(a.shape, batch) };
  const bOp: Operand = { s: b.storage, trans: transB, strides: batchStrides(b.shape, batch) };
  const out = mm(aOp, bOp, M, N, K, outShape, batch, alpha);
  if (!needsGrad(a, b)) return out;

  const aShape = [...a.shape], bShape = [...b.shape];
  const sa = b.requiresGrad ? saveForBackward(a) : null;
  const sb = a.requiresGrad ? saveForBackward(b) : null;
  const gStr = contiguous(batch, M * N);
  return record(out, "matmul", [a, b], (g) => {
    const G = (trans: boolean, strides = gStr): Operand => ({ s: g.storage, trans, strides });
    let ga: Tensor | null = null, gb: Tensor | null = null;
    if (sb) {
      // dA = dC · op(B)ᵀ (stored [M, K]) or op(B) · dCᵀ (stored [K, M]), summed where A broadcast.
      const B = (trans: boolean): Operand => ({ s: sb.storage, trans, strides: bOp.strides });
      ga = takeResult(
        transA
          ? mm(B(transB), G(true), K, M, N, [...batch, K, M], batch, alpha)
          : mm(G(false), B(!transB), M, K, N, [...batch, M, K], batch, alpha),
        aShape,
      );
    }
    if (sa) {
      // dB = op(A)ᵀ · dC (stored [K, N]) or dCᵀ · op(A) (stored [N, K]), summed where B broadcast.
      const nb = numel(batch);
      if (numel(bShape.slice(0, -2)) === 1 && nb > 1 && numel(aShape.slice(0, -2)) === nb && !transA) {
        // B shared across the batch: fold the batch into the reduction ([B·M, K]ᵀ · [B·M, N]).
        const A = (trans: boolean): Operand => ({ s: sa.storage, trans, strides: [] });
        gb = transB
          ? mm(G(true, []), A(false), N, K, nb * M, bShape, [], alpha)
          : mm(A(true), G(false, []), K, N, nb * M, bShape, [], alpha);
      } else {
        const A = (trans: boolean): Operand => ({ s: sa.storage, trans, strides: aOp.strides });
        gb = takeResult(
          transB
            ? mm(G(true), A(transA), N, K, M, [...batch, N, K], batch, alpha)
            : mm(A(!transA), G(false), K, N, M, [...batch, K, N], batch, alpha),
          bShape,
        );
      }
    }
    return [ga, gb];
  }, [sa, sb].filter((t): t is Tensor => t !== null));
}

// ------------------------------------------------------------------ linear

/** Activations {@linkcode linear} can fuse (same formulas as `gelu`, `geluNew`, `relu` of elementwise.ts). */
export type LinearActivation = "gelu" | "gelu_new" | "relu";

/** Options for {@linkcode linear}. */
export interface LinearOptions {
  /** "in_out": weight [in, out] (HF GPT-2 Conv1D, default); "out_in": weight [out, in] (nn.Linear). */
  weightLayout?: "in_out" | "out_in";
  /** Activation applied to x·W + b in the kernel's store: "gelu" (erf), "gelu_new" (tanh), "relu". */
  activation?: LinearActivation;
  /** Added after the activation, in the kernel's store; same shape as the output. */
  residual?: Tensor | null;
}

const ACT_GRAD_NAME = { gelu: "gelu", gelu_new: "geluNew", relu: "relu" } as const;

/**
 * Affine layer with a fused epilogue: `act(x · W + bias) + residual` in one kernel, where x is
 * [..., in], `weight` is [in, out] or, with `weightLayout: "out_in"`, [out, in], bias [out], the
 * optional `activation` applies to the affine output and the optional `residual` (shaped like the
 * output, [..., out]) is added after it. Differentiable in x, weight, bias and residual; with an
 * activation and a gradient to compute, the kernel also keeps the pre-activation for backward
 * (without one, e.g. under `noGrad` or while decoding, it writes only the output).
 */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor | null, options: LinearOptions = {}): Tensor {
  const layout = options.weightLayout ?? "in_out";
  check(layout === "in_out" || layout === "out_in", "linear", `unknown weightLayout "${layout}"`);
  const activation = options.activation;
  check(
    activation === undefined || Object.hasOwn(ACT_CODES, activation),
    "linear",
    `unknown activation "${activation}" (expected gelu, gelu_new or relu)`,
  );
  const residual = options.residual ?? null;
  check(
    x.dtype === "f32" && weight.dtype === "f32" && (!bias || bias.dtype === "f32") &&
      (!residual || residual.dtype === "f32"),
    "linear",
    "expects f32 tensors",
  );
  check(weight.ndim === 2, "linear", `weight must be 2-D, got [${weight.shape}]`);
  const outT = layout === "out_in";
  const [inF, outF] = outT ? [weight.shape[1], weight.shape[0]] : [weight.shape[0], weight.shape[1]];
  check(
    x.ndim >= 1 && x.shape[x.ndim - 1] === inF,
    "linear",
    `input [${x.shape}] does not match weight [${weight.shape}] (${layout}: ${inF} input features)`,
  );
  check(
    !bias || (bias.ndim === 1 && bias.shape[0] === outF),
    "linear",
    `bias [${bias?.shape}] does not match weight [${weight.shape}] (${outF} output features)`,
  );
  const rows = numel(x.shape.slice(0, -1));
  const xShape = [...x.shape], wShape = [...weight.shape];
  const outShape = [...x.shape.slice(0, -1), outF];
  check(
    !residual || residual.shape.join() === outShape.join(),
    "linear",
    `residual [${residual?.shape}] must have the output's shape [${outShape}]`,
  );
  const plain = (s: Storage, trans: boolean): Operand => ({ s, trans, strides: [] });
  const affine = bias ? [x, weight, bias] : [x, weight];
  const inputs = residual ? [...affine, residual] : affine;
  const grad = needsGrad(...inputs);
  // Backward through the activation needs the pre-activation, unless only the residual wants a gradient.
  const pre = activation && grad && needsGrad(...affine) ? empty(outShape) : null;
  const epi: Epilogue = {
    act: activation ? ACT_CODES[activation] : 0,
    resid: residual?.storage ?? null,
    pre: pre?.storage ?? null,
  };
  const out = mm(
    plain(x.storage, false),
    plain(weight.storage, outT),
    rows,
    outF,
    inF,
    outShape,
    [],
    1,
    bias?.storage,
    epi,
  );
  if (!grad) return out;
  const sx = weight.requiresGrad ? saveForBackward(x) : null;
  const sw = x.requiresGrad ? saveForBackward(weight) : null;
  const sp = pre ? saveForBackward(pre) : null;
  pre?.dispose();
  const wantBias = bias?.requiresGrad ?? false, wantResid = residual?.requiresGrad ?? false;
  return record(out, "linear", inputs, (g) => {
    // dPre = dY · act'(pre); the residual's gradient is dY itself.
    const gp = sp ? activationGrad(ACT_GRAD_NAME[activation!], sp, g) : g;
    const G = (trans: boolean) => plain(gp.storage, trans);
    // dx = dPre · Wᵀ ([rows, out] · [out, in]).
    const dx = sw ? mm(G(false), plain(sw.storage, !outT), rows, inF, outF, xShape) : null;
    // dW = xᵀ · dPre ([in, out]) or dPreᵀ · x ([out, in]): the rows fold into the reduction.
    let dw: Tensor | null = null;
    if (sx) {
      dw = outT
        ? mm(G(true), plain(sx.storage, false), outF, inF, rows, wShape)
        : mm(plain(sx.storage, true), G(false), inF, outF, rows, wShape);
    }
    // db = 1ᵀ · dPre: a column sum, run as a one-row product (the matrix–vector kernel).
    let db: Tensor | null = null;
    if (wantBias) {
      const one = ones([rows]);
      db = mm(plain(one.storage, false), G(false), 1, outF, rows, [outF]);
      one.dispose();
    }
    if (gp !== g) gp.dispose();
    const dr = wantResid ? g.detach() : null;
    const grads = bias ? [dx, dw, db] : [dx, dw];
    return residual ? [...grads, dr] : grads;
  }, [sx, sw, sp].filter((t): t is Tensor => t !== null));
}
