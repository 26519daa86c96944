/**
 * Reader and writer for the safetensors checkpoint format (host side, no GPU); the writer is in
 * `safetensors_write.ts`, re-exported here.
 *
 * Layout: an 8-byte little-endian u64 header length N, N bytes of UTF-8 JSON mapping each tensor name
 * to `{dtype, shape, data_offsets: [begin, end]}` (offsets relative to the first byte after the header)
 * plus an optional `"__metadata__"` string map, then the raw little-endian tensor bytes.
 *
 * Floating dtypes (F64, F32, F16, BF16) load as `f32`; integer and boolean dtypes load as `i32`.
 * @module
 */

import { isAbsolutePath, joinPath, parentPath } from "./files.ts";
import { type DType, type HostTensor, shapeSize } from "./host_tensor.ts";
import { float16BitsToFloat32, float32ToBfloat16Bits, float32ToFloat16Bits } from "./float16.ts";
import {
  checkStringMap,
  describe,
  displayPath,
  fail,
  isNonNegInt,
  isPlainObject,
  MAX_HEADER_BYTES,
  printable,
  q,
  readBytes,
  SafetensorsError,
} from "./safetensors_checks.ts";

export type { DType, HostTensor };
export {
  float16BitsToFloat32,
  float32ToBfloat16Bits,
  float32ToFloat16Bits,
  MAX_HEADER_BYTES,
  printable,
  SafetensorsError,
};
export {
  type SafetensorsWriteDtype,
  type SafetensorsWriteTensor,
  serializeSafetensors,
  writeHostTensors,
  type WriteHostTensorsOptions,
  writeSafetensors,
} from "./safetensors_write.ts";

/** Parsed contents of a safetensors file (or of a sharded checkpoint). */
export interface SafetensorsContents {
  /** Tensors by name, in header order. */
  tensors: Map<string, HostTensor>;
  /** The `__metadata__` string map (empty when absent). */
  metadata: Record<string, string>;
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

/** Tensor `e` out of the data section: floating dtypes as f32, integer and boolean ones as i32. */
function decode(file: string, e: Entry, data: Uint8Array): HostTensor {
  const raw = data.slice(e.begin, e.end); // aligned private copy
  const base = { shape: e.shape, sourceDtype: e.dtype };
  if (FLOAT_DTYPES.has(e.dtype)) return { dtype: "f32", data: decodeFloats(e.dtype, raw, shapeSize(e.shape)), ...base };
  return { dtype: "i32", data: decodeInts(file, e, raw), ...base };
}

/** `n` F32, F64, BF16 or F16 elements of `raw` as float32 (F32 is a view of `raw`). */
function decodeFloats(dtype: string, raw: Uint8Array, n: number): Float32Array {
  if (dtype === "F32") return new Float32Array(raw.buffer);
  const view = new DataView(raw.buffer);
  if (dtype === "BF16") {
    const bits = new Uint32Array(n);
    for (let i = 0; i < n; i++) bits[i] = view.getUint16(i * 2, true) << 16;
    return new Float32Array(bits.buffer);
  }
  const out = new Float32Array(n);
  if (dtype === "F64") { for (let i = 0; i < n; i++) out[i] = view.getFloat64(i * 8, true); }
  else for (let i = 0; i < n; i++) out[i] = float16BitsToFloat32(view.getUint16(i * 2, true));
  return out;
}

/** The integer or boolean elements of tensor `e` (bytes `raw`) as int32 (I32 is a view of `raw`). */
function decodeInts(file: string, e: Entry, raw: Uint8Array): Int32Array {
  const n = shapeSize(e.shape);
  if (e.dtype === "I32") return new Int32Array(raw.buffer);
  if (e.dtype === "I64" || e.dtype === "U64" || e.dtype === "U32") return decodeWideInts(file, e, raw, n);
  const view = new DataView(raw.buffer);
  const out = new Int32Array(n);
  switch (e.dtype) {
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
  return out;
}

/** `n` I64, U64 or U32 elements as int32; a value outside the int32 range is an error naming its index. */
function decodeWideInts(file: string, e: Entry, raw: Uint8Array, n: number): Int32Array {
  const view = new DataView(raw.buffer);
  const out = new Int32Array(n);
  const outOfRange = (i: number, v: bigint | number): never => {
    fail(file, `tensor ${q(e.name)} (${e.dtype}): value ${v} at index ${i} is outside the int32 range`);
  };
  if (e.dtype === "U32") {
    for (let i = 0; i < n; i++) {
      const v = view.getInt32(i * 4, true);
      if (v < 0) outOfRange(i, view.getUint32(i * 4, true));
      out[i] = v;
    }
    return out;
  }
  const signed = e.dtype === "I64";
  for (let i = 0; i < n; i++) {
    const lo = view.getInt32(i * 8, true), hi = view.getInt32(i * 8 + 4, true);
    if (signed && hi !== lo >> 31) outOfRange(i, view.getBigInt64(i * 8, true));
    if (!signed && (hi !== 0 || lo < 0)) outOfRange(i, view.getBigUint64(i * 8, true));
    out[i] = lo;
  }
  return out;
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

/** The header length and the JSON header of `bytes`, checked to be a JSON object within the file and the limit. */
function readHeader(bytes: Uint8Array, file: string): { headerLen: number; header: Record<string, unknown> } {
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
  const header = parseJson(text, file, "header");
  if (!isPlainObject(header)) fail(file, `header must be a JSON object, got ${describe(header)}`);
  return { headerLen, header };
}

/**
 * `source` parsed as JSON (bytes are decoded as strict UTF-8 first); invalid UTF-8 or JSON is a
 * {@linkcode SafetensorsError} saying `what` is not valid JSON.
 */
function parseJson(source: string | Uint8Array, file: string, what: string): unknown {
  try {
    return JSON.parse(typeof source === "string" ? source : new TextDecoder("utf-8", { fatal: true }).decode(source));
  } catch (err) {
    const why = printable(String((err as Error)?.message ?? err));
    throw new SafetensorsError(file, `${what} is not valid JSON (${why})`, { cause: err });
  }
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
  const { headerLen, header } = readHeader(bytes, file);
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
  return base instanceof URL ? new URL(name, base) : joinPath(parentPath(base), name);
}

/** A sharded checkpoint's index: which shard holds each tensor, and the index's own metadata (as strings). */
interface ShardIndex {
  weightMap: Record<string, string>;
  metadata: Record<string, string>;
}

/** Reads and checks the index at `indexPath` (shown as `file`). */
async function readShardIndex(indexPath: string | URL, file: string): Promise<ShardIndex> {
  const index = parseJson(await readBytes(indexPath, file), file, "index");
  if (!isPlainObject(index)) fail(file, `index must be a JSON object, got ${describe(index)}`);
  const weightMap = checkStringMap(file, "weight_map", index.weight_map);
  const metadata: Record<string, string> = {};
  if (index.metadata !== undefined && index.metadata !== null) {
    if (!isPlainObject(index.metadata)) fail(file, `"metadata" must be an object`);
    for (const [k, v] of Object.entries(index.metadata)) metadata[k] = typeof v === "string" ? v : JSON.stringify(v);
  }
  return { weightMap, metadata };
}

/** The tensor names of each shard file, in index order; shard names must stay inside the index's folder. */
function namesByShard(file: string, weightMap: Record<string, string>): Map<string, string[]> {
  const byShard = new Map<string, string[]>();
  for (const [name, shard] of Object.entries(weightMap)) {
    if (shard === "" || isAbsolutePath(shard) || shard.split(/[\\/]/).includes("..")) {
      fail(file, `weight_map[${q(name)}]: invalid shard file name ${q(shard)}`);
    }
    const list = byShard.get(shard) ?? [];
    list.push(name);
    byShard.set(shard, list);
  }
  return byShard;
}

/** Reads shard `shard` next to the index; its errors are reported against the index, naming the shard. */
async function readShard(indexPath: string | URL, file: string, shard: string, count: number) {
  try {
    return await readSafetensors(resolveSibling(indexPath, shard));
  } catch (err) {
    const why = err instanceof SafetensorsError ? err.reason : String(err);
    throw new SafetensorsError(file, `shard ${q(shard)} (${count} tensors): ${why}`, { cause: err });
  }
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
  const { weightMap, metadata } = await readShardIndex(indexPath, file);
  const tensors = new Map<string, HostTensor>();
  const shardMetadata: Record<string, string> = {};
  for (const [shard, names] of namesByShard(file, weightMap)) {
    const contents = await readShard(indexPath, file, shard, names.length);
    for (const name of names) {
      const t = contents.tensors.get(name);
      if (!t) fail(file, `tensor ${q(name)} is not in its shard ${q(shard)}`);
      tensors.set(name, t);
    }
    Object.assign(shardMetadata, contents.metadata);
  }
  return { tensors, metadata: { ...shardMetadata, ...metadata } };
}
