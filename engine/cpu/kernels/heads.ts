/**
 * CPU kernels of the head layout copies (`heads.wgsl`, declared in `engine/kernels/attention.ts`): splitN copies the
 * N parts of a packed [B, T, N, H, D] tensor into [B, H, T, D] tensors `d1` … `dN`; mergeN copies parts `src`,
 * `d1` … `d(N−1)` (zeros where bit j of `mask` is clear) back into the packed `dN`.
 * @module
 */

import * as K from "../../kernels/attention.ts";
import { type CpuCall, defineCpuKernel, type HostArray } from "../kernel_table.ts";

type Call = CpuCall<typeof K.SPLIT_HEADS_1.params, string, never>;

/** Index in the packed tensor of part 0 of head-layout index i = ((b·H + h)·T + t)·D + d. */
function packedIndex(p: Call["params"], i: number): number {
  const d = i % p.D, r = Math.floor(i / p.D), t = r % p.T, r2 = Math.floor(r / p.T);
  const h = r2 % p.H, b = Math.floor(r2 / p.H);
  return (b * p.T + t) * p.parts * p.H * p.D + h * p.D + d;
}

/** Index in a head tensor of packed-row index i = (b·T + t)·C + c. */
function headIndex(p: Call["params"], i: number): number {
  const C = p.H * p.D, c = i % C, bt = Math.floor(i / C), h = Math.floor(c / p.D), d = c - h * p.D;
  const b = Math.floor(bt / p.T), t = bt - b * p.T;
  return ((b * p.H + h) * p.T + t) * p.D + d;
}

/** The bindings `src`, `d1`, … in order. */
function parts(b: Readonly<Record<string, HostArray>>, count: number): Uint32Array[] {
  return Array.from({ length: count }, (_, j) => (j === 0 ? b.src : b[`d${j}`]).u32);
}

function split(n: number) {
  return ({ params: p, bindings: b }: Call) => {
    const src = b.src.u32, outs = parts(b, n + 1).slice(1), C = p.H * p.D;
    for (let i = 0; i < p.n; i++) {
      const s = packedIndex(p, i);
      for (let j = 0; j < n; j++) outs[j][i] = src[s + j * C];
    }
  };
}

function merge(n: number) {
  return ({ params: p, bindings: b }: Call) => {
    const ins = parts(b, n), out = b[`d${n}`].u32, C = p.H * p.D;
    for (let i = 0; i < p.n; i++) {
      const g = headIndex(p, i), bt = Math.floor(i / C), o = bt * p.parts * C + (i - bt * C);
      for (let j = 0; j < n; j++) out[o + j * C] = ((p.mask >>> j) & 1) !== 0 ? ins[j][g] : 0;
    }
  };
}

const SPLITS = [K.SPLIT_HEADS_1, K.SPLIT_HEADS_2, K.SPLIT_HEADS_3, K.SPLIT_HEADS_4];
const MERGES = [K.MERGE_HEADS_1, K.MERGE_HEADS_2, K.MERGE_HEADS_3, K.MERGE_HEADS_4];
SPLITS.forEach((k, j) => defineCpuKernel(k, split(j + 1), { exact: true }));
MERGES.forEach((k, j) => defineCpuKernel(k, merge(j + 1), { exact: true }));
