import assert from "node:assert/strict";
import type { HostTensor } from "../formats/host_tensor.ts";
import { parseTorchCheckpoint, readTorchCheckpoint, TorchCheckpointError } from "../formats/torch_checkpoint.ts";
import { crc32, ZipReader } from "../formats/zip.ts";
import { PyList, PySet, PyTuple, unpickle } from "../formats/pickle.ts";
import { fixturePath, FIXTURES } from "./fixtures.ts";
import { mulberry32 } from "../engine/random.ts";
import { canMeasure, memoryStatus, resetPeak, strideBomb } from "./torch_memory_probe.ts";

function fixture(path: string): Promise<Uint8Array> {
  return Deno.readFile(fixturePath(path));
}

// ---------- byte writers ----------

class W {
  private chunks: Uint8Array[] = [];
  private cur: number[] = [];
  length = 0;
  u8(...v: number[]): this {
    for (const x of v) this.cur.push(x);
    this.length += v.length;
    return this;
  }
  u16 = (v: number): this => this.u8(v & 0xff, (v >>> 8) & 0xff);
  u32 = (v: number): this => this.u16(v & 0xffff).u16(Math.floor(v / 65536) & 0xffff);
  u64 = (v: number): this => this.u32(v % 2 ** 32).u32(Math.floor(v / 2 ** 32));
  raw(bytes: Uint8Array): this {
    this.chunks.push(new Uint8Array(this.cur), bytes);
    this.cur = [];
    this.length += bytes.length;
    return this;
  }
  bytes(): Uint8Array {
    this.raw(new Uint8Array(0));
    const out = new Uint8Array(this.length);
    let o = 0;
    for (const c of this.chunks) {
      out.set(c, o);
      o += c.length;
    }
    return out;
  }
}

const enc = (s: string) => new TextEncoder().encode(s);

/** Writes pickle opcodes. */
class P extends W {
  proto = (v = 2): this => this.u8(0x80, v);
  hex = (h: string): this => this.raw(Uint8Array.from(h.split(" "), (x) => parseInt(x, 16)));
  str = (s: string): this => this.u8(0x58).u32(enc(s).length).raw(enc(s));
  int(n: number): this {
    if (n >= 0 && n < 256) return this.u8(0x4b, n);
    if (n >= 0 && n < 65536) return this.u8(0x4d).u16(n);
    return this.u8(0x4a).u32(n >>> 0);
  }
  global = (m: string, n: string): this => this.u8(0x63).raw(enc(`${m}\n${n}\n`));
  ints(v: number[]): this {
    this.u8(0x28);
    for (const x of v) this.int(x);
    return this.u8(0x74);
  }
  /** The arguments `storage, offset, size, stride, False, OrderedDict()`; `view` given ⇒ legacy 6-tuple pid. */
  args(type: string, key: string, numel: number, offset: number, size: number[], stride: number[], view?: unknown) {
    this.u8(0x28).str("storage").global("torch", type).str(key).str("cpu").int(numel);
    if (Array.isArray(view)) this.u8(0x28).str(view[0]).int(view[1]).int(view[2]).u8(0x74);
    else if (view === null) this.u8(0x4e);
    this.u8(0x74, 0x51).int(offset).ints(size).ints(stride).u8(0x89);
    return this.global("collections", "OrderedDict").u8(0x29, 0x52);
  }
  /** `_rebuild_tensor_v2(...)` with the arguments of {@link P.args}. */
  tensor = (...a: Parameters<P["args"]>): this =>
    this.global("torch._utils", "_rebuild_tensor_v2").u8(0x28).args(...a).u8(0x74, 0x52);
}

const MARK = 0x28, SETITEMS = 0x75, STOP = 0x2e, BINPUT = 0x71, BINGET = 0x68, EMPTY_DICT = 0x7d;

type Entry = { name: string; data: Uint8Array; deflate?: boolean };
const crcCache = new WeakMap<Uint8Array, number>();

async function deflateRaw(data: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([data.slice()]).stream().pipeThrough(new CompressionStream("deflate-raw"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Builds a ZIP archive (STORED or DEFLATE entries, optionally with ZIP64 records). */
async function buildZip(entries: Entry[], zip64 = false): Promise<Uint8Array> {
  const out = new W();
  const cd = new W();
  for (const e of entries) {
    let crc = crcCache.get(e.data);
    if (crc === undefined) crcCache.set(e.data, crc = crc32(e.data));
    const stored = e.deflate ? await deflateRaw(e.data) : e.data;
    const name = enc(e.name);
    const offset = out.length;
    out.u32(0x04034b50).u16(20).u16(0).u16(e.deflate ? 8 : 0).u32(0).u32(crc).u32(stored.length).u32(e.data.length);
    out.u16(name.length).u16(0).raw(name).raw(stored);
    const big = zip64 ? 0xffffffff : -1;
    cd.u32(0x02014b50).u16(45).u16(20).u16(0).u16(e.deflate ? 8 : 0).u32(0).u32(crc);
    cd.u32(zip64 ? big : stored.length).u32(zip64 ? big : e.data.length).u16(name.length).u16(zip64 ? 28 : 0);
    cd.u16(0).u16(0).u16(0).u32(0).u32(zip64 ? big : offset).raw(name);
    if (zip64) cd.u16(1).u16(24).u64(e.data.length).u64(stored.length).u64(offset);
  }
  const cdOffset = out.length;
  out.raw(cd.bytes());
  const n = entries.length;
  if (zip64) {
    const z = out.length;
    out.u32(0x06064b50).u64(44).u16(45).u16(45).u32(0).u32(0).u64(n).u64(n).u64(cd.length).u64(cdOffset);
    out.u32(0x07064b50).u32(0).u64(z).u32(1);
    return out.u32(0x06054b50).u16(0).u16(0).u16(0xffff).u16(0xffff).u32(0xffffffff).u32(0xffffffff).u16(0).bytes();
  }
  return out.u32(0x06054b50).u16(0).u16(0).u16(n).u16(n).u32(cd.length).u32(cdOffset).u16(0).bytes();
}

function legacyFile(main: Uint8Array, storages: [string, number, Uint8Array][]): Uint8Array {
  const w = new W();
  // Magic 0x1950a86a20f9469cfc6c as LONG1, then protocol 1001, then sys_info.
  w.raw(new P().proto().u8(0x8a, 10, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, STOP).bytes());
  w.raw(new P().proto().int(1001).u8(STOP).bytes());
  const sys = new P().proto().u8(EMPTY_DICT, MARK).str("protocol_version").int(1001).str("little_endian").u8(0x88);
  w.raw(
    sys.str("type_sizes").u8(EMPTY_DICT, MARK).str("short").int(2).str("long").int(4).u8(SETITEMS, SETITEMS, STOP)
      .bytes(),
  );
  w.raw(main);
  const keys = new P().proto().u8(0x5d, MARK);
  for (const [k] of storages) keys.str(k);
  w.raw(keys.u8(0x65, STOP).bytes());
  for (const [, numel, data] of storages) w.u64(numel).raw(data);
  return w.bytes();
}

// ---------- assertion helpers ----------

function f16bits(...v: number[]) {
  return new Uint8Array(new Uint16Array(v).buffer);
}
const bytesOf = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

type Ckpt = Map<string, HostTensor>;

function expectTensor(m: Ckpt, name: string, dtype: string, shape: number[], values: number[], src?: string) {
  const t = m.get(name);
  assert.ok(t, `missing tensor ${name}; have ${[...m.keys()]}`);
  assert.equal(t.dtype, dtype, name);
  assert.deepEqual(t.shape, shape, name);
  assert.deepEqual(Array.from(t.data), values, name);
  assert.ok(t.data instanceof (dtype === "f32" ? Float32Array : Int32Array), name);
  if (src) assert.equal(t.sourceDtype, src);
}

async function expectFail(bytes: Uint8Array, pattern: RegExp, file = "bad.bin"): Promise<TorchCheckpointError> {
  try {
    await parseTorchCheckpoint(bytes, file);
  } catch (e) {
    assert.ok(e instanceof TorchCheckpointError, `expected TorchCheckpointError, got ${e}`);
    assert.ok(e.message.startsWith(`${file}: `), e.message);
    assert.match(e.message, pattern);
    assert.ok(!e.message.includes("internal error"), e.message);
    return e;
  }
  throw new Error(`expected parse to fail with ${pattern}`);
}

function readSafetensors(bytes: Uint8Array): Map<string, { shape: number[]; data: Uint8Array }> {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  const out = new Map<string, { shape: number[]; data: Uint8Array }>();
  for (const [name, info] of Object.entries<{ dtype: string; shape: number[]; data_offsets: number[] }>(header)) {
    if (name === "__metadata__") continue;
    assert.equal(info.dtype, "F32", `safetensors dtype of ${name}`);
    const [a, b] = info.data_offsets;
    out.set(name, { shape: info.shape, data: bytes.subarray(8 + n + a, 8 + n + b) });
  }
  return out;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

// ---------- real checkpoints ----------

for (const model of ["gpt2-tiny", "bert-cls-tiny"]) {
  Deno.test(`${model}: pytorch_model.bin matches model.safetensors bit for bit`, async () => {
    await fixture(`${model}/pytorch_model.bin`);
    const bin = await readTorchCheckpoint(new URL(`${model}/pytorch_model.bin`, FIXTURES));
    const st = readSafetensors(await fixture(`${model}/model.safetensors`));
    for (const [name, ref] of st) {
      const t = bin.get(name);
      assert.ok(t, `${name} missing from the .bin`);
      assert.equal(t.dtype, "f32");
      assert.equal(t.sourceDtype, "torch.FloatStorage");
      assert.deepEqual(t.shape, ref.shape, name);
      assert.ok(sameBytes(bytesOf(t.data), ref.data), `values of ${name} differ`);
    }
    const extra = [...bin.keys()].filter((k) => !st.has(k));
    assert.deepEqual(extra, model === "gpt2-tiny" ? ["lm_head.weight"] : []);
    if (model === "gpt2-tiny") {
      const lm = bin.get("lm_head.weight")!, wte = bin.get("transformer.wte.weight")!;
      assert.deepEqual(lm.shape, wte.shape);
      assert.ok(sameBytes(bytesOf(lm.data), bytesOf(wte.data)));
    }
  });
}

Deno.test("readTorchCheckpoint: string path works, a missing file gives TorchCheckpointError naming it", async () => {
  await fixture("gpt2-tiny/pytorch_model.bin");
  const m = await readTorchCheckpoint(new URL("gpt2-tiny/pytorch_model.bin", FIXTURES).pathname);
  assert.equal(m.size, 29);
  await assert.rejects(() => readTorchCheckpoint("/nonexistent/model.bin"), (e: unknown) => {
    assert.ok(e instanceof TorchCheckpointError);
    assert.match(e.message, /^\/nonexistent\/model\.bin: cannot read file/);
    return true;
  });
});

// ---------- hand-built checkpoints ----------

function legacyCheckpoint(): Uint8Array {
  const p = new P().proto().u8(EMPTY_DICT, MARK);
  p.str("half").tensor("HalfStorage", "k1", 6, 0, [2, 3], [3, 1], null);
  p.str("strided").tensor("FloatStorage", "k2", 12, 0, [3, 2], [1, 3], null).u8(BINPUT, 200);
  p.str("offset").tensor("FloatStorage", "k2", 12, 3, [4], [2], null);
  p.str("tied").u8(BINGET, 200);
  p.str("param").global("torch._utils", "_rebuild_parameter");
  p.u8(MARK).tensor("FloatStorage", "k2", 12, 8, [2, 2], [2, 1], null).u8(0x88).global("collections", "OrderedDict");
  p.u8(0x29, 0x52, 0x74, 0x52);
  p.str("view").tensor("LongStorage", "k3", 8, 0, [2, 2], [2, 1], ["v1", 1, 4]);
  p.str("empty").tensor("FloatStorage", "k4", 0, 0, [0, 3], [3, 1], null);
  const main = p.u8(SETITEMS, STOP).bytes();
  const k3 = new BigInt64Array([-5n, 2147483647n, -2147483648n, 0n, 1n, 2n, 3n, 4n]);
  return legacyFile(main, [
    ["k1", 6, f16bits(0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001, 0x8000)],
    ["k2", 12, bytesOf(Float32Array.from({ length: 12 }, (_, i) => i))],
    ["k3", 8, bytesOf(k3)],
    ["k4", 0, new Uint8Array(0)],
  ]);
}

Deno.test("legacy format: f16, strided view, storage offset, shared storage, views, parameters, empty", async () => {
  const m = await parseTorchCheckpoint(legacyCheckpoint(), "legacy.bin");
  expectTensor(m, "half", "f32", [2, 3], [1, -2, 0.5, 65504, 2 ** -24, -0], "torch.HalfStorage");
  assert.ok(Object.is(m.get("half")!.data[5], -0));
  expectTensor(m, "strided", "f32", [3, 2], [0, 3, 1, 4, 2, 5], "torch.FloatStorage");
  expectTensor(m, "tied", "f32", [3, 2], [0, 3, 1, 4, 2, 5]);
  expectTensor(m, "offset", "f32", [4], [3, 5, 7, 9]);
  expectTensor(m, "param", "f32", [2, 2], [8, 9, 10, 11]);
  expectTensor(m, "view", "i32", [2, 2], [2147483647, -2147483648, 0, 1], "torch.LongStorage");
  expectTensor(m, "empty", "f32", [0, 3], []);
  assert.deepEqual([...m.keys()], ["half", "strided", "offset", "tied", "param", "view", "empty"]);
});

Deno.test("legacy format: every truncation is a TorchCheckpointError", async () => {
  const full = legacyCheckpoint();
  for (let n = 0; n < full.length; n++) await expectFail(full.subarray(0, n), /./);
});

/** A protocol-4 pickle with FRAME, MEMOIZE, STACK_GLOBAL and SHORT_BINUNICODE, covering every storage type. */
function zipPickle(): Uint8Array {
  const p = new P().proto(4).u8(0x95).u64(10).u8(EMPTY_DICT, 0x94, MARK);
  p.str("f32").tensor("FloatStorage", "0", 4, 0, [2, 2], [1, 2]);
  p.str("f64").tensor("DoubleStorage", "1", 3, 0, [3], [1]);
  p.str("bf16").tensor("BFloat16Storage", "2", 2, 0, [2], [1]);
  p.str("i64").tensor("LongStorage", "3", 3, 0, [3], [1]).u8(0x94);
  p.str("i32").tensor("IntStorage", "4", 2, 1, [1], [1]);
  p.str("i16").tensor("ShortStorage", "5", 2, 0, [2], [1]);
  p.str("i8").tensor("CharStorage", "6", 2, 0, [2], [1]);
  p.str("u8").tensor("ByteStorage", "7", 2, 0, [2], [1]);
  p.str("bool").tensor("BoolStorage", "8", 3, 0, [3], [1]);
  p.str("zero").tensor("FloatStorage", "9", 0, 0, [0], [1]);
  p.str("scalar").tensor("FloatStorage", "0", 4, 3, [], []);
  p.str("tied_i64").u8(BINGET, 1);
  p.str("nested").u8(0x8c, 11).raw(enc("collections")).u8(0x8c, 11).raw(enc("OrderedDict"));
  p.u8(0x93, 0x29, 0x52, MARK).str("w").tensor("DoubleStorage", "1", 3, 1, [2], [1]).u8(SETITEMS);
  return p.u8(SETITEMS, STOP).bytes();
}

function zipStorages(bigEndian = false): Entry[] {
  const arrays: ArrayBufferView[] = [
    new Float32Array([1, 2, 3, 4]),
    new Float64Array([0.1, -1e300, 3]),
    new Uint16Array([0x3f80, 0xc040]),
    new BigInt64Array([-1n, 7n, 2147483647n]),
    new Int32Array([9, -123456]),
    new Int16Array([-300, 5]),
    new Int8Array([-128, 127]),
    new Uint8Array([255, 0]),
    new Uint8Array([1, 0, 1]),
    new Float32Array(0),
  ];
  return arrays.map((a, i) => {
    const data = bytesOf(a).slice();
    const es = (a as Uint8Array).BYTES_PER_ELEMENT;
    if (bigEndian) { for (let j = 0; j < data.length; j += es) data.subarray(j, j + es).reverse(); }
    return { name: `weird-name/data/${i}`, data, deflate: i === 1 };
  });
}

async function handZip(opts: { bigEndian?: boolean; zip64?: boolean } = {}): Promise<Uint8Array> {
  return await buildZip([
    { name: "weird-name/data.pkl", data: zipPickle(), deflate: true },
    { name: "weird-name/byteorder", data: enc(opts.bigEndian ? "big" : "little") },
    ...zipStorages(opts.bigEndian),
    { name: "weird-name/version", data: enc("3\n") },
  ], opts.zip64);
}

for (const opts of [{}, { zip64: true }, { bigEndian: true }]) {
  Deno.test(`zip format (hand-built, ${JSON.stringify(opts)}): all storage types, DEFLATE, nesting`, async () => {
    const m = await parseTorchCheckpoint(await handZip(opts), "hand.zip");
    expectTensor(m, "f32", "f32", [2, 2], [1, 3, 2, 4], "torch.FloatStorage");
    expectTensor(m, "f64", "f32", [3], [Math.fround(0.1), -Infinity, 3], "torch.DoubleStorage");
    expectTensor(m, "bf16", "f32", [2], [1, -3], "torch.BFloat16Storage");
    expectTensor(m, "i64", "i32", [3], [-1, 7, 2147483647], "torch.LongStorage");
    expectTensor(m, "i32", "i32", [1], [-123456], "torch.IntStorage");
    expectTensor(m, "i16", "i32", [2], [-300, 5], "torch.ShortStorage");
    expectTensor(m, "i8", "i32", [2], [-128, 127], "torch.CharStorage");
    expectTensor(m, "u8", "i32", [2], [255, 0], "torch.ByteStorage");
    expectTensor(m, "bool", "i32", [3], [1, 0, 1], "torch.BoolStorage");
    expectTensor(m, "zero", "f32", [0], []);
    expectTensor(m, "scalar", "f32", [], [4]);
    expectTensor(m, "tied_i64", "i32", [3], [-1, 7, 2147483647]);
    expectTensor(m, "nested.w", "f32", [2], [-Infinity, 3]);
  });
}

Deno.test("torch 2.x constructs: OrderedDict + BUILD, parameters with state, subclass rebuild, metadata", async () => {
  const T = "torch._utils", OD = ["collections", "OrderedDict"] as const;
  const p = new P().proto().global(...OD).u8(0x29, 0x81, MARK);
  p.str("p").global(T, "_rebuild_parameter_with_state").u8(MARK).tensor("FloatStorage", "0", 4, 0, [4], [1]);
  p.u8(0x88).global(...OD).u8(0x29, 0x52, EMPTY_DICT, 0x74, 0x52);
  p.str("s").global("torch._tensor", "_rebuild_from_type_v2").u8(MARK).global(T, "_rebuild_tensor_v2");
  p.global("torch.nn.parameter", "Parameter").u8(MARK).args("FloatStorage", "0", 4, 1, [2], [1]).u8(0x74, EMPTY_DICT);
  p.u8(0x74, 0x52).str("m").global(T, "_rebuild_tensor_v2").u8(MARK).args("FloatStorage", "0", 4, 3, [1], [1]);
  p.u8(EMPTY_DICT, MARK).str("dtype").global("torch", "float32").str("b").global("_codecs", "encode");
  p.str("\x00\xff").str("latin1").u8(0x86, 0x52, SETITEMS, 0x74, 0x52);
  p.str("od").global(...OD).u8(0x5d, MARK).str("a").int(1).u8(0x86, 0x65, 0x85, 0x52);
  p.u8(SETITEMS, EMPTY_DICT).str("_metadata").global(...OD).u8(0x29, 0x52, 0x73, 0x62, STOP);
  const m = await parseTorchCheckpoint(
    await pickleZip(p.bytes(), [{ name: "archive/data/0", data: bytesOf(new Float32Array([1, 2, 3, 4])) }]),
    "torch2.bin",
  );
  assert.deepEqual([...m.keys()], ["p", "s", "m"]);
  expectTensor(m, "p", "f32", [4], [1, 2, 3, 4]);
  expectTensor(m, "s", "f32", [2], [2, 3]);
  expectTensor(m, "m", "f32", [1], [4]);
});

Deno.test("unpickle: binary and text opcodes produce plain data", () => {
  const p = new P().proto(5).u8(0x95).u64(3).u8(MARK, 0x8d).u64(2).raw(enc("hi")).u8(0x42).u32(2).u8(1, 2, 0x43, 1, 3);
  p.hex("8a 01 ff 8a 09 00 00 00 00 00 00 00 00 01 47 3f f8 00 00 00 00 00 00");
  p.raw(enc("I01\nI42\nL-7L\nF2.5\n")).u8(0x4e, 0x88, 0x4b, 1, 0x4b, 2, 0x86, 0x72).u32(1000).u8(0x30, 0x6a).u32(1000);
  p.raw(enc("p5\n0g5\n")).hex("32 5d 4b 09 61 4b 00 4b 01 4b 02 87 4b 01 85 8f 74 2e");
  const { value, end } = unpickle(p.bytes(), 0, { allowGlobal: () => false, reduce: () => null });
  assert.equal(end, p.length);
  assert.ok(value instanceof PyTuple);
  const [s, b, sb, m1, big, f, t, i42, l, f2, none, tru, tup, tup2, list, t3, t1, set] = value.items;
  assert.deepEqual([s, b, sb, m1, big, f], ["hi", new Uint8Array([1, 2]), new Uint8Array([3]), -1, 2n ** 64n, 1.5]);
  assert.deepEqual([t, i42, l, f2, none, tru], [true, 42, -7, 2.5, null, true]);
  assert.ok(tup instanceof PyTuple && tup === tup2, "memo GET and DUP return the same object");
  assert.deepEqual(tup.items, [1, 2]);
  assert.ok(list instanceof PyList && t3 instanceof PyTuple && t1 instanceof PyTuple);
  assert.ok(set instanceof PySet);
  assert.deepEqual([list.items, t3.items, t1.items, set.items], [[9], [0, 1, 2], [1], []]);
});

// ---------- malicious and malformed input ----------

const pickleZip = (pkl: Uint8Array, storages: Entry[] = []) =>
  buildZip([{ name: "archive/data.pkl", data: pkl }, ...storages, { name: "archive/version", data: enc("3\n") }]);
const legacyWith = (main: Uint8Array) => legacyFile(main, []);

Deno.test("malicious globals are refused by name and nothing runs", async () => {
  const marker = await Deno.makeTempFile();
  await Deno.remove(marker);
  const cmd = `touch ${marker}`;
  const run = (p: P) => p.str(cmd).u8(0x85, 0x52, STOP).bytes();
  const td = (t: string) => new P().proto().u8(EMPTY_DICT).str("w").tensor(t, "0", 1, 0, [1], [1]).u8(0x73, STOP);
  const cases: [Uint8Array, RegExp][] = [
    [run(new P().proto().global("os", "system")), /refusing to load global os\.system/],
    [run(new P().proto().global("posix", "system")), /refusing to load global posix\.system/],
    [run(new P().proto(4).hex("8c 08").raw(enc("builtins")).hex("8c 04").raw(enc("eval")).u8(0x93)), /builtins\.eval/],
    [new P().proto(4).str("os").str("system").u8(0x93, STOP).bytes(), /refusing to load global os\.system/],
    [new P().proto().global("__builtin__", "getattr").u8(STOP).bytes(), /global __builtin__\.getattr/],
    [new P().proto().global("torch.storage", "_load_from_bytes").u8(STOP).bytes(), /torch\.storage\._load_from_bytes/],
    [new P().proto().u8(EMPTY_DICT).str("x").global("subprocess", "Popen").u8(0x73, STOP).bytes(), /subprocess\.Popen/],
    [td("UntypedStorage").bytes(), /refusing to load global torch\.UntypedStorage/],
    [new P().proto().global("torch", "FloatStorage").u8(0x29, 0x52, STOP).bytes(), /refusing to call torch\.Float/],
  ];
  for (const [pkl, re] of cases) {
    await expectFail(await pickleZip(pkl), re);
    await expectFail(legacyWith(pkl), re);
  }
  await assert.rejects(() => Deno.stat(marker), Deno.errors.NotFound);
});

Deno.test("malformed pickles give clear errors", async () => {
  const cases: [Uint8Array, RegExp][] = [
    [new P().proto().u8(0xff).bytes(), /unsupported pickle opcode 0xff/],
    [new P().proto().u8(0x85, STOP).bytes(), /stack underflow/],
    [new P().proto().u8(BINGET, 7, STOP).bytes(), /memo miss: index 7/],
    [new P().proto().u8(0x58).u32(100).raw(enc("ab")).bytes(), /truncated pickle/],
    [new P().proto().u8(0x4e).bytes(), /no STOP opcode/],
    [new P().proto().u8(0x74, STOP).bytes(), /MARK not found/],
    [new P().proto().u8(0x4e, STOP).bytes(), /top-level object is None/],
    [new P().proto(9).bytes(), /unsupported pickle protocol 9/],
  ];
  for (const [pkl, re] of cases) await expectFail(await pickleZip(pkl), re);
});

Deno.test("missing, short and out-of-range storages are rejected with the tensor named", async () => {
  const one = (type: string, numel: number, offset: number, size: number[], stride: number[]) =>
    new P().proto().u8(EMPTY_DICT).str("t").tensor(type, "0", numel, offset, size, stride).u8(0x73, STOP).bytes();
  const st = (a: ArrayBufferView) => [{ name: "archive/data/0", data: bytesOf(a) }];
  await expectFail(await pickleZip(one("FloatStorage", 4, 0, [4], [1])), /storage 0 is missing.*archive\/data\/0/);
  const f4 = st(new Float32Array(4));
  await expectFail(await pickleZip(one("FloatStorage", 10, 0, [10], [1]), f4), /too small for tensor t/);
  await expectFail(await pickleZip(one("FloatStorage", 4, 3, [2], [1]), f4), /too small for tensor t/);
  await expectFail(await pickleZip(one("FloatStorage", 4, 0, [2, 2], [4, 1]), f4), /too small/);
  const big = st(new BigInt64Array([1n, 1n << 40n]));
  await expectFail(await pickleZip(one("LongStorage", 2, 0, [2], [1]), big), /tensor t: int64 value 1099511627776/);
  const huge = one("FloatStorage", 1, 0, [60000, 60000], [0, 0]);
  await expectFail(await pickleZip(huge, st(new Float32Array(1))), /expanded view is too large/);
});

Deno.test("non-checkpoints and truncated zip checkpoints are rejected", async () => {
  await expectFail(new Uint8Array(0), /not a PyTorch checkpoint/);
  await expectFail(enc("hello world"), /not a PyTorch checkpoint/);
  await expectFail(new P().proto().int(5).u8(STOP).bytes(), /bad legacy magic/);
  const bin = await fixture("gpt2-tiny/pytorch_model.bin");
  for (const n of [4, 30, 100, 1000, 3000, bin.length >> 1, bin.length - 23, bin.length - 22, bin.length - 1]) {
    await expectFail(bin.subarray(0, n), /./, "gpt2.bin");
  }
});

// ---------- fuzzing ----------

function mutate(src: Uint8Array, rand: () => number, hot: number): Uint8Array {
  let b: Uint8Array = src.slice();
  const pos = () =>
    Math.floor(rand() < 0.6 ? (rand() < 0.5 ? rand() * hot : b.length - 1 - rand() * hot) : rand() * b.length);
  for (let k = 1 + Math.floor(rand() * 4); k > 0; k--) {
    const i = Math.max(0, Math.min(b.length - 1, pos()));
    const r = rand();
    if (r < 0.7) b[i] = Math.floor(rand() * 256);
    else if (r < 0.8) b[i] ^= 1 << Math.floor(rand() * 8);
    else if (r < 0.9) b = new W().raw(b.subarray(0, i)).raw(b.subarray(i + 1)).bytes();
    else b = b.subarray(0, i);
  }
  return b;
}

/** Parses one fuzz input: whether it loaded (else it threw a clean TorchCheckpointError) and the peak RSS growth. */
async function fuzzCase(input: Uint8Array, it: number): Promise<{ loaded: boolean; growth: number }> {
  const before = canMeasure && resetPeak() ? memoryStatus()!.rss : NaN;
  let loaded = false;
  try {
    await parseTorchCheckpoint(input, "fuzz.bin");
    loaded = true;
  } catch (e) {
    assert.ok(e instanceof TorchCheckpointError, `iteration ${it}: ${e instanceof Error ? e.stack : e}`);
    assert.ok(!e.message.includes("internal error"), `iteration ${it}: ${(e.cause as Error)?.stack}`);
  }
  return { loaded, growth: memoryStatus()!.hwm - before };
}

// Figures (seed 0x5eed, FUZZ_FIGURES=1): 1000 cases, 953 clean TorchCheckpointErrors, 47 load; peak growth ≤ 0.3 MB.
Deno.test("fuzz: mutated checkpoints only ever throw TorchCheckpointError, within bounded peak memory", async () => {
  const bin = await fixture("gpt2-tiny/pytorch_model.bin");
  const zip = new ZipReader(bin);
  const parts: Entry[] = [];
  for (const name of zip.entries.keys()) parts.push({ name, data: (await zip.read(name)).slice() });
  const pkl = parts.find((e) => e.name.endsWith("data.pkl"))!;
  const hand = await handZip();
  const legacy = legacyCheckpoint(), bomb = strideBomb(20);
  const rand = mulberry32(0x5eed);
  let ok = 0, failed = 0, peak = 0;
  for (let it = 0; it < 1000; it++) {
    let input: Uint8Array;
    const kind = it % 5;
    if (kind === 4) input = mutate(bomb, rand, bomb.length);
    else if (kind === 0) input = mutate(bin, rand, 3000);
    else if (kind === 1) {
      const data = mutate(pkl.data, rand, pkl.data.length);
      input = await buildZip(parts.map((e) => e === pkl ? { name: e.name, data } : e));
    } else if (kind === 2) input = mutate(hand, rand, 600);
    else input = mutate(legacy, rand, legacy.length);
    const limit = 2 * input.length + 64 * 2 ** 20;
    const first = await fuzzCase(input, it);
    const loaded = first.loaded;
    let growth = first.growth;
    // Peak resident growth within the case: at most twice the input plus the runtime's slack (GC, JIT). A heap
    // expansion of the runtime's own (seen once under a fully loaded machine) does not repeat; a bomb does: the
    // same bytes are parsed again before the case fails.
    if (growth > limit) growth = (await fuzzCase(input, it)).growth;
    peak = Math.max(peak, growth || 0);
    assert.ok(!(growth > limit), `iteration ${it}: peak memory grew by ${growth} bytes`);
    if (loaded) ok++;
    else failed++;
  }
  assert.ok(ok > 0 && failed > 0, `fuzz should see both outcomes (ok ${ok}, failed ${failed})`);
  if (Deno.env.get("FUZZ_FIGURES")) console.log(JSON.stringify({ cases: 1000, ok, failed, peakGrowth: peak }));
});
