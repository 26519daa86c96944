/**
 * Softmax and log-softmax over the last axis: numerically stable (max subtraction), one workgroup
 * per row with workgroup-shared reductions, so rows as long as GPT-2's 50,257-token vocabulary work.
 * @module
 */

import { grid1d, rowWorkgroup } from "../runtime.ts";
import { SOFTMAX, SOFTMAX_GRAD } from "../kernels/reduce.ts";
import { check, empty, runtime, type Tensor } from "../tensor.ts";
import { needsGrad, record, saveForBackward } from "../autograd.ts";
// Side effect: installs the ops autograd needs (ones for a scalar root, add for accumulation).
import "./elementwise.ts";

function rowSoftmax(op: string, x: Tensor, axis: number, log: boolean): Tensor {
  check(x.dtype === "f32", op, `expects an f32 tensor, got ${x.dtype}`);
  check(x.ndim >= 1, op, "expects a tensor with at least one dimension, got a scalar");
  check(
    axis === -1 || axis === x.ndim - 1,
    op,
    `only the last axis is supported (axis -1 or ${x.ndim - 1}), got axis ${axis} for shape [${x.shape}]`,
  );
  const n = x.shape[x.ndim - 1];
  const rows = n === 0 ? 0 : x.size / n;
  const out = empty(x.shape);
  const params = { rows, n };
  const constants = { LOG: log ? 1 : 0, WG: rowWorkgroup(n) };
  runtime().run(SOFTMAX, params, { x: x.storage, y: out.storage }, grid1d(rows, 1), constants);
  if (!needsGrad(x)) return out;
  const sy = saveForBackward(out);
  return record(out, op, [x], (g) => {
    const dx = empty(sy.shape);
    const bindings = { x: sy.storage, y: dx.storage, g: g.storage };
    runtime().run(SOFTMAX_GRAD, params, bindings, grid1d(rows, 1), constants);
    return [dx];
  }, [sy]);
}

/**
 * Softmax along the last axis, `exp(x − max) / Σ exp(x − max)`; differentiable
 * (backward: `dx = y · (g − Σ g·y)`). Only the last axis is supported: any other `axis` throws.
 * A row that is entirely −∞ gives NaN (as in PyTorch).
 * @param x f32 tensor with at least one dimension.
 * @param axis Must be −1 or `x.ndim − 1`.
 * @returns Probabilities with the shape of `x`.
 */
export function softmax(x: Tensor, axis = -1): Tensor {
  return rowSoftmax("softmax", x, axis, false);
}

/**
 * Log-softmax along the last axis, `x − max − log Σ exp(x − max)`; differentiable
 * (backward: `dx = g − softmax · Σ g`). Only the last axis is supported: any other `axis` throws.
 * @param x f32 tensor with at least one dimension.
 * @param axis Must be −1 or `x.ndim − 1`.
 * @returns Log-probabilities with the shape of `x`.
 */
export function logSoftmax(x: Tensor, axis = -1): Tensor {
  return rowSoftmax("logSoftmax", x, axis, true);
}
