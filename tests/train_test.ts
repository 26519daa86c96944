import { assert, ready } from "./helpers.ts";
import { fixtureDir } from "./fixtures.ts";
import { runRLHF } from "../app/rlhf.ts";
import { parsePrompts } from "../app/prompts.ts";
import { loadCheckpoint } from "../app/checkpoint.ts";
import { CausalLMWithValueHead } from "../models/value_head.ts";
import { EMBEDDED_TITLE, replacesDemoRun } from "../app/demo_run.ts";

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
  // Relative paths are relative to INIT_CWD (where `deno task train` was started), and named absolute.
  const home = await Deno.makeTempDir({ prefix: "train_init_cwd_" });
  try {
    const rel = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "train.ts", "--policy", "my-policy", "--reward", "my-reward", "--prompts", "p.jsonl"],
      cwd: new URL("..", import.meta.url).pathname,
      env: { XDG_RUNTIME_DIR: "/tmp", INIT_CWD: home },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(rel.code, 1);
    assert.match(new TextDecoder().decode(rel.stderr), new RegExp(`--policy ${home}/my-policy: no such folder`));
  } finally {
    await Deno.remove(home, { recursive: true });
  }
  const help = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "train.ts", "--help"],
    cwd: new URL("..", import.meta.url).pathname,
    stdout: "piped",
  }).output();
  assert.match(new TextDecoder().decode(help.stdout), /--reward-label NAME/);
});

Deno.test("train.ts: Ctrl-C finishes the step, saves a checkpoint and exits with 130; --resume continues", async () => {
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
  assert.equal(code, 130, err);
  assert.match(err, /interrupted after step (\d+); continue with --resume/);
  assert.match(err, /\nstopped: \d+ steps in /);
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
  const batch10 = `${dir}/batch10.json`, forward8 = `${dir}/forward8.json`, forward5 = `${dir}/forward5.json`;
  await Deno.writeTextFile(batch10, '{"batchSize": 10}');
  await Deno.writeTextFile(forward8, '{"forward_batch_size": 8}');
  await Deno.writeTextFile(forward5, '{"forward_batch_size": 5}');
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
      // PPOConfig's checks name the flags that set the fields (their defaults included), --config's keys as there.
      [
        ["--batch-size", "10", "--mini-batch-size", "4"],
        /error: --batch-size \(10\) must be a multiple of backward_batch_size = --mini-batch-size \(4\) × /,
      ],
      [["--mini-batch-size", "3"], /--batch-size \(16\) must be a multiple of .* --mini-batch-size \(3\)/],
      [["--config", batch10], /"batch_size" \(10\) must be a multiple of .* --mini-batch-size \(4\).* --config /],
      [
        ["--config", forward8, "--mini-batch-size", "4"],
        /"forward_batch_size" \(8\) is TRL's deprecated name for --mini-batch-size, which is given as well \(4\)/,
      ],
      [["--config", forward5], /--batch-size \(16\) must be a multiple of .* mini_batch_size \(5\)/],
      [["--suppress-tokens", "none,1"], /--suppress-tokens: "none" .* cannot be combined/],
      [["--save-total-limit=-1"], /--save-total-limit must be an integer ≥ 0/],
    ];
    const runs = await Promise.all(cases.map(([flags]) => trainCli(...data, ...flags)));
    runs.forEach((r, i) => {
      assert.equal(r.code, 1, `${cases[i][0].join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, cases[i][1]);
      assert.doesNotMatch(
        r.stderr.replaceAll("\n", " "),
        /no such folder|mini_batch_size \(4\)|"mini_batch_size"|[\p{Cc}\p{Cf}\ufffd]/u,
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

Deno.test("train.ts: --save-total-limit keeps the newest checkpoints, --suppress-tokens is resolved with the policy's tokenizer, the report is titled after the folders", async () => {
  await ready;
  const policyDir = await seedLikePolicy();
  const out = await Deno.makeTempDir({ prefix: "train_limit_" });
  try {
    const promptFile = `${out}/prompts.jsonl`;
    await Deno.writeTextFile(promptFile, PROMPTS);
    const common = ["--policy", policyDir, "--reward", fixtureDir("bert-cls-tiny"), "--prompts", promptFile];
    const run = await trainCli(
      ...common,
      ...["--steps", "3", "--batch-size", "4", "--mini-batch-size", "2", "--ppo-epochs", "1", "--max-new-tokens", "3"],
      ...["--save-every", "1", "--save-total-limit", "2", "--suppress-tokens", "[UNK],[MASK],7", "--out", `${out}/run`],
    );
    assert.equal(run.code, 0, run.stderr);
    const names = [...Deno.readDirSync(`${out}/run`)].map((e) => e.name).filter((n) => n.startsWith("checkpoint-"));
    assert.deepEqual(names.sort(), ["checkpoint-2", "checkpoint-3"]);
    assert.match(run.stderr, /sampling: never generating \[UNK\] \(1\), \[MASK\] \(4\), [^ ]+ \(7\)\n/);
    assert.doesNotMatch(run.stderr, /the default for this tokenizer/);
    const runJson = JSON.parse(await Deno.readTextFile(`${out}/run/run.json`));
    assert.deepEqual(runJson.suppressTokens, [1, 4, 7]);
    assert.equal(runJson.saveTotalLimit, 2);
    assert.equal(runJson.title, undefined, "a user's run is titled by runRLHF");
    const policyName = policyDir.split("/").pop();
    assert.match(
      await Deno.readTextFile(`${out}/run/report.html`),
      new RegExp(`${policyName} steered by bert-cls-tiny`),
    );
    // A token the policy's vocabulary lacks stops the run before the prompts are read, naming the flag and vocabulary.
    const bad = await trainCli(
      ...common.slice(0, 4),
      ...["--prompts", `${out}/missing.jsonl`, "--suppress-tokens", "no-such-token-x", "--out", `${out}/run2`],
    );
    assert.equal(bad.code, 1);
    assert.match(
      bad.stderr,
      new RegExp(`--suppress-tokens: "no-such-token-x" is not a token of ${policyDir}/vocab.txt`),
    );
    const help = await trainCli("--help");
    assert.match(help.stdout, /--save-total-limit N\s+keep only the newest N checkpoints \(default 0: keep all/);
    assert.match(help.stdout, /--suppress-tokens LIST/);
    assert.match(help.stdout, /smaller than PPOConfig's defaults, TRL v0\.11\.4's\s+128 and 128/);
    assert.match(help.stdout, /130 stopped by Ctrl-C/);
  } finally {
    for (const d of [policyDir, out]) await Deno.remove(d, { recursive: true });
  }
});

Deno.test("train.ts reruns of the embedded default replace only a previous embedded-default run, and only when not told otherwise", async () => {
  const dir = await Deno.makeTempDir({ prefix: "train_demo_rerun_" });
  try {
    const plain = { embedded: true, outGiven: false, resume: false, overwrite: false };
    assert.equal(await replacesDemoRun(dir, plain), false, "no run.json: nothing to replace");
    await Deno.writeTextFile(`${dir}/run.json`, JSON.stringify({ title: EMBEDDED_TITLE, steps: 30 }));
    assert.equal(await replacesDemoRun(dir, plain), true);
    for (
      const given of [
        { ...plain, embedded: false },
        { ...plain, outGiven: true },
        { ...plain, resume: true },
        { ...plain, overwrite: true },
      ]
    ) assert.equal(await replacesDemoRun(dir, given), false, JSON.stringify(given));
    for (
      const text of [JSON.stringify({ policyDir: "mine", steps: 30 }), JSON.stringify({ title: "RLHF run" }), "{torn"]
    ) {
      await Deno.writeTextFile(`${dir}/run.json`, text);
      assert.equal(await replacesDemoRun(dir, plain), false, text);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
