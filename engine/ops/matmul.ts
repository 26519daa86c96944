/**
 * Matrix multiplication: batched `matmul` with transpose flags and NumPy batch broadcasting, and
 * `linear` (act(x·W + b) + residual, with bias, activation and residual fused into the kernel's
 * store), each with its backward.
 *
 * Kernels (chosen in engine/ops/matmul_gemm.ts): `shaders/matmul.wgsl` (workgroup-memory tiles, a
 * register block of 4×4 to 8×8 outputs per thread, split K for long reductions on small grids), its
 * mixed-precision twin `shaders/matmul_coop.wgsl` (f16 operands, f32 accumulation on cooperative matrices, where
 * the device has them: see {@linkcode setMatmulPrecision}) and `shaders/matmul_gemv.wgsl` (matrix–vector style,
 * for few output rows or columns, always fp32). Gradient operands are marked `scaled` for mixed precision.
 * Transposes are index math in the loads, never materialised; backward passes reuse the same
 * kernels with the transpose flags flipped.
 * @module
 */

import type { Storage } from "../runtime.ts";
import { check, empty, type Tensor } from "../tensor.ts";
import { needsGrad, record, saveForBackward } from "../autograd.ts";
import { activationGrad, ones, sumTo } from "./elementwise.ts";
import { type Activation, ACTIVATIONS } from "../kernels/codes.ts";
import { type Epilogue, gemm, NO_EPILOGUE, type Operand } from "./matmul_gemm.ts";

export {
  getMatmulPrecision,
  type MatmulCoopTile,
  type MatmulPrecision,
  type MatmulPrecisionStatus,
  matmulPrecisionStatus,
  setMatmulPrecision,
} from "./matmul_coop.ts";
export {
  getMatmulTuning,
  type MatmulCoopTier,
  type MatmulSplitK,
  type MatmulTileConfig,
  type MatmulTileTier,
  type MatmulTuning,
  type MatmulTuningPatch,
  resetMatmulTuning,
  setMatmulTuning,
} from "./matmul_tuning.ts";

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
    const G = (trans: boolean, strides = gStr): Operand => ({ s: g.storage, trans, strides, scaled: true });
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
export type LinearActivation = Activation;

/** Options for {@linkcode linear}. */
export interface LinearOptions {
  /** "in_out": weight [in, out] (HF GPT-2 Conv1D, default); "out_in": weight [out, in] (nn.Linear). */
  weightLayout?: "in_out" | "out_in";
  /** Activation applied to x·W + b in the kernel's store: "gelu" (erf), "gelu_new" (tanh), "relu". */
  activation?: LinearActivation;
  /** Added after the activation, in the kernel's store; same shape as the output. */
  residual?: Tensor | null;
}

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
    activation === undefined || (Object.hasOwn(ACTIVATIONS, activation) && (activation as string) !== "identity"),
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
    act: activation ? ACTIVATIONS[activation].code : ACTIVATIONS.identity.code,
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
    const gp = sp ? activationGrad(ACTIVATIONS[activation!].unary, sp, g) : g;
    const G = (trans: boolean): Operand => ({ ...plain(gp.storage, trans), scaled: true });
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
