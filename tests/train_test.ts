import { assert, ready } from "./helpers.ts";
import { fixtureDir } from "./fixtures.ts";
import { runRLHF } from "../ppo/rlhf.ts";
import { parsePrompts } from "../ppo/prompts.ts";
import { loadCheckpoint } from "../ppo/checkpoint.ts";
import { CausalLMWithValueHead } from "../models/value_head.ts";

/** A policy folder in the seed's layout: GPT-2 weights as pytorch_model.bin plus a BERT vocab.txt. */
async function seedLikePolicy(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "policy-" });
  const g = fixtureDir("gpt2-tiny"), t = fixtureDir("tokenizer-bert-zh");
  await Deno.copyFile(`${g}/config.json`, `${dir}/config.json`);
  await Deno.copyFile(`${g}/pytorch_model.bin`, `${dir}/pytorch_model.bin`);
  await Deno.copyFile(`${t}/vocab.txt`, `${dir}/vocab.txt`);
  await Deno.copyFile(`${t}/tokenizer_config.json`, `${dir}/tokenizer_config.json`);
  return dir;
}

const PROMPTS = [
  '{"conversation":[{"utterance":"今天天气很好"},{"utterance":"是的"}]}',
  "not json",
  '{"conversation":[]}',
  '{"prompt":"我很喜欢这个"}',
  "",
  '{"text":"这家店很差"}',
  '{"conversation":[{"utterance":"你好"}]}',
  '{"other": 1}',
].join("\n") + "\n";

Deno.test("prompt files: JSONL conversations, bad lines reported with line numbers, plain text", () => {
  const set = parsePrompts(PROMPTS, "p.jsonl");
  assert.deepEqual(set.prompts, ["今天天气很好", "我很喜欢这个", "这家店很差", "你好"]);
  assert.deepEqual(set.skipped.map((s) => s.line), [2, 3, 5, 8]);
  assert.match(set.skipped[0].reason, /invalid JSON/);
  assert.match(set.skipped[1].reason, /conversation/);
  assert.match(set.skipped[3].reason, /no "conversation", "prompt", "query" or "text" field/);
  const plain = parsePrompts("hello there\n\nhow are you\n", "p.txt");
  assert.deepEqual(plain.prompts, ["hello there", "how are you"]);
  assert.equal(plain.format, "text");
});

function comparable(rows: Record<string, number>[]) {
  return rows.map((r) => Object.fromEntries(Object.entries(r).filter(([k]) => !k.startsWith("time/"))));
}

Deno.test("RLHF run on seed-layout folders: metrics, samples, checkpoints, report; resume reproduces the uninterrupted run", async () => {
  await ready;
  const policyDir = await seedLikePolicy();
  const rewardDir = fixtureDir("bert-cls-tiny");
  const prompts = parsePrompts(PROMPTS, "p.jsonl").prompts;
  const base = {
    policyDir,
    rewardDir,
    prompts,
    rewardLabel: "positive",
    steps: 4,
    ppo: { batch_size: 4, mini_batch_size: 2, ppo_epochs: 2, learning_rate: 1e-3, seed: 3 },
    maxNewTokens: 5,
    saveEvery: 2,
    log: () => {},
  };
  const outA = await Deno.makeTempDir(), outB = await Deno.makeTempDir();
  const a = await runRLHF({ ...base, outDir: outA });
  assert.equal(a.step, 4);
  assert.equal(a.metrics.length, 4);
  for (const key of ["env/reward_mean", "objective/kl", "objective/kl_coef", "ppo/loss/total", "ppo/policy/approxkl"]) {
    assert.ok(Number.isFinite(a.metrics[3][key]), `${key} = ${a.metrics[3][key]}`);
  }
  const lines = (await Deno.readTextFile(`${outA}/metrics.jsonl`)).trim().split("\n");
  assert.equal(lines.length, 4);
  const html = await Deno.readTextFile(a.report);
  assert.match(html, /<svg/);
  assert.match(html, /Reward mean, first/);
  assert.match(html, /今天天气很好|我很喜欢这个|这家店很差|你好/);
  const ck = await loadCheckpoint(outA);
  assert.equal(ck?.step, 4);
  const reloaded = await CausalLMWithValueHead.fromPretrained(ck!.dir);
  assert.equal(reloaded.vHead.size, 2);
  for (const p of reloaded.parameters()) p.dispose();
  // Interrupted after 2 steps, then resumed: the same metrics as the uninterrupted run.
  const b1 = await runRLHF({ ...base, outDir: outB, stopAfter: 2 });
  assert.equal(b1.step, 2);
  const b2 = await runRLHF({ ...base, outDir: outB, resume: true });
  assert.equal(b2.step, 4);
  assert.deepEqual(comparable(b2.metrics), comparable(a.metrics));
  for (const d of [policyDir, outA, outB]) await Deno.remove(d, { recursive: true });
});

Deno.test("train.ts: a wrong folder stops with a clear message before training", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "train.ts",
      "--policy",
      "/nonexistent/policy",
      "--reward",
      fixtureDir("bert-cls-tiny"),
      "--prompts",
      "x.jsonl",
    ],
    cwd: new URL("..", import.meta.url).pathname,
    env: { XDG_RUNTIME_DIR: "/tmp" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 1);
  assert.match(new TextDecoder().decode(out.stderr), /--policy \/nonexistent\/policy: no such folder/);
  const help = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "train.ts", "--help"],
    cwd: new URL("..", import.meta.url).pathname,
    stdout: "piped",
  }).output();
  assert.match(new TextDecoder().decode(help.stdout), /--reward-label NAME/);
});

Deno.test("train.ts: Ctrl-C finishes the step, saves a checkpoint and exits cleanly; --resume continues", async () => {
  await ready;
  const policyDir = await seedLikePolicy();
  const out = await Deno.makeTempDir();
  const promptFile = `${out}/prompts.jsonl`;
  await Deno.writeTextFile(promptFile, PROMPTS);
  const args = [
    "run",
    "-A",
    "train.ts",
    "--policy",
    policyDir,
    "--reward",
    fixtureDir("bert-cls-tiny"),
    "--prompts",
    promptFile,
    "--steps",
    "500",
    "--batch-size",
    "4",
    "--mini-batch-size",
    "2",
    "--max-new-tokens",
    "4",
    "--save-every",
    "1000",
    "--out",
    `${out}/run`,
  ];
  const cwd = new URL("..", import.meta.url).pathname;
  const child = new Deno.Command(Deno.execPath(), {
    args,
    cwd,
    env: { XDG_RUNTIME_DIR: "/tmp" },
    stderr: "piped",
    stdout: "null",
  })
    .spawn();
  // Wait for the first completed step, then interrupt.
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const text = await Deno.readTextFile(`${out}/run/metrics.jsonl`).catch(() => "");
    if (text.trim().split("\n").filter(Boolean).length >= 1) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill("SIGINT");
  const { code, stderr } = await child.output();
  const err = new TextDecoder().decode(stderr);
  assert.equal(code, 0, err);
  assert.match(err, /interrupted after step (\d+); continue with --resume/);
  const step = Number(/interrupted after step (\d+)/.exec(err)![1]);
  const ck = await loadCheckpoint(`${out}/run`);
  assert.equal(ck?.step, step);
  const lines = (await Deno.readTextFile(`${out}/run/metrics.jsonl`)).trim().split("\n");
  assert.equal(lines.length, step);
  assert.ok((await Deno.stat(`${out}/run/report.html`)).isFile);
  // Resume for one more step.
  const res = await new Deno.Command(Deno.execPath(), {
    args: [
      ...args.slice(0, args.indexOf("--steps") + 1),
      String(step + 1),
      ...args.slice(args.indexOf("--steps") + 2),
      "--resume",
    ],
    cwd,
    env: { XDG_RUNTIME_DIR: "/tmp" },
    stderr: "piped",
    stdout: "null",
  }).output();
  const err2 = new TextDecoder().decode(res.stderr);
  assert.equal(res.code, 0, err2);
  assert.match(err2, new RegExp(`resumed from .*checkpoint-${step} \\(step ${step}\\)`));
  assert.equal((await loadCheckpoint(`${out}/run`))?.step, step + 1);
  for (const d of [policyDir, out]) await Deno.remove(d, { recursive: true });
});

Deno.test("RLHF run stops with a clear error when training diverges (no silent NaN)", async () => {
  await ready;
  const policyDir = await seedLikePolicy();
  const out = await Deno.makeTempDir();
  await assert.rejects(
    runRLHF({
      policyDir,
      rewardDir: fixtureDir("bert-cls-tiny"),
      prompts: parsePrompts(PROMPTS, "p.jsonl").prompts,
      rewardLabel: "positive",
      steps: 3,
      ppo: { batch_size: 4, mini_batch_size: 2, ppo_epochs: 2, learning_rate: 1e30, seed: 1 },
      maxNewTokens: 4,
      outDir: out,
      log: () => {},
    }),
    /step \d+: .* is NaN — training diverged/,
  );
  for (const d of [policyDir, out]) await Deno.remove(d, { recursive: true });
});

async function trainCli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "train.ts", ...args],
    cwd: new URL("..", import.meta.url).pathname,
    env: { XDG_RUNTIME_DIR: "/tmp" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("train.ts: bad flags are refused before any work, naming the flag (empty --lr, seed range, token bounds, --overwrite with --resume)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "train_flags_" });
  const bin = `${dir}/binary.json`, arr = `${dir}/array.json`;
  await Deno.writeFile(bin, new Uint8Array([0x01, 0x1b, 0x5b, 0x32, 0x4a, 0xff, 0xfe, 0x00]));
  await Deno.writeTextFile(arr, "[1, 2]");
  // Folders that do not exist: a flag that wrongly passes would stop at "no such folder" instead.
  const data = ["--policy", `${dir}/none`, "--reward", `${dir}/none`, "--prompts", `${dir}/none.jsonl`];
  try {
    const cases: [string[], RegExp][] = [
      [["--lr", ""], /--lr must be a number ≥ 0 \(got ""\)/],
      [["--lr", "  "], /--lr must be a number ≥ 0/],
      [["--kl-coef", ""], /--kl-coef must be a number/],
      [["--seed", "4294967296"], /--seed must be an integer in \[0, 4294967295\] \(got "4294967296"\)/],
      [["--seed=-1"], /--seed must be an integer in \[0, 4294967295\]/],
      [
        ["--min-new-tokens", "50", "--max-new-tokens", "4"],
        /--min-new-tokens \(50\) must not exceed --max-new-tokens \(4\)/,
      ],
      [["--min-new-tokens", "30"], /--min-new-tokens \(30\) must not exceed the default --max-new-tokens \(24\)/],
      [["--resume", "--overwrite"], /--resume and --overwrite contradict each other/],
      [["--config", bin], new RegExp(`--config ${bin}: .*\\\\x01`)],
      [["--config", arr], new RegExp(`--config ${arr}: must hold a JSON object of PPOConfig fields`)],
      [["--config", arr.replace("array", "missing")], /--config .*missing\.json: /],
    ];
    const runs = await Promise.all(cases.map(([flags]) => trainCli(...data, ...flags)));
    runs.forEach((r, i) => {
      assert.equal(r.code, 1, `${cases[i][0].join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, cases[i][1]);
      assert.doesNotMatch(
        r.stderr.replaceAll("\n", " "),
        /no such folder|[\p{Cc}\p{Cf}\ufffd]/u,
        `${cases[i][0]}: ${r.stderr}`,
      );
    });
    // --overwrite is a known flag (the run then stops at the missing folder), and --help explains it.
    const ow = await trainCli(...data, "--overwrite");
    assert.equal(ow.code, 1);
    assert.match(ow.stderr, /--policy .*none: no such folder/);
    const help = await trainCli("--help");
    assert.match(
      help.stdout,
      /--overwrite\s+start afresh in an --out folder that already holds a run \(replaces its checkpoints,\s+metrics and samples\)/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
