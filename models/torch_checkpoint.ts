/**
 * Reads PyTorch `pytorch_model.bin` checkpoints (the zip format of torch ≥ 1.6 and the legacy format before it)
 * without Python and without executing anything from the file: pickles run in a restricted interpreter whose
 * globals come from a fixed allow-list of torch rebuild functions, storage types and dtypes.
 * @module
 */

import type { DType, HostTensor } from "../engine/host_tensor.ts";
import { describe, PickleError, PyDict, PyGlobal, PyList, PyTuple, unpickle } from "./pickle.ts";
import type { PickleHooks } from "./pickle.ts";
import { isZipArchive, ZipError, ZipReader } from "./zip.ts";

export type { DType, HostTensor };

/** Thrown for any checkpoint that cannot be read safely; the message names the file and the reason. */
export class TorchCheckpointError extends Error {
  /** Creates the error for `fileName` with `reason`; the message is `"<fileName>: <reason>"`. */
  constructor(readonly fileName: string, readonly reason: string, options?: ErrorOptions) {
    super(`${fileName}: ${reason}`, options);
    this.name = "TorchCheckpointError";
  }
}

/** Element kinds of torch storages. */
type Kind = "f32" | "f64" | "f16" | "bf16" | "i64" | "i32" | "i16" | "i8" | "u8" | "bool";

const STORAGE_KINDS: Record<string, Kind> = {
  FloatStorage: "f32",
  DoubleStorage: "f64",
  HalfStorage: "f16",
  BFloat16Storage: "bf16",
  LongStorage: "i64",
  IntStorage: "i32",
  ShortStorage: "i16",
  CharStorage: "i8",
  ByteStorage: "u8",
  BoolStorage: "bool",
};
const KIND_SIZE: Record<Kind, number> = {
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
const DTYPES = new Set(
  "float32 float float64 double float16 half bfloat16 int64 long int32 int int16 short int8 uint8 bool".split(" "),
);
const CALLABLES = new Set([
  "collections.OrderedDict",
  "torch._utils._rebuild_tensor",
  "torch._utils._rebuild_tensor_v2",
  "torch._utils._rebuild_parameter",
  "torch._utils._rebuild_parameter_with_state",
  "torch._tensor._rebuild_from_type_v2",
  "torch.Tensor",
  "torch.nn.parameter.Parameter",
  "_codecs.encode",
]);
const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;
const LEGACY_PROTOCOL = 1001;
/** Largest element count accepted for a view that reads storage elements more than once (stride 0). */
const MAX_EXPANDED = 1 << 24;

/** Reason for rejecting a checkpoint; wrapped into a {@link TorchCheckpointError} with the file name. */
class FormatError extends Error {}

/** A storage reference from a persistent id. */
class StorageRef {
  constructor(
    readonly type: PyGlobal,
    readonly kind: Kind,
    readonly key: string,
    readonly view?: { key: string; offset: number; size: number },
  ) {}
}

/** A tensor as described by `_rebuild_tensor_v2`; materialised after unpickling. */
class TensorRef {
  constructor(
    readonly storage: StorageRef,
    readonly offset: unknown,
    readonly size: unknown,
    readonly stride: unknown,
  ) {}
}

function str(v: unknown, what: string): string {
  if (typeof v === "string") return v;
  if (v instanceof Uint8Array) return String.fromCharCode(...v.subarray(0, 1024));
  if (typeof v === "number" && Number.isSafeInteger(v)) return String(v);
  throw new FormatError(`${what} is ${describe(v)}, expected a string`);
}

function int(v: unknown, what: string): number {
  if (typeof v === "boolean") return v ? 1 : 0;
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
    throw new FormatError(`${what} is ${typeof v === "number" ? v : describe(v)}, expected a non-negative integer`);
  }
  return v;
}

function ints(v: unknown, what: string): number[] {
  if (!(v instanceof PyTuple || v instanceof PyList)) {
    throw new FormatError(`${what} is ${describe(v)}, expected a tuple`);
  }
  if (v.items.length > 64) throw new FormatError(`${what} has ${v.items.length} dimensions`);
  return v.items.map((x, i) => int(x, `${what}[${i}]`));
}

/** Pickle hooks for torch checkpoints; `legacy` selects the 6-field persistent ids of the pre-1.6 format. */
function torchHooks(legacy: boolean, storages: Map<string, StorageRef>): PickleHooks {
  const hooks: PickleHooks = {
    allowGlobal(module, name) {
      if (module === "torch" && (Object.hasOwn(STORAGE_KINDS, name) || DTYPES.has(name))) return true;
      return CALLABLES.has(`${module}.${name}`);
    },
    reduce(fn, args) {
      const a = args.items;
      switch (fn.qualifiedName) {
        case "collections.OrderedDict": {
          const d = new PyDict();
          if (a.length === 1 && a[0] instanceof PyList) {
            for (const pair of a[0].items) {
              if (!(pair instanceof PyTuple) || pair.items.length !== 2) throw new FormatError("bad OrderedDict item");
              d.map.set(pair.items[0], pair.items[1]);
            }
          } else if (a.length !== 0) throw new FormatError("unsupported OrderedDict arguments");
          return d;
        }
        case "torch._utils._rebuild_tensor":
        case "torch._utils._rebuild_tensor_v2": {
          if (a.length < 4) throw new FormatError(`${fn.qualifiedName} needs 4 arguments, got ${a.length}`);
          if (!(a[0] instanceof StorageRef)) throw new FormatError(`tensor storage is ${describe(a[0])}`);
          return new TensorRef(a[0], a[1], a[2], a[3]);
        }
        case "torch._utils._rebuild_parameter":
        case "torch._utils._rebuild_parameter_with_state":
          if (!(a[0] instanceof TensorRef)) throw new FormatError(`parameter data is ${describe(a[0])}`);
          return a[0];
        case "torch._tensor._rebuild_from_type_v2": {
          const [func, type, inner] = a;
          const typeName = type instanceof PyGlobal ? type.qualifiedName : "";
          if (!(func instanceof PyGlobal) || !(inner instanceof PyTuple)) {
            throw new FormatError("bad _rebuild_from_type_v2");
          }
          if (typeName !== "torch.Tensor" && typeName !== "torch.nn.parameter.Parameter") {
            throw new FormatError(`unsupported tensor type ${describe(type)}`);
          }
          return hooks.reduce(func, inner);
        }
        case "_codecs.encode": {
          const [text, encoding] = a;
          if (typeof text !== "string" || (encoding !== "latin1" && encoding !== "latin-1")) {
            throw new FormatError("unsupported _codecs.encode arguments");
          }
          const out = new Uint8Array(text.length);
          for (let i = 0; i < text.length; i++) {
            const c = text.charCodeAt(i);
            if (c > 255) throw new FormatError("non-latin1 character in _codecs.encode");
            out[i] = c;
          }
          return out;
        }
        default:
          throw new FormatError(`refusing to call ${fn.qualifiedName}`);
      }
    },
    persistentLoad(pid) {
      const n = legacy ? 6 : 5;
      if (!(pid instanceof PyTuple) || pid.items.length !== n || str(pid.items[0], "persistent id tag") !== "storage") {
        throw new FormatError(`unsupported persistent id (expected a ${n}-tuple starting with 'storage')`);
      }
      const [, type, rawKey, , numel, view] = pid.items;
      const kind = type instanceof PyGlobal && type.module === "torch" ? STORAGE_KINDS[type.name] : undefined;
      if (!kind || !(type instanceof PyGlobal)) throw new FormatError(`unsupported storage type ${describe(type)}`);
      const key = str(rawKey, "storage key");
      int(numel, `numel of storage ${key}`);
      const prev = storages.get(key);
      if (legacy && prev && KIND_SIZE[prev.kind] !== KIND_SIZE[kind]) {
        throw new FormatError(`storage ${key} is used with different element sizes`);
      }
      if (!prev) storages.set(key, new StorageRef(type, kind, key));
      if (!legacy || view === null) return new StorageRef(type, kind, key);
      if (!(view instanceof PyTuple) || view.items.length !== 3) throw new FormatError(`bad view of storage ${key}`);
      const [vKey, vOffset, vSize] = view.items;
      return new StorageRef(type, kind, key, {
        key: str(vKey, "view key"),
        offset: int(vOffset, "view offset"),
        size: int(vSize, "view size"),
      });
    },
  };
  return hooks;
}

/** Collects tensors from the unpickled object: a (possibly nested) dict of tensors; nested names are dot-joined. */
function collectTensors(root: unknown): Map<string, TensorRef> {
  if (!(root instanceof PyDict)) {
    throw new FormatError(`top-level object is ${describe(root)}, expected a dict of tensors`);
  }
  const out = new Map<string, TensorRef>();
  const seen = new Set<PyDict>();
  const walk = (d: PyDict, prefix: string, depth: number) => {
    if (seen.has(d) || depth > 16) return;
    seen.add(d);
    for (const [k, v] of d.map) {
      if (typeof k !== "string" && typeof k !== "number") continue;
      const name = prefix + String(k);
      if (v instanceof TensorRef) {
        if (out.has(name)) throw new FormatError(`duplicate tensor name ${name}`);
        out.set(name, v);
      } else if (v instanceof PyDict) walk(v, `${name}.`, depth + 1);
    }
  };
  walk(root, "", 0);
  return out;
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

/** Gathers and converts one tensor out of its storage bytes. */
function materialize(name: string, t: TensorRef, bytes: Uint8Array, bigEndian: boolean): HostTensor {
  const { kind, key, view, type } = t.storage;
  const size = ints(t.size, `size of ${name}`);
  const stride = ints(t.stride, `stride of ${name}`);
  if (stride.length !== size.length) throw new FormatError(`tensor ${name}: size and stride lengths differ`);
  const es = KIND_SIZE[kind];
  let base = int(t.offset, `storage offset of ${name}`);
  let limit = Math.floor(bytes.length / es);
  if (view) {
    if (view.offset + view.size > limit) throw new FormatError(`view ${view.key} exceeds storage ${key}`);
    base += view.offset;
    limit = view.offset + view.size;
  }
  const numel = size.reduce((a, b) => a * b, 1);
  if (!Number.isSafeInteger(numel)) throw new FormatError(`tensor ${name} is too large`);
  const dtype = kind === "f32" || kind === "f64" || kind === "f16" || kind === "bf16" ? "f32" : "i32";
  const result = (data: Float32Array | Int32Array): HostTensor => ({
    dtype,
    shape: size,
    data,
    sourceDtype: type.qualifiedName,
  });
  if (numel === 0) return result(dtype === "f32" ? new Float32Array(0) : new Int32Array(0));
  let span = 1;
  for (let d = 0; d < size.length; d++) span += (size[d] - 1) * stride[d];
  if (!Number.isSafeInteger(span) || base + span > limit) {
    throw new FormatError(
      `storage ${key} too small for tensor ${name}: needs ${span} elements from offset ${base}, has ${limit}`,
    );
  }
  if (numel > span && numel > MAX_EXPANDED) throw new FormatError(`tensor ${name}: expanded view is too large`);
  const buf = bytes.slice(base * es, (base + span) * es).buffer;
  if (bigEndian && es > 1) {
    const b = new Uint8Array(buf);
    for (let i = 0; i < b.length; i += es) b.subarray(i, i + es).reverse();
  }
  // Source element index for each output element (row-major), or null when the view is contiguous.
  let idx: Float64Array | null = null;
  let expected = 1;
  for (let d = size.length - 1; d >= 0; d--) {
    if (size[d] !== 1 && stride[d] !== expected) idx = new Float64Array(numel);
    expected *= size[d];
  }
  if (idx) {
    const pos = new Array<number>(size.length).fill(0);
    let src = 0;
    for (let i = 0; i < numel; i++) {
      idx[i] = src;
      for (let d = size.length - 1; d >= 0; d--) {
        if (++pos[d] < size[d]) {
          src += stride[d];
          break;
        }
        src -= (size[d] - 1) * stride[d];
        pos[d] = 0;
      }
    }
  }
  const at = (i: number) => idx ? idx[i] : i;
  switch (kind) {
    case "f32": {
      const src = new Float32Array(buf);
      if (!idx) return result(src);
      const out = new Uint32Array(numel); // copy bits so NaN payloads survive
      const bits = new Uint32Array(buf);
      for (let i = 0; i < numel; i++) out[i] = bits[idx[i]];
      return result(new Float32Array(out.buffer));
    }
    case "f64":
    case "f16": {
      const src = kind === "f64" ? new Float64Array(buf) : new Uint16Array(buf);
      const table = kind === "f16" ? halfToFloat() : null;
      const out = new Float32Array(numel);
      for (let i = 0; i < numel; i++) out[i] = table ? table[src[at(i)]] : src[at(i)];
      return result(out);
    }
    case "bf16": {
      const src = new Uint16Array(buf);
      const out = new Uint32Array(numel);
      for (let i = 0; i < numel; i++) out[i] = src[at(i)] << 16;
      return result(new Float32Array(out.buffer));
    }
    case "i64": {
      const src = new Int32Array(buf);
      const out = new Int32Array(numel);
      for (let i = 0; i < numel; i++) {
        const j = at(i) * 2;
        if (src[j + 1] !== src[j] >> 31) {
          const v = BigInt.asIntN(64, (BigInt(src[j + 1]) << 32n) | BigInt(src[j] >>> 0));
          throw new FormatError(`tensor ${name}: int64 value ${v} at element ${i} is outside the int32 range`);
        }
        out[i] = src[j];
      }
      return result(out);
    }
    default: {
      const src = kind === "i32"
        ? new Int32Array(buf)
        : kind === "i16"
        ? new Int16Array(buf)
        : kind === "i8"
        ? new Int8Array(buf)
        : new Uint8Array(buf);
      if (kind === "i32" && !idx) return result(src as Int32Array);
      const out = new Int32Array(numel);
      for (let i = 0; i < numel; i++) out[i] = kind === "bool" ? (src[at(i)] ? 1 : 0) : src[at(i)];
      return result(out);
    }
  }
}

/** Materialises every tensor; tensors that are one object in the checkpoint (tied weights) share `data`. */
async function buildTensors(
  tensors: Map<string, TensorRef>,
  storageBytes: (key: string) => Promise<Uint8Array> | Uint8Array,
  bigEndian: boolean,
): Promise<Map<string, HostTensor>> {
  const out = new Map<string, HostTensor>();
  const done = new Map<TensorRef, HostTensor>();
  for (const [name, t] of tensors) {
    const prev = done.get(t);
    if (prev) {
      out.set(name, { ...prev, shape: [...prev.shape] });
      continue;
    }
    const h = materialize(name, t, await storageBytes(t.storage.key), bigEndian);
    done.set(t, h);
    out.set(name, h);
  }
  return out;
}

async function parseZip(bytes: Uint8Array): Promise<Map<string, HostTensor>> {
  const zip = new ZipReader(bytes);
  const pkls = [...zip.entries.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n));
  if (pkls.length !== 1) throw new FormatError(`expected one <folder>/data.pkl entry, found ${pkls.length}`);
  const prefix = pkls[0].slice(0, -"data.pkl".length);
  let bigEndian = false;
  if (zip.entries.has(`${prefix}byteorder`)) {
    const order = new TextDecoder().decode(await zip.read(`${prefix}byteorder`)).trim();
    if (order !== "little" && order !== "big") throw new FormatError(`unknown byteorder "${order.slice(0, 20)}"`);
    bigEndian = order === "big";
  }
  const storages = new Map<string, StorageRef>();
  const pkl = await zip.read(pkls[0]);
  const { value } = unpickle(pkl, 0, torchHooks(false, storages));
  const cache = new Map<string, Promise<Uint8Array>>();
  return await buildTensors(collectTensors(value), (key) => {
    const entry = `${prefix}data/${key}`;
    if (!zip.entries.has(entry)) throw new FormatError(`storage ${key} is missing from the archive (no ${entry})`);
    if (!cache.has(key)) cache.set(key, zip.read(entry));
    return cache.get(key)!;
  }, bigEndian);
}

async function parseLegacy(bytes: Uint8Array): Promise<Map<string, HostTensor>> {
  const plain: PickleHooks = { allowGlobal: () => false, reduce: () => null };
  let pos = 0;
  const next = (hooks: PickleHooks): unknown => {
    const r = unpickle(bytes, pos, hooks);
    pos = r.end;
    return r.value;
  };
  const magic = next(plain);
  if (magic !== LEGACY_MAGIC) throw new FormatError("not a PyTorch checkpoint (bad legacy magic number)");
  const version = next(plain);
  if (version !== LEGACY_PROTOCOL) {
    throw new FormatError(
      `unsupported legacy protocol version ${typeof version === "number" ? version : describe(version)}`,
    );
  }
  const sysInfo = next(plain);
  if (!(sysInfo instanceof PyDict)) throw new FormatError("legacy sys_info is not a dict");
  const bigEndian = sysInfo.map.get("little_endian") === false;
  const storages = new Map<string, StorageRef>();
  const tensors = collectTensors(next(torchHooks(true, storages)));
  const keys = next(plain);
  if (!(keys instanceof PyList)) throw new FormatError("legacy storage key list is missing");
  const data = new Map<string, Uint8Array>();
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (const k of keys.items) {
    const key = str(k, "storage key");
    const s = storages.get(key);
    if (!s) throw new FormatError(`storage ${key} is listed but never referenced`);
    if (pos + 8 > bytes.length) throw new FormatError(`truncated before storage ${key}`);
    const first = view.getUint32(pos, !bigEndian);
    const second = view.getUint32(pos + 4, !bigEndian);
    const count = bigEndian ? first * 2 ** 32 + second : second * 2 ** 32 + first; // 8-byte element count
    const nbytes = count * KIND_SIZE[s.kind];
    if (nbytes > bytes.length - pos - 8) throw new FormatError(`storage ${key} is truncated (${count} elements)`);
    data.set(key, bytes.subarray(pos + 8, pos + 8 + nbytes));
    pos += 8 + nbytes;
  }
  return await buildTensors(tensors, (key) => {
    const d = data.get(key);
    if (!d) throw new FormatError(`storage ${key} has no data in the file`);
    return d;
  }, bigEndian);
}

/**
 * Parses a PyTorch checkpoint held in memory. `fileName` is used in error messages only.
 * Floating-point tensors become `f32`, integer and bool tensors `i32`; `sourceDtype` names the torch storage type
 * (e.g. `"torch.HalfStorage"`). Tensors that are the same object in the checkpoint (tied weights such as GPT-2's
 * `lm_head.weight`) appear under every name and share their `data` array. The pickled object must be a dict of
 * tensors; nested dicts (e.g. `{"model": {...}}`) are flattened with dot-joined names and non-tensor values are ignored.
 * @throws {TorchCheckpointError} for malformed, truncated, unsupported or unsafe content.
 */
export async function parseTorchCheckpoint(bytes: Uint8Array, fileName: string): Promise<Map<string, HostTensor>> {
  try {
    if (isZipArchive(bytes)) return await parseZip(bytes);
    if (bytes.length > 0 && bytes[0] === 0x80) return await parseLegacy(bytes);
    throw new FormatError("not a PyTorch checkpoint (neither a zip archive nor a legacy pickle)");
  } catch (e) {
    if (e instanceof FormatError || e instanceof PickleError || e instanceof ZipError) {
      throw new TorchCheckpointError(fileName, e.message, { cause: e });
    }
    const why = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    throw new TorchCheckpointError(fileName, `internal error while parsing: ${why}`, { cause: e });
  }
}

/**
 * Reads and parses the PyTorch checkpoint at `path` (see {@link parseTorchCheckpoint}).
 * @throws {TorchCheckpointError} when the file cannot be read or is not a valid checkpoint.
 */
export async function readTorchCheckpoint(path: string | URL): Promise<Map<string, HostTensor>> {
  const fileName = path instanceof URL && path.protocol === "file:" ? decodeURIComponent(path.pathname) : String(path);
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    throw new TorchCheckpointError(fileName, `cannot read file: ${e instanceof Error ? e.message : e}`, { cause: e });
  }
  return await parseTorchCheckpoint(bytes, fileName);
}
