/**
 * BERT WordPiece tokenizer built from a `vocab.txt` (one token per line, line number = id).
 *
 * @module
 */

import { filesFor, joinPath as join } from "../../formats/files.ts";
import { basicTokenize, type BasicTokenizerOptions } from "./bert_basic.ts";
import { cleanUpTokenization, type EncodedRow, Tokenizer } from "./base.ts";
import { configFlag, readTokenizerSettings } from "./config.ts";
import type { SpecialTokens, TokenizerSettings } from "./types.ts";

/** Special tokens BERT uses when tokenizer_config.json does not name them. */
export const BERT_DEFAULT_SPECIAL_TOKENS: SpecialTokens = {
  unkToken: "[UNK]",
  sepToken: "[SEP]",
  padToken: "[PAD]",
  clsToken: "[CLS]",
  maskToken: "[MASK]",
};

/** Parses `vocab.txt`: one token per line, the line index is the id. */
export function parseVocabTxt(text: string): string[] {
  const lines = text.split("\n");
  if (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
  return lines.map((line) => line.endsWith("\r") ? line.slice(0, -1) : line);
}

/**
 * Greedy longest-match-first WordPiece: continuation pieces carry `prefix` ("##"); a word longer than
 * `maxChars` characters, or with any part that matches nothing, becomes `unkToken` as a whole.
 */
export function wordPiece(
  word: string,
  vocab: { has(token: string): boolean },
  unkToken: string,
  maxChars = 100,
  prefix = "##",
): string[] {
  const chars = Array.from(word);
  if (chars.length > maxChars) return [unkToken];
  const pieces: string[] = [];
  let start = 0;
  while (start < chars.length) {
    let end = chars.length;
    let found: string | undefined;
    while (start < end) {
      const sub = (start > 0 ? prefix : "") + chars.slice(start, end).join("");
      if (vocab.has(sub)) {
        found = sub;
        break;
      }
      end--;
    }
    if (found === undefined) return [unkToken];
    pieces.push(found);
    start = end;
  }
  return pieces;
}

/** BERT tokenizer: {@link basicTokenize} then {@link wordPiece}; `[CLS] a [SEP] (b [SEP])` special tokens. */
export class WordPieceTokenizer extends Tokenizer {
  readonly #tokenToId = new Map<string, number>();
  readonly #idToToken: string[] = [];
  readonly #basic: BasicTokenizerOptions;
  /** Maximum characters per word before it becomes `[UNK]` (100 as in BERT). */
  readonly maxInputCharsPerWord = 100;

  /** Builds the tokenizer from the vocabulary (id order) and the folder settings. */
  constructor(vocab: string[], settings: TokenizerSettings, source = "<memory>") {
    super(settings, source);
    vocab.forEach((token, id) => {
      this.#tokenToId.set(token, id);
      this.#idToToken[id] = token;
    });
    for (const [token, id] of settings.addedTokens) {
      this.#tokenToId.set(token, id);
      this.#idToToken[id] = token;
    }
    const stripAccentsSetting = settings.rawConfig.strip_accents;
    this.#basic = {
      doLowerCase: configFlag(settings, "do_lower_case", true),
      tokenizeChineseChars: configFlag(settings, "tokenize_chinese_chars", true),
      stripAccents: typeof stripAccentsSetting === "boolean" ? stripAccentsSetting : undefined,
    };
  }

  /** Loads `vocab.txt` (+ tokenizer_config.json / special_tokens_map.json) from a folder. */
  static async fromDir(dir: string): Promise<WordPieceTokenizer> {
    const vocab = parseVocabTxt(await filesFor(dir).readText(join(dir, "vocab.txt")));
    const settings = await readTokenizerSettings(dir, BERT_DEFAULT_SPECIAL_TOKENS);
    return new WordPieceTokenizer(vocab, settings, dir);
  }

  /** `vocab.txt`. */
  protected override get vocabFileName(): string {
    return "vocab.txt";
  }
  /** Number of ids (vocab.txt lines plus added tokens). */
  get vocabSize(): number {
    return this.#idToToken.length;
  }
  /** BERT models take segment ids. */
  get usesTokenTypeIds(): boolean {
    return true;
  }
  /** BertTokenizer defaults `clean_up_tokenization_spaces` to true. */
  protected get defaultCleanUp(): boolean {
    return true;
  }

  /** Id of a token, `undefined` when unknown. */
  tokenToId(token: string): number | undefined {
    return this.#tokenToId.get(token);
  }
  /** Token of an id, `undefined` when out of range. */
  idToToken(id: number): string | undefined {
    return this.#idToToken[id];
  }

  /** Basic tokenization + WordPiece; special tokens in the text stay whole. */
  tokenize(text: string): string[] {
    const unk = this.unkToken ?? "[UNK]";
    const out: string[] = [];
    for (const piece of this.splitOnAddedTokens(text)) {
      if (piece.isAdded) {
        out.push(piece.text);
        continue;
      }
      for (const word of basicTokenize(piece.text, this.#basic)) {
        out.push(...wordPiece(word, this.#tokenToId, unk, this.maxInputCharsPerWord));
      }
    }
    return out;
  }

  /** Ids of {@link tokenize}. */
  protected encodeText(text: string): number[] {
    return this.convertTokensToIds(this.tokenize(text));
  }

  /** `[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]`; segment 0 up to the first `[SEP]`, 1 after. */
  protected buildWithSpecialTokens(ids: number[], pair?: number[]): EncodedRow {
    const cls = this.clsTokenId === undefined ? [] : [this.clsTokenId];
    const sep = this.sepTokenId === undefined ? [] : [this.sepTokenId];
    const first = [...cls, ...ids, ...sep];
    if (pair === undefined) return { ids: first, typeIds: first.map(() => 0) };
    const second = [...pair, ...sep];
    return { ids: [...first, ...second], typeIds: [...first.map(() => 0), ...second.map(() => 1)] };
  }

  /**
   * Like transformers' BertTokenizer: word pieces are joined with spaces and " ##" removed; special/added
   * tokens form their own space-separated segments; then optional `clean_up_tokenization`.
   * Because CJK characters are separate words, HF decodes "你好" as "你 好" (with spaces) and so does this.
   */
  protected decodeIds(ids: number[], skipSpecialTokens: boolean, cleanUp: boolean): string {
    const special = new Set(this.allSpecialIds);
    const added = new Set([...this.allSpecialTokens, ...this.settings.addedTokens.keys()]);
    const segments: string[] = [];
    let words: string[] = [];
    const flush = () => {
      if (words.length) segments.push(words.join(" ").replaceAll(" ##", "").trim());
      words = [];
    };
    for (const id of ids) {
      if (skipSpecialTokens && special.has(id)) continue;
      const token = this.#idToToken[id];
      if (added.has(token)) {
        flush();
        segments.push(token);
      } else words.push(token);
    }
    flush();
    const text = segments.join(" ");
    return cleanUp ? cleanUpTokenization(text) : text;
  }
}
