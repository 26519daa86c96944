/**
 * The layer calls GPT-2 and BERT share, by Hugging Face parameter name: linear layers (with fused
 * epilogues), residual linear layers (dropout, then the residual add, fused into one kernel when
 * dropout is the identity), layer norms, and attention-dropout options with their seeds.
 * @module
 */

import type { Tensor } from "../engine/tensor.ts";
import { add } from "../engine/ops/elementwise.ts";
import { linear, type LinearOptions } from "../engine/ops/matmul.ts";
import { layerNorm } from "../engine/ops/norm.ts";
import type { ModelBase } from "./module.ts";
import { loraLinear, type LoraModule } from "./lora.ts";

/** How a model family stores its linear weights and adds its residuals. */
export interface LayerStyle {
  /** "in_out": weights [in, out] (GPT-2's Conv1D); "out_in": [out, in] (nn.Linear). */
  weightLayout: "in_out" | "out_in";
  /**
   * Unfused residual add as `add(residual, out)` (true, GPT-2) or `add(out, residual)` (false, BERT),
   * as in each Hugging Face model; the operand order fixes the order in which backward sums gradients.
   */
  residualFirst: boolean;
}

/** Dropout options of one attention call. */
export interface AttentionDropout {
  /** Probability (0 outside training mode). */
  dropoutP: number;
  /** Mask seed (a fresh one from the model's counter when dropout is on, else 0). */
  seed: number;
}

/** The model's own parameter lookup and dropout (protected members of {@linkcode ModelBase}). */
export interface LayerAccess {
  /** The parameter called `name` (throws naming the model when it is missing). */
  param(name: string): Tensor;
  /** Dropout with probability `p` in training mode (advancing the model's seed); the identity otherwise. */
  drop(x: Tensor, p: number): Tensor;
  /** The LoRA adapter of layer `name`, when the model has an enabled one targeting it. */
  lora?(name: string): LoraModule | null;
}

/** A model's layers, called by parameter name (`name.weight`, `name.bias`). */
export class Layers {
  /** The model: its training mode and dropout seed counter. */
  readonly model: ModelBase<unknown>;
  /** Its parameters and dropout. */
  readonly access: LayerAccess;
  /** Its weight layout and residual order. */
  readonly style: LayerStyle;

  /** Layers of `model`, reached through `access`, in the given style. */
  constructor(model: ModelBase<unknown>, access: LayerAccess, style: LayerStyle) {
    this.model = model;
    this.access = access;
    this.style = style;
  }

  /** x·W + b of layer `name` (plus its LoRA update, if adapted), with the given fused epilogue (activation, residual). */
  linear(name: string, x: Tensor, options: LinearOptions = {}): Tensor {
    const weight = this.access.param(name + ".weight"), bias = this.access.param(name + ".bias");
    const full = { weightLayout: this.style.weightLayout, ...options };
    const lora = this.access.lora?.(name) ?? null;
    if (lora) return loraLinear(x, weight, bias, lora, full, (t, p) => this.access.drop(t, p));
    return linear(x, weight, bias, full);
  }

  /** residual + dropout(x·W + b): one kernel (residual added in the store) when dropout is the identity. */
  residualLinear(name: string, x: Tensor, residual: Tensor, dropoutP: number): Tensor {
    if (!this.model.training || dropoutP === 0) return this.linear(name, x, { residual });
    const out = this.access.drop(this.linear(name, x), dropoutP);
    return this.style.residualFirst ? add(residual, out) : add(out, residual);
  }

  /** Layer norm `name` of x. */
  layerNorm(name: string, x: Tensor, eps: number): Tensor {
    return layerNorm(x, this.access.param(name + ".weight"), this.access.param(name + ".bias"), eps);
  }

  /** Attention-dropout options for probability `p`: a fresh seed in training mode, none drawn otherwise. */
  attentionDropout(p: number): AttentionDropout {
    const active = this.model.training && p > 0;
    return { dropoutP: active ? p : 0, seed: active ? this.model.dropoutSeed++ >>> 0 : 0 };
  }
}
