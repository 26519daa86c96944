/**
 * Model configurations read from Hugging Face `config.json`, validated field by field.
 * @module
 */

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

function int(raw: Raw, file: string, key: string, def?: number, min = 1): number {
  const v = raw[key] ?? def;
  if (typeof v !== "number" || !Number.isInteger(v) || v < min) {
    throw new ConfigError(file, key, `must be an integer ≥ ${min} (got ${JSON.stringify(raw[key])})`);
  }
  return v;
}

function prob(raw: Raw, file: string, key: string, def: number): number {
  const v = raw[key] ?? def;
  if (typeof v !== "number" || !(v >= 0 && v < 1)) {
    throw new ConfigError(file, key, `must be a probability in [0, 1) (got ${JSON.stringify(raw[key])})`);
  }
  return v;
}

function positive(raw: Raw, file: string, key: string, def: number): number {
  const v = raw[key] ?? def;
  if (typeof v !== "number" || !(v > 0) || !Number.isFinite(v)) {
    throw new ConfigError(file, key, `must be a positive number (got ${JSON.stringify(raw[key])})`);
  }
  return v;
}

function optId(raw: Raw, file: string, key: string): number | null {
  const v = raw[key];
  if (v === undefined || v === null) return null;
  if (Array.isArray(v) && v.length > 0 && Number.isInteger(v[0])) return v[0] as number;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0) {
    throw new ConfigError(file, key, `must be a non-negative integer or null (got ${JSON.stringify(v)})`);
  }
  return v;
}

/** Validates a GPT-2 config object (from `config.json`). */
export function parseGPT2Config(raw: Raw, file = "config.json"): GPT2Config {
  const n_embd = int(raw, file, "n_embd", 768);
  const n_head = int(raw, file, "n_head", 12);
  if (n_embd % n_head !== 0) throw new ConfigError(file, "n_head", `(${n_head}) must divide n_embd (${n_embd})`);
  const act = String(raw.activation_function ?? "gelu_new");
  if (!["gelu_new", "gelu_pytorch_tanh", "gelu"].includes(act)) {
    throw new ConfigError(file, "activation_function", `"${act}" is not supported (gelu_new, gelu_pytorch_tanh, gelu)`);
  }
  if (raw.reorder_and_upcast_attn === true) {
    // Only changes numerics in half precision; the engine computes attention in f32 anyway.
  }
  const n_inner = raw.n_inner === null || raw.n_inner === undefined ? null : int(raw, file, "n_inner");
  return {
    ...raw,
    model_type: "gpt2",
    vocab_size: int(raw, file, "vocab_size", 50257),
    n_positions: int(raw, file, "n_positions", 1024),
    n_embd,
    n_layer: int(raw, file, "n_layer", 12),
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
    tie_word_embeddings: raw.tie_word_embeddings !== false,
    bos_token_id: optId(raw, file, "bos_token_id"),
    eos_token_id: optId(raw, file, "eos_token_id"),
    pad_token_id: optId(raw, file, "pad_token_id"),
  };
}

/** Validates a BERT or RoBERTa config object (from `config.json`). */
export function parseBertConfig(raw: Raw, file = "config.json"): BertConfig {
  const model_type = raw.model_type === "roberta" ? "roberta" : "bert";
  const hidden = int(raw, file, "hidden_size", 768);
  const heads = int(raw, file, "num_attention_heads", 12);
  if (hidden % heads !== 0) {
    throw new ConfigError(file, "num_attention_heads", `(${heads}) must divide hidden_size (${hidden})`);
  }
  const act = String(raw.hidden_act ?? "gelu");
  if (!["gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "tanh"].includes(act)) {
    throw new ConfigError(file, "hidden_act", `"${act}" is not supported`);
  }
  const pet = raw.position_embedding_type ?? "absolute";
  if (pet !== "absolute") {
    throw new ConfigError(file, "position_embedding_type", `"${pet}" is not supported (only "absolute")`);
  }
  let id2label: Record<string, string> = {};
  if (raw.id2label !== undefined) {
    if (typeof raw.id2label !== "object" || raw.id2label === null) {
      throw new ConfigError(file, "id2label", "must be an object mapping ids to label names");
    }
    id2label = Object.fromEntries(Object.entries(raw.id2label as Raw).map(([k, v]) => [k, String(v)]));
  }
  const numLabels = raw.num_labels !== undefined ? int(raw, file, "num_labels") : Object.keys(id2label).length || 2;
  if (Object.keys(id2label).length === 0) {
    for (let i = 0; i < numLabels; i++) id2label[String(i)] = `LABEL_${i}`;
  }
  if (Object.keys(id2label).length !== numLabels) {
    throw new ConfigError(
      file,
      "id2label",
      `has ${Object.keys(id2label).length} entries but num_labels is ${numLabels}`,
    );
  }
  const label2id = Object.fromEntries(Object.entries(id2label).map(([k, v]) => [v, Number(k)]));
  const cd = raw.classifier_dropout;
  return {
    ...raw,
    model_type,
    vocab_size: int(raw, file, "vocab_size", 30522),
    hidden_size: hidden,
    num_hidden_layers: int(raw, file, "num_hidden_layers", 12),
    num_attention_heads: heads,
    intermediate_size: int(raw, file, "intermediate_size", 3072),
    hidden_act: act,
    hidden_dropout_prob: prob(raw, file, "hidden_dropout_prob", 0.1),
    attention_probs_dropout_prob: prob(raw, file, "attention_probs_dropout_prob", 0.1),
    max_position_embeddings: int(raw, file, "max_position_embeddings", 512),
    type_vocab_size: int(raw, file, "type_vocab_size", 2),
    layer_norm_eps: positive(raw, file, "layer_norm_eps", 1e-12),
    pad_token_id: int(raw, file, "pad_token_id", model_type === "roberta" ? 1 : 0, 0),
    num_labels: numLabels,
    id2label,
    label2id,
    classifier_dropout: cd === null || cd === undefined ? null : prob(raw, file, "classifier_dropout", 0.1),
  };
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
    throw new Error(`${file}: invalid JSON (${(e as Error).message})`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new Error(`${file}: must hold a JSON object`);
  }
  return raw as Raw;
}
