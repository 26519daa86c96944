/**
 * Pretraining of the demo's policy: a small GPT-2 language model trained from scratch on sentences
 * in the dialog format `[CLS] prompt [SEP] response [SEP]` (the prompt is the first 2–4 words), which is
 * how the PPO pipeline (`models/text.ts` `promptFormat`) feeds a policy with a BERT-style vocabulary.
 * Sentences are packed into rows with positions restarting per sentence (no padding waste).
 * @module
 */

import { noGrad, readAll, type Tensor, tensor, tidy } from "../../engine/tensor.ts";
import { AdamW } from "../../engine/optim.ts";
import { GPT2LMHeadModel } from "../../models/gpt2.ts";
import { CLS_ID, PAD_ID, SEP_ID, shuffled } from "./data.ts";
import { mulberry32 } from "../../engine/random.ts";
import { type Log, seconds, stderrLog, tailMean, trainLoop } from "./train_loop.ts";

/** Hyper-parameters of {@linkcode pretrainGPT2}. */
export interface GPT2PretrainConfig {
  /** Transformer blocks (default 2). */
  nLayer: number;
  /** Width (default 64). */
  nEmbd: number;
  /** Attention heads (default 2). */
  nHead: number;
  /** Context length of the model (default 64). */
  nPositions: number;
  /** Optimiser steps (default 400, on every machine; fewer only under an opt-in `maxSeconds` cap). */
  steps: number;
  /** Rows per batch (default 16); whole sentences are packed into each row. */
  batchSize: number;
  /** Tokens per row (default 32); a sentence longer than a row is cut (losing [SEP]). */
  seqLen: number;
  /** Peak learning rate (default 3e-3). */
  lr: number;
  /** Linear warm-up steps (default 20). */
  warmupSteps: number;
  /** Final learning rate as a fraction of the peak, reached by cosine decay (default 0.1). */
  minLrRatio: number;
  /** AdamW weight decay (default 0.01). */
  weightDecay: number;
  /** Initialisation and shuffling seed (default 0). */
  seed: number;
  /** Read back and print the mean loss every this many steps (default 30). */
  logEvery: number;
  /**
   * Opt-in wall-clock cap in seconds (default 0 = none, so every machine trains the same model): when set, a slow
   * machine runs fewer steps, the schedule shrinks to fit, and the log says so.
   */
  maxSeconds: number;
  /**
   * Prompt words [min, max] of the dialog format (default [2, 4], like the demo prompts); [0, 0] trains
   * the plain format. See {@linkcode formatSentence}.
   */
  promptWords: [number, number];
}

/** Defaults of {@linkcode GPT2PretrainConfig}. */
export const GPT2_PRETRAIN_DEFAULTS: GPT2PretrainConfig = {
  nLayer: 2,
  nEmbd: 64,
  nHead: 2,
  nPositions: 64,
  steps: 400,
  batchSize: 16,
  seqLen: 32,
  lr: 3e-3,
  warmupSteps: 20,
  minLrRatio: 0.1,
  weightDecay: 0.01,
  seed: 0,
  logEvery: 30,
  maxSeconds: 0,
  promptWords: [2, 4],
};

/** One formatted training sequence: token ids and next-token targets (-100 = not a target). */
export interface LmSegment {
  /** Input ids, starting with `[CLS]`. */
  ids: number[];
  /** Targets aligned with `ids` (the model's loss shifts them by one). */
  labels: number[];
}

/**
 * Formats a sentence (ids without specials). Dialog format, `k` ≥ 1 (what `models/text.ts`'s
 * `promptFormat` feeds a policy whose tokenizer has [CLS]/[SEP]): `[CLS] w1…wk [SEP] w(k+1)…wn [SEP]`, the
 * prompt part then the response. `k` = 0 gives the plain `[CLS] w1…wn [SEP]`. `[CLS]` and the middle
 * `[SEP]` are inputs only (never targets), so the model learns to end a response with `[SEP]` but not to
 * open one.
 */
export function formatSentence(words: readonly number[], k: number): LmSegment {
  if (k <= 0 || k >= words.length) {
    return { ids: [CLS_ID, ...words, SEP_ID], labels: [-100, ...words, SEP_ID] };
  }
  const head = words.slice(0, k), tail = words.slice(k);
  return {
    ids: [CLS_ID, ...head, SEP_ID, ...tail, SEP_ID],
    labels: [-100, ...head, -100, ...tail, SEP_ID],
  };
}

/**
 * Prompt length for the dialog format: `minWords`–`maxWords` words drawn with `r`, leaving at least one
 * word of response; 0 (plain format) when `maxWords` is 0 or the sentence has a single word.
 */
export function promptSplit(n: number, minWords: number, maxWords: number, r: () => number): number {
  if (maxWords <= 0 || n < 2) return 0;
  const k = minWords + Math.floor(r() * (maxWords - minWords + 1));
  return Math.max(1, Math.min(k, n - 1));
}

/** Segments for {@linkcode packRows}: an iterator plus the segment that did not fit the last row. */
export interface PackStream {
  /** The formatted segments. */
  it: Iterator<LmSegment>;
  /** Held over from the previous call. */
  pending?: LmSegment;
}

/**
 * An endless {@linkcode PackStream} of formatted sentences, reshuffled (seeded) every epoch; in the
 * dialog format each sentence gets a fresh prompt length every epoch.
 */
export function sentenceStream(rows: readonly number[][], seed: number, promptWords: [number, number]): PackStream {
  function* gen() {
    const r = mulberry32(seed ^ 0x5bd1e995);
    for (let epoch = 0;; epoch++) {
      for (const w of shuffled(rows, seed + epoch * 7919)) {
        yield formatSentence(w, promptSplit(w.length, promptWords[0], promptWords[1], r));
      }
    }
  }
  return { it: gen() };
}

/**
 * Packs segments into a [B, T] block without splitting any: each row holds whole segments whose
 * positions restart at 0, then padding (label -100). A segment that does not fit in the rest of a row
 * starts the next row; one longer than T is cut.
 */
export function packRows(
  stream: PackStream,
  B: number,
  T: number,
): { ids: Int32Array; labels: Int32Array; positions: Int32Array } {
  const ids = new Int32Array(B * T).fill(PAD_ID);
  const labels = new Int32Array(B * T).fill(-100);
  const positions = new Int32Array(B * T);
  for (let b = 0; b < B; b++) {
    let t = 0;
    for (;;) {
      const seg = stream.pending ?? stream.it.next().value as LmSegment;
      stream.pending = undefined;
      if (t > 0 && t + seg.ids.length > T) {
        stream.pending = seg;
        break;
      }
      const n = Math.min(seg.ids.length, T - t);
      for (let i = 0; i < n; i++) {
        ids[b * T + t + i] = seg.ids[i];
        labels[b * T + t + i] = seg.labels[i];
        positions[b * T + t + i] = i;
      }
      t += n;
      if (t >= T) break;
    }
  }
  return { ids, labels, positions };
}

/** Segments one per row, right-padded to T (no attention mask needed under causal attention). */
export function padRows(segments: readonly LmSegment[], T: number): { ids: Int32Array; labels: Int32Array } {
  const ids = new Int32Array(segments.length * T).fill(PAD_ID);
  const labels = new Int32Array(segments.length * T).fill(-100);
  segments.forEach((s, b) => {
    ids.set(s.ids.slice(0, T), b * T);
    labels.set(s.labels.slice(0, T), b * T);
  });
  return { ids, labels };
}

/** Result of {@linkcode pretrainGPT2}. */
export interface GPT2PretrainResult {
  /** The trained model (eval mode). */
  model: GPT2LMHeadModel;
  /** Training loss of every step, in order. */
  losses: number[];
  /** Steps actually run (fewer than configured when the time cap was hit). */
  steps: number;
  /** Mean training loss of the last `logEvery` steps. */
  finalLoss: number;
  /** Mean loss on the held-out sentences (NaN when none were given). */
  heldOutLoss: number;
  /** Wall-clock seconds. */
  seconds: number;
}

/** Mean LM loss over formatted segments in batches of `batchSize`, without gradients (one readback). */
export async function lmLoss(
  model: GPT2LMHeadModel,
  segments: readonly LmSegment[],
  batchSize: number,
): Promise<number> {
  if (segments.length === 0) return NaN;
  const losses: Tensor[] = [];
  for (let i = 0; i < segments.length; i += batchSize) {
    const chunk = segments.slice(i, i + batchSize);
    const T = Math.min(model.config.n_positions, Math.max(...chunk.map((s) => s.ids.length)));
    const { ids, labels } = padRows(chunk, T);
    losses.push(tidy(() =>
      noGrad(() =>
        model.forward({
          inputIds: tensor(ids, [chunk.length, T], "i32"),
          labels: tensor(labels, [chunk.length, T], "i32"),
          skipLogits: true,
        }).loss!
      )
    ));
  }
  const vals = await readAll(losses);
  losses.forEach((t) => t.dispose());
  return vals.reduce((s, v) => s + v[0], 0) / vals.length;
}

/**
 * Trains a GPT-2 from scratch on token-id rows (sentences without specials) with AdamW, printing
 * `step, loss, lr, elapsed` every `logEvery` steps; `heldOut` sentences give the final held-out loss.
 */
export async function pretrainGPT2(
  train: readonly number[][],
  heldOut: readonly number[][],
  vocabSize: number,
  config: Partial<GPT2PretrainConfig> = {},
  log: Log = stderrLog,
): Promise<GPT2PretrainResult> {
  const c = { ...GPT2_PRETRAIN_DEFAULTS, ...config };
  if (train.length === 0) throw new Error("pretrainGPT2: no training sentences");
  if (c.seqLen > c.nPositions) throw new Error(`pretrainGPT2: seqLen ${c.seqLen} exceeds nPositions ${c.nPositions}`);
  const t0 = performance.now();
  const model = GPT2LMHeadModel.random({
    vocab_size: vocabSize,
    n_positions: c.nPositions,
    n_embd: c.nEmbd,
    n_layer: c.nLayer,
    n_head: c.nHead,
    embd_pdrop: 0,
    attn_pdrop: 0,
    resid_pdrop: 0,
    bos_token_id: CLS_ID,
    eos_token_id: SEP_ID,
    pad_token_id: PAD_ID,
  }, c.seed);
  model.train();
  const opt = new AdamW(model.parameters(), { lr: c.lr, weightDecay: c.weightDecay });
  const stream = sentenceStream(train, c.seed, c.promptWords);
  const T = c.seqLen;
  const lossFn = () => {
    const b = packRows(stream, c.batchSize, T);
    return model.forward({
      inputIds: tensor(b.ids, [c.batchSize, T], "i32"),
      positionIds: tensor(b.positions, [c.batchSize, T], "i32"),
      labels: tensor(b.labels, [c.batchSize, T], "i32"),
    }).loss!;
  };
  const { losses, steps } = await trainLoop("gpt2", c.steps, c, opt, t0, log, lossFn);
  model.eval();
  const r = mulberry32(c.seed + 99);
  const held = heldOut.map((w) => formatSentence(w, promptSplit(w.length, c.promptWords[0], c.promptWords[1], r)));
  const heldOutLoss = await lmLoss(model, held, 64);
  log(`gpt2 held-out loss ${heldOutLoss.toFixed(3)} ${seconds(t0).toFixed(1)}s`);
  return { model, losses, steps, finalLoss: tailMean(losses, c.logEvery), heldOutLoss, seconds: seconds(t0) };
}
