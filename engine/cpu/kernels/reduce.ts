/**
 * CPU kernels of the reduction family (`engine/kernels/reduce.ts`): sums and maxima along one axis of a tensor seen
 * as `[outer, n, inner]` and their backward (`reduce.wgsl`), softmax and log-softmax with their backward
 * (`softmax.wgsl`), layer normalisation (`layer_norm.wgsl`) and the non-finite count (`tensor_scan.wgsl`).
 *
 * Row kernels (sums, softmax, layer norm and their backward) are plain loops accumulating in float64 and storing
 * float32: more accurate than the shaders' float32 workgroup trees, which differ from them only by rounding. The
 * partial-sum kernels that feed other kernels (`SUM_PARTIAL`, `SUM_COLS*`, the layer-norm chunk sums) keep the
 * shaders' order in float32, and max/arg-max selections are exact.
 * @module
 */

import * as MATMUL_KERNELS from "../../kernels/matmul.ts";
import * as K from "../../kernels/reduce.ts";
import { defineCpuKernel } from "../kernel_table.ts";
import { f, treeReduce } from "../workgroup.ts";
import { fastExp } from "../fastmath.ts";

const LOWEST = -3.4028234663852886e38;
const NONE = 0xffffffff;

/** Float32 sum of `term(k)` for k = start, start + step, … < end (one thread's strided loop). */
function stridedSum(start: number, end: number, step: number, term: (k: number) => number): number {
  let acc = 0;
  for (let k = start; k < end; k += step) acc = f(acc + term(k));
  return acc;
}

const fAdd = (a: number, b: number) => f(a + b);

// ---------------------------------------------------------------- reduce.wgsl

defineCpuKernel(K.SUM_ROWS, ({ params: p, bindings: b }) => {
  const x = b.x.f32, y = b.y.f32, n = p.n;
  for (let row = 0; row < p.outer; row++) {
    let acc = 0;
    for (let k = row * n, end = k + n; k < end; k++) acc += x[k];
    y[row] = acc * p.scale;
  }
});

defineCpuKernel(K.SUM_PARTIAL, ({ params: p, bindings: b, grid }) => {
  const wg = 256, x = b.x.f32, y = b.y.f32;
  for (let row = 0; row < grid[1]; row++) {
    const base = row * p.n;
    for (let g = 0; g < grid[0]; g++) {
      const partial = (l: number) => stridedSum(g * wg + l, p.n, p.groups * wg, (k) => x[base + k]);
      y[row * p.groups + g] = treeReduce(wg, partial, fAdd);
    }
  }
});

defineCpuKernel(K.SUM_COLS_SPLIT, ({ params: p, bindings: b }) => {
  const x = b.x.f32, y = b.y.f32, chunks = Math.ceil(p.n / p.groups);
  for (let j = 0; j < p.outer * chunks * p.inner; j++) {
    const i = j % p.inner, c = Math.floor(j / p.inner) % chunks, o = Math.floor(j / (p.inner * chunks));
    const k0 = c * p.groups, k1 = Math.min(p.n, k0 + p.groups);
    const base = (o * p.n) * p.inner + i;
    y[j] = stridedSum(k0, k1, 1, (k) => x[base + k * p.inner]);
  }
});

// One thread per output sums its column in order; here the columns of a row advance together (the same float32
// additions in the same order per column, as a Float32Array rounds every store).
defineCpuKernel(K.SUM_COLS, ({ params: p, bindings: b }) => {
  const x = b.x.f32, y = b.y.f32, inner = p.inner, acc = new Float32Array(inner);
  for (let o = 0; o < p.outer; o++) {
    acc.fill(0);
    const base = o * p.n * inner;
    for (let k = 0; k < p.n; k++) {
      const row = base + k * inner;
      for (let i = 0; i < inner; i++) acc[i] += x[row + i];
    }
    for (let i = 0; i < inner; i++) y[o * inner + i] = f(acc[i] * p.scale);
  }
});

defineCpuKernel(K.EXPAND_GRAD, ({ params: p, bindings: b }) => {
  const g = b.x.f32, dx = b.y.f32;
  for (let idx = 0; idx < p.total; idx++) {
    const o = Math.floor(idx / (p.n * p.inner));
    dx[idx] = f(g[o * p.inner + idx % p.inner] * p.scale);
  }
}, { exact: true }); // one correctly rounded product per element

/** A (value, index) candidate of max_rows; index NONE when the thread saw no element. */
type Candidate = { v: number; k: number };

/** max_rows' merge: take `b` when valid and larger, or equal with a lower index. */
function takeMax(a: Candidate, b: Candidate): Candidate {
  return b.k !== NONE && (a.k === NONE || b.v > a.v || (b.v === a.v && b.k < a.k)) ? b : a;
}

defineCpuKernel(K.MAX_ROWS, ({ params: p, bindings: b, overrides: o }) => {
  const wg = o.WG ?? 256, x = b.x.f32;
  for (let row = 0; row < p.outer; row++) {
    const base = row * p.n;
    const partial = (l: number): Candidate => {
      let best: Candidate = { v: LOWEST, k: NONE };
      for (let k = l; k < p.n; k += wg) {
        if (x[base + k] > best.v || best.k === NONE) best = { v: x[base + k], k };
      }
      return best;
    };
    const top = treeReduce(wg, partial, takeMax);
    b.y.f32[row] = top.v;
    b.yi.i32[row] = top.k | 0;
  }
}, { exact: true }); // a selected input word and an index

defineCpuKernel(K.MAX_COLS, ({ params: p, bindings: b }) => {
  const x = b.x.f32;
  for (let j = 0; j < p.outer * p.inner; j++) {
    const o = Math.floor(j / p.inner), base = o * p.n * p.inner + (j - o * p.inner);
    let best = x[base], bi = 0;
    for (let k = 1; k < p.n; k++) {
      if (x[base + k * p.inner] > best) [best, bi] = [x[base + k * p.inner], k];
    }
    b.y.f32[j] = best;
    b.yi.i32[j] = bi;
  }
}, { exact: true });

defineCpuKernel(K.MAX_GRAD, ({ params: p, bindings: b }) => {
  const g = b.x.f32, dx = b.y.f32, yi = b.yi.u32;
  for (let idx = 0; idx < p.total; idx++) {
    const o = Math.floor(idx / (p.n * p.inner)), i = idx % p.inner, k = Math.floor(idx / p.inner) % p.n;
    const j = o * p.inner + i;
    dx[idx] = yi[j] === k ? g[j] : 0;
  }
}, { exact: true });

// ---------------------------------------------------------------- softmax.wgsl

defineCpuKernel(K.SOFTMAX, ({ params: p, bindings: b, overrides: o }) => {
  const log = (o.LOG ?? 0) !== 0, x = b.x.f32, y = b.y.f32, n = p.n;
  for (let base = 0; base < p.rows * n; base += n) {
    const end = base + n;
    let m = LOWEST, sum = 0;
    for (let k = base; k < end; k++) if (x[k] > m) m = x[k];
    for (let k = base; k < end; k++) sum += fastExp(x[k] - m);
    if (log) {
      const lse = m + Math.log(sum);
      for (let k = base; k < end; k++) y[k] = x[k] - lse;
    } else {
      const inv = 1 / sum;
      for (let k = base; k < end; k++) y[k] = fastExp(x[k] - m) * inv;
    }
  }
});

defineCpuKernel(K.SOFTMAX_GRAD, ({ params: p, bindings: b, overrides: o }) => {
  const log = (o.LOG ?? 0) !== 0, yv = b.x.f32, dx = b.y.f32, g = b.g.f32, n = p.n;
  for (let base = 0; base < p.rows * n; base += n) {
    const end = base + n;
    let tot = 0;
    if (log) { for (let k = base; k < end; k++) tot += g[k]; }
    else for (let k = base; k < end; k++) tot += g[k] * yv[k];
    if (log) { for (let k = base; k < end; k++) dx[k] = g[k] - fastExp(yv[k]) * tot; }
    else for (let k = base; k < end; k++) dx[k] = yv[k] * (g[k] - tot);
  }
});

// ---------------------------------------------------------------- layer_norm.wgsl

defineCpuKernel(K.LAYER_NORM, ({ params: p, bindings: b }) => {
  const x = b.x.f32, w = b.w.f32, bias = b.bias.f32, y = b.y.f32, st = b.stats.f32, C = p.C;
  for (let row = 0; row < p.rows; row++) {
    const base = row * C;
    let sum = 0;
    for (let c = 0; c < C; c++) sum += x[base + c];
    const mean = Math.fround(sum / C);
    let sq = 0;
    for (let c = 0; c < C; c++) {
      const d = x[base + c] - mean;
      sq += d * d;
    }
    const rstd = Math.fround(1 / Math.sqrt(sq / C + p.eps));
    for (let c = 0; c < C; c++) y[base + c] = (x[base + c] - mean) * rstd * w[c] + bias[c];
    st[2 * row] = mean;
    st[2 * row + 1] = rstd;
  }
});

defineCpuKernel(K.LAYER_NORM_GRAD_X, ({ params: p, bindings: b }) => {
  const x = b.x.f32, w = b.w.f32, gy = b.gy.f32, dx = b.dx.f32, st = b.st.f32, C = p.C;
  for (let row = 0; row < p.rows; row++) {
    const base = row * C, mean = st[2 * row], rstd = st[2 * row + 1];
    let sg = 0, sgx = 0;
    for (let c = 0; c < C; c++) {
      const gh = gy[base + c] * w[c];
      sg += gh;
      sgx += gh * (x[base + c] - mean);
    }
    const mg = sg / C, mgx = sgx * rstd / C;
    for (let c = 0; c < C; c++) {
      dx[base + c] = rstd * (gy[base + c] * w[c] - mg - (x[base + c] - mean) * rstd * mgx);
    }
  }
});

defineCpuKernel(K.LAYER_NORM_GRAD_WB, ({ params: p, bindings: b, grid }) => {
  const x = b.x.f32, g = b.g2.f32, st = b.st2.f32, C = p.C, sw = new Float64Array(C), sb = new Float64Array(C);
  for (let chunk = 0; chunk < grid[1]; chunk++) {
    const r0 = chunk * p.chunk, r1 = Math.min(p.rows, r0 + p.chunk);
    sw.fill(0);
    sb.fill(0);
    for (let r = r0; r < r1; r++) {
      const base = r * C, mean = st[2 * r], rstd = st[2 * r + 1];
      for (let c = 0; c < C; c++) {
        const gv = g[base + c];
        sw[c] += gv * (x[base + c] - mean) * rstd;
        sb[c] += gv;
      }
    }
    for (let c = 0; c < C; c++) {
      b.dw.f32[chunk * C + c] = sw[c];
      b.db.f32[chunk * C + c] = sb[c];
    }
  }
});

defineCpuKernel(K.LAYER_NORM_SUM_CHUNKS, ({ params: p, bindings: b }) => {
  const part = b.part.f32;
  for (let c = 0; c < p.C; c++) b.total.f32[c] = stridedSum(0, p.nchunks, 1, (k) => part[k * p.C + c]);
});

// ---------------------------------------------------------------- tensor_scan.wgsl

defineCpuKernel(K.COUNT_NONFINITE, ({ params: p, bindings: b }) => {
  const x = b.x.u32;
  let count = 0;
  for (let i = 0; i < p.n; i++) if ((x[i] & 0x7f800000) === 0x7f800000) count++;
  b.out.u32[p.slot] = (b.out.u32[p.slot] + count) >>> 0;
}, { exact: true });

// The largest |x| as the atomic max of the bit patterns with the sign cleared (a NaN's bits exceed any number's).
defineCpuKernel(MATMUL_KERNELS.OPERAND_AMAX, ({ params: p, bindings: b }) => {
  let m = 0;
  for (let i = 0; i < p.n; i++) m = Math.max(m, b.x.u32[i] & 0x7fffffff);
  b.out.u32[p.slot] = Math.max(b.out.u32[p.slot], m);
}, { exact: true });
