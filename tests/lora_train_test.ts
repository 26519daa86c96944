import { assert, assertClose, ready } from "./helpers.ts";
import { fixtureDir } from "./fixtures.ts";
import { noGrad, readAll, tensor, tidy } from "../engine/tensor.ts";
import { runRLHF } from "../app/rlhf.ts";
import { loadCheckpoint } from "../app/checkpoint.ts";
import { loadGPT2 } from "../models/auto.ts";
import type { GPT2LMHeadModel } from "../models/gpt2.ts";
import { disposePolicy, loadRunPolicy } from "../models/lora_policy.ts";

const LORA = { r: 2, loraAlpha: 4, loraDropout: 0, targetModules: ["c_attn", "mlp.c_proj"] };

async function logitsOf(model: GPT2LMHeadModel): Promise<Float32Array> {
  const out = tidy(() => noGrad(() => model.forward({ inputIds: tensor([3, 9, 4, 7, 5], [1, 5], "i32") }).logits!));
  const [logits] = await readAll([out]);
  out.dispose();
  return logits as Float32Array;
}

Deno.test("RLHF run with LoRA: peft checkpoints, exact resume, --merge-lora writes a complete HF folder", async () => {
  await ready;
  const policyDir = await Deno.makeTempDir({ prefix: "lora_policy_" });
  const g = fixtureDir("gpt2-tiny"), t = fixtureDir("tokenizer-bert-zh");
  for (
    const [from, f] of [[g, "config.json"], [g, "pytorch_model.bin"], [t, "vocab.txt"], [t, "tokenizer_config.json"]]
  ) {
    await Deno.copyFile(`${from}/${f}`, `${policyDir}/${f}`);
  }
  const base = {
    policyDir,
    rewardDir: fixtureDir("bert-cls-tiny"),
    prompts: ["今天天气很好", "我很喜欢这个", "这家店很差", "你好"],
    rewardLabel: "positive",
    steps: 3,
    ppo: { batch_size: 4, mini_batch_size: 2, ppo_epochs: 2, learning_rate: 1e-2, seed: 3 },
    maxNewTokens: 4,
    saveEvery: 2,
    log: () => {},
    lora: LORA,
  };
  const outA = await Deno.makeTempDir(), outB = await Deno.makeTempDir();
  const a = await runRLHF({ ...base, outDir: outA, mergeLora: true });
  assert.equal(a.step, 3);
  const ck = (await loadCheckpoint(outA))!;
  const files = [...Deno.readDirSync(ck.dir)].map((e) => e.name);
  for (const f of ["adapter_config.json", "adapter_model.safetensors", "value_head.safetensors", "vocab.txt"]) {
    assert.ok(files.includes(f), `checkpoint has ${f}`);
  }
  assert.ok(!files.includes("model.safetensors") && !files.includes("config.json"), "no base weights saved");
  const merged = [...Deno.readDirSync(`${outA}/merged`)].map((e) => e.name).sort();
  assert.deepEqual(merged, ["config.json", "model.safetensors", "tokenizer_config.json", "vocab.txt"]);
  const adapted = await loadRunPolicy(policyDir, ck.dir, LORA, 0);
  const mergedModel = await loadGPT2(`${outA}/merged`);
  const [x, y] = [await logitsOf(adapted.model), await logitsOf(mergedModel)];
  assertClose(y, x, 2e-5, 1e-4, "merged folder vs base + adapter");
  const baseModel = await loadGPT2(policyDir);
  assert.ok((await logitsOf(baseModel)).some((v, i) => Math.abs(v - x[i]) > 1e-4), "training moved the adapter");
  // Interrupted after 2 steps, then resumed: the same metrics as the uninterrupted run.
  await runRLHF({ ...base, outDir: outB, stopAfter: 2 });
  const b = await runRLHF({ ...base, outDir: outB, resume: true });
  const strip = (rows: Record<string, number>[]) =>
    rows.map((r) => Object.fromEntries(Object.entries(r).filter(([k]) => !k.startsWith("time/"))));
  assert.deepEqual(strip(b.metrics), strip(a.metrics));
  await assert.rejects(() => runRLHF({ ...base, lora: undefined, outDir: outB, resume: true }), /a LoRA checkpoint/);
  disposePolicy(adapted);
  for (const p of [...mergedModel.parameters(), ...baseModel.parameters()]) p.dispose();
  for (const d of [policyDir, outA, outB]) await Deno.remove(d, { recursive: true });
});

Deno.test("train.ts: --lora-* flags are checked before any work", async () => {
  const data = ["--policy", "/nonexistent/p", "--reward", "/nonexistent/r", "--prompts", "/nonexistent/x.jsonl"];
  const cases: [string[], RegExp][] = [
    [["--lora-alpha", "16"], /--lora-alpha needs --lora-r/],
    [["--merge-lora"], /--merge-lora needs --lora-r/],
    [["--lora-r", "0"], /--lora-r must be an integer ≥ 1/],
    [["--lora-r", "4", "--lora-dropout", "1"], /--lora-dropout must be a number in \[0, /],
    [["--lora-r", "4", "--lora-target-modules", "c_attn,q_proj"], /--lora-target-modules: "q_proj" is not a GPT-2/],
  ];
  for (const [flags, want] of cases) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "train.ts", ...data, ...flags],
      cwd: new URL("..", import.meta.url).pathname,
      env: { XDG_RUNTIME_DIR: "/tmp" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 1, `${flags.join(" ")}: ${stderr}`);
    assert.match(stderr, want);
  }
});
