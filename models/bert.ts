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
import type { LinearActivation } from "../engine/ops/matmul.ts";
import { scaledDotProductAttention } from "../engine/ops/attention.ts";
import { embedding } from "../engine/ops/index_ops.ts";
import { reshape, slice } from "../engine/ops/shape.ts";
import { mergeHeads, splitHeads } from "../engine/ops/heads.ts";
import { crossEntropy } from "../engine/ops/loss.ts";
import { ModelBase } from "./module.ts";
import { Layers } from "./layers.ts";
import { checkTokenIds, keyPaddingMask, positionIdsAfterPadding, rangePositionIds } from "./inputs.ts";

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

/** The inputs after checking: [B, T], the mask on the GPU and the position ids. */
interface EncoderInputs {
  /** Batch size. */
  batch: number;
  /** Sequence length. */
  length: number;
  /** Key padding mask, [B, T] (absent: no padding). */
  mask?: Tensor;
  /** Position ids, i32 [B, T]. */
  positions: Tensor;
}

/** BERT or RoBERTa encoder with a sequence-classification head. */
export class BertForSequenceClassification extends ModelBase<BertConfig> {
  /** The shared layer calls on this model's parameters (nn.Linear weights, [out, in]). */
  readonly #layers = new Layers(this, { param: (name) => this.param(name), drop: (x, rate) => this.drop(x, rate) }, {
    weightLayout: "out_in",
    residualFirst: false,
  });

  /** Name used in error messages. */
  protected get label(): string {
    return this.prefix;
  }

  /** "bert" or "roberta": the weight-name prefix. */
  get prefix(): string {
    return this.config.model_type;
  }

  /** Parameter names and shapes for a config (HF layout). */
  static paramSpec(config: BertConfig): ParamSpec {
    const width = config.hidden_size, inner = config.intermediate_size, model = config.model_type;
    const spec: ParamSpec = new Map();
    const linear = (name: string, outputs: number, inputs: number) =>
      spec.set(name + ".weight", [outputs, inputs]).set(name + ".bias", [outputs]);
    const norm = (name: string) => spec.set(name + ".weight", [width]).set(name + ".bias", [width]);
    spec.set(`${model}.embeddings.word_embeddings.weight`, [config.vocab_size, width]);
    spec.set(`${model}.embeddings.position_embeddings.weight`, [config.max_position_embeddings, width]);
    spec.set(`${model}.embeddings.token_type_embeddings.weight`, [config.type_vocab_size, width]);
    norm(`${model}.embeddings.LayerNorm`);
    for (let i = 0; i < config.num_hidden_layers; i++) {
      const layer = `${model}.encoder.layer.${i}.`;
      for (const name of ["query", "key", "value"]) linear(layer + "attention.self." + name, width, width);
      linear(layer + "attention.output.dense", width, width);
      norm(layer + "attention.output.LayerNorm");
      linear(layer + "intermediate.dense", inner, width);
      linear(layer + "output.dense", width, inner);
      norm(layer + "output.LayerNorm");
    }
    const head = model === "bert" ? ["bert.pooler.dense", "classifier"] : ["classifier.dense", "classifier.out_proj"];
    linear(head[0], width, width);
    linear(head[1], config.num_labels, width);
    return spec;
  }

  /** A randomly initialised model (seeded). */
  static random(config: Record<string, unknown>, seed = 0): BertForSequenceClassification {
    const parsed = parseBertConfig(config, "config");
    return new BertForSequenceClassification(
      parsed,
      uploadParams(randomParams(BertForSequenceClassification.paramSpec(parsed), seed)),
    );
  }

  /** Label names by class index (from `id2label`). */
  get labels(): string[] {
    return Array.from({ length: this.config.num_labels }, (_, i) => this.config.id2label[String(i)]);
  }

  /** Runs the classifier. Intermediates belong to the caller's `tidy` scope. */
  forward(inputs: BertInputs): BertOutput {
    const encoder = this.#begin(inputs);
    let hidden = this.#embed(inputs, encoder);
    for (let i = 0; i < this.config.num_hidden_layers; i++) hidden = this.#layer(i, hidden, encoder.mask);
    const logits = this.#classify(reshape(slice(hidden, 1, 0, 1), [encoder.batch, this.config.hidden_size]));
    if (!inputs.labels) return { logits };
    if (inputs.labels.shape.join() !== String(encoder.batch)) {
      throw new Error(`${this.prefix}: labels must be [${encoder.batch}]`);
    }
    return { logits, loss: crossEntropy(logits, inputs.labels) };
  }

  /** Checks the inputs against the config, uploads the mask and makes the default position ids. */
  #begin(inputs: BertInputs): EncoderInputs {
    const config = this.config, label = this.prefix;
    const [batch, length] = checkTokenIds(inputs.inputIds, label);
    const offset = label === "roberta" ? config.pad_token_id + 1 : 0;
    if (length + offset > config.max_position_embeddings) {
      throw new Error(
        `${label}: sequence length ${length} exceeds max_position_embeddings (${config.max_position_embeddings})`,
      );
    }
    const mask = keyPaddingMask(inputs.attentionMask, [batch, length], label);
    if (inputs.positionIds) return { batch, length, mask: mask.tensor, positions: inputs.positionIds };
    if (label !== "roberta") return { batch, length, mask: mask.tensor, positions: rangePositionIds(batch, length) };
    if (!mask.rows) throw new Error("roberta: pass positionIds or a host attentionMask (positions skip padding)");
    const rows = positionIdsAfterPadding(mask.rows, config.pad_token_id);
    return { batch, length, mask: mask.tensor, positions: tensor(rows.flat(), [batch, length], "i32") };
  }

  /** Word + position + token-type embeddings, layer norm, dropout. */
  #embed(inputs: BertInputs, { batch, length, positions }: EncoderInputs): Tensor {
    const embeddings = `${this.prefix}.embeddings.`;
    const types = inputs.tokenTypeIds ?? tensor(new Int32Array(batch * length), [batch, length], "i32");
    const summed = add(
      add(
        embedding(this.param(embeddings + "word_embeddings.weight"), inputs.inputIds),
        embedding(this.param(embeddings + "position_embeddings.weight"), positions),
      ),
      embedding(this.param(embeddings + "token_type_embeddings.weight"), types),
    );
    const normed = this.#layers.layerNorm(embeddings + "LayerNorm", summed, this.config.layer_norm_eps);
    return this.drop(normed, this.config.hidden_dropout_prob);
  }

  /** Post-LN encoder layer `index`: LayerNorm(hidden + attention(hidden)), then LayerNorm(· + mlp(·)). */
  #layer(index: number, hidden: Tensor, mask: Tensor | undefined): Tensor {
    const prefix = `${this.prefix}.encoder.layer.${index}.`, eps = this.config.layer_norm_eps;
    hidden = this.#layers.layerNorm(prefix + "attention.output.LayerNorm", this.#attention(prefix, hidden, mask), eps);
    return this.#layers.layerNorm(prefix + "output.LayerNorm", this.#mlp(prefix, hidden), eps);
  }

  /** Bidirectional self-attention of the layer at `prefix`, projected and added to its input. */
  #attention(prefix: string, hidden: Tensor, mask: Tensor | undefined): Tensor {
    const config = this.config, heads = config.num_attention_heads;
    const project = (name: string) =>
      splitHeads(this.#layers.linear(prefix + "attention.self." + name, hidden), heads, 1)[0];
    const queries = project("query"), keys = project("key"), values = project("value");
    const attended = scaledDotProductAttention(queries, keys, values, {
      causal: false,
      keyPaddingMask: mask,
      scale: 1 / Math.sqrt(config.hidden_size / heads),
      ...this.#layers.attentionDropout(config.attention_probs_dropout_prob),
    });
    const output = prefix + "attention.output.dense";
    return this.#layers.residualLinear(output, mergeHeads(attended), hidden, config.hidden_dropout_prob);
  }

  /** Feed-forward of the layer at `prefix` (intermediate.dense with its activation, output.dense), added to its input. */
  #mlp(prefix: string, hidden: Tensor): Tensor {
    const activation = this.#activation(), intermediate = prefix + "intermediate.dense";
    const inner = activation
      ? this.#layers.linear(intermediate, hidden, { activation })
      : tanh(this.#layers.linear(intermediate, hidden));
    return this.#layers.residualLinear(prefix + "output.dense", inner, hidden, this.config.hidden_dropout_prob);
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

  /** Class logits from the first token's state: BERT's tanh pooler, or RoBERTa's dense → tanh → out_proj head. */
  #classify(first: Tensor): Tensor {
    const dropoutP = this.config.classifier_dropout ?? this.config.hidden_dropout_prob;
    if (this.prefix === "bert") {
      const pooled = tanh(this.#layers.linear("bert.pooler.dense", first));
      return this.#layers.linear("classifier", this.drop(pooled, dropoutP));
    }
    const dense = tanh(this.#layers.linear("classifier.dense", this.drop(first, dropoutP)));
    return this.#layers.linear("classifier.out_proj", this.drop(dense, dropoutP));
  }
}

/** RoBERTa uses the same implementation; the config's model_type selects the differences. */
export { BertForSequenceClassification as RobertaForSequenceClassification };
