/**
 * CPU kernels of attention (`engine/kernels/attention.ts`): the row kernels (`attention.wgsl`,
 * `attention_backward.wgsl`) and the tiled flash-style kernels (`attention_tiled.wgsl`) share one exact-softmax
 * implementation here — tiling and online softmax only change the order of float32 rounding, not what is computed —
 * plus the masked softmax of materialised scores (`attention_softmax.wgsl`) and the KV-cache write
 * (`attention_kv.wgsl`). Masks (causal, i32 or f32 key padding), `Tcap`-strided keys and the attention-dropout
 * decision (`engine/cpu/rng.ts`, flat index `(bh·Tq + i)·Tk + j`) follow `attention_common.wgsl`. Each (batch, head)
 * block's products go through sgemm, its exponentials and dropout factors through one SIMD call each (`../simd.ts`).
 * The head layout kernels are in `heads.ts`.
 * @module
 */

import * as K from "../../kernels/attention.ts";
import type { AttentionParams } from "../../kernels/attention.ts";
import { type CpuCall, defineCpuKernel, type HostArray } from "../kernel_table.ts";
import { dropKeep } from "../rng.ts";
import { sgemm } from "../blas.ts";
import { fastExp } from "../fastmath.ts";
import { dropoutSimd, scaledExpSimd } from "../simd.ts";

/** Everything a block computation reads: uniforms, head size, mask kind and the operand arrays. */
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
type TiledOverride = "MASK" | "DH" | "TQ" | "TC" | "BT" | "SR";

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

/** Scratch arrays reused across calls (grown on demand): kernels run one at a time. */
const scratch: Float32Array[] = [new Float32Array(0), new Float32Array(0), new Float32Array(0), new Float32Array(0)];
function scratchOf(slot: number, n: number): Float32Array {
  if (scratch[slot].length < n) scratch[slot] = new Float32Array(Math.max(n, 2 * scratch[slot].length));
  return scratch[slot];
}

/**
 * The dropout factors (1/(1 − p) or 0) of the `n` probabilities from flat index `start` on, in scratch slot 2 — by the
 * SIMD kernel over a block of ones (the same factors as {@linkcode dropFactor}) — or null when dropout is off.
 */
function dropFactors(p: AttentionParams, start: number, n: number): Float32Array | null {
  if (p.drop_on === 0) return null;
  const z = scratchOf(2, n), ones = scratchOf(3, n);
  if (ones[n - 1] !== 1) ones.fill(1);
  if (!dropoutSimd(ones, z, n, p.drop_key, p.drop_threshold, p.drop_scale, start)) {
    for (let i = 0; i < n; i++) z[i] = dropFactor(p, start + i);
  }
  return z;
}

/**
 * s[i] = e^(s[i]) over [0, n) in place (0 for −∞): the SIMD kernel, else — or when the block holds a NaN, which the
 * SIMD exponential would turn into 0 — the scalar exp, so NaN scores give NaN outputs as on the GPU.
 */
function expBlock(s: Float32Array, n: number, nan: boolean): void {
  if (!nan && scaledExpSimd(s, s, 0, n, 0, 1)) return;
  for (let i = 0; i < n; i++) s[i] = fastExp(s[i]);
}

/**
 * Scores of query rows [lo, hi) of head `bh` against its Tk keys, `scale · q_i · k_j`, into `s` ([hi − lo, Tk]),
 * by one product; then `f(r, i, rowOff)` turns each row into probabilities in place. Keys a query may not see
 * (causal limit, padding mask) are flagged with −Infinity first.
 */
function scoreBlock(a: Attn, bh: number, lo: number, hi: number, s: Float32Array): void {
  const { p, D } = a, Tk = p.Tk, nq = hi - lo;
  sgemm({
    M: nq,
    N: Tk,
    K: D,
    alpha: p.scale,
    a: { data: a.q, offset: (bh * p.Tq + lo) * D, ld: D, trans: false },
    b: { data: a.k, offset: bh * p.Tcap * D, ld: D, trans: true },
    beta: 0,
    c: { data: s, offset: 0, ld: Tk },
  });
  const b = Math.floor(bh / p.H), padded = a.maskKind !== 0;
  for (let r = 0; r < nq; r++) {
    const i = lo + r, row = r * Tk;
    const lim = p.causal === 1 ? Tk - p.Tq + i : Tk - 1; // last visible key
    for (let j = Math.max(lim + 1, 0); j < Tk; j++) s[row + j] = -Infinity;
    if (padded) { for (let j = 0; j <= lim && j < Tk; j++) if (!padOk(a, b, j)) s[row + j] = -Infinity; }
  }
}

/** C (rows at `cOff`, ld D) = alpha · op(A) [M, Kd] · B [Kd, D] (B rows at `bOff`, ld D). */
function productRows(
  M: number,
  Kd: number,
  alpha: number,
  a: { data: Float32Array; offset: number; ld: number; trans: boolean },
  b: Float32Array,
  bOff: number,
  c: Float32Array,
  cOff: number,
  D: number,
): void {
  sgemm({
    M,
    N: D,
    K: Kd,
    alpha,
    a,
    b: { data: b, offset: bOff, ld: D, trans: false },
    beta: 0,
    c: { data: c, offset: cOff, ld: D },
  });
}

/** Forward of query rows [lo, hi) of `bh`: out = Σ_j softmax_j · Z_j · v_j and lse = max + log Σ exp (0 if none). */
function forwardBlock(a: Attn, bh: number, lo: number, hi: number, out: Float32Array, lse: Float32Array): void {
  const { p, D } = a, Tk = p.Tk, nq = hi - lo;
  if (nq <= 0) return;
  const s = scratchOf(0, nq * Tk), maxes = scratchOf(1, nq);
  scoreBlock(a, bh, lo, hi, s);
  // Each row minus its maximum (masked keys stay −∞), then the whole block's exponentials at once.
  let nan = false;
  for (let r = 0; r < nq; r++) {
    const row = r * Tk;
    let m = -Infinity;
    for (let j = 0; j < Tk; j++) {
      const v = s[row + j];
      if (v > m) m = v;
      else if (v !== v) nan = true;
    }
    maxes[r] = m;
    if (m !== -Infinity) { for (let j = 0; j < Tk; j++) s[row + j] -= m; }
  }
  expBlock(s, nq * Tk, nan);
  const z = dropFactors(p, (bh * p.Tq + lo) * Tk, nq * Tk);
  for (let r = 0; r < nq; r++) {
    const row = r * Tk, m = maxes[r];
    let l = 0;
    if (m !== -Infinity) { for (let j = 0; j < Tk; j++) l += s[row + j]; }
    else s.fill(0, row, row + Tk); // no visible key: probabilities 0
    const inv = l > 0 ? 1 / l : 0;
    if (z === null) { for (let j = 0; j < Tk; j++) s[row + j] *= inv; }
    else for (let j = 0; j < Tk; j++) s[row + j] *= inv * z[row + j];
    lse[bh * p.Tq + lo + r] = l > 0 ? m + Math.log(l) : 0;
  }
  productRows(
    nq,
    Tk,
    1,
    { data: s, offset: 0, ld: Tk, trans: false },
    a.v,
    bh * p.Tcap * D,
    out,
    (bh * p.Tq + lo) * D,
    D,
  );
}

/**
 * The backward matrices of query rows [lo, hi) of `bh`: `pz` = P·Z and `ds` = P ⊙ (Z ⊙ (dO·vᵀ) − Δ), with
 * P = exp(s − lse) recomputed (zero where masked), each [hi − lo, Tk].
 */
function gradBlock(a: Attn, bh: number, lo: number, hi: number, pz: Float32Array, ds: Float32Array): void {
  const { p, D } = a, Tk = p.Tk, nq = hi - lo, lse = a.lse!, dlt = a.dlt!;
  scoreBlock(a, bh, lo, hi, pz);
  sgemm({
    M: nq,
    N: Tk,
    K: D,
    alpha: 1,
    a: { data: a.dout!, offset: (bh * p.Tq + lo) * D, ld: D, trans: false },
    b: { data: a.v, offset: bh * p.Tcap * D, ld: D, trans: true },
    beta: 0,
    c: { data: ds, offset: 0, ld: Tk },
  });
  // P = e^(s − lse) for the whole block at once (masked keys: −∞ → 0), then the dropout factors.
  let nan = false;
  for (let r = 0; r < nq; r++) {
    const row = r * Tk, l = lse[bh * p.Tq + lo + r];
    for (let j = 0; j < Tk; j++) {
      const v = pz[row + j] - l;
      pz[row + j] = v;
      if (v !== v) nan = true;
    }
  }
  expBlock(pz, nq * Tk, nan);
  const z = dropFactors(p, (bh * p.Tq + lo) * Tk, nq * Tk);
  for (let r = 0; r < nq; r++) {
    const row = r * Tk, d = dlt[bh * p.Tq + lo + r];
    for (let j = 0; j < Tk; j++) {
      const pr = pz[row + j], zj = z === null ? 1 : z[row + j];
      pz[row + j] = pr * zj;
      ds[row + j] = pr === 0 ? 0 : pr * (ds[row + j] * zj - d);
    }
  }
}

/** dq_i = scale Σ_j dS_ij k_j for query rows [lo, hi) of `bh` into `g1`. */
function gradQBlock(a: Attn, bh: number, lo: number, hi: number, g1: Float32Array): void {
  const { p, D } = a, Tk = p.Tk, nq = hi - lo;
  if (nq <= 0) return;
  const pz = scratchOf(0, nq * Tk), ds = scratchOf(1, nq * Tk);
  gradBlock(a, bh, lo, hi, pz, ds);
  productRows(
    nq,
    Tk,
    p.scale,
    { data: ds, offset: 0, ld: Tk, trans: false },
    a.k,
    bh * p.Tcap * D,
    g1,
    (bh * p.Tq + lo) * D,
    D,
  );
}

/**
 * dk_j = scale Σ_i dS_ij q_i into `g1` and dv_j = Σ_i P_ij Z_ij dO_i into `g2` for stored key rows [lo, hi) of `bh`
 * (zeros for rows ≥ Tk).
 */
function gradKVBlock(a: Attn, bh: number, lo: number, hi: number, g1: Float32Array, g2: Float32Array): void {
  const { p, D } = a, Tk = p.Tk, Tq = p.Tq, top = Math.min(hi, Tk);
  if (hi <= lo) return;
  const rows = bh * p.Tcap * D;
  if (top > lo) {
    const pz = scratchOf(0, Tq * Tk), ds = scratchOf(1, Tq * Tk);
    gradBlock(a, bh, 0, Tq, pz, ds);
    const qOff = bh * Tq * D;
    productRows(top - lo, Tq, p.scale, { data: ds, offset: lo, ld: Tk, trans: true }, a.q, qOff, g1, rows + lo * D, D);
    productRows(top - lo, Tq, 1, { data: pz, offset: lo, ld: Tk, trans: true }, a.dout!, qOff, g2, rows + lo * D, D);
  }
  const from = rows + Math.max(lo, top) * D, to = rows + hi * D;
  if (to > from) {
    g1.fill(0, from, to);
    g2.fill(0, from, to);
  }
}

/** Calls `f(bh, lo, hi)` with the rows [lo, hi) (< `per`) of each (b, h) a row kernel's workgroups cover (one per row). */
function eachRowBlock(c: CpuCall<Fields>, per: number, f: (bh: number, lo: number, hi: number) => void): void {
  const n = Math.min(c.params.rows, c.grid[0] * c.grid[1]);
  for (let bh = 0; bh * per < n; bh++) f(bh, 0, Math.min(per, n - bh * per));
}

/**
 * Calls `f(bh, lo, hi)` with the rows [lo, hi) (< `limit`) of the blocks of 4·TQ rows a tiled kernel's workgroups
 * own: workgroup `flat` takes block `flat mod nblk` of head `flat / nblk`, counted from the end when `reverse`.
 */
function eachTiledBlock(
  c: CpuCall<Fields, string, TiledOverride>,
  limit: number,
  reverse: boolean,
  f: (bh: number, lo: number, hi: number) => void,
): void {
  const { params: p, grid } = c, br = 4 * (c.overrides.TQ ?? 8);
  const n = Math.min(p.rows, grid[0] * grid[1]);
  for (let bh = 0; bh * p.nblk < n; bh++) {
    const blocks = Math.min(p.nblk, n - bh * p.nblk);
    const lo = reverse ? (p.nblk - blocks) * br : 0, hi = reverse ? p.nblk * br : blocks * br;
    if (Math.min(hi, limit) > lo) f(bh, lo, Math.min(hi, limit));
  }
}

defineCpuKernel(K.ATTENTION, (c) => {
  const a = attnOf(c.params, c.bindings, c.params.D, c.overrides.MASK ?? 0);
  eachRowBlock(c, c.params.Tq, (bh, lo, hi) => forwardBlock(a, bh, lo, hi, c.bindings.out.f32, c.bindings.lse.f32));
});

defineCpuKernel(K.ATTENTION_DELTA, ({ params: p, bindings: b, grid }) => {
  const n = Math.min(p.rows, grid[0] * grid[1] * 64), o = b.o_fwd.f32, g = b.do_d.f32;
  for (let row = 0; row < n; row++) b.delta_out.f32[row] = dot(o, row * p.D, g, row * p.D, p.D);
});

defineCpuKernel(K.ATTENTION_GRAD_Q, (c) => {
  const a = attnOf(c.params, c.bindings, c.params.D, c.overrides.MASK ?? 0);
  eachRowBlock(c, c.params.Tq, (bh, lo, hi) => gradQBlock(a, bh, lo, hi, c.bindings.g1.f32));
});

defineCpuKernel(K.ATTENTION_GRAD_KV, (c) => {
  const a = attnOf(c.params, c.bindings, c.params.D, c.overrides.MASK ?? 0);
  eachRowBlock(c, c.params.Tcap, (bh, lo, hi) => gradKVBlock(a, bh, lo, hi, c.bindings.g1.f32, c.bindings.g2.f32));
});

defineCpuKernel(K.ATTENTION_TILED, (c) => {
  const a = attnOf(c.params, c.bindings, c.overrides.DH ?? 64, c.overrides.MASK ?? 0);
  const { out, lse_out } = c.bindings;
  eachTiledBlock(c, c.params.Tq, true, (bh, lo, hi) => forwardBlock(a, bh, lo, hi, out.f32, lse_out.f32));
});

defineCpuKernel(K.ATTENTION_TILED_GRAD_Q, (c) => {
  const a = attnOf(c.params, c.bindings, c.overrides.DH ?? 64, c.overrides.MASK ?? 0);
  eachTiledBlock(c, c.params.Tq, true, (bh, lo, hi) => gradQBlock(a, bh, lo, hi, c.bindings.g1.f32));
});

defineCpuKernel(K.ATTENTION_TILED_GRAD_KV, (c) => {
  const a = attnOf(c.params, c.bindings, c.overrides.DH ?? 64, c.overrides.MASK ?? 0);
  const { g1, g2 } = c.bindings;
  eachTiledBlock(c, c.params.Tcap, false, (bh, lo, hi) => gradKVBlock(a, bh, lo, hi, g1.f32, g2.f32));
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
    for (let j = 0; j < p.Tk; j++) sum += y[j] = ok(j) ? fastExp(s[base + j] - m) : 0;
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
