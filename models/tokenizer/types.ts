/**
 * Shared option and result types for the tokenizers in `models/tokenizer/`.
 *
 * @module
 */

/** Which side padding (and, for {@link TruncationSide}, truncation) is applied to. */
export type PaddingSide = "left" | "right";

/** Which side tokens are removed from when a sequence is too long. */
export type TruncationSide = "left" | "right";

/**
 * Padding strategy for {@link EncodeBatchOptions.padding}:
 * - `"longest"` (or `true`): pad every row to the longest row of the batch;
 * - `"max_length"`: pad every row to `maxLength` (or `modelMaxLength`);
 * - `false`: no padding (rows keep their own lengths).
 */
export type PaddingStrategy = "longest" | "max_length" | boolean;

/** Options for `Tokenizer.encode`. */
export interface EncodeOptions {
  /** Add the model's special tokens (BERT: `[CLS] … [SEP]`; GPT-2: none unless `add_bos_token`). Default `true`. */
  addSpecialTokens?: boolean;
  /** Optional second sequence (BERT sentence pairs: `[CLS] a [SEP] b [SEP]`). */
  textPair?: string;
  /** Truncate to `maxLength` (or `modelMaxLength`), keeping the special tokens. Default `false`. */
  truncation?: boolean;
  /** Maximum total length (special tokens included) used by truncation. */
  maxLength?: number;
}

/** Options for `Tokenizer.decode`. */
export interface DecodeOptions {
  /** Drop special tokens (`[CLS]`, `[PAD]`, `<|endoftext|>`, …) from the output. Default `false`. */
  skipSpecialTokens?: boolean;
  /**
   * Apply transformers' `clean_up_tokenization` (" ." → ".", " n't" → "n't", …).
   * Default: `clean_up_tokenization_spaces` from tokenizer_config.json, else `true` for WordPiece and `false` for BPE.
   */
  cleanUpTokenizationSpaces?: boolean;
}

/** Options for `Tokenizer.encodeBatch`. */
export interface EncodeBatchOptions {
  /** Padding strategy. Default `false` (as in transformers). */
  padding?: PaddingStrategy;
  /** Target length for `padding: "max_length"` and limit for `truncation`. Defaults to `modelMaxLength`. */
  maxLength?: number;
  /** Truncate rows longer than `maxLength` (special tokens are kept). Default `false`. */
  truncation?: boolean;
  /** Side to pad on. Default: the tokenizer's `paddingSide`. */
  paddingSide?: PaddingSide;
  /** Side to truncate on. Default: the tokenizer's `truncationSide`. */
  truncationSide?: TruncationSide;
  /** Add special tokens to every row. Default `true`. */
  addSpecialTokens?: boolean;
  /** Optional second sequences (one per text) for sentence-pair models. */
  textPairs?: string[];
}

/** Result of `Tokenizer.encodeBatch`: one row per input text. */
export interface BatchEncoding {
  /** Token ids; all rows have the same length when padding was requested. */
  inputIds: number[][];
  /** 1 for real tokens, 0 for padding. */
  attentionMask: number[][];
  /** Segment ids (0 for the first sequence, 1 for the pair); only for models that use them (BERT). */
  tokenTypeIds?: number[][];
}

/** One chat message for `Tokenizer.applyChatTemplate`. */
export interface ChatMessage {
  /** Speaker role, e.g. `"system"`, `"user"`, `"assistant"`. */
  role: string;
  /** Message text. */
  content: string;
  /** Any extra fields a template may read (e.g. `name`, `tool_calls`). */
  [key: string]: unknown;
}

/** Options for `Tokenizer.applyChatTemplate`. */
export interface ChatTemplateOptions {
  /** Append the prompt that starts an assistant turn (template variable `add_generation_prompt`). Default `false`. */
  addGenerationPrompt?: boolean;
  /** Use this template instead of the folder's one, or the name of one of several named templates. */
  chatTemplate?: string;
  /** Extra variables passed to the template (e.g. `tools`, `documents`). */
  extraContext?: Record<string, unknown>;
}

/** Named special tokens (string forms). Absent entries mean the tokenizer has no such token. */
export interface SpecialTokens {
  /** Beginning-of-sequence token. */
  bosToken?: string;
  /** End-of-sequence token. */
  eosToken?: string;
  /** Unknown-token replacement. */
  unkToken?: string;
  /** Separator token (BERT `[SEP]`). */
  sepToken?: string;
  /** Padding token. */
  padToken?: string;
  /** Classifier token (BERT `[CLS]`). */
  clsToken?: string;
  /** Mask token for masked-LM (`[MASK]`). */
  maskToken?: string;
  /** Further special tokens (`additional_special_tokens`). */
  additionalSpecialTokens?: string[];
}

/** Names of the single-token entries in {@link SpecialTokens}. */
export type SpecialTokenName = Exclude<keyof SpecialTokens, "additionalSpecialTokens">;

/** Settings shared by every tokenizer, read from tokenizer_config.json (see `config.ts`). */
export interface TokenizerSettings {
  /** Special tokens (strings). */
  specialTokens: SpecialTokens;
  /** Default padding side (`padding_side`, else `"right"`). */
  paddingSide: PaddingSide;
  /** Default truncation side (`truncation_side`, else `"right"`). */
  truncationSide: TruncationSide;
  /** Maximum sequence length (`model_max_length`, else `Infinity`). */
  modelMaxLength: number;
  /** `clean_up_tokenization_spaces` when given. */
  cleanUpTokenizationSpaces?: boolean;
  /** Chat template source: one string, or several named templates. */
  chatTemplate?: string | Record<string, string>;
  /** Extra tokens outside the base vocabulary (`added_tokens.json` / `added_tokens_decoder`), content → id. */
  addedTokens: Map<string, number>;
  /** Contents of added tokens flagged `special` (skipped by `skipSpecialTokens`). */
  addedSpecial: Set<string>;
  /** The raw tokenizer_config.json object (`{}` when absent). */
  rawConfig: Record<string, unknown>;
}
