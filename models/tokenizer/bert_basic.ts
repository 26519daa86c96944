/**
 * BERT's "basic" pre-tokenization (what transformers calls `BasicTokenizer`): text cleaning, spacing around
 * CJK characters, optional lower-casing with accent stripping, and punctuation splitting.
 *
 * @module
 */

/** Options of {@link basicTokenize}, named after the tokenizer_config.json keys they come from. */
export interface BasicTokenizerOptions {
  /** Lower-case the text (`do_lower_case`, default `true`). */
  doLowerCase?: boolean;
  /** Put spaces around CJK ideographs so each becomes one token (`tokenize_chinese_chars`, default `true`). */
  tokenizeChineseChars?: boolean;
  /**
   * Strip accents (`strip_accents`): `undefined` follows `doLowerCase` (as in BERT), `true`/`false` force it.
   */
  stripAccents?: boolean;
}

const CONTROL = /\p{C}/u;
const SPACE_SEPARATOR = /\p{Zs}/u;
const PUNCTUATION = /\p{P}/u;
const NONSPACING_MARK = /\p{Mn}/gu;

/** Whitespace as BERT defines it: space, tab, newline, carriage return, or Unicode category Zs. */
export function isBertWhitespace(ch: string): boolean {
  return ch === " " || ch === "\t" || ch === "\n" || ch === "\r" || SPACE_SEPARATOR.test(ch);
}

/** Control characters as BERT defines them: any category C* except tab, newline and carriage return. */
export function isBertControl(ch: string): boolean {
  if (ch === "\t" || ch === "\n" || ch === "\r") return false;
  return CONTROL.test(ch);
}

/** Punctuation as BERT defines it: all non-alphanumeric printable ASCII, plus Unicode category P*. */
export function isBertPunctuation(ch: string): boolean {
  const cp = ch.codePointAt(0)!;
  if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) || (cp >= 123 && cp <= 126)) {
    return true;
  }
  return PUNCTUATION.test(ch);
}

/** CJK Unified Ideographs blocks that BERT treats as "Chinese characters" (not Hangul, kana, etc.). */
export function isChineseChar(cp: number): boolean {
  return (cp >= 0x4e00 && cp <= 0x9fff) ||
    (cp >= 0x3400 && cp <= 0x4dbf) ||
    (cp >= 0x20000 && cp <= 0x2a6df) ||
    (cp >= 0x2a700 && cp <= 0x2b73f) ||
    (cp >= 0x2b740 && cp <= 0x2b81f) ||
    (cp >= 0x2b820 && cp <= 0x2ceaf) ||
    (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0x2f800 && cp <= 0x2fa1f);
}

/** Drops NUL, U+FFFD and control characters and maps every whitespace character to a plain space. */
export function cleanText(text: string): string {
  let out = "";
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    if (cp === 0 || cp === 0xfffd || isBertControl(ch)) continue;
    out += isBertWhitespace(ch) ? " " : ch;
  }
  return out;
}

/** Surrounds each CJK ideograph with spaces. */
export function spaceChineseChars(text: string): string {
  let out = "";
  for (const ch of text) out += isChineseChar(ch.codePointAt(0)!) ? ` ${ch} ` : ch;
  return out;
}

/** Removes accents: NFD decomposition, then drops non-spacing marks (category Mn). */
export function stripAccents(text: string): string {
  return text.normalize("NFD").replace(NONSPACING_MARK, "");
}

/** Splits a word into runs of non-punctuation and single punctuation characters. */
export function splitOnPunctuation(word: string): string[] {
  const out: string[] = [];
  let current = "";
  for (const ch of word) {
    if (isBertPunctuation(ch)) {
      if (current) out.push(current);
      out.push(ch);
      current = "";
    } else current += ch;
  }
  if (current) out.push(current);
  return out;
}

/**
 * BERT basic tokenization of a text fragment that contains no special tokens: clean, space CJK characters,
 * NFC-normalise, split on whitespace, lower-case / strip accents, split punctuation.
 */
export function basicTokenize(text: string, options: BasicTokenizerOptions = {}): string[] {
  const lower = options.doLowerCase ?? true;
  let t = cleanText(text);
  if (options.tokenizeChineseChars ?? true) t = spaceChineseChars(t);
  t = t.normalize("NFC");
  const out: string[] = [];
  for (let word of t.split(/\s+/u)) {
    if (!word) continue;
    if (lower) {
      word = word.toLowerCase();
      if (options.stripAccents !== false) word = stripAccents(word);
    } else if (options.stripAccents === true) word = stripAccents(word);
    for (const piece of splitOnPunctuation(word)) if (piece) out.push(piece);
  }
  return out;
}
