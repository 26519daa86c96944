/**
 * CPU kernels of the indexing family (`engine/kernels/indexing.ts`), all moving 32-bit words: gather and
 * index-select (`gather.wgsl`), the (key, value) pairs and bitonic sort steps of the deterministic scatter-add
 * (`index_sort.wgsl`) and its run sums (`scatter_add.wgsl`), masked fill and where (`masked_fill.wgsl`), block copies
 * (`slice.wgsl`) and strided copies (`permute.wgsl`).
 *
 * Every sort dispatch leaves the key/value arrays word for word as the shader's compare-exchange network does: the
 * global steps apply its disjoint pairs in sequence (equal to applying them at once), and the in-block sorts, whose
 * networks end in a sorted block, sort it directly (see `sortBlock`).
 * @module
 */

import * as K from "../../kernels/indexing.ts";
import { f } from "../workgroup.ts";
import { defineCpuKernel } from "../kernel_table.ts";

const DROP = 0xffffffff;
const BLOCK = 512;
const CHUNK = 64;
const exact = { exact: true };

/**
 * Word offset of row-major element `i` of `shape` (the first `ndim` lanes) in an array with `stride`, leaving out
 * dimension `skip` (as the shaders' coordinate loops).
 */
function stridedOffset(i: number, ndim: number, shape: number[], stride: number[], skip = -1): number {
  let rem = i, off = 0;
  for (let d = ndim - 1; d >= 0; d--) {
    if (d !== skip) off += (rem % shape[d]) * stride[d];
    rem = Math.floor(rem / shape[d]);
  }
  return off;
}

// ---------------------------------------------------------------- gather.wgsl

defineCpuKernel(K.GATHER, ({ params: p, bindings: b }) => {
  const x = b.x.u32, index = b.index.i32, out = b.out.u32;
  for (let i = 0; i < p.n; i++) {
    const v = index[i];
    const off = stridedOffset(i, p.a, p.shape, p.stride, p.b);
    out[i] = v < 0 || v >= p.c ? 0 : x[off + v * p.stride[p.b]];
  }
}, exact);

defineCpuKernel(K.INDEX_SELECT, ({ params: p, bindings: b }) => {
  // Row by row: out row r is x's row index[r mod K] of block ⌊r / K⌋ (zeros for an index out of range).
  const x = b.x.u32, index = b.index.i32, out = b.out.u32, n = p.n, K = p.a, V = p.b, c = p.c;
  for (let r = 0, i = 0; i < n; r++, i += c) {
    const end = Math.min(i + c, n), o = Math.floor(r / K), v = index[r - o * K];
    if (v < 0 || v >= V) out.fill(0, i, end);
    else out.set(x.subarray((o * V + v) * c, (o * V + v) * c + (end - i)), i);
  }
}, exact);

// ---------------------------------------------------------------- index_sort.wgsl

defineCpuKernel(K.SORT_KEYS_ROWS, ({ params: p, bindings: b }) => {
  const index = b.index.i32, keys = b.keys.u32, vals = b.vals.u32;
  for (let e = 0; e < p.total; e++) {
    let key = DROP;
    if (e < p.m) {
      const o = Math.floor(e / p.a), v = index[e - o * p.a];
      if (v >= 0 && v < p.b) key = o * p.b + v;
    }
    keys[e] = key;
    vals[e] = e;
  }
}, exact);

defineCpuKernel(K.SORT_KEYS_GATHER, ({ params: p, bindings: b }) => {
  const index = b.index.i32, keys = b.keys.u32, vals = b.vals.u32;
  for (let e = 0; e < p.total; e++) {
    let key = DROP;
    if (e < p.m) {
      const v = index[e];
      if (v >= 0 && v < p.c) key = stridedOffset(e, p.a, p.shape, p.stride, p.b) + v * p.stride[p.b];
    }
    keys[e] = key;
    vals[e] = e;
  }
}, exact);

/**
 * One bitonic compare-exchange of pair number `t` at distance `j` in stage `k`: positions i and i + j swap when
 * their order disagrees with the direction (ascending where position i has bit k clear).
 */
function exchange(keys: Uint32Array, vals: Uint32Array, t: number, k: number, j: number): void {
  const i = (t & ~(j - 1)) * 2 + (t & (j - 1)), l = i + j;
  const ka = keys[i], va = vals[i], kb = keys[l], vb = vals[l];
  const bFirst = kb < ka || (kb === ka && vb < va);
  if (bFirst === ((i & k) === 0)) {
    keys[i] = kb;
    vals[i] = vb;
    keys[l] = ka;
    vals[l] = va;
  }
}

/** Largest pair count whose values (< total) fit beside a 32-bit key in a float64's 53-bit integer range. */
const PACKED_LIMIT = 2 ** 21;
let packed = new Float64Array(BLOCK);
let order = new Uint32Array(BLOCK);

/**
 * Sorts the pairs [lo, lo + BLOCK) by (key, value), ascending or descending. A whole network of compare-exchanges
 * on a block (all of a stage's steps below the block size) ends in the block sorted in its direction — the local sort
 * from any order, the local merge from the bitonic order the global steps leave — and the sorted order of distinct
 * (key, value) pairs (values are distinct positions) is unique, so one sort gives the network's words exactly.
 * Pairs are packed as key · 2²¹ + value into float64 (exact below 2⁵³) and sorted natively; larger arrays sort an
 * index permutation instead (`packedLimit` lowers the switch, for tests).
 */
export function sortBlock(
  keys: Uint32Array,
  vals: Uint32Array,
  lo: number,
  ascending: boolean,
  total: number,
  packedLimit: number = PACKED_LIMIT,
): void {
  const n = Math.min(BLOCK, total - lo);
  if (total <= packedLimit) {
    if (packed.length < n) packed = new Float64Array(n);
    const v = packed.subarray(0, n);
    for (let i = 0; i < n; i++) v[i] = keys[lo + i] * PACKED_LIMIT + vals[lo + i];
    v.sort();
    for (let i = 0; i < n; i++) {
      const x = ascending ? v[i] : v[n - 1 - i], key = Math.floor(x / PACKED_LIMIT);
      keys[lo + i] = key;
      vals[lo + i] = x - key * PACKED_LIMIT;
    }
    return;
  }
  if (order.length < 2 * n) order = new Uint32Array(2 * n);
  const idx = Array.from({ length: n }, (_, i) => lo + i);
  idx.sort((a, b) => keys[a] - keys[b] || vals[a] - vals[b]);
  if (!ascending) idx.reverse();
  for (let i = 0; i < n; i++) {
    order[i] = keys[idx[i]];
    order[n + i] = vals[idx[i]];
  }
  keys.set(order.subarray(0, n), lo);
  vals.set(order.subarray(n, 2 * n), lo);
}

/** Every 512-pair block sorted in its direction at stage `k`: ascending where the block's first position has bit k clear. */
function sortBlocks(keys: Uint32Array, vals: Uint32Array, total: number, k: number): void {
  for (let lo = 0; lo < total; lo += BLOCK) sortBlock(keys, vals, lo, (lo & k) === 0, total);
}

defineCpuKernel(K.SORT_LOCAL, ({ params: p, bindings: b }) => {
  sortBlocks(b.keys.u32, b.vals.u32, p.total, BLOCK); // stages 2 … 512
}, exact);

defineCpuKernel(K.SORT_LOCAL_MERGE, ({ params: p, bindings: b }) => {
  sortBlocks(b.keys.u32, b.vals.u32, p.total, p.a); // steps 256 … 1 of stage a
}, exact);

defineCpuKernel(K.SORT_GLOBAL_STEP, ({ params: p, bindings: b }) => {
  const keys = b.keys.u32, vals = b.vals.u32, half = p.total / 2, k = p.a, j = p.b;
  for (let t = 0; t < half; t++) exchange(keys, vals, t, k, j);
}, exact);

// ---------------------------------------------------------------- scatter_add.wgsl

/** Float32 sum of src[vals[e], j] for e from `start` while keys[e] = key and e < end; returns [sum, stop]. */
function runSum(
  keys: Uint32Array,
  vals: Uint32Array,
  src: Float32Array,
  inner: number,
  j: number,
  range: [number, number],
): [number, number] {
  const key = keys[range[0]];
  let acc = 0, e = range[0];
  for (; e < range[1] && keys[e] === key; e++) acc = f(acc + src[vals[e] * inner + j]);
  return [acc, e];
}

defineCpuKernel(K.SCATTER_CHUNK_PARTIALS, ({ params: p, bindings: b }) => {
  const keys = b.keys.u32, vals = b.vals.u32, src = b.src.f32;
  for (let start = CHUNK, c = 1; start < p.m; start += CHUNK, c++) {
    const key = keys[start];
    if (key >= p.rows || keys[start - 1] !== key) continue;
    const end = Math.min(start + CHUNK, p.m);
    for (let j = 0; j < p.inner; j++) b.out.f32[c * p.inner + j] = runSum(keys, vals, src, p.inner, j, [start, end])[0];
  }
}, exact); // the same float32 additions in the same order

defineCpuKernel(K.SCATTER_ADD, ({ params: p, bindings: b }) => {
  const keys = b.keys.u32, vals = b.vals.u32, src = b.src.f32, partials = b.partials.f32, out = b.out.f32;
  const inner = p.inner, acc = new Float32Array(inner); // float32 stores: the shader's additions, in its order
  for (let k = 0; k < p.m; k++) {
    const key = keys[k];
    if (key >= p.rows || (k > 0 && keys[k - 1] === key)) continue;
    // The run of `key` within k's chunk, then (if it reaches the chunk's end) the later chunks' partial sums.
    const end = Math.min((Math.floor(k / CHUNK) + 1) * CHUNK, p.m);
    acc.fill(0);
    let e = k;
    for (; e < end && keys[e] === key; e++) {
      const row = vals[e] * inner;
      for (let j = 0; j < inner; j++) acc[j] += src[row + j];
    }
    if (e === end && end < p.m) {
      for (let c = end / CHUNK; c * CHUNK < p.m && keys[c * CHUNK] === key; c++) {
        for (let j = 0; j < inner; j++) acc[j] += partials[c * inner + j];
      }
    }
    out.set(acc, key * inner);
  }
}, exact);

// ---------------------------------------------------------------- masked_fill.wgsl

/** masked_fill.wgsl's is_set: non-zero (±0.0 both zero for f32 masks), flipped by INVERT. */
function maskTest(overrides: { MASK_F32?: number; INVERT?: number }): (bits: number) => boolean {
  const f32 = (overrides.MASK_F32 ?? 0) === 1, invert = (overrides.INVERT ?? 0) === 1;
  return (bits) => ((f32 ? bits & 0x7fffffff : bits) !== 0) !== invert;
}

defineCpuKernel(K.MASKED_FILL, ({ params: p, bindings: b, overrides: o }) => {
  const set = maskTest(o), a = b.a.u32, mask = b.mask.u32, out = b.out.u32;
  for (let i = 0; i < p.n; i++) {
    out[i] = set(mask[stridedOffset(i, p.ndim, p.shape, p.mstride)]) ? p.value : a[i];
  }
}, exact);

defineCpuKernel(K.WHERE_SELECT, ({ params: p, bindings: b, overrides: o }) => {
  const set = maskTest(o), mask = b.mask.u32, out = b.out.u32;
  for (let i = 0; i < p.n; i++) {
    const take = set(mask[stridedOffset(i, p.ndim, p.shape, p.mstride)]);
    out[i] = take
      ? b.a.u32[stridedOffset(i, p.ndim, p.shape, p.astride)]
      : b.b.u32[stridedOffset(i, p.ndim, p.shape, p.bstride)];
  }
}, exact);

// ---------------------------------------------------------------- slice.wgsl, permute.wgsl

defineCpuKernel(K.SLICE, ({ params: p, bindings: b }) => {
  const src = b.src.u32, dst = b.dst.u32, chunk = p.chunk;
  // Whole chunks of `chunk` words row by row, then the part of a last chunk that `n` covers.
  for (let o = 0, done = 0; done < p.n; o++, done += chunk) {
    const len = Math.min(chunk, p.n - done), from = o * p.srcRow + p.srcOff;
    dst.set(src.subarray(from, from + len), o * p.dstRow + p.dstOff);
  }
}, exact);

defineCpuKernel(K.PERMUTE, ({ params: p, bindings: b }) => {
  const src = b.src.u32, dst = b.dst.u32;
  for (let i = 0; i < p.n; i++) dst[i] = src[stridedOffset(i, p.ndim, p.shape, p.stride)];
}, exact);
