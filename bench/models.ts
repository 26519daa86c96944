/**
 * Model-level GPU benchmarks for `bench/gpu.ts`: GPT-2 training steps, GPT-2 generation, BERT forward and one PPO
 * iteration, with the seeded random-weight initialisation they share, plus the timing helpers that the kernel
 * benchmarks in `bench/gpu.ts` use too.
 * @module
 */

import { AdamW, backward, noGrad, runtime, type Tensor, tensor, tidy } from "../engine/mod.ts";
import { GPT2LMHeadModel } from "../models/gpt2.ts";
import { BertForSequenceClassification } from "../models/bert.ts";
import { generate } from "../models/generate.ts";
import { CausalLMWithValueHead } from "../models/value_head.ts";
import { attachLora, type LoraOptions } from "../models/lora_peft.ts";
import { parseBertConfig, parseGPT2Config } from "../models/config.ts";
import { type ParamSpec, uploadParams } from "../models/weights.ts";
import type { HostTensor } from "../formats/host_tensor.ts";
import {
  type Bench,
  type Ctx,
  disposeAll,
  knobs,
  now,
  profileOnce,
  randIds,
  type Result,
  sig,
  sync,
  timeCalls,
  timeGpu,
  timingFields,
} from "./lib.ts";

// ------------------------------------------------------------------ sizes

/** GPT-2 configuration fields the benchmarks set. */
export interface GPT2Size {
  n_layer: number;
  n_embd: number;
  n_head: number;
  vocab_size: number;
  n_positions: number;
}

/** Shapes of one PPO iteration (as `torch_ppo.py`'s arguments). */
export interface PpoSizes {
  gpt2: GPT2Size;
  bert: Record<string, number>;
  batch: number;
  query: number;
  response: number;
  epochs: number;
  mini: number;
}

/** Shapes of the generation benchmark. */
export interface GenerateSizes {
  prompts: number;
  promptLen: number;
  newTokens: number;
}

/** Shapes and BERT configuration of the BERT forward benchmark. */
export type BertSizes = Record<string, number> & { batch: number; seq: number };

// ------------------------------------------------------------------ context

// ------------------------------------------------------------------ model benchmarks

// Host copies of random weights, shared by every benchmark with the same parameter shapes: the models'
// own Box–Muller initialisation takes ~10 s of CPU for GPT-2 124M, this takes well under one.
const hostWeights = new Map<string, Map<string, HostTensor>>();

/** Uploads seeded random weights for `spec`: uniform with std 0.02, LayerNorm weights 1, biases 0 (HF-like). */
function randomWeights(spec: ParamSpec): Map<string, Tensor> {
  const key = JSON.stringify([...spec]);
  let host = hostWeights.get(key);
  if (!host) {
    host = new Map();
    let s = 12345;
    const a = 0.02 * Math.sqrt(3) / 2147483648;
    for (const [name, shape] of spec) {
      const data = new Float32Array(shape.reduce((x, y) => x * y, 1));
      if (/(LayerNorm|ln_\w+|ln_f)\.weight$/.test(name)) data.fill(1);
      else if (!name.endsWith(".bias")) {
        for (let i = 0; i < data.length; i++) {
          s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
          data[i] = (s - 2147483648) * a;
        }
      }
      host.set(name, { dtype: "f32", shape, data });
    }
    hostWeights.set(key, host);
  }
  return uploadParams(host);
}

/** A GPT-2 with the benchmarks' seeded random weights. */
export function gpt2Model(config: Record<string, unknown>): GPT2LMHeadModel {
  const c = parseGPT2Config(config, "bench config");
  return new GPT2LMHeadModel(c, randomWeights(GPT2LMHeadModel.paramSpec(c)));
}

function bertModel(config: Record<string, unknown>): BertForSequenceClassification {
  const c = parseBertConfig(config, "bench config");
  return new BertForSequenceClassification(c, randomWeights(BertForSequenceClassification.paramSpec(c)));
}

/** Frees a model's parameters. */
export function disposeModel(m: { parameters(): Tensor[] } | null): void {
  if (m) disposeAll(m.parameters());
}

/** GPT-2 training step (forward, backward, AdamW) on `B`×`T` random tokens. */
export function trainBench(key: string, cfg: GPT2Size, B: number, T: number): Bench {
  return {
    name: `gpt2_train_${key}`,
    capS: 30,
    async run(ctx) {
      const rt = runtime();
      const t0 = now();
      const model = gpt2Model({ ...cfg }).train();
      const opt = new AdamW(model.parameters(), { lr: 1e-5 });
      const ids = tensor(randIds(B, T, cfg.vocab_size, 11).flat(), [B, T], "i32");
      ctx.log(`model ready in ${((now() - t0) / 1000).toFixed(1)} s`);
      try {
        const step = () => {
          opt.zeroGrad();
          tidy(() => backward(model.forward({ inputIds: ids, labels: ids }).loss!));
          opt.step();
        };
        const t = await timeGpu(step, sync, knobs(ctx, { targetMs: 300, repeats: 3, maxIters: 10 }));
        const d0 = rt.stats.dispatches, s0 = rt.stats.submits;
        opt.zeroGrad();
        const loss = tidy(() => {
          const l = model.forward({ inputIds: ids, labels: ids }).loss!;
          backward(l);
          return l;
        });
        opt.step();
        const dispatches = rt.stats.dispatches - d0, submits = rt.stats.submits - s0;
        const lossValue = await loss.item();
        loss.dispose();
        return {
          B,
          T,
          n_layer: cfg.n_layer,
          n_embd: cfg.n_embd,
          vocab_size: cfg.vocab_size,
          params: model.parameters().reduce((a, p) => a + p.size, 0),
          step_ms: sig(t.ms),
          tokens_per_s: sig(B * T / (t.ms / 1000)),
          dispatches_per_step: dispatches,
          submits_per_step: submits,
          loss: sig(lossValue, 5),
          ...timingFields(t),
          profile: await profileOnce(ctx, async () => {
            step();
            await sync();
          }),
        };
      } finally {
        opt.zeroGrad(); // frees the gradients (and the flat gradient buffer they view)
        opt.dispose();
        disposeModel(model);
        ids.dispose();
      }
    },
  };
}

/** GPT-2 sampling of `newTokens` tokens for a batch of random prompts. */
export function generateBench(cfg: GPT2Size, s: GenerateSizes): Bench {
  return {
    name: "gpt2_generate",
    capS: 20,
    async run(ctx) {
      const rt = runtime();
      const eos = cfg.vocab_size - 1;
      const model = gpt2Model({ ...cfg, eos_token_id: eos, bos_token_id: eos }).eval();
      const prompts = randIds(s.prompts, s.promptLen, cfg.vocab_size, 12);
      let seed = 0;
      const opts = { maxNewTokens: s.newTokens, minNewTokens: s.newTokens, doSample: true, topK: 0, topP: 1 };
      try {
        let d = 0, rb = 0, steps = 0;
        const t = await timeCalls(async () => {
          const d0 = rt.stats.dispatches, r0 = rt.stats.readbacks;
          const out = await generate(model, prompts, { ...opts, seed: seed++ });
          d = rt.stats.dispatches - d0;
          rb = rt.stats.readbacks - r0;
          steps = out.steps;
        }, { warmup: 1, repeats: ctx.small ? 2 : 3, budgetMs: ctx.left() });
        return {
          prompts: s.prompts,
          prompt_len: s.promptLen,
          new_tokens: steps,
          n_layer: cfg.n_layer,
          ms: sig(t.ms),
          ms_per_token: sig(t.ms / steps),
          tokens_per_s: sig(s.prompts * steps / (t.ms / 1000)),
          dispatches: d,
          readbacks: rb,
          min_ms: sig(t.minMs),
          repeats: t.repeats,
          profile: await profileOnce(ctx, () => generate(model, prompts, { ...opts, seed: seed++ })),
        };
      } finally {
        disposeModel(model);
      }
    },
  };
}

/** BERT sequence-classification forward pass without gradients. */
export function bertBench(s: BertSizes): Bench {
  return {
    name: "bert_forward",
    capS: 6,
    async run(ctx) {
      const { batch, seq, ...config } = s;
      const model = bertModel(config).eval();
      const ids = tensor(randIds(batch, seq, model.config.vocab_size, 13).flat(), [batch, seq], "i32");
      try {
        const t = await timeGpu(
          () => tidy(() => noGrad(() => void model.forward({ inputIds: ids }))),
          sync,
          knobs(ctx, { targetMs: 150, repeats: 5, maxIters: 50 }),
        );
        return {
          batch,
          seq,
          n_layer: model.config.num_hidden_layers,
          hidden: model.config.hidden_size,
          ms: sig(t.ms),
          ...timingFields(t),
          profile: await profileOnce(ctx, async () => {
            tidy(() => noGrad(() => void model.forward({ inputIds: ids })));
            await sync();
          }),
        };
      } finally {
        disposeModel(model);
        ids.dispose();
      }
    },
  };
}

// ------------------------------------------------------------------ PPO

/** The parts of `ppo/trainer.ts`'s PPOTrainer this benchmark uses (kept structural: the module may change). */
interface TrainerLike {
  generate(queries: number[][], options: Record<string, unknown>): Promise<{ responses: number[][] }>;
  step(queries: number[][], responses: number[][], scores: number[]): Promise<Record<string, number>>;
  dispose(): void;
}
type TrainerCtor = new (
  config: Record<string, unknown>,
  policy: CausalLMWithValueHead,
  ref: null,
  tokenizer: null,
) => TrainerLike;

/** Figures of one PPO iteration (ms, counts and the loss when the trainer reports it). */
export type PpoIterationFigures = Record<string, number> & {
  total_ms: number;
  generate_ms: number;
  score_and_forward_ms: number;
  optimize_ms: number;
};

/** Models, reward model and trainer of a PPO benchmark, ready to run iterations. */
export interface PpoSession {
  /** One iteration on fresh random queries: generate → score → `PPOTrainer.step`, timed per phase. */
  iteration(): Promise<PpoIterationFigures>;
  /** Parameters the optimiser updates. */
  trainableParams: number;
  /** Layers of the reward model. */
  rewardLayers: number;
  /** Frees the trainer and every model. */
  dispose(): void;
}

/**
 * Builds what one PPO iteration as `torch_ppo.py` times it needs: the policy (GPT-2 without dropout, with a value
 * head; with `lora`, a LoRA adapter and its value head train and the reference is the base without the adapter, no
 * copy), a BERT reward model and `ppo/trainer.ts`'s PPOTrainer (its frozen reference copy, Adam lr 1.41e-5, KL coef
 * 0.2, γ 1, λ 0.95, clip 0.2, vf coef 0.1). `ppo/trainer.ts` is imported at run time: `{skipped}` with a note when
 * it is missing or fails to load.
 */
export async function ppoSession(ctx: Ctx, s: PpoSizes, lora?: LoraOptions): Promise<PpoSession | { skipped: string }> {
  const url = new URL("../ppo/trainer.ts", import.meta.url);
  const exists = await Deno.stat(url).then(() => true, () => false);
  if (!exists) return { skipped: "ppo/trainer.ts does not exist" };
  let Trainer: TrainerCtor;
  try {
    const mod = await import(url.href);
    if (typeof mod.PPOTrainer !== "function") return { skipped: "ppo/trainer.ts exports no PPOTrainer" };
    Trainer = mod.PPOTrainer as TrainerCtor;
  } catch (e) {
    return { skipped: `ppo/trainer.ts failed to load: ${(e as Error).message}` };
  }
  const V = s.gpt2.vocab_size;
  const t0 = now();
  // torch_ppo.py: dropout off in the policy; the reference is a frozen copy of it; Adam without weight decay.
  const gpt2 = gpt2Model({
    ...s.gpt2,
    resid_pdrop: 0,
    embd_pdrop: 0,
    attn_pdrop: 0,
    eos_token_id: V - 1,
    bos_token_id: V - 1,
  });
  if (lora) attachLora(gpt2, lora);
  const policy = new CausalLMWithValueHead(gpt2, undefined, 0);
  let rm: BertForSequenceClassification | null = null;
  let trainer: TrainerLike | null = null;
  const dispose = () => {
    trainer?.dispose();
    disposeModel(policy);
    gpt2.lora?.dispose();
    disposeModel(rm);
  };
  try {
    rm = bertModel(s.bert).eval();
    trainer = new Trainer(
      {
        batch_size: s.batch,
        mini_batch_size: s.mini,
        ppo_epochs: s.epochs,
        learning_rate: 1.41e-5,
        init_kl_coef: 0.2,
        adap_kl_ctrl: false,
        gamma: 1,
        lam: 0.95,
        cliprange: 0.2,
        cliprange_value: 0.2,
        vf_coef: 0.1,
        seed: 0,
      },
      policy,
      null,
      null,
    );
  } catch (e) {
    dispose();
    throw e;
  }
  ctx.log(`models ready in ${((now() - t0) / 1000).toFixed(1)} s`);
  const rmodel = rm, tr = trainer, rmVocab = rm.config.vocab_size, rt = runtime();
  let it = 0;
  const iteration = async (): Promise<PpoIterationFigures> => {
    const queries = randIds(s.batch, s.query, V, 100 + it++);
    const d0 = rt.stats.dispatches, r0 = rt.stats.readbacks;
    let t = now();
    const gen = await tr.generate(queries, { maxNewTokens: s.response, minNewTokens: s.response });
    const generate_ms = now() - t;
    t = now();
    const R = Math.max(...gen.responses.map((r) => r.length));
    const rmIds = gen.responses.flatMap((r) => [...r, ...new Array(R - r.length).fill(0)].map((x) => x % rmVocab));
    const mask = gen.responses.map((r) => [...new Array(r.length).fill(1), ...new Array(R - r.length).fill(0)]);
    const logits = tidy(() =>
      noGrad(() => rmodel.forward({ inputIds: tensor(rmIds, [s.batch, R], "i32"), attentionMask: mask }).logits)
    );
    const flat = await logits.toArray();
    logits.dispose();
    const scores = Array.from({ length: s.batch }, (_, b) => flat[b * rmodel.config.num_labels + 1]);
    const score_ms = now() - t;
    t = now();
    const st = await tr.step(queries, gen.responses, scores);
    const step_ms = now() - t;
    // The trainer reports its phases in seconds under TRL's names; without them, the whole step is "optimize".
    const sec = (k: string) => typeof st[k] === "number" && Number.isFinite(st[k]) ? st[k] * 1000 : null;
    const fwd = sec("time/ppo/forward_pass");
    const gae = (sec("time/ppo/compute_rewards") ?? 0) + (sec("time/ppo/compute_advantages") ?? 0);
    const loss = st["ppo/loss/total"];
    return {
      total_ms: generate_ms + score_ms + step_ms,
      generate_ms,
      score_ms,
      step_ms,
      ...(fwd !== null ? { rollout_forward_ms: fwd } : {}),
      score_and_forward_ms: score_ms + (fwd ?? 0) + gae,
      optimize_ms: step_ms - (fwd ?? 0) - gae,
      response_len: R,
      dispatches: rt.stats.dispatches - d0,
      readbacks: rt.stats.readbacks - r0,
      ...(typeof loss === "number" ? { loss } : {}),
    };
  };
  return {
    iteration,
    trainableParams: (lora ? [...gpt2.lora!.parameters(), ...policy.vHead.values()] : policy.parameters())
      .reduce((a, p) => a + p.size, 0),
    rewardLayers: rm.config.num_hidden_layers,
    dispose,
  };
}

/**
 * One PPO iteration as `torch_ppo.py` times it ({@linkcode ppoSession}): generate (policy samples `response` tokens
 * for `batch` random queries) → score (reward model on the responses, read back) → `PPOTrainer.step` (rollout
 * forward of policy and reference, rewards and GAE, `epochs` × mini-batches of backward + Adam); a warm-up
 * iteration, then the median iteration's figures and the fastest total. Skipped with a note when
 * `ppo/trainer.ts` is missing or fails to load.
 */
export async function benchPpo(ctx: Ctx, s: PpoSizes, lora?: LoraOptions): Promise<Result> {
  const session = await ppoSession(ctx, s, lora);
  if ("skipped" in session) return session;
  try {
    const iteration = session.iteration;
    await iteration(); // warm-up: compiles every pipeline
    const runs: PpoIterationFigures[] = [];
    const repeats = ctx.small ? 1 : 3;
    while (runs.length < repeats) {
      const t = now();
      runs.push(await iteration());
      if (ctx.left() < now() - t) break;
    }
    const byTotal = [...runs].sort((a, b) => a.total_ms - b.total_ms);
    const med = byTotal[(byTotal.length - 1) >> 1];
    const out: Result = {
      batch: s.batch,
      query: s.query,
      response: s.response,
      ppo_epochs: s.epochs,
      mini_batch: s.mini,
      n_layer: s.gpt2.n_layer,
      trainable_params: session.trainableParams,
      reward_layers: session.rewardLayers,
      repeats: runs.length,
      min_total_ms: sig(byTotal[0].total_ms),
    };
    // Figures of the median iteration (by total time).
    for (const [k, v] of Object.entries(med)) out[k] = Number.isInteger(v) ? v : sig(v);
    const profile = await profileOnce(ctx, iteration);
    if (profile) out.profile = profile;
    if (!("rollout_forward_ms" in med)) {
      out.note = "PPOTrainer.step reported no time/ppo/* stats: optimize_ms is the whole step";
    }
    return out;
  } finally {
    session.dispose();
  }
}
