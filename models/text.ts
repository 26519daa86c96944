/**
 * Text ↔ model conventions shared by the CLI and the PPO pipeline: how a prompt becomes token ids
 * for a causal LM (the seed's BERT-vocabulary dialog GPT-2 uses "[CLS] text [SEP]" and ends its
 * reply with [SEP]; byte-level GPT-2 uses plain text and `<|endoftext|>`), and how a sequence
 * classifier turns texts into label probabilities.
 * @module
 */

import type { Tokenizer } from "./tokenizer/mod.ts";
import { configSource, type GPT2Config, show } from "./config.ts";
import type { BertForSequenceClassification } from "./bert.ts";
import { noGrad, readAll, tensor, tidy } from "../engine/tensor.ts";
import { softmax } from "../engine/ops/softmax.ts";

/** How prompts are encoded and replies end for one (tokenizer, model) pair. */
export interface PromptFormat {
  /** True for a BERT vocabulary: prompts are "[CLS] text [SEP]" and replies end with [SEP]. */
  dialog: boolean;
  /** Reply terminator, or null when the model has none in its vocabulary. */
  eosTokenId: number | null;
  /** Padding id (in the vocabulary). */
  padTokenId: number;
  /** Encodes one prompt (throws for an empty one). */
  encode(text: string): number[];
  /** Decodes a reply, dropping a final EOS and special tokens (and the spaces WordPiece puts between CJK characters). */
  decode(ids: readonly number[]): string;
}

/** A prompt that has no tokens once encoded (bad usage rather than a broken model). */
export class EmptyPromptError extends Error {
  /** Creates the error for the prompt `text`. */
  constructor(text: string) {
    super(`empty prompt ${show(text)}`);
    this.name = "EmptyPromptError";
  }
}

/**
 * Throws unless every id `tok` can produce is below the model's `vocab_size`: a tokenizer with more ids than the
 * model has embedding rows does not belong to it. The message names the tokenizer file and the model config.
 * @param tok The tokenizer.
 * @param config The model config (its file is named when it was read by `parseGPT2Config` / `parseBertConfig`).
 */
export function checkTokenizerFits(tok: Tokenizer, config: { vocab_size: number }): void {
  const largest = tok.vocabSize - 1;
  if (largest < config.vocab_size) return;
  throw new Error(
    `tokenizer ${tok.vocabFile} has ids up to ${largest} but the model (${modelName(config)}) has vocab_size ` +
      `${config.vocab_size}: the tokenizer does not belong to this model`,
  );
}

function modelName(config: object): string {
  return configSource(config) ?? "its config";
}

function checkIdsFit(tok: Tokenizer, config: { vocab_size: number }, ids: readonly number[], what: string): void {
  const bad = ids.find((i) => !(Number.isInteger(i) && i >= 0 && i < config.vocab_size));
  if (bad === undefined) return;
  throw new Error(
    `tokenizer ${tok.vocabFile} produced id ${bad} for ${what}, outside the vocabulary of the model ` +
      `(${modelName(config)}: vocab_size ${config.vocab_size})`,
  );
}

/** Removes the spaces a WordPiece decode puts between CJK characters and CJK punctuation. */
export function joinCjk(text: string): string {
  const cjk = "\\p{Script=Han}\\u3000-\\u303f\\uff00-\\uffef";
  return text.replace(new RegExp(`(?<=[${cjk}]) +(?=[${cjk}])`, "gu"), "");
}

/**
 * Works out the prompt format of a causal LM from its tokenizer and config. Throws (naming both files) when the
 * tokenizer has ids the model's vocabulary lacks; `encode` throws {@linkcode EmptyPromptError} for an empty prompt.
 */
export function promptFormat(tok: Tokenizer, cfg: GPT2Config, options: { plain?: boolean } = {}): PromptFormat {
  checkTokenizerFits(tok, cfg);
  const inVocab = (id: number | null | undefined) =>
    id !== undefined && id !== null && id >= 0 && id < cfg.vocab_size ? id : null;
  const bertVocab = tok.clsTokenId !== undefined && tok.sepTokenId !== undefined;
  const dialog = bertVocab && !options.plain;
  const eos = dialog ? inVocab(tok.sepTokenId) : inVocab(cfg.eos_token_id) ?? inVocab(tok.eosTokenId);
  const pad = inVocab(tok.padTokenId) ?? inVocab(cfg.pad_token_id) ?? eos ?? 0;
  return {
    dialog,
    eosTokenId: eos,
    padTokenId: pad,
    encode(text: string): number[] {
      const ids = tok.encode(text, { addSpecialTokens: dialog });
      if (ids.length === 0 && tok.bosTokenId !== undefined && inVocab(tok.bosTokenId) !== null) {
        ids.push(tok.bosTokenId);
      }
      if (ids.length === 0 || (dialog && ids.length <= 2)) throw new EmptyPromptError(text);
      checkIdsFit(tok, cfg, ids, `prompt ${show(text, 40)}`);
      return ids;
    },
    decode(ids: readonly number[]): string {
      const body = eos !== null && ids[ids.length - 1] === eos ? ids.slice(0, -1) : ids;
      const text = tok.decode(body, { skipSpecialTokens: true });
      return bertVocab ? joinCjk(text) : text;
    },
  };
}

/** Label probabilities and logits of a sequence classifier for some texts. */
export interface ClassifierScores {
  /** [texts][labels] probabilities (softmax of the logits). */
  probabilities: number[][];
  /** [texts][labels] raw logits. */
  logits: number[][];
}

/**
 * Classifies texts in right-padded batches (truncated to the model's positions), with one readback
 * per batch of `batchSize` texts. Throws (naming the model's config file) when the tokenizer does not fit the
 * model's vocabulary or the model produces a non-finite logit.
 */
export async function classifyTexts(
  model: BertForSequenceClassification,
  tok: Tokenizer,
  texts: readonly string[],
  batchSize = 32,
): Promise<ClassifierScores> {
  const c = model.config;
  checkTokenizerFits(tok, c);
  if (tok.padTokenId === undefined) tok.padToken = tok.idToToken(c.pad_token_id) ?? tok.unkToken;
  const offset = c.model_type === "roberta" ? c.pad_token_id + 1 : 0;
  const maxLength = Math.min(tok.modelMaxLength, c.max_position_embeddings - offset);
  const K = c.num_labels;
  const out: ClassifierScores = { probabilities: [], logits: [] };
  for (let start = 0; start < texts.length; start += batchSize) {
    const chunk = texts.slice(start, start + batchSize);
    const enc = tok.encodeBatch([...chunk], { padding: "longest", truncation: true, maxLength, paddingSide: "right" });
    const B = chunk.length, T = enc.inputIds[0].length;
    checkIdsFit(tok, c, enc.inputIds.flat(), `text ${start + 1}…${start + B}`);
    const pair = noGrad(() =>
      tidy(() => {
        const types = enc.tokenTypeIds && c.type_vocab_size > 1
          ? tensor(enc.tokenTypeIds.flat(), [B, T], "i32")
          : undefined;
        const logits = model.forward({
          inputIds: tensor(enc.inputIds.flat(), [B, T], "i32"),
          attentionMask: enc.attentionMask,
          tokenTypeIds: types,
        }).logits;
        return [logits, softmax(logits)];
      })
    );
    const [lg, pr] = await readAll(pair);
    for (const t of pair) t.dispose();
    const badLogit = lg.findIndex((x) => !Number.isFinite(x));
    const at = badLogit >= 0 ? badLogit : pr.findIndex((x) => !Number.isFinite(x));
    if (at >= 0) {
      const what = badLogit >= 0 ? `logit (${lg[at]})` : `probability (${pr[at]})`;
      const text = start + Math.floor(at / K) + 1;
      throw new Error(
        `sequence classifier ${modelName(c)} produced a non-finite ${what} for text ${text}: ` +
          `its weights are broken (NaN/Inf or overflowing)`,
      );
    }
    for (let b = 0; b < B; b++) {
      out.logits.push(Array.from(lg.subarray(b * K, (b + 1) * K)));
      out.probabilities.push(Array.from(pr.subarray(b * K, (b + 1) * K)));
    }
  }
  return out;
}
