/**
 * Autoregressive generation for GPT-2 with a KV cache. The token loop never reads back from the
 * GPU: sampling (suppressed tokens, greedy, temperature, top-k, top-p), EOS tracking and padding of finished rows
 * run in `shaders/sample.wgsl`; the tokens come back in one readback at the end (plus an
 * optional early-stop check every few steps).
 * @module
 */

import { empty, keep, noGrad, runtime, type Tensor, tensor, tidy } from "../engine/tensor.ts";
import { SAMPLE } from "../engine/kernels/sampling.ts";
import { zeros } from "../engine/ops/elementwise.ts";
import { reshape, slice } from "../engine/ops/shape.ts";
import { matmul } from "../engine/ops/matmul.ts";
import { type GPT2LMHeadModel, type KVCache, positionIdsFromMask } from "./gpt2.ts";

/** Options for {@linkcode generate} (names follow transformers' GenerationConfig). */
export interface GenerateOptions {
  /** Tokens to generate at most (required). */
  maxNewTokens: number;
  /** EOS may not be produced before this many new tokens (default 0). */
  minNewTokens?: number;
  /** Sample (true) or take the argmax (false, default). */
  doSample?: boolean;
  /** Softmax temperature for sampling (default 1). */
  temperature?: number;
  /** Keep only the k most likely tokens (0 = off, default). */
  topK?: number;
  /** Nucleus sampling mass (1 = off, default). */
  topP?: number;
  /** Stop token (default: the model config's eos_token_id). */
  eosTokenId?: number | null;
  /** Token written after EOS and used for left padding (default: pad_token_id, else EOS, else 0). */
  padTokenId?: number;
  /** Seed for reproducible sampling (default 0). */
  seed?: number;
  /** Check every N steps whether all rows finished (one readback each; 0 = never, default 16). */
  stopCheckInterval?: number;
  /**
   * Token ids never generated (transformers' `suppress_tokens`, or single-token `bad_words_ids`): their logits are
   * set to −∞ on the GPU before temperature, top-k/top-p and sampling. Default none.
   */
  suppressTokens?: readonly number[];
}

/** Result of {@linkcode generate}. */
export interface GenerateOutput {
  /** New tokens per row, cut after the first EOS (EOS included). */
  responses: number[][];
  /** The raw [B, steps] block of new tokens (pad after EOS). */
  tokens: number[][];
  /** Left-padded prompt ids [B, Tp] that were fed to the model. */
  promptIds: number[][];
  /** Attention mask of the left-padded prompts. */
  promptMask: number[][];
  /** Generation steps actually run. */
  steps: number;
}

/**
 * GPU token selection state for a batch: which rows finished, the generated block and the next
 * input ids. {@linkcode TokenSampler.step} records one sampling dispatch (no readback).
 */
export class TokenSampler {
  /** i32 [B]: 1 once a row produced EOS. */
  readonly finished: Tensor;
  /** i32 [B, maxNew]: generated tokens (pad after EOS). */
  readonly tokens: Tensor;
  /** i32 [B, 1]: the tokens chosen by the last step. */
  readonly nextIds: Tensor;
  /** i32 bit set of the suppressed tokens (one word when none). */
  readonly suppress: Tensor;
  #suppressWords: number;

  /** Allocates the state buffers for `batch` rows and `maxNew` columns. */
  constructor(
    /** Batch rows. */
    readonly batch: number,
    /** Columns of `tokens`. */
    readonly maxNew: number,
    /** Vocabulary size (logits per row). */
    readonly vocab: number,
    /** Sampling options (eos/pad resolved by the caller; -1 = none). */
    readonly options: Omit<GenerateOptions, "maxNewTokens">,
  ) {
    this.finished = keep(zeros([batch], "i32"));
    this.tokens = keep(zeros([batch, maxNew], "i32"));
    this.nextIds = keep(empty([batch, 1], "i32"));
    const ids = options.suppressTokens ?? [];
    this.#suppressWords = ids.length ? Math.ceil(vocab / 32) : 0;
    const bits = new Int32Array(Math.max(1, this.#suppressWords));
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= vocab) {
        throw new Error(`generate: suppressTokens has ${id}, outside the vocabulary (${vocab})`);
      }
      bits[id >> 5] |= 1 << (id & 31);
    }
    if (new Set(ids).size >= vocab) throw new Error(`generate: suppressTokens covers the whole vocabulary (${vocab})`);
    this.suppress = keep(tensor(bits, [bits.length], "i32"));
  }

  /** Chooses the tokens of column `step` from `logits` [B, vocab]. */
  step(logits: Tensor, step: number): void {
    const o = this.options;
    if (logits.shape.join() !== [this.batch, this.vocab].join()) {
      throw new Error(`TokenSampler: logits must be [${this.batch}, ${this.vocab}], got [${logits.shape}]`);
    }
    const params = {
      vocab: this.vocab,
      step,
      max_new: this.maxNew,
      greedy: o.doSample ? 0 : 1,
      top_k: o.topK ?? 0,
      eos: o.eosTokenId ?? -1,
      pad: o.padTokenId ?? 0,
      min_new: o.minNewTokens ?? 0,
      seed: (o.seed ?? 0) >>> 0,
      temperature: o.temperature ?? 1,
      top_p: o.topP ?? 1,
      suppress_words: this.#suppressWords,
    };
    const state = { finished: this.finished.storage, tokens: this.tokens.storage, next_ids: this.nextIds.storage };
    runtime().run(SAMPLE, params, { logits: logits.storage, ...state, suppress: this.suppress.storage }, [this.batch]);
  }

  /** Frees the GPU buffers. */
  dispose(): void {
    for (const t of [this.finished, this.tokens, this.nextIds, this.suppress]) t.dispose();
  }
}

/** Left-pads token-id rows to one length, returning ids and attention mask. */
export function leftPad(rows: number[][], padId: number): { ids: number[][]; mask: number[][] } {
  const T = Math.max(1, ...rows.map((r) => r.length));
  return {
    ids: rows.map((r) => [...new Array(T - r.length).fill(padId), ...r]),
    mask: rows.map((r) => [...new Array(T - r.length).fill(0), ...new Array(r.length).fill(1)]),
  };
}

function validate(model: GPT2LMHeadModel, prompts: number[][], o: GenerateOptions): void {
  const V = model.config.vocab_size;
  if (!Number.isInteger(o.maxNewTokens) || o.maxNewTokens < 1) throw new Error("generate: maxNewTokens must be ≥ 1");
  if (o.temperature !== undefined && !(o.temperature > 0)) throw new Error("generate: temperature must be > 0");
  if (o.topP !== undefined && !(o.topP > 0 && o.topP <= 1)) throw new Error("generate: topP must be in (0, 1]");
  if (o.topK !== undefined && !(Number.isInteger(o.topK) && o.topK >= 0)) {
    throw new Error("generate: topK must be an integer ≥ 0");
  }
  if (prompts.length === 0) throw new Error("generate: no prompts");
  prompts.forEach((r, i) => {
    if (r.length === 0) throw new Error(`generate: prompt ${i} is empty`);
    const bad = r.find((t) => !Number.isInteger(t) || t < 0 || t >= V);
    if (bad !== undefined) throw new Error(`generate: prompt ${i} has token id ${bad} outside the vocabulary (${V})`);
  });
  const longest = Math.max(...prompts.map((r) => r.length));
  if (longest + o.maxNewTokens > model.config.n_positions) {
    throw new Error(
      `generate: prompt length ${longest} + maxNewTokens ${o.maxNewTokens} exceeds n_positions (${model.config.n_positions})`,
    );
  }
}

/** The stop and padding token ids of one {@linkcode generate} call (eos -1: none). */
interface SpecialIds {
  eos: number;
  pad: number;
}

/**
 * Resolves EOS and padding ids from the options, else the model config. Old configs keep transformers' default
 * ids (50256) even with a smaller vocabulary: those are ignored.
 */
function resolveSpecialIds(model: GPT2LMHeadModel, options: GenerateOptions): SpecialIds {
  const cfg = model.config, vocab = cfg.vocab_size;
  const inVocab = (id: number | null | undefined) =>
    id !== null && id !== undefined && id >= 0 && id < vocab ? id : null;
  const eos = options.eosTokenId === undefined ? inVocab(cfg.eos_token_id) ?? -1 : options.eosTokenId ?? -1;
  const pad = options.padTokenId ?? inVocab(cfg.pad_token_id) ?? (eos >= 0 ? eos : 0);
  if (eos >= vocab) throw new Error(`generate: eosTokenId ${eos} is outside the vocabulary (${vocab})`);
  if (pad < 0 || pad >= vocab) throw new Error(`generate: padTokenId ${pad} is outside the vocabulary (${vocab})`);
  return { eos, pad };
}

/** Everything one {@linkcode generate} call keeps across its decode steps. */
interface DecodeState {
  /** Prompt rows. */
  batch: number;
  /** Tokens to generate at most. */
  maxNew: number;
  /** Left-padded prompt ids [batch, promptLength] and their attention mask. */
  promptIds: number[][];
  promptMask: number[][];
  promptLength: number;
  /** i32 [batch, promptLength + maxNew]: the attention mask of prompt and generated tokens, on the GPU. */
  attentionMask: Tensor;
  /** i32 [batch, promptLength + maxNew]: position ids (counted from each row's first real token), on the GPU. */
  positionIds: Tensor;
  /** Preallocated KV cache: each step writes its keys/values in place (no concatenation, no uploads). */
  cache: KVCache;
  /** GPU token choice, finished rows and the generated block. */
  sampler: TokenSampler;
}

/**
 * Left-pads the prompts and allocates the decode state. Every per-step input lives on the GPU from the start: no
 * upload (and so no forced submit) per token.
 */
function startDecode(
  model: GPT2LMHeadModel,
  prompts: number[][],
  options: GenerateOptions,
  special: SpecialIds,
): DecodeState {
  const batch = prompts.length, maxNew = options.maxNewTokens, vocab = model.config.vocab_size;
  const { ids: promptIds, mask: promptMask } = leftPad(prompts, special.pad);
  const promptLength = promptIds[0].length, totalLength = promptLength + maxNew;
  const fullMask = promptMask.map((row) => [...row, ...new Array(maxNew).fill(1)]);
  const positions = positionIdsFromMask(fullMask);
  const sampler = new TokenSampler(batch, maxNew, vocab, {
    ...options,
    eosTokenId: special.eos,
    padTokenId: special.pad,
  });
  const attentionMask = keep(tensor(fullMask.flat(), [batch, totalLength], "i32"));
  const positionIds = keep(tensor(positions.flat(), [batch, totalLength], "i32"));
  const cache = model.allocKVCache(batch, totalLength);
  return { batch, maxNew, promptIds, promptMask, promptLength, attentionMask, positionIds, cache, sampler };
}

/**
 * Records one decode step without reading back: step 0 prefills the whole prompt into the cache, later steps feed
 * the previous step's tokens; the LM head runs on the last position only and the sampler fills column `step`.
 */
function decodeStep(model: GPT2LMHeadModel, state: DecodeState, step: number): void {
  const { batch, promptLength, cache } = state;
  tidy(() =>
    noGrad(() => {
      const input = step === 0 ? tensor(state.promptIds.flat(), [batch, promptLength], "i32") : state.sampler.nextIds;
      const inputLength = step === 0 ? promptLength : 1;
      const end = promptLength + step;
      const out = model.forward({
        inputIds: input,
        attentionMask: state.attentionMask,
        positionIds: slice(state.positionIds, 1, end - inputLength, end),
        pastKeyValues: cache,
        useCache: true,
        skipLogits: true,
        outputHidden: true,
      });
      cache.length = out.pastKeyValues!.length;
      const last = reshape(slice(out.hidden!, 1, inputLength - 1, inputLength), [batch, model.config.n_embd]);
      state.sampler.step(matmul(last, model.lmHead, { transB: true }), step);
    })
  );
}

/** Whether the early-stop check runs after `steps` steps (it needs an EOS, and not after the last step). */
function isStopCheckStep(steps: number, maxNew: number, interval: number, eos: number): boolean {
  return interval > 0 && eos >= 0 && steps % interval === 0 && steps < maxNew;
}

/** Reads back the finished flags: true once every row has produced EOS (one readback). */
async function allRowsFinished(sampler: TokenSampler): Promise<boolean> {
  const finished = await sampler.finished.toArray();
  return finished.every((flag) => flag !== 0);
}

/** Reads back the generated block (one readback) and cuts each row after its first EOS. */
async function collectOutput(state: DecodeState, steps: number, eos: number): Promise<GenerateOutput> {
  const { batch, maxNew } = state;
  const flat = await state.sampler.tokens.toArray();
  const tokens: number[][] = [];
  for (let row = 0; row < batch; row++) tokens.push(Array.from(flat.subarray(row * maxNew, row * maxNew + steps)));
  const responses = tokens.map((row) => {
    const eosAt = eos >= 0 ? row.indexOf(eos) : -1;
    return eosAt >= 0 ? row.slice(0, eosAt + 1) : row;
  });
  return { responses, tokens, promptIds: state.promptIds, promptMask: state.promptMask, steps };
}

/** Frees the KV cache, the sampler and the GPU mask and positions. */
function disposeDecode(state: DecodeState): void {
  for (const t of [...state.cache.keys, ...state.cache.values]) t.dispose();
  state.sampler.dispose();
  state.attentionMask.dispose();
  state.positionIds.dispose();
}

/**
 * Generates continuations of `prompts` (token-id rows of any lengths; they are left-padded).
 * The model runs in its current mode; call `model.eval()` first for deterministic greedy output.
 */
export async function generate(
  model: GPT2LMHeadModel,
  prompts: number[][],
  options: GenerateOptions,
): Promise<GenerateOutput> {
  validate(model, prompts, options);
  const special = resolveSpecialIds(model, options);
  const state = startDecode(model, prompts, options, special);
  const stopCheckInterval = options.stopCheckInterval ?? 16;
  let steps = 0;
  try {
    for (let step = 0; step < state.maxNew; step++) {
      decodeStep(model, state, step);
      // Submit this token's work now: the GPU runs it while the CPU records the next token.
      runtime().flush();
      steps = step + 1;
      if (
        isStopCheckStep(steps, state.maxNew, stopCheckInterval, special.eos) && await allRowsFinished(state.sampler)
      ) {
        break;
      }
    }
    return await collectOutput(state, steps, special.eos);
  } finally {
    disposeDecode(state);
  }
}
