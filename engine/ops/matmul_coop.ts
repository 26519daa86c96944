/**
 * Mixed-precision products on cooperative matrices (tensor cores), `shaders/matmul_coop.wgsl`: operands rounded
 * to f16 in workgroup memory, f32 accumulation, the fp32 kernel's epilogues, batching and split K. Used by the tiled
 * path of `gemm` (engine/ops/matmul_gemm.ts) when the device has wgpu's `wgpu-cooperative-matrix` and `shader-f16`,
 * a known subgroup size, the precision setting allows it ({@linkcode setMatmulPrecision}) and the kernel passed its
 * check at start-up ({@linkcode verifyCoopMatmul}); the fp32 SIMT kernels stay the fallback everywhere else.
 *
 * Parameters, optimiser state and every other op stay f32 (as PyTorch AMP keeps master weights): only the inputs
 * of a product are rounded. Gradient operands are scaled per product by a power of two chosen on the GPU from their
 * largest magnitude (`shaders/tensor_scan.wgsl`), so tiny gradients do not flush to zero in f16.
 * @module
 */

import type { Storage } from "../runtime.ts";
import type { Backend } from "../backend.ts";
import { check, runtime } from "../tensor.ts";
import { MATMUL_COOP, OPERAND_AMAX } from "../kernels/matmul.ts";
import { FILL } from "../kernels/elementwise.ts";

/**
 * How products are computed. "auto" (default): mixed precision (f16 operands, f32 accumulation, on tensor cores)
 * where the device has cooperative matrices and the start-up check passed, else fp32. "fp32": always the exact fp32
 * kernels. "mixed": mixed precision, and an error where the device cannot.
 */
export type MatmulPrecision = "auto" | "fp32" | "mixed";

const PRECISIONS: readonly MatmulPrecision[] = ["auto", "fp32", "mixed"];

function envPrecision(): MatmulPrecision {
  let v: string | undefined;
  try {
    v = Deno.env.get("RLHF_MATMUL_PRECISION")?.trim().toLowerCase();
  } catch { /* no env permission */ }
  if (v === undefined || v === "") return "auto";
  if (!PRECISIONS.includes(v as MatmulPrecision)) {
    throw new Error(`RLHF_MATMUL_PRECISION must be auto, fp32 or mixed (got "${v}")`);
  }
  return v as MatmulPrecision;
}

let precision: MatmulPrecision | null = null;
/** Per runtime: true once the start-up check passed, else why mixed precision is off. */
const verdicts = new WeakMap<Backend, true | string>();

/**
 * Sets how products are computed (see {@linkcode MatmulPrecision}); returns the previous setting. The default comes
 * from the environment variable `RLHF_MATMUL_PRECISION` (auto | fp32 | mixed), else "auto".
 */
export function setMatmulPrecision(p: MatmulPrecision): MatmulPrecision {
  check(PRECISIONS.includes(p), "setMatmulPrecision", `precision must be auto, fp32 or mixed (got "${p}")`);
  const prev = getMatmulPrecision();
  precision = p;
  return prev;
}

/** The precision setting (see {@linkcode setMatmulPrecision}). */
export function getMatmulPrecision(): MatmulPrecision {
  return precision ??= envPrecision();
}

/** What the products of a runtime run on: whether mixed precision is in use, and why (not). */
export interface MatmulPrecisionStatus {
  /** The setting. */
  setting: MatmulPrecision;
  /** True when tiled products use the cooperative-matrix kernel. */
  mixed: boolean;
  /** A sentence for logs: what runs and why. */
  reason: string;
}

/** Why the device cannot run the cooperative-matrix kernel, or null when it can (pending the start-up check). */
function deviceProblem(rt: Backend): string | null {
  const h = rt.handle;
  if (!h.hasCoopMatrix) return "the device has no wgpu-cooperative-matrix feature";
  if (!h.hasF16) return "the device has no shader-f16";
  if (h.subgroupSize === null) return "the adapter does not report a single subgroup size";
  return null;
}

/** The precision status of `rt` (default: the engine's runtime). */
export function matmulPrecisionStatus(rt: Backend = runtime()): MatmulPrecisionStatus {
  const setting = getMatmulPrecision();
  if (setting === "fp32") return { setting, mixed: false, reason: "fp32 products (precision set to fp32)" };
  const problem = deviceProblem(rt) ?? (verdicts.get(rt) === true ? null : verdicts.get(rt) ?? "not checked yet");
  if (problem) return { setting, mixed: false, reason: `fp32 products: ${problem}` };
  return {
    setting,
    mixed: true,
    reason:
      `mixed-precision products: f16 operands, f32 accumulation on cooperative matrices (subgroup ${rt.handle.subgroupSize})`,
  };
}

/** The subgroup size to run the cooperative-matrix kernel with, or 0 for the fp32 kernels; throws for "mixed". */
export function coopSubgroup(rt: Backend): number {
  const st = matmulPrecisionStatus(rt);
  if (!st.mixed && st.setting === "mixed") {
    throw new Error(
      `rlhf-webgpu: matmul precision "mixed" is not available: ${st.reason.replace(/^fp32 products: /, "")}`,
    );
  }
  return st.mixed ? rt.handle.subgroupSize! : 0;
}

// ------------------------------------------------------------------ tiles

/** One tile of the cooperative-matrix kernel: WM × WN subgroups, each FM × FN fragments of 16 × 16. */
export interface MatmulCoopTile {
  /** Subgroups along M. */
  wm: number;
  /** Subgroups along N. */
  wn: number;
  /** 16-row fragments per subgroup. */
  fm: 1 | 2 | 4;
  /** 16-column fragments per subgroup. */
  fn: 1 | 2;
  /** Depth of the k tile staged in workgroup memory (a multiple of 16). */
  bk: number;
}

/** Why a cooperative-matrix tile is malformed, or null. */
export function coopTileProblem(t: MatmulCoopTile): string | null {
  const ok = (v: number) => Number.isInteger(v) && v > 0;
  if (!ok(t.wm) || !ok(t.wn) || !ok(t.bk) || t.bk % 16 !== 0) return "wm, wn, bk must be positive, bk % 16 = 0";
  if (![1, 2, 4].includes(t.fm)) return "fm must be 1, 2 or 4";
  if (![1, 2].includes(t.fn)) return "fn must be 1 or 2";
  return null;
}

/** Output rows and columns of a tile, its threads and its workgroup-memory bytes for subgroups of `subgroup`. */
export function coopTileDims(tile: MatmulCoopTile, subgroup: number) {
  const { wm, wn, fm, fn, bk } = tile;
  const bm = wm * fm * 16, bn = wn * fn * 16;
  const bytes = 2 * (bm + 8) * (bk + 8) + 2 * (bn + 8) * (bk + 8) + 4 * 256 * wm * wn;
  return { bm, bn, bk, threads: wm * wn * subgroup, bytes };
}

/** The pipeline constants of the cooperative-matrix kernel for a tile (the flags are added by the caller). */
export function coopConstants(tile: MatmulCoopTile, subgroup: number): Record<string, number> {
  return { SG: subgroup, WM: tile.wm, WN: tile.wn, FM: tile.fm, FN: tile.fn, BK: tile.bk };
}

// ------------------------------------------------------------------ operand scaling

/**
 * Records the largest magnitudes of the operands to scale (slot 0: A, slot 1: B; 0 where not scaled) into a new
 * 2-word storage, which the caller binds as the kernel's `amax` and releases after recording.
 */
export function recordAmax(rt: Backend, a: Storage | null, b: Storage | null): Storage {
  const out = rt.alloc(8);
  rt.run(FILL, { n: 2, bits: 0, start: 0, step: 0 }, { y: out }, [1]);
  for (const [slot, operand] of [[0, a], [1, b]] as const) {
    if (!operand) continue;
    const n = Math.floor(operand.bytes / 4);
    const workgroups = Math.max(1, Math.min(1024, Math.ceil(n / 2048)));
    rt.run(OPERAND_AMAX, { n, slot }, { x: operand, out }, [workgroups]);
  }
  return out;
}

/** The power of two the kernel scales an operand by, for its largest magnitude (shaders/matmul_coop.wgsl). */
export function operandScale(amax: number): number {
  if (!(amax > 0) || amax > 3e38) return 1;
  return 2 ** Math.min(126, Math.max(-126, Math.floor(14 - Math.log2(amax))));
}

// ------------------------------------------------------------------ start-up check

/** Rounds a number to the nearest f16 value (ties to even), as the kernel's staging does. */
export function roundF16(x: number): number {
  if (!Number.isFinite(x) || x === 0) return x;
  const a = Math.abs(x);
  if (a >= 65520) return Math.sign(x) * Infinity;
  const e = Math.max(Math.floor(Math.log2(a)), -14); // subnormals share the exponent of the smallest normal
  const ulp = 2 ** (e - 10);
  const q = a / ulp, f = Math.floor(q), r = q - f;
  const m = r > 0.5 || (r === 0.5 && f % 2 === 1) ? f + 1 : f;
  return Math.sign(x) * m * ulp;
}

/**
 * Float64 reference of one product as the kernel computes it: C = alpha · Σ_k r(s_A·A[m,k]) · r(s_B·B[k,n]) / (s_A·s_B)
 * with r() rounding to f16 and s the operand scales (1 when not scaled). A is [M, K] (or [K, M] when `transA`),
 * B is [K, N] (or [N, K] when `transB`), row-major.
 */
export function mixedReference(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  M: number,
  N: number,
  K: number,
  opts: { transA?: boolean; transB?: boolean; alpha?: number; scaleA?: boolean; scaleB?: boolean } = {},
): Float64Array {
  const amax = (v: ArrayLike<number>) => Array.from(v).reduce((m, x) => Math.max(m, Math.abs(x)), 0);
  const sA = opts.scaleA ? operandScale(amax(a)) : 1, sB = opts.scaleB ? operandScale(amax(b)) : 1;
  const ra = Float64Array.from(a, (x) => roundF16(Math.fround(x * sA)));
  const rb = Float64Array.from(b, (x) => roundF16(Math.fround(x * sB)));
  const out = new Float64Array(M * N);
  const alpha = (opts.alpha ?? 1) / sA / sB;
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) {
        s += ra[opts.transA ? k * M + m : m * K + k] * rb[opts.transB ? n * K + k : k * N + n];
      }
      out[m * N + n] = alpha * s;
    }
  }
  return out;
}

/** Largest |got − want| over the largest |want| (Infinity for a non-finite value). */
export function maxError(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let top = 0, err = 0;
  for (let i = 0; i < want.length; i++) {
    top = Math.max(top, Math.abs(want[i]));
    const d = Math.abs(got[i] - want[i]);
    err = Number.isNaN(d) ? Infinity : Math.max(err, d);
  }
  return err / (top || 1);
}

/** The product the start-up check runs: odd sizes (partial tiles), both operands transposed and scaled. */
const CHECK = { M: 40, N: 72, K: 112, transA: true, transB: true };

/**
 * Checks the cooperative-matrix kernel on this device once (initEngine calls it, whatever the precision setting, so
 * a later switch to mixed precision finds the verdict): builds it, runs a small product
 * with transposed, scaled operands and odd sizes, and compares it with {@linkcode mixedReference}. On a failure
 * (kernel rejected, wrong numbers) mixed precision stays off for this runtime and the reason is kept for
 * {@linkcode matmulPrecisionStatus}; with the setting "mixed" the failure is thrown.
 */
export async function verifyCoopMatmul(rt: Backend): Promise<void> {
  if (deviceProblem(rt) || verdicts.has(rt)) return;
  const subgroup = rt.handle.subgroupSize!;
  const { M, N, K } = CHECK;
  const a = Float32Array.from({ length: K * M }, (_, i) => Math.sin(i * 0.37) * 3e-6);
  const b = Float32Array.from({ length: N * K }, (_, i) => Math.cos(i * 0.91) * 0.5);
  const [aBuf, bBuf, cBuf, spareRead, spareWrite] = [a.byteLength, b.byteLength, M * N * 4, 256, 256].map((bytes) =>
    rt.alloc(bytes)
  );
  try {
    rt.write(aBuf, a);
    rt.write(bBuf, b);
    const tile: MatmulCoopTile = { wm: 1, wn: 2, fm: 2, fn: 2, bk: 32 };
    const { bm, bn } = coopTileDims(tile, subgroup);
    const grid = [Math.ceil(N / bn), Math.ceil(M / bm), 1] as const;
    const amax = recordAmax(rt, aBuf, bBuf);
    const overrides = { ...coopConstants(tile, subgroup), TRANS_A: 1, TRANS_B: 1, SCALE_A: 1, SCALE_B: 1 };
    const unbatched = { bshape: [1, 1, 1, 1], astride: [0, 0, 0, 0], bstride: [0, 0, 0, 0] };
    const params = { M, N, K, batch0: 0, alpha: 0.5, nbatch: 1, kchunk: K, ...unbatched };
    const bindings = { aS: aBuf, aV: spareRead, bS: bBuf, bV: spareRead, bias: spareRead, c: cBuf, resid: spareRead };
    rt.run(MATMUL_COOP, params, { ...bindings, pre: spareWrite, amax }, grid, overrides);
    amax.release();
    const [raw] = await rt.read([{ storage: cBuf, bytes: M * N * 4 }]);
    const got = new Float32Array(raw);
    const want = mixedReference(a, b, M, N, K, { transA: true, transB: true, alpha: 0.5, scaleA: true, scaleB: true });
    const worst = maxError(got, want);
    verdicts.set(
      rt,
      worst <= 1e-4
        ? true
        : `its start-up check gave wrong results (error ${worst.toExponential(2)} of the largest value)`,
    );
  } catch (e) {
    verdicts.set(rt, `the cooperative-matrix kernel failed its start-up check (${(e as Error).message})`);
  } finally {
    for (const s of [aBuf, bBuf, cBuf, spareRead, spareWrite]) s.release();
  }
  if (getMatmulPrecision() === "mixed" && verdicts.get(rt) !== true) coopSubgroup(rt);
}
