/**
 * Reader and writer for the safetensors checkpoint format (host side, no GPU).
 *
 * Layout: an 8-byte little-endian u64 header length N, N bytes of UTF-8 JSON mapping each tensor name
 * to `{dtype, shape, data_offsets: [begin, end]}` (offsets relative to the first byte after the header)
 * plus an optional `"__metadata__"` string map, then the raw little-endian tensor bytes.
 *
 * Floating dtypes (F64, F32, F16, BF16) load as `f32`; integer and boolean dtypes load as `i32`.
 * @module
 */

import { dirname, isAbsolute, join } from "node:path";
import { fileURLToPath } from "node:url";
import { type DType, type HostTensor, shapeSize } from "./host_tensor.ts";
import { writeFileAtomic } from "./fs_atomic.ts";
import { float16BitsToFloat32, float32ToBfloat16Bits, float32ToFloat16Bits } from "./float16.ts";

export type { DType, HostTensor };
export { float16BitsToFloat32, float32ToBfloat16Bits, float32ToFloat16Bits };

/** Largest accepted JSON header, in bytes. */
export const MAX_HEADER_BYTES = 100_000_000;

/** Error for any unreadable, malformed or unwritable safetensors data; the message names the file and the reason. */
export class SafetensorsError extends Error {
  /** The file (or `"<memory>"`) the error is about. */
  readonly file: string;
  /** What is wrong, without the file name. */
  readonly reason: string;
  /**
   * Creates an error whose message is `safetensors <file>: <reason>`.
   * @param file File name or path shown in the message.
   * @param reason Human-readable description of the problem.
   * @param options Standard error options (e.g. `cause`).
   */
  constructor(file: string, reason: string, options?: ErrorOptions) {
    super(`safetensors ${file}: ${reason}`, options);
    this.name = "SafetensorsError";
    this.file = file;
    this.reason = reason;
  }
}

/** Parsed contents of a safetensors file (or of a sharded checkpoint). */
export interface SafetensorsContents {
  /** Tensors by name, in header order. */
  tensors: Map<string, HostTensor>;
  /** The `__metadata__` string map (empty when absent). */
  metadata: Record<string, string>;
}

/** Dtypes {@linkcode serializeSafetensors} can write. */
export type SafetensorsWriteDtype = "F32" | "F16" | "BF16" | "I32";

/** A tensor to serialize: F32/F16/BF16 take a Float32Array (converted on write), I32 an Int32Array. */
export interface SafetensorsWriteTensor {
  /** Dtype stored in the file. */
  dtype: SafetensorsWriteDtype;
  /** Dimensions, outermost first. */
  shape: number[];
  /** Row-major elements; length must equal the product of `shape`. */
  data: Float32Array | Int32Array;
}

/** Bytes per element of each readable file dtype. */
const ITEM_BYTES: ReadonlyMap<string, number> = new Map(
  "F64:8 F32:4 F16:2 BF16:2 I64:8 U64:8 I32:4 U32:4 I16:2 U16:2 I8:1 U8:1 BOOL:1".split(" ").map((kv) => {
    const [k, v] = kv.split(":");
    return [k, Number(v)];
  }),
);
const FLOAT_DTYPES = new Set(["F64", "F32", "F16", "BF16"]);
// Typed-array fast paths below assume a little-endian host, as every Deno target is.
if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) throw new Error("safetensors.ts needs a little-endian host");

function fail(file: string, reason: string): never {
  throw new SafetensorsError(file, reason);
}

/**
 * Makes text from a file safe to quote in a one-line message: control, format (e.g. bidi), private-use, unassigned
 * and line-separator characters, lone surrogates and U+FFFD (undecodable bytes) become `\xNN` / `\u{N}` escapes,
 * and text longer than `maxChars` code points is cut, saying how much was left out.
 * @param text Any text, typically from a file or from a parser's error message about one.
 * @param maxChars Code points kept before the rest is cut (default 80).
 * @returns The escaped, possibly shortened text.
 */
export function printable(text: string, maxChars = 80): string {
  const chars = Array.from(String(text));
  const kept = chars.slice(0, Math.max(0, maxChars)).map((c) => {
    if (!/[\p{Cc}\p{Cf}\p{Co}\p{Cn}\p{Cs}\p{Zl}\p{Zp}\uFFFD]/u.test(c)) return c;
    const cp = c.codePointAt(0)!;
    return cp < 0x100 ? `\\x${cp.toString(16).padStart(2, "0")}` : `\\u{${cp.toString(16)}}`;
  }).join("");
  const cut = chars.length - Math.min(chars.length, Math.max(0, maxChars));
  return cut > 0 ? `${kept}… (${cut} more characters)` : kept;
}

/** A name or value from the header, quoted for a message (escaped and shortened). */
function q(text: string): string {
  return `"${printable(text, 60)}"`;
}

function describe(value: unknown): string {
  if (Array.isArray(value)) return "an array";
  if (value === null) return "null";
  return typeof value === "object" ? "an object" : `${typeof value} ${printable(String(JSON.stringify(value)), 40)}`;
}

const isPlainObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value);
const isNonNegInt = (value: unknown): value is number =>
  typeof value === "number" && Number.isSafeInteger(value) && value >= 0;

function checkStringMap(file: string, what: string, value: unknown): Record<string, string> {
  if (!isPlainObject(value)) fail(file, `${what} must be an object of strings, got ${describe(value)}`);
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== "string") fail(file, `${what}[${q(k)}] must be a string, got ${describe(v)}`);
    out[k] = v;
  }
  return out;
}

interface Entry {
  name: string;
  dtype: string;
  shape: number[];
  begin: number;
  end: number;
}

function checkEntry(file: string, name: string, info: unknown, dataLength: number): Entry {
  const where = `tensor ${q(name)}`;
  if (!isPlainObject(info)) fail(file, `${where}: entry must be an object, got ${describe(info)}`);
  const { dtype, shape, data_offsets: offsets } = info;
  if (dtype === undefined) fail(file, `${where}: missing "dtype"`);
  if (shape === undefined) fail(file, `${where}: missing "shape"`);
  if (offsets === undefined) fail(file, `${where}: missing "data_offsets"`);
  if (typeof dtype !== "string") fail(file, `${where}: "dtype" must be a string`);
  const item = ITEM_BYTES.get(dtype);
  if (item === undefined) fail(file, `${where}: unsupported dtype ${q(dtype)}`);
  if (!Array.isArray(shape) || !shape.every(isNonNegInt)) {
    fail(file, `${where}: "shape" must be an array of non-negative integers`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !isNonNegInt(offsets[0]) || !isNonNegInt(offsets[1])) {
    fail(file, `${where}: "data_offsets" must be two non-negative integers`);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end) fail(file, `${where}: data_offsets begin ${begin} > end ${end}`);
  if (end > dataLength) {
    fail(file, `${where}: data_offsets [${begin}, ${end}] exceed the data section (${dataLength} bytes)`);
  }
  const expected = shapeSize(shape) * item;
  if (expected !== end - begin) {
    fail(file, `${where}: shape [${shape}] × ${dtype} needs ${expected} bytes but data_offsets span ${end - begin}`);
  }
  return { name, dtype, shape: shape.slice(), begin, end };
}

function decode(file: string, e: Entry, data: Uint8Array): HostTensor {
  const n = shapeSize(e.shape);
  const raw = data.slice(e.begin, e.end); // aligned private copy
  const view = new DataView(raw.buffer);
  const base = { shape: e.shape, sourceDtype: e.dtype };
  if (FLOAT_DTYPES.has(e.dtype)) {
    let out: Float32Array;
    if (e.dtype === "F32") {
      out = new Float32Array(raw.buffer);
    } else if (e.dtype === "F64") {
      out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = view.getFloat64(i * 8, true);
    } else if (e.dtype === "BF16") {
      const bits = new Uint32Array(n);
      for (let i = 0; i < n; i++) bits[i] = view.getUint16(i * 2, true) << 16;
      out = new Float32Array(bits.buffer);
    } else {
      out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = float16BitsToFloat32(view.getUint16(i * 2, true));
    }
    return { dtype: "f32", data: out, ...base };
  }
  const out = new Int32Array(n);
  const outOfRange = (i: number, v: bigint | number): never => {
    fail(file, `tensor ${q(e.name)} (${e.dtype}): value ${v} at index ${i} is outside the int32 range`);
  };
  switch (e.dtype) {
    case "I32":
      return { dtype: "i32", data: new Int32Array(raw.buffer), ...base };
    case "I64":
      for (let i = 0; i < n; i++) {
        const lo = view.getInt32(i * 8, true);
        if (view.getInt32(i * 8 + 4, true) !== lo >> 31) outOfRange(i, view.getBigInt64(i * 8, true));
        out[i] = lo;
      }
      break;
    case "U64":
      for (let i = 0; i < n; i++) {
        const lo = view.getInt32(i * 8, true);
        if (view.getInt32(i * 8 + 4, true) !== 0 || lo < 0) outOfRange(i, view.getBigUint64(i * 8, true));
        out[i] = lo;
      }
      break;
    case "U32":
      for (let i = 0; i < n; i++) {
        const v = view.getInt32(i * 4, true);
        if (v < 0) outOfRange(i, view.getUint32(i * 4, true));
        out[i] = v;
      }
      break;
    case "I16":
      for (let i = 0; i < n; i++) out[i] = view.getInt16(i * 2, true);
      break;
    case "U16":
      for (let i = 0; i < n; i++) out[i] = view.getUint16(i * 2, true);
      break;
    case "I8":
      for (let i = 0; i < n; i++) out[i] = view.getInt8(i);
      break;
    case "U8":
      out.set(raw);
      break;
    case "BOOL":
      for (let i = 0; i < n; i++) out[i] = raw[i] ? 1 : 0;
      break;
  }
  return { dtype: "i32", data: out, ...base };
}

/**
 * The reference implementation's layout rule: sorted by offsets, the tensors tile the data section exactly — the
 * first starts at byte 0, each starts where the previous one ends (zero-size tensors sit on such a boundary), and
 * the last one ends at the end of the file. A gap, an overlap or extra bytes (say, bytes inserted after the
 * header, which would shift every tensor) mean the offsets do not describe the data, so the file is refused.
 */
function checkLayout(file: string, entries: readonly Entry[], dataLength: number): void {
  const byOffset = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  const span = (t: Entry) => `${q(t.name)} [${t.begin}, ${t.end}]`;
  let end = 0;
  for (let i = 0; i < byOffset.length; i++) {
    const t = byOffset[i], prev = byOffset[i - 1];
    if (t.begin < end && t.begin === t.end) {
      fail(file, `zero-size tensor ${span(t)} lies inside ${span(prev)}; it must sit on a tensor boundary`);
    }
    if (t.begin < end) fail(file, `tensors ${span(prev)} and ${span(t)} overlap`);
    if (t.begin > end) {
      const where = prev ? `between ${span(prev)} and ${span(t)}` : `before ${span(t)}, the first tensor`;
      fail(file, `${t.begin - end} bytes of the data section belong to no tensor (${where}); data must be contiguous`);
    }
    end = t.end;
  }
  if (end === dataLength) return;
  const why = `${dataLength - end} unexplained bytes (inserted or appended data, or a wrong header length)`;
  fail(file, `the data section is ${dataLength} bytes but the tensors end at byte ${end}: ${why}`);
}

/**
 * Parses a complete safetensors file held in memory. Never throws anything but {@linkcode SafetensorsError}
 * for malformed input. As in the reference implementation, the tensors' `data_offsets` must tile the data section
 * exactly (no gap, no overlap, nothing after the last tensor).
 *
 * @param bytes The whole file.
 * @param fileName Name used in error messages.
 * @returns The tensors (converted to f32/i32, with `sourceDtype` set to the file dtype) and the metadata.
 */
export function parseSafetensors(bytes: Uint8Array, fileName = "<memory>"): SafetensorsContents {
  const file = fileName;
  if (bytes.length < 8) fail(file, `file is ${bytes.length} bytes, shorter than the 8-byte header length`);
  const lenView = new DataView(bytes.buffer, bytes.byteOffset, 8);
  const headerLen = lenView.getUint32(0, true) + lenView.getUint32(4, true) * 0x1_0000_0000;
  if (headerLen > MAX_HEADER_BYTES) fail(file, `header length ${headerLen} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  if (8 + headerLen > bytes.length) {
    fail(file, `header length ${headerLen} runs past the end of the file (${bytes.length} bytes)`);
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes.subarray(8, 8 + headerLen));
  } catch (err) {
    throw new SafetensorsError(file, "header is not valid UTF-8", { cause: err });
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (err) {
    const why = printable(String((err as Error)?.message ?? err));
    throw new SafetensorsError(file, `header is not valid JSON (${why})`, { cause: err });
  }
  if (!isPlainObject(header)) fail(file, `header must be a JSON object, got ${describe(header)}`);

  const data = bytes.subarray(8 + headerLen);
  let metadata: Record<string, string> = {};
  const entries: Entry[] = [];
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") metadata = checkStringMap(file, "__metadata__", info);
    else entries.push(checkEntry(file, name, info, data.length));
  }

  checkLayout(file, entries, data.length);

  const tensors = new Map<string, HostTensor>();
  for (const e of entries) tensors.set(e.name, decode(file, e, data));
  return { tensors, metadata };
}

function displayPath(path: string | URL): string {
  return path instanceof URL ? (path.protocol === "file:" ? fileURLToPath(path) : path.href) : path;
}

async function readBytes(path: string | URL, file: string): Promise<Uint8Array> {
  try {
    return await Deno.readFile(path);
  } catch (err) {
    const reason = err instanceof Deno.errors.NotFound
      ? "file not found"
      : `cannot read file (${(err as Error)?.message ?? err})`;
    throw new SafetensorsError(file, reason, { cause: err });
  }
}

/**
 * Reads and parses a safetensors file.
 * @param path File path or `file:` URL.
 * @returns The tensors and metadata; errors (including a missing file) are {@linkcode SafetensorsError}s.
 */
export async function readSafetensors(path: string | URL): Promise<SafetensorsContents> {
  const file = displayPath(path);
  return parseSafetensors(await readBytes(path, file), file);
}

function resolveSibling(base: string | URL, name: string): string | URL {
  return base instanceof URL ? new URL(name, base) : join(dirname(base), name);
}

/**
 * Reads a sharded checkpoint from its index (`model.safetensors.index.json`:
 * `{"metadata": {...}, "weight_map": {tensorName: shardFile}}`), loading each shard once.
 *
 * Only the tensors listed in `weight_map` are returned. `metadata` merges the shards' `__metadata__`
 * with the index's `metadata` (non-string index values are JSON-encoded, e.g. `total_size`).
 *
 * @param indexPath Path or `file:` URL of the index; shard names are resolved relative to its directory.
 * @returns The union of the shards' listed tensors, and the merged metadata.
 */
export async function readShardedSafetensors(indexPath: string | URL): Promise<SafetensorsContents> {
  const file = displayPath(indexPath);
  const bytes = await readBytes(indexPath, file);
  let index: unknown;
  try {
    index = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (err) {
    const why = printable(String((err as Error)?.message ?? err));
    throw new SafetensorsError(file, `index is not valid JSON (${why})`, { cause: err });
  }
  if (!isPlainObject(index)) fail(file, `index must be a JSON object, got ${describe(index)}`);
  const weightMap = checkStringMap(file, "weight_map", index.weight_map);
  const metadata: Record<string, string> = {};
  if (index.metadata !== undefined && index.metadata !== null) {
    if (!isPlainObject(index.metadata)) fail(file, `"metadata" must be an object`);
    for (const [k, v] of Object.entries(index.metadata)) metadata[k] = typeof v === "string" ? v : JSON.stringify(v);
  }
  const byShard = new Map<string, string[]>();
  for (const [name, shard] of Object.entries(weightMap)) {
    if (shard === "" || isAbsolute(shard) || shard.split(/[\\/]/).includes("..")) {
      fail(file, `weight_map[${q(name)}]: invalid shard file name ${q(shard)}`);
    }
    const list = byShard.get(shard) ?? [];
    list.push(name);
    byShard.set(shard, list);
  }

  const tensors = new Map<string, HostTensor>();
  const shardMetadata: Record<string, string> = {};
  for (const [shard, names] of byShard) {
    let contents: SafetensorsContents;
    try {
      contents = await readSafetensors(resolveSibling(indexPath, shard));
    } catch (err) {
      const why = err instanceof SafetensorsError ? err.reason : String(err);
      throw new SafetensorsError(file, `shard ${q(shard)} (${names.length} tensors): ${why}`, {
        cause: err,
      });
    }
    for (const name of names) {
      const t = contents.tensors.get(name);
      if (!t) fail(file, `tensor ${q(name)} is not in its shard ${q(shard)}`);
      tensors.set(name, t);
    }
    Object.assign(shardMetadata, contents.metadata);
  }
  return { tensors, metadata: { ...shardMetadata, ...metadata } };
}

async function exists(path: string | URL): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

/**
 * Loads the checkpoint in a model directory: `model.safetensors` if present, otherwise the sharded
 * `model.safetensors.index.json`.
 * @param dir Directory path or `file:` URL.
 * @returns The tensors and metadata.
 */
export async function loadSafetensorsDir(dir: string | URL): Promise<SafetensorsContents> {
  const inDir = (name: string): string | URL =>
    dir instanceof URL ? new URL(name, dir.href.endsWith("/") ? dir : dir.href + "/") : join(dir, name);
  const single = inDir("model.safetensors");
  if (await exists(single)) return await readSafetensors(single);
  const index = inDir("model.safetensors.index.json");
  if (await exists(index)) return await readShardedSafetensors(index);
  throw new SafetensorsError(
    displayPath(dir),
    "no checkpoint found (looked for model.safetensors and model.safetensors.index.json)",
  );
}

/**
 * Serializes tensors to safetensors bytes. Header keys are sorted by name and the header is space-padded
 * to a multiple of 8 bytes. Tensor data is contiguous (no gaps, as the reference implementation requires)
 * and naturally aligned: tensors are laid out by element size (largest first), then in header order.
 *
 * @param tensors Tensors by name. F16/BF16 are converted from Float32Array with round-to-nearest-even.
 * @param metadata Optional `__metadata__` string map.
 * @param fileName Name used in error messages.
 * @returns The complete file contents.
 */
export function serializeSafetensors(
  tensors: Record<string, SafetensorsWriteTensor> | Map<string, SafetensorsWriteTensor>,
  metadata?: Record<string, string>,
  fileName = "<memory>",
): Uint8Array {
  const file = fileName;
  const list = [...(tensors instanceof Map ? tensors.entries() : Object.entries(tensors))];
  list.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const itemOf = (dtype: string) => (dtype === "F32" || dtype === "I32" ? 4 : 2);
  for (const [name, t] of list) {
    const where = `tensor ${JSON.stringify(name)}`;
    if (name === "__metadata__") fail(file, `"__metadata__" is reserved and cannot name a tensor`);
    if (!["F32", "F16", "BF16", "I32"].includes(t?.dtype)) {
      fail(file, `${where}: cannot write dtype ${JSON.stringify(t?.dtype)}`);
    }
    const wantInt = t.dtype === "I32";
    if (!(wantInt ? t.data instanceof Int32Array : t.data instanceof Float32Array)) {
      fail(file, `${where}: ${t.dtype} needs ${wantInt ? "an Int32Array" : "a Float32Array"}`);
    }
    if (!Array.isArray(t.shape) || !t.shape.every(isNonNegInt)) {
      fail(file, `${where}: shape must be an array of non-negative integers`);
    }
    if (shapeSize(t.shape) !== t.data.length) {
      fail(file, `${where}: data has ${t.data.length} elements but shape [${t.shape}] needs ${shapeSize(t.shape)}`);
    }
  }
  const meta = metadata === undefined ? undefined : checkStringMap(file, "__metadata__", metadata);

  // Data order: element size descending (stable, so names stay sorted within a size class).
  const layout = list.map(([name, t]) => ({ name, t, item: itemOf(t.dtype), begin: 0, end: 0 }));
  const dataOrder = [...layout].sort((a, b) => b.item - a.item);
  let offset = 0;
  for (const l of dataOrder) {
    l.begin = offset;
    offset += l.t.data.length * l.item;
    l.end = offset;
  }
  const header: Record<string, unknown> = {};
  if (meta) header.__metadata__ = meta;
  for (const l of layout) {
    header[l.name] = { dtype: l.t.dtype, shape: l.t.shape, data_offsets: [l.begin, l.end] };
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  if (padded > MAX_HEADER_BYTES) fail(file, `header would be ${padded} bytes, over the limit`);
  if (padded !== json.length) {
    const p = new Uint8Array(padded).fill(0x20);
    p.set(json);
    json = p;
  }

  const out = new Uint8Array(8 + padded + offset);
  const view = new DataView(out.buffer);
  view.setUint32(0, padded, true);
  out.set(json, 8);
  const dataStart = 8 + padded;
  for (const { t, begin } of layout) {
    const at = dataStart + begin;
    const n = t.data.length;
    if (t.dtype === "F16" || t.dtype === "BF16") {
      const conv = t.dtype === "F16" ? float32ToFloat16Bits : float32ToBfloat16Bits;
      for (let i = 0; i < n; i++) view.setUint16(at + i * 2, conv(t.data[i]), true);
    } else {
      out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, n * 4), at);
    }
  }
  return out;
}

/**
 * Serializes tensors (see {@linkcode serializeSafetensors}) and writes them atomically to `path`.
 * @param path Destination file path or `file:` URL.
 * @param tensors Tensors by name.
 * @param metadata Optional `__metadata__` string map.
 */
export async function writeSafetensors(
  path: string | URL,
  tensors: Record<string, SafetensorsWriteTensor> | Map<string, SafetensorsWriteTensor>,
  metadata?: Record<string, string>,
): Promise<void> {
  const file = displayPath(path);
  const bytes = serializeSafetensors(tensors, metadata, file);
  try {
    await writeFileAtomic(path, bytes);
  } catch (err) {
    throw new SafetensorsError(file, `cannot write file (${(err as Error)?.message ?? err})`, { cause: err });
  }
}
