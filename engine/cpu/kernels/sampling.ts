/**
 * CPU kernel of token selection (`engine/kernels/sampling.ts`, `sample.wgsl`): suppressed tokens, EOS before
 * `min_new`, temperature, top-k and top-p thresholds found by the shader's 32-round bisections, greedy argmax or a
 * sample drawn with the shader's counter-based random number, and EOS/pad bookkeeping.
 *
 * Every sum keeps the shader's order — each of the 256 threads owns a contiguous chunk of the vocabulary, chunk sums
 * meet in the halving tree, and the sampling prefix sums are the Hillis–Steele scan — in float32 (typed-array
 * scratch, no per-thread objects), so thresholds and the sampled token come out the same as on the GPU. The row's
 * exp(z − max) values are computed once and reused by every bisection round.
 * @module
 */

import { SAMPLE } from "../../kernels/sampling.ts";
import { defineCpuKernel } from "../kernel_table.ts";
import { fastExp } from "../fastmath.ts";
import { mix32 } from "../rng.ts";
import { f } from "../workgroup.ts";

const WG = 256;
const NONE = 0xffffffff;
const BLOCKED = f(-3.0e38);

interface SampleParams {
  vocab: number;
  step: number;
  max_new: number;
  greedy: number;
  top_k: number;
  eos: number;
  pad: number;
  min_new: number;
  seed: number;
  temperature: number;
  top_p: number;
  suppress_words: number;
}

/** Per-row scratch, reused across rows and calls (kernels run one at a time). */
let zBuf = new Float32Array(0), eBuf = new Float32Array(0);
const kept = new Float32Array(WG), incl = new Float32Array(WG), scanTmp = new Float32Array(WG);
const red = new Float32Array(WG);

/** The row's logits as `logit_at` reads them: suppressed and early-EOS tokens at −3e38, divided by temperature. */
function rowLogits(p: SampleParams, logits: Float32Array, suppress: Uint32Array, row: number): Float32Array {
  if (zBuf.length !== p.vocab) zBuf = new Float32Array(p.vocab);
  const z = zBuf;
  z.set(logits.subarray(row * p.vocab, (row + 1) * p.vocab));
  if (p.eos >= 0 && p.eos < p.vocab && p.step < p.min_new) z[p.eos] = BLOCKED;
  for (let w = 0; w < p.suppress_words; w++) {
    const bits = suppress[w];
    if (bits === 0) continue;
    for (let k = 0; k < 32 && w * 32 + k < p.vocab; k++) if (((bits >>> k) & 1) === 1) z[w * 32 + k] = BLOCKED;
  }
  if (p.greedy === 0 && p.temperature !== 1) { for (let i = 0; i < p.vocab; i++) z[i] = z[i] / p.temperature; }
  return z;
}

/** The contiguous chunk length of each of the WG threads (thread `lid` owns [lid·chunk, (lid + 1)·chunk) ∩ vocab). */
const chunkLen = (vocab: number) => Math.ceil(vocab / WG);

/** Per thread into `out`: the float32 sum of e_i = exp(z_i − gmax) over its chunk's z_i ≥ t, in index order. */
function chunkMasses(z: Float32Array, e: Float32Array, t: number, out: Float32Array): void {
  const n = z.length, chunk = chunkLen(n);
  for (let lid = 0; lid < WG; lid++) {
    const lo = Math.min(lid * chunk, n), hi = Math.min(lo + chunk, n);
    let s = 0;
    for (let i = lo; i < hi; i++) if (z[i] >= t) s = f(s + e[i]);
    out[lid] = s;
  }
}

/** The halving-tree float32 sum of `v` (WG values), as `workgroup_reduce.wgsl` adds them. */
function fsum(v: Float32Array): number {
  red.set(v);
  for (let s = WG >> 1; s > 0; s >>= 1) for (let l = 0; l < s; l++) red[l] = red[l] + red[l + s];
  return red[0];
}

/** Top-k threshold: 32 halvings of [gmin, gmax] keeping count(z ≥ t) ≥ k. */
function topKThreshold(p: SampleParams, z: Float32Array, gmin: number, gmax: number): number {
  if (p.top_k === 0 || p.top_k >= p.vocab) return gmin;
  let a = gmin, b = gmax;
  for (let it = 0; it < 32; it++) {
    const mid = f(a + f(f(b - a) * 0.5));
    let c = 0;
    for (let i = 0; i < z.length; i++) if (z[i] >= mid) c++;
    if (c >= p.top_k) a = mid;
    else b = mid;
  }
  return a;
}

/** Top-p threshold: 32 halvings of [thresh, gmax] keeping the kept mass ≥ top_p · total. */
function topPThreshold(p: SampleParams, z: Float32Array, e: Float32Array, thresh: number, gmax: number): number {
  if (!(p.top_p < 1)) return thresh;
  chunkMasses(z, e, thresh, kept);
  const goal = f(p.top_p * fsum(kept));
  let a = thresh, b = gmax;
  for (let it = 0; it < 32; it++) {
    const mid = f(a + f(f(b - a) * 0.5));
    chunkMasses(z, e, mid, kept);
    if (fsum(kept) >= goal) a = mid;
    else b = mid;
  }
  return a;
}

/** Inclusive Hillis–Steele scan of `kept` into `incl`, in the shader's order of additions. */
function scan(): void {
  incl.set(kept);
  for (let off = 1; off < WG; off <<= 1) {
    scanTmp.set(incl);
    for (let lid = off; lid < WG; lid++) incl[lid] = scanTmp[lid] + scanTmp[lid - off];
  }
}

/** The sampled token of `row` (NONE when no thread picks one). */
function sampleRow(p: SampleParams, z: Float32Array, gmax: number, row: number): number {
  const n = z.length, chunk = chunkLen(n);
  if (eBuf.length !== n) eBuf = new Float32Array(n);
  const e = eBuf;
  let gmin = f(3.4e38);
  for (let i = 0; i < n; i++) {
    const v = z[i];
    if (v > -1.0e38 && v < gmin) gmin = v;
    e[i] = fastExp(f(v - gmax)); // rounded to float32 by the store (within an ulp of the shader's exp)
  }
  const thresh = topPThreshold(p, z, e, topKThreshold(p, z, gmin, gmax), gmax);
  chunkMasses(z, e, thresh, kept);
  scan();
  const keptTotal = incl[WG - 1];
  const bits = mix32(mix32((p.seed ^ mix32(Math.imul(row, 0x9e3779b9))) >>> 0) ^ mix32((p.step + 0x632be5ab) >>> 0));
  const goal = f(f((bits >>> 8) / 16777216) * keptTotal);
  let token = NONE;
  for (let lid = 0; lid < WG; lid++) {
    const before = f(incl[lid] - kept[lid]);
    const last = goal < incl[lid] || lid === WG - 1 || incl[lid] >= keptTotal;
    if (!(kept[lid] > 0 && goal >= before && last)) continue;
    const lo = Math.min(lid * chunk, n), hi = Math.min(lo + chunk, n);
    let acc = before, pick = NONE;
    for (let i = lo; i < hi; i++) {
      if (z[i] < thresh) continue;
      pick = i;
      acc = f(acc + e[i]);
      if (acc > goal) break;
    }
    token = Math.min(token, pick);
  }
  return token;
}

/** The chosen token of `row`: greedy (first index of the maximum) or sampled. */
function chooseToken(p: SampleParams, z: Float32Array, row: number): number {
  // The maximum is order-free; the greedy pick is its first index (the chunks are contiguous and in order).
  let gmax = f(-3.4e38), arg = NONE;
  for (let i = 0; i < z.length; i++) {
    if (z[i] > gmax) {
      gmax = z[i];
      arg = i;
    }
  }
  if (p.greedy !== 1) return sampleRow(p, z, gmax, row);
  return arg;
}

defineCpuKernel(SAMPLE, ({ params: p, bindings: b, grid }) => {
  const finished = b.finished.i32;
  for (let row = 0; row < grid[0]; row++) {
    const token = chooseToken(p, rowLogits(p, b.logits.f32, b.suppress.u32, row), row);
    let t = token >= p.vocab ? (p.pad >= 0 ? p.pad : 0) : token;
    if (finished[row] !== 0) t = p.pad;
    else if (t === p.eos) finished[row] = 1;
    b.tokens.i32[row * p.max_new + p.step] = t;
    b.next_ids.i32[row] = t;
  }
}, { exact: true });
