/**
 * rlhf-webgpu: a WebGPU tensor engine for Deno with GPT-2 and BERT/RoBERTa models and PPO
 * fine-tuning (RLHF) on top — no Python, no CUDA.
 *
 * ```ts
 * import { initEngine, loadGPT2, loadTokenizer, generate } from "./mod.ts";
 * await initEngine();
 * const model = (await loadGPT2("path/to/gpt2")).eval();
 * const tok = await loadTokenizer("path/to/gpt2");
 * const out = await generate(model, [tok.encode("Hello")], { maxNewTokens: 20, doSample: true, seed: 1 });
 * console.log(tok.decode(out.responses[0]));
 * ```
 * @module
 */

export * from "./engine/mod.ts";
export * from "./models/mod.ts";
export * from "./ppo/mod.ts";
