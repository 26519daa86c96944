/**
 * Bad input gives clear errors naming the file and the field: config sizes refused before anything is allocated,
 * `id2label` keys and names, a tokenizer with more ids than the model's vocabulary, hostile bytes escaped in
 * messages, bad token ids in tokenizer files, and the seed range. (The CLI cases are in cli_test.ts and
 * train_test.ts.)
 */
import { assert, ready } from "./helpers.ts";
import { fixtureDir } from "./fixtures.ts";
import { CONFIG_LIMITS, configSource, parseBertConfig, parseGPT2Config, readConfigJson } from "../models/config.ts";
import { loadGPT2, loadSequenceClassifier } from "../models/auto.ts";
import { BertForSequenceClassification } from "../models/bert.ts";
import { checkTokenizerFits, EmptyPromptError, promptFormat } from "../models/text.ts";
import { loadTokenizer } from "../models/tokenizer/mod.ts";
import { parsePrompts } from "../app/prompts.ts";
import { ppoConfig } from "../ppo/config.ts";
import { printable } from "../formats/safetensors.ts";

/** Control, bidi and replacement characters must never reach a message raw. */
const RAW = /[\p{Cc}\p{Cf}\ufffd]/u;

async function tempCopy(fixture: string, files: string[]): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "input_errors_" });
  for (const f of files) await Deno.copyFile(`${fixtureDir(fixture)}/${f}`, `${dir}/${f}`);
  return dir;
}

async function editJson(path: string, edit: (raw: Record<string, unknown>) => void): Promise<void> {
  const raw = JSON.parse(await Deno.readTextFile(path));
  edit(raw);
  await Deno.writeTextFile(path, JSON.stringify(raw));
}

function throwsWith(fn: () => unknown, ...patterns: RegExp[]): void {
  assert.throws(fn, (e: unknown) => {
    const m = (e as Error).message;
    for (const p of patterns) assert.match(m, p);
    assert.ok(!RAW.test(m), `raw control characters in ${JSON.stringify(m)}`);
    return true;
  });
}

const GPT2 = JSON.parse(await Deno.readTextFile(`${fixtureDir("gpt2-tiny")}/config.json`));
const BERT = JSON.parse(await Deno.readTextFile(`${fixtureDir("bert-cls-tiny")}/config.json`));

Deno.test("config sizes: n_layer 1000000 (and other absurd sizes) are refused at once, naming the field", async () => {
  const dir = await tempCopy("gpt2-tiny", ["config.json", "model.safetensors"]);
  try {
    await editJson(`${dir}/config.json`, (c) => (c.n_layer = 1_000_000));
    const t0 = performance.now();
    await assert.rejects(loadGPT2(dir), (e: unknown) => {
      assert.match(
        (e as Error).message,
        new RegExp(`${dir}/config.json: field "n_layer" must be an integer in \\[1, 1024\\]`),
      );
      return true;
    });
    assert.ok(performance.now() - t0 < 1000, `rejected after ${performance.now() - t0} ms`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  const gpt2 = (over: Record<string, unknown>) => () => parseGPT2Config({ ...GPT2, ...over }, "g.json");
  throwsWith(gpt2({ n_embd: 2 ** 20, n_head: 1 }), /g\.json: field "n_embd" must be an integer in \[1, 65536\]/);
  throwsWith(gpt2({ vocab_size: 2 ** 30 }), /field "vocab_size" must be an integer in \[1, 16777216\]/);
  throwsWith(gpt2({ n_positions: 1e9 }), /field "n_positions"/);
  throwsWith(gpt2({ n_inner: 1e12 }), /field "n_inner"/);
  throwsWith(gpt2({ n_head: 128 }), /field "n_head" must be an integer in \[1, 64\]/);
  // Every field within its bound, the whole too large: the estimate names the largest term.
  throwsWith(
    gpt2({ n_embd: 65536, n_head: 64, n_layer: 1024 }),
    /field "n_layer" makes the model too large: n_layer 1024 × \(n_embd 65536, MLP 262144\) → .* GiB in f32 \(limit 64\.0 GiB\)/,
  );
  throwsWith(
    gpt2({ n_embd: 65536, n_head: 64, n_layer: 1, vocab_size: 2 ** 24 }),
    /field "vocab_size" makes the model/,
  );
  const bert = (over: Record<string, unknown>) => () => parseBertConfig({ ...BERT, ...over }, "b.json");
  throwsWith(
    bert({ num_hidden_layers: 1_000_000 }),
    /b\.json: field "num_hidden_layers" must be an integer in \[1, 1024\]/,
  );
  throwsWith(bert({ hidden_size: 1e6 }), /field "hidden_size"/);
  throwsWith(bert({ intermediate_size: 1e9 }), /field "intermediate_size"/);
  throwsWith(bert({ max_position_embeddings: 1e9 }), /field "max_position_embeddings"/);
  throwsWith(bert({ type_vocab_size: 1e6 }), /field "type_vocab_size"/);
  throwsWith(bert({ vocab_size: -1 }), /field "vocab_size"/);
  throwsWith(
    bert({ hidden_size: 32768, num_attention_heads: 64, num_hidden_layers: 1024 }),
    /"num_hidden_layers" makes/,
  );
  // Published sizes still load: GPT-2 XL, BERT large.
  const xl = parseGPT2Config({ ...GPT2, n_embd: 1600, n_head: 25, n_layer: 48, n_positions: 1024, vocab_size: 50257 });
  assert.equal(xl.n_layer, 48);
  assert.equal(
    parseBertConfig({ ...BERT, hidden_size: 1024, num_hidden_layers: 24, num_attention_heads: 16 }).hidden_size,
    1024,
  );
  assert.ok(CONFIG_LIMITS.paramBytes >= 4 * 1.6e9);
});

Deno.test("id2label: keys must be the class indices, names unique; labels follow the keys", async () => {
  const bert = (id2label: unknown, over: Record<string, unknown> = {}) => () =>
    parseBertConfig({ ...BERT, id2label, label2id: undefined, num_labels: undefined, ...over }, "cls/config.json");
  throwsWith(
    bert({ a: "negative", b: "positive" }),
    /cls\/config\.json: field "id2label" key "a" is not a class index/,
  );
  throwsWith(bert({ 0: "negative", "01": "positive" }), /key "01" is not a class index/);
  throwsWith(bert({ 0: "negative", 2: "positive" }), /key "2" is not a class index: keys must be the integers 0…1/);
  throwsWith(bert({ "-1": "x", 0: "y" }), /key "-1"/);
  throwsWith(bert({ 0: "pos", 1: "pos" }), /names "pos" for ids 0 and 1: label names must be unique/);
  throwsWith(bert({ 0: "Positive", 1: "positive" }), /names "positive" for ids 0 and 1/);
  throwsWith(bert({ 0: "a", 1: 7 }), /\[1\] must be a non-empty label name \(got 7\)/);
  throwsWith(bert({ 0: "a", 1: "" }), /\[1\] must be a non-empty label name/);
  throwsWith(bert(["a", "b"]), /"id2label" must be an object/);
  throwsWith(bert({ 0: "a", 1: "b" }, { num_labels: 3 }), /has 2 entries but num_labels is 3/);
  throwsWith(bert({ ["\u0000\u202e" + "k".repeat(300)]: "a" }), /key "\\x00\\u\{202e\}k+… \(\d+ more characters\)"/);
  // Keys in any order: the label of class i is id2label[i], and label2id agrees.
  const c = bert({ 1: "positive", 0: "negative" })();
  assert.deepEqual(c.label2id, { negative: 0, positive: 1 });
  assert.deepEqual(bert({}, { num_labels: 3 })().id2label, { 0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2" });
  await ready;
  const model = BertForSequenceClassification.random({ ...BERT, id2label: { 2: "c", 0: "a", 1: "b" }, num_labels: 3 });
  assert.deepEqual(model.labels, ["a", "b", "c"]);
  for (const p of model.parameters()) p.dispose();
  // Through the loader: the error names the folder's config.json.
  const dir = await tempCopy("bert-cls-tiny", ["config.json", "model.safetensors"]);
  try {
    await editJson(`${dir}/config.json`, (c) => (c.id2label = { zero: "negative", one: "positive" }));
    await assert.rejects(loadSequenceClassifier(dir), new RegExp(`${dir}/config.json: field "id2label" key "zero"`));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tokenizer vs model vocabulary: checked at load time and at encode time, naming both files", async () => {
  const tok = await loadTokenizer(fixtureDir("tokenizer-bert-zh"));
  const small = parseGPT2Config({ ...GPT2, vocab_size: 1000 }, "/models/policy/config.json");
  assert.equal(configSource(small), "/models/policy/config.json");
  const vocab = `${fixtureDir("tokenizer-bert-zh")}/tokenizer.json`;
  const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
  throwsWith(
    () => promptFormat(tok, small),
    new RegExp(
      `tokenizer ${esc(vocab)} has ids up to 1395 but the model \\(/models/policy/config\\.json\\) has vocab_size 1000`,
    ),
  );
  throwsWith(
    () => checkTokenizerFits(tok, parseBertConfig({ ...BERT, vocab_size: 500 }, "r/config.json")),
    /r\/config\.json/,
  );
  const fits = parseGPT2Config(GPT2, "/models/policy/config.json");
  const fmt = promptFormat(tok, fits);
  assert.ok(fmt.encode("你好").length > 2);
  assert.throws(() => fmt.encode("   "), EmptyPromptError);
  // A tokenizer that under-reports its size still cannot smuggle ids past the model at encode time.
  Object.defineProperty(tok, "vocabSize", { get: () => 100 });
  const lying = promptFormat(tok, parseGPT2Config({ ...GPT2, vocab_size: 140 }, "/m/config.json"));
  throwsWith(
    () => lying.encode("今天天气很好"),
    /produced id \d+ for prompt "今天天气很好", outside .*\/m\/config\.json: vocab_size 140/,
  );
});

Deno.test("messages quoting file content escape binary bytes and are shortened", async () => {
  assert.equal(printable("a\u0000b\u001b[1m\u202e\ufffd\u2028c"), "a\\x00b\\x1b[1m\\u{202e}\\u{fffd}\\u{2028}c");
  assert.equal(printable("中文 ok\ttab"), "中文 ok\\x09tab");
  assert.equal(printable("x".repeat(100), 10), "xxxxxxxxxx… (90 more characters)");
  const dir = await Deno.makeTempDir({ prefix: "input_errors_" });
  const junk = new Uint8Array(4096).map((_, i) => (i * 151 + 7) & 0xff);
  try {
    await Deno.writeFile(`${dir}/config.json`, junk);
    await assert.rejects(readConfigJson(dir), (e: unknown) => {
      const m = (e as Error).message;
      assert.match(m, new RegExp(`${dir}/config.json: invalid JSON`));
      assert.ok(!RAW.test(m) && m.length < 400, JSON.stringify(m));
      return true;
    });
    await Deno.writeTextFile(
      `${dir}/config.json`,
      JSON.stringify({ architectures: ["\u0007Evil\u202e" + "A".repeat(500)] }),
    );
    await assert.rejects(loadGPT2(dir), (e: unknown) => {
      const m = (e as Error).message;
      assert.match(m, /architecture "\\x07Evil\\u\{202e\}A+… \(\d+ more characters\)" is not supported/);
      assert.ok(!RAW.test(m) && m.length < 400, JSON.stringify(m));
      return true;
    });
    await Deno.writeFile(`${dir}/vocab.txt`, new TextEncoder().encode("[PAD]\n[UNK]\n"));
    await Deno.writeFile(`${dir}/tokenizer_config.json`, junk);
    await assert.rejects(loadTokenizer(dir), (e: unknown) => {
      const m = (e as Error).message;
      assert.match(m, /tokenizer: cannot parse JSON file .*tokenizer_config\.json/);
      assert.ok(!RAW.test(m) && m.length < 400, JSON.stringify(m));
      return true;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  const set = parsePrompts(`{"prompt":"ok"}\n{\u0001\u0002\u202e${"z".repeat(400)}\n`, "p.jsonl");
  assert.deepEqual(set.prompts, ["ok"]);
  assert.match(set.skipped[0].reason, /^invalid JSON/);
  assert.ok(!RAW.test(set.skipped[0].reason) && set.skipped[0].reason.length < 300, set.skipped[0].reason);
  throwsWith(() => ppoConfig({ ["bad\u0000key"]: 1 }), /unknown key "bad\\x00key"/);
  throwsWith(
    () => ppoConfig({ kl_penalty: "\u202e".repeat(200) } as Record<string, unknown>),
    /"kl_penalty" must be one of .*more characters/,
  );
});

Deno.test("tokenizer files with impossible token ids are refused, naming the file and the token", async () => {
  const dir = await Deno.makeTempDir({ prefix: "input_errors_" });
  try {
    await Deno.writeTextFile(`${dir}/merges.txt`, "#version: 0.2\nh e\n");
    for (const bad of [-1, 1.5, 2 ** 32, "7", null]) {
      await Deno.writeTextFile(`${dir}/vocab.json`, JSON.stringify({ h: 0, e: 1, he: bad }));
      await assert.rejects(
        loadTokenizer(dir),
        new RegExp(`${dir}/vocab\\.json: token "he" has id .*; ids must be integers`),
      );
    }
    await Deno.writeTextFile(`${dir}/vocab.json`, "[1, 2]");
    await assert.rejects(loadTokenizer(dir), /vocab\.json must hold a JSON object mapping tokens to ids/);
    await Deno.writeTextFile(`${dir}/vocab.json`, JSON.stringify({ h: 0, e: 1, he: 2 }));
    await Deno.writeTextFile(`${dir}/added_tokens.json`, JSON.stringify({ "<x>": 1e12 }));
    await assert.rejects(loadTokenizer(dir), /added_tokens\.json: token "<x>" has id 1000000000000/);
    await Deno.remove(`${dir}/added_tokens.json`);
    await Deno.writeTextFile(
      `${dir}/tokenizer_config.json`,
      JSON.stringify({ added_tokens_decoder: { "x1": { content: "<y>" } } }),
    );
    await assert.rejects(
      loadTokenizer(dir),
      /tokenizer_config\.json \(added_tokens_decoder\): token "<y>" has id "x1"/,
    );
    await Deno.remove(`${dir}/tokenizer_config.json`);
    assert.equal((await loadTokenizer(dir)).vocabFile, `${dir}/vocab.json`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ppoConfig: the seed must be an integer the 32-bit PRNGs distinguish", () => {
  for (const seed of [2 ** 32, -1, 1.5, 2 ** 53]) {
    throwsWith(() => ppoConfig({ seed }), /"seed" must be an integer in \[0, 4294967295\]/);
  }
  assert.equal(ppoConfig({ seed: 2 ** 32 - 1 }).seed, 4294967295);
});
