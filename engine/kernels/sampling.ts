/**
 * Kernels of token selection during generation (models/generate.ts): `sample.wgsl` suppresses tokens, applies
 * temperature, top-k and top-p, samples (or takes the argmax) and tracks EOS and padding, all on the GPU.
 * @module
 */

import { kernel } from "../kernel.ts";

/**
 * Chooses column `step` of `tokens` for every row from `logits` [B, vocab] (one workgroup per row): greedy or
 * sampled with `seed`, never a token set in the bit set `suppress` (`suppress_words` words; 0 = none), EOS not
 * before `min_new` tokens, `pad` after a row's EOS (`finished`); `next_ids` receives the chosen tokens.
 */
export const SAMPLE = kernel({
  shader: "sample",
  params: {
    vocab: "u32",
    step: "u32",
    max_new: "u32",
    greedy: "u32",
    top_k: "u32",
    eos: "i32",
    pad: "i32",
    min_new: "u32",
    seed: "u32",
    temperature: "f32",
    top_p: "f32",
    suppress_words: "u32",
  },
  bindings: { logits: "read", finished: "rw", tokens: "rw", next_ids: "rw", suppress: "read" },
});
