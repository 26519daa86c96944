/**
 * Model configurations read from Hugging Face `config.json`, validated field by field: sizes within sane bounds and
 * a parameter count the engine can hold (checked before anything is allocated), label maps that are consistent.
 * @module
 */

import { printable } from "../formats/safetensors.ts";
import { filesFor, isNotFound } from "../formats/files.ts";

/** GPT-2 hyper-parameters (HF `GPT2Config` names). */
export interface GPT2Config {
  /** Model family. */
  model_type: "gpt2";
  /** Vocabulary size. */
  vocab_size: number;
  /** Maximum sequence length. */
  n_positions: number;
  /** Hidden size. */
  n_embd: number;
  /** Number of transformer blocks. */
  n_layer: number;
  /** Attention heads. */
  n_head: number;
  /** MLP width (null: 4 × n_embd). */
  n_inner: number | null;
  /** MLP activation (gelu_new, gelu_pytorch_tanh or gelu). */
  activation_function: string;
  /** LayerNorm epsilon. */
  layer_norm_epsilon: number;
  /** Embedding dropout. */
  embd_pdrop: number;
  /** Attention-probability dropout. */
  attn_pdrop: number;
  /** Residual dropout. */
  resid_pdrop: number;
  /** Scale attention scores by 1/√head_dim. */
  scale_attn_weights: boolean;
  /** Also divide scores by layer index + 1. */
  scale_attn_by_inverse_layer_idx: boolean;
  /** HF mixed-precision option (no effect: attention runs in f32). */
  reorder_and_upcast_attn: boolean;
  /** LM head shares the token embedding. */
  tie_word_embeddings: boolean;
  /** Beginning-of-sequence id. */
  bos_token_id?: number | null;
  /** End-of-sequence id. */
  eos_token_id?: number | null;
  /** Padding id. */
  pad_token_id?: number | null;
  /** HF class names. */
  architectures?: string[];
  /** Other config.json fields are kept as they are. */
  [key: string]: unknown;
}

/** BERT / RoBERTa hyper-parameters (HF `BertConfig` / `RobertaConfig` names). */
export interface BertConfig {
  /** Model family. */
  model_type: "bert" | "roberta";
  /** Vocabulary size. */
  vocab_size: number;
  /** Hidden size. */
  hidden_size: number;
  /** Number of encoder layers. */
  num_hidden_layers: number;
  /** Attention heads. */
  num_attention_heads: number;
  /** Feed-forward width. */
  intermediate_size: number;
  /** Feed-forward activation. */
  hidden_act: string;
  /** Hidden-state dropout. */
  hidden_dropout_prob: number;
  /** Attention-probability dropout. */
  attention_probs_dropout_prob: number;
  /** Position embedding rows. */
  max_position_embeddings: number;
  /** Segment (token type) embedding rows. */
  type_vocab_size: number;
  /** LayerNorm epsilon. */
  layer_norm_eps: number;
  /** Padding id. */
  pad_token_id: number;
  /** Number of classes. */
  num_labels: number;
  /** Class names by index (string keys). */
  id2label: Record<string, string>;
  /** Class indices by name. */
  label2id: Record<string, number>;
  /** Classifier dropout (null: hidden_dropout_prob). */
  classifier_dropout: number | null;
  /** Only "absolute" is supported. */
  position_embedding_type?: string;
  /** HF problem type (single-label classification assumed). */
  problem_type?: string | null;
  /** HF class names. */
  architectures?: string[];
  /** Other config.json fields are kept as they are. */
  [key: string]: unknown;
}

/** A config problem: names the file and the field. */
export class ConfigError extends Error {
  /** Builds "FILE: field "FIELD" REASON". */
  constructor(file: string, field: string, reason: string) {
    super(`${file}: field "${field}" ${reason}`);
    this.name = "ConfigError";
  }
}

/** A parsed `config.json` object before validation. */
export type Raw = Record<string, unknown>;

/**
 * Upper bounds on config sizes, far above any published GPT-2 / BERT but low enough that a corrupt or hostile
 * config is refused at once instead of allocating (or looping over) absurd shapes.
 */
export const CONFIG_LIMITS = {
  /** vocab_size: ids stay exact in f32. */
  vocab: 1 << 24,
  /** n_positions / max_position_embeddings. */
  positions: 1 << 20,
  /** n_embd / hidden_size. */
  width: 1 << 16,
  /** n_inner / intermediate_size. */
  inner: 1 << 20,
  /** n_layer / num_hidden_layers. */
  layers: 1024,
  /** type_vocab_size and num_labels. */
  small: 1 << 16,
  /** Parameters × 4 bytes (f32), checked from the config before weights are read or allocated. */
  paramBytes: 2 ** 36,
} as const;

const SOURCES = new WeakMap<object, string>();

/**
 * The file a parsed config came from (the `file` given to {@linkcode parseGPT2Config} / {@linkcode parseBertConfig}),
 * for messages that must name it; `undefined` for a config object that was not parsed here.
 */
export function configSource(config: object): string | undefined {
  return SOURCES.get(config);
}

/** A value from a file, shown in a message: a string in quotes, anything else as JSON; escaped and shortened. */
export function show(value: unknown, maxChars = 60): string {
  if (typeof value === "string") return `"${printable(value, maxChars)}"`;
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return printable(text, maxChars);
}

function int(raw: Raw, file: string, key: string, def?: number, min = 1, max = Number.MAX_SAFE_INTEGER): number {
  const v = raw[key] ?? def;
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `≥ ${min}` : `in [${min}, ${max}]`;
    throw new ConfigError(file, key, `must be an integer ${range} (got ${show(raw[key])})`);
  }
  return v;
}

function prob(raw: Raw, file: string, key: string, def: number): number {
  const v = raw[key] ?? def;
  if (typeof v !== "number" || !(v >= 0 && v < 1)) {
    throw new ConfigError(file, key, `must be a probability in [0, 1) (got ${show(raw[key])})`);
  }
  return v;
}

function positive(raw: Raw, file: string, key: string, def: number): number {
  const v = raw[key] ?? def;
  if (typeof v !== "number" || !(v > 0) || !Number.isFinite(v)) {
    throw new ConfigError(file, key, `must be a positive number (got ${show(raw[key])})`);
  }
  return v;
}

function optId(raw: Raw, file: string, key: string): number | null {
  const v = raw[key];
  if (v === undefined || v === null) return null;
  if (Array.isArray(v) && v.length > 0 && Number.isInteger(v[0])) return v[0] as number;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0) {
    throw new ConfigError(file, key, `must be a non-negative integer or null (got ${show(v)})`);
  }
  return v;
}

/** Refuses a model whose f32 parameters exceed {@linkcode CONFIG_LIMITS}.paramBytes, naming the largest term. */
function checkParamBytes(file: string, terms: [field: string, count: number, how: string][]): void {
  const total = terms.reduce((a, [, n]) => a + n, 0);
  if (total * 4 <= CONFIG_LIMITS.paramBytes) return;
  const [field, , how] = terms.reduce((a, b) => (b[1] > a[1] ? b : a));
  const gib = (x: number) => `${(x / 2 ** 30).toPrecision(3)} GiB`;
  throw new ConfigError(
    file,
    field,
    `makes the model too large: ${how} → ${total.toPrecision(3)} parameters, ${gib(total * 4)} in f32 ` +
      `(limit ${gib(CONFIG_LIMITS.paramBytes)})`,
  );
}

/** Validates `id2label`: keys are the class indices 0…n−1 written as plain integers, names are unique. */
function parseId2Label(raw: Raw, file: string): Record<string, string> | undefined {
  const value = raw.id2label;
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "object" || Array.isArray(value)) {
    throw new ConfigError(file, "id2label", `must be an object mapping class ids to label names (got ${show(value)})`);
  }
  const out: Record<string, string> = {};
  const seen = new Map<string, string>();
  const entries = Object.entries(value as Raw);
  if (entries.length > CONFIG_LIMITS.small) {
    throw new ConfigError(file, "id2label", `has ${entries.length} entries (at most ${CONFIG_LIMITS.small})`);
  }
  for (const [key, name] of entries) {
    if (!/^(0|[1-9][0-9]*)$/.test(key) || Number(key) >= entries.length) {
      throw new ConfigError(
        file,
        "id2label",
        `key ${show(key)} is not a class index: keys must be the integers 0…${entries.length - 1}, one per label`,
      );
    }
    if (typeof name !== "string" || name === "") {
      throw new ConfigError(file, "id2label", `[${key}] must be a non-empty label name (got ${show(name)})`);
    }
    const other = seen.get(name.toLowerCase());
    if (other !== undefined) {
      throw new ConfigError(
        file,
        "id2label",
        `names ${
          show(name)
        } for ids ${other} and ${key}: label names must be unique (they are matched case-insensitively)`,
      );
    }
    seen.set(name.toLowerCase(), key);
    out[key] = name;
  }
  return out;
}

/** Validates one config field: `raw[key]` (or a default) checked and returned, or a {@linkcode ConfigError}. */
type FieldReader<T> = (raw: Raw, file: string, key: string) => T;

/** The readers of a group of fields, by field name, run in the order written. */
type FieldTable<T> = { [K in keyof T]: FieldReader<T[K]> };

/** An integer field in [min, {@linkcode CONFIG_LIMITS}[limit]] (the limit is read when the field is). */
const integer = (def: number, limit: keyof typeof CONFIG_LIMITS): FieldReader<number> => (raw, file, key) =>
  int(raw, file, key, def, 1, CONFIG_LIMITS[limit]);

/** A dropout probability in [0, 1). */
const probability = (def: number): FieldReader<number> => (raw, file, key) => prob(raw, file, key, def);

/** A positive finite number (a LayerNorm epsilon). */
const positiveNumber = (def: number): FieldReader<number> => (raw, file, key) => positive(raw, file, key, def);

/** Reads the fields of `table` in its order: the first invalid one throws. */
function readFields<T>(raw: Raw, file: string, table: FieldTable<T>): T {
  const out = {} as T;
  for (const key of Object.keys(table) as (keyof T & string)[]) out[key] = table[key](raw, file, key);
  return out;
}

/** The attention head count `key`, at most the width `widthKey` and dividing it. */
function headCount(raw: Raw, file: string, key: string, widthKey: string, width: number): number {
  const heads = int(raw, file, key, 12, 1, width);
  if (width % heads !== 0) throw new ConfigError(file, key, `(${heads}) must divide ${widthKey} (${width})`);
  return heads;
}

/** A string field that must be one of `supported`; `hint` follows "is not supported" in the message. */
function supportedName(raw: Raw, file: string, key: string, def: string, supported: string[], hint = ""): string {
  const name = String(raw[key] ?? def);
  if (!supported.includes(name)) throw new ConfigError(file, key, `${show(name)} is not supported${hint}`);
  return name;
}

/** GPT-2 MLP activations the engine implements, and the list its error message shows. */
const GPT2_ACTIVATIONS = ["gelu_new", "gelu_pytorch_tanh", "gelu"];
const GPT2_HINT = " (gelu_new, gelu_pytorch_tanh, gelu)";

/** GPT-2 sizes, validated in this order before the head count. */
const GPT2_SIZES: FieldTable<Pick<GPT2Config, "vocab_size" | "n_positions" | "n_embd" | "n_layer">> = {
  vocab_size: integer(50257, "vocab"),
  n_positions: integer(1024, "positions"),
  n_embd: integer(768, "width"),
  n_layer: integer(12, "layers"),
};

/** GPT-2 LayerNorm epsilon and dropout rates. */
const GPT2_RATES: FieldTable<
  Pick<GPT2Config, "layer_norm_epsilon" | "embd_pdrop" | "attn_pdrop" | "resid_pdrop">
> = {
  layer_norm_epsilon: positiveNumber(1e-5),
  embd_pdrop: probability(0.1),
  attn_pdrop: probability(0.1),
  resid_pdrop: probability(0.1),
};

/** GPT-2 special token ids (optional; a list keeps its first id). */
const GPT2_TOKEN_IDS: FieldTable<
  { bos_token_id: number | null; eos_token_id: number | null; pad_token_id: number | null }
> = {
  bos_token_id: optId,
  eos_token_id: optId,
  pad_token_id: optId,
};

/** The f32 parameter terms of a GPT-2 (embeddings, positions, blocks), for {@linkcode checkParamBytes}. */
function gpt2ParamTerms(
  sizes: Pick<GPT2Config, "vocab_size" | "n_positions" | "n_embd" | "n_layer" | "tie_word_embeddings">,
  mlpWidth: number,
): [field: string, count: number, how: string][] {
  const { vocab_size, n_positions, n_layer, n_embd: width } = sizes;
  const perBlock = 4 * width * width + 2 * width * mlpWidth + 9 * width + mlpWidth;
  return [
    [
      "vocab_size",
      vocab_size * width * (sizes.tie_word_embeddings ? 1 : 2),
      `vocab_size ${vocab_size} × n_embd ${width}`,
    ],
    ["n_positions", n_positions * width, `n_positions ${n_positions} × n_embd ${width}`],
    ["n_layer", n_layer * perBlock, `n_layer ${n_layer} × (n_embd ${width}, MLP ${mlpWidth})`],
  ];
}

/** Validates a GPT-2 config object (from `config.json`); sizes are bounded and checked before any allocation. */
export function parseGPT2Config(raw: Raw, file = "config.json"): GPT2Config {
  const sizes = readFields(raw, file, GPT2_SIZES);
  const n_head = headCount(raw, file, "n_head", "n_embd", sizes.n_embd);
  const activation_function = supportedName(raw, file, "activation_function", "gelu_new", GPT2_ACTIVATIONS, GPT2_HINT);
  // reorder_and_upcast_attn only changes numerics in half precision; attention runs in f32 anyway.
  const n_inner = raw.n_inner === null || raw.n_inner === undefined
    ? null
    : int(raw, file, "n_inner", 0, 1, CONFIG_LIMITS.inner);
  const tie_word_embeddings = raw.tie_word_embeddings !== false;
  checkParamBytes(file, gpt2ParamTerms({ ...sizes, tie_word_embeddings }, n_inner ?? 4 * sizes.n_embd));
  const config: GPT2Config = {
    ...raw,
    model_type: "gpt2",
    ...sizes,
    n_head,
    n_inner,
    activation_function,
    ...readFields(raw, file, GPT2_RATES),
    scale_attn_weights: raw.scale_attn_weights !== false,
    scale_attn_by_inverse_layer_idx: raw.scale_attn_by_inverse_layer_idx === true,
    reorder_and_upcast_attn: raw.reorder_and_upcast_attn === true,
    tie_word_embeddings,
    ...readFields(raw, file, GPT2_TOKEN_IDS),
  };
  SOURCES.set(config, file);
  return config;
}

/** BERT feed-forward activations the engine implements. */
const BERT_ACTIVATIONS = ["gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "tanh"];

/** BERT sizes validated before the head count. */
const BERT_WIDTHS: FieldTable<Pick<BertConfig, "vocab_size" | "hidden_size" | "num_hidden_layers">> = {
  vocab_size: integer(30522, "vocab"),
  hidden_size: integer(768, "width"),
  num_hidden_layers: integer(12, "layers"),
};

/** BERT sizes validated after the head count. */
const BERT_SIZES: FieldTable<Pick<BertConfig, "intermediate_size" | "max_position_embeddings" | "type_vocab_size">> = {
  intermediate_size: integer(3072, "inner"),
  max_position_embeddings: integer(512, "positions"),
  type_vocab_size: integer(2, "small"),
};

/** BERT dropout rates. */
const BERT_DROPOUTS: FieldTable<Pick<BertConfig, "hidden_dropout_prob" | "attention_probs_dropout_prob">> = {
  hidden_dropout_prob: probability(0.1),
  attention_probs_dropout_prob: probability(0.1),
};

/** Refuses any `position_embedding_type` but "absolute" (the default). */
function checkAbsolutePositions(raw: Raw, file: string): void {
  const type = raw.position_embedding_type ?? "absolute";
  if (type !== "absolute") {
    throw new ConfigError(file, "position_embedding_type", `${show(type)} is not supported (only "absolute")`);
  }
}

/**
 * `num_labels`, `id2label` and `label2id`: a given `id2label` must have num_labels entries (num_labels defaults to
 * its size, else 2); without one the labels are LABEL_0…LABEL_{n−1}.
 */
function parseLabels(raw: Raw, file: string): Pick<BertConfig, "num_labels" | "id2label" | "label2id"> {
  const given = parseId2Label(raw, file);
  const givenCount = given ? Object.keys(given).length : 0;
  const num_labels = raw.num_labels !== undefined
    ? int(raw, file, "num_labels", undefined, 1, CONFIG_LIMITS.small)
    : givenCount || 2;
  if (givenCount > 0 && givenCount !== num_labels) {
    throw new ConfigError(file, "id2label", `has ${givenCount} entries but num_labels is ${num_labels}`);
  }
  const id2label: Record<string, string> = givenCount > 0 ? given! : {};
  if (givenCount === 0) { for (let i = 0; i < num_labels; i++) id2label[String(i)] = `LABEL_${i}`; }
  const label2id = Object.fromEntries(Object.entries(id2label).map(([id, name]) => [name, Number(id)]));
  return { num_labels, id2label, label2id };
}

/** The f32 parameter terms of a BERT classifier (embeddings, layers, head), for {@linkcode checkParamBytes}. */
function bertParamTerms(
  sizes: Pick<BertConfig, "vocab_size" | "hidden_size" | "num_hidden_layers" | "num_labels">,
  more: Pick<BertConfig, "intermediate_size" | "max_position_embeddings" | "type_vocab_size">,
): [field: string, count: number, how: string][] {
  const { vocab_size, num_hidden_layers: layers, num_labels, hidden_size: width } = sizes;
  const { intermediate_size: inner, max_position_embeddings: positions, type_vocab_size: typeVocab } = more;
  const perLayer = 4 * width * width + 2 * width * inner + 9 * width + inner;
  return [
    ["vocab_size", vocab_size * width, `vocab_size ${vocab_size} × hidden_size ${width}`],
    ["max_position_embeddings", positions * width, `max_position_embeddings ${positions} × hidden_size ${width}`],
    ["type_vocab_size", typeVocab * width, `type_vocab_size ${typeVocab} × hidden_size ${width}`],
    [
      "num_hidden_layers",
      layers * perLayer,
      `num_hidden_layers ${layers} × (hidden_size ${width}, intermediate_size ${inner})`,
    ],
    ["num_labels", (width + 1) * (width + num_labels), `num_labels ${num_labels} × hidden_size ${width}`],
  ];
}

/**
 * Validates a BERT or RoBERTa config object (from `config.json`); sizes are bounded and checked before any
 * allocation, and `id2label` must map the class indices 0…num_labels−1 (plain integer keys) to unique names.
 */
export function parseBertConfig(raw: Raw, file = "config.json"): BertConfig {
  const model_type = raw.model_type === "roberta" ? "roberta" : "bert";
  const widths = readFields(raw, file, BERT_WIDTHS);
  const num_attention_heads = headCount(raw, file, "num_attention_heads", "hidden_size", widths.hidden_size);
  const sizes = readFields(raw, file, BERT_SIZES);
  const hidden_act = supportedName(raw, file, "hidden_act", "gelu", BERT_ACTIVATIONS);
  checkAbsolutePositions(raw, file);
  const labels = parseLabels(raw, file);
  checkParamBytes(file, bertParamTerms({ ...widths, num_labels: labels.num_labels }, sizes));
  const classifierDropout = raw.classifier_dropout;
  const config: BertConfig = {
    ...raw,
    model_type,
    ...widths,
    num_attention_heads,
    intermediate_size: sizes.intermediate_size,
    hidden_act,
    ...readFields(raw, file, BERT_DROPOUTS),
    max_position_embeddings: sizes.max_position_embeddings,
    type_vocab_size: sizes.type_vocab_size,
    layer_norm_eps: positive(raw, file, "layer_norm_eps", 1e-12),
    pad_token_id: int(raw, file, "pad_token_id", model_type === "roberta" ? 1 : 0, 0),
    ...labels,
    classifier_dropout: classifierDropout === null || classifierDropout === undefined
      ? null
      : prob(raw, file, "classifier_dropout", 0.1),
  };
  SOURCES.set(config, file);
  return config;
}

/** Reads and parses `config.json` in a model folder (clear errors for a missing folder or bad JSON). */
export async function readConfigJson(dir: string): Promise<Raw> {
  const file = `${dir.replace(/\/$/, "")}/config.json`, files = filesFor(dir);
  let text: string;
  try {
    text = await files.readText(file);
  } catch (e) {
    if (isNotFound(e)) {
      const dirExists = await files.stat(dir).then((s) => s.isDirectory).catch(() => false);
      throw new Error(
        dirExists ? `${file}: not found (is ${dir} a Hugging Face model folder?)` : `${dir}: no such folder`,
      );
    }
    throw new Error(`${file}: cannot read (${(e as Error).message})`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new Error(`${file}: invalid JSON (${printable((e as Error).message)})`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new Error(`${file}: must hold a JSON object`);
  }
  return raw as Raw;
}
