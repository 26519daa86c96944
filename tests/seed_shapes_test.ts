/**
 * The seed project's real model shapes load from PyTorch checkpoints in the seed's layout
 * (`pytorch_model.bin` + `config.json` + `vocab.txt`), filled with random N(0, 0.02²)-like weights:
 * - GPT2-dialogbot-base-chinese: GPT2LMHeadModel, 10 layers, n_embd 768, 12 heads, 300 positions,
 *   vocab 13,317, with the old `attn.bias` causal-mask buffers and a tied `lm_head.weight`;
 * - a BERT-base Chinese sentiment classifier: 12 layers, hidden 768, vocab 21,128, 2 labels, with the
 *   int64 `bert.embeddings.position_ids` buffer.
 * Also checks that `tests/torch_writer.ts` writes checkpoints that `formats/torch_checkpoint.ts` reads back exactly.
 */
import { assert, ready } from "./helpers.ts";
import { crc32Fast, torchCheckpointBytes, type TorchWriterTensor, writeTorchCheckpoint } from "./torch_writer.ts";
import { parseTorchCheckpoint } from "../formats/torch_checkpoint.ts";
import { crc32, ZipReader } from "../formats/zip.ts";
import { loadGPT2, loadSequenceClassifier } from "../models/auto.ts";
import { generate } from "../models/generate.ts";
import { loadTokenizer } from "../models/tokenizer/mod.ts";
import { noGrad, readAll, runtime, tensor, tidy } from "../engine/tensor.ts";

// ---------------------------------------------------------------- random data

/**
 * Fills `a` with approximately normal values of standard deviation `std` around `mean`: the sum of the four
 * bytes of a xorshift32 word (Irwin–Hall over 4 uniforms), about 3 ns per element.
 */
function fillNormal(a: Float32Array, seed: number, std = 0.02, mean = 0): Float32Array {
  let s = (seed * 0x9e3779b1) | 0 || 1;
  const k = std / 147.80; // standard deviation of the sum of four uniform bytes
  for (let i = 0; i < a.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    a[i] = mean + ((s & 255) + ((s >>> 8) & 255) + ((s >>> 16) & 255) + ((s >>> 24) & 255) - 510) * k;
  }
  return a;
}

type State = Map<string, TorchWriterTensor | { tiedTo: string }>;

/** A state dict that assigns every tensor random data (LayerNorm weights around 1). */
function randomState(layout: [string, number[]][], seed: number): State {
  const state: State = new Map();
  layout.forEach(([name, shape], i) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const ln = /(LayerNorm|ln_\d|ln_f)\.weight$/.test(name);
    state.set(name, { shape, data: fillNormal(new Float32Array(n), seed * 1000 + i, 0.02, ln ? 1 : 0) });
  });
  return state;
}

/** A BERT-Chinese style vocab.txt of `size` lines: [PAD], [unused1-99], [UNK], [CLS], [SEP], [MASK], ASCII, CJK. */
function vocabTxt(size: number): string {
  const lines = ["[PAD]"];
  for (let i = 1; i < 100; i++) lines.push(`[unused${i}]`);
  lines.push("[UNK]", "[CLS]", "[SEP]", "[MASK]");
  for (let c = 33; c < 127 && lines.length < size; c++) if (c < 65 || c > 90) lines.push(String.fromCharCode(c));
  for (let c = 0x4e00; lines.length < size; c++) lines.push(String.fromCodePoint(c));
  return lines.join("\n") + "\n";
}

function assertFinite(data: ArrayLike<number>, what: string): void {
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i])) assert.fail(`${what}: element ${i} is ${data[i]}`);
  }
}

/** Largest tensor in bytes vs the device's maxStorageBufferBindingSize (reported in the test name's log). */
function checkBindingLimit(layout: [string, number[]][], model: string): void {
  const limit = runtime().maxStorageBindingBytes;
  const [name, shape] = layout.reduce((
    a,
    b,
  ) => (b[1].reduce((x, y) => x * y, 1) > a[1].reduce((x, y) => x * y, 1) ? b : a));
  const bytes = shape.reduce((x, y) => x * y, 4);
  assert.ok(bytes <= limit, `${model}: ${name} [${shape}] is ${bytes} bytes > maxStorageBufferBindingSize ${limit}`);
}

// ---------------------------------------------------------------- writer round trip

Deno.test("torch_writer: checkpoints read back exactly (f32, int64, uint8, scalar, empty, tied, 300+ globals)", async () => {
  const f = fillNormal(new Float32Array(3 * 5 * 7), 1, 1);
  f[0] = -0;
  f[1] = Infinity;
  f[2] = 1e-45;
  const state = new Map<string, TorchWriterTensor | { tiedTo: string }>([
    ["a.weight", { shape: [3, 5, 7], data: f }],
    ["pos", { shape: [1, 6], data: new BigInt64Array([0n, 1n, 2n, 3n, -4n, 2147483647n]) }],
    ["mask", { shape: [1, 1, 2, 2], data: new Uint8Array([1, 0, 1, 1]) }],
    ["scalar", { shape: [], data: new Float32Array([-2.5]) }],
    ["empty", { shape: [0, 4], data: new Float32Array(0) }],
    ["tied", { tiedTo: "a.weight" }],
  ]);
  // Enough distinct tensors that memo indices pass 255 (LONG_BINPUT/LONG_BINGET).
  for (let i = 0; i < 300; i++) state.set(`many.${i}`, { shape: [2], data: new Float32Array([i, -i]) });
  const bytes = torchCheckpointBytes(state);
  const zip = new ZipReader(bytes);
  assert.deepEqual([...zip.entries.keys()].slice(0, 3), ["archive/data.pkl", "archive/byteorder", "archive/data/0"]);
  for (const [name, e] of zip.entries) {
    assert.equal(e.method, 0, name);
    if (name.startsWith("archive/data/")) assert.equal(e.dataOffset % 64, 0, `${name} is 64-byte aligned`);
    await zip.read(name); // verifies the CRC-32
  }
  assert.equal(zip.entries.size, 3 + 5 + 300, "one storage per untied tensor");
  const m = await parseTorchCheckpoint(bytes, "written.bin");
  const a = m.get("a.weight")!;
  assert.deepEqual([a.dtype, a.shape, a.sourceDtype], ["f32", [3, 5, 7], "torch.FloatStorage"]);
  assert.deepEqual(new Uint32Array(a.data.buffer, a.data.byteOffset, a.data.length), new Uint32Array(f.buffer));
  const t = m.get("tied")!;
  assert.deepEqual([t.shape, Array.from(t.data)], [[3, 5, 7], Array.from(f)]);
  const pos = m.get("pos")!;
  assert.deepEqual([pos.dtype, pos.shape, Array.from(pos.data)], ["i32", [1, 6], [0, 1, 2, 3, -4, 2147483647]]);
  assert.equal(pos.sourceDtype, "torch.LongStorage");
  assert.deepEqual([m.get("mask")!.shape, Array.from(m.get("mask")!.data)], [[1, 1, 2, 2], [1, 0, 1, 1]]);
  assert.deepEqual([m.get("scalar")!.shape, Array.from(m.get("scalar")!.data)], [[], [-2.5]]);
  assert.deepEqual(m.get("empty")!.shape, [0, 4]);
  assert.deepEqual(Array.from(m.get("many.299")!.data), [299, -299]);
  assert.deepEqual([...m.keys()].slice(0, 6), ["a.weight", "pos", "mask", "scalar", "empty", "tied"]);

  // The streaming writer produces the same bytes; without _metadata too.
  const dir = await Deno.makeTempDir();
  try {
    await writeTorchCheckpoint(`${dir}/x.bin`, state);
    assert.deepEqual(await Deno.readFile(`${dir}/x.bin`), bytes);
    const plain = torchCheckpointBytes(new Map([["w", { shape: [2], data: new Float32Array([1, 2]) }]]), {
      metadata: false,
      archiveName: "model",
    });
    assert.ok(new ZipReader(plain).entries.has("model/data/0"));
    assert.deepEqual(Array.from((await parseTorchCheckpoint(plain, "p.bin")).get("w")!.data), [1, 2]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  assert.throws(() => torchCheckpointBytes({ x: { tiedTo: "nope" } }), /not written before it/);
  assert.throws(() => torchCheckpointBytes({ x: { shape: [3], data: new Float32Array(2) } }), /shape \[3\] needs 3/);
});

Deno.test("torch_writer: crc32Fast agrees with formats/zip.ts crc32", () => {
  const b = new Uint8Array(fillNormal(new Float32Array(1001), 7, 100).buffer);
  for (const n of [0, 1, 7, 8, 9, 63, 4003, 4004]) assert.equal(crc32Fast(b.subarray(0, n)), crc32(b.subarray(0, n)));
});

// ---------------------------------------------------------------- seed models

const GPT2_SEED_CONFIG = {
  architectures: ["GPT2LMHeadModel"],
  activation_function: "gelu_new",
  attn_pdrop: 0.1,
  bos_token_id: 50256, // transformers' GPT2Config defaults, outside this 13,317-token vocabulary
  embd_pdrop: 0.1,
  eos_token_id: 50256,
  initializer_range: 0.02,
  layer_norm_epsilon: 1e-5,
  model_type: "gpt2",
  n_ctx: 300,
  n_embd: 768,
  n_head: 12,
  n_layer: 10,
  n_positions: 300,
  resid_pdrop: 0.1,
  tokenizer_class: "BertTokenizer",
  vocab_size: 13317,
};

Deno.test("seed GPT-2 (GPT2-dialogbot-base-chinese shapes) loads from pytorch_model.bin, runs and generates", async () => {
  await ready;
  const t0 = performance.now();
  const C = 768, V = 13317, P = 300, L = 10;
  const layout: [string, number[]][] = [["transformer.wte.weight", [V, C]], ["transformer.wpe.weight", [P, C]]];
  for (let i = 0; i < L; i++) {
    const p = `transformer.h.${i}.`;
    layout.push([p + "ln_1.weight", [C]], [p + "ln_1.bias", [C]]);
    layout.push([p + "attn.c_attn.weight", [C, 3 * C]], [p + "attn.c_attn.bias", [3 * C]]);
    layout.push([p + "attn.c_proj.weight", [C, C]], [p + "attn.c_proj.bias", [C]]);
    layout.push([p + "ln_2.weight", [C]], [p + "ln_2.bias", [C]]);
    layout.push([p + "mlp.c_fc.weight", [C, 4 * C]], [p + "mlp.c_fc.bias", [4 * C]]);
    layout.push([p + "mlp.c_proj.weight", [4 * C, C]], [p + "mlp.c_proj.bias", [C]]);
  }
  layout.push(["transformer.ln_f.weight", [C]], ["transformer.ln_f.bias", [C]]);
  checkBindingLimit(layout, "GPT-2");
  let state: State | null = randomState(layout, 1);
  // Old checkpoints carry the causal mask as a float buffer per layer (lower-triangular ones).
  const tril = new Float32Array(P * P);
  for (let r = 0; r < P; r++) tril.fill(1, r * P, r * P + r + 1);
  const ordered: State = new Map();
  for (const [name, t] of state) {
    ordered.set(name, t);
    const m = /^transformer\.h\.(\d+)\.ln_1\.bias$/.exec(name);
    if (m) ordered.set(`transformer.h.${m[1]}.attn.bias`, { shape: [1, 1, P, P], data: tril });
  }
  ordered.set("lm_head.weight", { tiedTo: "transformer.wte.weight" });
  const wpe0 = (state.get("transformer.wpe.weight") as TorchWriterTensor).data.slice(0, C) as Float32Array;
  const lnf = (state.get("transformer.ln_f.bias") as TorchWriterTensor).data.slice() as Float32Array;
  const dir = await Deno.makeTempDir({ prefix: "seed_gpt2_" });
  try {
    await writeTorchCheckpoint(`${dir}/pytorch_model.bin`, ordered);
    state = null;
    ordered.clear();
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(GPT2_SEED_CONFIG, null, 2));
    await Deno.writeTextFile(`${dir}/vocab.txt`, vocabTxt(V));
    const t1 = performance.now();
    const model = (await loadGPT2(dir)).eval();
    const tok = await loadTokenizer(dir);
    const t2 = performance.now();
    assert.equal(tok.vocabSize, V);
    assert.equal(model.params.has("lm_head.weight"), false, "the tied head is not a separate parameter");
    const [gotWpe, gotLnf] = await readAll([
      model.params.get("transformer.wpe.weight")!,
      model.params.get("transformer.ln_f.bias")!,
    ]);
    assert.deepEqual(gotWpe.subarray(0, C), wpe0);
    assert.deepEqual(gotLnf, lnf);

    // Dialog prompts as the seed feeds them: [CLS] utterance [SEP].
    const rows = ["你好，在吗", "今天天气很不错"].map((s) => tok.encode(s));
    assert.deepEqual(rows.map((r) => [r[0], r[r.length - 1]]), [[101, 102], [101, 102]]);
    assert.deepEqual(rows.map((r) => r.length), [7, 9]);
    const ids = [rows[0].concat([0]), rows[1].slice(0, 8)]; // batch 2 × seq 8 for the plain forward
    const logits = noGrad(() => tidy(() => model.forward({ inputIds: tensor(ids.flat(), [2, 8], "i32") }).logits!));
    assert.deepEqual(logits.shape, [2, 8, V]);
    const [lg] = await readAll([logits]);
    logits.dispose();
    assertFinite(lg, "GPT-2 logits");
    const t3 = performance.now();

    // Two new tokens for prompts of different lengths (left padding), [SEP] as EOS as in the seed.
    const out = await generate(model, rows, { maxNewTokens: 2, eosTokenId: tok.sepTokenId, padTokenId: 0 });
    assert.equal(out.steps, 2);
    assert.deepEqual(out.promptIds.map((r) => r.length), [9, 9]);
    for (const r of out.tokens) {
      assert.equal(r.length, 2);
      for (const id of r) assert.ok(Number.isInteger(id) && id >= 0 && id < V, `token ${id}`);
    }
    const t4 = performance.now();
    for (const p of model.parameters()) p.dispose();
    console.log(
      `seed GPT-2: write ${((t1 - t0) / 1000).toFixed(1)} s, load ${((t2 - t1) / 1000).toFixed(1)} s, ` +
        `forward ${((t3 - t2) / 1000).toFixed(1)} s, generate ${((t4 - t3) / 1000).toFixed(1)} s`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const BERT_SEED_CONFIG = {
  architectures: ["BertForSequenceClassification"],
  attention_probs_dropout_prob: 0.1,
  classifier_dropout: null,
  directionality: "bidi",
  hidden_act: "gelu",
  hidden_dropout_prob: 0.1,
  hidden_size: 768,
  id2label: { "0": "negative", "1": "positive" },
  initializer_range: 0.02,
  intermediate_size: 3072,
  label2id: { negative: 0, positive: 1 },
  layer_norm_eps: 1e-12,
  max_position_embeddings: 512,
  model_type: "bert",
  num_attention_heads: 12,
  num_hidden_layers: 12,
  pad_token_id: 0,
  pooler_fc_size: 768,
  pooler_num_attention_heads: 12,
  pooler_num_fc_layers: 3,
  pooler_size_per_head: 128,
  pooler_type: "first_token_transform",
  position_embedding_type: "absolute",
  type_vocab_size: 2,
  vocab_size: 21128,
};

Deno.test("seed BERT-base classifier (21,128 vocab, 2 labels) loads from pytorch_model.bin and runs", async () => {
  await ready;
  const t0 = performance.now();
  const C = 768, I = 3072, V = 21128;
  const layout: [string, number[]][] = [
    ["bert.embeddings.word_embeddings.weight", [V, C]],
    ["bert.embeddings.position_embeddings.weight", [512, C]],
    ["bert.embeddings.token_type_embeddings.weight", [2, C]],
    ["bert.embeddings.LayerNorm.weight", [C]],
    ["bert.embeddings.LayerNorm.bias", [C]],
  ];
  for (let i = 0; i < 12; i++) {
    const p = `bert.encoder.layer.${i}.`;
    for (const n of ["query", "key", "value"]) {
      layout.push([`${p}attention.self.${n}.weight`, [C, C]], [`${p}attention.self.${n}.bias`, [C]]);
    }
    layout.push([p + "attention.output.dense.weight", [C, C]], [p + "attention.output.dense.bias", [C]]);
    layout.push([p + "attention.output.LayerNorm.weight", [C]], [p + "attention.output.LayerNorm.bias", [C]]);
    layout.push([p + "intermediate.dense.weight", [I, C]], [p + "intermediate.dense.bias", [I]]);
    layout.push([p + "output.dense.weight", [C, I]], [p + "output.dense.bias", [C]]);
    layout.push([p + "output.LayerNorm.weight", [C]], [p + "output.LayerNorm.bias", [C]]);
  }
  layout.push(["bert.pooler.dense.weight", [C, C]], ["bert.pooler.dense.bias", [C]]);
  layout.push(["classifier.weight", [2, C]], ["classifier.bias", [2]]);
  checkBindingLimit(layout, "BERT");
  const params = randomState(layout, 2);
  // BertEmbeddings registers position_ids before its submodules, so it comes first in the state dict.
  const state: State = new Map([["bert.embeddings.position_ids", {
    shape: [1, 512],
    data: BigInt64Array.from({ length: 512 }, (_, i) => BigInt(i)),
  }]]);
  for (const [k, v] of params) state.set(k, v);
  const classifier = (params.get("classifier.weight") as TorchWriterTensor).data.slice() as Float32Array;
  const dir = await Deno.makeTempDir({ prefix: "seed_bert_" });
  try {
    await writeTorchCheckpoint(`${dir}/pytorch_model.bin`, state);
    state.clear();
    params.clear();
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(BERT_SEED_CONFIG, null, 2));
    await Deno.writeTextFile(`${dir}/vocab.txt`, vocabTxt(V));
    const t1 = performance.now();
    const model = await loadSequenceClassifier(dir);
    const tok = await loadTokenizer(dir);
    const t2 = performance.now();
    assert.deepEqual(model.labels, ["negative", "positive"]);
    assert.equal(tok.vocabSize, V);
    const [gotCls] = await readAll([model.params.get("classifier.weight")!]);
    assert.deepEqual(gotCls, classifier);

    const enc = tok.encodeBatch(["这部电影真好看", "太差劲了"], { padding: "longest" });
    assert.deepEqual(enc.inputIds.map((r) => r.length), [9, 9]);
    const ids = enc.inputIds.map((r) => r.slice(0, 8)); // batch 2 × seq 8
    const mask = enc.attentionMask.map((r) => r.slice(0, 8));
    const logits = noGrad(() =>
      tidy(() => model.forward({ inputIds: tensor(ids.flat(), [2, 8], "i32"), attentionMask: mask }).logits)
    );
    assert.deepEqual(logits.shape, [2, 2]);
    const [lg] = await readAll([logits]);
    logits.dispose();
    assertFinite(lg, "BERT logits");
    const t3 = performance.now();
    for (const p of model.parameters()) p.dispose();
    console.log(
      `seed BERT: write ${((t1 - t0) / 1000).toFixed(1)} s, load ${((t2 - t1) / 1000).toFixed(1)} s, ` +
        `forward ${((t3 - t2) / 1000).toFixed(1)} s; logits ${Array.from(lg, (x) => x.toFixed(4)).join(" ")}`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
