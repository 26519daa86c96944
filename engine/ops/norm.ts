/**
 * Layer normalisation with fused forward and backward kernels (`shaders/layer_norm.wgsl`).
 * @module
 */

import { grid1d, rowWorkgroup } from "../runtime.ts";
import { LAYER_NORM, LAYER_NORM_GRAD_WB, LAYER_NORM_GRAD_X, LAYER_NORM_SUM_CHUNKS } from "../kernels/reduce.ts";
import { check, empty, runtime, type Tensor } from "../tensor.ts";
import { gradOutput, needsGrad, record, saveForBackward } from "../autograd.ts";

const WG = 256;
/** Rows summed by one thread of the dweight/dbias kernel before the partial sums are added up. */
const MIN_CHUNK = 64;
const MAX_CHUNKS = 512;

/**
 * Layer normalisation over the last dimension, like `torch.nn.functional.layer_norm(x, [C], weight, bias, eps)`:
 * `y = (x − mean) / √(var + eps) · weight + bias` with the biased variance. One workgroup normalises
 * one row; mean and 1/σ are saved for the fused backward (dx per row; dweight and dbias summed over rows).
 * @param x f32 tensor `[..., C]`
 * @param weight f32 `[C]`
 * @param bias f32 `[C]`
 * @param eps added to the variance (default 1e-5)
 * @returns a tensor shaped like `x`
 */
export function layerNorm(x: Tensor, weight: Tensor, bias: Tensor, eps = 1e-5): Tensor {
  const C = checkLayerNormArgs(x, weight, bias, eps);
  const rows = x.size / C;
  const rt = runtime();
  const out = empty(x.shape);
  const stats = empty([rows, 2]);
  const params = { rows, C, eps, chunk: 0, nchunks: 0 };
  const wg = { WG: rowWorkgroup(C) };
  const bindings = { x: x.storage, w: weight.storage, bias: bias.storage, y: out.storage, stats: stats.storage };
  rt.run(LAYER_NORM, params, bindings, grid1d(rows, 1), wg);
  if (!needsGrad(x, weight, bias)) {
    stats.dispose();
    return out;
  }
  const sx = saveForBackward(x);
  const sw = saveForBackward(weight);
  const sst = saveForBackward(stats);
  stats.dispose();
  return record(out, "layerNorm", [x, weight, bias], (g) => {
    let dx: Tensor | null = null;
    if (x.requiresGrad) {
      dx = empty(x.shape);
      const gradBindings = { x: sx.storage, w: sw.storage, gy: g.storage, dx: dx.storage, st: sst.storage };
      rt.run(LAYER_NORM_GRAD_X, params, gradBindings, grid1d(rows, 1), wg);
    }
    if (!weight.requiresGrad && !bias.requiresGrad) return [dx, null, null];
    const dw = weight.requiresGrad ? gradOutput(weight) : empty([C]);
    const db = bias.requiresGrad ? gradOutput(bias) : empty([C]);
    paramGrads(sx, g, sst, rows, [dw, db]);
    return [dx, weight.requiresGrad ? dw : (dw.dispose(), null), bias.requiresGrad ? db : (db.dispose(), null)];
  }, [sx, sw, sst]);
}

/** Throws unless x is f32 `[..., C]`, weight and bias f32 `[C]` and eps finite ≥ 0; returns C. */
function checkLayerNormArgs(x: Tensor, weight: Tensor, bias: Tensor, eps: number): number {
  const op = "layerNorm";
  check(x.dtype === "f32", op, `x must be f32, got ${x.dtype} [${x.shape}]`);
  check(x.ndim >= 1 && x.shape[x.ndim - 1] >= 1, op, `x must be [..., C] with C ≥ 1, got [${x.shape}]`);
  const C = x.shape[x.ndim - 1];
  check(
    weight.dtype === "f32" && weight.ndim === 1 && weight.shape[0] === C,
    op,
    `weight must be f32 [${C}] for x [${x.shape}], got ${weight.dtype} [${weight.shape}]`,
  );
  check(
    bias.dtype === "f32" && bias.ndim === 1 && bias.shape[0] === C,
    op,
    `bias must be f32 [${C}] for x [${x.shape}], got ${bias.dtype} [${bias.shape}]`,
  );
  check(Number.isFinite(eps) && eps >= 0, op, `eps must be a finite number ≥ 0, got ${eps}`);
  return C;
}

/**
 * Writes dweight = Σ_rows g·x̂ and dbias = Σ_rows g into `out` (each [C]), via per-chunk partial sums when there
 * are many rows.
 */
function paramGrads(x: Tensor, g: Tensor, stats: Tensor, rows: number, out: [Tensor, Tensor]): void {
  const rt = runtime();
  const C = out[0].size;
  const chunk = Math.max(MIN_CHUNK, Math.ceil(rows / MAX_CHUNKS));
  const nchunks = Math.max(1, Math.ceil(rows / chunk));
  const params = { rows, C, eps: 0, chunk, nchunks };
  const [pw, pb] = nchunks === 1 ? out : [empty([nchunks, C]), empty([nchunks, C])];
  const bindings = { x: x.storage, g2: g.storage, st2: stats.storage, dw: pw.storage, db: pb.storage };
  rt.run(LAYER_NORM_GRAD_WB, params, bindings, [Math.ceil(C / WG), nchunks]);
  if (nchunks === 1) return;
  [pw, pb].forEach((part, i) => {
    rt.run(LAYER_NORM_SUM_CHUNKS, params, { part: part.storage, total: out[i].storage }, [Math.ceil(C / WG)]);
    part.dispose();
  });
}
