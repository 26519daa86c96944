/**
 * Fused scaled-dot-product attention (scores, masks, softmax, dropout and P·V in one kernel) with a
 * fused backward that recomputes probabilities from the saved per-row logsumexp, plus
 * {@linkcode writeKV} for KV caches written in place.
 *
 * Two kernel families: tiled, flash-attention style kernels (`shaders/attention_tiled.wgsl`: a
 * workgroup owns a block of query rows — or key rows for dK/dV — and streams tiles of the other side
 * through workgroup memory, online softmax, no atomics) for head sizes ≤ 128 and at least
 * {@linkcode AttentionTuning.minTiledQueries} queries; and row kernels (`shaders/attention.wgsl`,
 * `shaders/attention_backward.wgsl`: one workgroup per query row) for decoding shapes and larger heads.
 * @module
 */

import { grid1d, type Storage } from "../runtime.ts";
import { check, empty, runtime, type Tensor } from "../tensor.ts";
import type { Kernel } from "../kernel.ts";
import {
  ATTENTION,
  ATTENTION_DELTA,
  ATTENTION_GRAD_KV,
  ATTENTION_GRAD_Q,
  ATTENTION_TILED,
  ATTENTION_TILED_GRAD_KV,
  ATTENTION_TILED_GRAD_Q,
  type AttentionParams,
  WRITE_KV,
} from "../kernels/attention.ts";
import { needsGrad, record, saveForBackward } from "../autograd.ts";
import { dropoutRng } from "./dropout.ts";
import { mathAttention } from "./attention_math.ts";

/** Largest head size the kernels support. */
export const MAX_HEAD_DIM = 256;

/** Options of {@linkcode scaledDotProductAttention}. */
export interface AttentionOptions {
  /** Causal mask: query i (absolute position Tk − Tq + i) attends to keys j ≤ its position. */
  causal?: boolean;
  /**
   * i32 or f32 `[B, Tk]` (with `kvLength`: `[B, M]`, M ≥ kvLength, of which the first kvLength columns
   * are used): non-zero = attend, 0 = masked (Hugging Face `attention_mask` semantics).
   */
  keyPaddingMask?: Tensor;
  /** Multiplier of q·k (default 1/√D). */
  scale?: number;
  /** Dropout probability applied to the attention probabilities (default 0). */
  dropoutP?: number;
  /** Seed of the dropout mask, an integer in [0, 2⁵³) (default: drawn with Math.random). */
  seed?: number;
  /** When false, dropout is skipped (default true). */
  training?: boolean;
  /**
   * KV cache with capacity: k and v are `[B, H, Tcap, D]` buffers of which only the first `kvLength`
   * positions are valid (an integer in [0, Tcap]; default Tcap). Tk below means kvLength. Gradients of
   * k and v are zero beyond kvLength.
   */
  kvLength?: number;
}

// ------------------------------------------------------------------ tuning

/** One tile configuration of the tiled kernels. */
export interface AttentionTileConfig {
  /** Threads along the owned block's rows; the block has 4·tq rows (query rows, or key rows for dK/dV). */
  tq: number;
  /** Threads sharing each 4 block rows: they split the streamed tile's rows and the head dims. */
  tc: number;
  /** Rows of each streamed tile (keys, or queries for dK/dV): a multiple of tc, at most 16·tc. */
  bt: number;
  /** Use it only if the dispatch has at least this many workgroups (default 0). */
  minWorkgroups?: number;
}

/** Kernel selection knobs (see {@linkcode setAttentionTuning}). */
export interface AttentionTuning {
  /** Tiles of the forward kernel, tried in order; those over the device's limits are skipped. */
  forward: AttentionTileConfig[];
  /** Tiles of the dQ kernel. */
  gradQ: AttentionTileConfig[];
  /** Tiles of the dK/dV kernel. */
  gradKV: AttentionTileConfig[];
  /** Fewest queries per (b, h) for the tiled kernels; fewer (decoding) use the row kernels. */
  minTiledQueries: number;
  /** Largest head size of the tiled kernels (at most 128); larger heads use the row kernels. */
  maxTiledHeadDim: number;
  /**
   * Fewest queries per (b, h) for the matmul-based path (`attention_math.ts`: scores materialised, matmul
   * kernels, one masked-softmax kernel); `Infinity` turns it off. Not used with a KV cache (`kvLength`).
   */
  minMathQueries: number;
  /** Largest score tensor (B·H·Tq·Tk·4 bytes) the matmul-based path may allocate; larger ones stay fused. */
  maxMathScoreBytes: number;
}

// From the tile sweep on an H200 (2026-11-26, Deno's WebGPU, B16·H12·D64 at T 64 and 1024, B8 at T 1024):
// 8×16 threads with 16-row tiles beat the earlier first tiers by 1.3–2.1× (dQ and dK/dV at every shape,
// the forward at B16); the other tiers remain for devices with less workgroup memory (llvmpipe: 32 KiB).
// At T 1024 the fused kernels reached only 1–2 TFLOP/s while the matmul kernels run at ~25, so from
// 256 queries on the scores are materialised instead (as eager PyTorch does), up to 1 GiB of them.
/** The tiers of both backward kernels (dQ and dK/dV), a fresh array per call. */
const gradTiers = (): AttentionTileConfig[] => [
  { tq: 8, tc: 16, bt: 16 },
  { tq: 8, tc: 8, bt: 32, minWorkgroups: 132 },
  { tq: 8, tc: 8, bt: 16 },
  { tq: 4, tc: 8, bt: 16 },
  { tq: 4, tc: 4, bt: 8 },
];
const DEFAULT_TUNING: AttentionTuning = {
  forward: [
    { tq: 8, tc: 16, bt: 16 },
    { tq: 16, tc: 8, bt: 32, minWorkgroups: 264 },
    { tq: 8, tc: 8, bt: 32, minWorkgroups: 132 },
    { tq: 8, tc: 8, bt: 16 },
    { tq: 4, tc: 8, bt: 16 },
    { tq: 4, tc: 4, bt: 8 },
  ],
  gradQ: gradTiers(),
  gradKV: gradTiers(),
  minTiledQueries: 8,
  maxTiledHeadDim: 128,
  minMathQueries: 256,
  maxMathScoreBytes: 1 << 30,
};

let tuning: AttentionTuning = structuredClone(DEFAULT_TUNING);

/**
 * Changes the kernel selection knobs (merged into the current ones); returns the previous knobs so
 * a benchmark or test can restore them with `setAttentionTuning(prev)`.
 * @param t the knobs to change
 * @returns the previous knobs
 */
export function setAttentionTuning(t: Partial<AttentionTuning>): AttentionTuning {
  const next: AttentionTuning = { ...tuning, ...structuredClone(t) };
  const op = "setAttentionTuning";
  for (const c of [...next.forward, ...next.gradQ, ...next.gradKV]) {
    const pos = [c.tq, c.tc, c.bt].every((x) => Number.isInteger(x) && x > 0);
    check(pos && c.bt % c.tc === 0 && c.bt / c.tc <= 16, op, `tile ${JSON.stringify(c)}: bt must be tc·(1..16)`);
  }
  check(next.maxTiledHeadDim <= 128, op, `maxTiledHeadDim must be ≤ 128, got ${next.maxTiledHeadDim}`);
  const prev = tuning;
  tuning = next;
  return prev;
}

/**
 * The current kernel selection knobs (a copy).
 * @returns the knobs
 */
export function getAttentionTuning(): AttentionTuning {
  return structuredClone(tuning);
}

/** Restores the default kernel selection knobs. */
export function resetAttentionTuning(): void {
  tuning = structuredClone(DEFAULT_TUNING);
}

type TiledKernel = "fwd" | "grad_q" | "grad_kv";

/** A tile configuration resolved for a head size: override constants, rows per block and cost. */
interface TileLayout {
  constants: { DH: number; TQ: number; TC: number; BT: number; SR: number };
  rows: number;
  threads: number;
  bytes: number;
  fits: boolean;
}

function tileLayout(kind: TiledKernel, c: AttentionTileConfig, D: number): TileLayout {
  const dp4 = Math.ceil(D / 4), rd4 = Math.ceil(dp4 / c.tc), rows = 4 * c.tq, threads = c.tq * c.tc;
  // odd vec4 stride: threads reading one column of different rows hit different banks
  let sr = Math.max(dp4, rd4 * c.tc);
  if (sr % 2 === 0) sr++;
  const vec4s = kind === "fwd"
    ? rows * sr + 2 * c.bt * sr + c.bt * c.tq + 2 * threads
    : 2 * rows * sr + 2 * c.bt * sr + (kind === "grad_kv" ? 2 : 1) * c.bt * c.tq;
  const bytes = 16 * vec4s + 4 * c.bt * (kind === "grad_kv" ? 2 : 1);
  const lim = runtime().limits;
  const fits = rd4 <= 8 && c.bt % c.tc === 0 && c.bt / c.tc <= 16 && threads <= lim.maxComputeInvocationsPerWorkgroup &&
    threads <= lim.maxComputeWorkgroupSizeX && bytes <= lim.maxComputeWorkgroupStorageSize;
  return { constants: { DH: D, TQ: c.tq, TC: c.tc, BT: c.bt, SR: sr }, rows, threads, bytes, fits };
}

/** The first tier of `kind` that fits the device and has enough workgroups (else the last fitting one). */
function pickTile(kind: TiledKernel, D: number, blockRows: number, BH: number): TileLayout | null {
  if (D > tuning.maxTiledHeadDim) return null;
  const tiers = { fwd: tuning.forward, grad_q: tuning.gradQ, grad_kv: tuning.gradKV }[kind];
  const usable = tiers.map((c) => ({ c, l: tileLayout(kind, c, D) })).filter((x) => x.l.fits);
  const enough = usable.find(({ c, l }) => BH * Math.ceil(blockRows / l.rows) >= (c.minWorkgroups ?? 0));
  return (enough ?? usable[usable.length - 1])?.l ?? null;
}

// ------------------------------------------------------------------ attention

const MASK_KIND = { none: 0, i32: 1, f32: 2 } as const;

/** A validated attention call: its sizes, mask and the uniforms every attention kernel shares. */
interface AttentionPlan {
  B: number;
  H: number;
  Tq: number;
  /** Valid keys (kvLength) and stored key rows per (b, h). */
  Tk: number;
  Tcap: number;
  D: number;
  /** B·H. */
  BH: number;
  /** The key padding mask, if any. */
  mask: Tensor | undefined;
  /** Override `MASK`: 0 none, 1 i32, 2 f32. */
  maskKind: number;
  /** Multiplier of q·k. */
  scale: number;
  /** Whether dropout is on. */
  dropOn: boolean;
  /** The kernels' uniforms but `rows` and `nblk` (set per kernel by {@linkcode attentionParams}). */
  uniforms: Omit<AttentionParams, "rows" | "nblk">;
}

/** The uniforms of a dispatch over `rows` rows (or workgroups) with `nblk` blocks per (b, h). */
function attentionParams(plan: AttentionPlan, rows: number, nblk = 0): AttentionParams {
  return { ...plan.uniforms, rows, nblk };
}

/**
 * `softmax(scale · q kᵀ + masks) · v` for q `[B, H, Tq, D]` and k, v `[B, H, Tk, D]`, like
 * `torch.nn.functional.scaled_dot_product_attention`. Query i sits at absolute position Tk − Tq + i,
 * so Tq < Tk works for KV-cache decoding with `causal`; with `kvLength`, k and v may be cache
 * buffers `[B, H, Tcap, D]` of which the first kvLength positions are used (see {@linkcode writeKV}).
 *
 * Rows whose keys are all masked (by padding and/or causality) output **zeros** (and get zero
 * gradients) rather than NaN or a uniform average.
 *
 * Dropout (`dropoutP > 0`, `training` not false) zeroes probability (b, h, i, j) — flat index
 * `((b·H + h)·Tq + i)·Tk + j` — when `dropoutMaskRef(seed, index, p)` is false and scales kept ones by
 * 1/(1 − p); the backward pass regenerates the same mask from the seed.
 * @param q f32 `[B, H, Tq, D]` (D ≤ 256)
 * @param k f32 `[B, H, Tk, D]` (or `[B, H, Tcap, D]` with `kvLength`)
 * @param v f32, shaped like k
 * @param options masks, scale, dropout and the valid cache length
 * @returns f32 `[B, H, Tq, D]`
 */
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions = {}): Tensor {
  const plan = attentionPlan(q, k, v, options);
  const { B, H, Tq, Tk, Tcap, BH } = plan;
  const scoreBytes = 4 * BH * Tq * Tk;
  const rt = runtime();
  if (
    Tq >= tuning.minMathQueries && Tk === Tcap && Tk > 0 &&
    scoreBytes <= Math.min(tuning.maxMathScoreBytes, rt.maxStorageBindingBytes)
  ) {
    const { maskKind, scale, dropOn } = plan;
    const params = attentionParams(plan, BH * Tq);
    return mathAttention(q, k, v, { params, maskKind, mask: plan.mask ?? q, scale, dropOn });
  }
  const out = empty(q.shape);
  const lse = empty([B, H, Tq]);
  attentionForward(plan, { q: q.storage, k: k.storage, v: v.storage, mask: (plan.mask ?? q).storage }, out, lse);
  if (!needsGrad(q, k, v)) {
    lse.dispose();
    return out;
  }
  const saved = [q, k, v, out, lse, ...(plan.mask ? [plan.mask] : [])].map(saveForBackward);
  lse.dispose();
  const [sq, sk, sv, so, slse, smask] = saved;
  return record(out, "scaledDotProductAttention", [q, k, v], (g) => {
    const inputs = { q: sq, k: sk, v: sv, mask: smask ?? sq, dout: g, lse: slse };
    return attentionBackward(plan, inputs, so, { q: q.requiresGrad, k: k.requiresGrad, v: v.requiresGrad });
  }, saved);
}

/** Checks the operands and options of {@linkcode scaledDotProductAttention}; returns its plan. */
function attentionPlan(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions): AttentionPlan {
  const op = "scaledDotProductAttention";
  for (const [name, t] of [["q", q], ["k", k], ["v", v]] as const) {
    const ok = t.dtype === "f32" && t.ndim === 4;
    check(ok, op, `${name} must be an f32 [B, H, T, D] tensor, got ${t.dtype} [${t.shape}]`);
  }
  const [B, H, Tq, D] = q.shape;
  const Tcap = k.shape[2];
  const kOk = k.shape[0] === B && k.shape[1] === H && k.shape[3] === D;
  check(kOk, op, `k [${k.shape}] does not match q [${q.shape}] (expected [${B}, ${H}, Tk, ${D}])`);
  check(v.shape.join() === k.shape.join(), op, `v [${v.shape}] must have the shape of k [${k.shape}]`);
  check(D >= 1 && D <= MAX_HEAD_DIM, op, `head size D must be in [1, ${MAX_HEAD_DIM}], got ${D}`);
  const Tk = options.kvLength ?? Tcap;
  const tkOk = Number.isInteger(Tk) && Tk >= 0 && Tk <= Tcap;
  check(tkOk, op, `kvLength must be an integer in [0, ${Tcap}] (k is [${k.shape}]), got ${options.kvLength}`);
  const mask = options.keyPaddingMask;
  if (mask) checkPaddingMask(mask, B, Tk, options.kvLength !== undefined);
  const scale = options.scale ?? 1 / Math.sqrt(D);
  check(Number.isFinite(scale), op, `scale must be finite, got ${scale}`);
  const p = options.dropoutP ?? 0;
  const dropOn = p > 0 && options.training !== false;
  const rng = dropoutRng(options.seed ?? Math.floor(Math.random() * 2 ** 32), p, op);
  const uniforms = {
    H,
    Tq,
    Tk,
    D,
    causal: options.causal ? 1 : 0,
    drop_on: dropOn ? 1 : 0,
    drop_threshold: rng.threshold,
    drop_key: rng.key,
    drop_scale: rng.scale,
    scale,
    Tcap,
    mstride: mask ? mask.shape[1] : Tk,
  };
  const maskKind = mask ? MASK_KIND[mask.dtype] : MASK_KIND.none;
  return { B, H, Tq, Tk, Tcap, D, BH: B * H, mask, maskKind, scale, dropOn, uniforms };
}

/** A key padding mask is [B, Tk], or [B, ≥ kvLength] with a KV cache. */
function checkPaddingMask(mask: Tensor, B: number, Tk: number, cache: boolean): void {
  const op = "scaledDotProductAttention";
  if (cache) {
    const ok = mask.ndim === 2 && mask.shape[0] === B && mask.shape[1] >= Tk;
    check(ok, op, `keyPaddingMask must be [B, ≥ kvLength] = [${B}, ≥ ${Tk}], got [${mask.shape}]`);
  } else {
    const ok = mask.ndim === 2 && mask.shape[0] === B && mask.shape[1] === Tk;
    check(ok, op, `keyPaddingMask must be [B, Tk] = [${B}, ${Tk}], got [${mask.shape}]`);
  }
}

type TiledBindings<B extends string> = Readonly<Record<B, Storage>>;
type TiledOverride = "MASK" | keyof TileLayout["constants"];

/**
 * Records a tiled kernel over `blockRows` rows per (b, h) (query rows, or key rows for dK/dV); false when no tile
 * applies (decoding shapes, large heads), and the row kernel is to run instead.
 */
function runTiled<B extends string>(
  plan: AttentionPlan,
  kind: TiledKernel,
  k: Kernel<typeof ATTENTION_TILED.params, B, TiledOverride>,
  blockRows: number,
  bindings: TiledBindings<B>,
): boolean {
  const tile = plan.Tq >= tuning.minTiledQueries && plan.Tk > 0 ? pickTile(kind, plan.D, blockRows, plan.BH) : null;
  if (!tile) return false;
  const nblk = Math.ceil(blockRows / tile.rows);
  const workgroups = plan.BH * nblk;
  const overrides = { ...tile.constants, MASK: plan.maskKind };
  runtime().run(k, attentionParams(plan, workgroups, nblk), bindings, grid1d(workgroups, 1), overrides);
  return true;
}

/** The forward kernels: out and the per-row logsumexp `lse` (tiled, else one workgroup per query row). */
function attentionForward(
  plan: AttentionPlan,
  inputs: { q: Storage; k: Storage; v: Storage; mask: Storage },
  out: Tensor,
  lse: Tensor,
): void {
  if (runTiled(plan, "fwd", ATTENTION_TILED, plan.Tq, { ...inputs, out: out.storage, lse_out: lse.storage })) return;
  const rows = plan.BH * plan.Tq;
  const bindings = { ...inputs, out: out.storage, lse: lse.storage };
  runtime().run(ATTENTION, attentionParams(plan, rows), bindings, grid1d(rows, 1), { MASK: plan.maskKind });
}

/** What the backward kernels read: the saved forward operands, mask and logsumexp, and the output gradient. */
interface BackwardInputs {
  q: Tensor;
  k: Tensor;
  v: Tensor;
  mask: Tensor;
  dout: Tensor;
  lse: Tensor;
}

/** dq, dk, dv (null where not wanted) from Δ = rowsum(out · dout) and the recomputed probabilities. */
function attentionBackward(
  plan: AttentionPlan,
  inputs: BackwardInputs,
  out: Tensor,
  want: { q: boolean; k: boolean; v: boolean },
): (Tensor | null)[] {
  const rt = runtime();
  const rows = plan.BH * plan.Tq;
  const delta = empty([plan.B, plan.H, plan.Tq]);
  const deltaBindings = { o_fwd: out.storage, do_d: inputs.dout.storage, delta_out: delta.storage };
  rt.run(ATTENTION_DELTA, attentionParams(plan, rows), deltaBindings, grid1d(rows, 64));
  const common = {
    q: inputs.q.storage,
    k: inputs.k.storage,
    v: inputs.v.storage,
    mask: inputs.mask.storage,
    dout: inputs.dout.storage,
    lse: inputs.lse.storage,
    dlt: delta.storage,
  };
  const dq = want.q ? gradQ(plan, common, inputs.q.shape) : null;
  let dk: Tensor | null = null, dv: Tensor | null = null;
  if (want.k || want.v) {
    [dk, dv] = gradKV(plan, common, inputs.k.shape);
    if (!want.k) dk = (dk.dispose(), null);
    if (!want.v) dv = (dv.dispose(), null);
  }
  delta.dispose();
  return [dq, dk, dv];
}

type BackwardBindings = Readonly<Record<keyof BackwardInputs | "dlt", Storage>>;

/** dQ: the tiled kernel, else one workgroup per query row. */
function gradQ(plan: AttentionPlan, common: BackwardBindings, shape: readonly number[]): Tensor {
  const dq = empty(shape);
  const bindings = { ...common, g1: dq.storage };
  if (!runTiled(plan, "grad_q", ATTENTION_TILED_GRAD_Q, plan.Tq, bindings)) {
    const rows = plan.BH * plan.Tq;
    runtime().run(ATTENTION_GRAD_Q, attentionParams(plan, rows), bindings, grid1d(rows, 1), { MASK: plan.maskKind });
  }
  return dq;
}

/** dK and dV over every stored key row: the tiled kernel, else one workgroup per key row. */
function gradKV(plan: AttentionPlan, common: BackwardBindings, shape: readonly number[]): [Tensor, Tensor] {
  const dk = empty(shape), dv = empty(shape);
  const bindings = { ...common, g1: dk.storage, g2: dv.storage };
  if (!runTiled(plan, "grad_kv", ATTENTION_TILED_GRAD_KV, plan.Tcap, bindings)) {
    const n = plan.BH * plan.Tcap;
    runtime().run(ATTENTION_GRAD_KV, attentionParams(plan, n), bindings, grid1d(n, 1), { MASK: plan.maskKind });
  }
  return [dk, dv];
}

/**
 * Writes `update` into a KV cache in place: `cache[b, h, offset + t, :] = update[b, h, t, :]`, so
 * generation can append keys/values without concatenating (then attend with
 * `scaledDotProductAttention(q, cacheK, cacheV, { kvLength: offset + T, ... })`). Not recorded for
 * autograd; recorded in order with other GPU work, so later ops see the new values. Do not write
 * into a cache that an autograd node saved for a pending backward pass.
 * @param cache f32 `[B, H, Tcap, D]`, modified in place
 * @param update f32 `[B, H, T, D]`
 * @param offset first position written, an integer with offset + T ≤ Tcap
 */
export function writeKV(cache: Tensor, update: Tensor, offset: number): void {
  const op = "writeKV";
  check(
    cache.dtype === "f32" && cache.ndim === 4 && update.dtype === "f32" && update.ndim === 4,
    op,
    `cache and update must be f32 [B, H, T, D] tensors, got ${cache.dtype} [${cache.shape}] and ${update.dtype} [${update.shape}]`,
  );
  const [B, H, Tcap, D] = cache.shape;
  const T = update.shape[2];
  check(
    update.shape[0] === B && update.shape[1] === H && update.shape[3] === D,
    op,
    `update [${update.shape}] does not match cache [${cache.shape}] (expected [${B}, ${H}, T, ${D}])`,
  );
  check(
    Number.isInteger(offset) && offset >= 0 && offset + T <= Tcap,
    op,
    `offset ${offset} + T ${T} must fit the cache capacity ${Tcap}`,
  );
  check(cache.storage.buffer !== update.storage.buffer, op, "update must not share the cache's buffer");
  const n = update.size;
  if (n === 0) return;
  const params = { n, T, D, Tcap, offset };
  runtime().run(WRITE_KV, params, { update: update.storage, cache: cache.storage }, grid1d(n));
}
