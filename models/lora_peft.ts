/**
 * LoRA on a GPT-2 model and peft's file format. {@linkcode attachLora} freezes the base weights and adds an adapter;
 * {@linkcode baseModelView} is the same weights without it (PPO's reference, no copy). An adapter folder is what
 * peft's `save_pretrained` writes: `adapter_config.json` (peft_type "LORA", task_type "CAUSAL_LM", r, lora_alpha,
 * lora_dropout, target_modules, fan_in_fan_out true for GPT-2's Conv1D, bias "none", …) and
 * `adapter_model.safetensors` with keys `base_model.model.<layer>.lora_A.weight` [r, in] and `….lora_B.weight`
 * [out, r] (the adapter name removed). {@linkcode mergedLoraWeights} folds the update into the base weights:
 * W + (B·A)ᵀ·scaling for Conv1D weights stored [in, out] (peft's `merge_and_unload`).
 * @module
 */

import { writeJsonAtomic } from "../formats/fs_atomic.ts";
import { filesFor } from "../formats/files.ts";
import type { HostTensor } from "../formats/host_tensor.ts";
import { readSafetensors, writeHostTensors } from "../formats/safetensors.ts";
import { GPT2LMHeadModel } from "./gpt2.ts";
import { checkLoraConfig, GPT2_DEFAULT_LORA_TARGETS, LoraAdapter, type LoraConfig, loraParamSpec } from "./lora.ts";
import { downloadParams, matchWeights, saveParams, uploadParams } from "./weights.ts";

/** peft's file names. */
export const ADAPTER_CONFIG_FILE = "adapter_config.json";
/** The adapter weights file (safetensors) peft writes by default. */
export const ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors";
/** The prefix peft's PeftModelForCausalLM puts before the wrapped model's parameter names. */
export const PEFT_KEY_PREFIX = "base_model.model.";

/** Options of {@linkcode attachLora}: a config, with peft's defaults for what is left out. */
export type LoraOptions = Partial<LoraConfig> & { r: number };

/** peft's defaults (r has none here: it turns LoRA on): lora_alpha 8, lora_dropout 0, GPT-2's target c_attn. */
export function loraConfig(options: LoraOptions): LoraConfig {
  return checkLoraConfig({
    loraAlpha: 8,
    loraDropout: 0,
    targetModules: [...GPT2_DEFAULT_LORA_TARGETS],
    ...options,
  });
}

/**
 * Adds a LoRA adapter to `model` (fresh, seeded, or `adapter` when given) and freezes its base weights, as
 * `get_peft_model`: afterwards only the adapter's parameters require gradients. Returns the adapter.
 */
export function attachLora(model: GPT2LMHeadModel, config: LoraOptions | LoraAdapter, seed = 0): LoraAdapter {
  if (model.lora) throw new Error("attachLora: the model already has a LoRA adapter");
  const adapter = config instanceof LoraAdapter
    ? config
    : LoraAdapter.create(GPT2LMHeadModel.paramSpec(model.config), loraConfig(config), seed);
  const want = loraParamSpec(GPT2LMHeadModel.paramSpec(model.config), adapter.config);
  for (const [name, shape] of want) {
    const got = adapter.params.get(name);
    if (!got || got.shape.join() !== shape.join()) {
      throw new Error(
        `attachLora: adapter parameter ${name} must be [${shape}], got ${got ? `[${got.shape}]` : "none"}`,
      );
    }
  }
  for (const p of model.parameters()) p.requireGrad(false);
  model.lora = adapter;
  return adapter;
}

/**
 * The base model of a LoRA model: a model object sharing `model`'s parameter tensors (no copy, no GPU memory) without
 * the adapter, in eval mode — the reference model of PPO with peft (TRL runs it under `disable_adapter()`).
 */
export function baseModelView(model: GPT2LMHeadModel): GPT2LMHeadModel {
  return new GPT2LMHeadModel(model.config, model.params).eval();
}

/** The adapter_config.json object peft writes for `config` (inference_mode true, as peft's save_pretrained). */
export function adapterConfigJson(config: LoraConfig): Record<string, unknown> {
  return {
    alpha_pattern: {},
    base_model_name_or_path: config.baseModelNameOrPath ?? null,
    bias: "none",
    fan_in_fan_out: true,
    inference_mode: true,
    init_lora_weights: true,
    layers_pattern: null,
    layers_to_transform: null,
    lora_alpha: config.loraAlpha,
    lora_dropout: config.loraDropout,
    modules_to_save: null,
    peft_type: "LORA",
    r: config.r,
    rank_pattern: {},
    revision: null,
    target_modules: typeof config.targetModules === "string" ? config.targetModules : [...config.targetModules],
    task_type: "CAUSAL_LM",
    use_dora: false,
    use_rslora: config.useRslora ?? false,
  };
}

/** Writes `adapter_config.json` and `adapter_model.safetensors` (peft's key names) into `dir`. */
export async function saveLoraAdapter(adapter: LoraAdapter, dir: string): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  const named = new Map([...adapter.params].map(([name, t]) => [PEFT_KEY_PREFIX + name, t]));
  await saveParams(`${dir}/${ADAPTER_WEIGHTS_FILE}`, named);
  await writeJsonAtomic(`${dir}/${ADAPTER_CONFIG_FILE}`, adapterConfigJson(adapter.config));
}

/** Fields of adapter_config.json this implementation cannot honour unless they hold their default. */
const UNSUPPORTED_FIELDS: readonly [string, (v: unknown) => boolean][] = [
  ["bias", (v) => v === undefined || v === "none"],
  ["use_dora", (v) => v === undefined || v === false],
  ["modules_to_save", (v) => v === undefined || v === null || (Array.isArray(v) && v.length === 0)],
  ["layers_to_transform", (v) => v === undefined || v === null],
  ["rank_pattern", (v) => v === undefined || v === null || (typeof v === "object" && Object.keys(v).length === 0)],
  ["alpha_pattern", (v) => v === undefined || v === null || (typeof v === "object" && Object.keys(v).length === 0)],
];

/**
 * Parses an adapter_config.json object into a {@linkcode LoraConfig}; every error names `file` and the field.
 * `fan_in_fan_out: false` is accepted and treated as true, as peft does for GPT-2's Conv1D layers.
 */
export function parseAdapterConfig(raw: unknown, file: string): LoraConfig {
  if (!raw || typeof raw !== "object" || Array.isArray(raw)) throw new Error(`${file}: expected a JSON object`);
  const o = raw as Record<string, unknown>;
  if (o.peft_type !== "LORA") {
    throw new Error(`${file}: "peft_type" must be "LORA", got ${JSON.stringify(o.peft_type)}`);
  }
  if (o.task_type !== undefined && o.task_type !== null && o.task_type !== "CAUSAL_LM") {
    throw new Error(`${file}: "task_type" must be "CAUSAL_LM" for a GPT-2 policy, got ${JSON.stringify(o.task_type)}`);
  }
  for (const [field, ok] of UNSUPPORTED_FIELDS) {
    if (!ok(o[field])) throw new Error(`${file}: "${field}" ${JSON.stringify(o[field])} is not supported`);
  }
  if (o.use_rslora !== undefined && typeof o.use_rslora !== "boolean") {
    throw new Error(`${file}: "use_rslora" must be a boolean, got ${JSON.stringify(o.use_rslora)}`);
  }
  const targets = o.target_modules;
  return checkLoraConfig({
    r: o.r as number,
    loraAlpha: (o.lora_alpha ?? 8) as number,
    loraDropout: (o.lora_dropout ?? 0) as number,
    targetModules: (targets ?? undefined) as string[],
    useRslora: (o.use_rslora as boolean | undefined) ?? false,
    baseModelNameOrPath: typeof o.base_model_name_or_path === "string" ? o.base_model_name_or_path : null,
  }, file);
}

/** Reads and parses `dir/adapter_config.json`. */
export async function readAdapterConfig(dir: string): Promise<LoraConfig> {
  const file = `${dir}/${ADAPTER_CONFIG_FILE}`;
  let text: string;
  try {
    text = await filesFor(file).readText(file);
  } catch (e) {
    throw new Error(`${file}: cannot read (${(e as Error).message})`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new Error(`${file}: not valid JSON (${(e as Error).message})`);
  }
  return parseAdapterConfig(raw, file);
}

/**
 * Loads a peft LoRA adapter folder for `model` (not attached; see {@linkcode attachLora}): the config, then the
 * weights checked against the spec the config implies — one error listing missing, unexpected and wrongly shaped
 * keys, naming the file. Keys may carry peft's `base_model.model.` prefix or not.
 */
export async function loadLoraAdapter(model: GPT2LMHeadModel, dir: string): Promise<LoraAdapter> {
  const config = await readAdapterConfig(dir);
  const file = `${dir}/${ADAPTER_WEIGHTS_FILE}`;
  const spec = loraParamSpec(GPT2LMHeadModel.paramSpec(model.config), config);
  const { tensors } = await readSafetensors(file);
  const renamed = new Map([...tensors].map(([k, t]) => [k.startsWith(PEFT_KEY_PREFIX) ? k.slice(17) : k, t]));
  const host = matchWeights({ tensors: renamed, file }, spec);
  return new LoraAdapter(config, uploadParams(host));
}

/**
 * The merged weights of a LoRA model (peft's `merge_and_unload`), on the host: each adapted Conv1D weight W [in, out]
 * becomes W + scaling·(B·A)ᵀ (sums in float64, rounded to f32 once); every other parameter is copied.
 */
export async function mergedLoraWeights(model: GPT2LMHeadModel): Promise<Map<string, HostTensor>> {
  const adapter = model.lora;
  if (!adapter) throw new Error("mergedLoraWeights: the model has no LoRA adapter");
  const host = await downloadParams(model.params);
  const lora = await downloadParams(adapter.params);
  for (const layer of adapter.layers) {
    const w = host.get(layer + ".weight")!;
    const a = lora.get(layer + ".lora_A.weight")!, b = lora.get(layer + ".lora_B.weight")!;
    host.set(layer + ".weight", { ...w, data: mergeConv1D(w, a, b, adapter.scaling) });
  }
  return host;
}

/** W [in, out] + scaling·(B [out, r] · A [r, in])ᵀ, in float64 per element. */
function mergeConv1D(w: HostTensor, a: HostTensor, b: HostTensor, scaling: number): Float32Array {
  const [inF, outF] = w.shape, r = a.shape[0];
  const out = new Float32Array(w.data.length);
  for (let i = 0; i < inF; i++) {
    for (let o = 0; o < outF; o++) {
      let sum = 0;
      for (let k = 0; k < r; k++) sum += b.data[o * r + k] * a.data[k * inF + i];
      out[i * outF + o] = w.data[i * outF + o] + scaling * sum;
    }
  }
  return out;
}

/**
 * Writes the merged model as a Hugging Face GPT-2 folder (`config.json`, `model.safetensors`; the tied LM head once)
 * that loads without peft.
 */
export async function saveMergedModel(model: GPT2LMHeadModel, dir: string): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  const merged = await mergedLoraWeights(model);
  if (model.config.tie_word_embeddings) merged.delete("lm_head.weight");
  await writeHostTensors(`${dir}/model.safetensors`, merged, { metadata: { format: "pt" } });
  await writeJsonAtomic(`${dir}/config.json`, { ...model.config, architectures: ["GPT2LMHeadModel"] });
}
