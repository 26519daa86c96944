/**
 * Writer of the safetensors format (see `safetensors.ts` for the layout): sorted header, padded to 8 bytes, and
 * contiguous, naturally aligned tensor data, written atomically.
 * @module
 */

import { type HostTensor, shapeSize } from "./host_tensor.ts";
import { writeFileAtomic } from "./fs_atomic.ts";
import { float32ToBfloat16Bits, float32ToFloat16Bits } from "./float16.ts";
import {
  checkStringMap,
  displayPath,
  fail,
  isNonNegInt,
  MAX_HEADER_BYTES,
  SafetensorsError,
} from "./safetensors_checks.ts";

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

/** Checks what {@linkcode serializeSafetensors} is given: writable dtypes, matching arrays, shapes and lengths. */
function checkWriteTensors(file: string, list: [string, SafetensorsWriteTensor][]): void {
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
}

/** Where a tensor's bytes go in the data section. */
interface Placed {
  name: string;
  t: SafetensorsWriteTensor;
  item: number;
  begin: number;
  end: number;
}

/** Places the tensors (sorted by name) in the data section: element size descending, then name; and its length. */
function placeTensors(list: [string, SafetensorsWriteTensor][]): { layout: Placed[]; dataBytes: number } {
  const itemOf = (dtype: string) => (dtype === "F32" || dtype === "I32" ? 4 : 2);
  const layout = list.map(([name, t]) => ({ name, t, item: itemOf(t.dtype), begin: 0, end: 0 }));
  const dataOrder = [...layout].sort((a, b) => b.item - a.item); // stable: names stay sorted within a size class
  let offset = 0;
  for (const l of dataOrder) {
    l.begin = offset;
    offset += l.t.data.length * l.item;
    l.end = offset;
  }
  return { layout, dataBytes: offset };
}

/** The JSON header for `layout` (metadata first), space-padded to a multiple of 8 bytes. */
function encodeHeader(file: string, layout: Placed[], meta?: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = {};
  if (meta) header.__metadata__ = meta;
  for (const l of layout) {
    header[l.name] = { dtype: l.t.dtype, shape: l.t.shape, data_offsets: [l.begin, l.end] };
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  if (padded > MAX_HEADER_BYTES) fail(file, `header would be ${padded} bytes, over the limit`);
  if (padded === json.length) return json;
  const p = new Uint8Array(padded).fill(0x20);
  p.set(json);
  return p;
}

/** Writes each tensor's elements at `dataStart` + its offset in `out`, converting F16 and BF16. */
function writeTensorData(out: Uint8Array, dataStart: number, layout: Placed[]): void {
  const view = new DataView(out.buffer);
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
  checkWriteTensors(file, list);
  const meta = metadata === undefined ? undefined : checkStringMap(file, "__metadata__", metadata);
  const { layout, dataBytes } = placeTensors(list);
  const json = encodeHeader(file, layout, meta);
  const out = new Uint8Array(8 + json.length + dataBytes);
  new DataView(out.buffer).setUint32(0, json.length, true);
  out.set(json, 8);
  writeTensorData(out, 8 + json.length, layout);
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

/** Options of {@linkcode writeHostTensors}. */
export interface WriteHostTensorsOptions {
  /** The `__metadata__` string map. */
  metadata?: Record<string, string>;
  /** Dtype f32 tensors are stored as (default F32); i32 tensors are always stored as I32. */
  floatDtype?: "F32" | "F16" | "BF16";
}

/**
 * Writes host tensors as a safetensors file, atomically (see {@linkcode writeSafetensors}): f32 tensors as
 * `options.floatDtype`, i32 tensors as I32.
 * @param path Destination file path or `file:` URL.
 * @param tensors Tensors by name.
 * @param options Metadata and the stored float dtype.
 */
export async function writeHostTensors(
  path: string | URL,
  tensors: Map<string, HostTensor>,
  options: WriteHostTensorsOptions = {},
): Promise<void> {
  const out = new Map<string, SafetensorsWriteTensor>();
  for (const [name, t] of tensors) {
    out.set(name, { dtype: t.dtype === "i32" ? "I32" : options.floatDtype ?? "F32", shape: t.shape, data: t.data });
  }
  await writeSafetensors(path, out, options.metadata);
}
