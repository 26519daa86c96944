import assert from "node:assert/strict";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { shapeSize } from "../formats/host_tensor.ts";
import {
  float16BitsToFloat32,
  float32ToBfloat16Bits,
  float32ToFloat16Bits,
  parseSafetensors,
  readSafetensors,
  readShardedSafetensors,
  SafetensorsError,
  type SafetensorsWriteTensor,
  serializeSafetensors,
  writeSafetensors,
} from "../formats/safetensors.ts";
import { loadSafetensorsDir, readModelFolder } from "../formats/model_folder.ts";
import { exists, writeFileAtomic, writeJsonAtomic } from "../formats/fs_atomic.ts";
import { mulberry32 } from "../engine/random.ts";
import { fixturePath } from "./fixtures.ts";

const enc = new TextEncoder();

/** Builds a file from a header (object or raw JSON text/bytes) and data bytes; `len` overrides the length prefix. */
function build(header: unknown, data: Uint8Array = new Uint8Array(0), len?: number | bigint): Uint8Array {
  const h = header instanceof Uint8Array
    ? header
    : enc.encode(typeof header === "string" ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(len ?? h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

function bytesOf(arr: ArrayBufferView): Uint8Array {
  return new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength);
}

function expectError(bytes: Uint8Array, pattern: RegExp, file = "bad.safetensors"): void {
  assert.throws(() => parseSafetensors(bytes, file), (e: unknown) => {
    assert.ok(e instanceof SafetensorsError, `expected SafetensorsError, got ${e}`);
    assert.ok(e.message.includes(file), `message does not name the file: ${e.message}`);
    assert.match(e.message, pattern);
    return true;
  });
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "safetensors_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("fixtures: every file in tests/fixtures/hf-tiny matches SHA256SUMS, and none is unlisted", async () => {
  const listed = new Map<string, string>();
  for (const line of (await Deno.readTextFile(fixturePath("SHA256SUMS"))).split("\n")) {
    const m = line.match(/^([0-9a-f]{64}) {2}(\S+)$/);
    if (m) listed.set(m[2], m[1]);
  }
  assert.ok(listed.size >= 19, `SHA256SUMS lists ${listed.size} files`);
  const found: string[] = [];
  const walk = (rel: string) => {
    for (const e of Deno.readDirSync(fixturePath(rel || "."))) {
      const path = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory) walk(path);
      else if (path !== "SHA256SUMS") found.push(path);
    }
  };
  walk("");
  assert.deepEqual(found.sort(), [...listed.keys()].sort());
  for (const [rel, want] of listed) {
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", await Deno.readFile(fixturePath(rel))));
    const got = Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
    assert.equal(got, want, `${rel}: the fixture changed (it is ground truth written by transformers)`);
  }
});

Deno.test("fixtures: gpt2-tiny and bert-cls-tiny checkpoints load with sensible tensors", async () => {
  const gpt2 = await readSafetensors(fixturePath("gpt2-tiny/model.safetensors"));
  assert.equal(gpt2.metadata.format, "pt");
  const wte = gpt2.tensors.get("transformer.wte.weight");
  assert.ok(wte, "transformer.wte.weight present");
  assert.deepEqual(wte.shape, [1396, 64]);
  assert.equal(wte.dtype, "f32");
  assert.equal(wte.sourceDtype, "F32");
  assert.ok(wte.data instanceof Float32Array && wte.data.length === 1396 * 64);
  assert.deepEqual(gpt2.tensors.get("transformer.h.0.attn.c_attn.weight")?.shape, [64, 192]);
  for (const [name, t] of gpt2.tensors) {
    assert.equal(t.data.length, shapeSize(t.shape), name);
    assert.ok(t.data.every(Number.isFinite), `${name} finite`);
  }
  assert.ok(wte.data.some((v) => v !== 0));

  const bert = await readSafetensors(fixturePath("bert-cls-tiny/model.safetensors"));
  assert.deepEqual(bert.tensors.get("bert.embeddings.word_embeddings.weight")?.shape, [1396, 64]);
  assert.deepEqual(bert.tensors.get("classifier.weight")?.shape, [2, 64]);
  assert.deepEqual(bert.tensors.get("bert.encoder.layer.1.intermediate.dense.weight")?.shape, [128, 64]);
  for (const t of bert.tensors.values()) assert.ok(t.dtype === "f32" && t.data.every(Number.isFinite));

  // Re-serializing gives back bit-identical tensors.
  const again = parseSafetensors(
    serializeSafetensors(new Map([...gpt2.tensors].map(([k, t]) => [k, { ...t, dtype: "F32" as const }]))),
  );
  for (const [name, t] of gpt2.tensors) assert.deepEqual(bytesOf(again.tensors.get(name)!.data), bytesOf(t.data));
});

Deno.test("fixtures: gpt2-tiny reference outputs", async () => {
  const ref = await readSafetensors(fixturePath("gpt2-tiny/reference.safetensors"));
  const ids = ref.tensors.get("input_ids")!;
  assert.equal(ids.dtype, "i32");
  assert.equal(ids.sourceDtype, "I32");
  assert.deepEqual(ids.shape, [2, 12]);
  assert.ok(ids.data instanceof Int32Array && ids.data.every((v) => v >= 0 && v < 1396));
  const logits = ref.tensors.get("logits")!;
  assert.deepEqual(logits.shape, [2, 12, 1396]);
  assert.equal(logits.dtype, "f32");
  assert.ok(logits.data.every(Number.isFinite));
});

Deno.test("float16 conversions: specific values and rounding", () => {
  const cases: [number, number][] = [
    [0, 0x0000],
    [-0, 0x8000],
    [1, 0x3c00],
    [-2, 0xc000],
    [65504, 0x7bff],
    [65519, 0x7bff], // just below the halfway point to 65536
    [65520, 0x7c00], // halfway, ties to even -> Infinity
    [1e6, 0x7c00],
    [-1e6, 0xfc00],
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
    [2 ** -14, 0x0400], // smallest normal
    [1023 * 2 ** -24, 0x03ff], // largest subnormal
    [2 ** -24, 0x0001], // smallest subnormal
    [-(2 ** -24), 0x8001],
    [2 ** -25, 0x0000], // tie between 0 and 2^-24 -> even (0)
    [1.5 * 2 ** -25, 0x0001],
    [3 * 2 ** -25, 0x0002], // tie between 1 and 2 subnormal units -> even (2)
    [5 * 2 ** -25, 0x0002], // tie between 2 and 3 -> even (2)
    [2 ** -26, 0x0000],
    [1 + 2 ** -11, 0x3c00], // tie -> even mantissa 0
    [1 + 3 * 2 ** -11, 0x3c02], // tie -> even mantissa 2
    [1 + 2 ** -11 + 2 ** -20, 0x3c01], // above tie -> up
    [2047 * 2 ** -11 + 2 ** -12, 0x3c00], // tie on an odd mantissa carries into the exponent (-> 1)
    [2047 * 2 ** -10 + 2 ** -11, 0x4000], // same, -> 2
  ];
  for (const [value, bits] of cases) {
    assert.equal(float32ToFloat16Bits(value), bits, `f16(${value})`);
  }
  const nan = float32ToFloat16Bits(NaN);
  assert.equal(nan & 0x7c00, 0x7c00);
  assert.notEqual(nan & 0x3ff, 0);
  assert.ok(Number.isNaN(float16BitsToFloat32(0x7e00)));
  assert.ok(Object.is(float16BitsToFloat32(0x8000), -0));
  assert.equal(float16BitsToFloat32(0x0001), 2 ** -24);
  assert.equal(float16BitsToFloat32(0xfbff), -65504);
  // Every non-NaN half survives a round trip exactly.
  for (let h = 0; h < 0x10000; h++) {
    if ((h & 0x7c00) === 0x7c00 && (h & 0x3ff)) continue;
    assert.equal(float32ToFloat16Bits(float16BitsToFloat32(h)), h);
  }
});

Deno.test("bfloat16 conversion rounds to nearest even", () => {
  assert.equal(float32ToBfloat16Bits(1), 0x3f80);
  assert.equal(float32ToBfloat16Bits(-2), 0xc000);
  assert.equal(float32ToBfloat16Bits(1 + 2 ** -8), 0x3f80); // tie -> even
  assert.equal(float32ToBfloat16Bits(1 + 3 * 2 ** -8), 0x3f82); // tie -> even
  assert.equal(float32ToBfloat16Bits(1 + 2 ** -8 + 2 ** -20), 0x3f81);
  assert.equal(float32ToBfloat16Bits(Infinity), 0x7f80);
  assert.equal(float32ToBfloat16Bits(3.4e38), 0x7f80); // rounds up to Infinity
  assert.equal(float32ToBfloat16Bits(NaN) & 0x7fc0, 0x7fc0);
});

Deno.test("round trip F32/F16/BF16/I32 through a file, header layout", async () => {
  await withTempDir(async (dir) => {
    const f16Values = [
      0,
      -0,
      1,
      65504,
      2 ** -24,
      1023 * 2 ** -24,
      Infinity,
      -Infinity,
      NaN,
      1 + 2 ** -11,
      0.1,
      -3.14159,
    ];
    const tensors: Record<string, SafetensorsWriteTensor> = {
      "z.f32": { dtype: "F32", shape: [2, 3], data: new Float32Array([1.5, -2, 3e-40, Infinity, NaN, 1e30]) },
      "b.f16": { dtype: "F16", shape: [f16Values.length], data: new Float32Array(f16Values) },
      "c.odd_f16": { dtype: "F16", shape: [3], data: new Float32Array([1, 2, 3]) },
      "a.i32": { dtype: "I32", shape: [1, 2, 2], data: new Int32Array([0, -1, 2 ** 31 - 1, -(2 ** 31)]) },
      "d.bf16": { dtype: "BF16", shape: [2], data: new Float32Array([1, 1 + 2 ** -8 + 2 ** -20]) },
      "empty": { dtype: "F32", shape: [0, 4], data: new Float32Array(0) },
      "scalar": { dtype: "I32", shape: [], data: new Int32Array([7]) },
    };
    const path = join(dir, "rt.safetensors");
    await writeSafetensors(path, tensors, { format: "pt", note: "héllo" });
    const { tensors: back, metadata } = await readSafetensors(path);
    assert.deepEqual(metadata, { format: "pt", note: "héllo" });
    assert.deepEqual(bytesOf(back.get("z.f32")!.data), bytesOf(tensors["z.f32"].data));
    assert.deepEqual([...back.get("a.i32")!.data], [...tensors["a.i32"].data]);
    assert.equal(back.get("a.i32")!.dtype, "i32");
    const f16 = back.get("b.f16")!;
    assert.equal(f16.sourceDtype, "F16");
    f16Values.forEach((v, i) => assert.ok(Object.is(f16.data[i], float16BitsToFloat32(float32ToFloat16Bits(v)))));
    assert.ok(Math.abs(f16.data[10] - 0.1) < 1e-4 && Math.abs(f16.data[11] + 3.14159) < 2e-3);
    assert.deepEqual([...back.get("c.odd_f16")!.data], [1, 2, 3]);
    assert.deepEqual([...back.get("d.bf16")!.data], [1, 1 + 2 ** -7]);
    assert.deepEqual(back.get("empty")!.shape, [0, 4]);
    assert.deepEqual(back.get("scalar")!.shape, []);
    assert.equal(back.get("scalar")!.data[0], 7);

    // Header: sorted keys, padded to 8 bytes, offsets contiguous and naturally aligned.
    const bytes = await Deno.readFile(path);
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    assert.equal(n % 8, 0);
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
    const names = Object.keys(header).filter((k) => k !== "__metadata__");
    assert.deepEqual(names, [...names].sort());
    const spans = names.map((k) => header[k].data_offsets as [number, number]).sort((a, b) => a[0] - b[0]);
    let at = 0;
    for (const [b, e] of spans) {
      assert.equal(b, at);
      at = e;
    }
    assert.equal(8 + n + at, bytes.length);
    for (const k of names) assert.equal(header[k].data_offsets[0] % (header[k].dtype.endsWith("16") ? 2 : 4), 0);
    assert.equal(await Array.fromAsync(Deno.readDir(dir)).then((e) => e.length), 1, "no temp files left");
  });
});

Deno.test("serialize validates its input", () => {
  const bad = (t: Record<string, unknown>, pattern: RegExp, meta?: Record<string, string>) =>
    assert.throws(
      () => serializeSafetensors(t as Record<string, SafetensorsWriteTensor>, meta, "out.safetensors"),
      (e: unknown) => e instanceof SafetensorsError && e.message.includes("out.safetensors") && pattern.test(e.message),
    );
  bad({ x: { dtype: "F32", shape: [2, 2], data: new Float32Array(3) } }, /3 elements.*needs 4/);
  bad({ x: { dtype: "I32", shape: [2], data: new Float32Array(2) } }, /Int32Array/);
  bad({ x: { dtype: "F16", shape: [2], data: new Int32Array(2) } }, /Float32Array/);
  bad({ x: { dtype: "I64", shape: [2], data: new Int32Array(2) } }, /cannot write dtype/);
  bad({ x: { dtype: "F32", shape: [-1], data: new Float32Array(0) } }, /non-negative/);
  bad({ __metadata__: { dtype: "F32", shape: [0], data: new Float32Array(0) } }, /reserved/);
  bad({}, /must be a string/, { a: 1 } as unknown as Record<string, string>);
});

Deno.test("reads BF16, F64, I64, U8, BOOL, I16, I8, U16, U32, U64 and unaligned offsets", () => {
  const parts: [string, string, number[], Uint8Array][] = [
    ["bf16", "BF16", [5], bytesOf(new Uint16Array([0x3f80, 0xc000, 0x7f80, 0x0001, 0xff80]))],
    ["f64", "F64", [3], bytesOf(new Float64Array([0.1, -1e300, 2.5]))],
    ["i64", "I64", [4], bytesOf(new BigInt64Array([0n, -1n, 2n ** 31n - 1n, -(2n ** 31n)]))],
    ["u8", "U8", [3], new Uint8Array([0, 200, 255])],
    ["bool", "BOOL", [3], new Uint8Array([0, 1, 1])],
    ["i16", "I16", [2], bytesOf(new Int16Array([-32768, 5]))],
    ["i8", "I8", [2], bytesOf(new Int8Array([-128, 127]))],
    ["u16", "U16", [1], bytesOf(new Uint16Array([65535]))],
    ["u32", "U32", [1], bytesOf(new Uint32Array([2 ** 31 - 1]))],
    ["u64", "U64", [1], bytesOf(new BigUint64Array([12345n]))],
    ["f32_odd", "F32", [2], bytesOf(new Float32Array([1.25, -7]))],
  ];
  // A one-byte tensor first: every other tensor starts unaligned.
  const header: Record<string, unknown> = { pad: { dtype: "U8", shape: [1], data_offsets: [0, 1] } };
  const chunks: Uint8Array[] = [new Uint8Array([7])];
  let at = 1;
  for (const [name, dtype, shape, data] of parts) {
    header[name] = { dtype, shape, data_offsets: [at, at + data.length] };
    chunks.push(data);
    at += data.length;
  }
  const data = new Uint8Array(at);
  let o = 0;
  for (const c of chunks) (data.set(c, o), o += c.length);
  const { tensors: t } = parseSafetensors(build(JSON.stringify(header) + " ", data));
  assert.deepEqual([...t.get("bf16")!.data], [1, -2, Infinity, 2 ** -133, -Infinity]);
  assert.equal(t.get("bf16")!.sourceDtype, "BF16");
  assert.deepEqual([...t.get("f64")!.data], [Math.fround(0.1), -Infinity, 2.5]);
  assert.deepEqual([...t.get("i64")!.data], [0, -1, 2 ** 31 - 1, -(2 ** 31)]);
  assert.equal(t.get("i64")!.dtype, "i32");
  assert.deepEqual([...t.get("u8")!.data], [0, 200, 255]);
  assert.deepEqual([...t.get("bool")!.data], [0, 1, 1]);
  assert.deepEqual([...t.get("i16")!.data], [-32768, 5]);
  assert.deepEqual([...t.get("i8")!.data], [-128, 127]);
  assert.deepEqual([...t.get("u16")!.data], [65535]);
  assert.deepEqual([...t.get("u32")!.data], [2 ** 31 - 1]);
  assert.deepEqual([...t.get("u64")!.data], [12345]);
  assert.deepEqual([...t.get("f32_odd")!.data], [1.25, -7]);
  assert.deepEqual([...t.get("pad")!.data], [7]);
});

Deno.test("zero-size tensors are valid on tensor boundaries, not inside a tensor", () => {
  const header = {
    a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
    e0: { dtype: "F32", shape: [0], data_offsets: [0, 0] },
    e1: { dtype: "F32", shape: [0], data_offsets: [8, 8] },
    e2: { dtype: "I64", shape: [3, 0, 5], data_offsets: [8, 8] },
  };
  const { tensors } = parseSafetensors(build(header, new Uint8Array(8)));
  assert.equal(tensors.get("e0")!.data.length, 0);
  assert.equal(tensors.get("e1")!.data.length, 0);
  assert.deepEqual(tensors.get("e2")!.shape, [3, 0, 5]);
  assert.deepEqual(parseSafetensors(build({})).tensors.size, 0);
  expectError(
    build({ ...header, e1: { dtype: "F32", shape: [0], data_offsets: [4, 4] } }, new Uint8Array(8)),
    /zero-size tensor "e1" \[4, 4\] lies inside "a" \[0, 8\]/,
  );
});

Deno.test("layout: data shifted by inserted bytes, gaps and trailing bytes are refused (reference rule)", async () => {
  const file = fixturePath("gpt2-tiny/model.safetensors");
  const good = await Deno.readFile(file);
  const parsed = parseSafetensors(good, "model.safetensors");
  assert.ok(parsed.tensors.size > 10);
  const headerEnd = 8 + Number(new DataView(good.buffer, good.byteOffset).getBigUint64(0, true));
  const splice = (at: number, extra: Uint8Array) => {
    const out = new Uint8Array(good.length + extra.length);
    out.set(good.subarray(0, at));
    out.set(extra, at);
    out.set(good.subarray(at), at + extra.length);
    return out;
  };
  // Four bytes inserted after the header shift every tensor by one f32: the old reader loaded wrong weights.
  const shifted = splice(headerEnd, new Uint8Array([1, 2, 3, 4]));
  expectError(shifted, /data section is \d+ bytes but the tensors end at byte \d+: 4 unexplained bytes/, "shift.st");
  expectError(splice(good.length, new Uint8Array(3)), /3 unexplained bytes/, "tail.st");
  expectError(splice(headerEnd + 100, new Uint8Array(8)), /8 unexplained bytes/, "mid.st");
  // Hand-made layouts: a gap between tensors, a first tensor that does not start at 0, missing data.
  const f = (begin: number) => ({ dtype: "F32", shape: [1], data_offsets: [begin, begin + 4] });
  expectError(
    build({ a: f(0), b: f(8) }, new Uint8Array(12)),
    /4 bytes of the data section belong to no tensor \(between "a" \[0, 4\] and "b" \[8, 12\]\)/,
  );
  expectError(build({ a: f(4) }, new Uint8Array(8)), /4 bytes .* no tensor \(before "a" \[4, 8\], the first tensor\)/);
  expectError(build({ a: f(0) }, new Uint8Array(8)), /data section is 8 bytes but the tensors end at byte 4/);
  expectError(build({}, new Uint8Array(2)), /data section is 2 bytes but the tensors end at byte 0/);
  // What the writer produces always satisfies the rule.
  const written = serializeSafetensors({ b: { dtype: "F16", shape: [3], data: new Float32Array(3) }, a: f32(1, 2) });
  assert.deepEqual([...parseSafetensors(written).tensors.keys()].sort(), ["a", "b"]);
});

function f32(...v: number[]): SafetensorsWriteTensor {
  return { dtype: "F32", shape: [v.length], data: new Float32Array(v) };
}

Deno.test("messages escape and shorten binary or hostile text from the file", () => {
  const evil = "w\u0000\u001b[31m\u202e\ufffd" + "x".repeat(500);
  const check = (bytes: Uint8Array, pattern: RegExp) =>
    assert.throws(() => parseSafetensors(bytes, "evil.safetensors"), (e: unknown) => {
      assert.ok(e instanceof SafetensorsError, String(e));
      const m = e.message;
      assert.ok(!/[\p{Cc}\p{Cf}\ufffd]/u.test(m), `raw control bytes in ${JSON.stringify(m)}`);
      assert.ok(m.length < 400, `message is ${m.length} characters`);
      assert.match(m, pattern);
      return true;
    });
  check(build({ [evil]: { dtype: "F32", shape: [1], data_offsets: [0, 8] } }, new Uint8Array(8)), /\\x1b\[31m/);
  check(build({ x: { dtype: evil, shape: [1], data_offsets: [0, 4] } }, new Uint8Array(4)), /more characters/);
  const binary = new Uint8Array(64).map((_, i) => (i * 37) & 0xff);
  binary[0] = 0x7b;
  check(build(new TextEncoder().encode("\u0001\u0002" + "\u0007".repeat(300))), /not valid JSON \(.*\\x01/);
  check(build(binary), /UTF-8|not valid JSON/);
});

Deno.test("malformed files raise SafetensorsError naming the file and the reason", () => {
  const t = (extra: Record<string, unknown> = {}) => ({
    x: { dtype: "F32", shape: [2], data_offsets: [0, 8], ...extra },
  });
  const d8 = new Uint8Array(8);
  expectError(new Uint8Array(5), /shorter than/);
  expectError(new Uint8Array(0), /shorter than/);
  expectError(build("{}", d8, 1000), /past the end/);
  expectError(build("{}", d8, 200_000_000), /limit/);
  expectError(build("{}", d8, 2n ** 40n), /limit/);
  expectError(build("{}", d8, 2n ** 64n - 1n), /limit/);
  expectError(build(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])), /UTF-8/);
  expectError(build("{not json"), /not valid JSON/);
  expectError(build(""), /not valid JSON/);
  expectError(build("[]"), /must be a JSON object/);
  expectError(build("null"), /must be a JSON object/);
  expectError(build("42"), /must be a JSON object/);
  expectError(build({ x: 5 }, d8), /"x".*must be an object/);
  expectError(build({ x: { shape: [2], data_offsets: [0, 8] } }, d8), /"x".*missing "dtype"/);
  expectError(build({ x: { dtype: "F32", data_offsets: [0, 8] } }, d8), /missing "shape"/);
  expectError(build({ x: { dtype: "F32", shape: [2] } }, d8), /missing "data_offsets"/);
  expectError(build(t({ dtype: 4 }), d8), /"dtype" must be a string/);
  expectError(build(t({ shape: "2" }), d8), /"shape" must be an array/);
  expectError(build(t({ shape: [-2] }), d8), /"shape" must be an array of non-negative integers/);
  expectError(build(t({ shape: [1.5] }), d8), /non-negative integers/);
  expectError(build(t({ shape: [null] }), d8), /non-negative integers/);
  expectError(build(t({ data_offsets: [0] }), d8), /"data_offsets" must be two/);
  expectError(build(t({ data_offsets: [0, 8, 9] }), d8), /"data_offsets" must be two/);
  expectError(build(t({ data_offsets: [-1, 7] }), d8), /"data_offsets" must be two non-negative/);
  expectError(build(t({ data_offsets: [0.5, 8] }), d8), /"data_offsets" must be two non-negative/);
  expectError(build(t({ data_offsets: ["0", "8"] }), d8), /"data_offsets" must be two/);
  expectError(build(t({ data_offsets: { 0: 0, 1: 8 } }), d8), /"data_offsets" must be two/);
  expectError(build(t({ data_offsets: [8, 0] }), d8), /begin 8 > end 0/);
  expectError(build(t({ dtype: "F8_E4M3" }), d8), /unsupported dtype "F8_E4M3"/);
  expectError(build(t({ dtype: "toString" }), d8), /unsupported dtype/);
  expectError(build(t(), new Uint8Array(7)), /exceed the data section/);
  expectError(build(t({ data_offsets: [4, 12] }), d8), /exceed the data section/);
  expectError(build(t({ data_offsets: [0, 2 ** 53 - 1] }), d8), /exceed the data section/);
  expectError(build(t({ shape: [3] }), new Uint8Array(12)), /needs 12 bytes but data_offsets span 8/);
  expectError(build(t({ shape: [2 ** 40, 2 ** 40] }), d8), /bytes but data_offsets span/);
  expectError(
    build({
      a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
      b: { dtype: "F32", shape: [2], data_offsets: [4, 12] },
    }, new Uint8Array(12)),
    /"a" \[0, 8\] and "b" \[4, 12\] overlap/,
  );
  expectError(
    build({
      a: { dtype: "U8", shape: [4], data_offsets: [0, 4] },
      b: { dtype: "U8", shape: [1], data_offsets: [0, 1] },
    }, new Uint8Array(4)),
    /overlap/,
  );
  expectError(build({ __metadata__: { a: 1 } }), /__metadata__\["a"\] must be a string/);
  expectError(build({ __metadata__: ["x"] }), /__metadata__ must be an object/);
  expectError(build({ __metadata__: "x" }), /__metadata__ must be an object/);
  expectError(build({ __metadata__: null }), /__metadata__ must be an object/);
  const i64 = (v: bigint) =>
    build({ big: { dtype: "I64", shape: [2], data_offsets: [0, 16] } }, bytesOf(new BigInt64Array([0n, v])));
  expectError(i64(2n ** 31n), /"big" \(I64\): value 2147483648 at index 1 is outside the int32 range/);
  expectError(i64(-(2n ** 31n) - 1n), /"big".*-2147483649/);
  expectError(i64(2n ** 62n), /"big".*int32 range/);
  const u32 = build({ u: { dtype: "U32", shape: [1], data_offsets: [0, 4] } }, bytesOf(new Uint32Array([2 ** 31])));
  expectError(u32, /"u".*2147483648/);
});

Deno.test("readSafetensors: missing file names the path", async () => {
  const path = join(Deno.cwd(), "definitely-missing-dir", "nope.safetensors");
  await assert.rejects(readSafetensors(path), (e: unknown) => {
    assert.ok(e instanceof SafetensorsError);
    assert.ok(e.message.includes(path) && /not found/.test(e.message), e.message);
    return true;
  });
});

Deno.test("sharded checkpoints and loadSafetensorsDir", async () => {
  await withTempDir(async (dir) => {
    const f = (...v: number[]) => ({ dtype: "F32" as const, shape: [v.length], data: new Float32Array(v) });
    await writeSafetensors(join(dir, "model-00001-of-00002.safetensors"), { a: f(1, 2), b: f(3), extra: f(9) }, {
      format: "pt",
    });
    await writeSafetensors(join(dir, "model-00002-of-00002.safetensors"), {
      c: { dtype: "I32", shape: [1], data: new Int32Array([5]) },
    });
    const index = {
      metadata: { total_size: 16 },
      weight_map: {
        a: "model-00001-of-00002.safetensors",
        b: "model-00001-of-00002.safetensors",
        c: "model-00002-of-00002.safetensors",
      },
    };
    const indexPath = join(dir, "model.safetensors.index.json");
    await writeJsonAtomic(indexPath, index);
    for (const loaded of [await readShardedSafetensors(indexPath), await loadSafetensorsDir(dir)]) {
      assert.deepEqual([...loaded.tensors.keys()].sort(), ["a", "b", "c"]);
      assert.deepEqual([...loaded.tensors.get("a")!.data], [1, 2]);
      assert.deepEqual([...loaded.tensors.get("c")!.data], [5]);
      assert.deepEqual(loaded.metadata, { format: "pt", total_size: "16" });
    }
    const viaUrl = await loadSafetensorsDir(pathToFileURL(dir));
    assert.equal(viaUrl.tensors.size, 3);

    const expectIndexError = async (value: unknown, pattern: RegExp) => {
      await Deno.writeTextFile(indexPath, typeof value === "string" ? value : JSON.stringify(value));
      await assert.rejects(readShardedSafetensors(indexPath), (e: unknown) => {
        assert.ok(e instanceof SafetensorsError, String(e));
        assert.ok(e.message.includes(indexPath), e.message);
        assert.match(e.message, pattern);
        return true;
      });
    };
    await expectIndexError(
      { weight_map: { ...index.weight_map, d: "model-00003.safetensors" } },
      /model-00003.*not found/,
    );
    await expectIndexError(
      { weight_map: { ...index.weight_map, zz: "model-00002-of-00002.safetensors" } },
      /"zz" is not in its shard/,
    );
    await expectIndexError("{oops", /not valid JSON/);
    await expectIndexError([], /must be a JSON object/);
    await expectIndexError({ metadata: {} }, /weight_map must be an object/);
    await expectIndexError({ weight_map: { a: 3 } }, /weight_map\["a"\] must be a string/);
    await expectIndexError({ weight_map: { a: "../x.safetensors" } }, /invalid shard file name/);
    await expectIndexError({ weight_map: {}, metadata: 5 }, /"metadata" must be an object/);
    await Deno.writeFile(join(dir, "bad.safetensors"), new Uint8Array(3));
    await expectIndexError({ weight_map: { a: "bad.safetensors" } }, /"bad.safetensors".*shorter than/);

    // model.safetensors takes precedence over the index.
    await writeSafetensors(join(dir, "model.safetensors"), { only: f(4) });
    assert.deepEqual([...(await loadSafetensorsDir(dir)).tensors.keys()], ["only"]);
    const empty = join(dir, "empty");
    await Deno.mkdir(empty);
    await assert.rejects(loadSafetensorsDir(empty), (e: unknown) => {
      assert.ok(e instanceof SafetensorsError && e.message.includes(empty));
      assert.match(e.message, /model\.safetensors and model\.safetensors\.index\.json/);
      return true;
    });
  });
});

Deno.test("readModelFolder: first weight file found, the file it read, folders without weights; exists()", async () => {
  await withTempDir(async (dir) => {
    assert.equal(await exists(dir), true);
    assert.equal(await exists(dir, "file"), false);
    assert.equal(await exists(join(dir, "nope")), false);
    await assert.rejects(readModelFolder(`${dir}/`), (e: unknown) => {
      assert.ok(!(e instanceof SafetensorsError));
      assert.equal(
        (e as Error).message,
        `${dir}: no weights found (looked for model.safetensors, model.safetensors.index.json, pytorch_model.bin)`,
      );
      return true;
    });
    await Deno.writeTextFile(join(dir, "pytorch_model.bin.index.json"), "{}");
    await assert.rejects(readModelFolder(dir), /sharded pytorch_model\.bin checkpoints are not supported/);
    const file = join(dir, "model.safetensors");
    await writeSafetensors(file, { w: { dtype: "F32", shape: [1], data: new Float32Array([2]) } }, { format: "pt" });
    assert.equal(await exists(file, "file"), true);
    const loaded = await readModelFolder(pathToFileURL(dir));
    assert.equal(loaded.file, file);
    assert.deepEqual(loaded.metadata, { format: "pt" });
    assert.deepEqual([...loaded.tensors.keys()], ["w"]);
  });
});

const prng = mulberry32;

Deno.test("fuzz: mutated files parse or throw SafetensorsError, nothing else", () => {
  const base = serializeSafetensors({
    w: { dtype: "F32", shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6]) },
    h: { dtype: "F16", shape: [3], data: new Float32Array([0.5, -1, 7]) },
    b: { dtype: "BF16", shape: [1], data: new Float32Array([2]) },
    i: { dtype: "I32", shape: [2], data: new Int32Array([-4, 9]) },
    e: { dtype: "F32", shape: [0], data: new Float32Array(0) },
  }, { format: "pt" });
  const extra = build({
    __metadata__: { k: "v" },
    l: { dtype: "I64", shape: [2], data_offsets: [0, 16] },
    u: { dtype: "U8", shape: [3], data_offsets: [16, 19] },
    q: { dtype: "BOOL", shape: [1], data_offsets: [19, 20] },
  }, new Uint8Array([...bytesOf(new BigInt64Array([3n, -3n])), 1, 2, 3, 1]));
  const rand = prng(12345);
  const int = (n: number) => Math.floor(rand() * n);
  const headerChars = enc.encode('0123456789-.eE[]{}",: xF_I');
  const junk: unknown[] = [-1, 1.5, 0, 2 ** 60, "F32", "I64", "Q", null, [], {}, [1], [0, 0], [5, 1], { a: 1 }, true];
  let ok = 0;
  let rejected = 0;
  for (let iter = 0; iter < 3000; iter++) {
    const src = iter % 3 === 2 ? extra : base;
    const hLen = Number(new DataView(src.buffer).getBigUint64(0, true));
    let bytes: Uint8Array = src.slice();
    const kind = int(6);
    if (kind === 0) {
      for (let k = 1 + int(4); k > 0; k--) bytes[int(bytes.length)] = int(256);
    } else if (kind === 1) {
      for (let k = 1 + int(3); k > 0; k--) bytes[8 + int(hLen)] = headerChars[int(headerChars.length)];
    } else if (kind === 2) {
      bytes = bytes.slice(0, int(bytes.length));
    } else if (kind === 3) {
      new DataView(bytes.buffer).setUint32(int(2) * 4, rand() < 0.5 ? hLen + int(33) - 16 : int(2 ** 32), true);
    } else if (kind === 4) {
      const text = new TextDecoder().decode(bytes.subarray(8, 8 + hLen));
      const pos = int(text.length);
      const edited = rand() < 0.5
        ? text.slice(0, pos) + text.slice(pos + 1)
        : text.slice(0, pos) + String.fromCharCode(headerChars[int(headerChars.length)]) + text.slice(pos);
      bytes = build(edited, bytes.subarray(8 + hLen));
    } else {
      const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + hLen)));
      const names = Object.keys(header);
      const name = names[int(names.length)];
      const fields = ["dtype", "shape", "data_offsets", "k", "format"];
      const value = junk[int(junk.length)];
      if (rand() < 0.2) header[name] = value;
      else if (header[name] && typeof header[name] === "object") header[name][fields[int(fields.length)]] = value;
      bytes = build(header, bytes.subarray(8 + hLen));
    }
    try {
      const { tensors } = parseSafetensors(bytes, "fuzz.safetensors");
      for (const t of tensors.values()) assert.equal(t.data.length, shapeSize(t.shape));
      ok++;
    } catch (e) {
      if (!(e instanceof SafetensorsError)) throw new Error(`iteration ${iter} (kind ${kind}) threw ${e}`);
      assert.ok(e.message.includes("fuzz.safetensors"));
      rejected++;
    }
  }
  assert.ok(ok > 50 && rejected > 500, `ok=${ok} rejected=${rejected}`);
});

Deno.test("writeFileAtomic: readers see old or new content, temp files are cleaned up", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "data.bin");
    const size = 1 << 20;
    await writeFileAtomic(path, new Uint8Array(size).fill(1));
    for (let round = 2; round < 8; round++) {
      let done = false;
      const writing = writeFileAtomic(path, new Uint8Array(size).fill(round)).finally(() => done = true);
      while (!done) {
        const seen = await Deno.readFile(path);
        assert.equal(seen.length, size);
        assert.ok(seen[0] === round - 1 || seen[0] === round);
        assert.ok(seen.every((v) => v === seen[0]), "torn read");
      }
      await writing;
      assert.equal((await Deno.readFile(path))[size - 1], round);
    }
    const listing = async () => (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
    assert.deepEqual(await listing(), ["data.bin"]);

    await writeFileAtomic(pathToFileURL(join(dir, "text.txt")), "héllo");
    assert.equal(await Deno.readTextFile(join(dir, "text.txt")), "héllo");
    await writeJsonAtomic(join(dir, "v.json"), { a: [1, 2] });
    assert.deepEqual(JSON.parse(await Deno.readTextFile(join(dir, "v.json"))), { a: [1, 2] });

    // Failure: renaming over a non-empty directory fails; the temp file must be removed.
    await Deno.mkdir(join(dir, "blocker"));
    await Deno.writeTextFile(join(dir, "blocker", "keep"), "x");
    await assert.rejects(writeFileAtomic(join(dir, "blocker"), "new"));
    await assert.rejects(writeFileAtomic(join(dir, "no-such-dir", "f"), "new"));
    assert.deepEqual(await listing(), ["blocker", "data.bin", "text.txt", "v.json"]);
    assert.equal(await Deno.readTextFile(join(dir, "blocker", "keep")), "x");
    await assert.rejects(writeSafetensors(join(dir, "blocker"), {}), SafetensorsError);
  });
});
