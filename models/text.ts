/**
 * Text ↔ model conventions shared by the CLI and the PPO pipeline: how a prompt becomes token ids
 * for a causal LM (the seed's BERT-vocabulary dialog GPT-2 uses "[CLS] text [SEP]" and ends its
 * reply with [SEP]; byte-level GPT-2 uses plain text and `<|endoftext|>`), and how a sequence
 * classifier turns texts into label probabilities.
 * @module
 */

import type { Tokenizer } from "./tokenizer/mod.ts";
import type { GPT2Config } from "./config.ts";
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

/** Removes the spaces a WordPiece decode puts between CJK characters and CJK punctuation. */
export function joinCjk(text: string): string {
  const cjk = "\\p{Script=Han}\\u3000-\\u303f\\uff00-\\uffef";
  return text.replace(new RegExp(`(?<=[${cjk}]) +(?=[${cjk}])`, "gu"), "");
}

/** Works out the prompt format of a causal LM from its tokenizer and config. */
export function promptFormat(tok: Tokenizer, cfg: GPT2Config, options: { plain?: boolean } = {}): PromptFormat {
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
      if (ids.length === 0 || (dialog && ids.length <= 2)) throw new Error(`empty prompt "${text}"`);
      const bad = ids.find((i) => i >= cfg.vocab_size);
      if (bad !== undefined) {
        throw new Error(`the tokenizer produced id ${bad}, outside the model's vocabulary (${cfg.vocab_size})`);
      }
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
 * per batch of `batchSize` texts.
 */
export async function classifyTexts(
  model: BertForSequenceClassification,
  tok: Tokenizer,
  texts: readonly string[],
  batchSize = 32,
): Promise<ClassifierScores> {
  const c = model.config;
  if (tok.padTokenId === undefined) tok.padToken = tok.idToToken(c.pad_token_id) ?? tok.unkToken;
  const offset = c.model_type === "roberta" ? c.pad_token_id + 1 : 0;
  const maxLength = Math.min(tok.modelMaxLength, c.max_position_embeddings - offset);
  const K = c.num_labels;
  const out: ClassifierScores = { probabilities: [], logits: [] };
  for (let start = 0; start < texts.length; start += batchSize) {
    const chunk = texts.slice(start, start + batchSize);
    const enc = tok.encodeBatch([...chunk], { padding: "longest", truncation: true, maxLength, paddingSide: "right" });
    const B = chunk.length, T = enc.inputIds[0].length;
    const bad = enc.inputIds.flat().find((i) => i >= c.vocab_size);
    if (bad !== undefined) throw new Error(`the tokenizer produced id ${bad}, outside the classifier's vocabulary`);
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
    for (let b = 0; b < B; b++) {
      out.logits.push(Array.from(lg.subarray(b * K, (b + 1) * K)));
      out.probabilities.push(Array.from(pr.subarray(b * K, (b + 1) * K)));
    }
  }
  return out;
}
