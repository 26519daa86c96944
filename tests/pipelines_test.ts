// transformers-style entry points: Auto*.fromPretrained and pipeline(), checked against the loaders they wrap.
import { assert, ready } from "./helpers.ts";
import { fixtureDir, seedLikePolicyDir } from "./fixtures.ts";
import {
  AutoModelForCausalLM,
  AutoModelForSequenceClassification,
  AutoTokenizer,
  pipeline,
} from "../models/pipelines.ts";
import { classifyTexts, promptFormat } from "../models/text.ts";
import { generate } from "../models/generate.ts";

Deno.test("Auto*.fromPretrained load the folder's model (eval mode) and tokenizer", async () => {
  await ready;
  const dir = await seedLikePolicyDir({ weights: "model.safetensors" });
  const lm = await AutoModelForCausalLM.fromPretrained(dir);
  assert.equal(lm.training, false);
  assert.equal(lm.config.model_type ?? "gpt2", "gpt2");
  const cls = await AutoModelForSequenceClassification.fromPretrained(fixtureDir("bert-cls-tiny"));
  assert.deepEqual(cls.labels.length, cls.config.num_labels);
  const tok = await AutoTokenizer.fromPretrained(dir);
  assert.ok(tok.encode("你好").length > 0);
  for (const p of [...lm.parameters(), ...cls.parameters()]) p.dispose();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("pipeline('sentiment-analysis'): top label per text, all labels with topK null, as classifyTexts", async () => {
  await ready;
  const classify = await pipeline("sentiment-analysis", fixtureDir("bert-cls-tiny"));
  const texts = ["这家店很好", "太差了"];
  const top = await classify(texts) as { label: string; score: number }[];
  const { probabilities } = await classifyTexts(classify.model, classify.tokenizer, texts);
  top.forEach((r, i) => {
    const best = probabilities[i].indexOf(Math.max(...probabilities[i]));
    assert.equal(r.label, classify.model.labels[best]);
    assert.ok(Math.abs(r.score - probabilities[i][best]) < 1e-7);
  });
  const all = await classify("这家店很好", { topK: null }) as { label: string; score: number }[][];
  assert.equal(all[0].length, classify.model.config.num_labels);
  assert.ok(Math.abs(all[0].reduce((s, r) => s + r.score, 0) - 1) < 1e-5);
  assert.ok(all[0][0].score >= all[0][1].score);
  classify.dispose();
});

Deno.test("pipeline('text-generation'): the prompt plus the same reply generate() gives; returnFullText false", async () => {
  await ready;
  const dir = await seedLikePolicyDir({ weights: "model.safetensors" });
  const gen = await pipeline("text-generation", dir);
  const [full] = await gen("今天天气", { maxNewTokens: 5, doSample: true, seed: 4 });
  const fmt = promptFormat(gen.tokenizer, gen.model.config);
  const ref = await generate(gen.model, [fmt.encode("今天天气")], {
    maxNewTokens: 5,
    doSample: true,
    seed: 4,
    eosTokenId: fmt.eosTokenId,
    padTokenId: fmt.padTokenId,
  });
  assert.equal(full.generatedText, "今天天气" + fmt.decode(ref.responses[0]));
  const [reply] = await gen(["今天天气"], { maxNewTokens: 5, doSample: true, seed: 4, returnFullText: false });
  assert.equal(reply.generatedText, fmt.decode(ref.responses[0]));
  gen.dispose();
  await Deno.remove(dir, { recursive: true });
  await assert.rejects(pipeline("translation" as "text-generation", dir), /unknown task "translation"/);
});
