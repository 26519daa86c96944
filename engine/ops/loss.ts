/**
 * Fused losses over logits: {@linkcode crossEntropy} (PyTorch semantics), {@linkcode logProbsOf}
 * (PPO's per-token log-probabilities) and {@linkcode entropyFromLogits}. Each runs one workgroup per
 * row computing `logsumexp` on the fly, so no `[..., C]` log-softmax is ever materialised.
 * @module
 */

import { grid1d, rowWorkgroup, type Storage } from "../runtime.ts";
import { CROSS_ENTROPY, CROSS_ENTROPY_GRAD, CROSS_ENTROPY_REDUCE } from "../kernels/loss.ts";
import { check, empty, runtime, type Tensor } from "../tensor.ts";
import { needsGrad, record, saveForBackward } from "../autograd.ts";
// Side effect: installs the ops autograd needs (ones for a scalar root, add for accumulation).
import "./elementwise.ts";

const MODE = { logProb: 0, crossEntropy: 1, entropy: 2 } as const;

/** How {@linkcode crossEntropy} combines the per-row losses. */
export type Reduction = "mean" | "sum" | "none";

/** Options of {@linkcode crossEntropy}. */
export interface CrossEntropyOptions {
  /** Target value whose rows contribute no loss, no gradient and no count (default −100). */
  ignoreIndex?: number;
  /** "mean" over non-ignored rows (default), "sum", or "none" (one loss per row). */
  reduction?: Reduction;
}

interface RowParams {
  rows: number;
  n: number;
  ignore: number;
  mean: boolean;
  gscalar: boolean;
}

/** The uniforms of `cross_entropy.wgsl` (`nan_bits`: the quiet NaN written for out-of-range targets). */
function uniforms(r: RowParams) {
  const { rows, n, ignore } = r;
  return { rows, n, ignore, mean: r.mean ? 1 : 0, gscalar: r.gscalar ? 1 : 0, total: rows * n, nan_bits: 0x7fc00000 };
}

/** Validates logits `[..., C]` (and ids `[...]` when given) and returns rows and C. */
function rowsOf(op: string, logits: Tensor, ids: Tensor | null): { rows: number; n: number; lead: number[] } {
  check(logits.dtype === "f32", op, `logits must be f32, got ${logits.dtype}`);
  check(logits.ndim >= 1, op, "logits must have at least one dimension [..., C], got a scalar");
  const lead = logits.shape.slice(0, -1);
  const n = logits.shape[logits.ndim - 1];
  if (ids) {
    check(ids.dtype === "i32", op, `targets must be i32, got ${ids.dtype}`);
    check(
      ids.shape.join() === lead.join(),
      op,
      `logits [${logits.shape}] need targets of shape [${lead}], got [${ids.shape}]`,
    );
  }
  check(n > 0, op, `logits [${logits.shape}] have no classes`);
  const rows = lead.reduce((a, d) => a * d, 1);
  return { rows, n, lead };
}

/** Per-row forward: returns [out, lse], both of shape `lead`. */
function rowsForward(mode: number, logits: Tensor, ids: Storage, r: RowParams, lead: number[]): [Tensor, Tensor] {
  const out = empty(lead);
  const lse = empty(lead);
  const bindings = { x: logits.storage, t: ids, out: out.storage, lse: lse.storage };
  runtime().run(CROSS_ENTROPY, uniforms(r), bindings, grid1d(r.rows, 1), { MODE: mode, WG: rowWorkgroup(r.n) });
  return [out, lse];
}

/** Gradient w.r.t. the logits: one thread per logit. */
function rowsGrad(
  mode: number,
  logits: Tensor,
  ids: Storage,
  lse: Tensor,
  g: Tensor,
  extra: Storage,
  r: RowParams,
): Tensor {
  const dx = empty(logits.shape);
  const bindings = { x: logits.storage, t: ids, out: dx.storage, lse: lse.storage, g: g.storage, extra };
  runtime().run(CROSS_ENTROPY_GRAD, uniforms(r), bindings, grid1d(dx.size), { MODE: mode, WG: 256 });
  return dx;
}

/**
 * Cross-entropy between `logits` and class indices, like `torch.nn.functional.cross_entropy` with
 * class-index targets; differentiable w.r.t. the logits (backward: `(softmax − onehot) · g / count`,
 * zero rows for ignored targets). The class axis is the LAST axis: logits `[N, C]` with targets `[N]`,
 * or `[..., C]` with `[...]` (unlike PyTorch's `[N, C, d…]` layout).
 *
 * - `reduction: "mean"` divides by the number of non-ignored targets. When every target is ignored
 *   the result is 0 (PyTorch returns NaN) and the gradient is zero.
 * - A target outside `[0, C)` that is not `ignoreIndex` makes that row's loss and gradient NaN (so
 *   "mean"/"sum" become NaN too) rather than reading out of bounds; check the loss if unsure.
 *
 * @param logits f32 `[..., C]` unnormalised scores.
 * @param targets i32 `[...]` class indices (or `ignoreIndex`).
 * @param options `ignoreIndex` (default −100) and `reduction` (default "mean").
 * @returns Shape `[]` for "mean" and "sum"; the targets' shape for "none".
 */
export function crossEntropy(logits: Tensor, targets: Tensor, options: CrossEntropyOptions = {}): Tensor {
  const op = "crossEntropy";
  const reduction = options.reduction ?? "mean";
  const ignore = options.ignoreIndex ?? -100;
  check(["mean", "sum", "none"].includes(reduction), op, `unknown reduction "${reduction}"`);
  check(Number.isInteger(ignore), op, `ignoreIndex must be an integer, got ${ignore}`);
  const { rows, n, lead } = rowsOf(op, logits, targets);
  const rp: RowParams = { rows, n, ignore, mean: reduction === "mean", gscalar: reduction !== "none" };
  const [perRow, lse] = rowsForward(MODE.crossEntropy, logits, targets.storage, rp, lead);
  let out = perRow;
  let count: Tensor | null = null;
  if (reduction !== "none") {
    out = empty([]);
    count = empty([]);
    const bindings = { x: perRow.storage, t: targets.storage, out: out.storage, lse: count.storage };
    runtime().run(CROSS_ENTROPY_REDUCE, uniforms(rp), bindings, [1], { MODE: MODE.crossEntropy, WG: 256 });
    perRow.dispose();
  }
  if (!needsGrad(logits)) {
    lse.dispose();
    count?.dispose();
    return out;
  }
  const sl = saveForBackward(logits), st = saveForBackward(targets), slse = saveForBackward(lse);
  const scount = count ? saveForBackward(count) : null;
  lse.dispose();
  count?.dispose();
  return record(out, op, [logits, targets], (g) => {
    return [rowsGrad(MODE.crossEntropy, sl, st.storage, slse, g, (scount ?? g).storage, rp), null];
  }, [sl, st, slse, ...(scount ? [scount] : [])]);
}

/**
 * Log-probability of each id under the softmax of `logits`: `log_softmax(logits)[..., id]`, fused
 * (no `[..., C]` log-softmax is materialised) — PPO's per-token log-prob. Differentiable w.r.t. the
 * logits (backward: `g · (onehot − softmax)`). An id outside `[0, C)` gives NaN for that position.
 * @param logits f32 `[..., C]`.
 * @param ids i32 `[...]` (the logits' leading shape).
 * @returns f32 `[...]`.
 */
export function logProbsOf(logits: Tensor, ids: Tensor): Tensor {
  const { rows, n, lead } = rowsOf("logProbsOf", logits, ids);
  const rp: RowParams = { rows, n, ignore: 0, mean: false, gscalar: false };
  const [out, lse] = rowsForward(MODE.logProb, logits, ids.storage, rp, lead);
  if (!needsGrad(logits)) {
    lse.dispose();
    return out;
  }
  const sl = saveForBackward(logits), si = saveForBackward(ids), slse = saveForBackward(lse);
  lse.dispose();
  return record(out, "logProbsOf", [logits, ids], (g) => {
    return [rowsGrad(MODE.logProb, sl, si.storage, slse, g, g.storage, rp), null];
  }, [sl, si, slse]);
}

/**
 * Entropy of the softmax distribution of each row, `−Σ p log p` with `p = softmax(logits)` over the
 * last axis, computed stably in one pass. Differentiable (backward: `−g · p · (log p + H)`).
 * @param logits f32 `[..., C]`.
 * @returns f32 `[...]` entropies in nats.
 */
export function entropyFromLogits(logits: Tensor): Tensor {
  const { rows, n, lead } = rowsOf("entropyFromLogits", logits, null);
  const rp: RowParams = { rows, n, ignore: 0, mean: false, gscalar: false };
  // The entropy kernel never reads targets; the logits stand in for that binding.
  const [out, lse] = rowsForward(MODE.entropy, logits, logits.storage, rp, lead);
  if (!needsGrad(logits)) {
    lse.dispose();
    return out;
  }
  const sl = saveForBackward(logits), slse = saveForBackward(lse), sh = saveForBackward(out);
  lse.dispose();
  return record(out, "entropyFromLogits", [logits], (g) => {
    return [rowsGrad(MODE.entropy, sl, sl.storage, slse, g, sh.storage, rp)];
  }, [sl, slse, sh]);
}
