/**
 * `cli.ts init-model`: seeded random GPT-2 and BERT-classifier folders from a vocab.txt or a tokenizer folder load
 * with the library's loaders, generate, classify and train a PPO step; the weights are `randomParams` of the config's
 * spec with the seed; a non-empty --out is refused without --force; bad flags are usage errors naming the flag.
 */
import { assert, ready } from "./helpers.ts";
import { fixtureDir } from "./fixtures.ts";
import { loadGPT2, loadSequenceClassifier } from "../models/auto.ts";
import { GPT2LMHeadModel } from "../models/gpt2.ts";
import { randomParams } from "../models/weights.ts";
import { readSafetensors } from "../formats/safetensors.ts";
import { ByteLevelBpeTokenizer, bytesToUnicode, loadTokenizer } from "../models/tokenizer/mod.ts";
import { classifyTexts, promptFormat } from "../models/text.ts";
import { generate } from "../models/generate.ts";
import { initModel } from "../app/init_model.ts";
import { runRLHF } from "../app/rlhf.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const VOCAB = `${fixtureDir("tokenizer-bert-zh")}/vocab.txt`;

async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "cli.ts", ...args],
    cwd: ROOT,
    env: { XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

const TINY = ["--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--n-positions", "32"];

Deno.test("init-model: a GPT-2 and a BERT classifier from a vocab.txt load, generate, classify and train a PPO step", async () => {
  await ready;
  const dir = await Deno.makeTempDir({ prefix: "init_model_" });
  try {
    const [g, b] = await Promise.all([
      cli("init-model", "--like", "gpt2", "--vocab", VOCAB, ...TINY, "--seed", "5", "--out", `${dir}/policy`),
      cli("init-model", "--like", "bert", "--vocab", VOCAB, ...TINY, "--labels", "bad,good", "--out", `${dir}/reward`),
    ]);
    assert.equal(g.code, 0, g.stderr);
    assert.equal(b.code, 0, b.stderr);
    assert.match(
      g.stdout,
      new RegExp(`^wrote ${dir}/policy: GPT2LMHeadModel, 1 layer, n_embd 16, 2 heads, 32 positions`),
    );
    assert.match(b.stdout, /BertForSequenceClassification, 1 layer, hidden 16, .* labels bad\/good, vocabulary 1396/);

    // The policy: config from the flags, the vocabulary's size and BERT ids; weights = randomParams(spec, seed).
    const tok = await loadTokenizer(`${dir}/policy`);
    const policy = (await loadGPT2(`${dir}/policy`)).eval();
    const c = policy.config;
    assert.deepEqual([c.n_layer, c.n_embd, c.n_head, c.n_positions, c.vocab_size], [1, 16, 2, 32, 1396]);
    assert.deepEqual([c.bos_token_id, c.eos_token_id], [tok.clsTokenId, tok.sepTokenId]);
    const file = (await readSafetensors(`${dir}/policy/model.safetensors`)).tensors;
    const want = randomParams(GPT2LMHeadModel.paramSpec(c), 5);
    assert.deepEqual([...file.keys()].sort(), [...want.keys()].sort());
    for (const [name, t] of want) assert.deepEqual(file.get(name)!.data, t.data, name);
    const other = randomParams(GPT2LMHeadModel.paramSpec(c), 6).get("transformer.wte.weight")!.data;
    assert.notDeepEqual(file.get("transformer.wte.weight")!.data, other, "another seed gives other weights");

    const fmt = promptFormat(tok, c);
    assert.ok(fmt.dialog, "BERT vocabulary: [CLS] prompt [SEP]");
    const out = await generate(policy, [fmt.encode("你好"), fmt.encode("今天天气")], {
      maxNewTokens: 4,
      minNewTokens: 4,
      eosTokenId: fmt.eosTokenId,
      padTokenId: fmt.padTokenId,
    });
    for (const r of out.responses) {
      assert.equal(r.length, 4);
      assert.ok(r.every((id) => Number.isInteger(id) && id >= 0 && id < 1396), String(r));
    }
    for (const p of policy.parameters()) p.dispose();

    // The reward model: labels in id order, probabilities that sum to 1.
    const reward = (await loadSequenceClassifier(`${dir}/reward`)).eval();
    assert.deepEqual(reward.labels, ["bad", "good"]);
    const scores = await classifyTexts(reward, await loadTokenizer(`${dir}/reward`), ["很好", "很差"]);
    for (const p of scores.probabilities) assert.ok(Math.abs(p[0] + p[1] - 1) < 1e-6, String(p));
    for (const p of reward.parameters()) p.dispose();

    // Both work as train.ts's --policy and --reward.
    const run = await runRLHF({
      policyDir: `${dir}/policy`,
      rewardDir: `${dir}/reward`,
      prompts: ["你好", "今天天气很好", "我很喜欢", "这家店"],
      rewardLabel: "good",
      steps: 1,
      ppo: { batch_size: 4, mini_batch_size: 2, ppo_epochs: 1, learning_rate: 1e-3 },
      maxNewTokens: 3,
      outDir: `${dir}/run`,
      log: () => {},
    });
    assert.equal(run.step, 1);
    assert.ok(Number.isFinite(run.metrics[0]["env/reward_mean"]));
    assert.ok((await Deno.stat(`${dir}/run/checkpoint-1/config.json`)).isFile);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** A byte-level BPE tokenizer folder: the 256 byte symbols, two merges and <|endoftext|>. */
async function tinyBpe(dir: string): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  const vocab: Record<string, number> = {};
  bytesToUnicode().forEach((ch, i) => vocab[ch] = i);
  Object.assign(vocab, { he: 256, ll: 257, "<|endoftext|>": 258 });
  await Deno.writeTextFile(`${dir}/vocab.json`, JSON.stringify(vocab));
  await Deno.writeTextFile(`${dir}/merges.txt`, "#version: 0.2\nh e\nl l\n");
}

Deno.test("init-model: a GPT-2 with a byte-level BPE tokenizer folder (plain prompts, <|endoftext|> as EOS)", async () => {
  await ready;
  const dir = await Deno.makeTempDir({ prefix: "init_model_bpe_" });
  try {
    await tinyBpe(`${dir}/bpe`);
    const r = await initModel({
      like: "gpt2",
      tokenizer: `${dir}/bpe`,
      nLayer: 2,
      nEmbd: 8,
      nHead: 2,
      nPositions: 16,
      outDir: `${dir}/gpt`,
    });
    assert.deepEqual(r.files, ["config.json", "merges.txt", "model.safetensors", "vocab.json"]);
    assert.equal(r.parameters, 259 * 8 + 16 * 8 + 2 * (4 * 8 * 8 + 2 * 8 * 32 + 9 * 8 + 32) + 2 * 8);
    const tok = await loadTokenizer(`${dir}/gpt`);
    assert.ok(tok instanceof ByteLevelBpeTokenizer);
    const model = (await loadGPT2(`${dir}/gpt`)).eval();
    assert.equal(model.config.vocab_size, 259);
    assert.equal(model.config.eos_token_id, 258);
    const fmt = promptFormat(tok, model.config);
    assert.ok(!fmt.dialog);
    assert.deepEqual(fmt.encode("hello"), [256, 257, tok.tokenToId("o")!]);
    const out = await generate(model, [fmt.encode("hello")], { maxNewTokens: 3, eosTokenId: 258, padTokenId: 258 });
    assert.ok(out.responses[0].length >= 1 && out.responses[0].every((id) => id >= 0 && id < 259));
    for (const p of model.parameters()) p.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("init-model: a non-empty --out needs --force (which replaces the model files); bad flags exit 2 naming the flag", async () => {
  const dir = await Deno.makeTempDir({ prefix: "init_model_flags_" });
  try {
    const out = `${dir}/m`;
    await Deno.mkdir(out);
    await Deno.writeTextFile(`${out}/notes.txt`, "mine");
    await Deno.writeTextFile(`${out}/tokenizer.json`, "{}"); // would shadow the new vocab.txt
    const refused = await cli("init-model", "--like", "gpt2", "--vocab", VOCAB, ...TINY, "--out", out);
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, new RegExp(`--out ${out} is not empty \\(notes.txt, tokenizer.json\\): give --force`));
    assert.equal(await Deno.stat(`${out}/config.json`).catch(() => null), null, "nothing written");
    const forced = await cli("init-model", "--like", "gpt2", "--vocab", VOCAB, ...TINY, "--out", out, "--force");
    assert.equal(forced.code, 0, forced.stderr);
    assert.match(forced.stderr, /init-model: replaced tokenizer.json in /);
    assert.equal(await Deno.readTextFile(`${out}/notes.txt`), "mine", "other files stay");
    assert.equal(await Deno.stat(`${out}/tokenizer.json`).catch(() => null), null);
    assert.equal((await loadTokenizer(out)).vocabFile, `${out}/vocab.txt`);
    assert.deepEqual(
      [...Deno.readDirSync(dir)].map((e) => e.name),
      ["m"],
      "no staging folder left behind",
    );

    const cases: [string[], number, RegExp][] = [
      [["--like", "gpt3", "--vocab", VOCAB, "--out", `${dir}/x`], 2, /--like must be gpt2 or bert \(got "gpt3"\)/],
      [["--like", "gpt2", "--out", `${dir}/x`], 2, /exactly one of --vocab FILE .* and --tokenizer DIR/],
      [["--vocab", VOCAB, "--out", `${dir}/x`], 2, /--like gpt2\|bert is required/],
      [
        ["--like", "bert", "--vocab", VOCAB, "--seed", "4294967296", "--out", `${dir}/x`],
        2,
        /--seed must be an integer in \[0, 4294967295\]/,
      ],
      [
        ["--like", "bert", "--vocab", VOCAB, "--n-head", "5", "--out", `${dir}/x`],
        2,
        /--n-head \(5\) must divide --n-embd \(768, the default\)/,
      ],
      [["--like", "gpt2", "--vocab", VOCAB, "--tokenizer", dir, "--out", `${dir}/x`], 2, /exactly one of/],
      [["--like", "gpt2", "--vocab", VOCAB], 2, /--out DIR is required/],
      [
        ["--like", "gpt2", "--vocab", VOCAB, "--n-embd", "10", "--n-head", "4", "--out", `${dir}/x`],
        2,
        /--n-head \(4\) must divide --n-embd \(10\)/,
      ],
      [
        ["--like", "gpt2", "--vocab", VOCAB, "--n-layer", "0", "--out", `${dir}/x`],
        2,
        /--n-layer must be a positive integer \(got 0\)/,
      ],
      [["--like", "gpt2", "--vocab", VOCAB, "--labels", "a,b", "--out", `${dir}/x`], 2, /--labels is for --like bert/],
      [
        ["--like", "bert", "--vocab", VOCAB, "--labels", "a,,b", "--out", `${dir}/x`],
        2,
        /--labels needs comma-separated/,
      ],
      [
        ["--like", "gpt2", "--vocab", `${dir}/none.txt`, "--out", `${dir}/x`],
        1,
        new RegExp(`--vocab ${dir}/none.txt: no such file`),
      ],
      [
        ["--like", "gpt2", "--tokenizer", `${dir}/none`, "--out", `${dir}/x`],
        1,
        new RegExp(`--tokenizer ${dir}/none: no such folder`),
      ],
      [
        ["--like", "bert", "--vocab", VOCAB, ...TINY, "--n-positions", "2000000", "--out", `${dir}/x`],
        1,
        /--n-positions/,
      ],
      [["--like", "gpt2", "--vocab", VOCAB, "--out", `${dir}/x`, "text"], 2, /init-model takes no texts/],
    ];
    const runs = await Promise.all(cases.map(([args]) => cli("init-model", ...args)));
    runs.forEach((r, i) => {
      assert.equal(r.code, cases[i][1], `${cases[i][0].join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, cases[i][2]);
      assert.equal(r.stdout, "");
    });
    assert.equal(await Deno.stat(`${dir}/x`).catch(() => null), null, "no folder made by a refused call");
    const help = await cli("init-model", "--help");
    assert.match(help.stdout, /--like KIND[\s\S]*--vocab FILE[\s\S]*--tokenizer DIR[\s\S]*--force/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
