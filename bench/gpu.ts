/**
 * GPU benchmarks of the engine, shaped like the PyTorch anchors in `../shared/gpu/anchors/`.
 *
 *     deno run -A bench/gpu.ts [--small] [--only a,b] [--out FILE] [--budget-s N] [--hard-timeout-s N]
 *       [--backend auto|deno|dawn] [--profile] [--list] [--tuning JSON]
 *
 * Prints one JSON object to stdout (progress goes to stderr). Every benchmark runs on its own:
 * an error is recorded as `{error}` and the run goes on; GPU memory is freed between benchmarks.
 * See `bench/README.md` for what each figure means.
 * @module
 */

import {
  addScalar,
  backward,
  f32Bits,
  initEngine,
  layerNorm,
  matmul,
  matmulPrecisionStatus,
  runtime,
  scaledDotProductAttention,
  setMatmulTuning,
  softmax,
  tidy,
} from "../engine/mod.ts";
import { FILL } from "../engine/kernels/elementwise.ts";
import {
  type Bench,
  type BenchArgs,
  disposeAll,
  engineOptions,
  gitCommit,
  knobs,
  measureSyncOverhead,
  median,
  now,
  parseBenchArgs,
  randTensor,
  type Result,
  runSuite,
  sig,
  sync,
  timeGpu,
  timingFields,
} from "./lib.ts";
import {
  benchPpo,
  bertBench,
  type BertSizes,
  generateBench,
  type GenerateSizes,
  type GPT2Size,
  type PpoSizes,
  trainBench,
} from "./models.ts";

// ------------------------------------------------------------------ sizes

interface Sizes {
  square: [string, number][];
  gpt2: GPT2Size;
  /** Rows of the GPT-2 matmuls: [key suffix, M]. */
  gpt2Rows: [string, number][];
  rowOps: [string, number, number][];
  attention: { B: number; H: number; D: number; T: [string, number][] };
  dispatches: number;
  train: [string, number, number][];
  generate: GenerateSizes;
  bert: BertSizes;
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

/**
 * An f32 tensor of uniform values in [-1, 1) from a seeded LCG (cheap enough for 40 M elements).
 * @param shape dimensions
 * @param seed any integer
 */
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
      const fill = (bits: number) => rt.run(FILL, { n: 64, bits, start: 0, step: 0 }, { y: x.storage }, [1]);
      const recordRaw = () => {
        for (let i = 0; i < n; i++) fill(f32Bits(i));
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
          fill(f32Bits(r));
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

  const rt = await initEngine({ ...(await engineOptions(args.backend)), verbose: true });
  if (args.tuning) setMatmulTuning(args.tuning);
  const h = rt.handle;
  const lim = rt.limits;
  const overheadProbe = randTensor([256], 0);
  const overheadMs = await measureSyncOverhead(
    () => rt.run(FILL, { n: 256, bits: 0, start: 0, step: 0 }, { y: overheadProbe.storage }, [1]),
    () => rt.sync(),
  );
  overheadProbe.dispose();
  log(`${h.backend} WebGPU (${h.graphicsApi}) on ${h.adapterName}; one sync costs ${overheadMs.toFixed(2)} ms`);

  const report = {
    date: new Date().toISOString(),
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    backend: h.backend,
    graphics_api: h.graphicsApi,
    adapter: h.adapterName,
    device: {
      is_fallback_adapter: h.isFallbackAdapter,
      has_f16: h.hasF16,
      has_timestamps: h.hasTimestamps,
      has_coop_matrix: h.hasCoopMatrix,
      has_subgroups: h.hasSubgroups,
      subgroup_size: h.subgroupSize,
      max_storage_buffer_binding_size: lim.maxStorageBufferBindingSize,
      max_buffer_size: lim.maxBufferSize,
    },
    matmul_precision: matmulPrecisionStatus(rt),
    matmul_tuning: args.tuning,
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
    profile: args.profile,
    overheadMs,
    budgetMs,
    hardTimeoutMs: args.hardTimeoutS * 1000,
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
