/**
 * The CPU kernels (`engine/cpu/`) against the WGSL kernels: real workloads run on the WebGPU backend (llvmpipe here)
 * with every kernel's dispatches captured — uniform block, grid, constants, bindings before and after — and each
 * captured dispatch is replayed through the kernel's CPU implementation from the same inputs; every written binding
 * must agree (exactly for integer outputs, within float32 rounding otherwise).
 */
import { assert, ready } from "./helpers.ts";
import { type CapturedDispatch, captureDispatches } from "./dispatch_capture.ts";
import { noGrad, runtime, tensor, tidy } from "../engine/tensor.ts";
import { backward } from "../engine/autograd.ts";
import { createFlatParameters } from "../engine/flat.ts";
import { AdamW, clipGradNorm, SGD } from "../engine/optim.ts";
import * as ops from "../engine/ops/mod.ts";
import { GPT2LMHeadModel } from "../models/gpt2.ts";
import { BertForSequenceClassification } from "../models/bert.ts";
import { generate, TokenSampler } from "../models/generate.ts";
import { CausalLMWithValueHead } from "../models/value_head.ts";
import { PPOTrainer } from "../ppo/trainer.ts";
import { fullKl } from "../ppo/loss.ts";
import { cpuKernelOf, hostArray, unpackParams } from "../engine/cpu/kernel_table.ts";
import { allKernels } from "../engine/kernels/mod.ts";
import "../engine/cpu/mod.ts";

const GPT2 = { n_layer: 2, n_head: 2, n_embd: 32, vocab_size: 97, n_positions: 64, attn_pdrop: 0.1, resid_pdrop: 0.1 };
const BERT = {
  vocab_size: 60,
  hidden_size: 32,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  intermediate_size: 48,
  max_position_embeddings: 32,
  num_labels: 2,
};

/** Training, decoding, classification and PPO on tiny models, plus ops the models do not reach. */
const WORKLOADS: Record<string, () => Promise<void> | void> = {
  "GPT-2 training step (dropout, AdamW, clipping)": () => {
    const model = GPT2LMHeadModel.random(GPT2, 1).train();
    const opt = new AdamW(model.parameters(), { lr: 1e-3 });
    tidy(() => {
      const ids = tensor([1, 5, 9, 2, 7, 3, 4, 8], [2, 4], "i32");
      backward(model.forward({ inputIds: ids, labels: ids }).loss!);
    });
    clipGradNorm(model.parameters(), 1.0);
    opt.step();
    opt.zeroGrad();
  },
  "GPT-2 sampling with a KV cache": async () => {
    const model = GPT2LMHeadModel.random({ ...GPT2, attn_pdrop: 0, resid_pdrop: 0 }, 2).eval();
    await generate(model, [[1, 2, 3], [4, 5]], { maxNewTokens: 3, doSample: true, topK: 5, topP: 0.9, seed: 3 });
  },
  "BERT classifier forward and backward": () => {
    const model = BertForSequenceClassification.random(BERT, 4).eval();
    tidy(() => {
      const ids = tensor([2, 7, 9, 3, 2, 11, 3, 0], [2, 4], "i32");
      const mask = tensor([1, 1, 1, 1, 1, 1, 1, 0], [2, 4], "i32");
      const out = model.forward({ inputIds: ids, attentionMask: mask, labels: tensor([0, 1], [2], "i32") });
      backward(out.loss!);
    });
  },
  "PPO step": async () => {
    const policy = new CausalLMWithValueHead(GPT2LMHeadModel.random({ ...GPT2, attn_pdrop: 0, resid_pdrop: 0 }, 5));
    const trainer = new PPOTrainer({ batch_size: 2, mini_batch_size: 1, ppo_epochs: 1 }, policy, null, null);
    await trainer.step([[5, 6, 7], [8, 9]], [[20, 21], [24, 25, 26]], [1.0, -0.5]);
    trainer.dispose?.();
  },
  "reductions, indexing, long attention and split-K products": async () => {
    rareProducts();
    await rareReductionsAndIndexing();
    noGrad(() =>
      tidy(() => {
        const x = tensor(Array.from({ length: 6 * 300 }, (_, i) => Math.sin(i)), [6, 300]);
        ops.sum(x, 1), ops.mean(x, 0), ops.max(x, 1), ops.argmax(x, 0), ops.softmax(x), ops.logSoftmax(x);
        ops.slice(x, 1, 5, 200), ops.concat([x, x], 0), ops.permute(ops.reshape(x, [6, 30, 10]), [2, 0, 1]);
        const idx = tensor([3, 0, 5, 1], [4], "i32");
        ops.indexSelect(x, 0, idx), ops.maskedFill(x, ops.cast(ops.full([6, 1], 1), "i32"), -1);
        const q = tensor(Array.from({ length: 2 * 300 * 8 }, (_, i) => Math.cos(i * 0.37)), [1, 2, 300, 8]);
        ops.scaledDotProductAttention(q, q, q, { causal: true });
        const a = tensor(Array.from({ length: 16 * 1024 }, (_, i) => Math.sin(i * 0.1)), [16, 1024]);
        ops.matmul(a, a, { transB: true });
      })
    );
  },
  "attention with gradients: tiled, row and matmul paths, masks, dropout, cache length, head layouts": () =>
    tidy(attentionWithGradients),
  "losses: ignored and out-of-range targets, sum, entropy, full KL": () => tidy(lossPaths),
  "optimisers and clipping: AdamW amsgrad/maximize, SGD with and without momentum, p = 3 and ∞ norms": () =>
    tidy(optimiserPaths),
  "greedy selection over a long vocabulary: suppressed tokens, EOS after min_new, finished rows": () =>
    tidy(() => samplerSteps({ doSample: false, suppressTokens: [3, 40, 999], minNewTokens: 1 }, 2)),
  "sampling over a long vocabulary with temperature and top-p alone, padding a finished row": () =>
    tidy(() => samplerSteps({ doSample: true, temperature: 0.7, topP: 0.8, seed: 11 }, 2)),
  "sampling over a long vocabulary with top-k and top-p, suppressed tokens": () =>
    tidy(() => samplerSteps({ doSample: true, topK: 50, topP: 0.95, seed: 12, suppressTokens: [7, 123] }, 2)),
};

const waveValues = (n: number, s: number) => Array.from({ length: n }, (_, i) => Math.sin(i * s + 0.3));

/** Cross-entropy with ignored and out-of-range targets ("mean" and "sum"), entropy and full KL with gradients. */
function lossPaths(): void {
  const logits = tensor(waveValues(6 * 300, 0.7).map((v) => 3 * v), [6, 300]).requireGrad();
  backward(ops.crossEntropy(logits, tensor([4, -100, 299, 0, -100, 17], [6], "i32"), { ignoreIndex: -100 }));
  backward(ops.crossEntropy(logits, tensor([4, 300, 9, 0, 1, 2], [6], "i32"), { reduction: "sum" }));
  backward(ops.entropyFromLogits(logits), tensor(waveValues(6, 1.1), [6]));
  fullKl(logits, tensor(waveValues(6 * 300, 0.9), [6, 300]), 0.7);
}

/** Two steps of each optimiser entry (fresh and existing state) and the p = 3 and ∞ gradient norms. */
function optimiserPaths(): void {
  const inits = [5000, 300, 700, 40].map((n, i) => ({ shape: [n], data: Float32Array.from(waveValues(n, i + 0.1)) }));
  const [a, b, c, d] = createFlatParameters(inits).params;
  const grads = (s: number) =>
    [a, b, c, d].forEach((p, i) => backward(ops.mul(p, p), tensor(waveValues(p.size, s + i), p.shape)));
  const adam = new AdamW([{ params: [a] }, { params: [b], maximize: true }], { amsgrad: true, weightDecay: 0.1 });
  const sgd = new SGD([{ params: [c], nesterov: true }, { params: [d], dampening: 0.3 }], { lr: 0.1, momentum: 0.9 });
  const plain = new SGD([a, b], { lr: 0.05, weightDecay: 0.01 });
  for (const s of [0.5, 0.8]) {
    grads(s);
    clipGradNorm([a, b, c, d], 0.5, s < 0.6 ? 3 : Infinity);
    adam.step(), sgd.step(), plain.step();
    [adam, sgd, plain].forEach((o) => o.zeroGrad());
  }
  [adam, sgd, plain].forEach((o) => o.dispose());
  [a, b, c, d].forEach((p) => p.dispose());
}

/** `steps` sampler steps over logits [2, 1000] (EOS = row 0's argmax, so row 0 finishes and is padded after). */
function samplerSteps(options: ConstructorParameters<typeof TokenSampler>[3], steps: number): void {
  const V = 1000, logits = tensor(waveValues(2 * V, 0.37).map((v, i) => 4 * v + (i === 123 ? 9 : 0)), [2, V]);
  const sampler = new TokenSampler(2, steps, V, { eosTokenId: 123, padTokenId: 5, ...options });
  for (let step = 0; step < steps; step++) sampler.step(logits, step);
  sampler.dispose();
}

/** Backward passes and paths the models do not reach: long rows and columns, many pairs to sort, where, non-finite. */
async function rareReductionsAndIndexing(): Promise<void> {
  const wave = (n: number, s: number) => Array.from({ length: n }, (_, i) => Math.sin(i * s + 0.3));
  const gradOf = (y: ReturnType<typeof tensor>, s: number) => backward(y, tensor(wave(y.size, s), y.shape));
  tidy(() => {
    const x = tensor(wave(6 * 300, 1), [6, 300]).requireGrad();
    [ops.sum(x, 1), ops.mean(x, 0), ops.max(x, 1), ops.softmax(x), ops.logSoftmax(x)].forEach((y, i) =>
      gradOf(y, i + 0.7)
    );
    ops.sum(tensor(wave(2 * 5000, 0.01), [2, 5000]), 1), ops.sum(tensor(wave(200 * 4, 0.3), [200, 4]), 0);
    const h = tensor(wave(200 * 8, 0.9), [200, 8]), w = tensor(wave(8, 2), [8]).requireGrad();
    gradOf(ops.layerNorm(h, w, tensor(wave(8, 3), [8]).requireGrad()), 0.4);
    const g = tensor(wave(40 * 30, 0.2), [40, 30]).requireGrad();
    gradOf(ops.gather(g, 1, tensor(Array.from({ length: 40 * 30 }, (_, i) => (i * 7) % 5), [40, 30], "i32")), 1.3);
    const cond = tensor([1, 0, 0, 1, 1, 0], [6, 1]), b = tensor(wave(300, 0.5), [300]).requireGrad();
    gradOf(ops.where(cond, x, b), 0.6);
  });
  const bad = [tensor([1, Infinity, NaN, -Infinity, 2], [5]), tensor(wave(3000, 0.1).map((v) => 1 / v), [3000])];
  await ops.countNonFinite(bad);
  bad.forEach((t) => t.dispose());
}

/** Attention paths the models do not reach, each with its backward, and the 2- and 4-part head layouts. */
function attentionWithGradients(): void {
  const wave = (shape: readonly number[], s: number) =>
    tensor(Array.from({ length: shape.reduce((a, b) => a * b) }, (_, i) => Math.sin(i * s + 0.3)), shape);
  const leaf = (shape: number[], s: number) => wave(shape, s).requireGrad();
  const gradOf = (y: ReturnType<typeof tensor>, s: number) => backward(y, wave(y.shape, s));
  const [q, k, v] = [leaf([2, 2, 12, 8], 0.37), leaf([2, 2, 14, 8], 0.53), leaf([2, 2, 14, 8], 0.71)];
  const pad = tensor(Array.from({ length: 2 * 14 }, (_, i) => (i % 14 === 4 || i === 26 ? 0 : 0.5)), [2, 14]);
  const common = { keyPaddingMask: pad, kvLength: 13, dropoutP: 0.2, seed: 7 };
  gradOf(ops.scaledDotProductAttention(q, k, v, { ...common, causal: true }), 0.9);
  gradOf(ops.scaledDotProductAttention(ops.slice(q, 2, 0, 3), k, v, { ...common, scale: 0.4 }), 1.1);
  const [ql, kl, vl] = [leaf([1, 1, 260, 8], 0.29), leaf([1, 1, 260, 8], 0.41), leaf([1, 1, 260, 8], 0.63)];
  gradOf(ops.scaledDotProductAttention(ql, kl, vl, { causal: true, dropoutP: 0.1, seed: 5 }), 0.8);
  const x2 = leaf([2, 3, 2 * 16], 0.21), x4 = leaf([2, 3, 4 * 16], 0.23);
  gradOf(ops.splitHeads(x2, 2, 2)[1], 0.5);
  const parts = ops.splitHeads(x4, 2, 4);
  gradOf(ops.add(ops.mergeHeads(parts[0]), ops.mergeHeads(parts[2])), 0.6);
}

/** Products the tiny models do not reach: every epilogue flag on the tiled kernel, split K (plain and fused), alpha. */
function rareProducts(): void {
  const wave = (shape: number[], s: number) =>
    tensor(Array.from({ length: shape.reduce((x, y) => x * y) }, (_, i) => Math.sin(i * s + 0.1)), shape);
  tidy(() => {
    // Tiled, TRANS_B, bias, gelu_new, residual and the pre-activation; backward adds TRANS_A products.
    const x = wave([40, 24], 0.7).requireGrad(), w = wave([36, 24], 0.3).requireGrad();
    const y = ops.linear(x, w, wave([36], 1.1).requireGrad(), {
      weightLayout: "out_in",
      activation: "gelu_new",
      residual: wave([40, 36], 0.9),
    });
    backward(y, wave([40, 36], 0.2));
    // K = 520 on a small grid: split K, plain (partials summed by reduce.wgsl) and with the epilogue in the sum.
    const xl = wave([40, 520], 0.05).requireGrad();
    ops.matmul(xl, xl, { transB: true });
    const fused = ops.linear(xl, wave([520, 36], 0.11), wave([36], 2.1), {
      activation: "gelu",
      residual: wave([40, 36], 1.3),
    });
    backward(fused, wave([40, 36], 0.4));
    // A broadcast over batches, stored transposed, with alpha (tiled), and a few-row product with alpha (gemv).
    const b = wave([3, 20, 36], 0.6);
    ops.matmul(wave([20, 40], 0.4), b, { transA: true, alpha: 0.5 });
    ops.matmul(wave([20, 3], 0.8), b, { transA: true, alpha: -2 });
  });
}

async function captureAll(): Promise<CapturedDispatch[]> {
  const rt = runtime();
  const all: CapturedDispatch[] = [];
  for (const run of Object.values(WORKLOADS)) all.push(...await captureDispatches(rt, run));
  return all;
}

/** The first word of `actual` that disagrees with `expected` under the kernel's agreement, as a message. */
function disagreement(actual: Uint32Array, expected: Uint32Array, exact: boolean, rtol: number, atol: number) {
  const af = new Float32Array(actual.buffer), ef = new Float32Array(expected.buffer);
  for (let i = 0; i < expected.length; i++) {
    if (actual[i] === expected[i]) continue;
    if (!exact && Math.abs(af[i] - ef[i]) <= atol + rtol * Math.abs(ef[i])) continue;
    return `word ${i}: cpu ${af[i]} (0x${actual[i].toString(16)}) vs gpu ${ef[i]} (0x${expected[i].toString(16)})`;
  }
  return null;
}

/** Replays one captured dispatch on its CPU kernel; returns a message per disagreeing binding. */
function replay(c: CapturedDispatch): string[] {
  const entry = cpuKernelOf(c.kernel)!;
  const hosts = c.before.map((bytes) => hostArray(bytes));
  const bindings = Object.fromEntries(c.kernel.bindingNames.map((name, b) => [name, hosts[c.storageOf[b]]]));
  entry.run({ params: unpackParams(c.kernel, c.words), bindings, grid: c.grid, overrides: c.overrides });
  const { exact = false, rtol = 1e-5, atol = 1e-6 } = entry.agreement;
  const problems: string[] = [];
  c.after.forEach((expected, i) => {
    if (!expected) return;
    const bad = disagreement(hosts[i].u32, new Uint32Array(expected.buffer), exact, rtol, atol);
    const names = c.kernel.bindingNames.filter((_, b) => c.storageOf[b] === i).join("/");
    if (bad) problems.push(`${c.kernel.shader}:${c.kernel.entry} ${JSON.stringify(c.overrides)} ${names}: ${bad}`);
  });
  return problems;
}

Deno.test("cpu kernels: every captured dispatch replays on the CPU with the WGSL kernel's results", async () => {
  await ready;
  const captured = await captureAll();
  assert.ok(captured.length > 50, `captured ${captured.length} dispatches`);
  const missing = new Set<string>();
  const problems: string[] = [];
  for (const c of captured) {
    if (!cpuKernelOf(c.kernel)) missing.add(`${c.kernel.shader}:${c.kernel.entry}`);
    else problems.push(...replay(c));
  }
  assert.deepEqual(problems, [], "CPU results differ from the WGSL kernels'");
  assert.deepEqual([...missing].sort(), [], "captured kernels without a CPU implementation");
});

Deno.test("cpu kernels: which declared kernels have a CPU implementation", () => {
  const kernels = allKernels();
  const without = kernels.filter((k) => !cpuKernelOf(k.kernel)).map((k) => k.name);
  // The cooperative-matrix kernel runs only on GPUs with tensor cores; the CPU never needs it.
  const gpuOnly = new Set(["matmul.MATMUL_COOP"]);
  assert.deepEqual(without.filter((name) => !gpuOnly.has(name)), []);
});
