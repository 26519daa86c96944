/**
 * Model configurations read from Hugging Face `config.json`, validated field by field: sizes within sane bounds and
 * a parameter count the engine can hold (checked before anything is allocated), label maps that are consistent.
 * @module
 */

import { printable } from "../formats/safetensors.ts";

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

/** Validates a GPT-2 config object (from `config.json`); sizes are bounded and checked before any allocation. */
export function parseGPT2Config(raw: Raw, file = "config.json"): GPT2Config {
  const L = CONFIG_LIMITS;
  const vocab_size = int(raw, file, "vocab_size", 50257, 1, L.vocab);
  const n_positions = int(raw, file, "n_positions", 1024, 1, L.positions);
  const n_embd = int(raw, file, "n_embd", 768, 1, L.width);
  const n_layer = int(raw, file, "n_layer", 12, 1, L.layers);
  const n_head = int(raw, file, "n_head", 12, 1, n_embd);
  if (n_embd % n_head !== 0) throw new ConfigError(file, "n_head", `(${n_head}) must divide n_embd (${n_embd})`);
  const act = String(raw.activation_function ?? "gelu_new");
  if (!["gelu_new", "gelu_pytorch_tanh", "gelu"].includes(act)) {
    throw new ConfigError(
      file,
      "activation_function",
      `${show(act)} is not supported (gelu_new, gelu_pytorch_tanh, gelu)`,
    );
  }
  // reorder_and_upcast_attn only changes numerics in half precision; attention runs in f32 anyway.
  const n_inner = raw.n_inner === null || raw.n_inner === undefined ? null : int(raw, file, "n_inner", 0, 1, L.inner);
  const tie = raw.tie_word_embeddings !== false;
  const C = n_embd, inner = n_inner ?? 4 * C;
  checkParamBytes(file, [
    ["vocab_size", vocab_size * C * (tie ? 1 : 2), `vocab_size ${vocab_size} × n_embd ${C}`],
    ["n_positions", n_positions * C, `n_positions ${n_positions} × n_embd ${C}`],
    [
      "n_layer",
      n_layer * (4 * C * C + 2 * C * inner + 9 * C + inner),
      `n_layer ${n_layer} × (n_embd ${C}, MLP ${inner})`,
    ],
  ]);
  const config: GPT2Config = {
    ...raw,
    model_type: "gpt2",
    vocab_size,
    n_positions,
    n_embd,
    n_layer,
    n_head,
    n_inner,
    activation_function: act,
    layer_norm_epsilon: positive(raw, file, "layer_norm_epsilon", 1e-5),
    embd_pdrop: prob(raw, file, "embd_pdrop", 0.1),
    attn_pdrop: prob(raw, file, "attn_pdrop", 0.1),
    resid_pdrop: prob(raw, file, "resid_pdrop", 0.1),
    scale_attn_weights: raw.scale_attn_weights !== false,
    scale_attn_by_inverse_layer_idx: raw.scale_attn_by_inverse_layer_idx === true,
    reorder_and_upcast_attn: raw.reorder_and_upcast_attn === true,
    tie_word_embeddings: tie,
    bos_token_id: optId(raw, file, "bos_token_id"),
    eos_token_id: optId(raw, file, "eos_token_id"),
    pad_token_id: optId(raw, file, "pad_token_id"),
  };
  SOURCES.set(config, file);
  return config;
}

/**
 * Validates a BERT or RoBERTa config object (from `config.json`); sizes are bounded and checked before any
 * allocation, and `id2label` must map the class indices 0…num_labels−1 (plain integer keys) to unique names.
 */
export function parseBertConfig(raw: Raw, file = "config.json"): BertConfig {
  const L = CONFIG_LIMITS;
  const model_type = raw.model_type === "roberta" ? "roberta" : "bert";
  const vocab_size = int(raw, file, "vocab_size", 30522, 1, L.vocab);
  const hidden = int(raw, file, "hidden_size", 768, 1, L.width);
  const layers = int(raw, file, "num_hidden_layers", 12, 1, L.layers);
  const heads = int(raw, file, "num_attention_heads", 12, 1, hidden);
  if (hidden % heads !== 0) {
    throw new ConfigError(file, "num_attention_heads", `(${heads}) must divide hidden_size (${hidden})`);
  }
  const intermediate = int(raw, file, "intermediate_size", 3072, 1, L.inner);
  const positions = int(raw, file, "max_position_embeddings", 512, 1, L.positions);
  const typeVocab = int(raw, file, "type_vocab_size", 2, 1, L.small);
  const act = String(raw.hidden_act ?? "gelu");
  if (!["gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "tanh"].includes(act)) {
    throw new ConfigError(file, "hidden_act", `${show(act)} is not supported`);
  }
  const pet = raw.position_embedding_type ?? "absolute";
  if (pet !== "absolute") {
    throw new ConfigError(file, "position_embedding_type", `${show(pet)} is not supported (only "absolute")`);
  }
  const given = parseId2Label(raw, file);
  const givenCount = given ? Object.keys(given).length : 0;
  const numLabels = raw.num_labels !== undefined
    ? int(raw, file, "num_labels", undefined, 1, L.small)
    : givenCount || 2;
  if (givenCount > 0 && givenCount !== numLabels) {
    throw new ConfigError(file, "id2label", `has ${givenCount} entries but num_labels is ${numLabels}`);
  }
  const id2label: Record<string, string> = givenCount > 0 ? given! : {};
  if (givenCount === 0) { for (let i = 0; i < numLabels; i++) id2label[String(i)] = `LABEL_${i}`; }
  const label2id = Object.fromEntries(Object.entries(id2label).map(([k, v]) => [v, Number(k)]));
  const H = hidden;
  checkParamBytes(file, [
    ["vocab_size", vocab_size * H, `vocab_size ${vocab_size} × hidden_size ${H}`],
    ["max_position_embeddings", positions * H, `max_position_embeddings ${positions} × hidden_size ${H}`],
    ["type_vocab_size", typeVocab * H, `type_vocab_size ${typeVocab} × hidden_size ${H}`],
    [
      "num_hidden_layers",
      layers * (4 * H * H + 2 * H * intermediate + 9 * H + intermediate),
      `num_hidden_layers ${layers} × (hidden_size ${H}, intermediate_size ${intermediate})`,
    ],
    ["num_labels", (H + 1) * (H + numLabels), `num_labels ${numLabels} × hidden_size ${H}`],
  ]);
  const cd = raw.classifier_dropout;
  const config: BertConfig = {
    ...raw,
    model_type,
    vocab_size,
    hidden_size: hidden,
    num_hidden_layers: layers,
    num_attention_heads: heads,
    intermediate_size: intermediate,
    hidden_act: act,
    hidden_dropout_prob: prob(raw, file, "hidden_dropout_prob", 0.1),
    attention_probs_dropout_prob: prob(raw, file, "attention_probs_dropout_prob", 0.1),
    max_position_embeddings: positions,
    type_vocab_size: typeVocab,
    layer_norm_eps: positive(raw, file, "layer_norm_eps", 1e-12),
    pad_token_id: int(raw, file, "pad_token_id", model_type === "roberta" ? 1 : 0, 0),
    num_labels: numLabels,
    id2label,
    label2id,
    classifier_dropout: cd === null || cd === undefined ? null : prob(raw, file, "classifier_dropout", 0.1),
  };
  SOURCES.set(config, file);
  return config;
}

/** Reads and parses `config.json` in a model folder (clear errors for a missing folder or bad JSON). */
export async function readConfigJson(dir: string): Promise<Raw> {
  const file = `${dir.replace(/\/$/, "")}/config.json`;
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      const dirExists = await Deno.stat(dir).then((s) => s.isDirectory).catch(() => false);
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
