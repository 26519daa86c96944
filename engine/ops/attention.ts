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

import { f32Bits, grid1d, type KernelSpec } from "../runtime.ts";
import { check, empty, runtime, type Tensor } from "../tensor.ts";
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
  constants: Record<string, number>;
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
  const lim = runtime().device.limits;
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
  const op = "scaledDotProductAttention";
  for (const [name, t] of [["q", q], ["k", k], ["v", v]] as const) {
    check(
      t.dtype === "f32" && t.ndim === 4,
      op,
      `${name} must be an f32 [B, H, T, D] tensor, got ${t.dtype} [${t.shape}]`,
    );
  }
  const [B, H, Tq, D] = q.shape;
  const Tcap = k.shape[2];
  check(
    k.shape[0] === B && k.shape[1] === H && k.shape[3] === D,
    op,
    `k [${k.shape}] does not match q [${q.shape}] (expected [${B}, ${H}, Tk, ${D}])`,
  );
  check(v.shape.join() === k.shape.join(), op, `v [${v.shape}] must have the shape of k [${k.shape}]`);
  check(D >= 1 && D <= MAX_HEAD_DIM, op, `head size D must be in [1, ${MAX_HEAD_DIM}], got ${D}`);
  const Tk = options.kvLength ?? Tcap;
  check(
    Number.isInteger(Tk) && Tk >= 0 && Tk <= Tcap,
    op,
    `kvLength must be an integer in [0, ${Tcap}] (k is [${k.shape}]), got ${options.kvLength}`,
  );
  const mask = options.keyPaddingMask;
  if (mask) {
    check(
      options.kvLength === undefined
        ? mask.ndim === 2 && mask.shape[0] === B && mask.shape[1] === Tk
        : mask.ndim === 2 && mask.shape[0] === B && mask.shape[1] >= Tk,
      op,
      options.kvLength === undefined
        ? `keyPaddingMask must be [B, Tk] = [${B}, ${Tk}], got [${mask.shape}]`
        : `keyPaddingMask must be [B, ≥ kvLength] = [${B}, ≥ ${Tk}], got [${mask.shape}]`,
    );
  }
  const scale = options.scale ?? 1 / Math.sqrt(D);
  check(Number.isFinite(scale), op, `scale must be finite, got ${scale}`);
  const p = options.dropoutP ?? 0;
  const dropOn = p > 0 && options.training !== false;
  const rng = dropoutRng(options.seed ?? Math.floor(Math.random() * 2 ** 32), p, op);

  const rt = runtime();
  const BH = B * H;
  const rows = BH * Tq;
  const mstride = mask ? mask.shape[1] : Tk;
  // words 0 (rows / workgroups) and 13 (blocks per (b, h)) are set per kernel
  const params = (first: number, nblk = 0) => [
    first,
    H,
    Tq,
    Tk,
    D,
    options.causal ? 1 : 0,
    dropOn ? 1 : 0,
    rng.threshold,
    rng.key,
    f32Bits(rng.scale),
    f32Bits(scale),
    Tcap,
    mstride,
    nblk,
  ];
  const maskKind = mask ? MASK_KIND[mask.dtype] : MASK_KIND.none;
  const tiled = (kind: TiledKernel, blockRows: number) =>
    Tq >= tuning.minTiledQueries && Tk > 0 ? pickTile(kind, D, blockRows, BH) : null;
  /** Records a tiled kernel over `blockRows` rows per (b, h); false when no tile applies. */
  const runTiled = (kind: TiledKernel, blockRows: number, bindings: Tensor[], nrw: number): boolean => {
    const t = tiled(kind, blockRows);
    if (!t) return false;
    const nblk = Math.ceil(blockRows / t.rows);
    rt.dispatch(
      {
        shader: "attention_tiled",
        entry: kind,
        bindings: [...new Array(bindings.length - nrw).fill("read"), ...new Array(nrw).fill("rw")],
        constants: { ...t.constants, MASK: maskKind },
      },
      bindings.map((x) => x.storage),
      params(BH * nblk, nblk),
      grid1d(BH * nblk, 1),
    );
    return true;
  };
  const maskT = mask ?? q;
  const scoreBytes = 4 * BH * Tq * Tk;
  if (
    Tq >= tuning.minMathQueries && Tk === Tcap && Tk > 0 &&
    scoreBytes <= Math.min(tuning.maxMathScoreBytes, rt.maxStorageBindingBytes)
  ) {
    return mathAttention(q, k, v, { params: params(rows), maskKind, mask: maskT, scale, dropOn });
  }
  const out = empty(q.shape);
  const lse = empty([B, H, Tq]);
  if (!runTiled("fwd", Tq, [q, k, v, maskT, out, lse], 2)) {
    rt.dispatch(
      {
        shader: "attention",
        bindings: ["read", "read", "read", "read", "rw", "rw"],
        constants: { MASK: maskKind },
      },
      [q.storage, k.storage, v.storage, maskT.storage, out.storage, lse.storage],
      params(rows),
      grid1d(rows, 1),
    );
  }
  if (!needsGrad(q, k, v)) {
    lse.dispose();
    return out;
  }
  const saved = [q, k, v, out, lse, ...(mask ? [mask] : [])].map(saveForBackward);
  lse.dispose();
  const [sq, sk, sv, so, slse] = saved;
  return record(out, op, [q, k, v], (g) => {
    const bwd = (entry: string, n: number): KernelSpec => ({
      shader: "attention_backward",
      entry,
      bindings: [...new Array(7).fill("read"), ...new Array(n - 7).fill("rw")],
      constants: { MASK: maskKind },
    });
    const ms = mask ? saved[5] : sq;
    const delta = empty([B, H, Tq]);
    rt.dispatch(
      { shader: "attention_backward", entry: "delta", bindings: ["read", "read", "rw"] },
      [so.storage, g.storage, delta.storage],
      params(rows),
      grid1d(rows, 64),
    );
    const common = [sq, sk, sv, ms, g, slse, delta];
    let dq: Tensor | null = null, dk: Tensor | null = null, dv: Tensor | null = null;
    if (q.requiresGrad) {
      dq = empty(q.shape);
      if (!runTiled("grad_q", Tq, [...common, dq], 1)) {
        rt.dispatch(bwd("grad_q", 8), [...common, dq].map((x) => x.storage), params(rows), grid1d(rows, 1));
      }
    }
    if (k.requiresGrad || v.requiresGrad) {
      dk = empty(k.shape);
      dv = empty(v.shape);
      if (!runTiled("grad_kv", Tcap, [...common, dk, dv], 2)) {
        const n = BH * Tcap;
        rt.dispatch(bwd("grad_kv", 9), [...common, dk, dv].map((x) => x.storage), params(n), grid1d(n, 1));
      }
      if (!k.requiresGrad) dk = (dk.dispose(), null);
      if (!v.requiresGrad) dv = (dv.dispose(), null);
    }
    delta.dispose();
    return [dq, dk, dv];
  }, saved);
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
  runtime().dispatch(
    { shader: "attention_kv", bindings: ["read", "rw"] },
    [update.storage, cache.storage],
    [n, T, D, Tcap, offset],
    grid1d(n),
  );
}
