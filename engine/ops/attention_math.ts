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
import { ATTENTION_SOFTMAX, ATTENTION_SOFTMAX_GRAD, type AttentionParams } from "../kernels/attention.ts";

/** What {@linkcode mathAttention} needs besides q, k and v (validated by `scaledDotProductAttention`). */
export interface MathAttentionArgs {
  /** The uniforms of the attention kernels (see `attention_common.wgsl`); `rows` is replaced here. */
  params: AttentionParams;
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
  const params = { ...a.params, rows };
  const p = empty(s.shape);
  const pd = a.dropOn ? empty(s.shape) : null;
  const scratch = pd ?? empty([1]);
  const bindings = { s: s.storage, mask: a.mask.storage, pr: p.storage, pd: scratch.storage };
  rt.run(ATTENTION_SOFTMAX, params, bindings, grid1d(rows, 1), constants);
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
    const bindings = { s: saved[0].storage, mask: saved[1].storage, pr: ds.storage, pd: g.storage };
    rt.run(ATTENTION_SOFTMAX_GRAD, params, bindings, grid1d(rows, 1), constants);
    return [ds];
  }, saved);
}
