/**
 * The forward passes of a PPO step on the GPU: the model inputs of a padded batch's rows, the response positions'
 * logits and values, and the rollout pass of policy and reference (eval mode, no gradients, in chunks of
 * `mini_batch_size` as TRL's `batched_forward_pass`, one readback).
 * @module
 */

import { keep, noGrad, readAll, type Tensor, tensor, tidy } from "../engine/tensor.ts";
import { matmul } from "../engine/ops/matmul.ts";
import { slice } from "../engine/ops/shape.ts";
import { logProbsOf } from "../engine/ops/loss.ts";
import type { GPT2LMHeadModel } from "../models/gpt2.ts";
import type { CausalLMWithValueHead } from "../models/value_head.ts";
import type { PaddedBatch } from "./batch.ts";
import { fullKl } from "./loss.ts";
import type { Rows } from "./rows.ts";

/** Model inputs for some rows of a padded batch, with their response ids apart. */
export interface BatchInputs {
  /** Input ids [rows, Tq + R]. */
  inputIds: Tensor;
  /** Attention mask rows. */
  attentionMask: number[][];
  /** Position ids [rows, Tq + R]. */
  positionIds: Tensor;
  /** Response ids [rows, R] (the tokens whose log-probabilities PPO uses). */
  respIds: Tensor;
}

/** Model inputs for rows `rows` of the batch. */
export function batchInputs(batch: PaddedBatch, rows: number[]): BatchInputs {
  const T = batch.Tq + batch.R;
  return {
    inputIds: tensor(rows.flatMap((i) => batch.ids[i]), [rows.length, T], "i32"),
    attentionMask: rows.map((i) => batch.attn[i]),
    positionIds: tensor(rows.flatMap((i) => batch.pos[i]), [rows.length, T], "i32"),
    respIds: tensor(rows.flatMap((i) => batch.resp[i]), [rows.length, batch.R], "i32"),
  };
}

/** Logits of the response positions (columns Tq−1 … Tq+R−2) divided by the temperature: [b, R, V]. */
export function responseLogits(
  model: GPT2LMHeadModel,
  hidden: Tensor,
  Tq: number,
  R: number,
  temperature: number,
): Tensor {
  const h = slice(hidden, 1, Tq - 1, Tq - 1 + R);
  return matmul(h, model.lmHead, { transB: true, alpha: 1 / temperature });
}

/** The values of the response positions (columns Tq−1 … Tq+R−2): [b, R]. */
export function responseValues(values: Tensor, Tq: number, R: number): Tensor {
  return slice(values, 1, Tq - 1, Tq - 1 + R);
}

/** What the rollout pass reads back, as `[B, R]` rows. */
export interface RolloutForward {
  /** Policy log-probabilities of the response tokens. */
  logprobs: Rows;
  /** Reference log-probabilities. */
  refLogprobs: Rows;
  /** Policy values. */
  values: Rows;
  /** Per-token KL(π‖π_ref) over the vocabulary ("full" KL penalty), else null. */
  kls: Rows | null;
}

/** Settings of {@linkcode rolloutForward}. */
export interface RolloutSettings {
  /** Rows per forward pass (mini_batch_size). */
  chunkSize: number;
  /** The sampling temperature the logits are divided by. */
  temperature: number;
  /** Also compute the full per-token KL (kl_penalty "full"). */
  fullKl: boolean;
}

/** Eval-mode, no-grad forward of policy and reference over the batch in chunks; one readback. */
export async function rolloutForward(
  policy: CausalLMWithValueHead,
  ref: GPT2LMHeadModel,
  batch: PaddedBatch,
  settings: RolloutSettings,
): Promise<RolloutForward> {
  const { B, R } = batch;
  const chunkSize = settings.chunkSize;
  policy.eval();
  ref.eval();
  const chunks: Tensor[][] = [];
  try {
    for (let start = 0; start < B; start += chunkSize) {
      const rows = Array.from({ length: Math.min(chunkSize, B - start) }, (_, k) => start + k);
      chunks.push(keep(tidy(() => noGrad(() => forwardChunk(policy, ref, batch, rows, settings)))));
    }
    const flat = await readAll(chunks.flat());
    const perChunk = settings.fullKl ? 4 : 3;
    const join = (k: number) => {
      const out = new Float32Array(B * R);
      chunks.forEach((_, ci) => out.set(flat[ci * perChunk + k], ci * chunkSize * R));
      return toRows(out, B, R);
    };
    return { logprobs: join(0), refLogprobs: join(1), values: join(2), kls: settings.fullKl ? join(3) : null };
  } finally {
    for (const t of chunks.flat()) t.dispose();
  }
}

/** One chunk's policy and reference log-probabilities, values (and full KL): tensors [rows, R]. */
function forwardChunk(
  policy: CausalLMWithValueHead,
  ref: GPT2LMHeadModel,
  batch: PaddedBatch,
  rows: number[],
  settings: RolloutSettings,
): Tensor[] {
  const { Tq, R } = batch;
  const { respIds, ...inputs } = batchInputs(batch, rows);
  const out = policy.forward({ ...inputs, skipLogits: true });
  const logits = responseLogits(policy.model, out.hidden!, Tq, R, settings.temperature);
  const refOut = ref.forward({ ...inputs, skipLogits: true, outputHidden: true });
  const refLogits = responseLogits(ref, refOut.hidden!, Tq, R, settings.temperature);
  const results = [logProbsOf(logits, respIds), logProbsOf(refLogits, respIds), responseValues(out.values, Tq, R)];
  if (settings.fullKl) results.push(fullKl(logits, refLogits));
  return results;
}

/** A flat `[B·R]` array as B rows of R numbers. */
function toRows(flat: ArrayLike<number>, B: number, R: number): Rows {
  return Array.from({ length: B }, (_, b) => Array.from({ length: R }, (_, t) => flat[b * R + t]));
}
