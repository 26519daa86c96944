/**
 * BERT and RoBERTa sequence classifiers (`BertForSequenceClassification`,
 * `RobertaForSequenceClassification`) in Hugging Face's weight layout: post-LN encoder,
 * nn.Linear weights [out, in]. BERT classifies the tanh-pooled [CLS] state; RoBERTa uses its
 * dense → tanh → out_proj head on `<s>`, and its positions start at pad_token_id + 1.
 * @module
 */

import { type BertConfig, parseBertConfig } from "./config.ts";
import { type ParamSpec, randomParams, uploadParams } from "./weights.ts";
import { type Tensor, tensor } from "../engine/tensor.ts";
import { add, tanh } from "../engine/ops/elementwise.ts";
import { linear, type LinearActivation, type LinearOptions } from "../engine/ops/matmul.ts";
import { layerNorm } from "../engine/ops/norm.ts";
import { scaledDotProductAttention } from "../engine/ops/attention.ts";
import { embedding } from "../engine/ops/index_ops.ts";
import { reshape, slice } from "../engine/ops/shape.ts";
import { mergeHeads, splitHeads } from "../engine/ops/heads.ts";
import { crossEntropy } from "../engine/ops/loss.ts";
import { ModelBase } from "./module.ts";

/** Inputs of {@linkcode BertForSequenceClassification.forward}. */
export interface BertInputs {
  /** Token ids, i32 [B, T]. */
  inputIds: Tensor;
  /** 1 = token, 0 = padding, [B, T] (host rows or a tensor). Default: all ones. */
  attentionMask?: number[][] | Tensor;
  /** Segment ids, i32 [B, T]. Default: zeros. */
  tokenTypeIds?: Tensor;
  /** Positions, i32 [B, T]. Default: arange (BERT) or from the pad token (RoBERTa). */
  positionIds?: Tensor;
  /** Class targets, i32 [B]: adds the mean cross-entropy loss. */
  labels?: Tensor;
}

/** Outputs of {@linkcode BertForSequenceClassification.forward}. */
export interface BertOutput {
  /** [B, num_labels]. */
  logits: Tensor;
  /** Mean cross-entropy when labels were given. */
  loss?: Tensor;
}

/** BERT or RoBERTa encoder with a sequence-classification head. */
export class BertForSequenceClassification extends ModelBase<BertConfig> {
  /** Name used in error messages. */
  protected get label(): string {
    return this.prefix;
  }

  /** "bert" or "roberta": the weight-name prefix. */
  get prefix(): string {
    return this.config.model_type;
  }

  /** Parameter names and shapes for a config (HF layout). */
  static paramSpec(c: BertConfig): ParamSpec {
    const C = c.hidden_size, I = c.intermediate_size, pre = c.model_type;
    const s: ParamSpec = new Map();
    const lin = (name: string, out: number, inp: number) =>
      s.set(name + ".weight", [out, inp]).set(name + ".bias", [out]);
    const ln = (name: string) => s.set(name + ".weight", [C]).set(name + ".bias", [C]);
    s.set(`${pre}.embeddings.word_embeddings.weight`, [c.vocab_size, C]);
    s.set(`${pre}.embeddings.position_embeddings.weight`, [c.max_position_embeddings, C]);
    s.set(`${pre}.embeddings.token_type_embeddings.weight`, [c.type_vocab_size, C]);
    ln(`${pre}.embeddings.LayerNorm`);
    for (let i = 0; i < c.num_hidden_layers; i++) {
      const p = `${pre}.encoder.layer.${i}.`;
      lin(p + "attention.self.query", C, C);
      lin(p + "attention.self.key", C, C);
      lin(p + "attention.self.value", C, C);
      lin(p + "attention.output.dense", C, C);
      ln(p + "attention.output.LayerNorm");
      lin(p + "intermediate.dense", I, C);
      lin(p + "output.dense", C, I);
      ln(p + "output.LayerNorm");
    }
    if (pre === "bert") {
      lin("bert.pooler.dense", C, C);
      lin("classifier", c.num_labels, C);
    } else {
      lin("classifier.dense", C, C);
      lin("classifier.out_proj", c.num_labels, C);
    }
    return s;
  }

  /** A randomly initialised model (seeded). */
  static random(config: Record<string, unknown>, seed = 0): BertForSequenceClassification {
    const c = parseBertConfig(config, "config");
    return new BertForSequenceClassification(
      c,
      uploadParams(randomParams(BertForSequenceClassification.paramSpec(c), seed)),
    );
  }

  /** Label names by class index (from `id2label`). */
  get labels(): string[] {
    return Array.from({ length: this.config.num_labels }, (_, i) => this.config.id2label[String(i)]);
  }

  /** The intermediate activation as a fused linear epilogue (null: tanh, applied separately). */
  #activation(): LinearActivation | null {
    switch (this.config.hidden_act) {
      case "gelu":
        return "gelu";
      case "relu":
        return "relu";
      case "tanh":
        return null;
      default:
        return "gelu_new";
    }
  }

  /** Runs the classifier. Intermediates belong to the caller's `tidy` scope. */
  forward(inputs: BertInputs): BertOutput {
    const c = this.config, pre = this.prefix;
    const ids = inputs.inputIds;
    if (ids.dtype !== "i32" || ids.ndim !== 2) {
      throw new Error(`${pre}: inputIds must be an i32 [batch, seq] tensor, got ${ids}`);
    }
    const [B, T] = ids.shape;
    const C = c.hidden_size, H = c.num_attention_heads, D = C / H;
    const offset = pre === "roberta" ? c.pad_token_id + 1 : 0;
    if (T + offset > c.max_position_embeddings) {
      throw new Error(`${pre}: sequence length ${T} exceeds max_position_embeddings (${c.max_position_embeddings})`);
    }
    let mask: Tensor | undefined;
    let hostMask: number[][] | undefined;
    if (Array.isArray(inputs.attentionMask)) {
      hostMask = inputs.attentionMask;
      if (hostMask.length !== B || hostMask.some((r) => r.length !== T)) {
        throw new Error(`${pre}: attentionMask must be [${B}, ${T}]`);
      }
      mask = tensor(hostMask.flat(), [B, T], "i32");
    } else if (inputs.attentionMask) {
      mask = inputs.attentionMask;
      if (mask.shape.join() !== [B, T].join()) {
        throw new Error(`${pre}: attentionMask must be [${B}, ${T}], got [${mask.shape}]`);
      }
    }
    let pos = inputs.positionIds;
    if (!pos) {
      if (pre === "roberta") {
        if (!hostMask) {
          throw new Error("roberta: pass positionIds or a host attentionMask (positions skip padding)");
        }
        // RoBERTa: padding_idx + cumulative count of real tokens; padding keeps padding_idx.
        pos = tensor(
          hostMask.flatMap((row) => {
            let k = 0;
            return row.map((m) => m ? c.pad_token_id + ++k : c.pad_token_id);
          }),
          [B, T],
          "i32",
        );
      } else {
        pos = tensor(Array.from({ length: B * T }, (_, i) => i % T), [B, T], "i32");
      }
    }
    const types = inputs.tokenTypeIds ?? tensor(new Int32Array(B * T), [B, T], "i32");
    let h = add(
      add(
        embedding(this.param(`${pre}.embeddings.word_embeddings.weight`), ids),
        embedding(this.param(`${pre}.embeddings.position_embeddings.weight`), pos),
      ),
      embedding(this.param(`${pre}.embeddings.token_type_embeddings.weight`), types),
    );
    h = layerNorm(
      h,
      this.param(`${pre}.embeddings.LayerNorm.weight`),
      this.param(`${pre}.embeddings.LayerNorm.bias`),
      c.layer_norm_eps,
    );
    h = this.drop(h, c.hidden_dropout_prob);
    const heads = (x: Tensor) => splitHeads(x, H, 1)[0];
    const lin = (x: Tensor, name: string, options: LinearOptions = {}) =>
      linear(x, this.param(name + ".weight"), this.param(name + ".bias"), { weightLayout: "out_in", ...options });
    // dropout(x·W + b) + res: one kernel (residual in the store) when dropout is the identity.
    const fuseResidual = !this.training || c.hidden_dropout_prob === 0;
    const residual = (x: Tensor, name: string, res: Tensor) =>
      fuseResidual ? lin(x, name, { residual: res }) : add(this.drop(lin(x, name), c.hidden_dropout_prob), res);
    const activation = this.#activation();
    for (let i = 0; i < c.num_hidden_layers; i++) {
      const p = `${pre}.encoder.layer.${i}.`;
      const q = heads(lin(h, p + "attention.self.query"));
      const k = heads(lin(h, p + "attention.self.key"));
      const v = heads(lin(h, p + "attention.self.value"));
      const training = this.training && c.attention_probs_dropout_prob > 0;
      const o = scaledDotProductAttention(q, k, v, {
        causal: false,
        keyPaddingMask: mask,
        scale: 1 / Math.sqrt(D),
        dropoutP: training ? c.attention_probs_dropout_prob : 0,
        seed: training ? this.dropoutSeed++ >>> 0 : 0,
      });
      const merged = mergeHeads(o);
      h = layerNorm(
        residual(merged, p + "attention.output.dense", h),
        this.param(p + "attention.output.LayerNorm.weight"),
        this.param(p + "attention.output.LayerNorm.bias"),
        c.layer_norm_eps,
      );
      const inter = activation
        ? lin(h, p + "intermediate.dense", { activation })
        : tanh(lin(h, p + "intermediate.dense"));
      h = layerNorm(
        residual(inter, p + "output.dense", h),
        this.param(p + "output.LayerNorm.weight"),
        this.param(p + "output.LayerNorm.bias"),
        c.layer_norm_eps,
      );
    }
    const first = reshape(slice(h, 1, 0, 1), [B, C]);
    const cdrop = c.classifier_dropout ?? c.hidden_dropout_prob;
    let logits: Tensor;
    if (pre === "bert") {
      const pooled = tanh(lin(first, "bert.pooler.dense"));
      logits = lin(this.drop(pooled, cdrop), "classifier");
    } else {
      const x = tanh(lin(this.drop(first, cdrop), "classifier.dense"));
      logits = lin(this.drop(x, cdrop), "classifier.out_proj");
    }
    const out: BertOutput = { logits };
    if (inputs.labels) {
      if (inputs.labels.shape.join() !== String(B)) throw new Error(`${pre}: labels must be [${B}]`);
      out.loss = crossEntropy(logits, inputs.labels);
    }
    return out;
  }
}

/** RoBERTa uses the same implementation; the config's model_type selects the differences. */
export { BertForSequenceClassification as RobertaForSequenceClassification };
