/**
 * Kernels of attention (engine/ops/attention.ts, attention_math.ts, heads.ts): the fused row kernels
 * (`attention.wgsl`, `attention_backward.wgsl`: one workgroup per query row), the tiled flash-style kernels
 * (`attention_tiled.wgsl`), the masked softmax of materialised scores (`attention_softmax.wgsl`) — all sharing the
 * uniform block of `attention_common.wgsl` — the KV-cache write (`attention_kv.wgsl`) and the head layout copies
 * (`heads.wgsl`).
 * @module
 */

import { type Kernel, kernel, type ParamValues, shaderKernels } from "../kernel.ts";

/** `Params` of `attention_common.wgsl`. */
const ATTENTION_PARAMS = {
  rows: "u32",
  H: "u32",
  Tq: "u32",
  Tk: "u32",
  D: "u32",
  causal: "u32",
  drop_on: "u32",
  drop_threshold: "u32",
  drop_key: "u32",
  drop_scale: "f32",
  scale: "f32",
  Tcap: "u32",
  mstride: "u32",
  nblk: "u32",
} as const;
const attention = shaderKernels("attention", ATTENTION_PARAMS);
const attentionBackward = shaderKernels("attention_backward", ATTENTION_PARAMS);
const attentionSoftmax = shaderKernels("attention_softmax", ATTENTION_PARAMS);
const attentionTiled = shaderKernels("attention_tiled", ATTENTION_PARAMS);

/** The uniform values of every attention kernel: `rows` is the rows (or workgroups) of the dispatch. */
export type AttentionParams = ParamValues<typeof ATTENTION_PARAMS>;

/** Inputs of the backward kernels: forward operands, padding mask, output gradient, logsumexp and Δ. */
const BACKWARD_INPUTS = {
  q: "read",
  k: "read",
  v: "read",
  mask: "read",
  dout: "read",
  lse: "read",
  dlt: "read",
} as const;

/** The tile constants of the tiled kernels (and the padding-mask kind `MASK`). */
const TILE = ["MASK", "DH", "TQ", "TC", "BT", "SR"] as const;

/** Forward, one workgroup per query row: out = softmax(masked scores) · v and the row's logsumexp. */
export const ATTENTION = attention("main", { q: "read", k: "read", v: "read", mask: "read", out: "rw", lse: "rw" }, {
  overrides: ["MASK"],
});
/** Δ[row] = Σ_d out · dout, one thread per row. */
export const ATTENTION_DELTA = attentionBackward("delta", { o_fwd: "read", do_d: "read", delta_out: "rw" });
/** dQ into `g1`, one workgroup per query row. */
export const ATTENTION_GRAD_Q = attentionBackward("grad_q", { ...BACKWARD_INPUTS, g1: "rw" }, { overrides: ["MASK"] });
/** dK into `g1` and dV into `g2`, one workgroup per key row. */
export const ATTENTION_GRAD_KV = attentionBackward("grad_kv", { ...BACKWARD_INPUTS, g1: "rw", g2: "rw" }, {
  overrides: ["MASK"],
});

/** Tiled forward: a workgroup owns 4·TQ query rows and streams BT-row key tiles (online softmax). */
export const ATTENTION_TILED = attentionTiled("fwd", {
  q: "read",
  k: "read",
  v: "read",
  mask: "read",
  out: "rw",
  lse_out: "rw",
}, { overrides: TILE });
/** Tiled dQ into `g1`. */
export const ATTENTION_TILED_GRAD_Q = attentionTiled("grad_q", { ...BACKWARD_INPUTS, g1: "rw" }, { overrides: TILE });
/** Tiled dK into `g1` and dV into `g2`: a workgroup owns 4·TQ key rows and streams query tiles. */
export const ATTENTION_TILED_GRAD_KV = attentionTiled("grad_kv", { ...BACKWARD_INPUTS, g1: "rw", g2: "rw" }, {
  overrides: TILE,
});

/** Masked softmax of scores `s` into `pr` (and after dropout into `pd`), one workgroup of `WG` per row. */
export const ATTENTION_SOFTMAX = attentionSoftmax("fwd", { s: "read", mask: "read", pr: "rw", pd: "rw" }, {
  overrides: ["MASK", "WG"],
});
/** Its backward: `s` holds P, `pd` the gradient of the output, `pr` receives dS. */
export const ATTENTION_SOFTMAX_GRAD = attentionSoftmax("grad", { s: "read", mask: "read", pr: "rw", pd: "rw" }, {
  overrides: ["MASK", "WG"],
});

/** cache[b, h, offset + t, :] = update[b, h, t, :], one thread per element of `update`. */
export const WRITE_KV = kernel({
  shader: "attention_kv",
  params: { n: "u32", T: "u32", D: "u32", Tcap: "u32", offset: "u32" },
  bindings: { update: "read", cache: "rw" },
});

// ------------------------------------------------------------------ head layouts

/** `Params` of `heads.wgsl`: elements, the [B, T, H, D] sizes, parts and the mask of present parts (merge). */
const HEADS_PARAMS = {
  n: "u32",
  T: "u32",
  H: "u32",
  D: "u32",
  parts: "u32",
  mask: "u32",
  _pad0: "u32",
  _pad1: "u32",
} as const;
const heads = shaderKernels("heads", HEADS_PARAMS);

/** A head layout kernel of n parts: bindings `src`, `d1` … `dn`. */
export type HeadsKernel = Kernel<typeof HEADS_PARAMS, string, never>;

/** [B, T, 1·H·D] → one [B, H, T, D] tensor (`src` → `d1`). */
export const SPLIT_HEADS_1 = heads("split1", { src: "read", d1: "rw" });
/** [B, T, 2·H·D] → `d1`, `d2`. */
export const SPLIT_HEADS_2 = heads("split2", { src: "read", d1: "rw", d2: "rw" });
/** [B, T, 3·H·D] → `d1`, `d2`, `d3` (GPT-2's fused q/k/v). */
export const SPLIT_HEADS_3 = heads("split3", { src: "read", d1: "rw", d2: "rw", d3: "rw" });
/** [B, T, 4·H·D] → `d1` … `d4`. */
export const SPLIT_HEADS_4 = heads("split4", { src: "read", d1: "rw", d2: "rw", d3: "rw", d4: "rw" });
/** One [B, H, T, D] part (`src`) → [B, T, H·D] in `d1`. */
export const MERGE_HEADS_1 = heads("merge1", { src: "read", d1: "rw" });
/** Parts `src`, `d1` (zeros where `mask` lacks them) → [B, T, 2·H·D] in `d2`. */
export const MERGE_HEADS_2 = heads("merge2", { src: "read", d1: "rw", d2: "rw" });
/** Parts `src`, `d1`, `d2` → [B, T, 3·H·D] in `d3`. */
export const MERGE_HEADS_3 = heads("merge3", { src: "read", d1: "rw", d2: "rw", d3: "rw" });
/** Parts `src`, `d1` … `d3` → [B, T, 4·H·D] in `d4`. */
export const MERGE_HEADS_4 = heads("merge4", { src: "read", d1: "rw", d2: "rw", d3: "rw", d4: "rw" });
