/**
 * Matmul-based attention for long sequences: the scores are materialised, `S = scale · Q Kᵀ` (the tiled
 * matmul kernels), then one masked-softmax kernel (`shaders/attention_softmax.wgsl`: causal and padding
 * masks, dropout) and `P · V` (matmul again). The backward pass is the matmuls' own and the softmax
 * kernel's `grad` entry. It needs B·H·Tq·Tk floats for the scores and keeps P (and P after dropout) for
 * the backward pass — like eager PyTorch — but runs the heavy work at matmul speed; the fused kernels
 * in `attention.ts` stay in use for short sequences and decoding, where this memory or launch count
 * would not pay.
 * @module
 */

import { grid1d, rowWorkgroup } from "../runtime.ts";
import { empty, runtime, type Tensor } from "../tensor.ts";
import { needsGrad, record, saveForBackward } from "../autograd.ts";
import { matmul } from "./matmul.ts";

/** What {@linkcode mathAttention} needs besides q, k and v (validated by `scaledDotProductAttention`). */
export interface MathAttentionArgs {
  /** The uniform block of the attention kernels, word 0 (rows) included (see `attention_common.wgsl`). */
  params: number[];
  /** 0 none, 1 i32, 2 f32 key padding mask. */
  maskKind: number;
  /** The key padding mask, or any tensor when maskKind is 0. */
  mask: Tensor;
  /** Multiplier of q·k. */
  scale: number;
  /** Whether dropout is on (params hold its key, threshold and scale). */
  dropOn: boolean;
}

/**
 * Attention through materialised scores: q [B, H, Tq, D], k and v [B, H, Tk, D] (no cache capacity
 * beyond Tk). Differentiable in q, k and v.
 */
export function mathAttention(q: Tensor, k: Tensor, v: Tensor, a: MathAttentionArgs): Tensor {
  const [B, H, Tq] = q.shape, Tk = k.shape[2];
  const scores = matmul(q, k, { transB: true, alpha: a.scale });
  const probs = maskedSoftmax(scores, a, B * H * Tq, Tk);
  // The scores and probabilities are intermediates: free them now (autograd keeps its own references to
  // what the backward pass needs), not at the end of the caller's scope — or never, outside a tidy().
  scores.dispose();
  const out = matmul(probs, v);
  probs.dispose();
  return out;
}

/** S [B, H, Tq, Tk] → probabilities (after dropout when it is on), one recorded autograd node. */
function maskedSoftmax(s: Tensor, a: MathAttentionArgs, rows: number, Tk: number): Tensor {
  const rt = runtime();
  const constants = { MASK: a.maskKind, WG: rowWorkgroup(Tk) };
  const params = [rows, ...a.params.slice(1)];
  const p = empty(s.shape);
  const pd = a.dropOn ? empty(s.shape) : null;
  const scratch = pd ?? empty([1]);
  rt.dispatch(
    { shader: "attention_softmax", entry: "fwd", bindings: ["read", "read", "rw", "rw"], constants },
    [s.storage, a.mask.storage, p.storage, scratch.storage],
    params,
    grid1d(rows, 1),
  );
  if (!pd) scratch.dispose();
  const out = pd ?? p;
  if (!needsGrad(s)) {
    if (pd) p.dispose();
    return out;
  }
  const saved = [saveForBackward(p), saveForBackward(a.mask)];
  if (pd) p.dispose();
  return record(out, "attentionSoftmax", [s], (g) => {
    const ds = empty(s.shape);
    rt.dispatch(
      { shader: "attention_softmax", entry: "grad", bindings: ["read", "read", "rw", "rw"], constants },
      [saved[0].storage, saved[1].storage, ds.storage, g.storage],
      params,
      grid1d(rows, 1),
    );
    return [ds];
  }, saved);
}
