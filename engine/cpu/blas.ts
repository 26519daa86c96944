/**
 * Single-precision matrix products on the host for the CPU kernels: {@linkcode sgemm} calls `cblas_sgemm` of a
 * system BLAS (Debian's OpenBLAS, `libopenblas0-pthread`) through Deno FFI when one can be loaded — which needs
 * `--allow-ffi` — and otherwise runs a cache-blocked TypeScript loop that accumulates in float64.
 * {@linkcode blasBackend} says which one is in use. Every operand's extent is checked against its array before the
 * native call, so a bad stride throws instead of reading past the end of a buffer.
 * @module
 */

/** Libraries tried in order; the first that loads and exports `cblas_sgemm` is used. */
export const BLAS_LIBRARIES = ["libopenblas.so.0", "libopenblas.so", "libcblas.so.3", "libblas.so.3"] as const;

const ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112;

const SGEMM_SYMBOLS = {
  cblas_sgemm: {
    // order, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc
    parameters: [
      "i32",
      "i32",
      "i32",
      "i32",
      "i32",
      "i32",
      "f32",
      "buffer",
      "i32",
      "buffer",
      "i32",
      "f32",
      "buffer",
      "i32",
    ],
    result: "void",
  },
  // OpenBLAS's thread count (other BLAS libraries lack these; optional symbols resolve to null).
  openblas_get_num_threads: { parameters: [], result: "i32", optional: true },
  openblas_set_num_threads: { parameters: ["i32"], result: "void", optional: true },
} as const;

type SgemmLibrary = Deno.DynamicLibrary<typeof SGEMM_SYMBOLS>;

/** One row-major operand: element (r, c) of op(X) is `data[offset + r·ld + c]`, or `data[offset + c·ld + r]` when `trans`. */
export interface MatrixOperand {
  /** The array holding the operand. */
  data: Float32Array;
  /** Index of element (0, 0). */
  offset: number;
  /** Leading dimension (elements between consecutive stored rows). */
  ld: number;
  /** Stored transposed: op(X) = Xᵀ. */
  trans: boolean;
}

/** The output of {@linkcode sgemm}: element (m, n) at `data[offset + m·ld + n]`. */
export interface MatrixOutput {
  /** The array receiving C. */
  data: Float32Array;
  /** Index of element (0, 0). */
  offset: number;
  /** Leading dimension. */
  ld: number;
}

/** C = alpha · op(A) · op(B) + beta · C with op(A) [M, K] and op(B) [K, N], all row-major. */
export interface SgemmCall {
  /** Rows of C. */
  M: number;
  /** Columns of C. */
  N: number;
  /** Reduction length. */
  K: number;
  /** Scale of the product. */
  alpha: number;
  /** Left operand, op(A) [M, K]. */
  a: MatrixOperand;
  /** Right operand, op(B) [K, N]. */
  b: MatrixOperand;
  /** Scale of the previous C (0: C is only written, never read). */
  beta: number;
  /** Output. */
  c: MatrixOutput;
}

let library: { lib: SgemmLibrary; name: string } | null | undefined;

/**
 * Products below this many multiply-adds run on one OpenBLAS thread: waking a second thread costs more than it saves
 * there (on the 2-core machine, 2 threads made the demo's PPO iteration 40% slower than 1 before this).
 */
export const THREADED_PRODUCT = 1 << 22;
/** OpenBLAS's configured thread count (OPENBLAS_NUM_THREADS or the cores), and the count it is set to now. */
let threads = { max: 1, now: 1 };

/** Loads the first BLAS of {@linkcode BLAS_LIBRARIES} that can be opened (once); null when none (or no FFI permission). */
function loadBlas(): { lib: SgemmLibrary; name: string } | null {
  if (library !== undefined) return library;
  library = null;
  for (const name of BLAS_LIBRARIES) {
    try {
      library = { lib: Deno.dlopen(name, SGEMM_SYMBOLS), name };
      const n = library.lib.symbols.openblas_get_num_threads?.() ?? 1;
      threads = { max: n, now: n };
      break;
    } catch {
      // Not installed, no cblas_sgemm, or no --allow-ffi: try the next one, then fall back to TypeScript.
    }
  }
  return library;
}

/** Which implementation {@linkcode sgemm} uses: the loaded library's file name, or "typescript" for the fallback. */
export function blasBackend(): string {
  return loadBlas()?.name ?? "typescript";
}

/** Whether a native BLAS was loaded. */
export function hasNativeBlas(): boolean {
  return loadBlas() !== null;
}

/** Throws unless the stored `rows` × `cols` matrix at `offset` with leading dimension `ld` lies inside `data`. */
function checkExtent(what: string, data: Float32Array, offset: number, rows: number, cols: number, ld: number): void {
  if (rows === 0 || cols === 0) return;
  const ok = Number.isInteger(offset) && offset >= 0 && ld >= cols && offset + (rows - 1) * ld + cols <= data.length;
  if (!ok) throw new RangeError(`sgemm: ${what} (${rows}×${cols}, ld ${ld}, at ${offset}) exceeds ${data.length}`);
}

/** Validates every operand's extent (stored shapes: A [M, K] or [K, M], B [K, N] or [N, K], C [M, N]). */
function checkCall({ M, N, K, a, b, c }: SgemmCall): void {
  checkExtent("A", a.data, a.offset, a.trans ? K : M, a.trans ? M : K, a.ld);
  checkExtent("B", b.data, b.offset, b.trans ? N : K, b.trans ? K : N, b.ld);
  checkExtent("C", c.data, c.offset, M, N, c.ld);
}

/** C = alpha · op(A) · op(B) + beta · C through the native BLAS; throws when none is loaded. */
export function sgemmNative(call: SgemmCall): void {
  const blas = loadBlas();
  if (!blas) throw new Error("sgemm: no native BLAS loaded");
  checkCall(call);
  const { M, N, K, alpha, a, b, beta, c } = call;
  if (M === 0 || N === 0) return;
  const want = M * N * K < THREADED_PRODUCT ? 1 : threads.max;
  if (want !== threads.now && blas.lib.symbols.openblas_set_num_threads) {
    blas.lib.symbols.openblas_set_num_threads(want);
    threads.now = want;
  }
  // cblas rejects leading dimensions below 1 even for empty operands.
  blas.lib.symbols.cblas_sgemm(
    ROW_MAJOR,
    a.trans ? TRANS : NO_TRANS,
    b.trans ? TRANS : NO_TRANS,
    M,
    N,
    K,
    alpha,
    a.data.subarray(a.offset),
    Math.max(1, a.ld),
    b.data.subarray(b.offset),
    Math.max(1, b.ld),
    beta,
    c.data.subarray(c.offset),
    Math.max(1, c.ld),
  );
}

const KC = 128; // k rows of op(B) per packed panel
const NC = 256; // columns of op(B) per packed panel

/** Copies op(B)[k0..k0+kc, n0..n0+nc] into `panel` (row-major, nc wide) as float64. */
function packB(b: MatrixOperand, k0: number, kc: number, n0: number, nc: number, panel: Float64Array): void {
  const { data, offset, ld, trans } = b;
  for (let p = 0; p < kc; p++) {
    for (let j = 0; j < nc; j++) {
      const k = k0 + p, n = n0 + j;
      panel[p * nc + j] = trans ? data[offset + n * ld + k] : data[offset + k * ld + n];
    }
  }
}

/** acc[m, n0..n0+nc] += op(A)[m, k0..k0+kc] · panel for every row m (acc row-major, N wide). */
function multiplyPanel(
  call: SgemmCall,
  acc: Float64Array,
  panel: Float64Array,
  k0: number,
  kc: number,
  n0: number,
  nc: number,
) {
  const { M, N, a } = call;
  const { data, offset, ld, trans } = a;
  for (let m = 0; m < M; m++) {
    const row = m * N + n0;
    for (let p = 0; p < kc; p++) {
      const k = k0 + p;
      const av = trans ? data[offset + k * ld + m] : data[offset + m * ld + k];
      if (av === 0) continue;
      const base = p * nc;
      for (let j = 0; j < nc; j++) acc[row + j] += av * panel[base + j];
    }
  }
}

/** C = alpha · op(A) · op(B) + beta · C in TypeScript: op(B) packed in KC × NC panels, float64 accumulation. */
export function sgemmFallback(call: SgemmCall): void {
  checkCall(call);
  const { M, N, K, alpha, beta, c } = call;
  if (M === 0 || N === 0) return;
  const acc = new Float64Array(M * N);
  const panel = new Float64Array(KC * NC);
  for (let n0 = 0; n0 < N; n0 += NC) {
    const nc = Math.min(NC, N - n0);
    for (let k0 = 0; k0 < K; k0 += KC) {
      const kc = Math.min(KC, K - k0);
      packB(call.b, k0, kc, n0, nc, panel);
      multiplyPanel(call, acc, panel, k0, kc, n0, nc);
    }
  }
  for (let m = 0; m < M; m++) {
    const o = c.offset + m * c.ld;
    for (let n = 0; n < N; n++) {
      const prev = beta === 0 ? 0 : beta * c.data[o + n];
      c.data[o + n] = alpha * acc[m * N + n] + prev;
    }
  }
}

/**
 * Products of at most this many multiply-adds (M·N·K) run as plain TypeScript loops: below it a native call's fixed
 * cost (the FFI transition, argument checks, OpenBLAS's set-up: about 1–2 µs) exceeds the arithmetic — the one-row
 * products of token-by-token decoding, for instance.
 */
export const SMALL_PRODUCT = 4096;

/** C = alpha · op(A) · op(B) + beta · C by direct dot products (float64 accumulation), for tiny products. */
export function sgemmSmall(call: SgemmCall): void {
  checkCall(call);
  const { M, N, K, alpha, beta, a, b, c } = call;
  // Element steps along a row (k) and down a column (m / n) of op(A) and op(B).
  const ak = a.trans ? a.ld : 1, am = a.trans ? 1 : a.ld, bk = b.trans ? 1 : b.ld, bn = b.trans ? b.ld : 1;
  const A = a.data, B = b.data, C = c.data;
  for (let m = 0; m < M; m++) {
    const arow = a.offset + m * am, crow = c.offset + m * c.ld;
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0, ia = arow, ib = b.offset + n * bn; k < K; k++, ia += ak, ib += bk) s += A[ia] * B[ib];
      C[crow + n] = beta === 0 ? alpha * s : alpha * s + beta * C[crow + n];
    }
  }
}

/**
 * C = alpha · op(A) · op(B) + beta · C: the native BLAS when loaded (tiny products in TypeScript, see
 * {@linkcode SMALL_PRODUCT}), else {@linkcode sgemmFallback}.
 */
export function sgemm(call: SgemmCall): void {
  if (call.M * call.N * call.K <= SMALL_PRODUCT) sgemmSmall(call);
  else if (hasNativeBlas()) sgemmNative(call);
  else sgemmFallback(call);
}

/** A matrix addressed by element strides: element (r, c) at `data[offset + r·rowStride + c·colStride]`. */
export interface StridedMatrix {
  /** The array holding it. */
  data: Float32Array;
  /** Index of element (0, 0). */
  offset: number;
  /** Elements between consecutive rows. */
  rowStride: number;
  /** Elements between consecutive columns. */
  colStride: number;
}

/** `x` [rows, cols] as an {@linkcode sgemm} operand: in place when one stride is 1, else packed contiguously. */
export function asOperand(x: StridedMatrix, rows: number, cols: number): MatrixOperand {
  const { data, offset, rowStride, colStride } = x;
  if ((colStride === 1 || cols <= 1) && (rowStride >= cols || rows <= 1)) {
    return { data, offset, ld: rows <= 1 ? Math.max(cols, 1) : rowStride, trans: false };
  }
  if ((rowStride === 1 || rows <= 1) && (colStride >= rows || cols <= 1)) {
    return { data, offset, ld: cols <= 1 ? Math.max(rows, 1) : colStride, trans: true };
  }
  const packed = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) packed[r * cols + c] = data[offset + r * rowStride + c * colStride];
  }
  return { data: packed, offset: 0, ld: cols, trans: false };
}
