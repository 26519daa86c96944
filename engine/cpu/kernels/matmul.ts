/**
 * CPU kernels of the matrix products (`engine/kernels/matmul.ts`): the tiled kernel (`matmul.wgsl` with
 * `matmul_io.wgsl`), the matrix–vector kernel (`matmul_gemv.wgsl`) and the sum of split-K partial products
 * (`matmul_splitk.wgsl`). Each grid layer's product is one {@linkcode sgemm} (OpenBLAS when loaded) into a scratch
 * block, then the shader's epilogue writes it element by element: alpha, bias, pre-activation, activation, residual.
 * Only what the grid covers is written, at the shader's output offsets (split-K layers write their own partials).
 * The cooperative-matrix kernel and its operand scan are GPU-only and have no CPU implementation.
 *
 * Agreement: the GPU sums K products in f32 in its own order (tiles, k slices, split partials), so results differ
 * from BLAS by rounding that grows with K and with Σ|a·b| rather than with |C|: a cancelling sum ends near 0 with an
 * absolute error. On the replay workloads (K up to 1024, split K of 33 partials, O(1) operands) the largest
 * difference is about 6e-6 relative (4e-6 absolute), so products agree within 1e-4 relative + 1e-5 absolute: room
 * for other adapters' orders and a few times longer K, while a wrong transpose, K range, offset or bias index
 * (off by O(1)) or gelu for gelu_new (≈5e-4 apart) still fails. The split-K sum adds in the shader's order: default.
 * @module
 */

import * as K from "../../kernels/matmul.ts";
import { type Agreement, defineCpuKernel, type HostArray, launchedThreads } from "../kernel_table.ts";
import { act, actInPlace } from "../activation.ts";
import { asOperand, sgemm, type StridedMatrix } from "../blas.ts";

/** Agreement of the products (see the module comment). */
const PRODUCT_AGREEMENT: Agreement = { rtol: 1e-4, atol: 1e-5 };

/** The epilogue's bindings and constants; `bias`: 0 none, 1 bias[n], 2 bias[m] (matrix–vector kernel only). */
interface Epilogue {
  bias: number;
  act: number;
  resid: boolean;
  pre: boolean;
}

type EpilogueBindings = Readonly<Record<"bias" | "c" | "resid" | "pre", HostArray>>;

/** The store of one element through the epilogue: C[o] = act(v (+ bias)) (+ R[o]), `pre[o]` before act. */
function epilogueWriter(b: EpilogueBindings, e: Epilogue): (o: number, m: number, n: number, v: number) => void {
  const bias = b.bias.f32, c = b.c.f32, resid = b.resid.f32, pre = b.pre.f32;
  return (o, m, n, v) => {
    let r = v;
    if (e.bias === 1) r = Math.fround(r + bias[n]);
    else if (e.bias === 2) r = Math.fround(r + bias[m]);
    if (e.pre) pre[o] = r;
    r = act(e.act, r);
    if (e.resid) r += resid[o];
    c[o] = r;
  };
}

/** The epilogue constants as the shaders default them (all off). */
function epilogueOf(o: Readonly<Partial<Record<"BIAS" | "ACT" | "RESID" | "PRE", number>>>): Epilogue {
  return { bias: o.BIAS ?? 0, act: o.ACT ?? 0, resid: (o.RESID ?? 0) !== 0, pre: (o.PRE ?? 0) !== 0 };
}

/** Element offsets of batch `z`'s operands from up to 4 batch dims (innermost last) and per-operand strides. */
function batchOffsets(z: number, shape: number[], aStride: number[], bStride: number[]): [number, number] {
  let rem = z, offA = 0, offB = 0;
  for (let d = 3; d >= 0; d--) {
    const q = rem % shape[d];
    rem = Math.floor(rem / shape[d]);
    offA += q * aStride[d];
    offB += q * bStride[d];
  }
  return [offA, offB];
}

/** C' [rows, cols] = alpha · A' [rows, K] · B' [K, cols] into a new contiguous array. */
function product(a: StridedMatrix, b: StridedMatrix, rows: number, cols: number, k: number, alpha: number) {
  const out = new Float32Array(rows * cols);
  productInto(a, b, rows, cols, k, alpha, { data: out, offset: 0, ld: cols });
  return out;
}

/** C [rows, cols] (row-major at `c.offset`, leading dimension `c.ld`) = alpha · A' · B', written in place. */
function productInto(
  a: StridedMatrix,
  b: StridedMatrix,
  rows: number,
  cols: number,
  k: number,
  alpha: number,
  c: { data: Float32Array; offset: number; ld: number },
): void {
  if (rows === 0 || cols === 0) return;
  if (k === 0) {
    for (let m = 0; m < rows; m++) c.data.fill(0, c.offset + m * c.ld, c.offset + m * c.ld + cols);
    return;
  }
  sgemm({ M: rows, N: cols, K: k, alpha, a: asOperand(a, rows, k), b: asOperand(b, k, cols), beta: 0, c });
}

/** True when the store is the product itself: no bias, activation, residual or pre-activation to write. */
const plainStore = (e: Epilogue) => e.bias === 0 && e.act === 0 && !e.resid && !e.pre;

/**
 * Applies the epilogue in place to the [rows, cols] product already in C at `offC` (row stride `ldc`): bias, the
 * pre-activation copy, activation, residual — each a pass over the block, as the shader's store does per element.
 */
function epilogueInPlace(b: EpilogueBindings, e: Epilogue, rows: number, cols: number, offC: number, ldc: number) {
  const bias = b.bias.f32, c = b.c.f32, resid = b.resid.f32, pre = b.pre.f32;
  // Stage by stage (bias, pre-activation copy, activation, residual); each element sees them in the shader's order.
  for (let m = 0; m < rows; m++) {
    const row = offC + m * ldc, end = row + cols;
    if (e.bias === 1) { for (let i = row, n = 0; i < end; i++, n++) c[i] += bias[n]; }
    else if (e.bias === 2) {
      const bm = bias[m];
      for (let i = row; i < end; i++) c[i] += bm;
    }
    if (e.pre) pre.set(c.subarray(row, end), row);
  }
  if (e.act !== 0) {
    if (ldc === cols) actInPlace(e.act, c, offC, offC + rows * cols); // contiguous rows: one call
    else for (let m = 0; m < rows; m++) actInPlace(e.act, c, offC + m * ldc, offC + m * ldc + cols);
  }
  if (e.resid) {
    for (let m = 0; m < rows; m++) {
      const row = offC + m * ldc, end = row + cols;
      for (let i = row; i < end; i++) c[i] += resid[i];
    }
  }
}

defineCpuKernel(K.MATMUL, ({ params: p, bindings: b, grid, overrides: o }) => {
  const bm = (o.WG_Y ?? 16) * (o.TM ?? 4), bn = (o.WG_X ?? 16) * (o.TN ?? 4);
  const rows = Math.min(p.M, grid[1] * bm), cols = Math.min(p.N, grid[0] * bn);
  const epilogue = epilogueOf(o);
  const transA = (o.TRANS_A ?? 0) !== 0, transB = (o.TRANS_B ?? 0) !== 0;
  for (let wz = 0; wz < grid[2]; wz++) {
    // tileOrigin: z = split · nbatch + batch; split s covers k ∈ [s·kchunk, min(K, (s+1)·kchunk)).
    const z = wz + p.batch0, split = Math.floor(z / p.nbatch);
    const [offA, offB] = batchOffsets(z - split * p.nbatch, p.bshape, p.astride, p.bstride);
    const kBegin = split * p.kchunk, kLen = Math.max(0, Math.min(p.K, kBegin + p.kchunk) - kBegin);
    // op(A) [M, K] is stored [M, K] or [K, M]; op(B) [K, N] is stored [K, N] or [N, K].
    const a = transA
      ? { data: b.aS.f32, offset: offA + kBegin * p.M, rowStride: 1, colStride: p.M }
      : { data: b.aS.f32, offset: offA + kBegin, rowStride: p.K, colStride: 1 };
    const bb = transB
      ? { data: b.bS.f32, offset: offB + kBegin, rowStride: 1, colStride: p.K }
      : { data: b.bS.f32, offset: offB + kBegin * p.N, rowStride: p.N, colStride: 1 };
    const offC = z * p.M * p.N;
    productInto(a, bb, rows, cols, kLen, p.alpha, { data: b.c.f32, offset: offC, ld: p.N });
    if (!plainStore(epilogue)) epilogueInPlace(b, epilogue, rows, cols, offC, p.N);
  }
}, PRODUCT_AGREEMENT);

defineCpuKernel(K.MATMUL_GEMV, ({ params: p, bindings: b, grid, overrides: o }) => {
  const rows = Math.min(p.M, grid[1] * (o.ROWS ?? 4)), cols = Math.min(p.N, grid[0] * (o.COLS ?? 64));
  const e = epilogueOf(o), write = epilogueWriter(b, e);
  for (let wz = 0; wz < grid[2]; wz++) {
    const z = wz + p.batch0;
    const [offA, offB] = batchOffsets(z, p.bshape, p.astride, p.bstride);
    // A' (m, k) at offA + m·sam + k·sak, B' (k, n) at offB + k·sbk + n·sbn, C (m, n) at z·M·N + m·scm + n·scn.
    const a = { data: b.a.f32, offset: offA, rowStride: p.sam, colStride: p.sak };
    const bb = { data: b.b.f32, offset: offB, rowStride: p.sbk, colStride: p.sbn };
    const offC = z * p.M * p.N;
    if (p.scn === 1 && (p.scm >= cols || rows <= 1)) {
      // Row-major output: the product straight into C, then the epilogue in place.
      productInto(a, bb, rows, cols, p.K, p.alpha, { data: b.c.f32, offset: offC, ld: Math.max(p.scm, cols) });
      if (!plainStore(e)) epilogueInPlace(b, e, rows, cols, offC, Math.max(p.scm, cols));
      continue;
    }
    const out = product(a, bb, rows, cols, p.K, p.alpha);
    for (let m = 0; m < rows; m++) {
      for (let n = 0; n < cols; n++) write(offC + m * p.scm + n * p.scn, m, n, out[m * cols + n]);
    }
  }
}, PRODUCT_AGREEMENT);

defineCpuKernel(K.MATMUL_SPLITK_SUM, ({ params: p, bindings: b, grid, overrides: o }) => {
  const e = epilogueOf(o);
  const write = epilogueWriter(b, { ...e, bias: e.bias !== 0 ? 1 : 0 });
  const part = b.part.f32, n = Math.min(p.size, launchedThreads(grid));
  for (let i = 0; i < n; i++) {
    // The partials in the shader's order, each sum rounded to f32 as it accumulates.
    let r = 0;
    for (let s = 0; s < p.splits; s++) r = Math.fround(r + part[s * p.size + i]);
    write(i, 0, i % p.N, r);
  }
});
