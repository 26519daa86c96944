/**
 * CPU kernels of the head layout copies (`heads.wgsl`, declared in `engine/kernels/attention.ts`): splitN copies the
 * N parts of a packed [B, T, N, H, D] tensor into [B, H, T, D] tensors `d1` … `dN`; mergeN copies parts `src`,
 * `d1` … `d(N−1)` (zeros where bit j of `mask` is clear) back into the packed `dN`.
 * @module
 */

import * as K from "../../kernels/attention.ts";
import { type CpuCall, defineCpuKernel, type HostArray } from "../kernel_table.ts";

type Call = CpuCall<typeof K.SPLIT_HEADS_1.params, string, never>;

/** The bindings `src`, `d1`, … in order. */
function parts(b: Readonly<Record<string, HostArray>>, count: number): Uint32Array[] {
  return Array.from({ length: count }, (_, j) => (j === 0 ? b.src : b[`d${j}`]).u32);
}

// Both layouts are rows of D contiguous words: head-layout row r = (b·H + h)·T + t is packed row (b·T + t), head h.
// The copies move such rows whole, stopping where `n` (the elements the dispatch covers) ends.

function split(n: number) {
  return ({ params: p, bindings: b }: Call) => {
    const src = b.src.u32, outs = parts(b, n + 1).slice(1), D = p.D, C = p.H * D, rowLen = p.parts * C;
    for (let r = 0; r * D < p.n; r++) {
      const t = r % p.T, bh = (r - t) / p.T, h = bh % p.H, bb = (bh - h) / p.H;
      const from = (bb * p.T + t) * rowLen + h * D, at = r * D, len = Math.min(D, p.n - at);
      for (let j = 0; j < n; j++) outs[j].set(src.subarray(from + j * C, from + j * C + len), at);
    }
  };
}

function merge(n: number) {
  return ({ params: p, bindings: b }: Call) => {
    const ins = parts(b, n), out = b[`d${n}`].u32, D = p.D, C = p.H * D, rowLen = p.parts * C;
    for (let i0 = 0; i0 < p.n; i0 += D) {
      const bt = Math.floor(i0 / C), h = (i0 - bt * C) / D, t = bt % p.T, bb = (bt - t) / p.T;
      const from = ((bb * p.H + h) * p.T + t) * D, at = bt * rowLen + h * D, len = Math.min(D, p.n - i0);
      for (let j = 0; j < n; j++) {
        const o = at + j * C;
        if (((p.mask >>> j) & 1) !== 0) out.set(ins[j].subarray(from, from + len), o);
        else out.fill(0, o, o + len);
      }
    }
  };
}

const SPLITS = [K.SPLIT_HEADS_1, K.SPLIT_HEADS_2, K.SPLIT_HEADS_3, K.SPLIT_HEADS_4];
const MERGES = [K.MERGE_HEADS_1, K.MERGE_HEADS_2, K.MERGE_HEADS_3, K.MERGE_HEADS_4];
SPLITS.forEach((k, j) => defineCpuKernel(k, split(j + 1), { exact: true }));
MERGES.forEach((k, j) => defineCpuKernel(k, merge(j + 1), { exact: true }));
