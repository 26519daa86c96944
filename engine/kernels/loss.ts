/**
 * Kernels of the losses over logits: cross-entropy, per-token log-probabilities and entropy (`cross_entropy.wgsl`,
 * engine/ops/loss.ts, one workgroup per row computing logsumexp on the fly), PPO's fused loss (`ppo_loss.wgsl`) and
 * the full-distribution KL (`ppo_kl.wgsl`, ppo/loss.ts).
 * @module
 */

import { kernel, shaderKernels } from "../kernel.ts";

/** `Params` of `cross_entropy.wgsl`; `nan_bits` is the bit pattern written for out-of-range targets. */
const CROSS_ENTROPY_PARAMS = {
  rows: "u32",
  n: "u32",
  ignore: "i32",
  mean: "u32",
  gscalar: "u32",
  total: "u32",
  nan_bits: "u32",
  _pad1: "u32",
} as const;
const crossEntropy = shaderKernels("cross_entropy", CROSS_ENTROPY_PARAMS);

/**
 * Per row of logits `x` [rows, n]: the loss of mode `MODE` (0 log-prob of target `t`, 1 cross-entropy, 2 entropy)
 * into `out` and the row's logsumexp into `lse`; `WG` threads per row.
 */
export const CROSS_ENTROPY = crossEntropy("main", { x: "read", t: "read", out: "rw", lse: "rw" }, {
  overrides: ["MODE", "WG"],
});
/** Sum (or mean over non-ignored targets) of the per-row losses `x` into `out[0]`, the count into `lse[0]`. */
export const CROSS_ENTROPY_REDUCE = crossEntropy("reduce", { x: "read", t: "read", out: "rw", lse: "rw" }, {
  overrides: ["MODE", "WG"],
});
/** Gradient w.r.t. the logits into `out`, one thread per logit: `g` the output gradient, `extra` count or entropy. */
export const CROSS_ENTROPY_GRAD = crossEntropy("grad", {
  x: "read",
  t: "read",
  out: "rw",
  lse: "rw",
  g: "read",
  extra: "read",
}, { overrides: ["MODE", "WG"] });

/** `Params` of `ppo_loss.wgsl`. */
const PPO_LOSS_PARAMS = {
  n: "u32",
  has_entropy: "u32",
  cliprange: "f32",
  cliprange_value: "f32",
  vf_coef: "f32",
  ratio_threshold: "f32",
  _pad0: "u32",
  _pad1: "u32",
} as const;
const ppoLoss = shaderKernels("ppo_loss", PPO_LOSS_PARAMS);

/**
 * PPO's loss (TRL's `PPOTrainer.loss`) of log-probs `lp` and values `vp` against the rollout data `packed` [6, n]:
 * the scalar loss into `scalar` and its statistics into `stats`. One workgroup.
 */
export const PPO_LOSS = ppoLoss("main", { lp: "read", vp: "read", packed: "read", stats: "rw", scalar: "rw" });
/** Its gradients `dlp`, `dvp` given the statistics and the loss gradient in `scalar`; one thread per element. */
export const PPO_LOSS_GRAD = ppoLoss("grad", {
  lp: "read",
  vp: "read",
  packed: "read",
  stats: "rw",
  scalar: "rw",
  dlp: "rw",
  dvp: "rw",
});

/** Per row: KL(softmax(x·inv_temp) ‖ softmax(y·inv_temp)) into `kl`, one workgroup per row. */
export const PPO_KL = kernel({
  shader: "ppo_kl",
  params: { rows: "u32", n: "u32", inv_temp: "f32", _pad: "u32" },
  bindings: { x: "read", y: "read", kl: "rw" },
});
