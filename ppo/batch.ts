/**
 * A PPO batch as the model sees it: queries left-padded and responses right-padded into one input, with
 * attention mask, position ids and response mask; and the validation of caller-given response masks.
 * @module
 */

import { positionIdsFromMask } from "../models/gpt2.ts";
import type { Rows } from "./rows.ts";

/** A padded PPO batch: queries left-padded to Tq, responses right-padded to R, input = [query | response]. */
export interface PaddedBatch {
  /** Rows. */
  B: number;
  /** Longest query. */
  Tq: number;
  /** Longest response. */
  R: number;
  /** Input ids [B, Tq + R]. */
  ids: number[][];
  /** Attention mask [B, Tq + R] (0 on every pad). */
  attn: number[][];
  /** Position ids from the mask. */
  pos: number[][];
  /** Response ids [B, R] (padded). */
  resp: number[][];
  /** Response mask [B, R]. */
  mask: Rows;
}

/** Lays out a batch; response token t's log-prob and value come from column Tq − 1 + t. */
export function layoutBatch(queries: number[][], responses: number[][], pad: number): PaddedBatch {
  const B = queries.length;
  const Tq = Math.max(...queries.map((q) => q.length));
  const R = Math.max(...responses.map((r) => r.length));
  const ids: number[][] = [], attn: number[][] = [], resp: number[][] = [], mask: Rows = [];
  for (let b = 0; b < B; b++) {
    const q = queries[b], r = responses[b];
    const qp = Tq - q.length, rp = R - r.length;
    resp.push([...r, ...new Array(rp).fill(pad)]);
    mask.push([...new Array(r.length).fill(1), ...new Array(rp).fill(0)]);
    ids.push([...new Array(qp).fill(pad), ...q, ...resp[b]]);
    attn.push([...new Array(qp).fill(0), ...new Array(q.length).fill(1), ...mask[b]]);
  }
  return { B, Tq, R, ids, attn, pos: positionIdsFromMask(attn), resp, mask };
}

/** Validates TRL's `response_masks`: one row of 0/1 per response, as long as it, with at least one 1. */
export function checkResponseMasks(masks: readonly (readonly number[])[], responses: number[][]): void {
  const fail = (m: string) => {
    throw new Error(`PPOTrainer.step: responseMasks ${m}`);
  };
  if (!Array.isArray(masks) || masks.length !== responses.length) {
    fail(`needs one row per response (${responses.length}), got ${Array.isArray(masks) ? masks.length : typeof masks}`);
  }
  masks.forEach((row, b) => {
    if (!Array.isArray(row) || row.length !== responses[b].length) {
      fail(`row ${b} must have ${responses[b].length} entries (one per response token)`);
    }
    if (!row.every((m) => m === 0 || m === 1)) fail(`row ${b} must hold only 0 and 1`);
    if (!row.includes(1)) fail(`row ${b} masks every token (the score needs a token marked 1)`);
  });
}

/** Limits {@linkcode checkStepInputs} checks against. */
export interface StepInputLimits {
  /** The configured batch_size (every array must have exactly this length). */
  batchSize: number;
  /** Vocabulary size (token ids must be below it). */
  vocabSize: number;
  /** Context length of policy and reference (the smaller one). */
  nPositions: number;
}

/**
 * Validates `PPOTrainer.step`'s inputs: batch_size queries, responses and scores, non-empty rows of token ids in the
 * vocabulary, finite scores, and the longest query plus the longest response within the context.
 */
export function checkStepInputs(
  queries: number[][],
  responses: number[][],
  scores: number[],
  limits: StepInputLimits,
): void {
  const { batchSize, vocabSize: V, nPositions } = limits;
  for (const [name, x] of [["queries", queries], ["responses", responses], ["scores", scores]] as const) {
    if (!Array.isArray(x)) throw new Error(`PPOTrainer.step: ${name} must be an array`);
    if (x.length !== batchSize) {
      throw new Error(
        `PPOTrainer.step: got ${x.length} ${name}, but batch_size is ${batchSize} (TRL requires exactly that)`,
      );
    }
  }
  for (const [name, rows] of [["query", queries], ["response", responses]] as const) {
    rows.forEach((r, i) => {
      if (!Array.isArray(r) || r.length === 0) throw new Error(`PPOTrainer.step: ${name} ${i} is empty`);
      const bad = r.find((id) => !Number.isInteger(id) || id < 0 || id >= V);
      if (bad !== undefined) {
        throw new Error(`PPOTrainer.step: ${name} ${i} has token id ${bad} outside the vocabulary (${V})`);
      }
    });
  }
  scores.forEach((x, i) => {
    if (typeof x !== "number" || !Number.isFinite(x)) {
      throw new Error(`PPOTrainer.step: score ${i} is not finite (${x})`);
    }
  });
  const T = Math.max(...queries.map((q) => q.length)) + Math.max(...responses.map((r) => r.length));
  if (T > nPositions) {
    throw new Error(`PPOTrainer.step: longest query + longest response = ${T} exceeds n_positions (${nPositions})`);
  }
}
