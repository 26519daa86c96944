/**
 * CPU kernel of token selection (`engine/kernels/sampling.ts`, `sample.wgsl`): suppressed tokens, EOS before
 * `min_new`, temperature, top-k and top-p thresholds found by the shader's 32-round bisections, greedy argmax or a
 * sample drawn with the shader's counter-based random number, and EOS/pad bookkeeping.
 *
 * Every sum keeps the shader's order — each of the 256 threads owns a contiguous chunk of the vocabulary, chunk sums
 * meet in the halving tree, and the sampling prefix sums are the Hillis–Steele scan — in float32, so thresholds and
 * the sampled token come out the same as on the GPU.
 * @module
 */

import { SAMPLE } from "../../kernels/sampling.ts";
import { defineCpuKernel } from "../kernel_table.ts";
import { mix32 } from "../rng.ts";
import { f, fexp, treeReduce } from "../workgroup.ts";

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

/** The row's logits as `logit_at` reads them: suppressed and early-EOS tokens at −3e38, divided by temperature. */
function rowLogits(p: SampleParams, logits: Float32Array, suppress: Uint32Array, row: number): Float32Array {
  const z = logits.slice(row * p.vocab, (row + 1) * p.vocab);
  for (let i = 0; i < p.vocab; i++) {
    if (i === p.eos && p.step < p.min_new) z[i] = BLOCKED;
    const w = i >>> 5;
    if (w < p.suppress_words && ((suppress[w] >>> (i & 31)) & 1) === 1) z[i] = BLOCKED;
    if (p.greedy === 0) z[i] = f(z[i] / p.temperature);
  }
  return z;
}

/** The contiguous chunk [lo, hi) of thread `lid`. */
function chunkOf(lid: number, vocab: number): [number, number] {
  const chunk = Math.ceil(vocab / WG);
  const lo = Math.min(lid * chunk, vocab);
  return [lo, Math.min(lo + chunk, vocab)];
}

/** Per thread: the float32 sum of exp(z − gmax) over its chunk's z ≥ t. */
function chunkMasses(z: Float32Array, t: number, gmax: number): number[] {
  return Array.from({ length: WG }, (_, lid) => {
    const [lo, hi] = chunkOf(lid, z.length);
    let s = 0;
    for (let i = lo; i < hi; i++) if (z[i] >= t) s = f(s + fexp(f(z[i] - gmax)));
    return s;
  });
}

const fsum = (v: number[]) => treeReduce(WG, (l) => v[l], (a, b) => f(a + b));

/** Per thread: (max z, first index attaining it) over its chunk. */
function chunkMax(z: Float32Array): [number, number][] {
  return Array.from({ length: WG }, (_, lid) => {
    const [lo, hi] = chunkOf(lid, z.length);
    let m = f(-3.4e38), arg = NONE;
    for (let i = lo; i < hi; i++) if (z[i] > m) [m, arg] = [z[i], i];
    return [m, arg];
  });
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
function topPThreshold(p: SampleParams, z: Float32Array, thresh: number, gmax: number): number {
  if (!(p.top_p < 1)) return thresh;
  const total = fsum(chunkMasses(z, thresh, gmax));
  const goal = f(p.top_p * total);
  let a = thresh, b = gmax;
  for (let it = 0; it < 32; it++) {
    const mid = f(a + f(f(b - a) * 0.5));
    if (fsum(chunkMasses(z, mid, gmax)) >= goal) a = mid;
    else b = mid;
  }
  return a;
}

/** Inclusive Hillis–Steele scan of the per-thread masses, in the shader's order of additions. */
function scan(v: number[]): number[] {
  let cur = v.slice();
  for (let off = 1; off < WG; off <<= 1) cur = cur.map((x, lid) => lid >= off ? f(x + cur[lid - off]) : x);
  return cur;
}

/** The sampled token of `row` (NONE when no thread picks one). */
function sampleRow(p: SampleParams, z: Float32Array, gmax: number, row: number): number {
  let gmin = f(3.4e38);
  for (const v of z) if (v > -1.0e38) gmin = Math.min(gmin, v);
  const thresh = topPThreshold(p, z, topKThreshold(p, z, gmin, gmax), gmax);
  const kept = chunkMasses(z, thresh, gmax), incl = scan(kept), keptTotal = incl[WG - 1];
  const bits = mix32(mix32((p.seed ^ mix32(Math.imul(row, 0x9e3779b9))) >>> 0) ^ mix32((p.step + 0x632be5ab) >>> 0));
  const goal = f(f((bits >>> 8) / 16777216) * keptTotal);
  let token = NONE;
  for (let lid = 0; lid < WG; lid++) {
    const before = f(incl[lid] - kept[lid]);
    const last = goal < incl[lid] || lid === WG - 1 || incl[lid] >= keptTotal;
    if (!(kept[lid] > 0 && goal >= before && last)) continue;
    const [lo, hi] = chunkOf(lid, z.length);
    let acc = before, pick = NONE;
    for (let i = lo; i < hi; i++) {
      if (z[i] < thresh) continue;
      pick = i;
      acc = f(acc + fexp(f(z[i] - gmax)));
      if (acc > goal) break;
    }
    token = Math.min(token, pick);
  }
  return token;
}

/** The chosen token of `row`: greedy (first index of the maximum) or sampled. */
function chooseToken(p: SampleParams, z: Float32Array, row: number): number {
  const maxima = chunkMax(z);
  const gmax = treeReduce(WG, (l) => maxima[l][0], Math.max);
  if (p.greedy !== 1) return sampleRow(p, z, gmax, row);
  return Math.min(...maxima.map(([m, arg]) => m === gmax ? arg : NONE));
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
