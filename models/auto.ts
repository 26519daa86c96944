/**
 * Auto-style loading and saving of Hugging Face model folders: the class is chosen from
 * `config.architectures` / `model_type`; weights from safetensors or `pytorch_model.bin`.
 * @module
 */

import { parseBertConfig, parseGPT2Config, readConfigJson, show } from "./config.ts";
import { matchWeights, readWeights, saveParams, uploadParams } from "./weights.ts";
import { GPT2LMHeadModel } from "./gpt2.ts";
import { BertForSequenceClassification } from "./bert.ts";
import { writeJsonAtomic } from "../formats/fs_atomic.ts";
import type { Tensor } from "../engine/tensor.ts";

/** Any model this library loads. */
export type PretrainedModel = GPT2LMHeadModel | BertForSequenceClassification;

const CAUSAL = ["GPT2LMHeadModel", "GPT2Model"];
const CLASSIFIERS = ["BertForSequenceClassification", "RobertaForSequenceClassification"];

/** Which class a config asks for (throws listing the supported ones). */
export function architectureOf(raw: Record<string, unknown>, file = "config.json"): "gpt2" | "bert" | "roberta" {
  const archs = Array.isArray(raw.architectures) ? raw.architectures.map(String) : [];
  const arch = archs[0];
  if (arch) {
    if (CAUSAL.includes(arch)) return "gpt2";
    if (arch === "BertForSequenceClassification") return "bert";
    if (arch === "RobertaForSequenceClassification") return "roberta";
    throw new Error(
      `${file}: architecture ${show(arch)} is not supported (supported: ${[...CAUSAL, ...CLASSIFIERS].join(", ")})`,
    );
  }
  const mt = raw.model_type;
  if (mt === "gpt2" || mt === "bert" || mt === "roberta") return mt;
  // Very old GPT-2 configs (e.g. GPT2-chitchat) carry neither architectures nor model_type.
  if (mt === undefined && typeof raw.n_embd === "number" && typeof raw.n_layer === "number") return "gpt2";
  throw new Error(`${file}: unsupported or missing model_type ${show(mt)} (supported: gpt2, bert, roberta)`);
}

/** Loads GPT-2 (causal LM) from a folder. */
export async function loadGPT2(dir: string): Promise<GPT2LMHeadModel> {
  const raw = await readConfigJson(dir);
  const file = `${dir}/config.json`;
  if (architectureOf(raw, file) !== "gpt2") throw new Error(`${file}: not a GPT-2 causal language model`);
  const config = parseGPT2Config(raw, file);
  const spec = GPT2LMHeadModel.paramSpec(config);
  const match = {
    prefix: "transformer.",
    // Causal-mask buffers of older checkpoints; the tied head when the config ties it.
    ignore: new RegExp(`\\.attn\\.(bias|masked_bias)$${config.tie_word_embeddings ? "|^lm_head\\.weight$" : ""}`),
  };
  // The spec goes to the reader too: a pytorch_model.bin's shapes are checked before its data is read.
  const host = matchWeights(await readWeights(dir, spec, match), spec, match);
  return new GPT2LMHeadModel(config, uploadParams(host));
}

/** Loads a BERT/RoBERTa sequence classifier from a folder. */
export async function loadSequenceClassifier(dir: string): Promise<BertForSequenceClassification> {
  const raw = await readConfigJson(dir);
  const file = `${dir}/config.json`;
  const arch = architectureOf(raw, file);
  if (arch === "gpt2") {
    throw new Error(`${file}: GPT-2 is not a sequence classifier (need ${CLASSIFIERS.join(" or ")})`);
  }
  const config = parseBertConfig({ ...raw, model_type: arch }, file);
  const spec = BertForSequenceClassification.paramSpec(config);
  const match = { ignore: /(embeddings\.position_ids|^cls\.|lm_head\.)/ };
  const host = matchWeights(await readWeights(dir, spec, match), spec, match);
  return new BertForSequenceClassification(config, uploadParams(host));
}

/** Loads whichever supported model a folder holds (by `config.architectures`). */
export async function fromPretrained(dir: string): Promise<PretrainedModel> {
  const raw = await readConfigJson(dir);
  return architectureOf(raw, `${dir}/config.json`) === "gpt2" ? await loadGPT2(dir) : await loadSequenceClassifier(dir);
}

/**
 * Writes `config.json` and `model.safetensors` (HF names, tied weights once, metadata
 * `{"format":"pt"}`), each atomically, so transformers' `from_pretrained` can load the folder.
 */
export async function savePretrained(model: PretrainedModel, dir: string): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  const c = model.config;
  const architectures = c.model_type === "gpt2"
    ? ["GPT2LMHeadModel"]
    : [c.model_type === "roberta" ? "RobertaForSequenceClassification" : "BertForSequenceClassification"];
  const params = new Map<string, Tensor>(
    [...model.params].filter(([n]) => n !== "lm_head.weight" || !("tie_word_embeddings" in c && c.tie_word_embeddings)),
  );
  await saveParams(`${dir}/model.safetensors`, params);
  await writeJsonAtomic(`${dir}/config.json`, { ...c, architectures });
}
