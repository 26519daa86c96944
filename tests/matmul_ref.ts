/** Float64 references shared by the matmul tests: products, linear layers and their fused epilogues. */
import type { LinearActivation } from "../engine/ops/matmul.ts";

const numel = (s: readonly number[]) => s.reduce((x, y) => x * y, 1);

/** Batched, broadcasting, optionally transposed float64 matrix product. */
export function refMatmul(
  a: Float64Array,
  as: number[],
  b: Float64Array,
  bs: number[],
  tA = false,
  tB = false,
  alpha = 1,
): Float64Array {
  const [ar, ac] = as.slice(-2), [br, bc] = bs.slice(-2);
  const [M, K] = tA ? [ac, ar] : [ar, ac];
  const N = tB ? br : bc;
  const ab = as.slice(0, -2), bb = bs.slice(0, -2);
  const nd = Math.max(ab.length, bb.length);
  const pa = [...new Array(nd - ab.length).fill(1), ...ab], pb = [...new Array(nd - bb.length).fill(1), ...bb];
  const batch = pa.map((d, i) => Math.max(d, pb[i]));
  const out = new Float64Array(numel(batch) * M * N);
  for (let z = 0; z < numel(batch); z++) {
    let rem = z, ia = 0, ib = 0, sa = 1, sb = 1;
    for (let d = nd - 1; d >= 0; d--) {
      const c = rem % batch[d];
      rem = Math.floor(rem / batch[d]);
      ia += (pa[d] === 1 ? 0 : c) * sa;
      ib += (pb[d] === 1 ? 0 : c) * sb;
      sa *= pa[d];
      sb *= pb[d];
    }
    const oa = ia * M * K, ob = ib * K * N;
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = 0;
        for (let k = 0; k < K; k++) {
          s += a[oa + (tA ? k * M + m : m * K + k)] * b[ob + (tB ? n * K + k : k * N + n)];
        }
        out[(z * M + m) * N + n] = alpha * s;
      }
    }
  }
  return out;
}

/** x·W (+ b) in float64; W is [in, out], or [out, in] when `outIn`. */
export function refLinear(
  x: Float64Array,
  inF: number,
  w: Float64Array,
  outF: number,
  outIn: boolean,
  bias?: Float64Array,
): Float64Array {
  const rows = x.length / inF;
  const y = refMatmul(x, [rows, inF], w, outIn ? [outF, inF] : [inF, outF], false, outIn);
  if (bias) { for (let i = 0; i < y.length; i++) y[i] += bias[i % outF]; }
  return y;
}

/** float64 erf: its Maclaurin series (|x| ≤ 4, ample precision in float64), ±1 beyond. */
function erf64(x: number): number {
  if (Math.abs(x) > 4) return Math.sign(x);
  let term = x, sum = x;
  for (let n = 1; n < 100; n++) {
    term *= -x * x / n;
    sum += term / (2 * n + 1);
  }
  return (2 / Math.sqrt(Math.PI)) * sum;
}

/** The activations of `linear`, in float64. */
export const ACT64: Record<LinearActivation, (v: number) => number> = {
  gelu: (v) => 0.5 * v * (1 + erf64(v / Math.SQRT2)),
  gelu_new: (v) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3))),
  relu: (v) => Math.max(v, 0),
};

/**
 * act(x·W + b) + residual in float64, for d = [x, W, b?, residual?]; the residual is added when `withResidual`
 * (by default when d holds one).
 */
export function refEpilogue(
  d: Float64Array[],
  inF: number,
  outF: number,
  outIn: boolean,
  act?: LinearActivation,
  withResidual = d[3] !== undefined,
): Float64Array {
  const y = refLinear(d[0], inF, d[1], outF, outIn, d[2]);
  for (let i = 0; i < y.length; i++) y[i] = (act ? ACT64[act](y[i]) : y[i]) + (withResidual ? d[3][i] : 0);
  return y;
}
