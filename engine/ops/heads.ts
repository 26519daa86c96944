/**
 * Fused attention-head layout ops: {@linkcode splitHeads} turns a fused projection [B, T, n·C] into n
 * head tensors [B, H, T, D] in one dispatch, and {@linkcode mergeHeads} turns [B, H, T, D] back into
 * [B, T, H·D] in one dispatch. Their backwards are the opposite copy, again one dispatch: the
 * gradients of all n parts of a split are written into one [B, T, n·C] gradient together.
 * @module
 */

import type { StorageBuffer } from "../storage.ts";
import { grid1d, type Storage } from "../runtime.ts";
import {
  type HeadsKernel,
  MERGE_HEADS_1,
  MERGE_HEADS_2,
  MERGE_HEADS_3,
  MERGE_HEADS_4,
  SPLIT_HEADS_1,
  SPLIT_HEADS_2,
  SPLIT_HEADS_3,
  SPLIT_HEADS_4,
} from "../kernels/attention.ts";
import { check, empty, runtime, type Tensor } from "../tensor.ts";
import { needsGrad, record, recordMulti } from "../autograd.ts";
import { reshape } from "./shape.ts";

/** Most parts {@linkcode splitHeads} handles in one dispatch (storage-binding limits). */
export const MAX_HEAD_PARTS = 4;

function fmt(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

interface HeadDims {
  B: number;
  T: number;
  H: number;
  D: number;
}

/** split{n} and merge{n} by n − 1. */
const SPLIT: readonly HeadsKernel[] = [SPLIT_HEADS_1, SPLIT_HEADS_2, SPLIT_HEADS_3, SPLIT_HEADS_4];
const MERGE: readonly HeadsKernel[] = [MERGE_HEADS_1, MERGE_HEADS_2, MERGE_HEADS_3, MERGE_HEADS_4];

/** The storages of a head-layout kernel by binding name: `src`, then `d1`, `d2`, … */
function headBindings(storages: readonly Storage[]): Record<string, Storage> {
  const bindings: Record<string, Storage> = { src: storages[0] };
  for (let i = 1; i < storages.length; i++) bindings[`d${i}`] = storages[i];
  return bindings;
}

/** x [B, T, n·H·D] → n new tensors [B, H, T, D] (one dispatch, no autograd). */
function splitRaw(x: Tensor, { B, T, H, D }: HeadDims, n: number): Tensor[] {
  const outs = Array.from({ length: n }, () => empty([B, H, T, D]));
  const size = B * H * T * D;
  if (size > 0) {
    const bindings = headBindings([x.storage, ...outs.map((o) => o.storage)]);
    runtime().run(SPLIT[n - 1], { n: size, T, H, D, parts: n, mask: 0 }, bindings, grid1d(size));
  }
  return outs;
}

/**
 * n parts [B, H, T, D] (null = zeros) → a new [B, T, n·H·D] tensor (one dispatch, no autograd).
 * A part whose buffer is already bound for an earlier part is copied first (a buffer cannot be bound
 * both read-only and writable in one dispatch); this does not happen with the engine's own gradients.
 */
function mergeRaw(parts: readonly (Tensor | null)[], { B, T, H, D }: HeadDims): Tensor {
  const n = parts.length;
  const out = empty([B, T, n * H * D]);
  const size = B * H * T * D;
  if (size === 0) return out;
  const rt = runtime();
  const temps: Storage[] = [];
  const seen = new Set<StorageBuffer>();
  let mask = 0;
  const bound = parts.map((t, j) => {
    if (!t) {
      const dummy = rt.alloc(4);
      temps.push(dummy);
      return dummy;
    }
    mask |= 1 << j;
    let s = t.storage;
    if (seen.has(s.buffer)) {
      const copy = rt.alloc(size * 4);
      rt.copy(s, 0, copy, 0, size * 4);
      temps.push(copy);
      s = copy;
    }
    seen.add(s.buffer);
    return s;
  });
  const params = { n: size, T, H, D, parts: n, mask };
  rt.run(MERGE[n - 1], params, headBindings([...bound, out.storage]), grid1d(size));
  for (const s of temps) s.release();
  return out;
}

/**
 * Splits a fused projection `x` [B, T, n·C] into `n` tensors [B, H, T, D] (H = `heads`, D = C / H):
 * part j holds columns j·C … (j + 1)·C − 1 with head h at columns h·D … (h + 1)·D − 1 of the part,
 * i.e. `permute(reshape(slice(x, 2, j·C, (j + 1)·C), [B, T, H, D]), [0, 2, 1, 3])` for each j — all
 * parts in one dispatch. `n = 3` splits GPT-2's fused q/k/v projection; `n = 1` lays out one
 * projection by heads. f32 only, 1 ≤ n ≤ {@linkcode MAX_HEAD_PARTS}.
 *
 * Backward writes the gradients of all parts into one [B, T, n·C] gradient in one dispatch (parts
 * without a gradient count as zero): the parts share one multi-output autograd node.
 *
 * @param x f32 [B, T, n·C]
 * @param heads number of heads H (C must be divisible by it)
 * @param n number of parts (default 3)
 * @returns n tensors [B, H, T, D]
 */
export function splitHeads(x: Tensor, heads: number, n = 3): Tensor[] {
  check(x.dtype === "f32", "splitHeads", `x must be f32, got ${x.dtype} ${fmt(x.shape)}`);
  check(x.ndim === 3, "splitHeads", `x must be [batch, seq, parts·channels], got ${fmt(x.shape)}`);
  check(
    Number.isInteger(n) && n >= 1 && n <= MAX_HEAD_PARTS,
    "splitHeads",
    `parts n = ${n} must be an integer in [1, ${MAX_HEAD_PARTS}]`,
  );
  check(Number.isInteger(heads) && heads >= 1, "splitHeads", `heads = ${heads} must be a positive integer`);
  const [B, T, W] = x.shape;
  check(
    W % (n * heads) === 0,
    "splitHeads",
    `last dim of ${fmt(x.shape)} is not divisible by ${n} parts × ${heads} heads`,
  );
  const dims: HeadDims = { B, T, H: heads, D: W / (n * heads) };
  // One part whose layout does not change (one head or one position): a view, like permute.
  if (n === 1 && (heads === 1 || T === 1)) return [reshape(x, [B, heads, T, dims.D])];
  const outs = splitRaw(x, dims, n);
  if (!needsGrad(x)) return outs;
  // One node for all parts: its backward merges whichever part gradients arrived into dx (one dispatch).
  return recordMulti(outs, "splitHeads", [x], (grads) => [mergeRaw(grads, dims)]);
}

/**
 * Merges heads: `x` [B, H, T, D] → [B, T, H·D], i.e. `reshape(permute(x, [0, 2, 1, 3]), [B, T, H·D])`
 * in one dispatch (a view when H or T is 1). Backward is the opposite copy. f32 only.
 *
 * @param x f32 [B, H, T, D]
 * @returns [B, T, H·D]
 */
export function mergeHeads(x: Tensor): Tensor {
  check(x.dtype === "f32", "mergeHeads", `x must be f32, got ${x.dtype} ${fmt(x.shape)}`);
  check(x.ndim === 4, "mergeHeads", `x must be [batch, heads, seq, headDim], got ${fmt(x.shape)}`);
  const [B, H, T, D] = x.shape;
  if (H === 1 || T === 1) return reshape(x, [B, T, H * D]);
  const dims: HeadDims = { B, T, H, D };
  const out = mergeRaw([x], dims);
  if (!needsGrad(x)) return out;
  return record(out, "mergeHeads", [x], (g) => splitRaw(g, dims, 1));
}
