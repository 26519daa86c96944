/**
 * The workloads of the CPU comparison (`bench/cpu.ts`) on our engine, with the shapes of `bench/torch_cpu.py`:
 *
 * - `train_step`: demo GPT-2 (2 layers, 64 wide, 2 heads, vocab 1024, dropout 0.1, train mode), B16×T32 random
 *   tokens with labels = inputs: forward, shifted LM loss, backward, AdamW (lr 1e-3, weight decay 0.01), zero grad.
 * - `generate`: the same GPT-2 in eval mode, 16 random prompts of 6 tokens, 12 sampled tokens each (softmax, top-k 0,
 *   top-p 1) on the KV cache, no EOS stop.
 * - `ppo_iteration`: one iteration of `bench/models.ts`'s {@linkcode ppoSession} (policy = that GPT-2 without dropout
 *   plus value head, frozen reference copy, 1-layer BERT reward model; batch 16, query 6, response 12, 4 epochs ×
 *   mini-batches of 4), with its phases.
 * - `gpt2_124m_forward`: GPT-2 124M, eval, no grad, B1×T64 forward to the logits.
 *
 *     deno run -A bench/cpu_work.ts [--backend cpu|webgpu] [--threads N] [--only a,b] [--repeats N] [--warmup N]
 *       [--small]
 *
 * Each workload is timed as the minimum over its repeats after warm-up (every run ends with the backend's sync).
 * `--threads N` sets `OPENBLAS_NUM_THREADS` before the BLAS library loads (the CPU backend's only threads are
 * OpenBLAS's); on the WebGPU backend the adapter decides (llvmpipe: `LP_NUM_THREADS`, default all cores).
 * Prints one JSON object on stdout; progress goes to stderr.
 * @module
 */

import { AdamW, backward, initEngine, noGrad, runtime, tensor, tidy } from "../engine/mod.ts";
import { blasBackend } from "../engine/cpu/blas.ts";
import { generate } from "../models/generate.ts";
import { now, randIds, type Result, sig } from "./lib.ts";
import {
  disposeModel,
  gpt2Model,
  type GPT2Size,
  type PpoIterationFigures,
  ppoSession,
  type PpoSizes,
} from "./models.ts";

/** The workloads, in run order. */
export const WORKLOADS = ["train_step", "generate", "ppo_iteration", "gpt2_124m_forward"] as const;

/** A workload's name. */
export type Workload = typeof WORKLOADS[number];

/** Shapes of the four workloads (kept in step with `FULL` / `SMALL` of `bench/torch_cpu.py`). */
export interface CpuSizes {
  /** The training step's batch. */
  train: { batch: number; seq: number };
  /** Prompts and lengths of the generation. */
  generate: { prompts: number; prompt_len: number; new_tokens: number };
  /** PPO iteration shapes (policy and reward model included). */
  ppo: PpoSizes;
  /** The large model of the forward workload and its batch. */
  big: GPT2Size & { batch: number; seq: number };
}

/** The demo-size GPT-2 of the train, generation and PPO workloads. */
export const DEMO_GPT2: GPT2Size = { n_layer: 2, n_embd: 64, n_head: 2, vocab_size: 1024, n_positions: 64 };
const REWARD = {
  vocab_size: 1024,
  hidden_size: 64,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  intermediate_size: 128,
  num_labels: 2,
};

/** Full-size shapes. */
export const FULL: CpuSizes = {
  train: { batch: 16, seq: 32 },
  generate: { prompts: 16, prompt_len: 6, new_tokens: 12 },
  ppo: { gpt2: DEMO_GPT2, bert: REWARD, batch: 16, query: 6, response: 12, epochs: 4, mini: 4 },
  big: { n_layer: 12, n_embd: 768, n_head: 12, vocab_size: 50257, n_positions: 1024, batch: 1, seq: 64 },
};

/** `--small`: tiny shapes for the smoke test (the 124M model becomes 2 layers, 128 wide). */
export const SMALL: CpuSizes = {
  train: { batch: 4, seq: 16 },
  generate: { prompts: 4, prompt_len: 4, new_tokens: 4 },
  ppo: { gpt2: DEMO_GPT2, bert: REWARD, batch: 4, query: 4, response: 4, epochs: 1, mini: 2 },
  big: { n_layer: 2, n_embd: 128, n_head: 2, vocab_size: 1024, n_positions: 64, batch: 1, seq: 16 },
};

/** Command-line options of `bench/cpu_work.ts`. */
export interface CpuWorkArgs {
  /** Engine backend: the CPU backend or WebGPU (llvmpipe on a machine without a GPU). */
  backend: "cpu" | "webgpu";
  /** OpenBLAS threads (null: leave the environment as it is). */
  threads: number | null;
  /** Workloads to run (all by default). */
  only: Workload[];
  /** Timed runs per workload (null: the workload's default). */
  repeats: number | null;
  /** Untimed runs first. */
  warmup: number;
  /** Tiny shapes. */
  small: boolean;
}

/**
 * Parses `[--backend cpu|webgpu] [--threads N] [--only a,b] [--repeats N] [--warmup N] [--small]` (`--flag=value`
 * also works); throws on anything else.
 * @param args `Deno.args`
 */
export function parseCpuWorkArgs(args: readonly string[]): CpuWorkArgs {
  const r: CpuWorkArgs = {
    backend: "cpu",
    threads: null,
    only: [...WORKLOADS],
    repeats: null,
    warmup: 5,
    small: false,
  };
  const count = (flag: string, v: string, min: number) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new Error(`${flag} must be an integer ≥ ${min}`);
    return n;
  };
  for (let i = 0; i < args.length; i++) {
    let a = args[i], v: string | undefined;
    const eq = a.indexOf("=");
    if (a.startsWith("--") && eq > 0) [a, v] = [a.slice(0, eq), a.slice(eq + 1)];
    const value = () =>
      v ?? args[++i] ?? (() => {
        throw new Error(`${a} needs a value`);
      })();
    if (a === "--small") r.small = true;
    else if (a === "--backend") {
      const b = value();
      if (b !== "cpu" && b !== "webgpu") throw new Error(`--backend must be cpu or webgpu`);
      r.backend = b;
    } else if (a === "--threads") r.threads = count(a, value(), 1);
    else if (a === "--repeats") r.repeats = count(a, value(), 1);
    else if (a === "--warmup") r.warmup = count(a, value(), 0);
    else if (a === "--only") {
      const names = value().split(",").map((s) => s.trim()).filter((s) => s);
      const bad = names.filter((n) => !(WORKLOADS as readonly string[]).includes(n));
      if (bad.length) throw new Error(`unknown workload(s) ${bad.join(", ")}; known: ${WORKLOADS.join(", ")}`);
      r.only = names as Workload[];
    } else throw new Error(`unknown argument "${args[i]}" (use --backend, --threads, --only, --repeats, --small)`);
  }
  if (r.small) {
    r.repeats ??= 2;
    r.warmup = Math.min(r.warmup, 1);
  }
  return r;
}

const log = (msg: string) => console.error(`cpu_work: ${msg}`);
const sync = () => runtime().sync();

/** Runs `fn` `warmup` times untimed, then `repeats` times; the fastest run and all of them, in ms. */
async function timeMin(fn: () => Promise<unknown>, warmup: number, repeats: number): Promise<Result> {
  for (let i = 0; i < warmup; i++) await fn();
  const runs: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const t = now();
    await fn();
    runs.push(now() - t);
  }
  return { ms: sig(Math.min(...runs)), runs_ms: runs.map((x) => sig(x)) };
}

async function trainStep(s: CpuSizes, a: CpuWorkArgs): Promise<Result> {
  const { batch: B, seq: T } = s.train;
  const model = gpt2Model({ ...DEMO_GPT2, resid_pdrop: 0.1, embd_pdrop: 0.1, attn_pdrop: 0.1 }).train();
  const opt = new AdamW(model.parameters(), { lr: 1e-3, weightDecay: 0.01 });
  const ids = tensor(randIds(B, T, DEMO_GPT2.vocab_size, 11).flat(), [B, T], "i32");
  try {
    const step = async () => {
      tidy(() => backward(model.forward({ inputIds: ids, labels: ids }).loss!));
      opt.step();
      opt.zeroGrad();
      await sync();
    };
    return { ...await timeMin(step, a.warmup, a.repeats ?? 20), shape: { ...DEMO_GPT2, batch: B, seq: T } };
  } finally {
    opt.zeroGrad();
    opt.dispose();
    disposeModel(model);
    ids.dispose();
  }
}

async function generateWork(s: CpuSizes, a: CpuWorkArgs): Promise<Result> {
  const g = s.generate;
  const model = gpt2Model({ ...DEMO_GPT2 }).eval();
  const prompts = randIds(g.prompts, g.prompt_len, DEMO_GPT2.vocab_size, 12);
  const opts = { maxNewTokens: g.new_tokens, doSample: true, topK: 0, topP: 1, eosTokenId: null };
  let seed = 0, steps = 0;
  try {
    const t = await timeMin(
      async () => {
        steps = (await generate(model, prompts, { ...opts, seed: seed++ })).steps;
      },
      a.warmup,
      a.repeats ?? 20,
    );
    if (steps !== g.new_tokens) throw new Error(`generate ran ${steps} steps, not ${g.new_tokens}`);
    return { ...t, shape: { ...DEMO_GPT2, ...g } };
  } finally {
    disposeModel(model);
  }
}

async function ppoWork(s: CpuSizes, a: CpuWorkArgs): Promise<Result> {
  const ctx = { small: a.small, overheadMs: 0, left: () => Infinity, log, profile: false };
  const session = await ppoSession(ctx, s.ppo);
  if ("skipped" in session) return session;
  try {
    for (let i = 0; i < a.warmup; i++) await session.iteration();
    const runs: PpoIterationFigures[] = [];
    for (let i = 0; i < (a.repeats ?? 8); i++) runs.push(await session.iteration());
    const best = runs.reduce((x, y) => y.total_ms < x.total_ms ? y : x); // phases of the fastest iteration
    const { gpt2, bert, ...shape } = s.ppo;
    return {
      ms: sig(best.total_ms),
      generate_ms: sig(best.generate_ms),
      score_and_forward_ms: sig(best.score_and_forward_ms),
      optimize_ms: sig(best.optimize_ms),
      runs_ms: runs.map((r) => sig(r.total_ms)),
      shape: { ...gpt2, reward: bert, ...shape },
    };
  } finally {
    session.dispose();
  }
}

async function bigForward(s: CpuSizes, a: CpuWorkArgs): Promise<Result> {
  const { batch: B, seq: T, ...cfg } = s.big;
  const model = gpt2Model({ ...cfg }).eval();
  const ids = tensor(randIds(B, T, cfg.vocab_size, 13).flat(), [B, T], "i32");
  try {
    const fwd = async () => {
      tidy(() => noGrad(() => void model.forward({ inputIds: ids }).logits));
      await sync();
    };
    return { ...await timeMin(fwd, a.warmup, a.repeats ?? 20), shape: { ...cfg, batch: B, seq: T } };
  } finally {
    disposeModel(model);
    ids.dispose();
  }
}

const RUN: Record<Workload, (s: CpuSizes, a: CpuWorkArgs) => Promise<Result>> = {
  train_step: trainStep,
  generate: generateWork,
  ppo_iteration: ppoWork,
  gpt2_124m_forward: bigForward,
};

/** OpenBLAS's own thread count (`openblas_get_num_threads`), or null when it cannot be asked. */
function openblasThreads(): number | null {
  try {
    const lib = Deno.dlopen("libopenblas.so.0", { openblas_get_num_threads: { parameters: [], result: "i32" } });
    const n = lib.symbols.openblas_get_num_threads();
    lib.close();
    return n;
  } catch {
    return null;
  }
}

/**
 * Runs the chosen workloads and returns the report (`impl`, `backend`, `adapter`, `blas`, `threads`, `small`,
 * `results` by workload: `{ms, runs_ms, shape, wall_s, …}` or `{error}` / `{skipped}`).
 * @param a parsed arguments (set `OPENBLAS_NUM_THREADS` before this when `a.threads` is given)
 */
export async function runCpuWork(a: CpuWorkArgs): Promise<Result> {
  const rt = await initEngine({ backend: a.backend, verbose: false });
  const s = a.small ? SMALL : FULL;
  const results: Record<string, Result> = {};
  for (const w of a.only) {
    const t0 = now();
    try {
      results[w] = await RUN[w](s, a);
    } catch (e) {
      results[w] = { error: e instanceof Error ? e.message : String(e) };
    }
    results[w].wall_s = sig((now() - t0) / 1000, 3);
    log(`${w}: ${results[w].ms ?? JSON.stringify(results[w])}`);
    rt.trimPool();
  }
  const onCpu = a.backend === "cpu";
  return {
    impl: "ours",
    backend: a.backend,
    adapter: rt.handle.adapterName,
    graphics_api: onCpu ? null : rt.handle.graphicsApi,
    blas: onCpu ? blasBackend() : null,
    threads: onCpu
      ? openblasThreads() ?? a.threads
      : Number(Deno.env.get("LP_NUM_THREADS")) || navigator.hardwareConcurrency,
    small: a.small,
    results,
  };
}

if (import.meta.main) {
  const a = parseCpuWorkArgs(Deno.args);
  // OpenBLAS reads its thread count when it loads, which is at the first product: set it before any runs.
  if (a.threads !== null) Deno.env.set("OPENBLAS_NUM_THREADS", String(a.threads));
  console.log(JSON.stringify(await runCpuWork(a)));
}
