/**
 * The common {@link Tokenizer} base class: special tokens, `encode` / `decode`, batching with padding and
 * truncation, token/id conversion and chat templates. Subclasses supply the model (WordPiece, byte-level BPE,
 * or a tokenizer.json pipeline).
 *
 * @module
 */

import { renderChatTemplate } from "./chat_template.ts";
import { show } from "../config.ts";
import type {
  BatchEncoding,
  ChatMessage,
  ChatTemplateOptions,
  DecodeOptions,
  EncodeBatchOptions,
  EncodeOptions,
  PaddingSide,
  SpecialTokens,
  TokenizerSettings,
  TruncationSide,
} from "./types.ts";

/** Token ids of one encoded row plus their segment (token type) ids. */
export interface EncodedRow {
  /** Token ids. */
  ids: number[];
  /** Segment ids, same length as `ids`. */
  typeIds: number[];
}

/** A piece of input text: either plain text or exactly one added/special token. */
export interface TextPiece {
  /** The text of the piece. */
  text: string;
  /** Whether `text` is an added/special token that must map to its own id. */
  isAdded: boolean;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Applies transformers' `clean_up_tokenization` to decoded text. */
export function cleanUpTokenization(text: string): string {
  return text.replaceAll(" .", ".").replaceAll(" ?", "?").replaceAll(" !", "!").replaceAll(" ,", ",")
    .replaceAll(" ' ", "'").replaceAll(" n't", "n't").replaceAll(" 'm", "'m").replaceAll(" 's", "'s")
    .replaceAll(" 've", "'ve").replaceAll(" 're", "'re");
}

/** Removes tokens from the longer of two sequences until they fit `budget` (transformers' `longest_first`). */
function truncateToBudget(a: number[], b: number[] | undefined, budget: number, side: TruncationSide): void {
  const drop = (seq: number[]) => side === "left" ? seq.shift() : seq.pop();
  while (a.length + (b?.length ?? 0) > budget) {
    if (b !== undefined && b.length >= a.length) drop(b);
    else drop(a);
  }
}

/**
 * Base class of all tokenizers. Use `loadTokenizer(dir)` to get one for a Hugging Face model folder.
 *
 * Naming follows transformers in camelCase (`encode`, `decode`, `tokenize`, `convertTokensToIds`,
 * `padTokenId`, `modelMaxLength`, `applyChatTemplate`, …).
 */
export abstract class Tokenizer {
  /** Special tokens (string forms). Use the `padToken` setter to change the padding token. */
  readonly specialTokens: SpecialTokens;
  /** Default padding side for `encodeBatch` (tokenizer_config.json `padding_side`, else `"right"`). */
  paddingSide: PaddingSide;
  /** Default truncation side (tokenizer_config.json `truncation_side`, else `"right"`). */
  truncationSide: TruncationSide;
  /** Maximum sequence length (tokenizer_config.json `model_max_length`, else `Infinity`). */
  modelMaxLength: number;
  /** Chat template(s) of the folder, if any. */
  chatTemplate?: string | Record<string, string>;
  /** Where the tokenizer was loaded from (used in error messages). */
  readonly source: string;
  /** Settings read from the folder. */
  protected readonly settings: TokenizerSettings;
  #addedRegex?: RegExp | null;

  /** Stores the shared settings; `source` names the folder in error messages. */
  constructor(settings: TokenizerSettings, source: string) {
    this.settings = settings;
    this.specialTokens = settings.specialTokens;
    this.paddingSide = settings.paddingSide;
    this.truncationSide = settings.truncationSide;
    this.modelMaxLength = settings.modelMaxLength;
    this.chatTemplate = settings.chatTemplate;
    this.source = source;
  }

  /** Number of entries in the vocabulary, added tokens included (like `len(tokenizer)` in transformers). */
  abstract get vocabSize(): number;
  /** Name of the vocabulary file inside the folder (`tokenizer.json`, `vocab.txt`, `vocab.json`; "" if none). */
  protected get vocabFileName(): string {
    return "";
  }
  /** The vocabulary file this tokenizer was read from (just `source` for one built in memory); for messages. */
  get vocabFile(): string {
    const name = this.vocabFileName;
    return this.source === "<memory>" || !name ? this.source : `${this.source.replace(/(.)\/+$/, "$1")}/${name}`;
  }
  /** Whether `encodeBatch` returns `tokenTypeIds` (BERT-style models). */
  abstract get usesTokenTypeIds(): boolean;
  /** Splits text into tokens (no special tokens added). */
  abstract tokenize(text: string): string[];
  /** Id of a token string, or `undefined` when it is not in the vocabulary. */
  abstract tokenToId(token: string): number | undefined;
  /** Token string of an id, or `undefined` when the id is out of range. */
  abstract idToToken(id: number): string | undefined;
  /** Encodes text to ids without special tokens. */
  protected abstract encodeText(text: string): number[];
  /** Adds the model's special tokens around one sequence or a pair. */
  protected abstract buildWithSpecialTokens(ids: number[], pair?: number[]): EncodedRow;
  /** Turns ids (already validated) into text. */
  protected abstract decodeIds(ids: number[], skipSpecialTokens: boolean, cleanUp: boolean): string;
  /** Default for `DecodeOptions.cleanUpTokenizationSpaces` when the config does not set it. */
  protected abstract get defaultCleanUp(): boolean;

  /** Beginning-of-sequence token string. */
  get bosToken(): string | undefined {
    return this.specialTokens.bosToken;
  }
  /** End-of-sequence token string. */
  get eosToken(): string | undefined {
    return this.specialTokens.eosToken;
  }
  /** Unknown token string. */
  get unkToken(): string | undefined {
    return this.specialTokens.unkToken;
  }
  /** Padding token string; assign to change it (e.g. `tok.padToken = tok.eosToken` for GPT-2). */
  get padToken(): string | undefined {
    return this.specialTokens.padToken;
  }
  set padToken(token: string | undefined) {
    if (token === undefined) delete this.specialTokens.padToken;
    else this.specialTokens.padToken = token;
    this.#addedRegex = undefined;
  }
  /** Classifier token string (BERT `[CLS]`). */
  get clsToken(): string | undefined {
    return this.specialTokens.clsToken;
  }
  /** Separator token string (BERT `[SEP]`). */
  get sepToken(): string | undefined {
    return this.specialTokens.sepToken;
  }
  /** Mask token string. */
  get maskToken(): string | undefined {
    return this.specialTokens.maskToken;
  }

  #idOf(token: string | undefined): number | undefined {
    return token === undefined ? undefined : this.tokenToId(token);
  }
  /** Id of the beginning-of-sequence token, `undefined` when absent. */
  get bosTokenId(): number | undefined {
    return this.#idOf(this.specialTokens.bosToken);
  }
  /** Id of the end-of-sequence token, `undefined` when absent. */
  get eosTokenId(): number | undefined {
    return this.#idOf(this.specialTokens.eosToken);
  }
  /** Id of the unknown token, `undefined` when absent. */
  get unkTokenId(): number | undefined {
    return this.#idOf(this.specialTokens.unkToken);
  }
  /** Id of the padding token, `undefined` when absent. */
  get padTokenId(): number | undefined {
    return this.#idOf(this.specialTokens.padToken);
  }
  /** Id of the classifier token, `undefined` when absent. */
  get clsTokenId(): number | undefined {
    return this.#idOf(this.specialTokens.clsToken);
  }
  /** Id of the separator token, `undefined` when absent. */
  get sepTokenId(): number | undefined {
    return this.#idOf(this.specialTokens.sepToken);
  }
  /** Id of the mask token, `undefined` when absent. */
  get maskTokenId(): number | undefined {
    return this.#idOf(this.specialTokens.maskToken);
  }

  /** All special token strings (named ones, `additional_special_tokens`, added tokens flagged special). */
  get allSpecialTokens(): string[] {
    const { additionalSpecialTokens, ...named } = this.specialTokens;
    const all = new Set<string>(Object.values(named).filter((t): t is string => typeof t === "string"));
    for (const t of additionalSpecialTokens ?? []) all.add(t);
    for (const t of this.settings.addedSpecial) all.add(t);
    return [...all];
  }
  /** Ids of {@link allSpecialTokens} that are in the vocabulary. */
  get allSpecialIds(): number[] {
    return this.allSpecialTokens.map((t) => this.tokenToId(t)).filter((id): id is number => id !== undefined);
  }

  /**
   * Splits text around special and added tokens (longest first) so that each occurrence becomes one id,
   * as transformers' slow tokenizers do. Used by the WordPiece and BPE implementations.
   */
  protected splitOnAddedTokens(text: string): TextPiece[] {
    if (this.#addedRegex === undefined) {
      const tokens = new Set<string>([...this.allSpecialTokens, ...this.settings.addedTokens.keys()]);
      const usable = [...tokens].filter((t) => t.length > 0 && this.tokenToId(t) !== undefined);
      usable.sort((a, b) => b.length - a.length);
      this.#addedRegex = usable.length ? new RegExp(`(${usable.map(escapeRegExp).join("|")})`, "u") : null;
    }
    if (!this.#addedRegex || text.length === 0) return text.length ? [{ text, isAdded: false }] : [];
    const parts = text.split(this.#addedRegex);
    const pieces: TextPiece[] = [];
    parts.forEach((part, i) => {
      if (part.length > 0) pieces.push({ text: part, isAdded: i % 2 === 1 });
    });
    return pieces;
  }

  /** Encodes text to token ids (with special tokens unless `addSpecialTokens: false`). */
  encode(text: string, options: EncodeOptions = {}): number[] {
    const limit = options.truncation ? (options.maxLength ?? this.modelMaxLength) : Infinity;
    return this.#encodeRow(text, options.textPair, options.addSpecialTokens ?? true, limit, this.truncationSide).ids;
  }

  #encodeRow(
    text: string,
    pair: string | undefined,
    addSpecialTokens: boolean,
    limit: number,
    side: TruncationSide,
  ): EncodedRow {
    const a = this.encodeText(text);
    const b = pair === undefined ? undefined : this.encodeText(pair);
    if (Number.isFinite(limit)) {
      const reserved = addSpecialTokens ? this.buildWithSpecialTokens([], b && []).ids.length : 0;
      if (limit < reserved) {
        throw new RangeError(`tokenizer: maxLength ${limit} is smaller than the ${reserved} special tokens added`);
      }
      truncateToBudget(a, b, limit - reserved, side);
    }
    if (addSpecialTokens) return this.buildWithSpecialTokens(a, b);
    return { ids: [...a, ...(b ?? [])], typeIds: [...a.map(() => 0), ...(b ?? []).map(() => 1)] };
  }

  /**
   * Encodes several texts at once, with optional truncation and padding.
   * Padding uses `padTokenId` (an error when the tokenizer has none: set `padToken` first).
   */
  encodeBatch(texts: string[], options: EncodeBatchOptions = {}): BatchEncoding {
    const padding = options.padding === true ? "longest" : options.padding ?? false;
    const side = options.paddingSide ?? this.paddingSide;
    const maxLength = options.maxLength ?? this.modelMaxLength;
    if (options.textPairs && options.textPairs.length !== texts.length) {
      throw new RangeError(`tokenizer: ${texts.length} texts but ${options.textPairs.length} textPairs`);
    }
    const rows = texts.map((text, i) =>
      this.#encodeRow(
        text,
        options.textPairs?.[i],
        options.addSpecialTokens ?? true,
        options.truncation ? maxLength : Infinity,
        options.truncationSide ?? this.truncationSide,
      )
    );
    let target = 0;
    if (padding === "longest") target = Math.max(0, ...rows.map((r) => r.ids.length));
    else if (padding === "max_length") {
      if (!Number.isFinite(maxLength)) {
        throw new RangeError(`tokenizer: padding "max_length" needs maxLength (modelMaxLength is not set)`);
      }
      target = maxLength;
    }
    const padId = this.padTokenId;
    if (padding && padId === undefined && rows.some((r) => r.ids.length < target)) {
      throw new Error(
        `tokenizer: asked to pad but ${this.source} has no padding token; set tokenizer.padToken (e.g. to eosToken)`,
      );
    }
    const inputIds: number[][] = [];
    const attentionMask: number[][] = [];
    const tokenTypeIds: number[][] = [];
    for (const row of rows) {
      const n = Math.max(0, target - row.ids.length);
      const pad = (real: number[], value: number) => {
        const fill = new Array<number>(n).fill(value);
        return side === "left" ? [...fill, ...real] : [...real, ...fill];
      };
      inputIds.push(pad(row.ids, padId ?? 0));
      attentionMask.push(pad(row.ids.map(() => 1), 0));
      tokenTypeIds.push(pad(row.typeIds, 0));
    }
    return this.usesTokenTypeIds ? { inputIds, attentionMask, tokenTypeIds } : { inputIds, attentionMask };
  }

  /** Decodes ids to text. Throws a `RangeError` for ids outside the vocabulary. */
  decode(ids: ArrayLike<number>, options: DecodeOptions = {}): string {
    const list = Array.from(ids);
    for (const id of list) {
      if (!Number.isInteger(id) || this.idToToken(id) === undefined) {
        throw new RangeError(`tokenizer: id ${id} is not in the vocabulary of ${this.source} (size ${this.vocabSize})`);
      }
    }
    const cleanUp = options.cleanUpTokenizationSpaces ?? this.settings.cleanUpTokenizationSpaces ??
      this.defaultCleanUp;
    return this.decodeIds(list, options.skipSpecialTokens ?? false, cleanUp);
  }

  /** Decodes each row of a batch (see {@link decode}). */
  decodeBatch(batch: ArrayLike<number>[], options: DecodeOptions = {}): string[] {
    return Array.from(batch, (ids) => this.decode(ids, options));
  }

  /** Token string(s) to id(s); unknown tokens map to `unkTokenId` (an error when there is none). */
  convertTokensToIds(token: string): number;
  /** Token string(s) to id(s); unknown tokens map to `unkTokenId` (an error when there is none). */
  convertTokensToIds(tokens: string[]): number[];
  convertTokensToIds(tokens: string | string[]): number | number[] {
    const one = (t: string): number => {
      const id = this.tokenToId(t) ?? this.unkTokenId;
      if (id === undefined) throw new RangeError(`tokenizer: token ${show(t)} is not in the vocabulary`);
      return id;
    };
    return typeof tokens === "string" ? one(tokens) : tokens.map(one);
  }

  /** Id(s) to token string(s); an id outside the vocabulary is a `RangeError`. */
  convertIdsToTokens(id: number): string;
  /** Id(s) to token string(s); an id outside the vocabulary is a `RangeError`. */
  convertIdsToTokens(ids: ArrayLike<number>): string[];
  convertIdsToTokens(ids: number | ArrayLike<number>): string | string[] {
    const one = (id: number): string => {
      const t = this.idToToken(id);
      if (t === undefined) throw new RangeError(`tokenizer: id ${id} is not in the vocabulary of ${this.source}`);
      return t;
    };
    return typeof ids === "number" ? one(ids) : Array.from(ids, one);
  }

  /**
   * Renders the folder's chat template (tokenizer_config.json `chat_template`, chat_template.jinja or
   * chat_template.json) for `messages`, like transformers' `apply_chat_template(tokenize=False)`.
   * Encode the result with `encode(text, {addSpecialTokens: false})` since templates add their own tokens.
   */
  applyChatTemplate(messages: ChatMessage[], options: ChatTemplateOptions = {}): string {
    return renderChatTemplate(this.chatTemplate, messages, this.specialTokens, options, this.source);
  }
}
