import { assert, assertClose, randArray, ready } from "./helpers.ts";
import { noGrad, readAll, tensor, tidy } from "../engine/tensor.ts";
import type { HostTensor } from "../formats/host_tensor.ts";
import { readSafetensors } from "../formats/safetensors.ts";
import { GPT2LMHeadModel } from "../models/gpt2.ts";
import { loadGPT2 } from "../models/auto.ts";
import { initLoraWeights, type LoraConfig, loraLinear, loraParamSpec } from "../models/lora.ts";
import { randomAdapter } from "./lora_helpers.ts";
import {
  attachLora,
  baseModelView,
  loadLoraAdapter,
  mergedLoraWeights,
  parseAdapterConfig,
  saveLoraAdapter,
  saveMergedModel,
} from "../models/lora_peft.ts";
import { downloadParams, uploadParams } from "../models/weights.ts";

const CFG = { n_layer: 2, n_head: 2, n_embd: 16, n_inner: 24, vocab_size: 41, n_positions: 32 };
const DROPLESS = { ...CFG, embd_pdrop: 0, attn_pdrop: 0, resid_pdrop: 0 };
const LORA: LoraConfig = { r: 3, loraAlpha: 6, loraDropout: 0, targetModules: ["c_attn", "c_proj", "c_fc"] };
const IDS = [[3, 7, 1, 30, 12, 5], [9, 2, 2, 40, 0, 17]];

async function logitsOf(model: GPT2LMHeadModel): Promise<Float32Array> {
  const out = tidy(() => noGrad(() => model.forward({ inputIds: tensor(IDS.flat(), [2, 6], "i32") }).logits!));
  const [logits] = await readAll([out]);
  out.dispose();
  return logits as Float32Array;
}

/** W + scaling·(B·A)ᵀ for W [in, out], A [r, in], B [out, r], in float64. */
function mergeRef(w: HostTensor, a: HostTensor, b: HostTensor, scaling: number): Float64Array {
  const [inF, outF] = w.shape, r = a.shape[0];
  const out = new Float64Array(inF * outF);
  for (let i = 0; i < inF; i++) {
    for (let o = 0; o < outF; o++) {
      let s = 0;
      for (let k = 0; k < r; k++) s += b.data[o * r + k] * a.data[k * inF + i];
      out[i * outF + o] = w.data[i * outF + o] + scaling * s;
    }
  }
  return out;
}

Deno.test("LoRA spec and init: peft's shapes (A [r, in], B [out, r]), default target c_attn, A ~ U(±1/√in), B = 0", () => {
  const spec = GPT2LMHeadModel.paramSpec({ ...CFG, n_inner: 24 } as never);
  const lora = loraParamSpec(spec, LORA);
  assert.deepEqual(lora.get("transformer.h.0.attn.c_attn.lora_A.weight"), [3, 16]);
  assert.deepEqual(lora.get("transformer.h.0.attn.c_attn.lora_B.weight"), [48, 3]);
  assert.deepEqual(lora.get("transformer.h.1.mlp.c_fc.lora_B.weight"), [24, 3]);
  assert.deepEqual(lora.get("transformer.h.1.mlp.c_proj.lora_A.weight"), [3, 24]);
  assert.equal(lora.size, 2 * 4 * 2);
  const onlyAttn = loraParamSpec(spec, { ...LORA, targetModules: ["c_attn"] });
  assert.deepEqual([...onlyAttn.keys()].filter((k) => !k.includes(".attn.c_attn.")), []);
  const mlpProj = loraParamSpec(spec, { ...LORA, targetModules: ["mlp.c_proj"] });
  assert.deepEqual([...mlpProj.keys()].filter((k) => !k.includes(".mlp.c_proj.")), []);
  assert.throws(() => loraParamSpec(spec, { ...LORA, targetModules: ["q_proj"] }), /match no linear layer/);
  const init = initLoraWeights(lora, 5);
  const a = init.get("transformer.h.0.attn.c_attn.lora_A.weight")!.data;
  assert.ok([...a].every((x) => Math.abs(x) <= 1 / 4) && [...a].some((x) => Math.abs(x) > 0.2));
  assert.ok([...init.get("transformer.h.0.attn.c_attn.lora_B.weight")!.data].every((x) => x === 0));
});

Deno.test("loraLinear equals x·W + b + scaling·(x·Aᵀ)·Bᵀ in float64, before the activation, residual last", async () => {
  await ready;
  const [N, inF, outF, r, scaling] = [5, 12, 10, 3, 1.75];
  const x = randArray(N * inF, 1), w = randArray(inF * outF, 2, -0.5, 0.5), bias = randArray(outF, 3);
  const a = randArray(r * inF, 4), b = randArray(outF * r, 5), res = randArray(N * outF, 6);
  const up = (d: Float64Array, s: number[]) => tensor(Float32Array.from(d), s);
  const gelu = (v: number) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
  const lora = { A: up(a, [r, inF]), B: up(b, [outF, r]), scaling, dropout: 0 };
  const out = loraLinear(up(x, [N, inF]), up(w, [inF, outF]), up(bias, [outF]), lora, {
    weightLayout: "in_out",
    activation: "gelu_new",
    residual: up(res, [N, outF]),
  }, (t) => t);
  const plain = loraLinear(up(x, [N, inF]), up(w, [inF, outF]), up(bias, [outF]), lora, {}, (t) => t);
  const want = new Float64Array(N * outF), wantPlain = new Float64Array(N * outF);
  for (let n = 0; n < N; n++) {
    for (let o = 0; o < outF; o++) {
      let s = bias[o];
      for (let i = 0; i < inF; i++) s += x[n * inF + i] * w[i * outF + o];
      for (let k = 0; k < r; k++) {
        let xa = 0;
        for (let i = 0; i < inF; i++) xa += x[n * inF + i] * a[k * inF + i];
        s += scaling * xa * b[o * r + k];
      }
      wantPlain[n * outF + o] = s;
      want[n * outF + o] = gelu(s) + res[n * outF + o];
    }
  }
  const [got, gotPlain] = await readAll([out, plain]);
  assertClose(got, want, 1e-5, 1e-4, "with gelu_new and residual");
  assertClose(gotPlain, wantPlain, 1e-5, 1e-4, "plain");
});

Deno.test("LoRA merge: merged weights equal W + (B·A)ᵀ·alpha/r (float64); the merged model's forward equals the adapted one", async () => {
  await ready;
  const model = GPT2LMHeadModel.random(DROPLESS, 3);
  const before = await logitsOf(model);
  const base = await downloadParams(model.params);
  const adapter = attachLora(model, randomAdapter(model, LORA, 11));
  assert.equal(adapter.scaling, 2);
  assert.ok(model.parameters().every((p) => !p.requiresGrad), "base weights frozen");
  assert.ok(adapter.parameters().every((p) => p.requiresGrad), "adapter trainable");
  const merged = await mergedLoraWeights(model);
  const lora = await downloadParams(adapter.params);
  for (const layer of adapter.layers) {
    const want = mergeRef(
      base.get(layer + ".weight")!,
      lora.get(layer + ".lora_A.weight")!,
      lora.get(layer + ".lora_B.weight")!,
      2,
    );
    assertClose(merged.get(layer + ".weight")!.data, want, 1e-6, 1e-6, `merged ${layer}`);
    assert.ok(Math.max(...want.map((v, i) => Math.abs(v - base.get(layer + ".weight")!.data[i]))) > 1e-3);
  }
  assert.deepEqual([...merged.get("transformer.wte.weight")!.data], [...base.get("transformer.wte.weight")!.data]);
  const adapted = await logitsOf(model);
  const mergedModel = new GPT2LMHeadModel(model.config, uploadParams(merged));
  assertClose(adapted, await logitsOf(mergedModel), 2e-5, 1e-4, "adapted vs merged logits");
  assert.ok(adapted.some((v, i) => Math.abs(v - before[i]) > 1e-3), "the adapter changes the logits");
  adapter.enabled = false;
  assert.deepEqual([...(await logitsOf(model))], [...before], "adapter disabled: the base model's logits");
  adapter.enabled = true;
  const view = baseModelView(model);
  assert.ok(view.params === model.params && view.lora === null, "the base view shares the weights");
  assert.deepEqual([...(await logitsOf(view))], [...before], "base view: the base model's logits");
  for (const p of [...mergedModel.parameters(), ...model.parameters()]) p.dispose();
  adapter.dispose();
});

Deno.test("LoRA peft files: adapter_config.json fields, key names and shapes; round trip; merged folder loads", async () => {
  await ready;
  const dir = await Deno.makeTempDir({ prefix: "lora_peft_" });
  const model = GPT2LMHeadModel.random(DROPLESS, 4);
  const adapter = attachLora(model, randomAdapter(model, { ...LORA, baseModelNameOrPath: "gpt2" }, 21));
  await saveLoraAdapter(adapter, dir);
  const config = JSON.parse(await Deno.readTextFile(`${dir}/adapter_config.json`));
  for (const [k, v] of Object.entries({ peft_type: "LORA", task_type: "CAUSAL_LM", r: 3, lora_alpha: 6 })) {
    assert.equal(config[k], v, k);
  }
  assert.equal(config.fan_in_fan_out, true);
  assert.equal(config.bias, "none");
  assert.equal(config.use_rslora, false);
  assert.equal(config.base_model_name_or_path, "gpt2");
  assert.deepEqual(config.target_modules, ["c_attn", "c_proj", "c_fc"]);
  const { tensors } = await readSafetensors(`${dir}/adapter_model.safetensors`);
  assert.deepEqual(tensors.get("base_model.model.transformer.h.0.attn.c_attn.lora_A.weight")?.shape, [3, 16]);
  assert.deepEqual(tensors.get("base_model.model.transformer.h.1.mlp.c_fc.lora_B.weight")?.shape, [24, 3]);
  assert.equal(tensors.size, 16);
  const other = GPT2LMHeadModel.random(DROPLESS, 4);
  const loaded = attachLora(other, await loadLoraAdapter(other, dir));
  assert.deepEqual(loaded.config.targetModules, ["c_attn", "c_proj", "c_fc"]);
  const [a, b] = [await downloadParams(adapter.params), await downloadParams(loaded.params)];
  for (const [k, t] of a) assert.deepEqual([...b.get(k)!.data], [...t.data], k);
  assert.deepEqual([...(await logitsOf(other))], [...(await logitsOf(model))]);
  await saveMergedModel(model, `${dir}/merged`);
  const reloaded = await loadGPT2(`${dir}/merged`);
  assertClose(await logitsOf(reloaded), await logitsOf(model), 2e-5, 1e-4, "merged folder vs adapted model");
  for (const p of [...model.parameters(), ...other.parameters(), ...reloaded.parameters()]) p.dispose();
  adapter.dispose();
  loaded.dispose();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("LoRA files: bad adapter_config.json fields and mismatched weights give errors naming the file and field", async () => {
  await ready;
  const file = "x/adapter_config.json";
  const good = { peft_type: "LORA", task_type: "CAUSAL_LM", r: 2, lora_alpha: 4, target_modules: ["c_attn"] };
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ ...good, peft_type: "IA3" }, /x\/adapter_config\.json: "peft_type" must be "LORA"/],
    [{ ...good, r: 0 }, /x\/adapter_config\.json: "r" must be a positive integer, got 0/],
    [{ ...good, lora_alpha: "8" }, /"lora_alpha" must be a finite number/],
    [{ ...good, lora_dropout: 1.5 }, /"lora_dropout" must be a number in \[0, 1\)/],
    [{ ...good, target_modules: [] }, /"target_modules" must be a non-empty list/],
    [{ ...good, bias: "all" }, /x\/adapter_config\.json: "bias" "all" is not supported/],
    [{ ...good, use_dora: true }, /"use_dora" true is not supported/],
    [{ ...good, task_type: "SEQ_CLS" }, /"task_type" must be "CAUSAL_LM"/],
  ];
  for (const [raw, want] of bad) assert.throws(() => parseAdapterConfig(raw, file), want);
  assert.equal(parseAdapterConfig({ ...good, use_rslora: true }, file).useRslora, true);
  const dir = await Deno.makeTempDir({ prefix: "lora_bad_" });
  const model = GPT2LMHeadModel.random(DROPLESS, 5);
  const adapter = randomAdapter(model, { ...LORA, r: 2 }, 1);
  await saveLoraAdapter(adapter, dir);
  const config = JSON.parse(await Deno.readTextFile(`${dir}/adapter_config.json`));
  await Deno.writeTextFile(`${dir}/adapter_config.json`, JSON.stringify({ ...config, r: 4 }));
  await assert.rejects(
    () => loadLoraAdapter(model, dir),
    /adapter_model\.safetensors: weights do not match.*transformer\.h\.0\.attn\.c_attn\.lora_A\.weight: expected \[4,16\], found \[2,16\]/,
  );
  await Deno.writeTextFile(`${dir}/adapter_config.json`, "{ not json");
  await assert.rejects(() => loadLoraAdapter(model, dir), /adapter_config\.json: not valid JSON/);
  for (const p of model.parameters()) p.dispose();
  adapter.dispose();
  await Deno.remove(dir, { recursive: true });
});
