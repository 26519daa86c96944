/** Float64 reference of batched, broadcasting, optionally transposed matrix products, shared by the matmul tests. */

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
