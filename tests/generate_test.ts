import { assert, ready } from "./helpers.ts";
import { fixtureDir } from "./fixtures.ts";
import { noGrad, readAll, tensor, tidy } from "../engine/tensor.ts";
import { loadGPT2 } from "../models/auto.ts";
import { generate, TokenSampler } from "../models/generate.ts";
import type { GPT2LMHeadModel } from "../models/gpt2.ts";

let cached: GPT2LMHeadModel | null = null;
async function model(): Promise<GPT2LMHeadModel> {
  cached ??= (await loadGPT2(fixtureDir("gpt2-tiny"))).eval();
  return cached;
}

/** Greedy decoding by re-running the whole sequence each step (no cache), argmax on the CPU. */
async function greedyNoCache(m: GPT2LMHeadModel, prompt: number[], n: number, eos: number): Promise<number[]> {
  const seq = [...prompt];
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const [logits] = await readAll([
      tidy(() => noGrad(() => m.forward({ inputIds: tensor(seq, [1, seq.length], "i32") }).logits!)),
    ]);
    const V = m.config.vocab_size;
    const last = logits.subarray((seq.length - 1) * V);
    let best = 0;
    for (let v = 1; v < V; v++) if (last[v] > last[best]) best = v;
    out.push(best);
    seq.push(best);
    if (best === eos) break;
  }
  return out;
}

Deno.test("greedy generation with the KV cache equals recomputation without it", async () => {
  await ready;
  const m = await model();
  const prompts = [[2, 100, 200, 300], [2, 7]];
  const got = await generate(m, prompts, { maxNewTokens: 8, eosTokenId: -1 as unknown as number });
  for (let b = 0; b < prompts.length; b++) {
    const want = await greedyNoCache(m, prompts[b], 8, -1);
    assert.deepEqual(got.responses[b], want, `row ${b}`);
  }
});

Deno.test("left-padded prompt batches give each row's unbatched greedy output; greedy is deterministic", async () => {
  await ready;
  const m = await model();
  const prompts = [[2, 11, 12, 13, 14, 15], [2, 40], [2, 900, 901]];
  const batched = await generate(m, prompts, { maxNewTokens: 6, eosTokenId: null });
  assert.deepEqual(batched.promptMask[1], [0, 0, 0, 0, 1, 1]);
  for (let b = 0; b < prompts.length; b++) {
    const single = await generate(m, [prompts[b]], { maxNewTokens: 6, eosTokenId: null });
    assert.deepEqual(batched.responses[b], single.responses[0], `row ${b}`);
  }
  const again = await generate(m, prompts, { maxNewTokens: 6, eosTokenId: null });
  assert.deepEqual(again.tokens, batched.tokens);
});

Deno.test("sampling: same seed reproduces, another seed differs, EOS stops a row and pads after it", async () => {
  await ready;
  const m = await model();
  const prompts = [[2, 5, 6], [2, 8, 9], [2, 10]];
  const opts = { maxNewTokens: 12, doSample: true, temperature: 1.5, seed: 7, eosTokenId: null };
  const a = await generate(m, prompts, opts);
  const b = await generate(m, prompts, opts);
  const c = await generate(m, prompts, { ...opts, seed: 8 });
  assert.deepEqual(a.tokens, b.tokens);
  assert.notDeepEqual(a.tokens, c.tokens);
  // Make the first sampled token of row 0 the EOS: everything after it must be the pad id.
  const eos = a.tokens[0][2];
  const d = await generate(m, prompts, { ...opts, eosTokenId: eos, padTokenId: 0 });
  const row = d.tokens[0];
  const k = row.indexOf(eos);
  assert.ok(k >= 0 && k <= 2, `EOS expected within the first 3 tokens, got ${row}`);
  assert.ok(row.slice(k + 1).every((t) => t === 0), `pad after EOS: ${row}`);
  assert.deepEqual(d.responses[0], row.slice(0, k + 1));
});

Deno.test("minNewTokens forbids EOS before it", async () => {
  await ready;
  const m = await model();
  const first = (await generate(m, [[2, 5, 6]], { maxNewTokens: 1, eosTokenId: null })).tokens[0][0];
  const out = await generate(m, [[2, 5, 6]], { maxNewTokens: 4, eosTokenId: first, minNewTokens: 2 });
  assert.notEqual(out.tokens[0][0], first);
  assert.notEqual(out.tokens[0][1], first);
});

function histogram(rows: Int32Array, V: number): number[] {
  const h = new Array(V).fill(0);
  for (const t of rows) h[t]++;
  return h;
}

/** Samples `rows` independent draws (one per row) of the same logits and returns the counts. */
async function draw(logits: number[], rows: number, opts: ConstructorParameters<typeof TokenSampler>[3]) {
  const V = logits.length;
  const s = new TokenSampler(rows, 1, V, { doSample: true, eosTokenId: -1, padTokenId: 0, ...opts });
  const l = tensor(Array.from({ length: rows }, () => logits).flat(), [rows, V]);
  s.step(l, 0);
  const [toks] = await readAll([s.tokens]);
  s.dispose();
  l.dispose();
  return histogram(toks as Int32Array, V);
}

function assertMatches(counts: number[], probs: number[], what: string) {
  const n = counts.reduce((a, b) => a + b, 0);
  probs.forEach((p, i) => {
    const sd = Math.sqrt(n * p * (1 - p));
    assert.ok(Math.abs(counts[i] - n * p) <= 5 * sd + 1, `${what}: token ${i}: ${counts[i]} vs expected ${n * p}`);
  });
}

const LOGITS = [1.0, 2.0, 0.5, -1.0, 1.5, 0.0];
const softmax = (l: number[], t = 1) => {
  const e = l.map((x) => Math.exp(x / t));
  const z = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / z);
};

Deno.test("sampler: draws match softmax probabilities, with temperature", async () => {
  await ready;
  assertMatches(await draw(LOGITS, 5000, { seed: 3 }), softmax(LOGITS), "T=1");
  assertMatches(await draw(LOGITS, 5000, { seed: 4, temperature: 0.5 }), softmax(LOGITS, 0.5), "T=0.5");
});

Deno.test("sampler: top-k and top-p keep the right tokens and renormalise", async () => {
  await ready;
  // top-k 2 keeps tokens 1 (2.0) and 4 (1.5)
  const pk = softmax([2.0, 1.5]);
  assertMatches(await draw(LOGITS, 5000, { seed: 5, topK: 2 }), [0, pk[0], 0, 0, pk[1], 0], "top-k 2");
  // top-p: sorted probabilities; keep the smallest prefix with mass >= p
  const p = softmax(LOGITS);
  const order = [...p.keys()].sort((a, b) => p[b] - p[a]);
  let mass = 0;
  const kept = new Set<number>();
  for (const i of order) {
    if (mass >= 0.7) break;
    kept.add(i);
    mass += p[i];
  }
  const z = [...kept].reduce((a, i) => a + p[i], 0);
  const want = p.map((x, i) => kept.has(i) ? x / z : 0);
  assertMatches(await draw(LOGITS, 5000, { seed: 6, topP: 0.7 }), want, "top-p 0.7");
});

Deno.test("generate validates its options and prompts", async () => {
  await ready;
  const m = await model();
  await assert.rejects(generate(m, [[2, 99999]], { maxNewTokens: 2 }), /outside the vocabulary/);
  await assert.rejects(generate(m, [[]], { maxNewTokens: 2 }), /prompt 0 is empty/);
  await assert.rejects(generate(m, [[2]], { maxNewTokens: 0 }), /maxNewTokens/);
  await assert.rejects(generate(m, [[2]], { maxNewTokens: 2, temperature: 0 }), /temperature/);
  await assert.rejects(generate(m, [[2, 3]], { maxNewTokens: 63 }), /exceeds n_positions/);
});

Deno.test("sampler: suppressed tokens are never drawn; the rest renormalise (also with top-k, greedy, past word 0)", async () => {
  await ready;
  // Suppress token 1 (the most likely) and 4: draws follow the softmax of the others.
  const rest = softmax([1.0, 0.5, -1.0, 0.0]);
  const want = [rest[0], 0, rest[1], rest[2], 0, rest[3]];
  assertMatches(await draw(LOGITS, 5000, { seed: 6, suppressTokens: [1, 4] }), want, "suppress 1, 4");
  // top-k 2 applies after suppression: tokens 0 (1.0) and 2 (0.5).
  const k2 = softmax([1.0, 0.5]);
  assertMatches(
    await draw(LOGITS, 5000, { seed: 7, topK: 2, suppressTokens: [1, 4] }),
    [k2[0], 0, k2[1], 0, 0, 0],
    "k2",
  );
  // Greedy over a 70-token vocabulary whose best tokens sit in the third bit-set word.
  const wide = Array.from({ length: 70 }, (_, i) => i === 66 ? 9 : i === 65 ? 8 : i === 3 ? 7 : 0);
  const greedy = await draw(wide, 4, { doSample: false, suppressTokens: [66, 65] });
  assert.equal(greedy[3], 4, "the best unsuppressed token");
  await assert.rejects(draw(LOGITS, 1, { suppressTokens: [6] }), /suppressTokens has 6, outside the vocabulary \(6\)/);
});
