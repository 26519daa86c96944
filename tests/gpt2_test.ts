import { assert, assertClose, ready } from "./helpers.ts";
import { fixtureDir, reference, rows } from "./fixtures.ts";
import { noGrad, readAll, tensor, tidy } from "../engine/tensor.ts";
import { backward, zeroGrad } from "../engine/autograd.ts";
import { loadGPT2, savePretrained } from "../models/auto.ts";
import type { GPT2LMHeadModel } from "../models/gpt2.ts";
import { slice } from "../engine/ops/shape.ts";

async function checkAgainstReference(model: GPT2LMHeadModel) {
  const ref = await reference("gpt2-tiny");
  const ids = ref.get("input_ids")!;
  const input = tensor(ids.data, ids.shape, "i32");
  const out = model.forward({ inputIds: input, labels: input, outputHidden: true });
  backward(out.loss!);
  const [logits, hidden, loss] = await readAll([out.logits!, out.hidden!, out.loss!]);
  assertClose(logits, ref.get("logits")!.data, 1e-4, 0, "logits");
  assertClose(hidden, ref.get("last_hidden")!.data, 1e-4, 0, "last hidden state");
  assertClose(loss, ref.get("loss")!.data, 1e-4, 0, "loss");
  const names = [...model.params.keys()];
  const grads = await readAll(names.map((n) => model.params.get(n)!.grad!));
  names.forEach((n, i) => assertClose(grads[i], ref.get(`grad.${n}`)!.data, 1e-5, 1e-3, `grad of ${n}`));
  zeroGrad(model.parameters());
}

Deno.test("GPT-2 from model.safetensors: logits, hidden state, loss and every gradient match transformers", async () => {
  await ready;
  const dir = fixtureDir("gpt2-tiny");
  const model = await loadGPT2(dir);
  await checkAgainstReference(model);
});

Deno.test("GPT-2 from pytorch_model.bin matches transformers too", async () => {
  await ready;
  const dir = await Deno.makeTempDir();
  const src = fixtureDir("gpt2-tiny");
  for (const f of ["config.json", "pytorch_model.bin"]) await Deno.copyFile(`${src}/${f}`, `${dir}/${f}`);
  await checkAgainstReference(await loadGPT2(dir));
  await Deno.remove(dir, { recursive: true });
});

Deno.test("GPT-2 left padding with cumsum position ids gives the unpadded logits", async () => {
  await ready;
  const model = (await loadGPT2(fixtureDir("gpt2-tiny"))).eval();
  const ref = await reference("gpt2-tiny");
  const full = rows(ref.get("input_ids")!);
  const short = full[0].slice(0, 7);
  const padded = [[0, 0, 0, 0, 0, ...short], full[1]];
  const mask = [[0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1], new Array(12).fill(1)];
  const [a, b] = await readAll(tidy(() =>
    noGrad(() => {
      const x = model.forward({ inputIds: tensor(padded.flat(), [2, 12], "i32"), attentionMask: mask }).logits!;
      const y = model.forward({ inputIds: tensor(short, [1, 7], "i32") }).logits!;
      return [slice(slice(x, 0, 0, 1), 1, 5, 12), y];
    })
  ));
  assertClose(a, b, 1e-4, 0, "padded vs unpadded logits");
  // and the full row is unaffected by the padded row beside it
  const [c] = await readAll([
    noGrad(() => model.forward({ inputIds: tensor(padded.flat(), [2, 12], "i32"), attentionMask: mask }).logits!),
  ]);
  assertClose(c.subarray(12 * 1396), ref.get("logits")!.data.subarray(12 * 1396), 1e-4, 0, "row 2");
});

Deno.test("GPT-2 save → load gives identical outputs and HF-compatible files", async () => {
  await ready;
  const model = (await loadGPT2(fixtureDir("gpt2-tiny"))).eval();
  const dir = await Deno.makeTempDir();
  await savePretrained(model, dir);
  const again = (await loadGPT2(dir)).eval();
  const ids = tensor([5, 9, 200, 3, 77], [1, 5], "i32");
  const [x, y] = await readAll(
    noGrad(() => [model.forward({ inputIds: ids }).logits!, again.forward({ inputIds: ids }).logits!]),
  );
  assert.deepEqual(Array.from(x), Array.from(y));
  const cfg = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
  assert.deepEqual(cfg.architectures, ["GPT2LMHeadModel"]);
  const { readSafetensors } = await import("../formats/safetensors.ts");
  const st = await readSafetensors(`${dir}/model.safetensors`);
  assert.equal(st.metadata.format, "pt");
  assert.ok(!st.tensors.has("lm_head.weight"), "tied head written once");
  assert.ok(st.tensors.has("transformer.wte.weight"));
  await Deno.remove(dir, { recursive: true });
});

Deno.test("GPT-2 loading reports missing, unexpected and misshapen weights", async () => {
  await ready;
  const dir = await Deno.makeTempDir();
  const cfg = JSON.parse(await Deno.readTextFile(`${fixtureDir("gpt2-tiny")}/config.json`));
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({ ...cfg, n_layer: 3, n_embd: 64 }));
  await Deno.copyFile(`${fixtureDir("gpt2-tiny")}/model.safetensors`, `${dir}/model.safetensors`);
  const { loadGPT2: load } = await import("../models/auto.ts");
  await assert.rejects(load(dir), /missing: transformer\.h\.2\.ln_1\.weight/);
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({ ...cfg, vocab_size: 1000 }));
  await assert.rejects(
    load(dir),
    /wrong shape or type: transformer\.wte\.weight: expected \[1000,64\], found \[1396,64\]/,
  );
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({ ...cfg, architectures: ["LlamaForCausalLM"] }));
  await assert.rejects(load(dir), /architecture "LlamaForCausalLM" is not supported/);
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({ ...cfg, n_head: 5 }));
  await assert.rejects(load(dir), /field "n_head" \(5\) must divide n_embd/);
  await Deno.remove(`${dir}/model.safetensors`);
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(cfg));
  await assert.rejects(load(dir), /no weights found/);
  await assert.rejects(load(`${dir}/nope`), /no such folder/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("GPT-2 dropout: active in training mode (masks differ per call), off in eval mode", async () => {
  await ready;
  const model = await loadGPT2(fixtureDir("gpt2-tiny"));
  const ids = tensor([5, 9, 200, 3, 77, 8], [1, 6], "i32");
  const run = () => noGrad(() => model.forward({ inputIds: ids }).logits!);
  model.train();
  const [a, b] = await readAll([run(), run()]);
  model.eval();
  const [c, d] = await readAll([run(), run()]);
  assert.notDeepEqual(Array.from(a), Array.from(b));
  assert.deepEqual(Array.from(c), Array.from(d));
  assert.ok(Array.from(a).every(Number.isFinite));
});
