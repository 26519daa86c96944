/**
 * Tokenizers for Hugging Face model folders: `tokenizer.json` (via npm `@huggingface/tokenizers`),
 * BERT WordPiece from `vocab.txt`, and GPT-2 byte-level BPE from `vocab.json` + `merges.txt`,
 * behind one transformers-like {@link Tokenizer} API, plus chat templates (npm `@huggingface/jinja`).
 *
 * ```ts ignore
 * import { loadTokenizer } from "./mod.ts";
 * const tok = await loadTokenizer("path/to/model");
 * const ids = tok.encode("Hello world");
 * const batch = tok.encodeBatch(["a", "longer text"], { padding: "longest" });
 * console.log(tok.decode(ids, { skipSpecialTokens: true }), batch.attentionMask);
 * ```
 *
 * @module
 */

export { cleanUpTokenization, type EncodedRow, type TextPiece, Tokenizer } from "./base.ts";
export { loadTokenizer, TOKENIZER_FILES, TOKENIZER_FOLDER_FILES } from "./load.ts";
export { BERT_DEFAULT_SPECIAL_TOKENS, parseVocabTxt, wordPiece, WordPieceTokenizer } from "./wordpiece.ts";
export { basicTokenize, type BasicTokenizerOptions } from "./bert_basic.ts";
export {
  ByteLevelBpeTokenizer,
  bytesToUnicode,
  GPT2_DEFAULT_SPECIAL_TOKENS,
  GPT2_PRETOKENIZE,
  parseMerges,
} from "./bpe.ts";
export { HfJsonTokenizer, specialTokensFromJson, type TokenizerJson } from "./hf_json.ts";
export { readTokenizerSettings } from "./config.ts";
export { renderChatTemplate } from "./chat_template.ts";
export type {
  BatchEncoding,
  ChatMessage,
  ChatTemplateOptions,
  DecodeOptions,
  EncodeBatchOptions,
  EncodeOptions,
  PaddingSide,
  PaddingStrategy,
  SpecialTokenName,
  SpecialTokens,
  TokenizerSettings,
  TruncationSide,
} from "./types.ts";
