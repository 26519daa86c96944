/**
 * PPO iteration with and without LoRA (bench/models.ts's `benchPpo`: generate → score → step), on the same shapes,
 * one after the other in one process: step times and the GPU-memory high-water mark of each (live tensors, models
 * included). Prints one JSON object.
 *
 *     deno run -A bench/lora_ppo.ts [--size small|mid] [--r 8] [--targets c_attn] [--out FILE]
 * @module
 */

import { parseArgs } from "node:util";
import { initEngine } from "../engine/init.ts";
import { type Bench, engineOptions, gitCommit, now, type Result, runSuite, sig } from "./lib.ts";
import { benchPpo, type PpoSizes } from "./models.ts";

const BERT = { vocab_size: 512, hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 256 };

/** The shapes: `small` is bench/gpu.ts --small's PPO iteration, `mid` a 4-layer, 256-wide GPT-2. */
const SIZES: Record<string, PpoSizes> = {
  small: {
    gpt2: { n_layer: 2, n_embd: 64, n_head: 4, vocab_size: 512, n_positions: 64 },
    bert: { ...BERT, num_labels: 2 },
    batch: 4,
    query: 4,
    response: 6,
    epochs: 2,
    mini: 2,
  },
  mid: {
    gpt2: { n_layer: 4, n_embd: 256, n_head: 4, vocab_size: 4096, n_positions: 64 },
    bert: { ...BERT, num_labels: 2 },
    batch: 8,
    query: 8,
    response: 8,
    epochs: 2,
    mini: 4,
  },
};

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: { size: { type: "string" }, r: { type: "string" }, targets: { type: "string" }, out: { type: "string" } },
  });
  const sizes = SIZES[values.size ?? "small"];
  if (!sizes) throw new Error(`--size must be one of ${Object.keys(SIZES).join(", ")}`);
  const r = Number(values.r ?? 8), targetModules = (values.targets ?? "c_attn").split(",");
  const rt = await initEngine({ ...(await engineOptions(null)), verbose: true });
  const log = (m: string) => console.error(`[lora bench] ${m}`);
  const benches: Bench[] = [
    { name: "ppo_iteration", capS: 600, run: (ctx) => benchPpo(ctx, sizes) },
    {
      name: "ppo_iteration_lora",
      capS: 600,
      run: (ctx) => benchPpo(ctx, sizes, { r, loraAlpha: 2 * r, targetModules }),
    },
  ];
  const results: Record<string, Result> = {};
  const started = now();
  await runSuite(benches, {
    small: false,
    overheadMs: 0,
    budgetMs: 3_600_000,
    hardTimeoutMs: 0,
    started,
    results,
    log,
    afterEach: async () => {},
  });
  const report = {
    date: new Date().toISOString(),
    commit: await gitCommit(),
    adapter: rt.handle.adapterName,
    graphics_api: rt.handle.graphicsApi,
    size: values.size ?? "small",
    lora: { r, lora_alpha: 2 * r, target_modules: targetModules },
    total_s: sig((now() - started) / 1000),
    results,
  };
  if (values.out) await Deno.writeTextFile(values.out, JSON.stringify(report, null, 1) + "\n");
  console.log(JSON.stringify(report, null, 1));
}

if (import.meta.main) await main();
