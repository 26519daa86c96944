// Checkpoints as users meet them: each checkpoint-N is a complete Hugging Face folder (tokenizer files included)
// that loads on its own, and how many are kept follows save_total_limit (default: all, as transformers/TRL).
import { assert, ready } from "./helpers.ts";
import { fixtureDir, seedLikePolicyDir } from "./fixtures.ts";
import { defaultSuppressTokens, runRLHF } from "../app/rlhf.ts";
import { loadGPT2 } from "../models/auto.ts";
import { loadTokenizer } from "../models/tokenizer/mod.ts";

const run = (policyDir: string, outDir: string, saveTotalLimit?: number) =>
  runRLHF({
    policyDir,
    rewardDir: fixtureDir("bert-cls-tiny"),
    prompts: ["今天天气很好", "我很喜欢这个", "这家店很差", "你好"],
    rewardLabel: "positive",
    steps: 3,
    ppo: { batch_size: 4, mini_batch_size: 2, ppo_epochs: 1, learning_rate: 1e-3, seed: 2 },
    maxNewTokens: 3,
    saveEvery: 1,
    outDir,
    saveTotalLimit,
    log: () => {},
  });

async function checkpoints(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) if (/^checkpoint-\d+$/.test(e.name)) names.push(e.name);
  return names.sort();
}

Deno.test("every checkpoint is a complete model folder: tokenizer and generation files copied in, loads alone", async () => {
  await ready;
  const policyDir = await seedLikePolicyDir({ extra: ["generation_config.json"] }), out = await Deno.makeTempDir();
  await run(policyDir, out);
  assert.deepEqual(await checkpoints(out), ["checkpoint-1", "checkpoint-2", "checkpoint-3"], "all kept by default");
  const ck = `${out}/checkpoint-2`;
  for (const f of ["vocab.txt", "tokenizer_config.json", "generation_config.json"]) {
    assert.deepEqual(await Deno.readFile(`${ck}/${f}`), await Deno.readFile(`${policyDir}/${f}`), f);
  }
  assert.ok((await Deno.stat(`${ck}/config.json`)).isFile);
  // The samples carry the reference model's reply and score beside the policy's, and the report shows them.
  const samples = (await Deno.readTextFile(`${out}/samples.jsonl`)).trim().split("\n").map((l) => JSON.parse(l));
  assert.ok(
    samples.length > 0 && samples.every((r) => typeof r.refResponse === "string" && Number.isFinite(r.refScore)),
  );
  assert.match(await Deno.readTextFile(`${out}/report.html`), /reference model's reply/);
  assert.match(
    await Deno.readTextFile(`${out}/report.html`),
    /<title>RLHF: policy-\w+ steered by bert-cls-tiny \(&quot;positive&quot;\)<\/title>/,
  );
  const tok = await loadTokenizer(ck);
  assert.ok(tok.encode("你好").length > 0);
  const model = await loadGPT2(ck);
  assert.equal(model.config.n_layer, (await loadGPT2(policyDir)).config.n_layer);
  for (const d of [policyDir, out]) await Deno.remove(d, { recursive: true });
});

Deno.test("saveTotalLimit keeps the newest N checkpoints", async () => {
  await ready;
  const policyDir = await seedLikePolicyDir({ extra: ["generation_config.json"] }), out = await Deno.makeTempDir();
  await run(policyDir, out, 2);
  assert.deepEqual(await checkpoints(out), ["checkpoint-2", "checkpoint-3"]);
  for (const d of [policyDir, out]) await Deno.remove(d, { recursive: true });
});

Deno.test("sampling suppresses a BERT vocabulary's [UNK] by default (said in the log); [] allows it", async () => {
  await ready;
  const tok = await loadTokenizer(fixtureDir("tokenizer-bert-zh"));
  const unk = tok.unkTokenId!;
  assert.deepEqual(defaultSuppressTokens(tok), [unk]);
  assert.deepEqual(defaultSuppressTokens({ unkTokenId: 50256, eosTokenId: 50256 }), [], "GPT-2's unk is its EOS");
  const policyDir = await seedLikePolicyDir({ extra: ["generation_config.json"] }), out = await Deno.makeTempDir();
  const lines: string[] = [];
  await runRLHF({
    policyDir,
    rewardDir: fixtureDir("bert-cls-tiny"),
    prompts: ["今天天气很好", "我很喜欢这个"],
    rewardLabel: "positive",
    steps: 1,
    ppo: { batch_size: 2, mini_batch_size: 2, ppo_epochs: 1, learning_rate: 1e-3, seed: 2 },
    maxNewTokens: 3,
    outDir: out,
    log: (l) => lines.push(l),
  });
  assert.ok(
    lines.some((l) => l.includes(`never generating [UNK] (${unk}) — the default for this tokenizer`)),
    lines.join("\n"),
  );
  for (const d of [policyDir, out]) await Deno.remove(d, { recursive: true });
});
