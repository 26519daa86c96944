/**
 * Tokenizer for folders with a `tokenizer.json` (HF "fast" tokenizer format), backed by the npm package
 * `@huggingface/tokenizers` (a pure JS port of HF tokenizers' pipeline: normalizer, pre-tokenizer, model,
 * post-processor, decoder).
 *
 * @module
 */

import { filesFor, joinPath as join } from "../../formats/files.ts";
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { type EncodedRow, Tokenizer } from "./base.ts";
import { readTokenizerSettings, tokenContent } from "./config.ts";
import { printable } from "../../formats/safetensors.ts";
import type { SpecialTokens, TokenizerSettings } from "./types.ts";

/** The parts of tokenizer.json this wrapper reads itself (the npm package reads the rest). */
export interface TokenizerJson {
  /** Tokens outside the model vocabulary, e.g. BERT's `[CLS]` or GPT-2's `<|endoftext|>`. */
  added_tokens?: { id: number; content: string; special?: boolean }[];
  /** The model: `type` is `"WordPiece"`, `"BPE"`, `"Unigram"`, …; `unk_token` when it has one. */
  model?: { type?: string; unk_token?: unknown };
  /** Post-processor; `BertProcessing` / `RobertaProcessing` name the cls and sep tokens. */
  post_processor?: { type?: string; cls?: [string, number]; sep?: [string, number] } | null;
}

/** Special tokens commonly found among tokenizer.json `added_tokens`, and the role they play. */
const WELL_KNOWN: [string, keyof SpecialTokens][] = [
  ["[PAD]", "padToken"],
  ["<pad>", "padToken"],
  ["[MASK]", "maskToken"],
  ["<mask>", "maskToken"],
  ["[UNK]", "unkToken"],
  ["<unk>", "unkToken"],
  ["[CLS]", "clsToken"],
  ["[SEP]", "sepToken"],
  ["<s>", "bosToken"],
  ["</s>", "eosToken"],
  ["<|endoftext|>", "bosToken"],
  ["<|endoftext|>", "eosToken"],
  ["<|endoftext|>", "unkToken"],
];

/** Guesses default special tokens from tokenizer.json (model `unk_token`, BERT/RoBERTa post-processor, names). */
export function specialTokensFromJson(json: TokenizerJson): SpecialTokens {
  const found: SpecialTokens = {};
  const names = new Set((json.added_tokens ?? []).map((t) => t.content));
  for (const [content, role] of WELL_KNOWN) {
    if (names.has(content) && found[role] === undefined) (found as Record<string, string>)[role] = content;
  }
  const unk = tokenContent(json.model?.unk_token);
  if (unk !== undefined) found.unkToken = unk;
  const post = json.post_processor;
  if (post && (post.type === "BertProcessing" || post.type === "RobertaProcessing") && post.cls && post.sep) {
    found.clsToken = post.cls[0];
    found.sepToken = post.sep[0];
    if (post.type === "RobertaProcessing") {
      found.bosToken ??= post.cls[0];
      found.eosToken ??= post.sep[0];
    }
  }
  return found;
}

/** A tokenizer.json pipeline run by `@huggingface/tokenizers`, behind the common {@link Tokenizer} API. */
export class HfJsonTokenizer extends Tokenizer {
  readonly #inner: HfTokenizer;
  readonly #json: TokenizerJson;
  readonly #vocabSize: number;

  /** Wraps a parsed tokenizer.json with the folder settings. */
  constructor(json: Record<string, unknown>, settings: TokenizerSettings, source = "<memory>") {
    super(settings, source);
    this.#json = json as TokenizerJson;
    this.#inner = new HfTokenizer(json, settings.rawConfig);
    let maxId = -1;
    for (const id of this.#inner.get_vocab(true).values()) maxId = Math.max(maxId, id);
    this.#vocabSize = maxId + 1;
  }

  /** Loads `tokenizer.json` (+ tokenizer_config.json / special_tokens_map.json) from a folder. */
  static async fromDir(dir: string): Promise<HfJsonTokenizer> {
    const path = join(dir, "tokenizer.json");
    let json: Record<string, unknown>;
    try {
      json = JSON.parse(await filesFor(path).readText(path));
    } catch (e) {
      throw new Error(`tokenizer: cannot read ${path}: ${printable((e as Error).message)}`);
    }
    const settings = await readTokenizerSettings(dir, specialTokensFromJson(json as TokenizerJson));
    return new HfJsonTokenizer(json, settings, dir);
  }

  /** `tokenizer.json`. */
  protected override get vocabFileName(): string {
    return "tokenizer.json";
  }
  /** Largest id + 1, added tokens included. */
  get vocabSize(): number {
    return this.#vocabSize;
  }
  /** From tokenizer_config.json `model_input_names`, else true for BERT-style (WordPiece / BertProcessing). */
  get usesTokenTypeIds(): boolean {
    const names = this.settings.rawConfig.model_input_names;
    if (Array.isArray(names)) return names.includes("token_type_ids");
    return this.#json.model?.type === "WordPiece" || this.#json.post_processor?.type === "BertProcessing";
  }
  /** WordPiece (BERT) cleans up tokenization spaces by default; other models do not. */
  protected get defaultCleanUp(): boolean {
    return this.#json.model?.type === "WordPiece";
  }

  /** Id of a token (added tokens included), `undefined` when unknown. */
  tokenToId(token: string): number | undefined {
    return this.#inner.token_to_id(token);
  }
  /** Token of an id, `undefined` when out of range. */
  idToToken(id: number): string | undefined {
    return this.#inner.id_to_token(id);
  }

  /** Runs the pipeline without special tokens. */
  tokenize(text: string): string[] {
    return this.#inner.tokenize(text, { add_special_tokens: false });
  }

  /** Ids of {@link tokenize}. */
  protected encodeText(text: string): number[] {
    return this.#inner.encode(text, { add_special_tokens: false }).ids;
  }

  /** Applies the tokenizer.json post-processor (e.g. BERT's `[CLS] a [SEP] b [SEP]`). */
  protected buildWithSpecialTokens(ids: number[], pair?: number[]): EncodedRow {
    const post = this.#inner.post_processor;
    if (!post) return { ids: [...ids, ...(pair ?? [])], typeIds: [...ids.map(() => 0), ...(pair ?? []).map(() => 1)] };
    const toTokens = (xs: number[]) => xs.map((id) => this.convertIdsToTokens(id));
    const out = post.post_process(toTokens(ids), pair === undefined ? null : toTokens(pair), true);
    const tokens = [...out.tokens, ...(out.tokens_pair ?? [])];
    const outIds = this.convertTokensToIds(tokens);
    let typeIds = out.token_type_ids;
    if (!typeIds || typeIds.length !== outIds.length) {
      typeIds = [...out.tokens.map(() => 0), ...(out.tokens_pair ?? []).map(() => 1)];
    }
    return { ids: outIds, typeIds };
  }

  /** Runs the tokenizer.json decoder. */
  protected decodeIds(ids: number[], skipSpecialTokens: boolean, cleanUp: boolean): string {
    let list = ids;
    if (skipSpecialTokens) {
      const special = new Set(this.allSpecialIds);
      list = ids.filter((id) => !special.has(id));
    }
    if (list.length === 0) return "";
    return this.#inner.decode(list, {
      skip_special_tokens: skipSpecialTokens,
      clean_up_tokenization_spaces: cleanUp,
    });
  }
}
