/**
 * GPT-2 byte-level BPE tokenizer built from `vocab.json` (token → id) and `merges.txt` (ranked merges).
 *
 * @module
 */

import { filesFor, joinPath as join } from "../../formats/files.ts";
import { cleanUpTokenization, type EncodedRow, Tokenizer } from "./base.ts";
import { checkIds, configFlag, readJsonIfExists, readTokenizerSettings } from "./config.ts";
import { show } from "../config.ts";
import type { SpecialTokens, TokenizerSettings } from "./types.ts";

/** GPT-2's defaults: `<|endoftext|>` is bos, eos and unk; there is no padding token. */
export const GPT2_DEFAULT_SPECIAL_TOKENS: SpecialTokens = {
  bosToken: "<|endoftext|>",
  eosToken: "<|endoftext|>",
  unkToken: "<|endoftext|>",
};

/**
 * GPT-2's pre-tokenization: contractions, optional-space + letters / digits / other symbols, and whitespace runs
 * (a run followed by a non-space keeps its last space for the next word).
 */
export const GPT2_PRETOKENIZE = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/**
 * GPT-2's reversible byte → printable character table: printable Latin-1 bytes (`!`..`~`, `¡`..`¬`, `®`..`ÿ`)
 * map to themselves, the other 68 bytes to U+0100 onwards in byte order (so space becomes `Ġ`, newline `Ċ`).
 */
export function bytesToUnicode(): string[] {
  const table: string[] = new Array(256);
  let next = 256;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    table[b] = String.fromCodePoint(printable ? b : next++);
  }
  return table;
}

/** Parses `merges.txt`: optional `#version` header, then one `left right` pair per line, in rank order. */
export function parseMerges(text: string): [string, string][] {
  const merges: [string, string][] = [];
  for (const raw of text.split("\n")) {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (line === "" || line.startsWith("#version")) continue;
    const space = line.indexOf(" ", 1);
    if (space < 0) throw new Error(`tokenizer: bad merges.txt line ${show(line)}`);
    merges.push([line.slice(0, space), line.slice(space + 1)]);
  }
  return merges;
}

const BYTE_ENCODER = bytesToUnicode();
const BYTE_DECODER = new Map(BYTE_ENCODER.map((ch, b) => [ch, b]));
const UTF8 = new TextEncoder();
const CACHE_LIMIT = 100_000;

/** GPT-2 style byte-level BPE tokenizer. */
export class ByteLevelBpeTokenizer extends Tokenizer {
  readonly #encoder = new Map<string, number>();
  readonly #decoder: string[] = [];
  readonly #ranks = new Map<string, number>();
  readonly #cache = new Map<string, string[]>();
  readonly #addedContents: Set<string>;
  /** Prepend a space to the text before tokenizing (`add_prefix_space`, default false). */
  readonly addPrefixSpace: boolean;
  /** Prepend `bosToken` when adding special tokens (`add_bos_token`, default false as in GPT-2). */
  readonly addBosToken: boolean;
  /** Append `eosToken` when adding special tokens (`add_eos_token`, default false). */
  readonly addEosToken: boolean;

  /** Builds the tokenizer from a token → id table, ranked merges and the folder settings. */
  constructor(
    vocab: Record<string, number>,
    merges: [string, string][],
    settings: TokenizerSettings,
    source = "<memory>",
  ) {
    super(settings, source);
    for (const [token, id] of Object.entries(vocab)) {
      this.#encoder.set(token, id);
      this.#decoder[id] = token;
    }
    for (const [token, id] of settings.addedTokens) {
      this.#encoder.set(token, id);
      this.#decoder[id] = token;
    }
    merges.forEach(([a, b], rank) => {
      const key = `${a} ${b}`;
      if (!this.#ranks.has(key)) this.#ranks.set(key, rank);
    });
    this.#addedContents = new Set(settings.addedTokens.keys());
    this.addPrefixSpace = configFlag(settings, "add_prefix_space", false);
    this.addBosToken = configFlag(settings, "add_bos_token", false);
    this.addEosToken = configFlag(settings, "add_eos_token", false);
  }

  /** Loads `vocab.json` + `merges.txt` (+ tokenizer_config.json / special_tokens_map.json) from a folder. */
  static async fromDir(dir: string): Promise<ByteLevelBpeTokenizer> {
    const vocab = checkIds(join(dir, "vocab.json"), await readJsonIfExists(join(dir, "vocab.json")));
    const merges = parseMerges(await filesFor(dir).readText(join(dir, "merges.txt")));
    const settings = await readTokenizerSettings(dir, GPT2_DEFAULT_SPECIAL_TOKENS);
    return new ByteLevelBpeTokenizer(vocab, merges, settings, dir);
  }

  /** `vocab.json`. */
  protected override get vocabFileName(): string {
    return "vocab.json";
  }
  /** Number of ids (largest id + 1). */
  get vocabSize(): number {
    return this.#decoder.length;
  }
  /** GPT-2 has no segment ids. */
  get usesTokenTypeIds(): boolean {
    return false;
  }
  /** Byte-level decoding is lossless; transformers' GPT-2 defaults to no clean-up. */
  protected get defaultCleanUp(): boolean {
    return false;
  }

  /** Id of a token, `undefined` when unknown. */
  tokenToId(token: string): number | undefined {
    return this.#encoder.get(token);
  }
  /** Token of an id, `undefined` when out of range. */
  idToToken(id: number): string | undefined {
    return this.#decoder[id];
  }

  /** Applies the merges to one pre-token (already mapped to byte characters), lowest rank first. */
  bpe(word: string): string[] {
    const cached = this.#cache.get(word);
    if (cached) return cached;
    let symbols = Array.from(word);
    while (symbols.length > 1) {
      let best = -1;
      let bestRank = Infinity;
      for (let i = 0; i < symbols.length - 1; i++) {
        const rank = this.#ranks.get(`${symbols[i]} ${symbols[i + 1]}`);
        if (rank !== undefined && rank < bestRank) {
          bestRank = rank;
          best = i;
        }
      }
      if (best < 0) break;
      const left = symbols[best];
      const right = symbols[best + 1];
      const merged: string[] = [];
      for (let i = 0; i < symbols.length; i++) {
        if (i < symbols.length - 1 && symbols[i] === left && symbols[i + 1] === right) {
          merged.push(left + right);
          i++;
        } else merged.push(symbols[i]);
      }
      symbols = merged;
    }
    if (this.#cache.size >= CACHE_LIMIT) this.#cache.clear();
    this.#cache.set(word, symbols);
    return symbols;
  }

  /** Pre-tokenizes with {@link GPT2_PRETOKENIZE}, maps UTF-8 bytes to characters and applies BPE. */
  tokenize(text: string): string[] {
    const out: string[] = [];
    for (const piece of this.splitOnAddedTokens(this.addPrefixSpace ? " " + text : text)) {
      if (piece.isAdded) {
        out.push(piece.text);
        continue;
      }
      for (const match of piece.text.matchAll(GPT2_PRETOKENIZE)) {
        let mapped = "";
        for (const byte of UTF8.encode(match[0])) mapped += BYTE_ENCODER[byte];
        out.push(...this.bpe(mapped));
      }
    }
    return out;
  }

  /** Ids of {@link tokenize}. */
  protected encodeText(text: string): number[] {
    return this.convertTokensToIds(this.tokenize(text));
  }

  /** `bos? a eos?` (and `bos? b eos?` for a pair), following `add_bos_token` / `add_eos_token`. */
  protected buildWithSpecialTokens(ids: number[], pair?: number[]): EncodedRow {
    const bos = this.addBosToken && this.bosTokenId !== undefined ? [this.bosTokenId] : [];
    const eos = this.addEosToken && this.eosTokenId !== undefined ? [this.eosTokenId] : [];
    const first = [...bos, ...ids, ...eos];
    const second = pair === undefined ? [] : [...bos, ...pair, ...eos];
    return { ids: [...first, ...second], typeIds: [...first.map(() => 0), ...second.map(() => 1)] };
  }

  /** Maps token characters back to bytes and decodes UTF-8 (invalid sequences become U+FFFD). */
  protected decodeIds(ids: number[], skipSpecialTokens: boolean, cleanUp: boolean): string {
    const special = new Set(this.allSpecialIds);
    const literal = new Set([...this.allSpecialTokens, ...this.#addedContents]);
    const decoder = new TextDecoder("utf-8");
    let text = "";
    let bytes: number[] = [];
    const flush = () => {
      if (bytes.length) text += decoder.decode(new Uint8Array(bytes));
      bytes = [];
    };
    for (const id of ids) {
      if (skipSpecialTokens && special.has(id)) continue;
      const token = this.#decoder[id];
      if (literal.has(token)) {
        flush();
        text += token;
        continue;
      }
      for (const ch of token) {
        const b = BYTE_DECODER.get(ch);
        if (b === undefined) {
          flush();
          text += ch;
        } else bytes.push(b);
      }
    }
    flush();
    return cleanUp ? cleanUpTokenization(text) : text;
  }
}
