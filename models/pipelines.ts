/**
 * transformers-style entry points over the loaders: `AutoModelForCausalLM`, `AutoModelForSequenceClassification`
 * and `AutoTokenizer` with `fromPretrained(dir)`, and {@linkcode pipeline} for `text-generation` and
 * `sentiment-analysis` / `text-classification` (the seed scores replies with a sentiment pipeline). Folders are
 * Hugging Face model folders on disk (no hub access). Options are camelCase, as everywhere in the TypeScript API.
 *
 * ```ts
 * await initEngine();
 * const classify = await pipeline("sentiment-analysis", "models/roberta-sentiment");
 * console.log(await classify("这家店很好")); // [{ label: "positive", score: 0.93 }]
 * const generate = await pipeline("text-generation", "models/gpt2-chinese");
 * console.log(await generate("今天", { maxNewTokens: 20, doSample: true, seed: 1 })); // [{ generatedText: "今天…" }]
 * ```
 * @module
 */

import type { BertForSequenceClassification } from "./bert.ts";
import type { GPT2LMHeadModel } from "./gpt2.ts";
import { loadGPT2, loadSequenceClassifier } from "./auto.ts";
import { generate, type GenerateOptions } from "./generate.ts";
import { loadTokenizer, type Tokenizer } from "./tokenizer/mod.ts";
import { classifyTexts, promptFormat } from "./text.ts";

/** A loader of one kind of thing from a Hugging Face model folder. */
export interface PretrainedLoader<T> {
  /** Loads it from `dir`. */
  fromPretrained(dir: string): Promise<T>;
}

/** `AutoModelForCausalLM.fromPretrained(dir)`: a GPT-2 causal LM from a model folder (eval mode). */
export const AutoModelForCausalLM: PretrainedLoader<GPT2LMHeadModel> = {
  /** Loads the causal LM of `dir` (config.json + safetensors or pytorch_model.bin). */
  async fromPretrained(dir: string): Promise<GPT2LMHeadModel> {
    return (await loadGPT2(dir)).eval();
  },
};

/** `AutoModelForSequenceClassification.fromPretrained(dir)`: a BERT/RoBERTa classifier from a model folder. */
export const AutoModelForSequenceClassification: PretrainedLoader<BertForSequenceClassification> = {
  /** Loads the sequence classifier of `dir` (eval mode). */
  async fromPretrained(dir: string): Promise<BertForSequenceClassification> {
    return (await loadSequenceClassifier(dir)).eval();
  },
};

/** `AutoTokenizer.fromPretrained(dir)`: the tokenizer of a model folder (tokenizer.json, vocab.txt or BPE files). */
export const AutoTokenizer: PretrainedLoader<Tokenizer> = {
  /** Loads the tokenizer of `dir`. */
  async fromPretrained(dir: string): Promise<Tokenizer> {
    return await loadTokenizer(dir);
  },
};

/** One reply of the text-generation pipeline. */
export interface TextGenerationResult {
  /** The prompt followed by the generated text (`returnFullText: false`: the generated text alone). */
  generatedText: string;
}

/** Options of a text-generation call: {@linkcode GenerateOptions} plus how much text to return. */
export type TextGenerationOptions = Partial<GenerateOptions> & {
  /** Include the prompt in `generatedText` (default true, as transformers). */
  returnFullText?: boolean;
};

/** The text-generation pipeline: one prompt or several, one reply each. */
export interface TextGenerationPipeline {
  /** Generates a reply to each prompt (default 50 new tokens, greedy unless `doSample`). */
  (prompts: string | readonly string[], options?: TextGenerationOptions): Promise<TextGenerationResult[]>;
  /** The model. */
  model: GPT2LMHeadModel;
  /** The tokenizer. */
  tokenizer: Tokenizer;
  /** Frees the model's GPU memory. */
  dispose(): void;
}

/** A label and its probability. */
export interface ClassificationResult {
  /** The label's name (config.json's id2label). */
  label: string;
  /** Its probability (softmax of the logits). */
  score: number;
}

/** The text-classification pipeline: the top label per text, or every label sorted with `topK: null`. */
export interface TextClassificationPipeline {
  /** Classifies each text: one result per text (top label), or with `topK`, that many labels per text. */
  (texts: string | readonly string[], options?: { topK?: number | null }): Promise<
    ClassificationResult[] | ClassificationResult[][]
  >;
  /** The model. */
  model: BertForSequenceClassification;
  /** The tokenizer. */
  tokenizer: Tokenizer;
  /** Frees the model's GPU memory. */
  dispose(): void;
}

/** Creates a text-generation pipeline for a causal LM folder. */
export function pipeline(task: "text-generation", dir: string): Promise<TextGenerationPipeline>;
/** Creates a classification pipeline for a sequence-classifier folder. */
export function pipeline(
  task: "sentiment-analysis" | "text-classification",
  dir: string,
): Promise<TextClassificationPipeline>;
/**
 * A transformers-style pipeline over a model folder: `"text-generation"` (GPT-2) or `"sentiment-analysis"` /
 * `"text-classification"` (BERT/RoBERTa). Needs `await initEngine()` first.
 */
export async function pipeline(
  task: "text-generation" | "sentiment-analysis" | "text-classification",
  dir: string,
): Promise<TextGenerationPipeline | TextClassificationPipeline> {
  if (task === "text-generation") {
    const [model, tokenizer] = await Promise.all([AutoModelForCausalLM.fromPretrained(dir), loadTokenizer(dir)]);
    const fmt = promptFormat(tokenizer, model.config); // BERT vocabularies: [CLS] prompt [SEP], as their tokenizer adds
    const run = async (prompts: string | readonly string[], options: TextGenerationOptions = {}) => {
      const list = typeof prompts === "string" ? [prompts] : [...prompts];
      const { returnFullText = true, ...gen } = options;
      const out = await generate(model, list.map((p) => fmt.encode(p)), {
        maxNewTokens: 50,
        ...(fmt.eosTokenId !== null ? { eosTokenId: fmt.eosTokenId } : {}),
        padTokenId: fmt.padTokenId,
        ...gen,
      });
      return out.responses.map((r, i) => {
        const reply = fmt.decode(r);
        return { generatedText: returnFullText ? list[i] + reply : reply };
      });
    };
    return Object.assign(run, { model, tokenizer, dispose: () => model.parameters().forEach((p) => p.dispose()) });
  }
  if (task !== "sentiment-analysis" && task !== "text-classification") {
    throw new Error(`pipeline: unknown task "${task}" (text-generation, sentiment-analysis, text-classification)`);
  }
  const [model, tokenizer] = await Promise.all([
    AutoModelForSequenceClassification.fromPretrained(dir),
    loadTokenizer(dir),
  ]);
  const labels = model.labels;
  const run = async (texts: string | readonly string[], options: { topK?: number | null } = {}) => {
    const list = typeof texts === "string" ? [texts] : [...texts];
    const { probabilities } = await classifyTexts(model, tokenizer, list);
    const ranked = probabilities.map((p) =>
      p.map((score, i) => ({ label: labels[i], score })).sort((a, b) => b.score - a.score)
    );
    if (options.topK === undefined) return ranked.map((r) => r[0]);
    return ranked.map((r) => options.topK === null ? r : r.slice(0, Math.max(1, options.topK!)));
  };
  return Object.assign(run, { model, tokenizer, dispose: () => model.parameters().forEach((p) => p.dispose()) });
}
