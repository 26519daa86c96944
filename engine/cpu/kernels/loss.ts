/**
 * CPU kernels of the loss family (`engine/kernels/loss.ts`): the row-wise log-softmax consumers of
 * `cross_entropy.wgsl` (log-prob of a target, cross-entropy with an ignore index, entropy; their reduction and
 * gradient), PPO's fused loss and its gradient (`ppo_loss.wgsl`) and the full-distribution KL (`ppo_kl.wgsl`).
 *
 * The log-softmax's vocabulary-wide exponential sums and scaled exponentials (cross-entropy, log-probs, entropy and
 * their gradients) run four float32 lanes at a time in `../simd.ts` (sums in float32 blocks of 1,024 added in
 * float64); the rest, and rows holding a NaN or where WebAssembly SIMD is missing, are plain loops in float64 stored
 * as float32, summing in index order with {@linkcode fastExp}. Where a result's branch depends on a comparison — the PPO loss's clipping,
 * clip fractions and PyTorch's tie rules — the compared quantities are rounded to float32 as the shader forms them,
 * so ties and clip boundaries fall where the shader's do.
 * @module
 */

import * as K from "../../kernels/loss.ts";
import { defineCpuKernel } from "../kernel_table.ts";
import { fastExp } from "../fastmath.ts";
import { expSumsSimd, scaledExpSimd } from "../simd.ts";
import { covered, f, fexp } from "../workgroup.ts";

const LOWEST = -3.4028234663852886e38;
const MODE = { logProb: 0, crossEntropy: 1, entropy: 2 } as const;

// ---------------------------------------------------------------- cross_entropy.wgsl

/**
 * One workgroup per row (the rows the grid reaches): the row's max, then Σexp(x − max) (and for entropy
 * Σexp(x − max)·(x − max)) in float64. lse is stored rounded to float32 and the target's loss is formed from that
 * stored value, as the shader does, so loss and lse agree.
 */
defineCpuKernel(K.CROSS_ENTROPY, ({ params: p, bindings: b, overrides: o, grid }) => {
  const mode = o.MODE ?? 0, n = p.n, x = b.x.f32, t = b.t.i32, out = b.out, lse = b.lse.f32;
  const rows = covered(p.rows, grid, 1);
  for (let row = 0; row < rows; row++) {
    const base = row * n, end = base + n;
    let m = LOWEST, nan = false;
    for (let k = base; k < end; k++) {
      const v = x[k];
      if (v > m) m = v;
      else if (v !== v) nan = true;
    }
    if (nan) m = NaN; // a NaN logit makes the row's sums NaN (the SIMD sums would skip it: their guard falls back)
    let s = 0;
    if (mode === MODE.entropy) {
      const sums = expSumsSimd(x, base, end, -m); // s ≥ 1 (the maximum's term) unless degenerate or no SIMD
      let u = 0;
      if (sums && sums[0] >= 1) [s, u] = sums;
      else {
        for (let k = base; k < end; k++) {
          const d = x[k] - m, e = fastExp(d);
          s += e;
          if (e !== 0) u += e * d; // an element at −∞ adds nothing (0 · −∞ would be NaN)
        }
      }
      const logS = Math.log(s);
      lse[row] = m + logS;
      out.f32[row] = logS - u / s;
      continue;
    }
    s = expSumsSimd(x, base, end, -m)?.[0] ?? NaN; // ≥ 1 (the maximum's term) unless degenerate or no SIMD
    if (!(s >= 1)) {
      s = 0;
      for (let k = base; k < end; k++) s += fastExp(x[k] - m);
    }
    const l = f(m + Math.log(s));
    lse[row] = l;
    const tid = t[row];
    if (mode === MODE.crossEntropy && tid === p.ignore) out.f32[row] = 0;
    else if (tid < 0 || tid >= n) out.u32[row] = p.nan_bits;
    else if (mode === MODE.crossEntropy) out.f32[row] = l - x[base + tid];
    else out.f32[row] = x[base + tid] - l;
  }
});

/** One workgroup: the sum (or mean over the non-ignored targets) of the per-row losses, and that count. */
defineCpuKernel(K.CROSS_ENTROPY_REDUCE, ({ params: p, bindings: b }) => {
  const x = b.x.f32, t = b.t.i32, ignore = p.ignore;
  let sum = 0, count = 0;
  for (let r = 0; r < p.rows; r++) {
    sum += x[r];
    if (t[r] !== ignore) count++;
  }
  b.out.f32[0] = p.mean !== 1 ? sum : count === 0 ? 0 : sum / count;
  b.lse.f32[0] = count;
});

/**
 * d loss / d logits, row by row over the elements the grid reaches: prob = exp(x − lse) times the row's scale, the
 * target's element then corrected by −1 (one-hot); ignored rows are 0, rows with an out-of-range target NaN.
 */
defineCpuKernel(K.CROSS_ENTROPY_GRAD, ({ params: p, bindings: b, overrides: o, grid }) => {
  const mode = o.MODE ?? 0, n = p.n, x = b.x.f32, t = b.t.i32, lse = b.lse.f32, g = b.g.f32, extra = b.extra.f32;
  const out = b.out.f32, end = covered(p.total, grid);
  for (let base = 0, row = 0; base < end; base += n, row++) {
    const stop = Math.min(base + n, end), l = lse[row], gr = p.gscalar === 1 ? g[0] : g[row];
    if (mode === MODE.entropy) {
      // −g · prob · (x − lse + entropy)
      const shift = extra[row] - l;
      if (Number.isFinite(l) && Number.isFinite(shift) && scaledExpSimd(x, out, base, stop, -l, -gr, shift)) continue;
      for (let i = base; i < stop; i++) {
        const v = x[i], e = fastExp(v - l);
        out[i] = e === 0 ? 0 : -gr * e * (v + shift); // a probability of 0 gets no gradient (not 0 · −∞ = NaN)
      }
      continue;
    }
    const tid = t[row];
    if (mode === MODE.crossEntropy && tid === p.ignore) out.fill(0, base, stop);
    else if (tid < 0 || tid >= n) b.out.u32.fill(p.nan_bits, base, stop);
    else {
      // cross-entropy: scale · (prob − onehot); log-prob: g · (onehot − prob) = −g · (prob − onehot)
      const mean = mode === MODE.crossEntropy && p.mean === 1;
      const scale = mode === MODE.crossEntropy ? (mean ? gr / Math.max(extra[0], 1) : gr) : -gr;
      if (!(Number.isFinite(l) && scaledExpSimd(x, out, base, stop, -l, scale))) {
        for (let i = base; i < stop; i++) out[i] = scale * fastExp(x[i] - l);
      }
      const hot = base + tid;
      if (hot < stop) out[hot] = scale * (fastExp(x[hot] - l) - 1);
    }
  }
});

// ---------------------------------------------------------------- ppo_loss.wgsl

/** clamp(r, lo, hi) as WGSL's: min(max(r, lo), hi). */
const clamp = (r: number, lo: number, hi: number) => Math.min(Math.max(r, lo), hi);

/** PyTorch's gradient weight of x in max(x, y): 1 if larger, 0 if smaller, ties split in halves (y gets the rest). */
const maxWeight = (x: number, y: number) => x > y ? 1 : x < y ? 0 : 0.5;

/**
 * One workgroup over the tokens of `packed` [6, n] (old log-probs, old values, advantages, returns, mask, entropy;
 * w = 0 tokens skipped): the weighted sums in float64, then the centred squares for the variances, the scalar loss
 * and the 20 statistics. The ratio and the compared terms are float32 as in the shader.
 */
defineCpuKernel(K.PPO_LOSS, ({ params: p, bindings: b }) => {
  const lp = b.lp.f32, vp = b.vp.f32, pk = b.packed.f32, n = p.n;
  const lo = f(1 - p.cliprange), hi = f(1 + p.cliprange), cv = p.cliprange_value, hasEntropy = p.has_entropy !== 0;
  let cnt = 0, pg = 0, vf = 0, sqDl = 0, negDl = 0, pgClips = 0, vfClips = 0, vSum = 0;
  let rSum = 0, err = 0, ovSum = 0, aSum = 0, ratio = 0, entSum = 0;
  for (let i = 0; i < n; i++) {
    const w = pk[4 * n + i];
    if (w === 0) continue;
    const ov = pk[n + i], A = pk[2 * n + i], R = pk[3 * n + i], v = vp[i];
    const dl = f(lp[i] - pk[i]), r = fexp(dl);
    const pg1 = f(-A * r), pg2 = f(-A * clamp(r, lo, hi));
    const dv = f(v - R), vf1 = f(dv * dv);
    const vc = f(Math.max(Math.min(v, f(ov + cv)), f(ov - cv)) - R), vf2 = f(vc * vc);
    cnt += w;
    pg += w * Math.max(pg1, pg2);
    vf += w * Math.max(vf1, vf2);
    sqDl += w * (dl * dl);
    negDl -= w * dl;
    if (pg2 > pg1) pgClips += w;
    if (vf2 > vf1) vfClips += w;
    vSum += w * v;
    rSum += w * R;
    err += w * vf1;
    ovSum += w * ov;
    aSum += w * A;
    ratio += w * r;
    if (hasEntropy) entSum += w * pk[5 * n + i];
  }
  const retMean = rSum / cnt, valMean = ovSum / cnt;
  let varR = 0, varV = 0;
  for (let i = 0; i < n; i++) {
    const w = pk[4 * n + i];
    if (w === 0) continue;
    const dr = pk[3 * n + i] - retMean, dv = pk[n + i] - valMean;
    varR += w * (dr * dr);
    varV += w * (dv * dv);
  }
  const bessel = cnt / (cnt - 1), ratioMean = f(ratio / cnt);
  const keep = ratioMean > p.ratio_threshold ? 0 : 1;
  const pgLoss = pg / cnt * keep, vfLoss = 0.5 * vf / cnt * keep, loss = pgLoss + p.vf_coef * vfLoss;
  b.scalar.f32[0] = loss;
  b.stats.f32.set([
    pgLoss,
    vfLoss,
    loss,
    0.5 * sqDl / cnt,
    negDl / cnt,
    pgClips / cnt,
    vfClips / cnt,
    vSum / cnt,
    retMean,
    varR / cnt * bessel,
    err / cnt,
    valMean,
    varV / cnt * bessel,
    aSum / cnt,
    ratioMean,
    1 - keep,
    entSum / cnt,
    cnt,
    0,
    0,
  ]);
});

/**
 * d loss / d lp and d loss / d v per token (the tokens the grid reaches), with PyTorch's subgradients: the larger
 * term of a max takes the gradient, ties split it in halves; clamp and min pass it on their closed ranges.
 */
defineCpuKernel(K.PPO_LOSS_GRAD, ({ params: p, bindings: b, grid }) => {
  const lp = b.lp.f32, vp = b.vp.f32, pk = b.packed.f32, stats = b.stats.f32, dlp = b.dlp.f32, dvp = b.dvp.f32;
  const n = p.n, lo = f(1 - p.cliprange), hi = f(1 + p.cliprange), cv = p.cliprange_value;
  const perWeight = b.scalar.f32[0] * (1 - stats[15]) / stats[17], valueScale = p.vf_coef * 0.5;
  const end = covered(n, grid);
  for (let i = 0; i < end; i++) {
    const w = pk[4 * n + i];
    if (w === 0) {
      dlp[i] = 0;
      dvp[i] = 0;
      continue;
    }
    const s = perWeight * w, A = pk[2 * n + i];
    // policy term: d/dlp max(−A·r, −A·clamp(r, lo, hi)), dr/dlp = r
    const r = fexp(f(lp[i] - pk[i]));
    const w1 = maxWeight(f(-A * r), f(-A * clamp(r, lo, hi)));
    const dclamp = r >= lo && r <= hi ? 1 : 0;
    dlp[i] = s * (w1 + (1 - w1) * dclamp) * -A * r;
    // value term: d/dv max((v − R)², (vclip − R)²), vclip = max(min(v, ov + cv), ov − cv)
    const v = vp[i], R = pk[3 * n + i], ov = pk[n + i];
    const vhi = f(ov + cv), vlo = f(ov - cv), m = Math.min(v, vhi);
    const dmin = v < vhi ? 1 : v === vhi ? 0.5 : 0;
    const dmax = m > vlo ? 1 : m === vlo ? 0.5 : 0;
    const d1 = f(v - R), d2 = f(Math.max(m, vlo) - R);
    const u1 = maxWeight(f(d1 * d1), f(d2 * d2));
    dvp[i] = s * valueScale * (u1 * 2 * d1 + (1 - u1) * 2 * d2 * dmin * dmax);
  }
});

// ---------------------------------------------------------------- ppo_kl.wgsl

/** Per row the grid reaches: the maxima of a = x·s and c = y·s, then Σe^(a−mx), Σe^(c−my), Σe^(a−mx)·(a − c). */
defineCpuKernel(K.PPO_KL, ({ params: p, bindings: b, grid }) => {
  const x = b.x.f32, y = b.y.f32, kl = b.kl.f32, n = p.n, s = p.inv_temp, rows = covered(p.rows, grid, 1);
  for (let row = 0; row < rows; row++) {
    const base = row * n, end = base + n;
    let mx = LOWEST, my = LOWEST;
    for (let k = base; k < end; k++) {
      mx = Math.max(mx, x[k] * s);
      my = Math.max(my, y[k] * s);
    }
    let sx = 0, sy = 0, sxy = 0;
    for (let k = base; k < end; k++) {
      const a = x[k] * s, c = y[k] * s, ea = fastExp(a - mx);
      sx += ea;
      sy += fastExp(c - my);
      sxy += ea * (a - c);
    }
    // Σp(log p − log q) = Σe^(a−mx)(a − c) / Σe^(a−mx) − (mx + log Σe^(a−mx)) + (my + log Σe^(c−my))
    kl[row] = sxy / sx - (mx + Math.log(sx)) + (my + Math.log(sy));
  }
});
