import { assert, assertClose, ready } from "./helpers.ts";
import { fixtureDir, reference, rows } from "./fixtures.ts";
import { noGrad, readAll, tensor } from "../engine/tensor.ts";
import { backward, zeroGrad } from "../engine/autograd.ts";
import { fromPretrained, loadSequenceClassifier, savePretrained } from "../models/auto.ts";
import { BertForSequenceClassification } from "../models/bert.ts";

async function check(dir: string, name: string, withGrads: boolean) {
  const model = await loadSequenceClassifier(dir);
  const ref = await reference(name);
  const ids = ref.get("input_ids")!;
  const out = model.forward({
    inputIds: tensor(ids.data, ids.shape, "i32"),
    attentionMask: rows(ref.get("attention_mask")!),
    tokenTypeIds: ref.has("token_type_ids") ? tensor(ref.get("token_type_ids")!.data, ids.shape, "i32") : undefined,
    labels: tensor(ref.get("labels")!.data, [ids.shape[0]], "i32"),
  });
  const [logits, loss] = await readAll([out.logits, out.loss!]);
  assertClose(logits, ref.get("logits")!.data, 1e-4, 0, `${name} logits`);
  assertClose(loss, ref.get("loss")!.data, 1e-4, 0, `${name} loss`);
  if (withGrads) {
    backward(out.loss!);
    const names = [...model.params.keys()];
    const grads = await readAll(names.map((n) => model.params.get(n)!.grad!));
    names.forEach((n, i) => assertClose(grads[i], ref.get(`grad.${n}`)!.data, 1e-5, 1e-3, `grad of ${n}`));
    zeroGrad(model.parameters());
  }
  return model;
}

Deno.test("BERT classifier from model.safetensors: logits, loss and gradients match transformers", async () => {
  await ready;
  const model = await check(fixtureDir("bert-cls-tiny"), "bert-cls-tiny", true);
  assert.deepEqual(model.labels, ["negative", "positive"]);
});

Deno.test("BERT classifier from pytorch_model.bin matches too", async () => {
  await ready;
  const dir = await Deno.makeTempDir();
  for (const f of ["config.json", "pytorch_model.bin"]) {
    await Deno.copyFile(`${fixtureDir("bert-cls-tiny")}/${f}`, `${dir}/${f}`);
  }
  await check(dir, "bert-cls-tiny", true);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("RoBERTa classifier (padding-aware positions) matches transformers", async () => {
  await ready;
  const model = await fromPretrained(fixtureDir("roberta-cls-tiny"));
  assert.ok(model instanceof BertForSequenceClassification && model.config.model_type === "roberta");
  await check(fixtureDir("roberta-cls-tiny"), "roberta-cls-tiny", false);
});

Deno.test("BERT save → load round trip is exact", async () => {
  await ready;
  const model = await loadSequenceClassifier(fixtureDir("bert-cls-tiny"));
  const dir = await Deno.makeTempDir();
  await savePretrained(model, dir);
  const again = await loadSequenceClassifier(dir);
  const ids = tensor([2, 50, 60, 3], [1, 4], "i32");
  const [a, b] = await readAll(
    noGrad(() => [model.forward({ inputIds: ids }).logits, again.forward({ inputIds: ids }).logits]),
  );
  assert.deepEqual(Array.from(a), Array.from(b));
  assert.deepEqual(again.config.id2label, { "0": "negative", "1": "positive" });
  await Deno.remove(dir, { recursive: true });
});
