/**
 * What every model class shares: its config, its parameters by Hugging Face name, training/eval
 * mode (dropout) and the dropout seed counter. Parameters are flat (engine/flat.ts): `uploadParams` allocates
 * them as views of one buffer.
 * @module
 */

import type { Tensor } from "../engine/tensor.ts";
import { dropout } from "../engine/ops/dropout.ts";

/** Base of the model classes (GPT-2, BERT/RoBERTa). */
export abstract class ModelBase<C> {
  /** Validated config. */
  readonly config: C;
  /** Parameters by Hugging Face name. */
  readonly params: Map<string, Tensor>;
  /** Training mode turns dropout on. */
  training = false;
  /** Dropout seed; advanced on every dropout call in training mode so masks differ between calls. */
  dropoutSeed = 0;

  /** Wraps a config and its parameters. */
  constructor(config: C, params: Map<string, Tensor>) {
    this.config = config;
    this.params = params;
  }

  /** Name used in error messages. */
  protected abstract get label(): string;

  /** Sets training mode (dropout on). */
  train(flag = true): this {
    this.training = flag;
    return this;
  }

  /** Sets evaluation mode (dropout off). */
  eval(): this {
    return this.train(false);
  }

  /** All trainable parameters (each once). */
  parameters(): Tensor[] {
    return [...this.params.values()];
  }

  /** The parameter called `name` (throws naming the model when it is missing). */
  protected param(name: string): Tensor {
    const t = this.params.get(name);
    if (!t) throw new Error(`${this.label}: parameter ${name} is missing`);
    return t;
  }

  /** Dropout with probability `p` in training mode; the identity otherwise. */
  protected drop(x: Tensor, p: number): Tensor {
    if (!this.training || p === 0) return x;
    return dropout(x, p, this.dropoutSeed++ >>> 0, true);
  }
}
