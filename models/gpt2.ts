/**
 * GPT-2 (`GPT2LMHeadModel`) in Hugging Face's weight layout: Conv1D weights are [in, out], the LM
 * head is tied to the token embedding, gelu_new activations, pre-LN blocks. The MLP's activation
 * and (without residual dropout) both residual additions are fused into the linear layers' kernels.
 * @module
 */

import { type GPT2Config, parseGPT2Config } from "./config.ts";
import { type ParamSpec, randomParams, uploadParams } from "./weights.ts";
import { empty, isGradEnabled, keep, type Tensor, tensor } from "../engine/tensor.ts";
import { add } from "../engine/ops/elementwise.ts";
import { matmul } from "../engine/ops/matmul.ts";
import { scaledDotProductAttention, writeKV } from "../engine/ops/attention.ts";
import { embedding } from "../engine/ops/index_ops.ts";
import { reshape, slice } from "../engine/ops/shape.ts";
import { mergeHeads, splitHeads } from "../engine/ops/heads.ts";
import { crossEntropy } from "../engine/ops/loss.ts";
import { ModelBase } from "./module.ts";
import { Layers } from "./layers.ts";
import type { LoraAdapter } from "./lora.ts";
import { checkTokenIds, keyPaddingMask, positionIdsFromMask, rangePositionIds } from "./inputs.ts";

export { positionIdsFromMask } from "./inputs.ts";

/**
 * Key/value cache preallocated with {@linkcode GPT2LMHeadModel.allocKVCache}: per layer [B, H, capacity, D]
 * with `length` valid positions. `forward` writes the new positions in place — no copies, no uploads.
 */
export interface KVCache {
  /** Keys per layer. */
  keys: Tensor[];
  /** Values per layer. */
  values: Tensor[];
  /** Valid positions. */
  length: number;
}

/** Inputs of {@linkcode GPT2LMHeadModel.forward}. */
export interface GPT2Inputs {
  /** Token ids, i32 [B, T]. */
  inputIds: Tensor;
  /** 1 for real tokens, 0 for padding, [B, Tpast + T] (host rows or a tensor). */
  attentionMask?: number[][] | Tensor;
  /** Positions, i32 [B, T]; by default cumsum(attentionMask) − 1 (left padding safe), else Tpast + arange(T). */
  positionIds?: Tensor;
  /** Next-token targets, i32 [B, T]; the loss shifts them like HF (-100 ignored). */
  labels?: Tensor;
  /** Preallocated cache holding the previous positions (incremental decoding); written in place. */
  pastKeyValues?: KVCache;
  /** Return the cache (with its new length); needs `pastKeyValues`. */
  useCache?: boolean;
  /** Also return the last hidden state (after ln_f). */
  outputHidden?: boolean;
  /** Skip the LM head (when only hidden states are needed). */
  skipLogits?: boolean;
}

/** Outputs of {@linkcode GPT2LMHeadModel.forward}. */
export interface GPT2Output {
  /** [B, T, vocab] (absent with skipLogits). */
  logits?: Tensor;
  /** Mean next-token cross-entropy when labels were given. */
  loss?: Tensor;
  /** Last hidden state after ln_f, [B, T, C]. */
  hidden?: Tensor;
  /** The cache with its new length, when useCache. */
  pastKeyValues?: KVCache;
}

/** What every block of one forward pass shares. */
interface ForwardPass {
  /** Batch size. */
  batch: number;
  /** New positions (the inputs' sequence length). */
  length: number;
  /** Positions already in the cache. */
  pastLength: number;
  /** Position ids, i32 [B, T]. */
  positions: Tensor;
  /** Key padding mask, [B, ≥ pastLength + T]. */
  mask?: Tensor;
  /** Preallocated cache the blocks write their keys and values into. */
  cache?: KVCache;
}

/** GPT-2 with a language-modelling head. */
export class GPT2LMHeadModel extends ModelBase<GPT2Config> {
  /** The shared layer calls on this model's parameters (Conv1D weights, [in, out]). */
  readonly #layers = new Layers(this, {
    param: (name) => this.param(name),
    drop: (x, rate) => this.drop(x, rate),
    lora: (name) => this.lora?.module(name) ?? null,
  }, { weightLayout: "in_out", residualFirst: true });

  /**
   * A LoRA adapter on the Conv1D layers, or null ({@linkcode attachLora}): when set and enabled, targeted layers add
   * its low-rank update.
   */
  lora: LoraAdapter | null = null;

  /** Name used in error messages. */
  protected get label(): string {
    return "GPT-2";
  }

  /** Parameter names and shapes for a config (HF layout). */
  static paramSpec(config: GPT2Config): ParamSpec {
    const width = config.n_embd, inner = config.n_inner ?? 4 * width;
    const spec: ParamSpec = new Map();
    const linear = (name: string, inputs: number, outputs: number) =>
      spec.set(name + ".weight", [inputs, outputs]).set(name + ".bias", [outputs]);
    const norm = (name: string) => spec.set(name + ".weight", [width]).set(name + ".bias", [width]);
    spec.set("transformer.wte.weight", [config.vocab_size, width]);
    spec.set("transformer.wpe.weight", [config.n_positions, width]);
    for (let i = 0; i < config.n_layer; i++) {
      const block = `transformer.h.${i}.`;
      norm(block + "ln_1");
      linear(block + "attn.c_attn", width, 3 * width);
      linear(block + "attn.c_proj", width, width);
      norm(block + "ln_2");
      linear(block + "mlp.c_fc", width, inner);
      linear(block + "mlp.c_proj", inner, width);
    }
    norm("transformer.ln_f");
    if (!config.tie_word_embeddings) spec.set("lm_head.weight", [config.vocab_size, width]);
    return spec;
  }

  /** A randomly initialised model (N(0, 0.02²) weights, seeded). */
  static random(config: Partial<GPT2Config> & Record<string, unknown>, seed = 0): GPT2LMHeadModel {
    const parsed = parseGPT2Config(config, "config");
    return new GPT2LMHeadModel(parsed, uploadParams(randomParams(GPT2LMHeadModel.paramSpec(parsed), seed)));
  }

  /** The LM head weight [vocab, C]: `lm_head.weight`, or the token embedding it is tied to. */
  get lmHead(): Tensor {
    return this.params.get("lm_head.weight") ?? this.param("transformer.wte.weight");
  }

  /** A preallocated KV cache for `batch` rows and up to `capacity` positions (kept out of `tidy` scopes). */
  allocKVCache(batch: number, capacity: number): KVCache {
    const { n_layer, n_head, n_embd } = this.config;
    const perLayer = () =>
      Array.from({ length: n_layer }, () => keep(empty([batch, n_head, capacity, n_embd / n_head])));
    return { keys: perLayer(), values: perLayer(), length: 0 };
  }

  /** Runs the model. All intermediate tensors belong to the caller's `tidy` scope. */
  forward(inputs: GPT2Inputs): GPT2Output {
    const pass = this.#begin(inputs);
    let hidden = this.#embed(inputs, pass);
    for (let i = 0; i < this.config.n_layer; i++) hidden = this.#block(i, hidden, pass);
    hidden = this.#layers.layerNorm("transformer.ln_f", hidden, this.config.layer_norm_epsilon);
    return this.#outputs(hidden, inputs, pass);
  }

  /** Checks the inputs against the config and the cache; uploads the mask. */
  #begin(inputs: GPT2Inputs): ForwardPass {
    const [batch, length] = checkTokenIds(inputs.inputIds, "GPT-2");
    const cache = inputs.pastKeyValues;
    const pastLength = this.#checkCache(cache, length, inputs.useCache);
    const total = pastLength + length;
    if (total > this.config.n_positions) {
      throw new Error(`GPT-2: sequence length ${total} exceeds n_positions (${this.config.n_positions})`);
    }
    const mask = keyPaddingMask(inputs.attentionMask, [batch, total], "GPT-2", cache !== undefined);
    const positions = inputs.positionIds ??
      (mask.rows
        ? tensor(positionIdsFromMask(mask.rows, pastLength, length).flat(), [batch, length], "i32")
        : rangePositionIds(batch, length, pastLength));
    return { batch, length, pastLength, positions, mask: mask.tensor, cache };
  }

  /** Checks a preallocated cache (room for `length` more positions, no gradients); returns its valid length. */
  #checkCache(cache: KVCache | undefined, length: number, useCache = false): number {
    if (!cache) {
      if (useCache) throw new Error("GPT-2: useCache needs pastKeyValues, a preallocated cache from allocKVCache()");
      return 0;
    }
    if (typeof cache.length !== "number") {
      throw new Error("GPT-2: pastKeyValues must be a preallocated cache from allocKVCache() (with its length)");
    }
    const capacity = cache.keys[0].shape[2];
    if (cache.length + length > capacity) {
      throw new Error(`GPT-2: KV cache capacity ${capacity} is too small for ${cache.length + length} positions`);
    }
    const params = [...this.parameters(), ...(this.lora?.enabled ? this.lora.parameters() : [])];
    if (isGradEnabled() && params.some((param) => param.requiresGrad)) {
      throw new Error("GPT-2: a preallocated KV cache is written in place; use it under noGrad()");
    }
    return cache.length;
  }

  /** Token plus position embeddings, then embedding dropout. */
  #embed(inputs: GPT2Inputs, pass: ForwardPass): Tensor {
    const tokens = embedding(this.param("transformer.wte.weight"), inputs.inputIds);
    const positions = embedding(this.param("transformer.wpe.weight"), pass.positions);
    return this.drop(add(tokens, positions), this.config.embd_pdrop);
  }

  /** Pre-LN block `index`: hidden + attention(ln_1(hidden)), then + mlp(ln_2(·)). */
  #block(index: number, hidden: Tensor, pass: ForwardPass): Tensor {
    const prefix = `transformer.h.${index}.`, eps = this.config.layer_norm_epsilon;
    hidden = this.#attention(index, this.#layers.layerNorm(prefix + "ln_1", hidden, eps), hidden, pass);
    return this.#mlp(prefix + "mlp.", this.#layers.layerNorm(prefix + "ln_2", hidden, eps), hidden);
  }

  /** Causal self-attention of block `index` on x, projected and added to `residual`. */
  #attention(index: number, x: Tensor, residual: Tensor, pass: ForwardPass): Tensor {
    const config = this.config, prefix = `transformer.h.${index}.attn.`;
    const [queries, newKeys, newValues] = splitHeads(this.#layers.linear(prefix + "c_attn", x), config.n_head, 3);
    const [keys, values] = this.#cached(index, newKeys, newValues, pass);
    let scale = config.scale_attn_weights ? 1 / Math.sqrt(config.n_embd / config.n_head) : 1;
    if (config.scale_attn_by_inverse_layer_idx) scale /= index + 1;
    const heads = scaledDotProductAttention(queries, keys, values, {
      causal: true,
      keyPaddingMask: pass.mask,
      kvLength: pass.cache ? pass.pastLength + pass.length : undefined,
      scale,
      ...this.#layers.attentionDropout(config.attn_pdrop),
    });
    return this.#layers.residualLinear(prefix + "c_proj", mergeHeads(heads), residual, config.resid_pdrop);
  }

  /** Keys and values to attend to: the new ones, or (with a cache) the cache after writing them in place. */
  #cached(index: number, keys: Tensor, values: Tensor, pass: ForwardPass): [Tensor, Tensor] {
    if (!pass.cache) return [keys, values];
    writeKV(pass.cache.keys[index], keys, pass.pastLength);
    writeKV(pass.cache.values[index], values, pass.pastLength);
    return [pass.cache.keys[index], pass.cache.values[index]];
  }

  /** MLP (`prefix` c_fc with its activation fused, then c_proj) on x, added to `residual`. */
  #mlp(prefix: string, x: Tensor, residual: Tensor): Tensor {
    const activation = this.config.activation_function === "gelu" ? "gelu" : "gelu_new";
    const inner = this.#layers.linear(prefix + "c_fc", x, { activation });
    return this.#layers.residualLinear(prefix + "c_proj", inner, residual, this.config.resid_pdrop);
  }

  /** The outputs asked for: hidden state, cache, logits and the shifted next-token loss. */
  #outputs(hidden: Tensor, inputs: GPT2Inputs, pass: ForwardPass): GPT2Output {
    const out: GPT2Output = {};
    if (inputs.outputHidden) out.hidden = hidden;
    if (inputs.useCache && pass.cache) {
      out.pastKeyValues = { keys: pass.cache.keys, values: pass.cache.values, length: pass.pastLength + pass.length };
    }
    if (!inputs.skipLogits || inputs.labels) {
      out.logits = matmul(hidden, this.lmHead, { transB: true });
      if (inputs.labels) out.loss = this.#loss(out.logits, inputs.labels, pass);
    }
    return out;
  }

  /** Mean cross-entropy of logits[:, t] against labels[:, t + 1] (-100 ignored), as HF. */
  #loss(logits: Tensor, labels: Tensor, { batch, length }: ForwardPass): Tensor {
    if (labels.shape.join() !== [batch, length].join()) throw new Error(`GPT-2: labels must be [${batch}, ${length}]`);
    const predictions = slice(logits, 1, 0, length - 1), targets = slice(labels, 1, 1, length);
    const rows = batch * (length - 1);
    return crossEntropy(reshape(predictions, [rows, this.config.vocab_size]), reshape(targets, [rows]), {
      ignoreIndex: -100,
    });
  }
}
