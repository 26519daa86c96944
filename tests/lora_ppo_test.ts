import { assert, assertClose, ready } from "./helpers.ts";
import { readAll, runtime, tensor } from "../engine/tensor.ts";
import { GPT2LMHeadModel } from "../models/gpt2.ts";
import { savePretrained } from "../models/auto.ts";
import { CausalLMWithValueHead } from "../models/value_head.ts";
import { attachLora } from "../models/lora_peft.ts";
import { disposePolicy, loadRunPolicy, trainableParameters } from "../models/lora_policy.ts";
import { downloadParams } from "../models/weights.ts";
import { type PPOStats, PPOTrainer } from "../ppo/trainer.ts";
import type { PPOConfigInput } from "../ppo/config.ts";
import { checkpointDamage, loadCheckpoint, saveCheckpoint } from "../app/checkpoint.ts";
import { randomAdapter } from "./lora_helpers.ts";

const CFG = { n_layer: 2, n_head: 2, n_embd: 32, vocab_size: 97, n_positions: 64 };
const DROPLESS = { ...CFG, embd_pdrop: 0, attn_pdrop: 0, resid_pdrop: 0 };
const LORA = { r: 4, loraAlpha: 8, loraDropout: 0.1, targetModules: ["c_attn", "c_fc"] };
const QUERIES = [[5, 6, 7], [8, 9], [10, 11, 12, 13, 14], [15]];
const RESPONSES = [[20, 21, 22, 23], [24], [25, 26, 27, 28, 29, 30], [31, 32]];
const SCORES = [1.0, -0.5, 0.25, 2.0];
const PPO: PPOConfigInput = { batch_size: 4, mini_batch_size: 2, ppo_epochs: 2, learning_rate: 1e-2 };
const withoutTimes = (s: PPOStats) => Object.fromEntries(Object.entries(s).filter(([k]) => !k.startsWith("time/")));

function loraPolicy(seed: number): CausalLMWithValueHead {
  const model = GPT2LMHeadModel.random(DROPLESS, seed);
  attachLora(model, randomAdapter(model, LORA, seed + 100));
  return new CausalLMWithValueHead(model, undefined, seed);
}

/** log-softmax of each response token under `model` run on the unpadded [query | response]. */
async function responseLogprobs(model: GPT2LMHeadModel, q: number[], r: number[]): Promise<number[]> {
  const V = model.config.vocab_size, T = q.length + r.length;
  const [logits] = await readAll([model.forward({ inputIds: tensor([...q, ...r], [1, T], "i32") }).logits!]);
  return r.map((id, t) => {
    const row = Array.from(logits.subarray((q.length - 1 + t) * V, (q.length + t) * V));
    const m = Math.max(...row);
    return row[id] - m - Math.log(row.reduce((s, x) => s + Math.exp(x - m), 0));
  });
}

Deno.test("PPO with LoRA: no reference copy, reference log-probs are the base model's, only adapter and head change", async () => {
  await ready;
  const policy = loraPolicy(1);
  const live0 = runtime().stats.liveBytes;
  const trainer = new PPOTrainer(PPO, policy, null, null);
  const modelBytes = policy.model.parameters().reduce((a, p) => a + p.size * 4, 0);
  assert.ok(runtime().stats.liveBytes - live0 < modelBytes / 4, "the trainer holds no copy of the base weights");
  assert.ok(trainer.ref.params === policy.model.params && trainer.ref.lora === null);
  assert.equal(trainer.optimizer.params.length, policy.model.lora!.params.size + 2);
  const base0 = await downloadParams(policy.model.params);
  const lora0 = await downloadParams(policy.model.lora!.params), head0 = await downloadParams(policy.vHead);
  await trainer.step(QUERIES, RESPONSES, SCORES);
  const roll = trainer.rollout!;
  const base = GPT2LMHeadModel.random(DROPLESS, 1);
  for (let b = 0; b < 4; b++) {
    const want = await responseLogprobs(base, QUERIES[b], RESPONSES[b]);
    assertClose(roll.refLogprobs[b].slice(0, RESPONSES[b].length), want, 2e-5, 1e-4, `reference log-probs ${b}`);
    assert.ok(roll.logprobs[b].some((v, t) => t < RESPONSES[b].length && Math.abs(v - roll.refLogprobs[b][t]) > 1e-4));
  }
  const base1 = await downloadParams(policy.model.params);
  for (const [k, t] of base0) assert.deepEqual([...base1.get(k)!.data], [...t.data], `base weight ${k} unchanged`);
  const lora1 = await downloadParams(policy.model.lora!.params), head1 = await downloadParams(policy.vHead);
  const moved = (a: Map<string, { data: ArrayLike<number> }>, b: typeof a) =>
    [...a].filter(([k, t]) => Array.from(t.data).some((v, i) => v !== b.get(k)!.data[i])).length;
  assert.equal(moved(lora0, lora1), lora0.size, "every adapter matrix moved");
  assert.equal(moved(head0, head1), 2, "the value head moved");
  const generated = await trainer.generate([[5, 6]], { maxNewTokens: 3, minNewTokens: 3 });
  const reference = await trainer.generateReference([[5, 6]], { maxNewTokens: 3, minNewTokens: 3, seed: 1 });
  assert.equal(generated.responses[0].length + reference.responses[0].length, 6);
  trainer.dispose();
  disposePolicy(policy);
  for (const p of base.parameters()) p.dispose();
});

Deno.test("PPO with LoRA: a checkpoint holds the peft adapter and the head, and resuming continues identically", async () => {
  await ready;
  const dir = await Deno.makeTempDir({ prefix: "lora_ckpt_" });
  await savePretrained(GPT2LMHeadModel.random(DROPLESS, 2), `${dir}/base`);
  const policy = await loadRunPolicy(`${dir}/base`, null, LORA, 2);
  assert.equal(trainableParameters(policy).length, 2 * 2 * 2 + 2);
  const trainer = new PPOTrainer(PPO, policy, null, null);
  await trainer.step(QUERIES, RESPONSES, SCORES);
  const saved = await saveCheckpoint(`${dir}/run`, 1, policy, await trainer.stateDict(), {});
  const names = [...Deno.readDirSync(saved)].map((e) => e.name).sort();
  for (const f of ["adapter_config.json", "adapter_model.safetensors", "value_head.safetensors"]) {
    assert.ok(names.includes(f), f);
  }
  assert.ok(!names.includes("model.safetensors"), "no copy of the frozen base weights");
  assert.equal(await checkpointDamage(saved), null);
  const checkpoint = (await loadCheckpoint(`${dir}/run`))!;
  const resumed = await loadRunPolicy(`${dir}/base`, checkpoint.dir, LORA, 2);
  const trainer2 = new PPOTrainer(PPO, resumed, null, null);
  trainer2.loadStateDict(checkpoint.trainer);
  const a = withoutTimes(await trainer.step(RESPONSES, QUERIES, SCORES));
  const b = withoutTimes(await trainer2.step(RESPONSES, QUERIES, SCORES));
  assert.deepEqual(b, a, "the resumed trainer's step equals the uninterrupted one");
  const [x, y] = [await downloadParams(policy.model.lora!.params), await downloadParams(resumed.model.lora!.params)];
  for (const [k, t] of x) assert.deepEqual([...y.get(k)!.data], [...t.data], k);
  await assert.rejects(() => loadRunPolicy(`${dir}/base`, checkpoint.dir, undefined, 2), /a LoRA checkpoint/);
  for (const t of [trainer, trainer2]) t.dispose();
  disposePolicy(policy);
  disposePolicy(resumed);
  await Deno.remove(dir, { recursive: true });
});
