/**
 * What the safetensors reader and writer share: the error type, the checks of header values, the quoting of file
 * text in messages, and reading a whole file with errors that name it.
 * @module
 */

import { filesFor, isNotFound, urlToPath } from "./files.ts";

/** Largest accepted JSON header, in bytes. */
export const MAX_HEADER_BYTES = 100_000_000;

/** Error for any unreadable, malformed or unwritable safetensors data; the message names the file and the reason. */
export class SafetensorsError extends Error {
  /** The file (or `"<memory>"`) the error is about. */
  readonly file: string;
  /** What is wrong, without the file name. */
  readonly reason: string;
  /**
   * Creates an error whose message is `safetensors <file>: <reason>`.
   * @param file File name or path shown in the message.
   * @param reason Human-readable description of the problem.
   * @param options Standard error options (e.g. `cause`).
   */
  constructor(file: string, reason: string, options?: ErrorOptions) {
    super(`safetensors ${file}: ${reason}`, options);
    this.name = "SafetensorsError";
    this.file = file;
    this.reason = reason;
  }
}

/** Throws the {@linkcode SafetensorsError} for `file` and `reason`. */
export function fail(file: string, reason: string): never {
  throw new SafetensorsError(file, reason);
}

/**
 * Makes text from a file safe to quote in a one-line message: control, format (e.g. bidi), private-use, unassigned
 * and line-separator characters, lone surrogates and U+FFFD (undecodable bytes) become `\xNN` / `\u{N}` escapes,
 * and text longer than `maxChars` code points is cut, saying how much was left out.
 * @param text Any text, typically from a file or from a parser's error message about one.
 * @param maxChars Code points kept before the rest is cut (default 80).
 * @returns The escaped, possibly shortened text.
 */
export function printable(text: string, maxChars = 80): string {
  const chars = Array.from(String(text));
  const kept = chars.slice(0, Math.max(0, maxChars)).map((c) => {
    if (!/[\p{Cc}\p{Cf}\p{Co}\p{Cn}\p{Cs}\p{Zl}\p{Zp}\uFFFD]/u.test(c)) return c;
    const cp = c.codePointAt(0)!;
    return cp < 0x100 ? `\\x${cp.toString(16).padStart(2, "0")}` : `\\u{${cp.toString(16)}}`;
  }).join("");
  const cut = chars.length - Math.min(chars.length, Math.max(0, maxChars));
  return cut > 0 ? `${kept}… (${cut} more characters)` : kept;
}

/** A name or value from the header, quoted for a message (escaped and shortened). */
export function q(text: string): string {
  return `"${printable(text, 60)}"`;
}

/** What a header value is, for a message: "an array", "null", "an object", or its type and (short) JSON. */
export function describe(value: unknown): string {
  if (Array.isArray(value)) return "an array";
  if (value === null) return "null";
  return typeof value === "object" ? "an object" : `${typeof value} ${printable(String(JSON.stringify(value)), 40)}`;
}

/** Whether `value` is a JSON object (not null, not an array). */
export const isPlainObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value);

/** Whether `value` is a non-negative safe integer. */
export const isNonNegInt = (value: unknown): value is number =>
  typeof value === "number" && Number.isSafeInteger(value) && value >= 0;

/** `value` checked to be an object of strings (a copy); `what` names it in the error. */
export function checkStringMap(file: string, what: string, value: unknown): Record<string, string> {
  if (!isPlainObject(value)) fail(file, `${what} must be an object of strings, got ${describe(value)}`);
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== "string") fail(file, `${what}[${q(k)}] must be a string, got ${describe(v)}`);
    out[k] = v;
  }
  return out;
}

/** How a path or URL is shown in messages: a `file:` URL as its path, another URL as itself. */
export function displayPath(path: string | URL): string {
  return path instanceof URL ? (path.protocol === "file:" ? urlToPath(path) : path.href) : path;
}

/** The bytes of the file at `path`; a missing or unreadable file is a {@linkcode SafetensorsError} about `file`. */
export async function readBytes(path: string | URL, file: string): Promise<Uint8Array> {
  try {
    return await filesFor(path).readBytes(path);
  } catch (err) {
    const reason = isNotFound(err) ? "file not found" : `cannot read file (${(err as Error)?.message ?? err})`;
    throw new SafetensorsError(file, reason, { cause: err });
  }
}
