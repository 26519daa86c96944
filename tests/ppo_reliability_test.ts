// What a crash, a full disk, a second writer or a diverging run can do to a run's output folder: non-finite
// detection on the GPU, divergence stops, torn log lines on resume, the folder lock, the reuse guard, checkpoint
// manifests and the fallback to the newest intact checkpoint.
import { assert, ready } from "./helpers.ts";
import { fixtureDir, seedLikePolicyDir } from "./fixtures.ts";
import { runtime, tensor } from "../engine/tensor.ts";
import { countNonFinite } from "../engine/ops/finite.ts";
import { runRLHF } from "../app/rlhf.ts";
import { readRunLog } from "../app/run_log.ts";
import { parsePrompts } from "../app/prompts.ts";
import { checkpointDamage, loadCheckpoint } from "../app/checkpoint.ts";
import { divergence, negativeKlWarning, nonFiniteState } from "../app/health.ts";
import { LOCK_FILE, lockOutDir, prepareOutDir } from "../app/outdir.ts";
import { CausalLMWithValueHead } from "../models/value_head.ts";
import { AdamW } from "../engine/optim.ts";
import { readSafetensors } from "../formats/safetensors.ts";

const PROMPTS = parsePrompts("今天天气很好\n我很喜欢这个\n这家店很差\n你好\n", "p.txt").prompts;

function options(policyDir: string, outDir: string, extra: Record<string, unknown> = {}) {
  const lines: string[] = [];
  return {
    lines,
    o: {
      policyDir,
      rewardDir: fixtureDir("bert-cls-tiny"),
      prompts: PROMPTS,
      rewardLabel: "positive",
      steps: 3,
      ppo: { batch_size: 4, mini_batch_size: 2, ppo_epochs: 1, learning_rate: 1e-3, seed: 5 },
      maxNewTokens: 4,
      saveEvery: 1,
      outDir,
      log: (l: string) => lines.push(l),
      ...extra,
    },
  };
}

// ------------------------------------------------------------------ non-finite values and divergence

Deno.test("countNonFinite counts ±Inf and NaN per tensor on the GPU, in one readback", async () => {
  await ready;
  const big = new Float32Array(300_000).fill(0.5);
  for (const i of [0, 7, 299_999, 150_000]) big[i] = [Infinity, -Infinity, NaN, NaN][i % 4] ?? NaN;
  big[150_000] = -Infinity;
  const ts = [
    tensor(big, [big.length]),
    tensor(new Float32Array([1, 2, 3]), [3]),
    tensor(new Float32Array([NaN, 3.4e38, -0, 1e-45]), [4]),
  ];
  assert.deepEqual(await countNonFinite(ts), [4, 0, 1]);
  for (const t of ts) t.dispose();
});

Deno.test("divergence: non-finite statistics, an exploded loss and a collapsed policy; healthy ones pass", () => {
  const ok = { "ppo/loss/total": 0.3, "ppo/policy/entropy": 2.1, "objective/kl": 0.01, "ppo/policy/approxkl": 1e-4 };
  assert.equal(divergence(ok), null);
  assert.match(divergence({ ...ok, "objective/kl": NaN })!, /objective\/kl is NaN/);
  assert.match(divergence({ ...ok, "env/reward_std": Infinity })!, /env\/reward_std is Infinity/);
  assert.match(divergence({ ...ok, "ppo/loss/total": 1.8e14 })!, /exploded/);
  assert.match(divergence({ ...ok, "ppo/loss/total": 5e6, "ppo/policy/entropy": 0 })!, /collapsed: entropy/);
  assert.equal(divergence({ ...ok, "ppo/loss/total": 5e6 }), null, "a large loss with a live policy is not collapse");
});

Deno.test("a negative objective/kl gives one warning naming the step, the value and the usual causes", () => {
  assert.equal(negativeKlWarning({ "objective/kl": 0.02 }, 3), null);
  assert.equal(negativeKlWarning({ "objective/kl": 0 }, 3), null);
  const w = negativeKlWarning({ "objective/kl": -0.0123 }, 7)!;
  assert.match(w, /objective\/kl is negative at step 7 \(-0\.0123\)/);
  assert.match(w, /sampling settings/);
});

Deno.test("nonFiniteState names the weight, value head entry and optimiser buffer holding Inf/NaN", async () => {
  await ready;
  const policy = await CausalLMWithValueHead.fromPretrained(fixtureDir("gpt2-tiny"));
  const opt = new AdamW(policy.parameters(), { lr: 0.1 });
  assert.deepEqual(await nonFiniteState(policy, opt), []);
  const w = policy.model.params.get("transformer.h.0.mlp.c_fc.weight")!;
  const data = await w.toArray() as Float32Array;
  data[3] = NaN;
  data[5] = Infinity;
  runtime().write(w.storage, data);
  const report = await nonFiniteState(policy, opt);
  assert.equal(report.length, 1);
  assert.match(report[0], /^policy weight transformer\.h\.0\.mlp\.c_fc\.weight: 2 of \d+ values non-finite$/);
  opt.dispose();
  for (const p of policy.parameters()) p.dispose();
});

Deno.test("a run that diverges (lr 10) stops with an error; the last good checkpoint stays newest and intact", async () => {
  await ready;
  const policyDir = await seedLikePolicyDir(), out = await Deno.makeTempDir();
  // With lr 10 the tiny policy's entropy drops to 0 at step 2 while its loss runs to ~1e6 (before: exit 0, "done").
  const { o, lines } = options(policyDir, out, {
    steps: 8,
    ppo: { batch_size: 4, mini_batch_size: 2, ppo_epochs: 4, learning_rate: 10, seed: 5 },
  });
  // On llvmpipe the policy collapses at step 2 (entropy 0); backends whose rounding differs may see the loss turn NaN
  // at another step first. Whichever step diverges, everything before it stays saved and intact.
  const error = await runRLHF(o).then(() => null, (e: Error) => e);
  const diverged = /step (\d+): (?:the policy collapsed: entropy|ppo\/loss\/total is NaN).* — training diverged/
    .exec(error?.message ?? "");
  assert.ok(diverged, `expected a divergence error, got ${error?.message}`);
  const step = Number(diverged[1]);
  if (runtime().handle.backend !== "cpu") assert.equal(step, 2, "on WebGPU the policy collapses at step 2");
  const ck = await loadCheckpoint(out);
  assert.equal(ck?.step ?? 0, step - 1, "the newest checkpoint is the last good step");
  if (ck) {
    assert.equal(await checkpointDamage(ck.dir), null);
    const { tensors } = await readSafetensors(`${ck.dir}/optimizer.safetensors`);
    for (const [name, t] of tensors) assert.ok((t.data as Float32Array).every(Number.isFinite), name);
  }
  const metrics = await Deno.readTextFile(`${out}/metrics.jsonl`).catch(() => "");
  const steps = metrics.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l).step);
  assert.deepEqual(steps, Array.from({ length: step - 1 }, (_, i) => i + 1), "the diverged step is not logged");
  assert.equal(lines.filter((l) => /^saved /.test(l)).length, step - 1, "only the good steps were saved");
  assert.ok(!(await Deno.stat(`${out}/${LOCK_FILE}`).catch(() => null)), "the lock is released after the error");
  for (const d of [policyDir, out]) await Deno.remove(d, { recursive: true });
});

// ------------------------------------------------------------------ logs, locks, reuse

Deno.test("readRunLog drops a torn last line and names file and line of any other bad line", async () => {
  const dir = await Deno.makeTempDir();
  const f = `${dir}/metrics.jsonl`;
  await Deno.writeTextFile(f, '{"step":1,"a":1}\n{"step":2,"a":2}\n{"step":3,"a":');
  const lines: string[] = [];
  assert.deepEqual((await readRunLog(f, (l) => lines.push(l))).map((r) => r.step), [1, 2]);
  assert.match(lines[0], /metrics\.jsonl: dropped a torn last line \(line 3/);
  await Deno.writeTextFile(f, '{"step":1}\nnot json\n{"step":3}\n');
  await assert.rejects(readRunLog(f), /metrics\.jsonl:2: bad line/);
  await Deno.writeTextFile(f, '{"step":1}\n{"loss":2}\n');
  await assert.rejects(readRunLog(f), /metrics\.jsonl:2: bad line \(no integer "step"\)/);
  assert.deepEqual(await readRunLog(`${dir}/missing.jsonl`), []);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("resume after a torn metrics line (disk full mid-write): cut back to the checkpoint, said so", async () => {
  await ready;
  const policyDir = await seedLikePolicyDir(), out = await Deno.makeTempDir();
  const first = options(policyDir, out, { stopAfter: 2 });
  assert.equal((await runRLHF(first.o)).step, 2);
  await Deno.writeTextFile(`${out}/metrics.jsonl`, '{"step":3,"ppo/loss/total":0.1,"objective', { append: true });
  const again = options(policyDir, out, { resume: true });
  const r = await runRLHF(again.o);
  assert.equal(r.step, 3);
  assert.ok(again.lines.some((l) => /dropped a torn last line/.test(l)), again.lines.join("\n"));
  const rows = (await Deno.readTextFile(`${out}/metrics.jsonl`)).trim().split("\n").map((l) => JSON.parse(l).step);
  assert.deepEqual(rows, [1, 2, 3]);
  for (const d of [policyDir, out]) await Deno.remove(d, { recursive: true });
});

Deno.test("one run per output folder: a live lock in another process is refused, a dead one's is replaced", async () => {
  const dir = await Deno.makeTempDir();
  const url = new URL("../app/outdir.ts", import.meta.url).href;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `const { lockOutDir } = await import(${JSON.stringify(url)}); await lockOutDir(${JSON.stringify(dir)});
       console.log("locked"); await new Promise((r) => setTimeout(r, 60000));`,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.getReader();
  const { value } = await reader.read();
  assert.match(new TextDecoder().decode(value), /locked/);
  await assert.rejects(lockOutDir(dir), new RegExp(`in use by another run \\(pid ${child.pid}`));
  child.kill("SIGKILL");
  await child.status;
  reader.releaseLock();
  await child.stdout.cancel();
  const lines: string[] = [];
  const lock = await lockOutDir(dir, (l) => lines.push(l));
  assert.match(lines[0], new RegExp(`removing the stale lock of pid ${child.pid}`));
  assert.equal(JSON.parse(await Deno.readTextFile(`${dir}/${LOCK_FILE}`)).pid, Deno.pid);
  await lock.release();
  assert.ok(!(await Deno.stat(`${dir}/${LOCK_FILE}`).catch(() => null)));
  // A lock of another host cannot be checked: refused, with the file to delete named.
  await Deno.writeTextFile(`${dir}/${LOCK_FILE}`, JSON.stringify({ pid: 1, host: "elsewhere", started: "x" }));
  await assert.rejects(lockOutDir(dir), /locked by pid 1 on host elsewhere .* delete /);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("an output folder holding a run is refused without --resume/--overwrite; interrupted saves are removed", async () => {
  const dir = await Deno.makeTempDir();
  await prepareOutDir(dir, {}); // empty: fine
  await Deno.writeTextFile(`${dir}/metrics.jsonl`, '{"step":1}\n');
  await Deno.mkdir(`${dir}/checkpoint-1`);
  await Deno.mkdir(`${dir}/.checkpoint-2.tmp-123-456`);
  await Deno.writeTextFile(`${dir}/notes.txt`, "mine");
  const lines: string[] = [];
  await assert.rejects(
    prepareOutDir(dir, {}, (l) => lines.push(l)),
    /already holds a run \(checkpoint-1, metrics\.jsonl\).*--resume.*--overwrite/,
  );
  assert.ok(!(await Deno.stat(`${dir}/.checkpoint-2.tmp-123-456`).catch(() => null)), "temp folder removed");
  await prepareOutDir(dir, { resume: true });
  assert.ok((await Deno.stat(`${dir}/checkpoint-1`)).isDirectory, "resume keeps the run");
  await prepareOutDir(dir, { overwrite: true });
  assert.ok(
    !(await Deno.stat(`${dir}/checkpoint-1`).catch(() => null)) &&
      !(await Deno.stat(`${dir}/metrics.jsonl`).catch(() => null)),
  );
  assert.equal(await Deno.readTextFile(`${dir}/notes.txt`), "mine", "files that are not the run's are kept");
  await Deno.remove(dir, { recursive: true });
});

// ------------------------------------------------------------------ manifests and fallback

Deno.test("checkpoint manifests: damage is named, resume falls back to the newest intact checkpoint", async () => {
  await ready;
  const policyDir = await seedLikePolicyDir(), out = await Deno.makeTempDir();
  assert.equal((await runRLHF(options(policyDir, out, { stopAfter: 2 }).o)).step, 2);
  for (const s of [1, 2]) assert.equal(await checkpointDamage(`${out}/checkpoint-${s}`), null);
  const manifest = JSON.parse(await Deno.readTextFile(`${out}/checkpoint-2/manifest.json`));
  for (const f of ["config.json", "value_head.safetensors", "optimizer.safetensors", "trainer_state.json"]) {
    assert.match(manifest.files[f].sha256, /^[0-9a-f]{64}$/, f);
  }
  // A flipped byte, a truncation and a missing file are each named.
  const opt1 = `${out}/checkpoint-1/optimizer.safetensors`;
  const bytes = await Deno.readFile(opt1);
  bytes[bytes.length - 3] ^= 0x40;
  await Deno.writeFile(opt1, bytes);
  assert.match((await checkpointDamage(`${out}/checkpoint-1`))!, /optimizer\.safetensors does not match its SHA-256/);
  await Deno.remove(`${out}/checkpoint-2/value_head.safetensors`);
  assert.match((await checkpointDamage(`${out}/checkpoint-2`))!, /value_head\.safetensors is missing/);
  await assert.rejects(
    loadCheckpoint(out),
    /no intact checkpoint in .*checkpoint-2: value_head\.safetensors is missing; .*checkpoint-1: optimizer\.safetensors does not match/,
  );
  // Repair checkpoint-1: resume falls back to it with a warning, and the run continues from step 1.
  bytes[bytes.length - 3] ^= 0x40;
  await Deno.writeFile(opt1, bytes);
  const again = options(policyDir, out, { resume: true });
  const r = await runRLHF(again.o);
  assert.equal(r.step, 3);
  assert.ok(
    again.lines.some((l) => /skipping damaged checkpoint .*checkpoint-2: value_head\.safetensors is missing/.test(l)),
  );
  assert.ok(again.lines.some((l) => /resumed from .*checkpoint-1 \(step 1\)/.test(l)), again.lines.join("\n"));
  assert.ok(again.lines.some((l) => /dropped 1 rows after step 1/.test(l)));
  assert.equal((await loadCheckpoint(out))?.step, 3);
  for (const d of [policyDir, out]) await Deno.remove(d, { recursive: true });
});

Deno.test("a second run into the same folder is refused; --overwrite replaces the first", async () => {
  await ready;
  const policyDir = await seedLikePolicyDir(), out = await Deno.makeTempDir();
  await runRLHF(options(policyDir, out, { steps: 1 }).o);
  await assert.rejects(runRLHF(options(policyDir, out, { steps: 1 }).o), /already holds a run/);
  const again = options(policyDir, out, { steps: 1, overwrite: true });
  assert.equal((await runRLHF(again.o)).step, 1);
  assert.ok(again.lines.some((l) => /overwrite: removed the previous run/.test(l)));
  await assert.rejects(runRLHF(options(policyDir, out, { resume: true, overwrite: true }).o), /exclude each other/);
  for (const d of [policyDir, out]) await Deno.remove(d, { recursive: true });
});
