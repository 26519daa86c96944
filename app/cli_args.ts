/**
 * Helpers the command-line programs (`train.ts`, `cli.ts`) share for what users type: paths resolved against the
 * directory the command was run from, `--suppress-tokens` lists, and error messages that name the flags rather than
 * the internal field names.
 * @module
 */

import { isAbsolute, resolve } from "node:path";
import { show } from "../models/config.ts";

/** What {@linkcode resolveSuppressTokens} needs of a tokenizer (any `Tokenizer` has it). */
export interface TokenLookup {
  /** Number of ids. */
  readonly vocabSize: number;
  /** The vocabulary file, for messages. */
  readonly vocabFile: string;
  /** Token of an id, `undefined` when out of range. */
  idToToken(id: number): string | undefined;
  /** Id of a token, `undefined` when not in the vocabulary. */
  tokenToId(token: string): number | undefined;
  /** Encodes text to ids. */
  encode(text: string, options?: { addSpecialTokens?: boolean }): number[];
  /** Tokens of ids. */
  convertIdsToTokens(ids: number[]): string[];
}

/**
 * The directory a relative path given on the command line is relative to: `INIT_CWD` when it is set to an absolute
 * path (`deno task` sets it to the directory the task was started from, then runs the task in the project root),
 * else the working directory.
 */
export function userBaseDir(): string {
  let init: string | undefined;
  try {
    init = Deno.env.get("INIT_CWD");
  } catch { /* no env permission: the working directory */ }
  return init && isAbsolute(init) ? init : Deno.cwd();
}

/**
 * Resolves a path the user typed to an absolute one: a relative path is taken relative to {@linkcode userBaseDir}
 * (so `deno task cli … --model my-model` finds `my-model` where the user is, not in the project root). An absolute
 * path is only normalised.
 * @param path the path as given
 * @returns the absolute path (no trailing slash)
 */
export function resolveUserPath(path: string): string {
  return isAbsolute(path) ? resolve(path) : resolve(userBaseDir(), path);
}

/** Escapes `text` for use inside a regular expression. */
function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/**
 * Rewrites field names in an error message to the flags the user typed: `"mini_batch_size"` and a bare
 * `mini_batch_size` become `--mini-batch-size`. Whole names only (`batch_size` inside `backward_batch_size` stays).
 * @param message the message
 * @param flags field name → flag (with its dashes)
 * @returns the rewritten message
 */
export function withFlagNames(message: string, flags: Readonly<Record<string, string>>): string {
  let out = message;
  for (const [field, flag] of Object.entries(flags)) {
    const name = escapeRegExp(field);
    out = out.replace(new RegExp(`(?<![\\w-])"?${name}"?(?!\\w)`, "g"), flag);
  }
  return out;
}

/**
 * Splits a `--suppress-tokens` value: `undefined` when the flag was not given (the caller applies its default),
 * `[]` for `none`, else the comma-separated entries (trimmed). Throws for an empty entry or `none` among others.
 * @param value the flag's value
 * @param flag the flag's name, for messages
 */
export function parseSuppressTokens(value: string | undefined, flag = "--suppress-tokens"): string[] | undefined {
  if (value === undefined) return undefined;
  if (value.trim().toLowerCase() === "none") return [];
  const items = value.split(",").map((s) => s.trim());
  if (items.some((s) => s === "")) {
    throw new Error(`${flag} ${show(value)}: an empty entry; give comma-separated token ids or tokens, or "none"`);
  }
  if (items.some((s) => s.toLowerCase() === "none")) {
    throw new Error(`${flag}: "none" turns the default off and cannot be combined with tokens`);
  }
  return items;
}

/**
 * Turns `--suppress-tokens` entries into token ids with the policy's tokenizer: a number is an id; anything else is a
 * token of the vocabulary as written there (`[UNK]`, `Ġthe`), or a text that encodes to exactly one token (`the`).
 * Throws naming the flag, the entry and the tokenizer file when an id is out of range or an entry is no single token.
 * @param items entries from {@linkcode parseSuppressTokens}
 * @param tok the tokenizer of the model that generates
 * @param flag the flag's name, for messages
 * @returns the distinct ids, in the order given
 */
export function resolveSuppressTokens(
  items: readonly string[],
  tok: TokenLookup,
  flag = "--suppress-tokens",
): number[] {
  const ids: number[] = [];
  for (const item of items) {
    let id: number | undefined;
    if (/^\d+$/.test(item)) {
      id = Number(item);
      if (tok.idToToken(id) === undefined) {
        throw new Error(
          `${flag}: id ${item} is not in the vocabulary of ${tok.vocabFile} (ids 0…${tok.vocabSize - 1})`,
        );
      }
    } else {
      id = tok.tokenToId(item);
      if (id === undefined) {
        const encoded = tok.encode(item, { addSpecialTokens: false });
        if (encoded.length !== 1) {
          const pieces = tok.convertIdsToTokens(encoded).slice(0, 8).map((t) => show(t, 20)).join(" ");
          throw new Error(
            `${flag}: ${show(item, 40)} is not a token of ${tok.vocabFile}` +
              (encoded.length ? ` (it encodes to ${encoded.length} tokens: ${pieces})` : "") +
              "; give a token as the vocabulary writes it, or its id",
          );
        }
        id = encoded[0];
      }
    }
    if (!ids.includes(id)) ids.push(id);
  }
  return ids;
}

/** `[UNK] (100), x (7)`: suppressed ids with their tokens, for log lines. */
export function describeTokens(ids: readonly number[], tok: TokenLookup, max = 5): string {
  const shown = ids.slice(0, max).map((id) => `${tok.idToToken(id) ?? "?"} (${id})`).join(", ");
  return ids.length > max ? `${shown}, … (${ids.length} in all)` : shown;
}
