/**
 * A causal LM with a scalar value head for PPO, named as TRL names it
 * (`v_head.summary.weight` [1, C], `v_head.summary.bias` [1]: Linear(hidden, 1) on the last
 * hidden state). The head is saved beside the model as `value_head.safetensors`.
 * @module
 */

import type { Tensor } from "../engine/tensor.ts";
import { linear } from "../engine/ops/matmul.ts";
import { dropout } from "../engine/ops/dropout.ts";
import { reshape } from "../engine/ops/shape.ts";
import { lcg32 } from "../engine/random.ts";
import { readSafetensors } from "../formats/safetensors.ts";
import { exists, joinPath } from "../formats/files.ts";
import type { GPT2Inputs, GPT2LMHeadModel, GPT2Output } from "./gpt2.ts";
import { loadGPT2, savePretrained } from "./auto.ts";
import { matchWeights, saveParams, uploadParams } from "./weights.ts";

/** Output of {@linkcode CausalLMWithValueHead.forward}: the LM outputs plus values [B, T]. */
export interface ValueHeadOutput extends GPT2Output {
  /** State values per position, [B, T]. */
  values: Tensor;
}

/** GPT-2 plus TRL's value head. */
export class CausalLMWithValueHead {
  /** The language model. */
  readonly model: GPT2LMHeadModel;
  /** `v_head.summary.weight` and `v_head.summary.bias`. */
  readonly vHead: Map<string, Tensor>;
  /** Dropout before the head in training mode (TRL's summary_dropout_prob, default 0.1). */
  summaryDropout = 0.1;

  /** Wraps a model; without `vHead` a freshly initialised head (seeded). */
  constructor(model: GPT2LMHeadModel, vHead?: Map<string, Tensor>, seed = 0) {
    this.model = model;
    this.vHead = vHead ?? CausalLMWithValueHead.initHead(model.config.n_embd, seed);
  }

  /** nn.Linear's default init: U(−1/√C, 1/√C) for weight and bias, drawn from the seeded {@linkcode lcg32} stream. */
  static initHead(C: number, seed: number): Map<string, Tensor> {
    const uniform = lcg32(seed ^ 0x5bd1e995);
    const bound = 1 / Math.sqrt(C);
    const w = Float32Array.from({ length: C }, () => (2 * uniform() - 1) * bound);
    const b = Float32Array.of((2 * uniform() - 1) * bound);
    return uploadParams(
      new Map([
        ["v_head.summary.weight", { dtype: "f32", shape: [1, C], data: w }],
        ["v_head.summary.bias", { dtype: "f32", shape: [1], data: b }],
      ]),
    );
  }

  /** Loads a policy folder; uses `value_head.safetensors` when present, else a fresh head. */
  static async fromPretrained(dir: string, seed = 0): Promise<CausalLMWithValueHead> {
    const model = await loadGPT2(dir);
    const file = joinPath(dir, "value_head.safetensors");
    if (!(await exists(file))) return new CausalLMWithValueHead(model, undefined, seed);
    const C = model.config.n_embd;
    const host = matchWeights(
      { tensors: (await readSafetensors(file)).tensors, file },
      new Map([["v_head.summary.weight", [1, C]], ["v_head.summary.bias", [1]]]),
    );
    return new CausalLMWithValueHead(model, uploadParams(host));
  }

  /** Saves the model (HF format) and the value head beside it. */
  async savePretrained(dir: string): Promise<void> {
    await savePretrained(this.model, dir);
    await saveParams(`${dir}/value_head.safetensors`, this.vHead);
  }

  /** Training mode for both model and head. */
  train(flag = true): this {
    this.model.train(flag);
    return this;
  }

  /** Evaluation mode. */
  eval(): this {
    return this.train(false);
  }

  /** Model and head parameters. */
  parameters(): Tensor[] {
    return [...this.model.parameters(), ...this.vHead.values()];
  }

  /** Runs the model and the value head on the last hidden state. */
  forward(inputs: GPT2Inputs): ValueHeadOutput {
    const out = this.model.forward({ ...inputs, outputHidden: true });
    let h = out.hidden!;
    if (this.model.training && this.summaryDropout > 0) {
      h = dropout(h, this.summaryDropout, this.model.dropoutSeed++ >>> 0, true);
    }
    const v = linear(h, this.vHead.get("v_head.summary.weight")!, this.vHead.get("v_head.summary.bias")!, {
      weightLayout: "out_in",
    });
    const [B, T] = inputs.inputIds.shape;
    return { ...out, values: reshape(v, [B, T]) };
  }
}
