/**
 * Reading tokenizer settings from a Hugging Face model folder: `tokenizer_config.json`,
 * `special_tokens_map.json`, `added_tokens.json` and chat templates (`chat_template.jinja` / `.json`).
 *
 * @module
 */

import { filesFor, isNotFound, joinPath as join } from "../../formats/files.ts";
import type { SpecialTokenName, SpecialTokens, TokenizerSettings } from "./types.ts";
import { printable } from "../../formats/safetensors.ts";
import { CONFIG_LIMITS, show } from "../config.ts";

/** JSON key in the HF files for each named special token. */
const SPECIAL_KEYS: [SpecialTokenName, string][] = [
  ["bosToken", "bos_token"],
  ["eosToken", "eos_token"],
  ["unkToken", "unk_token"],
  ["sepToken", "sep_token"],
  ["padToken", "pad_token"],
  ["clsToken", "cls_token"],
  ["maskToken", "mask_token"],
];

/** Reads a text file, or returns `undefined` when it does not exist. */
export async function readTextIfExists(path: string): Promise<string | undefined> {
  try {
    return await filesFor(path).readText(path);
  } catch (e) {
    if (isNotFound(e)) return undefined;
    throw e;
  }
}

/** Reads and parses a JSON file, or returns `undefined` when it does not exist. Parse errors name the file. */
export async function readJsonIfExists(path: string): Promise<unknown> {
  const text = await readTextIfExists(path);
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`tokenizer: cannot parse JSON file ${path}: ${printable((e as Error).message)}`);
  }
}

/** Largest token id accepted from a tokenizer file (ids must also fit the model's vocab_size). */
export const MAX_TOKEN_ID: number = CONFIG_LIMITS.vocab - 1;

/**
 * Checks a token → id object read from `path` (vocab.json, added_tokens.json): every id an integer in
 * [0, {@linkcode MAX_TOKEN_ID}]. Throws naming the file and the token otherwise.
 */
export function checkIds(path: string, value: unknown): Record<string, number> {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new Error(`tokenizer: ${path} must hold a JSON object mapping tokens to ids (got ${show(value)})`);
  }
  for (const [token, id] of Object.entries(value)) checkId(path, token, id);
  return value as Record<string, number>;
}

function checkId(path: string, token: string, id: unknown): number {
  if (typeof id !== "number" || !Number.isInteger(id) || id < 0 || id > MAX_TOKEN_ID) {
    throw new Error(
      `tokenizer: ${path}: token ${show(token)} has id ${show(id)}; ids must be integers in [0, ${MAX_TOKEN_ID}]`,
    );
  }
  return id;
}

/** Whether `path` exists and is a file. */
export async function isFile(path: string): Promise<boolean> {
  try {
    return (await filesFor(path).stat(path)).isFile;
  } catch (e) {
    if (isNotFound(e)) return false;
    throw e;
  }
}

/** A special token as written in HF files: a plain string or an AddedToken object `{content, ...}`. */
export function tokenContent(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (value && typeof value === "object" && typeof (value as { content?: unknown }).content === "string") {
    return (value as { content: string }).content;
  }
  return undefined;
}

function asRecord(value: unknown): Record<string, unknown> {
  return value && typeof value === "object" && !Array.isArray(value) ? value as Record<string, unknown> : {};
}

/** Overlays the special tokens found in `source` (HF snake_case keys) onto `target`; `null` removes a token. */
function overlaySpecialTokens(target: SpecialTokens, source: Record<string, unknown>): void {
  for (const [name, key] of SPECIAL_KEYS) {
    if (!(key in source)) continue;
    const raw = source[key];
    if (raw === null) delete target[name];
    else {
      const content = tokenContent(raw);
      if (content !== undefined) target[name] = content;
    }
  }
  const extra = source.additional_special_tokens;
  if (Array.isArray(extra)) {
    target.additionalSpecialTokens = extra.map(tokenContent).filter((t): t is string => t !== undefined);
  }
}

/** Normalises `chat_template` (string, or a list of `{name, template}`) to the form kept in settings. */
function parseChatTemplate(value: unknown): string | Record<string, string> | undefined {
  if (typeof value === "string") return value;
  if (Array.isArray(value)) {
    const named: Record<string, string> = {};
    for (const entry of value) {
      const { name, template } = asRecord(entry);
      if (typeof name === "string" && typeof template === "string") named[name] = template;
    }
    return Object.keys(named).length > 0 ? named : undefined;
  }
  return undefined;
}

/**
 * Reads the tokenizer settings of a model folder. Special tokens start from `defaults`, are overridden by
 * tokenizer_config.json and then by special_tokens_map.json (the order transformers applies).
 */
export async function readTokenizerSettings(dir: string, defaults: SpecialTokens = {}): Promise<TokenizerSettings> {
  const config = asRecord(await readJsonIfExists(join(dir, "tokenizer_config.json")));
  const specialMap = asRecord(await readJsonIfExists(join(dir, "special_tokens_map.json")));
  const specialTokens: SpecialTokens = { ...defaults };
  overlaySpecialTokens(specialTokens, config);
  overlaySpecialTokens(specialTokens, specialMap);

  const addedTokens = new Map<string, number>();
  const addedSpecial = new Set<string>();
  const addedPath = join(dir, "added_tokens.json");
  const addedJson = await readJsonIfExists(addedPath);
  if (addedJson !== undefined) {
    for (const [content, id] of Object.entries(checkIds(addedPath, addedJson))) addedTokens.set(content, id);
  }
  for (const [id, entry] of Object.entries(asRecord(config.added_tokens_decoder))) {
    const content = tokenContent(entry);
    if (content === undefined) continue;
    const where = `${join(dir, "tokenizer_config.json")} (added_tokens_decoder)`;
    addedTokens.set(content, checkId(where, content, /^(0|[1-9][0-9]*)$/.test(id) ? Number(id) : id));
    if (asRecord(entry).special === true) addedSpecial.add(content);
  }

  let chatTemplate = parseChatTemplate(config.chat_template);
  const templateJson = asRecord(await readJsonIfExists(join(dir, "chat_template.json")));
  chatTemplate = parseChatTemplate(templateJson.chat_template) ?? chatTemplate;
  chatTemplate = (await readTextIfExists(join(dir, "chat_template.jinja"))) ?? chatTemplate;

  const maxLen = config.model_max_length;
  return {
    specialTokens,
    paddingSide: config.padding_side === "left" ? "left" : "right",
    truncationSide: config.truncation_side === "left" ? "left" : "right",
    // transformers uses int(1e30) as "no limit"; anything that large is treated as unbounded here.
    modelMaxLength: typeof maxLen === "number" && maxLen > 0 && maxLen < 1e15 ? maxLen : Infinity,
    cleanUpTokenizationSpaces: typeof config.clean_up_tokenization_spaces === "boolean"
      ? config.clean_up_tokenization_spaces
      : undefined,
    chatTemplate,
    addedTokens,
    addedSpecial,
    rawConfig: config,
  };
}

/** Reads a boolean flag from tokenizer_config.json, with a default. */
export function configFlag(settings: TokenizerSettings, key: string, fallback: boolean): boolean {
  const v = settings.rawConfig[key];
  return typeof v === "boolean" ? v : fallback;
}
