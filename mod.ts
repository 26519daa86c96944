/**
 * rlhf-webgpu: a WebGPU tensor engine for Deno with GPT-2 and BERT/RoBERTa models and PPO fine-tuning (RLHF) on
 * top — no Python, no CUDA. This entry point is the user API: the engine's start-up and tensors, the models with
 * their loaders, tokenizers and pipelines, generation, and TRL's PPO trainer with the whole RLHF run. The engine's
 * ops, optimisers and kernel knobs are at `@rlhf/webgpu/engine`, the model internals at `@rlhf/webgpu/models`, the
 * PPO math at `@rlhf/webgpu/ppo`; the programs are `@rlhf/webgpu/train` and `@rlhf/webgpu/cli`.
 *
 * ```ts
 * import { AutoTokenizer, generate, initEngine, loadGPT2 } from "./mod.ts";
 * await initEngine();
 * const model = (await loadGPT2("path/to/gpt2")).eval();
 * const tok = await AutoTokenizer.fromPretrained("path/to/gpt2");
 * const out = await generate(model, [tok.encode("Hello")], { maxNewTokens: 20, doSample: true, seed: 1 });
 * console.log(tok.decode(out.responses[0]));
 * ```
 * @module
 */

// Engine: start-up, tensors, autograd, precision, safetensors.
export {
  type Access,
  AdamW,
  type AdamWHyper,
  type Backend,
  type BackendName,
  backward,
  type BackwardOptions,
  type BaseHyper,
  type DawnModule,
  type DeviceHandle,
  type DeviceOptions,
  type DType,
  type FlatChunk,
  type FlatOptions,
  type FlatParameters,
  type FlatSlot,
  getMatmulPrecision,
  type GradNode,
  type GraphicsApi,
  initEngine,
  type Kernel,
  type KernelTime,
  loadSafetensors,
  type MatmulPrecision,
  type MatmulPrecisionStatus,
  matmulPrecisionStatus,
  noGrad,
  noGradAsync,
  type Optimizer,
  type OptimizerStateDict,
  type ParamGroup,
  type ParamState,
  type ParamStateData,
  type Profile,
  readAll,
  type Runtime,
  type RuntimeStats,
  saveSafetensors,
  setMatmulPrecision,
  startupLine,
  type Storage,
  Tensor,
  tensor,
  type TensorData,
  tidy,
  tidyAsync,
  type UpdateKernel,
} from "./engine/mod.ts";

// Models: GPT-2, BERT/RoBERTa classifiers, the value head, loaders, tokenizers, generation, pipelines.
export {
  AutoModelForCausalLM,
  AutoModelForSequenceClassification,
  AutoTokenizer,
  type BatchEncoding,
  type BertConfig,
  BertForSequenceClassification,
  type BertInputs,
  type BertOutput,
  CausalLMWithValueHead,
  type ChatMessage,
  type ChatTemplateOptions,
  type ClassificationResult,
  type ClassifierScores,
  classifyTexts,
  type DecodeOptions,
  type EncodeBatchOptions,
  type EncodedRow,
  type EncodeOptions,
  fromPretrained,
  generate,
  type GenerateOptions,
  type GenerateOutput,
  type GPT2Config,
  type GPT2Inputs,
  GPT2LMHeadModel,
  type GPT2Output,
  type KVCache,
  loadGPT2,
  loadSequenceClassifier,
  loadTokenizer,
  type ModelBase,
  type PaddingSide,
  type PaddingStrategy,
  pipeline,
  type PretrainedLoader,
  type PretrainedModel,
  type PromptFormat,
  promptFormat,
  savePretrained,
  type SpecialTokens,
  type TextClassificationPipeline,
  type TextGenerationOptions,
  type TextGenerationPipeline,
  type TextGenerationResult,
  type TextPiece,
  Tokenizer,
  type TokenizerSettings,
  type TruncationSide,
  type ValueHeadOutput,
} from "./models/mod.ts";

// LoRA adapters (peft's format): attach to a GPT-2 policy, save/load adapter folders, merge.
export {
  attachLora,
  baseModelView,
  loadLoraAdapter,
  loadLoraPolicy,
  LoraAdapter,
  type LoraConfig,
  type LoraOptions,
  saveLoraAdapter,
  saveMergedModel,
  saveMergedPolicy,
  trainableParameters,
} from "./models/mod.ts";

// PPO: TRL's classic trainer (configuration, host-side math, the fused loss).
export {
  type KLController,
  type KLControllerState,
  type KLPenaltyKind,
  type PPOConfig,
  ppoConfig,
  type PPOConfigInput,
  type PPOGenerateOptions,
  type PPORollout,
  type PPOStats,
  PPOTrainer,
  type PPOTrainerState,
  type Rows,
  type RunningMoments,
  type RunningMomentsState,
  type SeededRng,
} from "./ppo/mod.ts";

// The application: the whole RLHF run (generate → score → step, checkpoints, report).
export {
  loadCheckpoint,
  type LoadedCheckpoint,
  loadPrompts,
  type MetricsRow,
  parsePrompts,
  type PromptSet,
  type RLHFOptions,
  type RLHFResult,
  runRLHF,
  type RunState,
  type SkippedLine,
} from "./app/mod.ts";

// File formats: safetensors and PyTorch checkpoints on host memory.
export {
  type HostTensor,
  readSafetensors,
  type SafetensorsContents,
  SafetensorsError,
  type SafetensorsWriteDtype,
  type SafetensorsWriteTensor,
  TorchCheckpointError,
  writeSafetensors,
} from "./formats/mod.ts";
