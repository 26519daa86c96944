/**
 * `cli.ts` run as a subprocess against the hf-tiny fixtures: tokenize gives the reference ids, score
 * matches an in-process forward, generate is deterministic and matches in-process generation, and
 * errors name the missing path with exit code 1 (2 for bad usage); a tokenizer that does not fit the model and
 * non-finite model output are errors naming the files, not misleading messages or printed NaNs.
 */
import { assert, assertClose, ready } from "./helpers.ts";
import { fixtureDir } from "./fixtures.ts";
import { noGrad, readAll, tensor, tidy } from "../engine/tensor.ts";
import { loadGPT2, loadSequenceClassifier } from "../models/auto.ts";
import { generate } from "../models/generate.ts";
import { loadTokenizer } from "../models/tokenizer/mod.ts";
import { readSafetensors, type SafetensorsWriteTensor, writeSafetensors } from "../formats/safetensors.ts";

const ROOT = new URL("..", import.meta.url).pathname;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function cli(...args: string[]): Promise<Run> {
  // As scripts/ensure_adapter.ts does: without XDG_RUNTIME_DIR the WebGPU stack prints a warning to stderr.
  const env = { XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp" };
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "cli.ts", ...args],
    cwd: ROOT,
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

function ok(r: Run, what: string): string {
  assert.equal(r.code, 0, `${what}: exit ${r.code}, stderr: ${r.stderr}`);
  return r.stdout;
}

/** A GPT-2 folder with a tokenizer: gpt2-tiny's config + weights and tokenizer-bert-zh's vocab (both 1396). */
async function gpt2WithTokenizer(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "cli_gpt2_" });
  for (
    const [src, f] of [
      ["gpt2-tiny", "config.json"],
      ["gpt2-tiny", "model.safetensors"],
      ["tokenizer-bert-zh", "vocab.txt"],
      ["tokenizer-bert-zh", "tokenizer_config.json"],
    ]
  ) await Deno.copyFile(`${fixtureDir(src)}/${f}`, `${dir}/${f}`);
  return dir;
}

Deno.test("cli tokenize: tokenizer-bert-zh gives the reference ids and tokens (JSON and text)", async () => {
  const dir = fixtureDir("tokenizer-bert-zh");
  const ref = JSON.parse(await Deno.readTextFile(`${dir}/reference.json`));
  const [json, text, plain] = await Promise.all([
    cli("tokenize", "--model", dir, "--json", ...ref.tests),
    cli("tokenize", "-m", dir, ref.tests[0], ref.tests[1]),
    cli("tokenize", "--model", dir, "--no-special-tokens", "--json", ref.tests[0]),
  ]);
  const got = JSON.parse(ok(json, "tokenize --json"));
  assert.equal(got.length, ref.tests.length);
  got.forEach((r: { text: string; ids: number[]; tokens: string[] }, i: number) => {
    assert.equal(r.text, ref.tests[i]);
    assert.deepEqual(r.ids, ref.ids[i], `ids of ${JSON.stringify(ref.tests[i])}`);
    assert.deepEqual(r.tokens, ref.tokens[i], `tokens of ${JSON.stringify(ref.tests[i])}`);
  });
  const lines = ok(text, "tokenize").trimEnd().split("\n");
  assert.deepEqual(lines.slice(0, 3), [
    `> ${ref.tests[0]}`,
    `ids:    ${ref.ids[0].join(" ")}`,
    `tokens: ${ref.tokens[0].join(" ")}`,
  ]);
  assert.equal(lines.length, 6);
  assert.deepEqual(JSON.parse(ok(plain, "tokenize --no-special-tokens"))[0].ids, ref.ids[0].slice(1, -1));
});

Deno.test("cli score: bert-cls-tiny probabilities sum to 1, labels from id2label, match an in-process forward", async () => {
  await ready;
  const dir = fixtureDir("bert-cls-tiny");
  const texts = ["今天天气很不错！", "这部电影太差了，浪费时间", "Hello World, the movie was unbelievable!!"];
  const [json, text] = await Promise.all([
    cli("score", "--model", dir, "--json", ...texts),
    cli("score", "-m", dir, texts[0]),
  ]);
  const got = JSON.parse(ok(json, "score --json")) as {
    text: string;
    label: string;
    score: number;
    probabilities: Record<string, number>;
    logits: number[];
  }[];
  assert.equal(got.length, texts.length);

  const model = await loadSequenceClassifier(dir);
  const tok = await loadTokenizer(dir);
  const enc = tok.encodeBatch(texts, { padding: "longest" });
  const B = texts.length, T = enc.inputIds[0].length;
  const logits = noGrad(() =>
    tidy(() =>
      model.forward({
        inputIds: tensor(enc.inputIds.flat(), [B, T], "i32"),
        attentionMask: enc.attentionMask,
        tokenTypeIds: tensor(enc.tokenTypeIds!.flat(), [B, T], "i32"),
      }).logits
    )
  );
  const [lg] = await readAll([logits]);
  got.forEach((r, b) => {
    assert.equal(r.text, texts[b]);
    assert.deepEqual(Object.keys(r.probabilities), ["negative", "positive"]);
    const p = Object.values(r.probabilities);
    assert.ok(Math.abs(p[0] + p[1] - 1) < 1e-6, `probabilities sum to ${p[0] + p[1]}`);
    const row = [lg[2 * b], lg[2 * b + 1]];
    assertClose(r.logits, row, 1e-5, 1e-5, `logits of text ${b}`);
    const m = Math.max(...row), e = row.map((x) => Math.exp(x - m)), s = e[0] + e[1];
    assertClose(p, e.map((x) => x / s), 1e-6, 1e-5, `probabilities of text ${b}`);
    assert.equal(r.label, p[0] >= p[1] ? "negative" : "positive");
    assert.equal(r.score, Math.max(...p));
  });
  const line = ok(text, "score").trimEnd();
  assert.match(
    line,
    new RegExp(`^${got[0].label}\\t${got[0].score.toFixed(4)}\\t\\[negative [0-9.]+ \\| positive [0-9.]+\\]\\t`),
  );
  assert.ok(line.endsWith(texts[0]));
  logits.dispose();
  for (const p of model.parameters()) p.dispose();
});

Deno.test("cli generate: gpt2-tiny + BERT vocab, greedy is deterministic and equals in-process generate", async () => {
  await ready;
  const dir = await gpt2WithTokenizer();
  try {
    const prompts = ["你好", "今天天气很不错"];
    const args = ["generate", "--model", dir, "--max-new-tokens", "6", "--json", ...prompts];
    const sample = ["generate", "-m", dir, "--max-new-tokens", "5", "--do-sample", "--seed", "7", "--top-k", "20"];
    const [a, b, text, s1, s2] = await Promise.all([
      cli(...args),
      cli(...args),
      cli("generate", "--model", dir, "--max-new-tokens", "4", prompts[0]),
      cli(...sample, "--top-p", "0.9", "--temperature", "0.8", "--json", prompts[0]),
      cli(...sample, "--top-p", "0.9", "--temperature", "0.8", "--json", prompts[0]),
    ]);
    assert.equal(ok(a, "generate"), ok(b, "generate (again)"), "greedy output is deterministic across runs");
    const got = JSON.parse(a.stdout) as {
      prompt: string;
      text: string;
      ids: number[];
      promptIds: number[];
      finished: boolean;
    }[];
    assert.equal(got.length, 2);

    const tok = await loadTokenizer(dir);
    const model = (await loadGPT2(dir)).eval();
    const rows = prompts.map((p) => tok.encode(p));
    // As the CLI does by default: [UNK] is never generated.
    const ref = await generate(model, rows, {
      maxNewTokens: 6,
      eosTokenId: tok.sepTokenId,
      padTokenId: 0,
      suppressTokens: [tok.unkTokenId!],
    });
    got.forEach((r, i) => {
      assert.equal(r.prompt, prompts[i]);
      assert.deepEqual(r.promptIds, rows[i], "[CLS] prompt [SEP]");
      assert.deepEqual([r.promptIds[0], r.promptIds.at(-1)], [tok.clsTokenId, tok.sepTokenId]);
      assert.deepEqual(r.ids, ref.responses[i]);
      assert.ok(r.ids.length >= 1 && r.ids.length <= 6);
      assert.equal(r.finished, r.ids.at(-1) === tok.sepTokenId);
      const reply = r.finished ? r.ids.slice(0, -1) : r.ids;
      const decoded = tok.decode(reply, { skipSpecialTokens: true });
      assert.equal(r.text, decoded.replace(/(?<=\p{Script=Han}) (?=\p{Script=Han})/gu, ""));
    });
    const lines = ok(text, "generate (text)").trimEnd().split("\n");
    assert.equal(lines.length, 2);
    assert.equal(lines[0], `> ${prompts[0]}`);
    assert.equal(ok(s1, "generate --do-sample"), ok(s2, "generate --do-sample (again)"), "seeded sampling repeats");
    const sampled = JSON.parse(s1.stdout)[0];
    assert.ok(sampled.ids.length >= 1 && sampled.ids.length <= 5);
    assert.ok(sampled.ids.every((id: number) => Number.isInteger(id) && id >= 0 && id < 1396));
    for (const p of model.parameters()) p.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli errors: missing folder or file → exit 1 naming the path; bad usage → exit 2; --help", async () => {
  const empty = await Deno.makeTempDir({ prefix: "cli_empty_" });
  await Deno.copyFile(`${fixtureDir("tokenizer-bert-zh")}/vocab.txt`, `${empty}/vocab.txt`);
  const missing = `${empty}/no-such-model`;
  try {
    const runs = await Promise.all([
      cli("score", "--model", missing, "text"),
      cli("generate", "--model", missing, "text"),
      cli("tokenize", "--model", missing, "text"),
      cli("score", "--model", empty, "text"), // tokenizer present, config.json missing
      cli("generate", "--model", fixtureDir("gpt2-tiny"), "text"), // no tokenizer files
      cli("score", "--model", empty, "--max-new-tokens", "3", "text"),
      cli("generate", "--model", empty, "--temperature", "hot", "text"),
      cli("frobnicate"),
      cli("score", "--model", empty),
      cli("generate", "--help"),
      cli("--help"),
    ]);
    const [sMissing, gMissing, tMissing, noConfig, noTok, badOpt, badNum, badCmd, noText, help, mainHelp] = runs;
    for (const r of [sMissing, gMissing, tMissing]) {
      assert.equal(r.code, 1, r.stderr);
      assert.ok(r.stderr.includes(missing), `stderr names the folder: ${r.stderr}`);
      assert.ok(!/\n\s+at /.test(r.stderr), `no stack trace: ${r.stderr}`);
      assert.equal(r.stdout, "");
    }
    assert.equal(noConfig.code, 1);
    assert.ok(noConfig.stderr.includes(`${empty}/config.json`), noConfig.stderr);
    assert.equal(noTok.code, 1);
    assert.ok(noTok.stderr.includes(fixtureDir("gpt2-tiny")) && /tokenizer/.test(noTok.stderr), noTok.stderr);
    for (const r of [badOpt, badNum, badCmd, noText]) {
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /^error: /);
    }
    assert.match(badOpt.stderr, /max-new-tokens/);
    assert.match(badNum.stderr, /--temperature expects a number, got "hot"/);
    assert.match(badCmd.stderr, /unknown command "frobnicate"/);
    assert.match(noText.stderr, /no input text/);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /--max-new-tokens N/);
    assert.match(help.stdout, /\[CLS\] prompt \[SEP\]/);
    assert.equal(mainHelp.code, 0);
    assert.match(mainHelp.stdout, /tokenize[\s\S]*generate[\s\S]*score/);
  } finally {
    await Deno.remove(empty, { recursive: true });
  }
});

/** Rewrites a safetensors file with the first element of `name` set to NaN. */
async function poisonWeight(path: string, name: string): Promise<void> {
  const { tensors, metadata } = await readSafetensors(path);
  assert.ok(tensors.has(name), `${name} in ${path}`);
  tensors.get(name)!.data[0] = NaN;
  const out = new Map<string, SafetensorsWriteTensor>();
  for (const [n, t] of tensors) {
    out.set(
      n,
      t.dtype === "f32"
        ? { dtype: "F32", shape: t.shape, data: t.data as Float32Array }
        : { dtype: "I32", shape: t.shape, data: t.data as Int32Array },
    );
  }
  await writeSafetensors(path, out, metadata);
}

Deno.test("cli: a tokenizer with more ids than the model is a load error naming both files (not 'prompt 1 is empty')", async () => {
  const gen = await gpt2WithTokenizer();
  const cls = await Deno.makeTempDir({ prefix: "cli_cls_" });
  try {
    for (const f of ["config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"]) {
      await Deno.copyFile(`${fixtureDir("bert-cls-tiny")}/${f}`, `${cls}/${f}`);
    }
    // Four more tokens than the models' 1396 embedding rows.
    for (const dir of [gen, cls]) {
      await Deno.writeTextFile(`${dir}/vocab.txt`, "extra1\nextra2\nextra3\nextra4\n", { append: true });
    }
    const [g, s] = await Promise.all([cli("generate", "--model", gen, "你好"), cli("score", "--model", cls, "你好")]);
    for (const [r, dir] of [[g, gen], [s, cls]] as const) {
      assert.equal(r.code, 1, r.stderr);
      assert.ok(r.stderr.includes(`tokenizer ${dir}/vocab.txt has ids up to 1399`), r.stderr);
      assert.ok(r.stderr.includes(`(${dir}/config.json) has vocab_size 1396`), r.stderr);
      assert.doesNotMatch(r.stderr, /empty/);
      assert.equal(r.stdout, "");
    }
  } finally {
    for (const d of [gen, cls]) await Deno.remove(d, { recursive: true });
  }
});

Deno.test("cli: non-finite logits or probabilities exit 1 naming the model instead of printing NaN", async () => {
  await ready;
  const gen = await gpt2WithTokenizer();
  const cls = await Deno.makeTempDir({ prefix: "cli_cls_" });
  try {
    for (const f of ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]) {
      await Deno.copyFile(`${fixtureDir("bert-cls-tiny")}/${f}`, `${cls}/${f}`);
    }
    await poisonWeight(`${gen}/model.safetensors`, "transformer.ln_f.weight");
    await poisonWeight(`${cls}/model.safetensors`, "classifier.bias");
    const [g, gs, s] = await Promise.all([
      cli("generate", "--model", gen, "--max-new-tokens", "3", "--json", "你好", "今天"),
      cli("generate", "--model", gen, "--max-new-tokens", "3", "--do-sample", "你好"),
      cli("score", "--model", cls, "--json", "今天天气很好"),
    ]);
    for (const r of [g, gs]) {
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`the GPT-2 model in ${gen} produced non-finite logits \\(NaN or Inf\\)`));
      assert.equal(r.stdout, "");
    }
    assert.match(g.stderr, /for prompt 1, 2:/);
    assert.equal(s.code, 1, s.stderr);
    assert.match(s.stderr, new RegExp(`sequence classifier ${cls}/config.json produced a non-finite logit \\(NaN\\)`));
    assert.equal(s.stdout, "");
  } finally {
    for (const d of [gen, cls]) await Deno.remove(d, { recursive: true });
  }
});

Deno.test("cli generate: --min-new-tokens above --max-new-tokens and out-of-range --seed are usage errors", async () => {
  const dir = fixtureDir("tokenizer-bert-zh"); // never loaded: the flags are checked first
  const runs = await Promise.all([
    cli("generate", "--model", dir, "--min-new-tokens", "50", "--max-new-tokens", "4", "hi"),
    cli("generate", "--model", dir, "--seed", "4294967296", "hi"),
    cli("generate", "--model", dir, "--seed=-1", "hi"),
    cli("generate", "--model", dir, "--seed", "", "hi"),
  ]);
  for (const r of runs) {
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stdout, "");
  }
  assert.match(runs[0].stderr, /--min-new-tokens \(50\) must not exceed --max-new-tokens \(4\)/);
  assert.match(runs[1].stderr, /--seed must be an integer in \[0, 4294967295\] \(got 4294967296\)/);
  assert.match(runs[2].stderr, /--seed must be an integer in \[0, 4294967295\] \(got -1\)/);
  assert.match(runs[3].stderr, /--seed expects an integer, got ""/);
  // Without --max-new-tokens the default (32, or what n_positions leaves) is the bound.
  const gen = await gpt2WithTokenizer();
  try {
    const r = await cli("generate", "--model", gen, "--min-new-tokens", "40", "你好");
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--min-new-tokens \(40\) exceeds the default --max-new-tokens \(32\)/);
  } finally {
    await Deno.remove(gen, { recursive: true });
  }
});

/** Rewrites `model.safetensors` so that greedy decoding always picks token `id`: the final LayerNorm outputs the
 * (enlarged) embedding row of `id` whatever the input, and the tied head scores that row highest. */
async function alwaysPick(dir: string, id: number): Promise<void> {
  const path = `${dir}/model.safetensors`;
  const { tensors, metadata } = await readSafetensors(path);
  const wte = tensors.get("transformer.wte.weight")!;
  const C = wte.shape[1];
  const row = (wte.data as Float32Array).subarray(id * C, (id + 1) * C);
  for (let i = 0; i < C; i++) row[i] *= 100;
  (tensors.get("transformer.ln_f.weight")!.data as Float32Array).fill(0);
  (tensors.get("transformer.ln_f.bias")!.data as Float32Array).set(row);
  const out = new Map<string, SafetensorsWriteTensor>();
  for (const [n, t] of tensors) out.set(n, { dtype: "F32", shape: t.shape, data: t.data as Float32Array });
  await writeSafetensors(path, out, metadata);
}

Deno.test("cli generate --suppress-tokens: a suppressed token never appears (by id or token); none turns the [UNK] default off", async () => {
  await ready;
  const dir = await gpt2WithTokenizer();
  const unkModel = await gpt2WithTokenizer();
  try {
    const tok = await loadTokenizer(dir);
    const unk = tok.unkTokenId!;
    const base = ["generate", "--model", dir, "--max-new-tokens", "6", "--min-new-tokens", "6", "--json", "你好"];
    const plain = await cli(...base);
    const ids = JSON.parse(ok(plain, "generate"))[0].ids as number[];
    const first = ids[0];
    const token = tok.idToToken(first)!;
    const [byId, byToken] = await Promise.all([
      cli(...base, "--suppress-tokens", String(first)),
      cli(...base, "--suppress-tokens", token),
    ]);
    const suppressed = JSON.parse(ok(byId, "--suppress-tokens id"))[0].ids as number[];
    assert.equal(suppressed.length, 6);
    assert.ok(!suppressed.includes(first), `${first} (${token}) suppressed: ${suppressed}`);
    assert.notEqual(suppressed[0], first);
    assert.deepEqual(JSON.parse(ok(byToken, "--suppress-tokens token"))[0].ids, suppressed, "a token = its id");
    // The default ([UNK] of a BERT vocabulary) is said on stderr; an explicit list replaces it.
    assert.match(plain.stderr, new RegExp(`never generating \\[UNK\\] \\(${unk}\\) — the default for this tokenizer`));
    assert.doesNotMatch(byId.stderr, /the default for this tokenizer/);

    // A model whose greedy choice is always [UNK]: suppressed by default, generated with "none".
    await alwaysPick(unkModel, unk);
    const unkArgs = [
      "generate",
      "--model",
      unkModel,
      "--max-new-tokens",
      "4",
      "--min-new-tokens",
      "4",
      "--json",
      "你好",
    ];
    const [byDefault, none, explicit] = await Promise.all([
      cli(...unkArgs),
      cli(...unkArgs, "--suppress-tokens", "none"),
      cli(...unkArgs, "--suppress-tokens", "[UNK]"),
    ]);
    assert.deepEqual(JSON.parse(ok(none, "--suppress-tokens none"))[0].ids, [unk, unk, unk, unk]);
    assert.doesNotMatch(none.stderr, /never generating/);
    for (const r of [byDefault, explicit]) {
      const got = JSON.parse(ok(r, "[UNK] suppressed"))[0].ids as number[];
      assert.equal(got.length, 4);
      assert.ok(!got.includes(unk), String(got));
    }

    const bad = await Promise.all([
      cli(...base, "--suppress-tokens", "no-such-token-here"),
      cli(...base, "--suppress-tokens", "none,5"),
      cli(...base, "--suppress-tokens", "99999"),
    ]);
    for (const r of bad) {
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /^error: --suppress-tokens/);
      assert.equal(r.stdout, "");
    }
    assert.match(bad[0].stderr, new RegExp(`"no-such-token-here" is not a token of ${dir}/vocab.txt`));
    assert.match(bad[2].stderr, /id 99999 is not in the vocabulary/);
    assert.match(ok(await cli("generate", "--help"), "help"), /--suppress-tokens L/);
  } finally {
    for (const d of [dir, unkModel]) await Deno.remove(d, { recursive: true });
  }
});

Deno.test("cli: relative paths resolve against INIT_CWD (where `deno task` was started), errors print absolute paths", async () => {
  const home = await Deno.makeTempDir({ prefix: "cli_init_cwd_" });
  try {
    await Deno.mkdir(`${home}/tok`);
    await Deno.copyFile(`${fixtureDir("tokenizer-bert-zh")}/vocab.txt`, `${home}/tok/vocab.txt`);
    const run = async (...args: string[]) => {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "cli.ts", ...args],
        cwd: ROOT, // as deno task runs it: in the project root, with INIT_CWD naming the user's directory
        env: { XDG_RUNTIME_DIR: "/tmp", INIT_CWD: home },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
      const dec = new TextDecoder();
      return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
    };
    const [tokenized, missing, made] = await Promise.all([
      run("tokenize", "--model", "tok", "--json", "你好"),
      run("score", "--model", "no-such-model", "hi"),
      run(
        "init-model",
        "--like",
        "bert",
        "--vocab",
        "tok/vocab.txt",
        "--n-layer",
        "1",
        "--n-embd",
        "8",
        "--n-head",
        "2",
        "--out",
        "made",
      ),
    ]);
    assert.equal(JSON.parse(ok(tokenized, "tokenize tok")).length, 1);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, new RegExp(`^error: model folder ${home}/no-such-model does not exist`));
    assert.match(ok(made, "init-model"), new RegExp(`^wrote ${home}/made: `));
    assert.ok((await Deno.stat(`${home}/made/config.json`)).isFile);
    assert.equal(await Deno.stat(`${ROOT}/made`).catch(() => null), null, "nothing written in the project root");
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});
