/**
 * GPU benchmarks of the engine, shaped like the PyTorch anchors in `../shared/gpu/anchors/`.
 *
 *     deno run -A bench/gpu.ts [--small] [--only a,b] [--out FILE] [--budget-s N] [--backend auto|deno|dawn] [--list]
 *
 * Prints one JSON object to stdout (progress goes to stderr). Every benchmark runs on its own:
 * an error is recorded as `{error}` and the run goes on; GPU memory is freed between benchmarks.
 * See `bench/README.md` for what each figure means.
 * @module
 */

import {
  AdamW,
  addScalar,
  backward,
  f32Bits,
  initEngine,
  layerNorm,
  matmul,
  noGrad,
  runtime,
  scaledDotProductAttention,
  softmax,
  type Tensor,
  tensor,
  tidy,
} from "../engine/mod.ts";
import { GPT2LMHeadModel } from "../models/gpt2.ts";
import { BertForSequenceClassification } from "../models/bert.ts";
import { generate } from "../models/generate.ts";
import { CausalLMWithValueHead } from "../models/value_head.ts";
import { parseBertConfig, parseGPT2Config } from "../models/config.ts";
import { type ParamSpec, uploadParams } from "../models/weights.ts";
import type { HostTensor } from "../engine/host_tensor.ts";
import {
  type Bench,
  type BenchArgs,
  type Ctx,
  gitCommit,
  type GpuTiming,
  measureSyncOverhead,
  median,
  now,
  parseBenchArgs,
  randIds,
  type Result,
  runSuite,
  sig,
  timeCalls,
  timeGpu,
} from "./lib.ts";

// ------------------------------------------------------------------ sizes

interface GPT2Size {
  n_layer: number;
  n_embd: number;
  n_head: number;
  vocab_size: number;
  n_positions: number;
}

/** Shapes of one PPO iteration (as `torch_ppo.py`'s arguments). */
interface PpoSizes {
  gpt2: GPT2Size;
  bert: Record<string, number>;
  batch: number;
  query: number;
  response: number;
  epochs: number;
  mini: number;
}

interface Sizes {
  square: [string, number][];
  gpt2: GPT2Size;
  /** Rows of the GPT-2 matmuls: [key suffix, M]. */
  gpt2Rows: [string, number][];
  rowOps: [string, number, number][];
  attention: { B: number; H: number; D: number; T: [string, number][] };
  dispatches: number;
  train: [string, number, number][];
  generate: { prompts: number; promptLen: number; newTokens: number };
  bert: Record<string, number> & { batch: number; seq: number };
  ppo: PpoSizes;
}

const GPT2_124M: GPT2Size = { n_layer: 12, n_embd: 768, n_head: 12, vocab_size: 50257, n_positions: 1024 };

const FULL: Sizes = {
  square: [["1024", 1024], ["2048", 2048], ["4096", 4096]],
  gpt2: GPT2_124M,
  gpt2Rows: [["M8192", 8192], ["M1024", 1024]],
  rowOps: [["12288x64", 16 * 12 * 64, 64], ["8192x768", 8192, 768]],
  attention: { B: 16, H: 12, D: 64, T: [["T64", 64], ["T1024", 1024]] },
  dispatches: 1000,
  train: [["B16_T64", 16, 64], ["B8_T1024", 8, 1024]],
  generate: { prompts: 16, promptLen: 16, newTokens: 30 },
  bert: { batch: 16, seq: 48, vocab_size: 21128, num_labels: 2 },
  ppo: {
    gpt2: GPT2_124M,
    bert: { vocab_size: 21128, num_labels: 2 },
    batch: 16,
    query: 16,
    response: 30,
    epochs: 4,
    mini: 16,
  },
};

const TINY_GPT2: GPT2Size = { n_layer: 2, n_embd: 64, n_head: 4, vocab_size: 512, n_positions: 64 };
const TINY_BERT = {
  vocab_size: 512,
  hidden_size: 64,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  intermediate_size: 256,
  num_labels: 2,
};

/** `--small`: the same benchmarks (same keys) on shapes a CPU adapter runs in seconds. */
const SMALL: Sizes = {
  square: [["1024", 32], ["2048", 64], ["4096", 128]],
  gpt2: TINY_GPT2,
  gpt2Rows: [["M8192", 64], ["M1024", 32]],
  rowOps: [["12288x64", 2 * 2 * 16, 16], ["8192x768", 64, 64]],
  attention: { B: 2, H: 2, D: 16, T: [["T64", 8], ["T1024", 32]] },
  dispatches: 1000,
  train: [["B16_T64", 4, 8], ["B8_T1024", 2, 32]],
  generate: { prompts: 4, promptLen: 4, newTokens: 6 },
  bert: { batch: 2, seq: 12, ...TINY_BERT },
  ppo: { gpt2: TINY_GPT2, bert: TINY_BERT, batch: 4, query: 4, response: 6, epochs: 2, mini: 2 },
};

// ------------------------------------------------------------------ context

const sync = () => runtime().sync();

/** Timing knobs: short batches and few repeats in --small mode. */
function knobs(ctx: Ctx, full: { targetMs: number; repeats: number; maxIters?: number; warmup?: number }) {
  return {
    overheadMs: ctx.overheadMs,
    targetMs: ctx.small ? Math.min(full.targetMs, 20) : full.targetMs,
    repeats: ctx.small ? Math.min(full.repeats, 2) : full.repeats,
    maxIters: ctx.small ? Math.min(full.maxIters ?? 1000, 20) : full.maxIters ?? 1000,
    warmup: full.warmup ?? 1,
    budgetMs: ctx.left(),
    flush: () => runtime().flush(),
  };
}

function timingFields(t: GpuTiming): Result {
  return { min_ms: sig(t.minMs), cpu_ms: sig(t.cpuMs), iters: t.iters, repeats: t.repeats };
}

/**
 * An f32 tensor of uniform values in [-1, 1) from a seeded LCG (cheap enough for 40 M elements).
 * @param shape dimensions
 * @param seed any integer
 */
function randTensor(shape: readonly number[], seed: number): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  let s = Math.imul(seed, 2654435761) >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    data[i] = s / 2147483648 - 1;
  }
  return tensor(data, shape);
}

/** Disposes tensors and their gradients (null entries are skipped). */
function disposeAll(ts: Iterable<Tensor | null | undefined>): void {
  for (const t of ts) {
    if (!t) continue;
    t.grad?.dispose();
    t.grad = null;
    t.dispose();
  }
}

// ------------------------------------------------------------------ benchmarks

function matmulBench(name: string, M: number, N: number, K: number, transB: boolean, capS = 4): Bench {
  return {
    name,
    capS,
    async run(ctx) {
      const a = randTensor([M, K], 1), b = randTensor(transB ? [N, K] : [K, N], 2);
      try {
        const t = await timeGpu(
          () => matmul(a, b, { transB }).dispose(),
          sync,
          knobs(ctx, { targetMs: 200, repeats: 5 }),
        );
        return { M, N, K, transB, ms: sig(t.ms), tflops: sig(2 * M * N * K / (t.ms * 1e9)), ...timingFields(t) };
      } finally {
        disposeAll([a, b]);
      }
    },
  };
}

function rowOpBench(op: "softmax" | "layernorm", key: string, R: number, C: number): Bench {
  return {
    name: `${op}_${key}`,
    capS: 3,
    async run(ctx) {
      const x = randTensor([R, C], 3), w = randTensor([C], 4), b = randTensor([C], 5);
      try {
        const step = op === "softmax" ? () => softmax(x).dispose() : () => layerNorm(x, w, b).dispose();
        const t = await timeGpu(step, sync, knobs(ctx, { targetMs: 150, repeats: 5 }));
        const bytes = 2 * R * C * 4 + (op === "layernorm" ? 2 * C * 4 : 0);
        return { rows: R, cols: C, ms: sig(t.ms), gbps: sig(bytes / (t.ms * 1e6)), bytes, ...timingFields(t) };
      } finally {
        disposeAll([x, w, b]);
      }
    },
  };
}

function attentionBench(key: string, B: number, H: number, T: number, D: number): Bench {
  return {
    name: `attention_${key}`,
    capS: 8,
    async run(ctx) {
      const shape = [B, H, T, D];
      const q = randTensor(shape, 6), k = randTensor(shape, 7), v = randTensor(shape, 8), g = randTensor(shape, 9);
      try {
        const fwd = await timeGpu(
          () => scaledDotProductAttention(q, k, v, { causal: true }).dispose(),
          sync,
          { ...knobs(ctx, { targetMs: 150, repeats: 5 }), budgetMs: ctx.left() / 2 },
        );
        for (const t of [q, k, v]) t.requireGrad();
        const fb = await timeGpu(
          () => {
            tidy(() => backward(scaledDotProductAttention(q, k, v, { causal: true }), g));
            for (const t of [q, k, v]) {
              t.grad?.dispose();
              t.grad = null;
            }
          },
          sync,
          knobs(ctx, { targetMs: 150, repeats: 5 }),
        );
        return {
          B,
          H,
          T,
          D,
          causal: true,
          fwd_ms: sig(fwd.ms),
          fwd_bwd_ms: sig(fb.ms),
          bwd_ms: sig(Math.max(fb.ms - fwd.ms, 0)),
          fwd_cpu_ms: sig(fwd.cpuMs),
          fwd_bwd_cpu_ms: sig(fb.cpuMs),
          fwd_iters: fwd.iters,
          fwd_bwd_iters: fb.iters,
          repeats: Math.min(fwd.repeats, fb.repeats),
        };
      } finally {
        disposeAll([q, k, v, g]);
      }
    },
  };
}

function dispatchBench(n: number): Bench {
  return {
    name: "dispatch_overhead",
    capS: 5,
    async run(ctx) {
      const rt = runtime();
      const x = randTensor([64], 10); // 256 bytes, as in ../shared/gpu/README.md
      const spec = { shader: "fill", bindings: ["rw" as const] };
      const recordRaw = () => {
        for (let i = 0; i < n; i++) rt.dispatch(spec, [x.storage], [64, f32Bits(i), 0, 0], [1]);
      };
      const reps = ctx.small ? 3 : 7;
      try {
        recordRaw();
        await rt.sync();
        const rec: number[] = [], batch: number[] = [], ops: number[] = [], rb1: number[] = [], rbN: number[] = [];
        for (let r = 0; r < reps; r++) {
          let t0 = now();
          recordRaw();
          rec.push((now() - t0) * 1000 / n);
          await rt.sync();
          batch.push(Math.max(now() - t0 - ctx.overheadMs, 0) * 1000 / n);
          t0 = now();
          for (let i = 0; i < n; i++) addScalar(x, 1).dispose();
          ops.push((now() - t0) * 1000 / n);
          await rt.sync();
          t0 = now();
          rt.dispatch(spec, [x.storage], [64, f32Bits(r), 0, 0], [1]);
          await x.toArray();
          rb1.push(now() - t0);
          t0 = now();
          recordRaw();
          await x.toArray();
          rbN.push(now() - t0);
        }
        const med = (xs: number[]) => sig(median(xs));
        return {
          dispatches: n,
          record_us_per_dispatch: med(rec),
          op_us_per_dispatch: med(ops),
          batch_us_per_dispatch: med(batch),
          submit_readback_1_dispatch_ms: med(rb1),
          submit_readback_1000_dispatches_ms: med(rbN),
          sync_ms: sig(ctx.overheadMs),
          repeats: reps,
        };
      } finally {
        disposeAll([x]);
      }
    },
  };
}

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

function gpt2Model(config: Record<string, unknown>): GPT2LMHeadModel {
  const c = parseGPT2Config(config, "bench config");
  return new GPT2LMHeadModel(c, randomWeights(GPT2LMHeadModel.paramSpec(c)));
}

function bertModel(config: Record<string, unknown>): BertForSequenceClassification {
  const c = parseBertConfig(config, "bench config");
  return new BertForSequenceClassification(c, randomWeights(BertForSequenceClassification.paramSpec(c)));
}

function disposeModel(m: { parameters(): Tensor[] } | null): void {
  if (m) disposeAll(m.parameters());
}

function trainBench(key: string, cfg: GPT2Size, B: number, T: number): Bench {
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
        };
      } finally {
        opt.dispose();
        disposeModel(model);
        ids.dispose();
      }
    },
  };
}

function generateBench(cfg: GPT2Size, s: Sizes["generate"]): Bench {
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
        };
      } finally {
        disposeModel(model);
      }
    },
  };
}

function bertBench(s: Sizes["bert"]): Bench {
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

/**
 * One PPO iteration as `torch_ppo.py` times it: generate (policy samples `response` tokens for `batch` random
 * queries) → score (reward model on the responses, read back) → `PPOTrainer.step` (rollout forward of policy and
 * reference, rewards and GAE, `epochs` × mini-batches of backward + Adam). `ppo/trainer.ts` is imported at run
 * time: the benchmark is skipped with a note when it is missing or fails to load.
 */
async function benchPpo(ctx: Ctx, s: PpoSizes): Promise<Result> {
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
  const policy = new CausalLMWithValueHead(gpt2, undefined, 0);
  let rm: BertForSequenceClassification | null = null;
  let trainer: TrainerLike | null = null;
  try {
    rm = bertModel(s.bert).eval();
    const rmVocab = rm.config.vocab_size;
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
    ctx.log(`models ready in ${((now() - t0) / 1000).toFixed(1)} s`);
    const rt = runtime();
    let it = 0;
    const iteration = async () => {
      const queries = randIds(s.batch, s.query, V, 100 + it++);
      const d0 = rt.stats.dispatches, r0 = rt.stats.readbacks;
      let t = now();
      const gen = await trainer!.generate(queries, { maxNewTokens: s.response, minNewTokens: s.response });
      const generate_ms = now() - t;
      t = now();
      const R = Math.max(...gen.responses.map((r) => r.length));
      const rmIds = gen.responses.flatMap((r) => [...r, ...new Array(R - r.length).fill(0)].map((x) => x % rmVocab));
      const mask = gen.responses.map((r) => [...new Array(r.length).fill(1), ...new Array(R - r.length).fill(0)]);
      const logits = tidy(() =>
        noGrad(() => rm!.forward({ inputIds: tensor(rmIds, [s.batch, R], "i32"), attentionMask: mask }).logits)
      );
      const flat = await logits.toArray();
      logits.dispose();
      const scores = Array.from({ length: s.batch }, (_, b) => flat[b * rm!.config.num_labels + 1]);
      const score_ms = now() - t;
      t = now();
      const st = await trainer!.step(queries, gen.responses, scores);
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
    await iteration(); // warm-up: compiles every pipeline
    const runs: Awaited<ReturnType<typeof iteration>>[] = [];
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
      reward_layers: rm.config.num_hidden_layers,
      repeats: runs.length,
      min_total_ms: sig(byTotal[0].total_ms),
    };
    // Figures of the median iteration (by total time).
    for (const [k, v] of Object.entries(med)) out[k] = Number.isInteger(v) ? v : sig(v);
    if (!("rollout_forward_ms" in med)) {
      out.note = "PPOTrainer.step reported no time/ppo/* stats: optimize_ms is the whole step";
    }
    return out;
  } finally {
    trainer?.dispose();
    disposeModel(policy);
    disposeModel(rm);
  }
}

function benchmarks(z: Sizes): Bench[] {
  const C = z.gpt2.n_embd, V = z.gpt2.vocab_size;
  const list: Bench[] = [dispatchBench(z.dispatches)];
  for (const [k, n] of z.square) list.push(matmulBench(`matmul_${k}`, n, n, n, false));
  for (const [k, M] of z.gpt2Rows) {
    list.push(matmulBench(`matmul_gpt2_qkv_${k}`, M, 3 * C, C, false));
    list.push(matmulBench(`matmul_gpt2_fc_${k}`, M, 4 * C, C, false));
    list.push(matmulBench(`matmul_gpt2_lmhead_${k}`, M, V, C, true, 6));
  }
  for (const op of ["softmax", "layernorm"] as const) {
    for (const [k, R, Cc] of z.rowOps) list.push(rowOpBench(op, k, R, Cc));
  }
  for (const [k, T] of z.attention.T) {
    list.push(attentionBench(`B16_H12_${k}_D64`, z.attention.B, z.attention.H, T, z.attention.D));
  }
  list.push(bertBench(z.bert));
  for (const [k, B, T] of z.train) list.push(trainBench(k, z.gpt2, B, T));
  list.push(generateBench(z.gpt2, z.generate));
  list.push({ name: "ppo_iteration", capS: 60, run: (ctx) => benchPpo(ctx, z.ppo) });
  return list;
}

/** Every benchmark key, in run order (the same with and without `--small`). */
export const BENCHMARK_NAMES: readonly string[] = benchmarks(FULL).map((b) => b.name);

// ------------------------------------------------------------------ main

async function main(args: BenchArgs): Promise<void> {
  const all = benchmarks(args.small ? SMALL : FULL);
  if (args.list) {
    console.log(all.map((b) => b.name).join("\n"));
    return;
  }
  if (args.only) {
    const unknown = args.only.filter((n) => !all.some((b) => b.name === n));
    if (unknown.length) throw new Error(`unknown benchmark(s) ${unknown.join(", ")}; see --list`);
  }
  const selected = args.only ? all.filter((b) => args.only!.includes(b.name)) : all;
  const budgetMs = (Number.isFinite(args.budgetS) ? args.budgetS : args.small ? 150 : 300) * 1000;
  const started = now();
  const log = (m: string) => console.error(`[bench] ${m}`);

  const rt = await initEngine({ ...(args.backend ? { backend: args.backend } : {}), verbose: true });
  const h = rt.handle;
  const lim = h.device.limits;
  const overheadProbe = randTensor([256], 0);
  const overheadMs = await measureSyncOverhead(
    () => rt.dispatch({ shader: "fill", bindings: ["rw"] }, [overheadProbe.storage], [256, 0, 0, 0], [1]),
    () => rt.sync(),
  );
  overheadProbe.dispose();
  log(`${h.backend} WebGPU on ${h.adapterName}; one sync costs ${overheadMs.toFixed(2)} ms`);

  const report = {
    date: new Date().toISOString(),
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    backend: h.backend,
    adapter: h.adapterName,
    device: {
      is_fallback_adapter: h.isFallbackAdapter,
      has_f16: h.hasF16,
      has_timestamps: h.hasTimestamps,
      max_storage_buffer_binding_size: lim.maxStorageBufferBindingSize,
      max_buffer_size: lim.maxBufferSize,
    },
    commit: await gitCommit(),
    small: args.small,
    args: Deno.args,
    sync_overhead_ms: sig(overheadMs),
    budget_s: budgetMs / 1000,
    total_s: 0,
    results: {} as Record<string, Result>,
  };
  const save = async () => {
    report.total_s = sig((now() - started) / 1000);
    if (args.out) await Deno.writeTextFile(args.out, JSON.stringify(report, null, 1) + "\n");
  };

  await runSuite(selected, {
    small: args.small,
    overheadMs,
    budgetMs,
    started,
    results: report.results,
    log,
    afterEach: () => save().catch((e) => log(`cannot write ${args.out}: ${(e as Error).message}`)),
  });
  await save();
  console.log(JSON.stringify(report, null, 1));
}

if (import.meta.main) {
  let code = 0;
  try {
    await main(parseBenchArgs(Deno.args));
  } catch (e) {
    console.error(`bench: ${(e as Error).stack ?? e}`);
    code = 1;
  }
  // A WebGPU device (or a timed-out benchmark) can keep the event loop alive: exit explicitly.
  Deno.exit(code);
}
