/**
 * CPU kernels of the reduction family (`engine/kernels/reduce.ts`): sums and maxima along one axis of a tensor seen
 * as `[outer, n, inner]` and their backward (`reduce.wgsl`), softmax and log-softmax with their backward
 * (`softmax.wgsl`), layer normalisation (`layer_norm.wgsl`) and the non-finite count (`tensor_scan.wgsl`).
 *
 * Float arithmetic is rounded to float32 after every operation, and sums follow the shaders' order: where a
 * workgroup of `WG` threads shares a row, each thread's strided partial is formed first and the partials are then
 * combined by the same halving tree as `workgroup_reduce.wgsl` / `softmax_common.wgsl` (a fixed summation order,
 * not a thread emulation), so sums match bit for bit and only `exp`/`log` may differ in the last bits.
 * @module
 */

import * as MATMUL_KERNELS from "../../kernels/matmul.ts";
import * as K from "../../kernels/reduce.ts";
import { defineCpuKernel } from "../kernel_table.ts";
import { f, treeReduce } from "../workgroup.ts";

const LOWEST = -3.4028234663852886e38;
const NONE = 0xffffffff;

/** Float32 sum of `term(k)` for k = start, start + step, … < end (one thread's strided loop). */
function stridedSum(start: number, end: number, step: number, term: (k: number) => number): number {
  let acc = 0;
  for (let k = start; k < end; k += step) acc = f(acc + term(k));
  return acc;
}

/** The row sum of `term(k)`, k < n, as a workgroup of `wg` threads forms it (strided partials, then the tree). */
function rowSum(wg: number, n: number, term: (k: number) => number): number {
  // Float32Array stores round to float32: the same additions, in the same order, as the shader's threads and tree.
  const red = ROW_SCRATCH.length >= wg ? ROW_SCRATCH : new Float32Array(wg);
  for (let l = 0; l < wg; l++) red[l] = stridedSum(l, n, wg, term);
  for (let s = wg >> 1; s > 0; s >>= 1) {
    for (let l = 0; l < s; l++) red[l] = red[l] + red[l + s];
  }
  return red[0];
}
const ROW_SCRATCH = new Float32Array(256);

const fAdd = (a: number, b: number) => f(a + b);

// ---------------------------------------------------------------- reduce.wgsl

defineCpuKernel(K.SUM_ROWS, ({ params: p, bindings: b, overrides: o }) => {
  const wg = o.WG ?? 256, x = b.x.f32, y = b.y.f32;
  for (let row = 0; row < p.outer; row++) {
    const base = row * p.n;
    y[row] = f(rowSum(wg, p.n, (k) => x[base + k]) * p.scale);
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

/** A running (max m, Σ exp(x − m)) pair. */
type Online = { m: number; s: number };

/** softmax_common's online_add. */
function onlineAdd(ms: Online, v: number): Online {
  if (v > ms.m) return { m: v, s: f(f(ms.s * f(Math.exp(f(ms.m - v)))) + 1) };
  return { m: ms.m, s: f(ms.s + f(Math.exp(f(v - ms.m)))) };
}

/** softmax_common's merge of two pairs in row_stats. */
function onlineMerge(a: Online, b: Online): Online {
  const mm = Math.max(a.m, b.m);
  return { m: mm, s: f(f(a.s * f(Math.exp(f(a.m - mm)))) + f(b.s * f(Math.exp(f(b.m - mm))))) };
}

defineCpuKernel(K.SOFTMAX, ({ params: p, bindings: b, overrides: o }) => {
  const wg = o.WG ?? 256, log = (o.LOG ?? 0) !== 0, x = b.x.f32, y = b.y.f32;
  for (let row = 0; row < p.rows; row++) {
    const base = row * p.n;
    const partial = (l: number) => {
      let ms: Online = { m: LOWEST, s: 0 };
      for (let k = l; k < p.n; k += wg) ms = onlineAdd(ms, x[base + k]);
      return ms;
    };
    const { m, s } = treeReduce(wg, partial, onlineMerge);
    const lse = f(m + f(Math.log(s))), inv = f(1 / s);
    for (let k = 0; k < p.n; k++) {
      y[base + k] = log ? f(x[base + k] - lse) : f(f(Math.exp(f(x[base + k] - m))) * inv);
    }
  }
});

defineCpuKernel(K.SOFTMAX_GRAD, ({ params: p, bindings: b, overrides: o }) => {
  const wg = o.WG ?? 256, log = (o.LOG ?? 0) !== 0, yv = b.x.f32, dx = b.y.f32, g = b.g.f32;
  for (let row = 0; row < p.rows; row++) {
    const base = row * p.n;
    const tot = rowSum(wg, p.n, (k) => log ? g[base + k] : f(g[base + k] * yv[base + k]));
    for (let k = base; k < base + p.n; k++) {
      dx[k] = log ? f(g[k] - f(f(Math.exp(yv[k])) * tot)) : f(yv[k] * f(g[k] - tot));
    }
  }
});

// ---------------------------------------------------------------- layer_norm.wgsl

defineCpuKernel(K.LAYER_NORM, ({ params: p, bindings: b, overrides: o }) => {
  const wg = o.WG ?? 256, x = b.x.f32, w = b.w.f32, bias = b.bias.f32, y = b.y.f32, C = p.C;
  for (let row = 0; row < p.rows; row++) {
    const base = row * C;
    const mean = f(rowSum(wg, C, (c) => x[base + c]) / C);
    const variance = rowSum(wg, C, (c) => {
      const d = f(x[base + c] - mean);
      return f(d * d);
    });
    const rstd = f(1 / Math.sqrt(f(f(variance / C) + p.eps)));
    for (let c = 0; c < C; c++) y[base + c] = f(f(f(f(x[base + c] - mean) * rstd) * w[c]) + bias[c]);
    b.stats.f32[2 * row] = mean;
    b.stats.f32[2 * row + 1] = rstd;
  }
});

defineCpuKernel(K.LAYER_NORM_GRAD_X, ({ params: p, bindings: b, overrides: o }) => {
  const wg = o.WG ?? 256, x = b.x.f32, w = b.w.f32, gy = b.gy.f32, dx = b.dx.f32, C = p.C;
  for (let row = 0; row < p.rows; row++) {
    const base = row * C, mean = b.st.f32[2 * row], rstd = b.st.f32[2 * row + 1];
    const xh = (c: number) => f(f(x[base + c] - mean) * rstd);
    const partial = (l: number) => {
      let sg = 0, sgx = 0;
      for (let c = l; c < C; c += wg) {
        const gh = f(gy[base + c] * w[c]);
        sg = f(sg + gh);
        sgx = f(sgx + f(f(gh * f(x[base + c] - mean)) * rstd));
      }
      return [sg, sgx];
    };
    const [sg, sgx] = treeReduce(wg, partial, (a, c) => [f(a[0] + c[0]), f(a[1] + c[1])]);
    const mg = f(sg / C), mgx = f(sgx / C);
    for (let c = 0; c < C; c++) dx[base + c] = f(rstd * f(f(f(gy[base + c] * w[c]) - mg) - f(xh(c) * mgx)));
  }
});

defineCpuKernel(K.LAYER_NORM_GRAD_WB, ({ params: p, bindings: b, grid }) => {
  const x = b.x.f32, g = b.g2.f32, st = b.st2.f32, C = p.C;
  for (let chunk = 0; chunk < grid[1]; chunk++) {
    const r0 = chunk * p.chunk, r1 = Math.min(p.rows, r0 + p.chunk);
    for (let c = 0; c < C; c++) {
      let sw = 0, sb = 0;
      for (let r = r0; r < r1; r++) {
        const gv = g[r * C + c];
        sw = f(sw + f(f(gv * f(x[r * C + c] - st[2 * r])) * st[2 * r + 1]));
        sb = f(sb + gv);
      }
      b.dw.f32[chunk * C + c] = sw;
      b.db.f32[chunk * C + c] = sb;
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
