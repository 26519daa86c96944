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
import { gradOutput, needsGrad, record, saveForBackward } from "../autograd.ts";
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
  epilogue: Epilogue = NO_EPILOGUE,
): Tensor {
  return gemm({ a, b, batch, M, N, K, alpha, bias, epilogue, outShape });
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

/** A validated {@linkcode matmul} call: sizes, broadcast batch shape, transposes and operand shapes. */
interface MatmulProblem {
  /** op(A) is [M, K], op(B) [K, N], the output [...batch, M, N]. */
  M: number;
  N: number;
  K: number;
  /** The broadcast batch dims of the output. */
  batch: number[];
  transA: boolean;
  transB: boolean;
  alpha: number;
  /** The operands' shapes when the product was taken. */
  aShape: number[];
  bShape: number[];
  /** Element strides of each operand's batch dims against `batch` (0 = broadcast). */
  aStrides: number[];
  bStrides: number[];
}

/** The broadcast of two operands' batch dims (NumPy rules); `desc` names the operands in the error. */
function broadcastBatch(aBatch: number[], bBatch: number[], desc: string): number[] {
  const dims = Math.max(aBatch.length, bBatch.length);
  const batch: number[] = [];
  for (let i = 0; i < dims; i++) {
    const da = aBatch[aBatch.length - dims + i] ?? 1, db = bBatch[bBatch.length - dims + i] ?? 1;
    check(da === db || da === 1 || db === 1, "matmul", `batch dims do not broadcast for ${desc}`);
    batch.push(da === 1 ? db : da);
  }
  return batch;
}

/** Checks the operands of {@linkcode matmul} (dtype, rank, inner and batch dims) and returns its sizes. */
function matmulProblem(a: Tensor, b: Tensor, options: MatmulOptions): MatmulProblem {
  const transA = options.transA ?? false, transB = options.transB ?? false, alpha = options.alpha ?? 1;
  const desc = `a [${a.shape}]${transA ? " (transA)" : ""} and b [${b.shape}]${transB ? " (transB)" : ""}`;
  check(a.dtype === "f32" && b.dtype === "f32", "matmul", `expects f32 tensors, got ${a.dtype} and ${b.dtype}`);
  check(a.ndim >= 2 && b.ndim >= 2, "matmul", `needs operands with at least 2 dims, got ${desc}`);
  const aRows = a.shape[a.ndim - 2], aCols = a.shape[a.ndim - 1];
  const bRows = b.shape[b.ndim - 2], bCols = b.shape[b.ndim - 1];
  const [M, innerA] = transA ? [aCols, aRows] : [aRows, aCols];
  const [innerB, N] = transB ? [bCols, bRows] : [bRows, bCols];
  check(innerA === innerB, "matmul", `inner dimensions differ (${innerA} vs ${innerB}) for ${desc}`);
  const batch = broadcastBatch(a.shape.slice(0, -2), b.shape.slice(0, -2), desc);
  return {
    M,
    N,
    K: innerA,
    batch,
    transA,
    transB,
    alpha,
    aShape: [...a.shape],
    bShape: [...b.shape],
    aStrides: batchStrides(a.shape, batch),
    bStrides: batchStrides(b.shape, batch),
  };
}

/** An operand holding a gradient (marked `scaled` for mixed precision). */
const gradOperand = (storage: Storage, trans: boolean, strides: number[]): Operand => ({
  storage,
  trans,
  strides,
  scaled: true,
});

/** dA = dC · op(B)ᵀ (stored [M, K]) or op(B) · dCᵀ (stored [K, M]), summed where A broadcast. */
function matmulGradA(g: Tensor, savedB: Tensor, p: MatmulProblem): Tensor {
  const { M, N, K, batch, alpha } = p;
  const dC = (trans: boolean) => gradOperand(g.storage, trans, contiguous(batch, M * N));
  const opB = (trans: boolean): Operand => ({ storage: savedB.storage, trans, strides: p.bStrides });
  const full = p.transA
    ? mm(opB(p.transB), dC(true), K, M, N, [...batch, K, M], batch, alpha)
    : mm(dC(false), opB(!p.transB), M, K, N, [...batch, M, K], batch, alpha);
  return takeResult(full, p.aShape);
}

/** Whether B is one matrix shared by every batch of an untransposed A, so dB can fold the batch into its reduction. */
function isSharedWeight(p: MatmulProblem): boolean {
  const batches = numel(p.batch);
  return numel(p.bShape.slice(0, -2)) === 1 && batches > 1 && numel(p.aShape.slice(0, -2)) === batches && !p.transA;
}

/**
 * dB of a B shared across the batch: the batch folds into the reduction ([B·M, K]ᵀ · [B·M, N]), written straight
 * into `b`'s gradient slot ({@linkcode gradOutput}).
 */
function sharedWeightGrad(g: Tensor, savedA: Tensor, p: MatmulProblem, b: Tensor): Tensor {
  const { M, N, K, alpha } = p;
  const rows = numel(p.batch) * M;
  const dC = (trans: boolean) => gradOperand(g.storage, trans, []);
  const opA = (trans: boolean): Operand => ({ storage: savedA.storage, trans, strides: [] });
  return p.transB
    ? productInto(dC(true), opA(false), N, K, rows, gradOutput(b), alpha)
    : productInto(opA(true), dC(false), K, N, rows, gradOutput(b), alpha);
}

/** dB = op(A)ᵀ · dC (stored [K, N]) or dCᵀ · op(A) (stored [N, K]), summed where B broadcast. */
function matmulGradB(g: Tensor, savedA: Tensor, p: MatmulProblem, b: Tensor): Tensor {
  if (isSharedWeight(p)) return sharedWeightGrad(g, savedA, p, b);
  const { M, N, K, batch, alpha } = p;
  const dC = (trans: boolean) => gradOperand(g.storage, trans, contiguous(batch, M * N));
  const opA = (trans: boolean): Operand => ({ storage: savedA.storage, trans, strides: p.aStrides });
  const full = p.transB
    ? mm(dC(true), opA(p.transA), N, K, M, [...batch, N, K], batch, alpha)
    : mm(opA(!p.transA), dC(false), K, N, M, [...batch, K, N], batch, alpha);
  return takeResult(full, p.bShape);
}

/**
 * Batched matrix product: `a` [...batch, M, K] · `b` [...batch, K, N] → [...batch, M, N], with
 * NumPy broadcasting of the batch dims (e.g. x [B, T, C] · W [C, N]). `transA` / `transB` use an
 * operand stored with its last two dims swapped, without materialising the transpose.
 * Differentiable in both operands; gradients of broadcast operands are summed over the batch.
 */
export function matmul(a: Tensor, b: Tensor, options: MatmulOptions = {}): Tensor {
  const p = matmulProblem(a, b, options);
  const opA: Operand = { storage: a.storage, trans: p.transA, strides: p.aStrides };
  const opB: Operand = { storage: b.storage, trans: p.transB, strides: p.bStrides };
  const out = mm(opA, opB, p.M, p.N, p.K, [...p.batch, p.M, p.N], p.batch, p.alpha);
  if (!needsGrad(a, b)) return out;
  const savedA = b.requiresGrad ? saveForBackward(a) : null;
  const savedB = a.requiresGrad ? saveForBackward(b) : null;
  return record(out, "matmul", [a, b], (g) => {
    const gradA = savedB ? matmulGradA(g, savedB, p) : null;
    const gradB = savedA ? matmulGradB(g, savedA, p, b) : null;
    return [gradA, gradB];
  }, [savedA, savedB].filter((t): t is Tensor => t !== null));
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

/** A validated {@linkcode linear} call: its sizes, weight layout and fused epilogue inputs. */
interface LinearShape {
  /** The weight is stored [out, in] (used transposed). */
  outIn: boolean;
  /** Input and output features. */
  inF: number;
  outF: number;
  /** Rows of x (all its leading dims). */
  rows: number;
  /** Output shape [..., out]. */
  outShape: number[];
  activation: LinearActivation | undefined;
  residual: Tensor | null;
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
  const shape = linearShape(x, weight, bias ?? null, options);
  const affine = bias ? [x, weight, bias] : [x, weight];
  const inputs = shape.residual ? [...affine, shape.residual] : affine;
  const grad = needsGrad(...inputs);
  // Backward through the activation needs the pre-activation, unless only the residual wants a gradient.
  const pre = shape.activation && grad && needsGrad(...affine) ? empty(shape.outShape) : null;
  const out = linearForward(x, weight, bias ?? null, shape, pre);
  if (!grad) return out;
  const saved: LinearSaved = {
    x: weight.requiresGrad ? saveForBackward(x) : null,
    weight: x.requiresGrad ? saveForBackward(weight) : null,
    pre: pre ? saveForBackward(pre) : null,
    xShape: [...x.shape],
    weightShape: [...weight.shape],
    wantBias: bias?.requiresGrad ?? false,
    wantResidual: shape.residual?.requiresGrad ?? false,
  };
  pre?.dispose();
  return record(out, "linear", inputs, (g) => {
    const grads = linearBackward(g, saved, shape, { weight, bias: bias ?? null });
    const affineGrads = bias ? [grads.dx, grads.dw, grads.db] : [grads.dx, grads.dw];
    return shape.residual ? [...affineGrads, grads.dResidual] : affineGrads;
  }, [saved.x, saved.weight, saved.pre].filter((t): t is Tensor => t !== null));
}

/** Checks the operands and options of {@linkcode linear} and returns its sizes. */
function linearShape(x: Tensor, weight: Tensor, bias: Tensor | null, options: LinearOptions): LinearShape {
  const layout = options.weightLayout ?? "in_out";
  check(layout === "in_out" || layout === "out_in", "linear", `unknown weightLayout "${layout}"`);
  const activation = options.activation;
  check(
    activation === undefined || (Object.hasOwn(ACTIVATIONS, activation) && (activation as string) !== "identity"),
    "linear",
    `unknown activation "${activation}" (expected gelu, gelu_new or relu)`,
  );
  const residual = options.residual ?? null;
  const f32 = [x, weight, bias, residual].every((t) => !t || t.dtype === "f32");
  check(f32, "linear", "expects f32 tensors");
  check(weight.ndim === 2, "linear", `weight must be 2-D, got [${weight.shape}]`);
  const outIn = layout === "out_in";
  const [inF, outF] = outIn ? [weight.shape[1], weight.shape[0]] : [weight.shape[0], weight.shape[1]];
  const inputOk = x.ndim >= 1 && x.shape[x.ndim - 1] === inF;
  check(
    inputOk,
    "linear",
    `input [${x.shape}] does not match weight [${weight.shape}] (${layout}: ${inF} input features)`,
  );
  const biasOk = !bias || (bias.ndim === 1 && bias.shape[0] === outF);
  check(biasOk, "linear", `bias [${bias?.shape}] does not match weight [${weight.shape}] (${outF} output features)`);
  const outShape = [...x.shape.slice(0, -1), outF];
  const residualOk = !residual || residual.shape.join() === outShape.join();
  check(residualOk, "linear", `residual [${residual?.shape}] must have the output's shape [${outShape}]`);
  return { outIn, inF, outF, rows: numel(x.shape.slice(0, -1)), outShape, activation, residual };
}

/** An untransposed operand without batch dims. */
const plain = (storage: Storage, trans: boolean): Operand => ({ storage, trans, strides: [] });

/** act(x · W + bias) + residual in one product, keeping the pre-activation in `pre` when given. */
function linearForward(x: Tensor, weight: Tensor, bias: Tensor | null, shape: LinearShape, pre: Tensor | null) {
  const epilogue: Epilogue = {
    act: shape.activation ? ACTIVATIONS[shape.activation].code : ACTIVATIONS.identity.code,
    resid: shape.residual?.storage ?? null,
    pre: pre?.storage ?? null,
  };
  const { rows, inF, outF, outShape } = shape;
  const w = plain(weight.storage, shape.outIn);
  return mm(plain(x.storage, false), w, rows, outF, inF, outShape, [], 1, bias?.storage, epilogue);
}

/** What the backward pass of {@linkcode linear} keeps (null where no gradient needs it). */
interface LinearSaved {
  x: Tensor | null;
  weight: Tensor | null;
  pre: Tensor | null;
  xShape: number[];
  weightShape: number[];
  wantBias: boolean;
  wantResidual: boolean;
}

/** The weight and bias tensors of a {@linkcode linear} call (their gradients may be written in place). */
interface LinearParams {
  weight: Tensor;
  bias: Tensor | null;
}

/** out = alpha · op(A) [M, K] · op(B) [K, N] into a tensor of M·N elements that already exists (e.g. a gradient's slot). */
function productInto(a: Operand, b: Operand, M: number, N: number, K: number, out: Tensor, alpha = 1): Tensor {
  return gemm({ a, b, batch: [], M, N, K, alpha, bias: null, epilogue: NO_EPILOGUE, outShape: [...out.shape], out });
}

/** The gradients of x, W, bias and residual from the output gradient `g` (null where not wanted). */
function linearBackward(g: Tensor, saved: LinearSaved, shape: LinearShape, params: LinearParams) {
  const { rows, inF, outF, outIn } = shape;
  // dPre = dY · act'(pre); the residual's gradient is dY itself.
  const gp = saved.pre ? activationGrad(ACTIVATIONS[shape.activation!].unary, saved.pre, g) : g;
  const G = (trans: boolean): Operand => ({ ...plain(gp.storage, trans), scaled: true });
  // dx = dPre · Wᵀ ([rows, out] · [out, in]).
  const dx = saved.weight ? mm(G(false), plain(saved.weight.storage, !outIn), rows, inF, outF, saved.xShape) : null;
  // dW = xᵀ · dPre ([in, out]) or dPreᵀ · x ([out, in]): the rows fold into the reduction.
  let dw: Tensor | null = null;
  if (saved.x) {
    dw = outIn
      ? productInto(G(true), plain(saved.x.storage, false), outF, inF, rows, gradOutput(params.weight))
      : productInto(plain(saved.x.storage, true), G(false), inF, outF, rows, gradOutput(params.weight));
  }
  // db = 1ᵀ · dPre: a column sum, run as a one-row product (the matrix–vector kernel).
  let db: Tensor | null = null;
  if (saved.wantBias) {
    const one = ones([rows]);
    db = productInto(plain(one.storage, false), G(false), 1, outF, rows, gradOutput(params.bias!));
    one.dispose();
  }
  if (gp !== g) gp.dispose();
  const dResidual = saved.wantResidual ? g.detach() : null;
  return { dx, dw, db, dResidual };
}
