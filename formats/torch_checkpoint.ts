/**
 * Reads PyTorch `pytorch_model.bin` checkpoints (the zip format of torch ≥ 1.6 and the legacy format before it)
 * without Python and without executing anything from the file: pickles run in a restricted interpreter whose
 * globals come from a fixed allow-list of torch rebuild functions, storage types and dtypes.
 *
 * Memory is bounded by what the file really holds: every tensor is checked against its storage (and against the
 * model's expected shape, when given) before anything is read or allocated; each storage is read once and shared,
 * contiguous `float32`/`int32` tensors are views into it; DEFLATE entries inflate into one buffer of their declared
 * size; and the total allocated is capped ({@link TorchCheckpointOptions.maxBytes}).
 * @module
 */

import type { DType, HostTensor } from "./host_tensor.ts";
import { describe, PickleError, printable, PyDict, PyGlobal, PyList, PyTuple, unpickle } from "./pickle.ts";
import type { PickleHooks } from "./pickle.ts";
import { isZipArchive, ZipError, ZipReader } from "./zip.ts";
import {
  buildTensors,
  FILE_FACTOR,
  FormatError,
  int,
  type Kind,
  KIND_SIZE,
  SLACK_BYTES,
  StorageRef,
  TensorRef,
  type TorchCheckpointOptions,
} from "./torch_tensors.ts";

export type { DType, HostTensor, TorchCheckpointOptions };

/** Thrown for any checkpoint that cannot be read safely; the message names the file and the reason. */
export class TorchCheckpointError extends Error {
  /** Creates the error for `fileName` with `reason`; the message is `"<fileName>: <reason>"`. */
  constructor(readonly fileName: string, readonly reason: string, options?: ErrorOptions) {
    super(`${fileName}: ${reason}`, options);
    this.name = "TorchCheckpointError";
  }
}

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
function str(v: unknown, what: string): string {
  if (typeof v === "string") return v;
  if (v instanceof Uint8Array) return String.fromCharCode(...v.subarray(0, 256));
  if (typeof v === "number" && Number.isSafeInteger(v)) return String(v);
  throw new FormatError(`${what} is ${describe(v)}, expected a string`);
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
        if (out.has(name)) throw new FormatError(`duplicate tensor name ${printable(name)}`);
        out.set(name, v);
      } else if (v instanceof PyDict) walk(v, `${name}.`, depth + 1);
    }
  };
  walk(root, "", 0);
  return out;
}

async function parseZip(bytes: Uint8Array, options: TorchCheckpointOptions): Promise<Map<string, HostTensor>> {
  const zip = new ZipReader(bytes);
  const pkls = [...zip.entries.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n));
  if (pkls.length !== 1) throw new FormatError(`expected one <folder>/data.pkl entry, found ${pkls.length}`);
  const prefix = pkls[0].slice(0, -"data.pkl".length);
  let bigEndian = false;
  if (zip.entries.has(`${prefix}byteorder`)) {
    const order = new TextDecoder().decode(await zip.read(`${prefix}byteorder`, { maxBytes: 64 })).trim();
    if (order !== "little" && order !== "big") throw new FormatError(`unknown byteorder "${printable(order)}"`);
    bigEndian = order === "big";
  }
  const storages = new Map<string, StorageRef>();
  const pkl = await zip.read(pkls[0], { maxBytes: options.maxBytes ?? SLACK_BYTES + FILE_FACTOR * bytes.length });
  const { value } = unpickle(pkl, 0, torchHooks(false, storages));
  const entry = (key: string) => {
    const name = `${prefix}data/${key}`;
    const e = zip.entries.get(name);
    if (!e) throw new FormatError(`storage ${printable(key)} is missing from the archive (no ${printable(name)})`);
    zip.checkSize(e);
    return e;
  };
  return await buildTensors(
    collectTensors(value),
    {
      bytes: (key) => entry(key).uncompressedSize,
      cost: (key) => {
        const e = entry(key);
        const what = `storage ${printable(key)} (${e.method === 0 ? "" : "DEFLATE "}entry ${printable(e.name)})`;
        return { bytes: e.method === 0 ? 0 : e.uncompressedSize, what };
      },
      align: (key) => entry(key).method === 0 ? bytes.byteOffset + entry(key).dataOffset : 0,
      read: (key) => zip.read(entry(key).name),
    },
    bigEndian,
    bytes.length,
    options,
  );
}

async function parseLegacy(bytes: Uint8Array, options: TorchCheckpointOptions): Promise<Map<string, HostTensor>> {
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
    if (!s) throw new FormatError(`storage ${printable(key)} is listed but never referenced`);
    if (pos + 8 > bytes.length) throw new FormatError(`truncated before storage ${printable(key)}`);
    const first = view.getUint32(pos, !bigEndian);
    const second = view.getUint32(pos + 4, !bigEndian);
    const count = bigEndian ? first * 2 ** 32 + second : second * 2 ** 32 + first; // 8-byte element count
    const nbytes = count * KIND_SIZE[s.kind];
    if (nbytes > bytes.length - pos - 8) {
      throw new FormatError(`storage ${printable(key)} is truncated (${count} elements)`);
    }
    data.set(key, bytes.subarray(pos + 8, pos + 8 + nbytes));
    pos += 8 + nbytes;
  }
  const get = (key: string) => {
    const d = data.get(key);
    if (!d) throw new FormatError(`storage ${printable(key)} has no data in the file`);
    return d;
  };
  return await buildTensors(
    tensors,
    {
      bytes: (key) => get(key).length,
      cost: (key) => ({ bytes: 0, what: `storage ${printable(key)}` }),
      align: (key) => get(key).byteOffset,
      read: get,
    },
    bigEndian,
    bytes.length,
    options,
  );
}

/**
 * Parses a PyTorch checkpoint held in memory. `fileName` is used in error messages only.
 * Floating-point tensors become `f32`, integer and bool tensors `i32`; `sourceDtype` names the torch storage type
 * (e.g. `"torch.HalfStorage"`). Each storage is read once: contiguous little-endian `float32`/`int32` tensors are
 * views into it (into `bytes` itself for uncompressed storages, so `bytes` must not be modified afterwards) and
 * tensors over the same storage share its memory, as in torch. Tensors that are the same object in the checkpoint
 * (tied weights such as GPT-2's `lm_head.weight`) appear under every name and share their `data` array. The pickled
 * object must be a dict of tensors; nested dicts (e.g. `{"model": {...}}`) are flattened with dot-joined names and
 * non-tensor values are ignored. See {@link TorchCheckpointOptions} for expected shapes and the memory limit.
 * @throws {TorchCheckpointError} for malformed, truncated, unsupported or unsafe content, for tensors that do not
 * have their expected shape, and for content that would take more memory than the limit.
 */
export async function parseTorchCheckpoint(
  bytes: Uint8Array,
  fileName: string,
  options: TorchCheckpointOptions = {},
): Promise<Map<string, HostTensor>> {
  const { maxBytes } = options;
  if (maxBytes !== undefined && !(maxBytes >= 0)) throw new RangeError(`maxBytes is ${maxBytes}, expected bytes ≥ 0`);
  try {
    if (isZipArchive(bytes)) return await parseZip(bytes, options);
    if (bytes.length > 0 && bytes[0] === 0x80) return await parseLegacy(bytes, options);
    throw new FormatError("not a PyTorch checkpoint (neither a zip archive nor a legacy pickle)");
  } catch (e) {
    if (e instanceof FormatError || e instanceof PickleError || e instanceof ZipError) {
      throw new TorchCheckpointError(fileName, e.message, { cause: e });
    }
    const why = e instanceof Error ? `${e.name}: ${printable(e.message)}` : printable(String(e));
    throw new TorchCheckpointError(fileName, `internal error while parsing: ${why}`, { cause: e });
  }
}

/** The bytes of file `path`, read into one buffer of the file's size (`Deno.readFile` peaks at twice that). */
async function readWhole(path: string | URL): Promise<Uint8Array> {
  const file = await Deno.open(path);
  try {
    const info = await file.stat();
    if (!info.isFile) throw new Error("not a regular file");
    const bytes = new Uint8Array(info.size);
    let n = 0;
    while (n < bytes.length) {
      const got = await file.read(bytes.subarray(n));
      if (got === null) break;
      n += got;
    }
    if (n !== bytes.length) throw new Error(`the file shrank while being read (${n} of ${bytes.length} bytes)`);
    return bytes;
  } finally {
    file.close();
  }
}

/**
 * Reads and parses the PyTorch checkpoint at `path` (see {@link parseTorchCheckpoint}).
 * @throws {TorchCheckpointError} when the file cannot be read or is not a valid checkpoint.
 */
export async function readTorchCheckpoint(
  path: string | URL,
  options: TorchCheckpointOptions = {},
): Promise<Map<string, HostTensor>> {
  const fileName = path instanceof URL && path.protocol === "file:" ? decodeURIComponent(path.pathname) : String(path);
  let bytes: Uint8Array;
  try {
    bytes = await readWhole(path);
  } catch (e) {
    throw new TorchCheckpointError(fileName, `cannot read file: ${e instanceof Error ? e.message : e}`, { cause: e });
  }
  return await parseTorchCheckpoint(bytes, fileName, options);
}
