/** Shared by the LoRA tests. */
import { randArray } from "./helpers.ts";
import { GPT2LMHeadModel } from "../models/gpt2.ts";
import { initLoraWeights, LoraAdapter, type LoraConfig, loraParamSpec } from "../models/lora.ts";
import { uploadParams } from "../models/weights.ts";

/** An adapter for `model` whose B is random too (a fresh one has B = 0 and changes nothing). */
export function randomAdapter(model: GPT2LMHeadModel, config: LoraConfig, seed: number): LoraAdapter {
  const host = initLoraWeights(loraParamSpec(GPT2LMHeadModel.paramSpec(model.config), config), seed);
  let k = 0;
  for (const [name, t] of host) {
    if (name.endsWith(".lora_B.weight")) t.data = Float32Array.from(randArray(t.data.length, seed + ++k, -0.3, 0.3));
  }
  return new LoraAdapter(config, uploadParams(host));
}
