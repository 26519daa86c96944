import { runtime } from "../engine/tensor.ts";
import { assert, ready } from "./helpers.ts";
import {
  buildVocab,
  cacheKey,
  CLASSIFIER_DEFAULTS,
  classifierBatch,
  cleanSentence,
  CLS_ID,
  encodePrompt,
  expandContractions,
  fitSteps,
  formatSentence,
  GPT2_PRETRAIN_DEFAULTS,
  loadDemoData,
  lrAt,
  makePrompts,
  MASK_ID,
  packRows,
  PAD_ID,
  prepareDefault,
  pretrainGPT2,
  promptSplit,
  SEP_ID,
  SPECIAL_TOKENS,
  splitTrainTest,
  UNK_ID,
  writeTokenizerFiles,
} from "../app/demo/mod.ts";
import { loadGPT2, loadSequenceClassifier } from "../models/auto.ts";
import { loadTokenizer } from "../models/tokenizer/load.ts";
import { generate } from "../models/generate.ts";

const quiet = () => {};

Deno.test("demo data: cleaning, contractions, vocabulary, splits and prompts are deterministic", () => {
  assert.equal(cleanSentence("  I DON\u2019T like it\u2026 (really) "), "i do not like it... really");
  assert.equal(cleanSentence("see https://x.com"), null);
  assert.equal(cleanSentence("emoji \u{1F600} here"), null);
  assert.equal(cleanSentence("1234 !!"), null);
  assert.equal(expandContractions("it's john's, we'll see, i can't"), "it is john's, we will see, i can not");
  const v = buildVocab([{ words: [["b", "a", "b"], ["c"]], weight: 1 }, { words: [["c"]], weight: 5 }], 7);
  assert.deepEqual(v, [...SPECIAL_TOKENS, "c", "b"]);
  assert.throws(() => buildVocab([], 5), /size must be/);
  const items = Array.from({ length: 20 }, (_, i) => i);
  const [tr, te] = splitTrainTest(items, 0.25, 7);
  assert.equal(te.length, 5);
  assert.deepEqual([...tr, ...te].sort((a, b) => a - b), items);
  assert.deepEqual(splitTrainTest(items, 0.25, 7), [tr, te]);
  const p = makePrompts(
    ["the food was great .", "the food was great .", "x y", "i love this place a lot"],
    new Set(
      ["the", "food", "was", "great", "i", "love", "this", "place"],
    ),
    10,
    1,
  );
  assert.ok(p.length >= 1 && p.length === new Set(p).size);
  for (const q of p) assert.ok(q.split(" ").length >= 2 && q.split(" ").length <= 4, q);
});

Deno.test("demo data: npm sources give deduplicated, labelled sets and a shared vocabulary", async () => {
  const d = await loadDemoData();
  assert.equal(d.vocab.length, d.options.vocabSize);
  assert.deepEqual(d.vocab.slice(0, 5), ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]);
  assert.deepEqual([PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID], [0, 1, 2, 3, 4]);
  assert.equal(new Set(d.vocab).size, d.vocab.length);
  assert.ok(d.sentimentTrain.length > 2000 && d.sentimentTest.length > 400);
  const texts = [...d.sentimentTrain, ...d.sentimentTest].map((x) => x.text);
  assert.equal(new Set(texts).size, texts.length, "sentiment sentences are unique across the splits");
  for (const labels of [d.sentimentTrain, d.sentimentTest].map((s) => new Set(s.map((x) => x.label)))) {
    assert.deepEqual([...labels].sort(), [0, 1]);
  }
  assert.ok(d.lmTrain.length > 5000 && d.lmHeldOut.length === d.options.lmHeldOut);
  const held = new Set(d.lmHeldOut);
  assert.ok(!d.lmTrain.some((s) => held.has(s)), "held-out LM sentences are not trained on");
  assert.ok(d.prompts.length >= 200 && new Set(d.prompts).size === d.prompts.length);
  const again = await loadDemoData();
  assert.deepEqual([again.vocab, again.prompts, again.lmTrain], [d.vocab, d.prompts, d.lmTrain]);
});

Deno.test("demo vocab: loadTokenizer reads it (specials, round trip, [UNK]); prompts are [CLS] … [SEP]", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const vocab = [...SPECIAL_TOKENS, "the", "food", "was", "great", ".", "not", "do", "i", "it", "like"];
    await writeTokenizerFiles(dir, vocab, "gpt2");
    const tok = await loadTokenizer(dir);
    assert.deepEqual([tok.padTokenId, tok.unkTokenId, tok.clsTokenId, tok.sepTokenId, tok.maskTokenId], [
      0,
      1,
      2,
      3,
      4,
    ]);
    assert.deepEqual([tok.bosTokenId, tok.eosTokenId], [CLS_ID, SEP_ID]);
    const ids = tok.encode("The food was GREAT.");
    assert.deepEqual(ids, [2, 5, 6, 7, 8, 9, 3]);
    assert.equal(tok.decode(ids, { skipSpecialTokens: true }), "the food was great.");
    assert.deepEqual(tok.encode("the soup", { addSpecialTokens: false }), [5, UNK_ID]);
    assert.deepEqual(encodePrompt(tok, "i do not"), [CLS_ID, 12, 11, 10, SEP_ID]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("demo pretrain helpers: packing, batch shapes, schedule and time budget", () => {
  assert.deepEqual(formatSentence([5, 6, 7], 2), {
    ids: [CLS_ID, 5, 6, SEP_ID, 7, SEP_ID],
    labels: [-100, 5, 6, -100, 7, SEP_ID],
  });
  assert.deepEqual(formatSentence([5, 6], 0), { ids: [CLS_ID, 5, 6, SEP_ID], labels: [-100, 5, 6, SEP_ID] });
  const r = () => 0.99;
  assert.deepEqual([
    promptSplit(10, 2, 4, r),
    promptSplit(3, 2, 4, r),
    promptSplit(1, 2, 4, r),
    promptSplit(9, 0, 0, r),
  ], [4, 2, 0, 0]);
  const segs = [[5, 6], [7], [8, 9, 10, 11, 12], [13]].map((w) => formatSentence(w, 0));
  const stream = { it: segs[Symbol.iterator]() };
  const b = packRows(stream, 2, 6);
  assert.deepEqual([...b.ids], [CLS_ID, 5, 6, SEP_ID, PAD_ID, PAD_ID, CLS_ID, 7, SEP_ID, PAD_ID, PAD_ID, PAD_ID]);
  assert.deepEqual([...b.labels], [-100, 5, 6, SEP_ID, -100, -100, -100, 7, SEP_ID, -100, -100, -100]);
  assert.deepEqual([...b.positions].slice(0, 4), [0, 1, 2, 3]);
  const c = packRows(stream, 1, 6); // the pending long sentence is cut to the row
  assert.deepEqual([...c.ids], [CLS_ID, 8, 9, 10, 11, 12]);
  const cb = classifierBatch([{ ids: [2, 5, 3], label: 1 }, { ids: [2, 5, 6, 7, 8, 9, 10, 11, 12, 3], label: 0 }], 8);
  assert.equal(cb.T % 8, 0);
  assert.deepEqual(cb.mask[0].slice(0, 4), [1, 1, 1, 0]);
  assert.equal(cb.ids[cb.T + 7], SEP_ID, "a long row is cut to maxLen and keeps its [SEP]");
  assert.ok(lrAt(0, 100, 1, 10, 0.1) < lrAt(9, 100, 1, 10, 0.1));
  assert.ok(Math.abs(lrAt(99, 100, 1, 10, 0.1) - 0.1) < 0.01);
  assert.equal(fitSteps(400, 100, 50, 50, 25, 0), 400);
  assert.equal(fitSteps(400, 100, 50, 50, 25, 100), 200); // 0.5 s/step, 50 s left → 100 more steps
  assert.equal(fitSteps(400, 100, 120, 50, 25, 100), 100);
});

Deno.test("demo pretraining: a tiny GPT-2 lowers its loss", async () => {
  await ready;
  const lines: string[] = [];
  const rows = Array.from({ length: 24 }, (_, i) => [5 + (i % 4), 9 + (i % 3), 12, 13 + (i % 2)]);
  const r = await pretrainGPT2(rows, rows.slice(0, 8), 16, {
    nLayer: 1,
    nEmbd: 16,
    nHead: 2,
    nPositions: 16,
    steps: 40,
    batchSize: 4,
    seqLen: 16,
    lr: 1e-2,
    warmupSteps: 4,
    logEvery: 20,
    maxSeconds: 0,
  }, (l) => lines.push(l));
  try {
    assert.equal(r.steps, 40);
    assert.equal(r.losses.length, 40);
    // Progress: step 1 alone (it compiles the kernels), then every logEvery steps with the pace and an ETA.
    const steps = lines.filter((l) => l.startsWith("gpt2 step"));
    assert.deepEqual(steps.map((l) => l.split(" ")[2]), ["1/40", "20/40", "40/40"], lines.join("\n"));
    if (runtime().handle.backend === "cpu") {
      assert.doesNotMatch(steps[0], /compiled/, "the CPU backend compiles nothing");
    } else assert.match(steps[0], /s\/step .*\(the first step compiled [1-9]\d* GPU kernels\)/);
    assert.match(steps[1], /[\d.]+ s\/step .* ETA \d/);
    const first = r.losses.slice(0, 5).reduce((a, b) => a + b) / 5;
    assert.ok(r.finalLoss < first - 1, `loss ${first} → ${r.finalLoss}`);
    assert.ok(Number.isFinite(r.heldOutLoss) && r.heldOutLoss < first);
  } finally {
    for (const p of r.model.parameters()) p.dispose();
  }
});

Deno.test("demo: no time cap by default; an opt-in cap cuts training and says so", async () => {
  await ready;
  assert.equal(GPT2_PRETRAIN_DEFAULTS.maxSeconds, 0, "the default GPT-2 trains the same steps on every machine");
  assert.equal(CLASSIFIER_DEFAULTS.maxSeconds, 0, "the default classifier trains the same steps on every machine");
  const rows = Array.from({ length: 24 }, (_, i) => [5 + (i % 4), 9 + (i % 3), 12, 13 + (i % 2)]);
  const lines: string[] = [];
  const cfg = { nLayer: 1, nEmbd: 16, nHead: 2, nPositions: 16, steps: 12, batchSize: 4, seqLen: 16, logEvery: 2 };
  // A cap far below one step's time: after the step-1 readback (which sets the pace), the next readback cuts.
  const r = await pretrainGPT2(rows, [], 16, { ...cfg, maxSeconds: 1e-3 }, (l) => lines.push(l));
  try {
    assert.ok(r.steps < 12, `ran ${r.steps} steps`);
    assert.equal(r.losses.length, r.steps);
    assert.ok(lines.some((l) => l.includes(`training cut to ${r.steps} of 12 steps`)), lines.join("\n"));
  } finally {
    for (const p of r.model.parameters()) p.dispose();
  }
});

Deno.test("demo prepareDefault: tiny build writes loadable folders; the manifest makes the second call reuse them", async () => {
  await ready;
  const cacheDir = await Deno.makeTempDir();
  const options = {
    cacheDir,
    log: quiet,
    samples: 1,
    data: { testFraction: 0.05 },
    gpt2: { nLayer: 1, nEmbd: 16, nHead: 2, steps: 6, batchSize: 8, seqLen: 16, logEvery: 3, maxSeconds: 0 },
    classifier: { hidden: 16, heads: 2, intermediate: 32, steps: 4, logEvery: 2, maxSeconds: 0 },
  };
  try {
    const a = await prepareDefault(options);
    assert.equal(a.cached, false);
    assert.ok(a.prompts.length >= 200);
    assert.ok(Number.isFinite(a.metrics.lmLoss) && a.metrics.classifierAccuracy >= 0);
    assert.deepEqual([a.metrics.gpt2Steps, a.metrics.classifierSteps], [6, 4]);
    const manifestFile = `${cacheDir}/manifest.json`;
    const manifest = JSON.parse(await Deno.readTextFile(manifestFile));
    assert.equal(manifest.key, a.key);
    assert.deepEqual(manifest.prompts, a.prompts, "the manifest holds the prompts (the browser page reads them)");
    const policy = await loadGPT2(a.policyDir);
    const reward = await loadSequenceClassifier(a.rewardDir);
    const tok = await loadTokenizer(a.policyDir);
    assert.equal(tok.vocabSize, policy.config.vocab_size);
    assert.deepEqual([policy.config.bos_token_id, policy.config.eos_token_id, policy.config.pad_token_id], [2, 3, 0]);
    assert.deepEqual(reward.labels, ["negative", "positive"]);
    assert.equal(
      await Deno.readTextFile(`${a.policyDir}/vocab.txt`),
      await Deno.readTextFile(`${a.rewardDir}/vocab.txt`),
    );
    const out = await generate(policy.eval(), [encodePrompt(tok, a.prompts[0])], { maxNewTokens: 3 });
    assert.equal(out.tokens[0].length, 3);
    for (const p of [...policy.parameters(), ...reward.parameters()]) p.dispose();

    // A cache written before manifests held the prompts gets them when it is reused.
    await Deno.writeTextFile(manifestFile, JSON.stringify({ ...manifest, prompts: undefined }));
    const t0 = performance.now();
    const b = await prepareDefault(options);
    assert.deepEqual(JSON.parse(await Deno.readTextFile(manifestFile)).prompts, a.prompts);
    assert.equal(b.cached, true);
    assert.equal(b.key, a.key);
    assert.deepEqual(b.metrics, a.metrics);
    assert.deepEqual(b.prompts, a.prompts);
    assert.ok(performance.now() - t0 < 10_000);
    // Another key (changed hyper-parameters or data) does not match the manifest, so it rebuilds.
    const data = await loadDemoData(options.data);
    const g = { ...GPT2_PRETRAIN_DEFAULTS, ...options.gpt2 }, k = { ...CLASSIFIER_DEFAULTS, ...options.classifier };
    assert.equal(await cacheKey(data, g, k), a.key);
    assert.equal(await cacheKey(data, { ...g, logEvery: 7 }, k), a.key);
    assert.notEqual(await cacheKey(data, { ...g, steps: 5 }, k), a.key);
    assert.notEqual(await cacheKey(data, g, { ...k, lr: 1e-3 }), a.key);
    assert.notEqual(await cacheKey({ ...data, prompts: data.prompts.slice(1) }, g, k), a.key);
  } finally {
    await Deno.remove(cacheDir, { recursive: true });
  }
});
