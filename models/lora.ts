/**
 * LoRA adapters (peft's `LoraConfig` / `get_peft_model`) for GPT-2: each targeted Conv1D layer `name` gets
 * `name.lora_A.weight` [r, in] and `name.lora_B.weight` [out, r] (nn.Linear layouts, as peft stores them), and its
 * output becomes `x·W + b + B(A(dropout(x)))·scaling` with `scaling = lora_alpha / r` (`lora_alpha / √r` with
 * rsLoRA). A is initialised kaiming-uniform (a = √5, i.e. U(−1/√in, 1/√in)) and B as zeros, so a fresh adapter
 * changes nothing. The base weights are frozen (no gradients, no optimiser state); the adapter's parameters are flat
 * parameters of their own. With {@linkcode LoraAdapter.enabled} false (or through {@linkcode baseModelView}) the same
 * weights run without the adapter: PPO's reference model, with no second copy of the weights.
 * @module
 */

import type { Tensor } from "../engine/tensor.ts";
import { linear, type LinearActivation } from "../engine/ops/matmul.ts";
import { add, gelu, geluNew, mulScalar, relu } from "../engine/ops/elementwise.ts";
import { SeededRng } from "../engine/random.ts";
import type { HostTensor } from "../formats/host_tensor.ts";
import { uploadParams } from "./weights.ts";
import type { ParamSpec } from "./weights.ts";

/** GPT-2 module names peft targets by default (`TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING["gpt2"]`). */
export const GPT2_DEFAULT_LORA_TARGETS: readonly string[] = ["c_attn"];

/** A LoRA configuration (peft's `LoraConfig` fields, camel-cased). */
export interface LoraConfig {
  /** Rank r (≥ 1). */
  r: number;
  /** lora_alpha: the update is scaled by alpha / r. */
  loraAlpha: number;
  /** Dropout probability on the adapter's input, in training mode (0 ≤ p < 1). */
  loraDropout: number;
  /** Module names matched against the end of each layer name (`c_attn`, `attn.c_proj`, …), or one regex (full match). */
  targetModules: readonly string[] | string;
  /** rsLoRA: scale by alpha / √r instead of alpha / r. */
  useRslora?: boolean;
  /** `base_model_name_or_path` written to adapter_config.json. */
  baseModelNameOrPath?: string | null;
}

/** One adapted layer as its linear call needs it. */
export interface LoraModule {
  /** lora_A.weight [r, in]. */
  A: Tensor;
  /** lora_B.weight [out, r]. */
  B: Tensor;
  /** alpha / r (or alpha / √r). */
  scaling: number;
  /** Dropout probability on the input of A. */
  dropout: number;
}

/** Checks a LoRA config; `where` names its source in errors (a flag set or a file). */
export function checkLoraConfig(config: LoraConfig, where = "LoRA config"): LoraConfig {
  const fail = (field: string, want: string, got: unknown) => {
    throw new Error(`${where}: "${field}" must be ${want}, got ${JSON.stringify(got)}`);
  };
  if (!Number.isInteger(config.r) || config.r < 1) fail("r", "a positive integer", config.r);
  if (typeof config.loraAlpha !== "number" || !Number.isFinite(config.loraAlpha)) {
    fail("lora_alpha", "a finite number", config.loraAlpha);
  }
  const p = config.loraDropout;
  if (typeof p !== "number" || !(p >= 0 && p < 1)) fail("lora_dropout", "a number in [0, 1)", p);
  const t = config.targetModules;
  const okList = Array.isArray(t) && t.length > 0 && t.every((s) => typeof s === "string" && s.length > 0);
  if (!okList && !(typeof t === "string" && t.length > 0)) {
    fail("target_modules", "a non-empty list of module names or a regex string", t);
  }
  return config;
}

/** The scaling of a config: alpha / r, or alpha / √r with rsLoRA. */
export function loraScaling(config: LoraConfig): number {
  return config.useRslora ? config.loraAlpha / Math.sqrt(config.r) : config.loraAlpha / config.r;
}

/**
 * Whether layer `name` (e.g. `transformer.h.0.attn.c_attn`) is targeted, as peft decides: a regex string must match
 * the whole name; a list entry must equal the name or be a suffix after a dot.
 */
export function isLoraTarget(name: string, targets: readonly string[] | string): boolean {
  if (typeof targets === "string") return new RegExp(`^(?:${targets})$`).test(name);
  return targets.some((t) => name === t || name.endsWith("." + t));
}

/**
 * The adapter's parameter spec for a model spec: for each targeted 2-D `.weight` of a linear layer (Conv1D layout
 * [in, out], biases beside them), `lora_A.weight` [r, in] and `lora_B.weight` [out, r], by layer order. Throws when
 * nothing matches.
 */
export function loraParamSpec(modelSpec: ParamSpec, config: LoraConfig): ParamSpec {
  const spec: ParamSpec = new Map();
  for (const [name, shape] of modelSpec) {
    if (!name.endsWith(".weight") || shape.length !== 2) continue;
    const layer = name.slice(0, -".weight".length);
    if (!modelSpec.has(layer + ".bias") || !isLoraTarget(layer, config.targetModules)) continue;
    const [inF, outF] = shape;
    spec.set(`${layer}.lora_A.weight`, [config.r, inF]).set(`${layer}.lora_B.weight`, [outF, config.r]);
  }
  if (spec.size === 0) {
    throw new Error(
      `LoRA: target_modules ${JSON.stringify(config.targetModules)} match no linear layer of the model ` +
        "(GPT-2's are c_attn, c_proj, c_fc)",
    );
  }
  return spec;
}

/** peft's default initialisation: A ~ kaiming_uniform(a=√5) = U(−1/√in, 1/√in) (seeded), B = 0. */
export function initLoraWeights(spec: ParamSpec, seed: number): Map<string, HostTensor> {
  const rng = new SeededRng(seed >>> 0);
  const out = new Map<string, HostTensor>();
  for (const [name, shape] of spec) {
    const data = new Float32Array(shape[0] * shape[1]);
    if (name.endsWith(".lora_A.weight")) {
      const bound = 1 / Math.sqrt(shape[1]);
      for (let i = 0; i < data.length; i++) data[i] = (2 * rng.next() - 1) * bound;
    }
    out.set(name, { dtype: "f32", shape: [...shape], data });
  }
  return out;
}

/** A LoRA adapter: its config and its A/B parameters by `<layer>.lora_A.weight` / `<layer>.lora_B.weight`. */
export class LoraAdapter {
  /** The checked config. */
  readonly config: LoraConfig;
  /** The adapter's parameters (flat, requiring grad), in layer order. */
  readonly params: Map<string, Tensor>;
  /** When false, layers run on the base weights alone (peft's `disable_adapter()`). */
  enabled = true;

  /** Wraps a config and its uploaded parameters. */
  constructor(config: LoraConfig, params: Map<string, Tensor>) {
    this.config = checkLoraConfig(config);
    this.params = params;
  }

  /** A freshly initialised adapter for a model with parameter spec `modelSpec` (see {@linkcode initLoraWeights}). */
  static create(modelSpec: ParamSpec, config: LoraConfig, seed = 0): LoraAdapter {
    checkLoraConfig(config);
    return new LoraAdapter(config, uploadParams(initLoraWeights(loraParamSpec(modelSpec, config), seed)));
  }

  /** alpha / r (or alpha / √r with rsLoRA). */
  get scaling(): number {
    return loraScaling(this.config);
  }

  /** The adapted layers' names. */
  get layers(): string[] {
    return [...this.params.keys()].filter((n) => n.endsWith(".lora_A.weight")).map((n) => n.slice(0, -14));
  }

  /** The trainable parameters. */
  parameters(): Tensor[] {
    return [...this.params.values()];
  }

  /** Layer `name`'s adapter when the adapter is enabled and targets it, else null. */
  module(name: string): LoraModule | null {
    if (!this.enabled) return null;
    const A = this.params.get(name + ".lora_A.weight"), B = this.params.get(name + ".lora_B.weight");
    if (!A || !B) return null;
    return { A, B, scaling: this.scaling, dropout: this.config.loraDropout };
  }

  /** Runs `fn` with the adapter disabled (restored afterwards, also on errors). */
  async withDisabled<T>(fn: () => Promise<T> | T): Promise<T> {
    const was = this.enabled;
    this.enabled = false;
    try {
      return await fn();
    } finally {
      this.enabled = was;
    }
  }

  /** Releases the adapter's parameters. */
  dispose(): void {
    for (const p of this.params.values()) p.dispose();
  }
}

/** The base layer's options in {@linkcode loraLinear} (those of the engine's `linear`). */
export interface LoraLinearOptions {
  /** "in_out": weight [in, out] (GPT-2's Conv1D); "out_in": [out, in]. */
  weightLayout?: "in_out" | "out_in";
  /** Activation of the layer's output (after the LoRA update is added). */
  activation?: LinearActivation;
  /** Added last. */
  residual?: Tensor | null;
}

/**
 * `act(x·W + b + B(A(dropout(x)))·scaling) + residual`: the base product keeps its fused epilogue where that keeps
 * peft's order (without an activation the residual is added in the base product's store, and the low-rank delta in
 * the second thin product's store); with an activation the delta goes in before it, as peft adds it to the wrapped
 * layer's output. `drop` is the model's dropout (the identity outside training mode).
 */
export function loraLinear(
  x: Tensor,
  weight: Tensor,
  bias: Tensor | null,
  lora: LoraModule,
  options: LoraLinearOptions,
  drop: (x: Tensor, p: number) => Tensor,
): Tensor {
  const { activation, residual, weightLayout } = options;
  const down = linear(drop(x, lora.dropout), lora.A, null, { weightLayout: "out_in" });
  const scaled = lora.scaling === 1 ? down : mulScalar(down, lora.scaling);
  if (!activation) {
    const base = linear(x, weight, bias, { weightLayout, residual });
    return linear(scaled, lora.B, null, { weightLayout: "out_in", residual: base });
  }
  const pre = linear(scaled, lora.B, null, {
    weightLayout: "out_in",
    residual: linear(x, weight, bias, { weightLayout }),
  });
  const out = activation === "gelu" ? gelu(pre) : activation === "gelu_new" ? geluNew(pre) : relu(pre);
  return residual ? add(out, residual) : out;
}
