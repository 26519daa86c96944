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
import { linear, matmul } from "../engine/ops/matmul.ts";
import { layerNorm } from "../engine/ops/norm.ts";
import { scaledDotProductAttention, writeKV } from "../engine/ops/attention.ts";
import { embedding } from "../engine/ops/index_ops.ts";
import { concat, reshape, slice } from "../engine/ops/shape.ts";
import { mergeHeads, splitHeads } from "../engine/ops/heads.ts";
import { crossEntropy } from "../engine/ops/loss.ts";
import { ModelBase } from "./module.ts";

/**
 * Key/value cache: per layer, [B, H, T, D]. Two kinds: returned by `forward({useCache: true})` (exactly the
 * past length; the next call concatenates), or preallocated with {@linkcode GPT2LMHeadModel.allocKVCache}
 * ([B, H, capacity, D] with `length` valid positions; the next call writes in place — no copies, no uploads).
 */
export interface KVCache {
  /** Keys per layer. */
  keys: Tensor[];
  /** Values per layer. */
  values: Tensor[];
  /** Valid positions of a preallocated cache (absent: all of dim 2 is valid). */
  length?: number;
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
  /** Cache from a previous call (incremental decoding). */
  pastKeyValues?: KVCache;
  /** Return the new cache. */
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
  /** Updated cache when useCache. */
  pastKeyValues?: KVCache;
}

/** Position ids from an attention mask: cumsum(mask) − 1, with padding positions set to 1 (as HF generate). */
export function positionIdsFromMask(mask: number[][], pastLength = 0, length?: number): number[][] {
  return mask.map((row) => {
    let c = 0;
    const pos = row.map((m) => {
      c += m ? 1 : 0;
      return m ? c - 1 : 1;
    });
    return pos.slice(pastLength, length === undefined ? undefined : pastLength + length);
  });
}

/** GPT-2 with a language-modelling head. */
export class GPT2LMHeadModel extends ModelBase<GPT2Config> {
  /** Name used in error messages. */
  protected get label(): string {
    return "GPT-2";
  }

  /** Parameter names and shapes for a config (HF layout). */
  static paramSpec(c: GPT2Config): ParamSpec {
    const C = c.n_embd, inner = c.n_inner ?? 4 * C;
    const s: ParamSpec = new Map();
    s.set("transformer.wte.weight", [c.vocab_size, C]).set("transformer.wpe.weight", [c.n_positions, C]);
    for (let i = 0; i < c.n_layer; i++) {
      const p = `transformer.h.${i}.`;
      s.set(p + "ln_1.weight", [C]).set(p + "ln_1.bias", [C]);
      s.set(p + "attn.c_attn.weight", [C, 3 * C]).set(p + "attn.c_attn.bias", [3 * C]);
      s.set(p + "attn.c_proj.weight", [C, C]).set(p + "attn.c_proj.bias", [C]);
      s.set(p + "ln_2.weight", [C]).set(p + "ln_2.bias", [C]);
      s.set(p + "mlp.c_fc.weight", [C, inner]).set(p + "mlp.c_fc.bias", [inner]);
      s.set(p + "mlp.c_proj.weight", [inner, C]).set(p + "mlp.c_proj.bias", [C]);
    }
    s.set("transformer.ln_f.weight", [C]).set("transformer.ln_f.bias", [C]);
    if (!c.tie_word_embeddings) s.set("lm_head.weight", [c.vocab_size, C]);
    return s;
  }

  /** A randomly initialised model (N(0, 0.02²) weights, seeded). */
  static random(config: Partial<GPT2Config> & Record<string, unknown>, seed = 0): GPT2LMHeadModel {
    const c = parseGPT2Config(config, "config");
    return new GPT2LMHeadModel(c, uploadParams(randomParams(GPT2LMHeadModel.paramSpec(c), seed)));
  }

  /** The LM head weight [vocab, C]: `lm_head.weight`, or the token embedding it is tied to. */
  get lmHead(): Tensor {
    return this.params.get("lm_head.weight") ?? this.param("transformer.wte.weight");
  }

  /** A preallocated KV cache for `batch` rows and up to `capacity` positions (kept out of `tidy` scopes). */
  allocKVCache(batch: number, capacity: number): KVCache {
    const c = this.config, D = c.n_embd / c.n_head;
    const mk = () => Array.from({ length: c.n_layer }, () => keep(empty([batch, c.n_head, capacity, D])));
    return { keys: mk(), values: mk(), length: 0 };
  }

  /** Runs the model. All intermediate tensors belong to the caller's `tidy` scope. */
  forward(inputs: GPT2Inputs): GPT2Output {
    const c = this.config;
    const ids = inputs.inputIds;
    if (ids.dtype !== "i32" || ids.ndim !== 2) {
      throw new Error(`GPT-2: inputIds must be an i32 [batch, seq] tensor, got ${ids}`);
    }
    const [B, T] = ids.shape;
    const past = inputs.pastKeyValues;
    const inPlace = past?.length !== undefined;
    const Tpast = past ? past.length ?? past.keys[0].shape[2] : 0;
    if (inPlace && Tpast + T > past!.keys[0].shape[2]) {
      throw new Error(`GPT-2: KV cache capacity ${past!.keys[0].shape[2]} is too small for ${Tpast + T} positions`);
    }
    if (inPlace && isGradEnabled() && this.parameters().some((p) => p.requiresGrad)) {
      throw new Error("GPT-2: a preallocated KV cache is written in place; use it under noGrad()");
    }
    if (Tpast + T > c.n_positions) {
      throw new Error(`GPT-2: sequence length ${Tpast + T} exceeds n_positions (${c.n_positions})`);
    }
    const H = c.n_head, C = c.n_embd, D = C / H;
    let maskT: Tensor | undefined;
    let hostMask: number[][] | undefined;
    if (inputs.attentionMask) {
      if (Array.isArray(inputs.attentionMask)) {
        hostMask = inputs.attentionMask;
        if (hostMask.length !== B || hostMask.some((r) => r.length !== Tpast + T)) {
          throw new Error(`GPT-2: attentionMask must be [${B}, ${Tpast + T}]`);
        }
        maskT = tensor(hostMask.flat(), [B, Tpast + T], "i32");
      } else {
        maskT = inputs.attentionMask;
        const okShape = maskT.ndim === 2 && maskT.shape[0] === B &&
          (inPlace ? maskT.shape[1] >= Tpast + T : maskT.shape[1] === Tpast + T);
        if (!okShape) {
          throw new Error(`GPT-2: attentionMask must be [${B}, ${Tpast + T}], got [${maskT.shape}]`);
        }
      }
    }
    let pos = inputs.positionIds;
    if (!pos) {
      const rows = hostMask
        ? positionIdsFromMask(hostMask, Tpast, T)
        : Array.from({ length: B }, () => Array.from({ length: T }, (_, i) => Tpast + i));
      pos = tensor(rows.flat(), [B, T], "i32");
    }
    let h = add(
      embedding(this.param("transformer.wte.weight"), ids),
      embedding(this.param("transformer.wpe.weight"), pos),
    );
    h = this.drop(h, c.embd_pdrop);
    const cache: KVCache = { keys: [], values: [] };
    const activation = c.activation_function === "gelu" ? "gelu" : "gelu_new";
    // h + dropout(x·W + b): one kernel (residual in the store) when dropout is the identity.
    const fuseResidual = !this.training || c.resid_pdrop === 0;
    const residual = (x: Tensor, name: string, res: Tensor) => {
      const w = this.param(name + ".weight"), b = this.param(name + ".bias");
      return fuseResidual ? linear(x, w, b, { residual: res }) : add(res, this.drop(linear(x, w, b), c.resid_pdrop));
    };
    for (let i = 0; i < c.n_layer; i++) {
      const p = `transformer.h.${i}.`;
      const a = layerNorm(h, this.param(p + "ln_1.weight"), this.param(p + "ln_1.bias"), c.layer_norm_epsilon);
      const qkv = linear(a, this.param(p + "attn.c_attn.weight"), this.param(p + "attn.c_attn.bias"));
      const [q, kNew, vNew] = splitHeads(qkv, H, 3);
      let k = kNew, v = vNew;
      if (inPlace) {
        writeKV(past!.keys[i], k, Tpast);
        writeKV(past!.values[i], v, Tpast);
        k = past!.keys[i];
        v = past!.values[i];
      } else if (past) {
        k = concat([past.keys[i], k], 2);
        v = concat([past.values[i], v], 2);
      }
      if (inputs.useCache && !inPlace) {
        cache.keys.push(k);
        cache.values.push(v);
      }
      let scale = c.scale_attn_weights ? 1 / Math.sqrt(D) : 1;
      if (c.scale_attn_by_inverse_layer_idx) scale /= i + 1;
      const training = this.training && c.attn_pdrop > 0;
      const o = scaledDotProductAttention(q, k, v, {
        causal: true,
        keyPaddingMask: maskT,
        kvLength: inPlace ? Tpast + T : undefined,
        scale,
        dropoutP: training ? c.attn_pdrop : 0,
        seed: training ? this.dropoutSeed++ >>> 0 : 0,
      });
      const merged = mergeHeads(o);
      h = residual(merged, p + "attn.c_proj", h);
      const m = layerNorm(h, this.param(p + "ln_2.weight"), this.param(p + "ln_2.bias"), c.layer_norm_epsilon);
      const act = linear(m, this.param(p + "mlp.c_fc.weight"), this.param(p + "mlp.c_fc.bias"), { activation });
      h = residual(act, p + "mlp.c_proj", h);
    }
    const hidden = layerNorm(
      h,
      this.param("transformer.ln_f.weight"),
      this.param("transformer.ln_f.bias"),
      c.layer_norm_epsilon,
    );
    const out: GPT2Output = {};
    if (inputs.outputHidden) out.hidden = hidden;
    if (inputs.useCache) {
      out.pastKeyValues = inPlace ? { keys: past!.keys, values: past!.values, length: Tpast + T } : cache;
    }
    if (!inputs.skipLogits || inputs.labels) {
      out.logits = matmul(hidden, this.lmHead, { transB: true });
      if (inputs.labels) {
        const l = inputs.labels;
        if (l.shape.join() !== ids.shape.join()) throw new Error(`GPT-2: labels must be [${B}, ${T}]`);
        const shifted = slice(out.logits, 1, 0, T - 1);
        const targets = slice(l, 1, 1, T);
        out.loss = crossEntropy(reshape(shifted, [B * (T - 1), c.vocab_size]), reshape(targets, [B * (T - 1)]), {
          ignoreIndex: -100,
        });
      }
    }
    return out;
  }
}
