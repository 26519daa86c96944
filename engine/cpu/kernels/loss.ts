/**
 * CPU kernels of the loss family (`engine/kernels/loss.ts`): the row-wise log-softmax consumers of
 * `cross_entropy.wgsl` (log-prob of a target, cross-entropy with an ignore index, entropy; their reduction and
 * gradient), PPO's fused loss and its gradient (`ppo_loss.wgsl`) and the full-distribution KL (`ppo_kl.wgsl`).
 *
 * Arithmetic is rounded to float32 after every operation, and each workgroup reduction keeps the shader's order
 * (strided per-thread partials, then the halving tree), so only `exp`/`log` may differ in the last bits.
 * @module
 */

import * as K from "../../kernels/loss.ts";
import { defineCpuKernel } from "../kernel_table.ts";
import { covered, f, fexp, flog, fmax, strided, treeReduce, vaccumulate, vadd } from "../workgroup.ts";

const LOWEST = -3.4028234663852886e38;
const MODE = { logProb: 0, crossEntropy: 1, entropy: 2 } as const;

// ---------------------------------------------------------------- cross_entropy.wgsl

/**
 * The row's (max, Σexp(x − max), Σexp(x − max)·(x − max)) in float64, in two passes. The shader forms them online
 * in float32 per thread and merges the threads' pairs; the results agree to float32 rounding (a few ulps of a sum of
 * positive terms), well inside the kernel's tolerance, at a fraction of the cost of replaying the thread order.
 */
function rowStats(x: Float32Array, base: number, n: number, _wg: number, entropy: boolean): number[] {
  let m = LOWEST;
  for (let k = 0; k < n; k++) if (!(x[base + k] <= m)) m = x[base + k];
  let sum = 0, u = 0;
  for (let k = 0; k < n; k++) {
    const d = x[base + k] - m, e = Math.exp(d);
    sum += e;
    if (entropy && e !== 0) u += e * d;
  }
  return [m, f(sum), f(u)];
}

defineCpuKernel(K.CROSS_ENTROPY, ({ params: p, bindings: b, overrides: o }) => {
  const mode = o.MODE ?? 0, wg = o.WG ?? 256, x = b.x.f32, t = b.t.i32;
  const out = b.out, lse = b.lse.f32;
  for (let row = 0; row < p.rows; row++) {
    const base = row * p.n;
    const [m, rs, u] = rowStats(x, base, p.n, wg, mode === MODE.entropy);
    const l = f(m + flog(rs));
    lse[row] = l;
    if (mode === MODE.entropy) {
      out.f32[row] = f(flog(rs) - f(u / rs));
      continue;
    }
    const tid = t[row];
    if (mode === MODE.crossEntropy && tid === p.ignore) out.f32[row] = 0;
    else if (tid < 0 || tid >= p.n) out.u32[row] = p.nan_bits;
    else if (mode === MODE.crossEntropy) out.f32[row] = f(l - x[base + tid]);
    else out.f32[row] = f(x[base + tid] - l);
  }
});

defineCpuKernel(K.CROSS_ENTROPY_REDUCE, ({ params: p, bindings: b, overrides: o }) => {
  const wg = o.WG ?? 256, x = b.x.f32, t = b.t.i32;
  const partial = (l: number) =>
    strided(l, p.rows, wg, [0, 0], ([acc, cnt], r) => [f(acc + x[r]), f(cnt + (t[r] === p.ignore ? 0 : 1))]);
  const [sum, c] = treeReduce(wg, partial, vadd);
  let res = sum;
  if (p.mean === 1) res = c === 0 ? 0 : f(res / c);
  b.out.f32[0] = res;
  b.lse.f32[0] = c;
});

/** d loss / d logit `c` of a row with the in-range target `tid` (modes 0 and 1), times `scale`. */
function targetGrad(mode: number, tid: number, c: number, prob: number, scale: number): number {
  const hot = tid === c ? 1 : 0;
  return mode === MODE.crossEntropy ? f(scale * f(prob - hot)) : f(scale * f(hot - prob));
}

defineCpuKernel(K.CROSS_ENTROPY_GRAD, ({ params: p, bindings: b, overrides: o, grid }) => {
  const mode = o.MODE ?? 0, x = b.x.f32, t = b.t.i32, lse = b.lse.f32, g = b.g.f32, extra = b.extra.f32;
  const out = b.out;
  for (let i = 0; i < covered(p.total, grid); i++) {
    const row = Math.floor(i / p.n), c = i - row * p.n, v = x[i];
    const prob = fexp(f(v - lse[row]));
    const gr = p.gscalar === 1 ? g[0] : g[row];
    if (mode === MODE.entropy) {
      out.f32[i] = f(f(-gr * prob) * f(f(v - lse[row]) + extra[row]));
      continue;
    }
    const tid = t[row];
    if (mode === MODE.crossEntropy && tid === p.ignore) out.f32[i] = 0;
    else if (tid < 0 || tid >= p.n) out.u32[i] = p.nan_bits;
    else {
      const mean = mode === MODE.crossEntropy && p.mean === 1;
      out.f32[i] = targetGrad(mode, tid, c, prob, mean ? f(gr / fmax(extra[0], 1)) : gr);
    }
  }
});

// ---------------------------------------------------------------- ppo_loss.wgsl

const PPO_WG = 128;

/** The rollout columns of `packed` [6, n] at token i. */
function rollout(packed: Float32Array, n: number, i: number) {
  return {
    old: packed[i],
    ov: packed[n + i],
    A: packed[2 * n + i],
    R: packed[3 * n + i],
    w: packed[4 * n + i],
    ent: packed[5 * n + i],
  };
}

type PpoParams = { n: number; has_entropy: number; cliprange: number; cliprange_value: number };

/** Adds token i's weighted terms to one thread's 16 sums (the columns a, b, c, d of the shader's matrix). */
function ppoTerms(acc: number[], p: PpoParams, lp: Float32Array, vp: Float32Array, pk: Float32Array, i: number) {
  const { old, ov, A, R, w, ent } = rollout(pk, p.n, i);
  if (w === 0) return acc;
  const dl = f(lp[i] - old), r = fexp(dl);
  const lo = f(1 - p.cliprange), hi = f(1 + p.cliprange);
  const pg1 = f(-A * r), pg2 = f(-A * Math.min(Math.max(r, lo), hi));
  const v = vp[i], vf1 = f(f(v - R) * f(v - R));
  const vclip = fmax(Math.min(v, f(ov + p.cliprange_value)), f(ov - p.cliprange_value));
  const vc = f(vclip - R), vf2 = f(vc * vc);
  const terms = [1, fmax(pg1, pg2), fmax(vf1, vf2), f(dl * dl)];
  terms.push(-dl, pg2 > pg1 ? 1 : 0, vf2 > vf1 ? 1 : 0, v, R, vf1, ov, A, r, p.has_entropy !== 0 ? ent : 0, 0, 0);
  vaccumulate(acc, w, terms);
  return acc;
}

defineCpuKernel(K.PPO_LOSS, ({ params: p, bindings: b }) => {
  const lp = b.lp.f32, vp = b.vp.f32, pk = b.packed.f32, n = p.n;
  const sums = treeReduce(PPO_WG, (l) =>
    strided(l, n, PPO_WG, new Array(16).fill(0), (acc, i) => {
      return ppoTerms(acc, p, lp, vp, pk, i);
    }), vadd);
  const [sa, sb, sc, sd] = [0, 4, 8, 12].map((k) => sums.slice(k, k + 4));
  const cnt = sa[0], retMean = f(sc[0] / cnt), valMean = f(sc[2] / cnt);
  const [varR, varV] = treeReduce(PPO_WG, (l) =>
    strided(l, n, PPO_WG, [0, 0], (acc, i) => {
      const { ov, R, w } = rollout(pk, n, i);
      if (w === 0) return acc;
      const dr = f(R - retMean), dv = f(ov - valMean);
      vaccumulate(acc, w, [f(dr * dr), f(dv * dv)]);
      return acc;
    }), vadd);
  const bessel = f(cnt / f(cnt - 1)), ratioMean = f(sd[0] / cnt);
  const keep = ratioMean > p.ratio_threshold ? 0 : 1;
  const pgLoss = f(f(sa[1] / cnt) * keep), vfLoss = f(f(f(0.5 * sa[2]) / cnt) * keep);
  const loss = f(pgLoss + f(p.vf_coef * vfLoss));
  b.scalar.f32[0] = loss;
  const mean = (s: number) => f(s / cnt);
  const stats = [pgLoss, vfLoss, loss, f(f(0.5 * sa[3]) / cnt), mean(sb[0]), mean(sb[1]), mean(sb[2]), mean(sb[3])];
  stats.push(retMean, f(mean(varR) * bessel), mean(sc[1]), valMean, f(mean(varV) * bessel), mean(sc[3]));
  stats.push(ratioMean, 1 - keep, mean(sd[1]), cnt, 0, 0);
  b.stats.f32.set(stats);
});

/** PyTorch's gradient weights of max(x, y) w.r.t. (x, y): ties split in halves. */
function maxWeights(x: number, y: number): [number, number] {
  if (x > y) return [1, 0];
  if (x < y) return [0, 1];
  return [0.5, 0.5];
}

/** d vf / d v (before the vf_coef · 0.5 factor) of the clipped value loss at token i. */
function valueGrad(v: number, R: number, ov: number, cv: number): number {
  const vhi = f(ov + cv), vlo = f(ov - cv);
  const m = Math.min(v, vhi);
  const dmin = v < vhi ? 1 : v === vhi ? 0.5 : 0;
  const dmax = m > vlo ? 1 : m === vlo ? 0.5 : 0;
  const vc = fmax(m, vlo);
  const [w1, w2] = maxWeights(f(f(v - R) * f(v - R)), f(f(vc - R) * f(vc - R)));
  return f(f(f(w1 * 2) * f(v - R)) + f(f(f(f(w2 * 2) * f(vc - R)) * dmin) * dmax));
}

defineCpuKernel(K.PPO_LOSS_GRAD, ({ params: p, bindings: b, grid }) => {
  const lp = b.lp.f32, vp = b.vp.f32, pk = b.packed.f32, stats = b.stats.f32, dlp = b.dlp.f32, dvp = b.dvp.f32;
  const lo = f(1 - p.cliprange), hi = f(1 + p.cliprange);
  for (let i = 0; i < covered(p.n, grid); i++) {
    const { old, ov, A, R, w } = rollout(pk, p.n, i);
    if (w === 0) {
      dlp[i] = 0;
      dvp[i] = 0;
      continue;
    }
    const s = f(f(f(b.scalar.f32[0] * f(1 - stats[15])) * w) / stats[17]);
    const r = fexp(f(lp[i] - old));
    const [w1, w2] = maxWeights(f(-A * r), f(-A * Math.min(Math.max(r, lo), hi)));
    const dclamp = r >= lo && r <= hi ? 1 : 0;
    dlp[i] = f(f(f(s * f(w1 + f(w2 * dclamp))) * -A) * r);
    dvp[i] = f(f(f(s * p.vf_coef) * 0.5) * valueGrad(vp[i], R, ov, p.cliprange_value));
  }
});

// ---------------------------------------------------------------- ppo_kl.wgsl

defineCpuKernel(K.PPO_KL, ({ params: p, bindings: b }) => {
  const x = b.x.f32, y = b.y.f32, wg = 256, n = p.n, s = p.inv_temp;
  for (let row = 0; row < p.rows; row++) {
    const base = row * n;
    const [mx, my] = treeReduce(wg, (l) =>
      strided(l, n, wg, [LOWEST, LOWEST], ([a, c], k) => {
        return [fmax(a, f(x[base + k] * s)), fmax(c, f(y[base + k] * s))];
      }), ([a1, c1], [a2, c2]) => [fmax(a1, a2), fmax(c1, c2)]);
    const [sx, sy, sxy] = treeReduce(wg, (l) =>
      strided(l, n, wg, [0, 0, 0], ([ax, ay, axy], k) => {
        const a = f(x[base + k] * s), c = f(y[base + k] * s), ea = fexp(f(a - mx));
        return [f(ax + ea), f(ay + fexp(f(c - my))), f(axy + f(ea * f(a - c)))];
      }), vadd);
    b.kl.f32[row] = f(f(f(sxy / sx) - f(mx + flog(sx))) + f(my + flog(sy)));
  }
});
