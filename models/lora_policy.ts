/**
 * A PPO policy (GPT-2 with TRL's value head) whose model carries a LoRA adapter: what trains (the adapter and the
 * head), how it is saved (peft's adapter files plus `value_head.safetensors`; TRL keeps the head of a peft model in
 * the adapter folder too, as `v_head.*` tensors) and loaded (the base folder, then the adapter folder), and its
 * release. Policies without an adapter behave as before.
 * @module
 */

import type { Tensor } from "../engine/tensor.ts";
import { readSafetensors } from "../formats/safetensors.ts";
import { exists } from "../formats/files.ts";
import { loadGPT2 } from "./auto.ts";
import { CausalLMWithValueHead } from "./value_head.ts";
import {
  ADAPTER_CONFIG_FILE,
  attachLora,
  loadLoraAdapter,
  type LoraOptions,
  saveLoraAdapter,
  saveMergedModel,
} from "./lora_peft.ts";
import { matchWeights, saveParams, uploadParams } from "./weights.ts";

const VALUE_HEAD_FILE = "value_head.safetensors";

/** The parameters an optimiser should update: the adapter's and the head's with LoRA, else all of the policy's. */
export function trainableParameters(policy: CausalLMWithValueHead): Tensor[] {
  const lora = policy.model.lora;
  return lora ? [...lora.parameters(), ...policy.vHead.values()] : policy.parameters();
}

/** Every GPU tensor a policy holds: the model's, its adapter's and the head's. */
export function policyTensors(policy: CausalLMWithValueHead): Tensor[] {
  return [...policy.model.parameters(), ...(policy.model.lora?.parameters() ?? []), ...policy.vHead.values()];
}

/** Releases every tensor of {@linkcode policyTensors}. */
export function disposePolicy(policy: CausalLMWithValueHead): void {
  for (const t of policyTensors(policy)) t.dispose();
}

/**
 * Saves a policy into `dir`: with a LoRA adapter the adapter in peft's format (adapter_config.json,
 * adapter_model.safetensors) and the value head, the frozen base weights not at all; otherwise the whole model
 * ({@linkcode CausalLMWithValueHead.savePretrained}).
 */
export async function savePolicy(policy: CausalLMWithValueHead, dir: string): Promise<void> {
  const lora = policy.model.lora;
  if (!lora) return await policy.savePretrained(dir);
  await saveLoraAdapter(lora, dir);
  await saveParams(`${dir}/${VALUE_HEAD_FILE}`, policy.vHead);
}

/** True when `dir` holds a peft adapter (adapter_config.json). */
export async function isAdapterFolder(dir: string): Promise<boolean> {
  return await exists(`${dir}/${ADAPTER_CONFIG_FILE}`, "file");
}

/**
 * A LoRA policy: the base model from `baseDir` (frozen), and the adapter and value head from `adapterDir` when given
 * (a checkpoint of a LoRA run, or any peft adapter folder; a missing value head is initialised), else a fresh adapter
 * with `options` and a fresh head. Both fresh parts are seeded with `seed`.
 */
export async function loadLoraPolicy(
  baseDir: string,
  adapterDir: string | null,
  options: LoraOptions,
  seed = 0,
): Promise<CausalLMWithValueHead> {
  const model = await loadGPT2(baseDir);
  if (!adapterDir) {
    attachLora(model, { baseModelNameOrPath: baseDir, ...options }, seed);
    return new CausalLMWithValueHead(model, undefined, seed);
  }
  if (!(await isAdapterFolder(adapterDir))) {
    throw new Error(`${adapterDir}: no ${ADAPTER_CONFIG_FILE} (not a LoRA adapter folder)`);
  }
  attachLora(model, await loadLoraAdapter(model, adapterDir));
  return new CausalLMWithValueHead(model, await readValueHead(adapterDir, model.config.n_embd), seed);
}

/**
 * A run's policy: from `checkpointDir` when resuming, else from `policyDir`; with `lora`, the base from `policyDir`
 * plus the checkpoint's adapter (or a fresh one). A LoRA checkpoint without `lora`, or the reverse, is refused.
 */
export async function loadRunPolicy(
  policyDir: string,
  checkpointDir: string | null,
  lora: LoraOptions | undefined,
  seed: number,
): Promise<CausalLMWithValueHead> {
  const adapterCheckpoint = checkpointDir !== null && await isAdapterFolder(checkpointDir);
  if (checkpointDir !== null && adapterCheckpoint !== (lora !== undefined)) {
    const why = adapterCheckpoint
      ? "a LoRA checkpoint: resume it with LoRA on (--lora-r)"
      : "a full-model checkpoint: resume it without LoRA";
    throw new Error(`${checkpointDir}: ${why}`);
  }
  if (lora) return await loadLoraPolicy(policyDir, checkpointDir, lora, seed);
  return await CausalLMWithValueHead.fromPretrained(checkpointDir ?? policyDir, seed);
}

/** `dir/value_head.safetensors` for hidden size C, uploaded; undefined when the folder has none. */
async function readValueHead(dir: string, C: number): Promise<Map<string, Tensor> | undefined> {
  const file = `${dir}/${VALUE_HEAD_FILE}`;
  if (!await exists(file, "file")) return undefined;
  const spec = new Map([["v_head.summary.weight", [1, C]], ["v_head.summary.bias", [1]]]);
  return uploadParams(matchWeights({ tensors: (await readSafetensors(file)).tensors, file }, spec));
}

/**
 * Writes the policy's model with its adapter merged (peft's `merge_and_unload`) as a complete Hugging Face folder:
 * config.json, model.safetensors and, from `sideFilesFrom`, the listed tokenizer and generation files it has.
 */
export async function saveMergedPolicy(
  policy: CausalLMWithValueHead,
  dir: string,
  sideFilesFrom?: string,
  sideFiles: readonly string[] = [],
): Promise<void> {
  await saveMergedModel(policy.model, dir);
  if (!sideFilesFrom) return;
  for (const f of sideFiles) {
    if (await exists(`${sideFilesFrom}/${f}`, "file")) await Deno.copyFile(`${sideFilesFrom}/${f}`, `${dir}/${f}`);
  }
}
