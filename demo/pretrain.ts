/**
 * Pretraining of the demo's two small models on the engine: a GPT-2 language model on sentences
 * formatted `[CLS] sentence [SEP]`, and a BERT sentiment classifier (labels 0 = negative, 1 = positive)
 * whose word embeddings start from the GPT-2's (both share one vocabulary).
 *
 * Every step runs in `tidy`, so GPU memory stays flat; losses are read back only every `logEvery`
 * steps (all of the window's losses in one round trip).
 * @module
 */

import { noGrad, readAll, runtime, type Tensor, tensor, tidy } from "../engine/tensor.ts";
import { backward } from "../engine/autograd.ts";
import { AdamW } from "../engine/optim.ts";
import { GPT2LMHeadModel } from "../models/gpt2.ts";
import { BertForSequenceClassification } from "../models/bert.ts";
import { CLS_ID, PAD_ID, SEP_ID, shuffled } from "./data.ts";

/** A progress sink (default: stderr). */
export type Log = (line: string) => void;

/** Default progress sink: one line on stderr. */
export const stderrLog: Log = (line) => console.error(line);

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
  /** Optimiser steps (default 420). */
  steps: number;
  /** Sentences per batch (default 32). */
  batchSize: number;
  /** Tokens per row, [CLS] and [SEP] included (default 16; longer sentences are cut, losing [SEP]). */
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
  /** Wall-clock cap in seconds (0 = none): on a slow machine fewer steps are run, the schedule shrinks to fit. */
  maxSeconds: number;
  /**
   * How sentences form batches (default "pack"): "pack" fills [batchSize, seqLen] rows with whole
   * sentences (positions restart per sentence); "random" pads one sentence per row; "bucket" pads
   * sentences of similar lengths together.
   */
  batching: "pack" | "random" | "bucket";
}

/** Defaults of {@linkcode GPT2PretrainConfig}. */
export const GPT2_PRETRAIN_DEFAULTS: GPT2PretrainConfig = {
  nLayer: 2,
  nEmbd: 64,
  nHead: 2,
  nPositions: 64,
  steps: 420,
  batchSize: 32,
  seqLen: 16,
  lr: 3e-3,
  warmupSteps: 20,
  minLrRatio: 0.1,
  weightDecay: 0.01,
  seed: 0,
  logEvery: 30,
  maxSeconds: 150,
  batching: "pack",
};

/** Hyper-parameters of {@linkcode trainSentimentClassifier}. */
export interface ClassifierConfig {
  /** Encoder layers (default 1). */
  numLayers: number;
  /** Hidden size (default 64; equal to the GPT-2 width so its embeddings can be reused). */
  hidden: number;
  /** Attention heads (default 2). */
  heads: number;
  /** Feed-forward size (default 128). */
  intermediate: number;
  /** Dropout of hidden states and attention (default 0.1). */
  dropout: number;
  /** Passes over the training set (default 4). */
  epochs: number;
  /** Sentences per batch (default 32). */
  batchSize: number;
  /** Longest input, [CLS] and [SEP] included (default 32). */
  maxLen: number;
  /** Peak learning rate (default 2e-3). */
  lr: number;
  /** Linear warm-up steps (default 10). */
  warmupSteps: number;
  /** AdamW weight decay (default 0.01). */
  weightDecay: number;
  /** Initialisation and shuffling seed (default 0). */
  seed: number;
  /** Print the mean loss every this many steps (default 30). */
  logEvery: number;
  /** Wall-clock cap in seconds (0 = none), as in {@linkcode GPT2PretrainConfig.maxSeconds}. */
  maxSeconds: number;
}

/** Defaults of {@linkcode ClassifierConfig}. */
export const CLASSIFIER_DEFAULTS: ClassifierConfig = {
  numLayers: 1,
  hidden: 64,
  heads: 2,
  intermediate: 128,
  dropout: 0.1,
  epochs: 4,
  batchSize: 32,
  maxLen: 32,
  lr: 2e-3,
  warmupSteps: 10,
  weightDecay: 0.01,
  seed: 0,
  logEvery: 30,
  maxSeconds: 60,
};

/**
 * Smallest length ≥ `T` that makes `B·T` a multiple of 64. Works around an engine bug: the embedding
 * backward (`shaders/scatter_add.wgsl`, `main`) adds an unwritten partial sum (pool garbage, sometimes NaN)
 * to the gradient row of the largest id when that id's run of sorted positions starts on a 64-entry chunk
 * boundary and B·T is not a multiple of 64.
 */
export function alignedLength(B: number, T: number): number {
  let g = 64, b = B;
  while (b) [g, b] = [b, g % b];
  const step = 64 / g;
  return Math.ceil(T / step) * step;
}

/** Learning rate at `step` (0-based): linear warm-up, then cosine decay to `minRatio · peak`. */
export function lrAt(step: number, total: number, peak: number, warmup: number, minRatio: number): number {
  if (step < warmup) return peak * (step + 1) / warmup;
  const t = total > warmup ? (step - warmup) / (total - warmup) : 1;
  return peak * (minRatio + (1 - minRatio) * 0.5 * (1 + Math.cos(Math.PI * Math.min(1, t))));
}

/**
 * One LM batch: each row `[CLS] ids [SEP]` cut to `seqLen`, right-padded with [PAD]; labels equal the
 * ids with -100 on padding. Right padding needs no attention mask under causal attention.
 */
export function lmBatch(rows: readonly number[][], seqLen: number): { ids: Int32Array; labels: Int32Array } {
  const ids = new Int32Array(rows.length * seqLen).fill(PAD_ID);
  const labels = new Int32Array(rows.length * seqLen).fill(-100);
  rows.forEach((r, b) => {
    const seq = [CLS_ID, ...r, SEP_ID].slice(0, seqLen);
    seq.forEach((t, i) => {
      ids[b * seqLen + i] = t;
      labels[b * seqLen + i] = t;
    });
  });
  return { ids, labels };
}

/**
 * Step budget under a time cap: after a loss readback at `step` (steps done), `elapsed` seconds in, with the
 * last `windowSteps` steps having taken `windowSeconds`, the total that still fits in `maxSeconds`.
 */
export function fitSteps(
  planned: number,
  step: number,
  elapsed: number,
  windowSteps: number,
  windowSeconds: number,
  maxSeconds: number,
): number {
  if (!(maxSeconds > 0) || windowSteps <= 0) return planned;
  const perStep = windowSeconds / windowSteps;
  return Math.max(step, Math.min(planned, step + Math.floor((maxSeconds - elapsed) / perStep)));
}

/** Endless stream of rows, reshuffled (seeded) every epoch. */
function* sentences<T>(rows: readonly T[], seed: number): Generator<T> {
  for (let epoch = 0;; epoch++) yield* shuffled(rows, seed + epoch * 7919);
}

/**
 * Packs sentences into a [B, T] block without splitting any: each row holds `[CLS] s [SEP]` segments
 * whose positions restart at 0, then padding (label -100). `[CLS]` is never a target. A sentence that
 * does not fit in the rest of a row starts the next row; one longer than T is cut.
 */
export function packRows(
  stream: Iterator<number[]>,
  B: number,
  T: number,
  pending: { next?: number[] } = packPending.get(stream) ?? {},
): { ids: Int32Array; labels: Int32Array; positions: Int32Array } {
  packPending.set(stream, pending);
  const ids = new Int32Array(B * T).fill(PAD_ID);
  const labels = new Int32Array(B * T).fill(-100);
  const positions = new Int32Array(B * T);
  for (let b = 0; b < B; b++) {
    let t = 0;
    for (;;) {
      const s = pending.next ?? stream.next().value as number[];
      pending.next = undefined;
      const seg = [CLS_ID, ...s, SEP_ID].slice(0, T);
      if (t > 0 && t + seg.length > T) {
        pending.next = s;
        break;
      }
      seg.forEach((tok, i) => {
        ids[b * T + t + i] = tok;
        labels[b * T + t + i] = i === 0 ? -100 : tok;
        positions[b * T + t + i] = i;
      });
      t += seg.length;
      if (t >= T) break;
    }
  }
  return { ids, labels, positions };
}
const packPending = new WeakMap<Iterator<number[]>, { next?: number[] }>();

/** Endless batches of `size` items, reshuffled (seeded) every epoch. */
function* batches<T>(items: readonly T[], size: number, seed: number): Generator<T[]> {
  for (let epoch = 0;; epoch++) {
    const s = shuffled(items, seed + epoch * 7919);
    for (let i = 0; i + size <= s.length || (i === 0 && s.length > 0); i += size) yield s.slice(i, i + size);
  }
}

/**
 * Endless batches of rows of similar lengths (little padding): each epoch the rows are shuffled, stably
 * sorted by length, cut into batches of `size`, and the batches visited in a shuffled order (all seeded).
 */
function* lengthBatches<T extends { length: number }>(rows: readonly T[], size: number, seed: number): Generator<T[]> {
  for (let epoch = 0;; epoch++) {
    const s = shuffled(rows, seed + epoch * 7919).sort((a, b) => a.length - b.length);
    const chunks: T[][] = [];
    for (let i = 0; i + size <= s.length; i += size) chunks.push(s.slice(i, i + size));
    if (chunks.length === 0) chunks.push(s);
    yield* shuffled(chunks, seed + epoch * 7919 + 1);
  }
}

/** Seconds since `t0` (a `performance.now()` value). */
function seconds(t0: number): number {
  return (performance.now() - t0) / 1000;
}

/** Schedule settings shared by both trainers. */
interface LoopConfig {
  lr: number;
  warmupSteps: number;
  minLrRatio: number;
  logEvery: number;
  maxSeconds: number;
}

/**
 * The optimisation loop: `lossFn` builds one batch's loss (inside a `tidy` scope); backward, AdamW step
 * and gradient release follow. Losses are kept on the GPU and read back, averaged, every `logEvery` steps,
 * where the time cap may also shorten the run. Returns the window means and the steps run.
 */
async function trainLoop(
  name: string,
  planned: number,
  c: LoopConfig,
  opt: AdamW,
  t0: number,
  log: Log,
  lossFn: () => Tensor,
): Promise<{ losses: number[]; steps: number }> {
  const losses: number[] = [];
  let window: Tensor[] = [];
  let total = planned, lastStep = 0, lastTime = seconds(t0);
  try {
    let step = 0;
    for (; step < total; step++) {
      opt.lr = lrAt(step, total, c.lr, c.warmupSteps, c.minLrRatio);
      window.push(tidy(() => {
        const loss = lossFn();
        backward(loss);
        opt.step();
        opt.zeroGrad();
        return loss.detach();
      }));
      if ((step + 1) % c.logEvery !== 0 && step + 1 !== total) continue;
      const vals = await readAll(window);
      window.forEach((t) => t.dispose());
      window = [];
      const mean = vals.reduce((s, v) => s + v[0], 0) / vals.length;
      losses.push(mean);
      const now = seconds(t0);
      // The first window includes shader compilation; only later windows estimate the step time.
      if (lastStep > 0) total = fitSteps(planned, step + 1, now, step + 1 - lastStep, now - lastTime, c.maxSeconds);
      [lastStep, lastTime] = [step + 1, now];
      log(`${name} step ${step + 1}/${total} loss ${mean.toFixed(3)} lr ${opt.lr.toExponential(2)} ${now.toFixed(1)}s`);
    }
    return { losses, steps: step };
  } finally {
    window.forEach((t) => t.dispose());
    opt.dispose();
  }
}

/** Result of {@linkcode pretrainGPT2}. */
export interface GPT2PretrainResult {
  /** The trained model (eval mode). */
  model: GPT2LMHeadModel;
  /** Mean training loss of each logging window, in order. */
  losses: number[];
  /** Steps actually run (fewer than configured when the time cap was hit). */
  steps: number;
  /** Mean training loss of the last window. */
  finalLoss: number;
  /** Mean loss on the held-out sentences (NaN when none were given). */
  heldOutLoss: number;
  /** Wall-clock seconds. */
  seconds: number;
}

/** Mean LM loss over `rows` in batches, without gradients (one readback). */
export async function lmLoss(model: GPT2LMHeadModel, rows: readonly number[][], batchSize: number, seqLen: number) {
  if (rows.length === 0) return NaN;
  const losses: Tensor[] = [];
  for (let i = 0; i < rows.length; i += batchSize) {
    const chunk = rows.slice(i, i + batchSize);
    const { ids, labels } = lmBatch(chunk, seqLen);
    losses.push(tidy(() =>
      noGrad(() =>
        model.forward({
          inputIds: tensor(ids, [chunk.length, seqLen], "i32"),
          labels: tensor(labels, [chunk.length, seqLen], "i32"),
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
 * `step, loss, lr, elapsed` every `logEvery` steps.
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
  let lossFn: () => Tensor;
  if (c.batching === "pack") {
    const stream = sentences(train, c.seed);
    lossFn = () => {
      const b = packRows(stream, c.batchSize, c.seqLen);
      return model.forward({
        inputIds: tensor(b.ids, [c.batchSize, c.seqLen], "i32"),
        positionIds: tensor(b.positions, [c.batchSize, c.seqLen], "i32"),
        labels: tensor(b.labels, [c.batchSize, c.seqLen], "i32"),
      }).loss!;
    };
  } else {
    const it = c.batching === "bucket" ? lengthBatches(train, c.batchSize, c.seed) : batches(train, c.batchSize, c.seed);
    lossFn = () => {
      const rows = it.next().value as number[][];
      const T = alignedLength(rows.length, Math.min(c.seqLen, Math.max(...rows.map((r) => r.length)) + 2));
      const { ids, labels } = lmBatch(rows, T);
      return model.forward({
        inputIds: tensor(ids, [rows.length, T], "i32"),
        labels: tensor(labels, [rows.length, T], "i32"),
      }).loss!;
    };
  }
  const { losses, steps } = await trainLoop("gpt2", c.steps, c, opt, t0, log, lossFn);
  model.eval();
  const heldOutLoss = await lmLoss(model, heldOut, 64, c.seqLen);
  log(`gpt2 held-out loss ${heldOutLoss.toFixed(3)} ${seconds(t0).toFixed(1)}s`);
  return { model, losses, steps, finalLoss: losses[losses.length - 1] ?? NaN, heldOutLoss, seconds: seconds(t0) };
}

/** A tokenised labelled example. */
export interface ClassifierExample {
  /** Token ids with [CLS]/[SEP] already added. */
  ids: number[];
  /** Class index. */
  label: number;
}

/** One classifier batch, right-padded to a multiple of 8 (at most `maxLen`), with its attention mask. */
export function classifierBatch(examples: readonly ClassifierExample[], maxLen: number) {
  const rows = examples.map((e) => e.ids.length > maxLen ? [...e.ids.slice(0, maxLen - 1), SEP_ID] : e.ids);
  const T = alignedLength(rows.length, Math.min(maxLen, Math.ceil(Math.max(...rows.map((r) => r.length)) / 8) * 8));
  const ids = new Int32Array(rows.length * T).fill(PAD_ID);
  const mask = rows.map((r) => Array.from({ length: T }, (_, i) => i < r.length ? 1 : 0));
  rows.forEach((r, b) => ids.set(r, b * T));
  return { ids, mask, T, labels: Int32Array.from(examples, (e) => e.label) };
}

/** Classifier accuracy on `examples` (one readback). */
export async function classifierAccuracy(
  model: BertForSequenceClassification,
  examples: readonly ClassifierExample[],
  maxLen: number,
  batchSize = 64,
): Promise<number> {
  if (examples.length === 0) return NaN;
  const logits: Tensor[] = [];
  for (let i = 0; i < examples.length; i += batchSize) {
    const chunk = examples.slice(i, i + batchSize);
    const b = classifierBatch(chunk, maxLen);
    logits.push(
      tidy(() =>
        noGrad(() =>
          model.forward({ inputIds: tensor(b.ids, [chunk.length, b.T], "i32"), attentionMask: b.mask }).logits
        )
      ),
    );
  }
  const vals = await readAll(logits);
  logits.forEach((t) => t.dispose());
  const L = model.config.num_labels;
  let correct = 0, k = 0;
  for (const v of vals) {
    for (let r = 0; r < v.length / L; r++, k++) {
      let best = 0;
      for (let j = 1; j < L; j++) if (v[r * L + j] > v[r * L + best]) best = j;
      if (best === examples[k].label) correct++;
    }
  }
  return correct / examples.length;
}

/** Result of {@linkcode trainSentimentClassifier}. */
export interface ClassifierResult {
  /** The trained classifier (eval mode). */
  model: BertForSequenceClassification;
  /** Accuracy on the held-out examples. */
  testAccuracy: number;
  /** Mean training loss of the last logging window. */
  finalLoss: number;
  /** Steps actually run. */
  steps: number;
  /** Wall-clock seconds. */
  seconds: number;
}

/**
 * Trains a BERT sentiment classifier (id2label {0: "negative", 1: "positive"}) from scratch; when
 * `wordEmbeddings` ([vocab, hidden]) is given, the word embeddings start as a copy of it.
 */
export async function trainSentimentClassifier(
  train: readonly ClassifierExample[],
  test: readonly ClassifierExample[],
  vocabSize: number,
  config: Partial<ClassifierConfig> = {},
  log: Log = stderrLog,
  wordEmbeddings?: Tensor,
): Promise<ClassifierResult> {
  const c = { ...CLASSIFIER_DEFAULTS, ...config };
  if (train.length === 0) throw new Error("trainSentimentClassifier: no training examples");
  const t0 = performance.now();
  const model = BertForSequenceClassification.random({
    model_type: "bert",
    vocab_size: vocabSize,
    hidden_size: c.hidden,
    num_hidden_layers: c.numLayers,
    num_attention_heads: c.heads,
    intermediate_size: c.intermediate,
    hidden_act: "gelu",
    hidden_dropout_prob: c.dropout,
    attention_probs_dropout_prob: c.dropout,
    max_position_embeddings: 64,
    type_vocab_size: 2,
    pad_token_id: PAD_ID,
    num_labels: 2,
    id2label: { "0": "negative", "1": "positive" },
    label2id: { negative: 0, positive: 1 },
  }, c.seed + 1);
  if (wordEmbeddings) {
    const dst = model.params.get("bert.embeddings.word_embeddings.weight")!;
    if (wordEmbeddings.shape.join() !== dst.shape.join()) {
      throw new Error(`trainSentimentClassifier: embeddings [${wordEmbeddings.shape}] ≠ [${dst.shape}]`);
    }
    runtime().copy(wordEmbeddings.storage, 0, dst.storage, 0, dst.size * 4);
  }
  model.dropoutSeed = c.seed;
  model.train();
  const opt = new AdamW(model.parameters(), { lr: c.lr, weightDecay: c.weightDecay });
  // Length buckets: batches of similar lengths (less padding), visited in a seeded random order each epoch.
  const byLength = [...train].sort((a, b) => a.ids.length - b.ids.length);
  const buckets: ClassifierExample[][] = [];
  // Full batches only (the few longest sentences are left out): fewer distinct batch shapes.
  for (let i = 0; i + c.batchSize <= byLength.length; i += c.batchSize) {
    buckets.push(byLength.slice(i, i + c.batchSize));
  }
  if (buckets.length === 0) buckets.push(byLength);
  const steps = buckets.length * c.epochs;
  const it = batches(buckets, 1, c.seed + 17);
  const { losses, steps: ran } = await trainLoop("classifier", steps, { ...c, minLrRatio: 0.1 }, opt, t0, log, () => {
    const ex = (it.next().value as ClassifierExample[][])[0];
    const b = classifierBatch(ex, c.maxLen);
    return model.forward({
      inputIds: tensor(b.ids, [ex.length, b.T], "i32"),
      attentionMask: b.mask,
      labels: tensor(b.labels, [ex.length], "i32"),
    }).loss!;
  });
  model.eval();
  const testAccuracy = await classifierAccuracy(model, test, c.maxLen);
  log(
    `classifier held-out accuracy ${(100 * testAccuracy).toFixed(1)}% (${test.length} sentences) ${
      seconds(t0).toFixed(1)
    }s`,
  );
  return { model, testAccuracy, steps: ran, finalLoss: losses[losses.length - 1] ?? NaN, seconds: seconds(t0) };
}
