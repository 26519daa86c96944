/**
 * CPU kernels of attention (`engine/kernels/attention.ts`): the row kernels (`attention.wgsl`,
 * `attention_backward.wgsl`) and the tiled flash-style kernels (`attention_tiled.wgsl`) share one exact-softmax
 * implementation here — tiling and online softmax only change the order of float32 rounding, not what is computed —
 * plus the masked softmax of materialised scores (`attention_softmax.wgsl`) and the KV-cache write
 * (`attention_kv.wgsl`). Masks (causal, i32 or f32 key padding), `Tcap`-strided keys and the attention-dropout
 * decision (`engine/cpu/rng.ts`, flat index `(bh·Tq + i)·Tk + j`) follow `attention_common.wgsl`. The head layout
 * kernels are in `heads.ts`.
 * @module
 */

import * as K from "../../kernels/attention.ts";
import type { AttentionParams } from "../../kernels/attention.ts";
import { type CpuCall, defineCpuKernel, type HostArray } from "../kernel_table.ts";
import { dropKeep } from "../rng.ts";

/** Everything a row computation reads: uniforms, head size, mask kind and the operand arrays. */
interface Attn {
  p: AttentionParams;
  D: number;
  maskKind: number;
  mask: Int32Array;
  maskF: Float32Array;
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  dout?: Float32Array;
  lse?: Float32Array;
  dlt?: Float32Array;
}

type Bindings = Readonly<Record<string, HostArray>>;
type Fields = typeof K.ATTENTION.params;

function attnOf(p: AttentionParams, b: Bindings, D: number, maskKind: number): Attn {
  const mask = b.mask ?? b.q;
  return {
    p,
    D,
    maskKind,
    mask: mask.i32,
    maskF: mask.f32,
    q: b.q.f32,
    k: b.k.f32,
    v: b.v.f32,
    dout: b.dout?.f32,
    lse: b.lse?.f32,
    dlt: b.dlt?.f32,
  };
}

/** Whether the padding mask lets batch `b` attend to key `j` (MASK 0 none, 1 i32, 2 f32; non-zero attends). */
function padOk(a: Attn, b: number, j: number): boolean {
  const at = b * a.p.mstride + j;
  if (a.maskKind === 1) return a.mask[at] !== 0;
  if (a.maskKind === 2) return a.maskF[at] !== 0;
  return true;
}

/** Whether query `i` of batch `b` sees key `j` (j < Tk, causal: j ≤ Tk − Tq + i, and the padding mask). */
function visible(a: Attn, b: number, i: number, j: number): boolean {
  if (j >= a.p.Tk) return false;
  if (a.p.causal === 1 && j > a.p.Tk - a.p.Tq + i) return false;
  return padOk(a, b, j);
}

/** The dropout factor of flat probability index `idx`: 1 when off, else keep ? 1/(1 − p) : 0. */
function dropFactor(p: AttentionParams, idx: number): number {
  if (p.drop_on === 0) return 1;
  return dropKeep(idx, p.drop_key, p.drop_threshold, p.drop_scale);
}

function dot(x: Float32Array, xo: number, y: Float32Array, yo: number, n: number): number {
  let s = 0;
  for (let d = 0; d < n; d++) s += x[xo + d] * y[yo + d];
  return s;
}

/** Forward of query `i` of (b·H + h) = `bh`: out = Σ_j softmax_j · Z_j · v_j and lse = max + log Σ exp. */
function forwardRow(a: Attn, bh: number, i: number, out: Float32Array, lse: Float32Array): void {
  const { p, D } = a, b = Math.floor(bh / p.H), row = bh * p.Tq + i, kb = bh * p.Tcap;
  const s = new Float64Array(p.Tk).fill(-Infinity);
  let m = -Infinity;
  for (let j = 0; j < p.Tk; j++) {
    if (!visible(a, b, i, j)) continue;
    s[j] = dot(a.q, row * D, a.k, (kb + j) * D, D) * p.scale;
    m = Math.max(m, s[j]);
  }
  let l = 0;
  const acc = new Float64Array(D);
  for (let j = 0; j < p.Tk; j++) {
    if (s[j] === -Infinity) continue;
    const e = Math.exp(s[j] - m);
    l += e;
    const w = e * dropFactor(p, row * p.Tk + j);
    if (w !== 0) { for (let d = 0; d < D; d++) acc[d] += w * a.v[(kb + j) * D + d]; }
  }
  const inv = l > 0 ? 1 / l : 0;
  for (let d = 0; d < D; d++) out[row * D + d] = acc[d] * inv;
  lse[row] = l > 0 ? m + Math.log(l) : 0;
}

/** P·Z and dS = P (Z (dO·v) − Δ) of (query i, key j) of `bh`, with P = exp(s − lse) recomputed; zeros if masked. */
function gradPair(a: Attn, bh: number, i: number, j: number): [number, number] {
  const { p, D } = a, row = bh * p.Tq + i, ko = (bh * p.Tcap + j) * D;
  if (!visible(a, Math.floor(bh / p.H), i, j)) return [0, 0];
  const pr = Math.exp(dot(a.q, row * D, a.k, ko, D) * p.scale - a.lse![row]);
  const z = dropFactor(p, row * p.Tk + j);
  return [pr * z, pr * (dot(a.dout!, row * D, a.v, ko, D) * z - a.dlt![row])];
}

/** dq_i = scale Σ_j dS_ij k_j into `g1`. */
function gradQRow(a: Attn, bh: number, i: number, g1: Float32Array): void {
  const { p, D } = a, row = bh * p.Tq + i, acc = new Float64Array(D);
  for (let j = 0; j < p.Tk; j++) {
    const ds = gradPair(a, bh, i, j)[1];
    if (ds !== 0) { for (let d = 0; d < D; d++) acc[d] += ds * a.k[(bh * p.Tcap + j) * D + d]; }
  }
  for (let d = 0; d < D; d++) g1[row * D + d] = acc[d] * p.scale;
}

/** dk_j = scale Σ_i dS_ij q_i into `g1` and dv_j = Σ_i P_ij Z_ij dO_i into `g2` (zeros for stored keys ≥ Tk). */
function gradKVRow(a: Attn, bh: number, j: number, g1: Float32Array, g2: Float32Array): void {
  const { p, D } = a, ak = new Float64Array(D), av = new Float64Array(D);
  for (let i = 0; i < p.Tq && j < p.Tk; i++) {
    const [pz, ds] = gradPair(a, bh, i, j), o = (bh * p.Tq + i) * D;
    for (let d = 0; d < D; d++) {
      ak[d] += ds * a.q[o + d];
      av[d] += pz * a.dout![o + d];
    }
  }
  const o = (bh * p.Tcap + j) * D;
  for (let d = 0; d < D; d++) {
    g1[o + d] = ak[d] * p.scale;
    g2[o + d] = av[d];
  }
}

/** Calls `f(bh, r)` for each row `r` (< `per`) of each (b, h) a row kernel's workgroups cover (one per row). */
function eachRow(c: CpuCall<Fields>, per: number, f: (bh: number, r: number) => void): void {
  const n = Math.min(c.params.rows, c.grid[0] * c.grid[1]);
  for (let row = 0; row < n; row++) f(Math.floor(row / per), row % per);
}

/** Calls `f(bh, r)` for each row `r` (< `limit`) of the blocks of 4·TQ rows a tiled kernel's workgroups own. */
function eachTiledRow(
  c: CpuCall<Fields, string, "MASK" | "DH" | "TQ" | "TC" | "BT" | "SR">,
  limit: number,
  reverse: boolean,
  f: (bh: number, r: number) => void,
): void {
  const { params: p, grid } = c, br = 4 * (c.overrides.TQ ?? 8);
  const n = Math.min(p.rows, grid[0] * grid[1]);
  for (let flat = 0; flat < n; flat++) {
    const r = flat % p.nblk, blk = reverse ? p.nblk - 1 - r : r;
    for (let x = blk * br; x < Math.min((blk + 1) * br, limit); x++) f(Math.floor(flat / p.nblk), x);
  }
}

defineCpuKernel(K.ATTENTION, (c) => {
  const a = attnOf(c.params, c.bindings, c.params.D, c.overrides.MASK ?? 0);
  eachRow(c, c.params.Tq, (bh, i) => forwardRow(a, bh, i, c.bindings.out.f32, c.bindings.lse.f32));
});

defineCpuKernel(K.ATTENTION_DELTA, ({ params: p, bindings: b, grid }) => {
  const n = Math.min(p.rows, grid[0] * grid[1] * 64), o = b.o_fwd.f32, g = b.do_d.f32;
  for (let row = 0; row < n; row++) b.delta_out.f32[row] = dot(o, row * p.D, g, row * p.D, p.D);
});

defineCpuKernel(K.ATTENTION_GRAD_Q, (c) => {
  const a = attnOf(c.params, c.bindings, c.params.D, c.overrides.MASK ?? 0);
  eachRow(c, c.params.Tq, (bh, i) => gradQRow(a, bh, i, c.bindings.g1.f32));
});

defineCpuKernel(K.ATTENTION_GRAD_KV, (c) => {
  const a = attnOf(c.params, c.bindings, c.params.D, c.overrides.MASK ?? 0);
  eachRow(c, c.params.Tcap, (bh, j) => gradKVRow(a, bh, j, c.bindings.g1.f32, c.bindings.g2.f32));
});

defineCpuKernel(K.ATTENTION_TILED, (c) => {
  const a = attnOf(c.params, c.bindings, c.overrides.DH ?? 64, c.overrides.MASK ?? 0);
  const { out, lse_out } = c.bindings;
  eachTiledRow(c, c.params.Tq, true, (bh, i) => forwardRow(a, bh, i, out.f32, lse_out.f32));
});

defineCpuKernel(K.ATTENTION_TILED_GRAD_Q, (c) => {
  const a = attnOf(c.params, c.bindings, c.overrides.DH ?? 64, c.overrides.MASK ?? 0);
  eachTiledRow(c, c.params.Tq, true, (bh, i) => gradQRow(a, bh, i, c.bindings.g1.f32));
});

defineCpuKernel(K.ATTENTION_TILED_GRAD_KV, (c) => {
  const a = attnOf(c.params, c.bindings, c.overrides.DH ?? 64, c.overrides.MASK ?? 0);
  const { g1, g2 } = c.bindings;
  eachTiledRow(c, c.params.Tcap, false, (bh, j) => gradKVRow(a, bh, j, g1.f32, g2.f32));
});

/** Keys of score row `row` the softmax may attend: the causal limit (j < lim) and the padding mask. */
function softmaxKeys(a: Attn, row: number): (j: number) => boolean {
  const { p } = a, b = Math.floor(row / (p.Tq * p.H)), i = row % p.Tq;
  const lim = p.causal === 0 ? p.Tk : Math.min(Math.max(p.Tk - p.Tq + i + 1, 0), p.Tk);
  return (j) => j < lim && padOk(a, b, j);
}

defineCpuKernel(K.ATTENTION_SOFTMAX, ({ params: p, bindings: bd, grid, overrides: o }) => {
  const a = attnOf(p, { ...bd, q: bd.s, k: bd.s, v: bd.s }, 0, o.MASK ?? 0), s = bd.s.f32;
  const n = Math.min(p.rows, grid[0] * grid[1]), y = new Float64Array(p.Tk);
  for (let row = 0; row < n; row++) {
    const ok = softmaxKeys(a, row), base = row * p.Tk;
    let m = -Infinity, sum = 0;
    for (let j = 0; j < p.Tk; j++) if (ok(j)) m = Math.max(m, s[base + j]);
    for (let j = 0; j < p.Tk; j++) sum += y[j] = ok(j) ? Math.exp(s[base + j] - m) : 0;
    const inv = sum > 0 ? 1 / sum : 0;
    for (let j = 0; j < p.Tk; j++) {
      bd.pr.f32[base + j] = y[j] * inv;
      if (p.drop_on !== 0) bd.pd.f32[base + j] = y[j] * inv * dropFactor(p, base + j);
    }
  }
});

defineCpuKernel(K.ATTENTION_SOFTMAX_GRAD, ({ params: p, bindings: bd, grid }) => {
  const s = bd.s.f32, g = bd.pd.f32, n = Math.min(p.rows, grid[0] * grid[1]), gz = new Float64Array(p.Tk);
  for (let row = 0; row < n; row++) {
    const base = row * p.Tk;
    let tot = 0;
    for (let j = 0; j < p.Tk; j++) {
      gz[j] = g[base + j] * dropFactor(p, base + j);
      tot += gz[j] * s[base + j];
    }
    for (let j = 0; j < p.Tk; j++) bd.pr.f32[base + j] = s[base + j] * (gz[j] - tot);
  }
});

defineCpuKernel(K.WRITE_KV, ({ params: p, bindings: b }) => {
  const u = b.update.u32, cache = b.cache.u32;
  for (let e = 0; e < p.n; e++) {
    const d = e % p.D, rest = Math.floor(e / p.D), t = rest % p.T, bh = Math.floor(rest / p.T);
    cache[(bh * p.Tcap + p.offset + t) * p.D + d] = u[e];
  }
}, { exact: true });
