/**
 * What the command-line programs share for user input: paths relative to INIT_CWD (deno task's start directory),
 * field names rewritten to flags in messages, and --suppress-tokens lists.
 */
import { assert } from "./helpers.ts";
import { fixtureDir } from "./fixtures.ts";
import {
  parseSuppressTokens,
  resolveSuppressTokens,
  resolveUserPath,
  userBaseDir,
  withFlagNames,
} from "../app/cli_args.ts";
import { loadTokenizer } from "../models/tokenizer/mod.ts";

Deno.test("resolveUserPath: relative paths against INIT_CWD when set (absolute), else the working directory", () => {
  const saved = Deno.env.get("INIT_CWD");
  try {
    Deno.env.set("INIT_CWD", "/somewhere/else");
    assert.equal(userBaseDir(), "/somewhere/else");
    assert.equal(resolveUserPath("models/gpt2/"), "/somewhere/else/models/gpt2");
    assert.equal(resolveUserPath("../x"), "/somewhere/x");
    assert.equal(resolveUserPath("/abs/dir/"), "/abs/dir", "absolute paths are kept");
    Deno.env.set("INIT_CWD", "relative/not/usable");
    assert.equal(resolveUserPath("m"), `${Deno.cwd()}/m`);
    Deno.env.delete("INIT_CWD");
    assert.equal(resolveUserPath("m"), `${Deno.cwd()}/m`);
  } finally {
    if (saved === undefined) Deno.env.delete("INIT_CWD");
    else Deno.env.set("INIT_CWD", saved);
  }
});

Deno.test("withFlagNames: quoted and bare field names become flags, whole names only", () => {
  const flags = { batch_size: "--batch-size", mini_batch_size: "--mini-batch-size" };
  assert.equal(
    withFlagNames('"batch_size" (10) must be a multiple of backward_batch_size = mini_batch_size (4)', flags),
    "--batch-size (10) must be a multiple of backward_batch_size = --mini-batch-size (4)",
  );
  assert.equal(withFlagNames('"gamma" must be in [0, 1]', flags), '"gamma" must be in [0, 1]');
});

Deno.test("--suppress-tokens: ids, vocabulary tokens, single-token texts, none; errors name the flag", async () => {
  const tok = await loadTokenizer(fixtureDir("tokenizer-bert-zh"));
  assert.equal(parseSuppressTokens(undefined), undefined);
  assert.deepEqual(parseSuppressTokens("none"), []);
  assert.deepEqual(parseSuppressTokens(" NONE "), []);
  const items = parseSuppressTokens("[UNK], 7,[MASK],7")!;
  assert.deepEqual(items, ["[UNK]", "7", "[MASK]", "7"]);
  assert.deepEqual(resolveSuppressTokens(items, tok), [tok.unkTokenId!, 7, tok.maskTokenId!]);
  // A text that is one token after normalisation (lower-casing) is that token.
  assert.equal(tok.tokenToId("Hello"), undefined);
  assert.deepEqual(resolveSuppressTokens(["Hello", "world"], tok), [tok.tokenToId("hello")!, tok.tokenToId("world")!]);
  assert.throws(() => parseSuppressTokens("1,,2"), /--suppress-tokens "1,,2": an empty entry/);
  assert.throws(() => parseSuppressTokens("none,3"), /"none" .* cannot be combined/);
  assert.throws(
    () => resolveSuppressTokens(["99999"], tok),
    /--suppress-tokens: id 99999 is not in the vocabulary of .*tokenizer-bert-zh.* \(ids 0…1395\)/,
  );
  assert.throws(
    () => resolveSuppressTokens(["今天天气"], tok),
    /--suppress-tokens: "今天天气" is not a token of .*tokenizer-bert-zh.* \(it encodes to 4 tokens/,
  );
});
