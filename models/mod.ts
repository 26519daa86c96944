/**
 * Hugging Face models on the engine: GPT-2 (causal LM, generation, value head) and BERT/RoBERTa
 * sequence classifiers, their checkpoint loaders and tokenizers.
 * @module
 */

export * from "./config.ts";
export * from "./gpt2.ts";
export * from "./bert.ts";
export * from "./value_head.ts";
export * from "./lora.ts";
export * from "./lora_peft.ts";
export * from "./lora_policy.ts";
export * from "./generate.ts";
export * from "./auto.ts";
export {
  downloadParams,
  type LoadedWeights,
  matchWeights,
  type ParamSpec,
  randomParams,
  readWeights,
  saveParams,
  uploadParams,
} from "./weights.ts";
export * from "./tokenizer/mod.ts";
export * from "./text.ts";
export * from "./module.ts";
export * from "./pipelines.ts";
