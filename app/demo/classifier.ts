/**
 * The demo's reward model: a small BERT sentiment classifier (labels 0 = negative, 1 = positive)
 * trained from scratch on the labelled sentences, its word embeddings optionally started from the
 * GPT-2's (both models share one vocabulary).
 * @module
 */

import { noGrad, readAll, runtime, type Tensor, tensor, tidy } from "../../engine/tensor.ts";
import { AdamW } from "../../engine/optim.ts";
import { BertForSequenceClassification } from "../../models/bert.ts";
import { PAD_ID, SEP_ID } from "./data.ts";
import { batches, type Log, seconds, stderrLog, tailMean, trainLoop } from "./train_loop.ts";

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
  /** Passes over the training set (default 3). */
  epochs: number;
  /** Optimiser steps instead of `epochs` when > 0 (default 0). */
  steps: number;
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
  /** Opt-in wall-clock cap in seconds (default 0 = none), as in {@linkcode GPT2PretrainConfig.maxSeconds}. */
  maxSeconds: number;
}

/** Defaults of {@linkcode ClassifierConfig}. */
export const CLASSIFIER_DEFAULTS: ClassifierConfig = {
  numLayers: 1,
  hidden: 64,
  heads: 2,
  intermediate: 128,
  dropout: 0.1,
  epochs: 3,
  steps: 0,
  batchSize: 32,
  maxLen: 32,
  lr: 2e-3,
  warmupSteps: 10,
  weightDecay: 0.01,
  seed: 0,
  logEvery: 30,
  maxSeconds: 0,
};

/** A tokenised labelled example. */
export interface ClassifierExample {
  /** Token ids with [CLS]/[SEP] already added. */
  ids: number[];
  /** Class index. */
  label: number;
}

/** One classifier batch, right-padded to a multiple of 8 (at most `maxLen`), with its attention mask. */
export function classifierBatch(
  examples: readonly ClassifierExample[],
  maxLen: number,
): { ids: Int32Array; mask: number[][]; T: number; labels: Int32Array } {
  const rows = examples.map((e) => e.ids.length > maxLen ? [...e.ids.slice(0, maxLen - 1), SEP_ID] : e.ids);
  const T = Math.min(maxLen, Math.ceil(Math.max(...rows.map((r) => r.length)) / 8) * 8);
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
  /** Mean training loss of the last `logEvery` steps. */
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
  const startedAt = performance.now();
  const model = randomClassifier(vocabSize, c, wordEmbeddings);
  model.dropoutSeed = c.seed;
  model.train();
  const optimizer = new AdamW(model.parameters(), { lr: c.lr, weightDecay: c.weightDecay });
  const buckets = lengthBuckets(train, c.batchSize);
  const steps = c.steps > 0 ? c.steps : buckets.length * c.epochs;
  const batchOrder = batches(buckets, 1, c.seed + 17);
  const loopConfig = { ...c, minLrRatio: 0.1 };
  const { losses, steps: ran } = await trainLoop("classifier", steps, loopConfig, optimizer, startedAt, log, () => {
    const examples = (batchOrder.next().value as ClassifierExample[][])[0];
    const batch = classifierBatch(examples, c.maxLen);
    return model.forward({
      inputIds: tensor(batch.ids, [examples.length, batch.T], "i32"),
      attentionMask: batch.mask,
      labels: tensor(batch.labels, [examples.length], "i32"),
    }).loss!;
  });
  model.eval();
  const testAccuracy = await classifierAccuracy(model, test, c.maxLen);
  log(
    `classifier held-out accuracy ${(100 * testAccuracy).toFixed(1)}% (${test.length} sentences) ${
      seconds(startedAt).toFixed(1)
    }s`,
  );
  const finalLoss = tailMean(losses, c.logEvery);
  return { model, testAccuracy, steps: ran, finalLoss, seconds: seconds(startedAt) };
}

/** A seeded random BERT classifier (negative/positive); its word embeddings copied from `wordEmbeddings` if given. */
function randomClassifier(
  vocabSize: number,
  c: ClassifierConfig,
  wordEmbeddings?: Tensor,
): BertForSequenceClassification {
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
  return model;
}

/**
 * Length buckets: batches of similar lengths (less padding), visited in a seeded random order each epoch. Full
 * batches only (the few longest sentences are left out): fewer distinct batch shapes.
 */
function lengthBuckets(train: readonly ClassifierExample[], batchSize: number): ClassifierExample[][] {
  const byLength = [...train].sort((a, b) => a.ids.length - b.ids.length);
  const buckets: ClassifierExample[][] = [];
  for (let i = 0; i + batchSize <= byLength.length; i += batchSize) buckets.push(byLength.slice(i, i + batchSize));
  if (buckets.length === 0) buckets.push(byLength);
  return buckets;
}
