/**
 * Fused scaled-dot-product attention (scores, masks, softmax, dropout and P·V in one kernel) with a
 * fused backward that recomputes probabilities from the saved per-row logsumexp.
 * Kernels: `shaders/attention.wgsl` (forward) and `shaders/attention_backward.wgsl`.
 * @module
 */

import { f32Bits, grid1d, type KernelSpec } from "../runtime.ts";
import { check, empty, runtime, type Tensor } from "../tensor.ts";
import { needsGrad, record, saveForBackward } from "../autograd.ts";
import { dropoutRng } from "./dropout.ts";

/** Largest head size the kernels support. */
export const MAX_HEAD_DIM = 256;

/** Options of {@linkcode scaledDotProductAttention}. */
export interface AttentionOptions {
  /** Causal mask: query i (absolute position Tk − Tq + i) attends to keys j ≤ its position. */
  causal?: boolean;
  /** i32 or f32 `[B, Tk]`: non-zero = attend, 0 = masked (Hugging Face `attention_mask` semantics). */
  keyPaddingMask?: Tensor;
  /** Multiplier of q·k (default 1/√D). */
  scale?: number;
  /** Dropout probability applied to the attention probabilities (default 0). */
  dropoutP?: number;
  /** Seed of the dropout mask, an integer in [0, 2⁵³) (default: drawn with Math.random). */
  seed?: number;
  /** When false, dropout is skipped (default true). */
  training?: boolean;
}

const MASK_KIND = { none: 0, i32: 1, f32: 2 } as const;

/**
 * `softmax(scale · q kᵀ + masks) · v` for q `[B, H, Tq, D]` and k, v `[B, H, Tk, D]`, like
 * `torch.nn.functional.scaled_dot_product_attention`. Query i sits at absolute position Tk − Tq + i,
 * so Tq < Tk works for KV-cache decoding with `causal`. One workgroup handles one query row, keeping
 * up to 1024 scores in workgroup memory and carrying an online softmax across chunks for longer rows.
 *
 * Rows whose keys are all masked (by padding and/or causality) output **zeros** (and get zero
 * gradients) rather than NaN or a uniform average.
 *
 * Dropout (`dropoutP > 0`, `training` not false) zeroes probability (b, h, i, j) — flat index
 * `((b·H + h)·Tq + i)·Tk + j` — when `dropoutMaskRef(seed, index, p)` is false and scales kept ones by
 * 1/(1 − p); the backward pass regenerates the same mask from the seed.
 * @param q f32 `[B, H, Tq, D]` (D ≤ 256)
 * @param k f32 `[B, H, Tk, D]`
 * @param v f32 `[B, H, Tk, D]`
 * @param options masks, scale and dropout
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
  const Tk = k.shape[2];
  check(
    k.shape[0] === B && k.shape[1] === H && k.shape[3] === D,
    op,
    `k [${k.shape}] does not match q [${q.shape}] (expected [${B}, ${H}, Tk, ${D}])`,
  );
  check(v.shape.join() === k.shape.join(), op, `v [${v.shape}] must have the shape of k [${k.shape}]`);
  check(D >= 1 && D <= MAX_HEAD_DIM, op, `head size D must be in [1, ${MAX_HEAD_DIM}], got ${D}`);
  const mask = options.keyPaddingMask;
  if (mask) {
    check(
      mask.ndim === 2 && mask.shape[0] === B && mask.shape[1] === Tk,
      op,
      `keyPaddingMask must be [B, Tk] = [${B}, ${Tk}], got [${mask.shape}]`,
    );
  }
  const scale = options.scale ?? 1 / Math.sqrt(D);
  check(Number.isFinite(scale), op, `scale must be finite, got ${scale}`);
  const p = options.dropoutP ?? 0;
  const dropOn = p > 0 && options.training !== false;
  const rng = dropoutRng(options.seed ?? Math.floor(Math.random() * 2 ** 32), p, op);

  const rt = runtime();
  const rows = B * H * Tq;
  const params = [
    rows,
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
    0,
  ];
  const constants = { MASK: mask ? MASK_KIND[mask.dtype] : MASK_KIND.none };
  const maskStorage = mask ? mask.storage : q.storage;
  const out = empty(q.shape);
  const lse = empty([B, H, Tq]);
  rt.dispatch(
    { shader: "attention", bindings: ["read", "read", "read", "read", "rw", "rw"], constants },
    [q.storage, k.storage, v.storage, maskStorage, out.storage, lse.storage],
    params,
    grid1d(rows, 1),
  );
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
      constants,
    });
    const ms = mask ? saved[5].storage : sq.storage;
    const delta = empty([B, H, Tq]);
    rt.dispatch(
      { shader: "attention_backward", entry: "delta", bindings: ["read", "read", "rw"] },
      [so.storage, g.storage, delta.storage],
      params,
      grid1d(rows, 64),
    );
    const common = [sq.storage, sk.storage, sv.storage, ms, g.storage, slse.storage, delta.storage];
    let dq: Tensor | null = null, dk: Tensor | null = null, dv: Tensor | null = null;
    if (q.requiresGrad) {
      dq = empty(q.shape);
      rt.dispatch(bwd("grad_q", 8), [...common, dq.storage], params, grid1d(rows, 1));
    }
    if (k.requiresGrad || v.requiresGrad) {
      dk = empty(k.shape);
      dv = empty(v.shape);
      const kvParams = [B * H * Tk, ...params.slice(1)];
      rt.dispatch(bwd("grad_kv", 9), [...common, dk.storage, dv.storage], kvParams, grid1d(B * H * Tk, 1));
      if (!k.requiresGrad) dk = (dk.dispose(), null);
      if (!v.requiresGrad) dv = (dv.dispose(), null);
    }
    delta.dispose();
    return [dq, dk, dv];
  }, saved);
}
