/**
 * Tensors over torch storages, independent of the file container: checks each tensor's size, stride and offset
 * against its storage (and against the expected shape) before anything is read, caps what loading allocates,
 * reads each storage once and builds tensors as views into it where possible, or as one new array each.
 * Used by `torch_checkpoint.ts`; the pickle hooks there build the {@link TensorRef}s.
 * @module
 */

import type { HostTensor } from "./host_tensor.ts";
import { describe, printable, type PyGlobal, PyList, PyTuple } from "./pickle.ts";
import { ZipError } from "./zip.ts";

/** Element kinds of torch storages. */
export type Kind = "f32" | "f64" | "f16" | "bf16" | "i64" | "i32" | "i16" | "i8" | "u8" | "bool";

/** Bytes per element of each kind. */
export const KIND_SIZE: Record<Kind, number> = {
  f32: 4,
  f64: 8,
  f16: 2,
  bf16: 2,
  i64: 8,
  i32: 4,
  i16: 2,
  i8: 1,
  u8: 1,
  bool: 1,
};
/** Largest element count accepted for a view that has more elements than its storage (stride 0, expanded). */
const MAX_EXPANDED = 1 << 16;
/** Largest element count of one tensor (the longest typed array the engine uploads). */
const MAX_NUMEL = 2 ** 32 - 1;
/** Default {@link TorchCheckpointOptions.maxBytes}: this, plus the larger of the two bounds below. */
export const SLACK_BYTES = 64 * 2 ** 20;
/** Bytes allowed per byte of file (a DEFLATE entry of real weights rarely shrinks even 2:1). */
export const FILE_FACTOR = 32;
/** Bytes allowed per expected element: a storage element of up to 8 bytes and its 4-byte output. */
const EXPECTED_FACTOR = 12;
const HOST_LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Options of `parseTorchCheckpoint` and `readTorchCheckpoint` (in `torch_checkpoint.ts`). */
export interface TorchCheckpointOptions {
  /**
   * What the model expects of the tensor stored under `name` (the checkpoint's own name): its shape (tensors
   * whose declared size differs are all reported before any tensor data is read or allocated), `null` when the
   * model does not use it (it is left out of the result and its data never read), or `undefined` when the name is
   * unknown to the model (it is read under the general limits).
   */
  expectedShape?: (name: string) => readonly number[] | null | undefined;
  /**
   * Most bytes the load may allocate besides the file itself: inflated DEFLATE storages plus converted or copied
   * tensor data (views cost nothing). Default: 64 MiB plus the larger of 32 × the file's size and 12 bytes per
   * element of the expected shapes.
   */
  maxBytes?: number;
}

/** Reason for rejecting a checkpoint; `torch_checkpoint.ts` wraps it into an error that names the file. */
export class FormatError extends Error {}

/** A storage reference from a persistent id (legacy ids may name a view: element offset and size). */
export class StorageRef {
  /** Creates the reference to storage `key` of `kind`, whose torch type is `type`. */
  constructor(
    readonly type: PyGlobal,
    readonly kind: Kind,
    readonly key: string,
    readonly view?: { key: string; offset: number; size: number },
  ) {}
}

/** A tensor as described by `_rebuild_tensor_v2`; materialised after unpickling. */
export class TensorRef {
  /** Creates the tensor from the (unchecked) arguments of `_rebuild_tensor_v2`. */
  constructor(
    readonly storage: StorageRef,
    readonly offset: unknown,
    readonly size: unknown,
    readonly stride: unknown,
  ) {}
}

/** `v` as a non-negative safe integer (booleans count as 0 and 1); `what` names it in the error. */
export function int(v: unknown, what: string): number {
  if (typeof v === "boolean") return v ? 1 : 0;
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
    throw new FormatError(`${what} is ${typeof v === "number" ? v : describe(v)}, expected a non-negative integer`);
  }
  return v;
}

/** `v` as a tuple or list of at most 64 non-negative safe integers. */
export function ints(v: unknown, what: string): number[] {
  if (!(v instanceof PyTuple || v instanceof PyList)) {
    throw new FormatError(`${what} is ${describe(v)}, expected a tuple`);
  }
  if (v.items.length > 64) throw new FormatError(`${what} has ${v.items.length} dimensions`);
  return v.items.map((x, i) => int(x, `${what}[${i}]`));
}

let f16Table: Float32Array | undefined;
function halfToFloat(): Float32Array {
  if (f16Table) return f16Table;
  f16Table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    f16Table[h] = sign *
      (exp === 0 ? frac * 2 ** -24 : exp === 31 ? (frac ? NaN : Infinity) : (1 + frac / 1024) * 2 ** (exp - 15));
  }
  return f16Table;
}

/** Where a checkpoint's storages come from; everything but `read` only looks at metadata. */
export interface StorageSource {
  /** Byte length of storage `key`; throws when the file has no such storage or it cannot be read. */
  bytes(key: string): number;
  /** Bytes that reading storage `key` allocates (0 for a view into the file) and how it is stored. */
  cost(key: string): { bytes: number; what: string };
  /** Byte offset of storage `key` in its buffer (decides whether 4-byte elements can be viewed in place). */
  align(key: string): number;
  /** The bytes of storage `key`; called at most once per storage. */
  read(key: string): Promise<Uint8Array> | Uint8Array;
}

/** A tensor checked against its storage, ready to be materialised. */
interface Plan {
  name: string;
  ref: TensorRef;
  size: number[];
  stride: number[];
  /** First storage element (view offset included). */
  base: number;
  numel: number;
  contiguous: boolean;
  /** Whether the result is a zero-copy view into the storage. */
  view: boolean;
}

/** The declared size of tensor `name`, checked. */
function sizeOf(name: string, t: TensorRef): number[] {
  return ints(t.size, `size of tensor ${printable(name)}`);
}

/**
 * The storage elements tensor `shown` may use: where its (legacy) view starts in the storage (0 without one), the
 * element its data may not reach, and how many elements the storage or view holds.
 */
function storageExtent(t: TensorRef, src: StorageSource, shown: string) {
  const { kind, key, view } = t.storage;
  let available: number;
  try {
    available = Math.floor(src.bytes(key) / KIND_SIZE[kind]);
  } catch (e) {
    if (e instanceof FormatError || e instanceof ZipError) throw new FormatError(`tensor ${shown}: ${e.message}`);
    throw e;
  }
  if (!view) return { start: 0, limit: available, available };
  if (view.offset + view.size > available) {
    throw new FormatError(`tensor ${shown}: view ${printable(view.key)} exceeds storage ${printable(key)}`);
  }
  return { start: view.offset, limit: view.offset + view.size, available: view.size };
}

/** Whether `stride` lays out `size` row-major without gaps (dimensions of size 1 may have any stride). */
function isContiguous(size: number[], stride: number[]): boolean {
  for (let d = size.length - 1, expected = 1; d >= 0; expected *= size[d--]) {
    if (size[d] !== 1 && stride[d] !== expected) return false;
  }
  return true;
}

/** Checks tensor `name` against its storage without reading it: sizes, strides, offset, bounds and expansion. */
function plan(name: string, t: TensorRef, src: StorageSource, bigEndian: boolean): Plan {
  const { kind, key } = t.storage;
  const shown = printable(name);
  const size = sizeOf(name, t);
  const stride = ints(t.stride, `stride of tensor ${shown}`);
  if (stride.length !== size.length) throw new FormatError(`tensor ${shown}: size and stride lengths differ`);
  const offset = int(t.offset, `storage offset of tensor ${shown}`);
  const numel = size.reduce((a, b) => a * b, 1);
  if (!Number.isSafeInteger(numel) || numel > MAX_NUMEL) {
    throw new FormatError(`tensor ${shown}: size [${size}] has more than ${MAX_NUMEL} elements`);
  }
  const { start, limit, available } = storageExtent(t, src, shown);
  const base = offset + start, contiguous = isContiguous(size, stride);
  const p: Plan = { name, ref: t, size, stride, base, numel, contiguous, view: false };
  if (numel === 0) return p;
  let span = 1;
  for (let d = 0; d < size.length; d++) span += (size[d] - 1) * stride[d];
  if (!Number.isSafeInteger(span) || base + span > limit) {
    throw new FormatError(
      `storage ${printable(key)} too small for tensor ${shown}: needs ${span} elements from offset ${base}, ` +
        `has ${limit}`,
    );
  }
  if (numel > available && numel > MAX_EXPANDED) {
    throw new FormatError(
      `tensor ${shown}: expanded view is too large: size [${size}] with stride [${stride}] has ${numel} elements ` +
        `over a storage of ${available}`,
    );
  }
  p.view = (kind === "f32" || kind === "i32") && contiguous && !bigEndian && HOST_LE &&
    (src.align(key) + base * 4) % 4 === 0;
  return p;
}

/** Calls `row(dst, src, n, step)` for each innermost run of the view, in row-major order. */
function forEachRow(p: Plan, row: (dst: number, src: number, n: number, step: number) => void): void {
  const { size, stride, numel } = p;
  if (p.contiguous) return row(0, p.base, numel, 1);
  const nd = size.length;
  const pos = new Array<number>(nd).fill(0);
  let src = p.base;
  for (let dst = 0; dst < numel; dst += size[nd - 1]) {
    row(dst, src, size[nd - 1], stride[nd - 1]);
    for (let d = nd - 2; d >= 0; d--) {
      if (++pos[d] < size[d]) {
        src += stride[d];
        break;
      }
      src -= (size[d] - 1) * stride[d];
      pos[d] = 0;
    }
  }
}

/** Whether storage elements of `kind` are floating point (they load as f32; the others as i32). */
function isFloatKind(kind: Kind): boolean {
  return kind === "f32" || kind === "f64" || kind === "f16" || kind === "bf16";
}

/** Builds one tensor out of its storage bytes: a view when possible, otherwise one new array. */
function materialize(p: Plan, bytes: Uint8Array, bigEndian: boolean): HostTensor {
  const { kind, type } = p.ref.storage;
  const float = isFloatKind(kind);
  const result = (data: Float32Array | Int32Array): HostTensor => ({
    dtype: float ? "f32" : "i32",
    shape: p.size,
    data,
    sourceDtype: type.qualifiedName,
  });
  if (p.numel === 0) return result(float ? new Float32Array(0) : new Int32Array(0));
  if (p.view) return result(viewIntoStorage(p, bytes));
  return result(copyElements(p, bytes, bigEndian));
}

/** The tensor as a zero-copy view of its (float32 or int32, aligned, little-endian) storage bytes. */
function viewIntoStorage(p: Plan, bytes: Uint8Array): Float32Array | Int32Array {
  const at = bytes.byteOffset + p.base * 4;
  return p.ref.storage.kind === "f32"
    ? new Float32Array(bytes.buffer, at, p.numel)
    : new Int32Array(bytes.buffer, at, p.numel);
}

/** The tensor's elements copied (and converted) out of its storage, following its strides, into one new array. */
function copyElements(p: Plan, bytes: Uint8Array, bigEndian: boolean): Float32Array | Int32Array {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const { out, get } = elementReader(p, dv, !bigEndian);
  forEachRow(p, (dst, src, n, step) => {
    for (let k = 0; k < n; k++) out[dst + k] = get(src + k * step);
  });
  return out instanceof Uint32Array ? new Float32Array(out.buffer) : out;
}

/** Output array and element getter of a copy. */
interface ElementReader {
  /** Float32 and bfloat16 go through a Uint32Array holding float32 bits (so NaN payloads survive). */
  out: Uint32Array | Float32Array | Int32Array;
  /** Storage element `i`, converted to what `out` holds. */
  get: (i: number) => number;
}

/** How to read and convert the storage elements of `p` (its kind) from `dv`, in the file's byte order. */
function elementReader(p: Plan, dv: DataView, le: boolean): ElementReader {
  const n = p.numel;
  switch (p.ref.storage.kind) {
    case "f32": // copied as bits so that NaN payloads survive
      return { out: new Uint32Array(n), get: (i) => dv.getUint32(i * 4, le) };
    case "f64":
      return { out: new Float32Array(n), get: (i) => dv.getFloat64(i * 8, le) };
    case "f16": {
      const table = halfToFloat();
      return { out: new Float32Array(n), get: (i) => table[dv.getUint16(i * 2, le)] };
    }
    case "bf16":
      return { out: new Uint32Array(n), get: (i) => dv.getUint16(i * 2, le) << 16 };
    case "i64":
      return { out: new Int32Array(n), get: int64Getter(p.name, dv, le) };
    default:
      return { out: new Int32Array(n), get: smallIntGetter(p.ref.storage.kind, dv, le) };
  }
}

/** Reads int64 storage element `i` as int32; a value outside the int32 range is an error naming tensor `name`. */
function int64Getter(name: string, dv: DataView, le: boolean): (i: number) => number {
  return (i) => {
    const lo = dv.getInt32(i * 8 + (le ? 0 : 4), le), hi = dv.getInt32(i * 8 + (le ? 4 : 0), le);
    if (hi !== lo >> 31) {
      const v = BigInt.asIntN(64, (BigInt(hi) << 32n) | BigInt(lo >>> 0));
      throw new FormatError(
        `tensor ${printable(name)}: int64 value ${v} at storage element ${i} is outside the int32 range`,
      );
    }
    return lo;
  };
}

/** Reads an int32, int16, int8, bool or uint8 storage element `i` as a number. */
function smallIntGetter(kind: Kind, dv: DataView, le: boolean): (i: number) => number {
  switch (kind) {
    case "i32":
      return (i) => dv.getInt32(i * 4, le);
    case "i16":
      return (i) => dv.getInt16(i * 2, le);
    case "i8":
      return (i) => dv.getInt8(i);
    case "bool":
      return (i) => dv.getUint8(i) ? 1 : 0;
    default:
      return (i) => dv.getUint8(i);
  }
}

/** The tensors the model wants (all but those it expects to be `null`), after checking the expected shapes. */
function checkExpectedShapes(
  tensors: Map<string, TensorRef>,
  options: TorchCheckpointOptions,
): { wanted: [string, TensorRef][]; expectedElems: number } {
  const wanted: [string, TensorRef][] = [];
  const wrong: string[] = [];
  let expectedElems = 0;
  for (const [name, t] of tensors) {
    const want = options.expectedShape?.(name);
    if (want === null) continue;
    wanted.push([name, t]);
    if (!want) continue;
    expectedElems += want.reduce((a, b) => a * b, 1);
    const size = sizeOf(name, t);
    if (size.length !== want.length || size.some((d, i) => d !== want[i])) {
      wrong.push(`${printable(name)}: expected [${want}], found [${size}]`);
    }
  }
  if (wrong.length) {
    const more = wrong.length > 20 ? `, … (${wrong.length} in all)` : "";
    throw new FormatError(`weights do not match the model — wrong shape: ${wrong.slice(0, 20).join(", ")}${more}`);
  }
  return { wanted, expectedElems };
}

/** A plan per distinct tensor object, and how many non-empty tensors read each storage. */
function planTensors(
  wanted: [string, TensorRef][],
  src: StorageSource,
  bigEndian: boolean,
): { plans: Map<TensorRef, Plan>; uses: Map<string, number> } {
  const plans = new Map<TensorRef, Plan>();
  const uses = new Map<string, number>();
  for (const [name, t] of wanted) {
    if (plans.has(t)) continue;
    const p = plan(name, t, src, bigEndian);
    plans.set(t, p);
    if (p.numel > 0) uses.set(t.storage.key, (uses.get(t.storage.key) ?? 0) + 1);
  }
  return { plans, uses };
}

/**
 * Refuses a load that would allocate more than its limit: each storage read once, plus a new array for each tensor
 * that is not a view. The limit is `maxBytes`, or the default bound from the file size and the expected elements.
 */
function checkAllocation(
  plans: Map<TensorRef, Plan>,
  uses: Map<string, number>,
  src: StorageSource,
  limits: { maxBytes?: number; fileBytes: number; expectedElems: number },
): void {
  const { maxBytes, fileBytes, expectedElems } = limits;
  const limit = maxBytes ?? SLACK_BYTES + Math.max(FILE_FACTOR * fileBytes, EXPECTED_FACTOR * expectedElems);
  let total = 0, largest = { bytes: -1, what: "" };
  const add = (bytes: number, what: string) => {
    total += bytes;
    if (bytes > largest.bytes) largest = { bytes, what };
  };
  for (const key of uses.keys()) add(src.cost(key).bytes, src.cost(key).what);
  for (const p of plans.values()) if (!p.view && p.numel > 0) add(p.numel * 4, `tensor ${printable(p.name)}`);
  if (total <= limit) return;
  const why = maxBytes === undefined
    ? "64 MiB + the larger of 32 × the file size and 12 bytes per expected element"
    : "maxBytes";
  throw new FormatError(
    `loading would allocate ${total} bytes, more than the limit of ${limit} (${why}); ` +
      `the largest part is ${largest.what} (${largest.bytes} bytes)`,
  );
}

/** Reads each storage at most once while any tensor still needs it; zip errors name the tensor being read. */
class StorageCache {
  readonly #cache = new Map<string, Promise<Uint8Array>>();
  /** Remembers the source and, per storage key, how many non-empty tensors will still read it. */
  constructor(readonly src: StorageSource, readonly uses: Map<string, number>) {}

  /** The bytes of the storage of `p` (read on first use). */
  async bytes(p: Plan): Promise<Uint8Array> {
    const key = p.ref.storage.key;
    let bytes = this.#cache.get(key);
    if (!bytes) this.#cache.set(key, bytes = Promise.resolve().then(() => this.src.read(key)));
    try {
      return await bytes;
    } catch (e) {
      if (e instanceof ZipError) throw new FormatError(`tensor ${printable(p.name)}: ${e.message}`, { cause: e });
      throw e;
    }
  }

  /** Notes that `p` has been built; a storage no tensor needs any more is dropped (views keep what they need). */
  done(p: Plan): void {
    const key = p.ref.storage.key;
    const left = (this.uses.get(key) ?? 0) - (p.numel > 0 ? 1 : 0);
    this.uses.set(key, left);
    if (left === 0) this.#cache.delete(key);
  }
}

/**
 * Checks every tensor (expected shapes, storage bounds, total allocation) before reading anything, then reads each
 * storage once and materialises the tensors; tensors that are one object in the checkpoint share one result.
 * @throws {FormatError} naming the tensor (or storage) and the reason.
 */
export async function buildTensors(
  tensors: Map<string, TensorRef>,
  src: StorageSource,
  bigEndian: boolean,
  fileBytes: number,
  options: TorchCheckpointOptions,
): Promise<Map<string, HostTensor>> {
  const { wanted, expectedElems } = checkExpectedShapes(tensors, options);
  const { plans, uses } = planTensors(wanted, src, bigEndian);
  checkAllocation(plans, uses, src, { maxBytes: options.maxBytes, fileBytes, expectedElems });
  const storages = new StorageCache(src, uses);
  const out = new Map<string, HostTensor>();
  const done = new Map<TensorRef, HostTensor>();
  for (const [name, t] of wanted) {
    const prev = done.get(t);
    if (prev) {
      out.set(name, { ...prev, shape: [...prev.shape] });
      continue;
    }
    const p = plans.get(t)!;
    const h = materialize(p, p.numel === 0 ? new Uint8Array(0) : await storages.bytes(p), bigEndian);
    done.set(t, h);
    out.set(name, h);
    storages.done(p);
  }
  return out;
}
