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
import { describe, PickleError, printable, PyDict, PyList, unpickle } from "./pickle.ts";
import type { PickleHooks } from "./pickle.ts";
import { DATA_ONLY_HOOKS, pickleString, TorchPickleHooks } from "./torch_pickle_hooks.ts";
import { isZipArchive, ZipError, ZipReader } from "./zip.ts";
import {
  buildTensors,
  FILE_FACTOR,
  FormatError,
  KIND_SIZE,
  SLACK_BYTES,
  type StorageRef,
  type StorageSource,
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

const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;
const LEGACY_PROTOCOL = 1001;

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

/** Parses a zip checkpoint (torch ≥ 1.6): `<folder>/data.pkl` plus one entry per storage under `<folder>/data/`. */
async function parseZip(bytes: Uint8Array, options: TorchCheckpointOptions): Promise<Map<string, HostTensor>> {
  const zip = new ZipReader(bytes);
  const pkls = [...zip.entries.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n));
  if (pkls.length !== 1) throw new FormatError(`expected one <folder>/data.pkl entry, found ${pkls.length}`);
  const prefix = pkls[0].slice(0, -"data.pkl".length);
  const bigEndian = await readByteOrder(zip, prefix);
  const storages = new Map<string, StorageRef>();
  const pkl = await zip.read(pkls[0], { maxBytes: options.maxBytes ?? SLACK_BYTES + FILE_FACTOR * bytes.length });
  const { value } = unpickle(pkl, 0, new TorchPickleHooks(false, storages));
  const source = zipStorageSource(zip, prefix, bytes);
  return await buildTensors(collectTensors(value), source, bigEndian, bytes.length, options);
}

/** Whether the archive's `<folder>/byteorder` entry says `big` (absent means little-endian). */
async function readByteOrder(zip: ZipReader, prefix: string): Promise<boolean> {
  if (!zip.entries.has(`${prefix}byteorder`)) return false;
  const order = new TextDecoder().decode(await zip.read(`${prefix}byteorder`, { maxBytes: 64 })).trim();
  if (order !== "little" && order !== "big") throw new FormatError(`unknown byteorder "${printable(order)}"`);
  return order === "big";
}

/** The storages of a zip checkpoint: entry `<prefix>data/<key>` of the archive `bytes` that `zip` reads. */
function zipStorageSource(zip: ZipReader, prefix: string, bytes: Uint8Array): StorageSource {
  const entry = (key: string) => {
    const name = `${prefix}data/${key}`;
    const e = zip.entries.get(name);
    if (!e) throw new FormatError(`storage ${printable(key)} is missing from the archive (no ${printable(name)})`);
    zip.checkSize(e);
    return e;
  };
  return {
    bytes: (key) => entry(key).uncompressedSize,
    cost: (key) => {
      const e = entry(key);
      const what = `storage ${printable(key)} (${e.method === 0 ? "" : "DEFLATE "}entry ${printable(e.name)})`;
      return { bytes: e.method === 0 ? 0 : e.uncompressedSize, what };
    },
    align: (key) => entry(key).method === 0 ? bytes.byteOffset + entry(key).dataOffset : 0,
    read: (key) => zip.read(entry(key).name),
  };
}

/** The consecutive parts of a legacy checkpoint, read in order: pickles, then the raw storages. */
class LegacyParts {
  /** Offset of the next part. */
  pos = 0;
  private readonly view: DataView;

  constructor(readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** The value of the next pickle, run with `hooks`. */
  pickle(hooks: PickleHooks = DATA_ONLY_HOOKS): unknown {
    const r = unpickle(this.bytes, this.pos, hooks);
    this.pos = r.end;
    return r.value;
  }

  /** The next raw storage: an 8-byte element count, then its elements of `elementSize` bytes. */
  storage(key: string, elementSize: number, bigEndian: boolean): Uint8Array {
    const pos = this.pos;
    if (pos + 8 > this.bytes.length) throw new FormatError(`truncated before storage ${printable(key)}`);
    const first = this.view.getUint32(pos, !bigEndian);
    const second = this.view.getUint32(pos + 4, !bigEndian);
    const count = bigEndian ? first * 2 ** 32 + second : second * 2 ** 32 + first;
    const nbytes = count * elementSize;
    if (nbytes > this.bytes.length - pos - 8) {
      throw new FormatError(`storage ${printable(key)} is truncated (${count} elements)`);
    }
    this.pos = pos + 8 + nbytes;
    return this.bytes.subarray(pos + 8, pos + 8 + nbytes);
  }
}

/** Reads the legacy header pickles (magic number, protocol version, sys_info); true when the file is big-endian. */
function readLegacyHeader(parts: LegacyParts): boolean {
  const magic = parts.pickle();
  if (magic !== LEGACY_MAGIC) throw new FormatError("not a PyTorch checkpoint (bad legacy magic number)");
  const version = parts.pickle();
  if (version !== LEGACY_PROTOCOL) {
    throw new FormatError(
      `unsupported legacy protocol version ${typeof version === "number" ? version : describe(version)}`,
    );
  }
  const sysInfo = parts.pickle();
  if (!(sysInfo instanceof PyDict)) throw new FormatError("legacy sys_info is not a dict");
  return sysInfo.map.get("little_endian") === false;
}

/** Reads the raw storages that follow the legacy key list `keys`, in its order. */
function readLegacyStorages(
  parts: LegacyParts,
  keys: PyList,
  storages: Map<string, StorageRef>,
  bigEndian: boolean,
): Map<string, Uint8Array> {
  const data = new Map<string, Uint8Array>();
  for (const k of keys.items) {
    const key = pickleString(k, "storage key");
    const s = storages.get(key);
    if (!s) throw new FormatError(`storage ${printable(key)} is listed but never referenced`);
    data.set(key, parts.storage(key, KIND_SIZE[s.kind], bigEndian));
  }
  return data;
}

/** Parses a legacy checkpoint (torch < 1.6): header pickles, the tensors' pickle, the storage keys, the storages. */
async function parseLegacy(bytes: Uint8Array, options: TorchCheckpointOptions): Promise<Map<string, HostTensor>> {
  const parts = new LegacyParts(bytes);
  const bigEndian = readLegacyHeader(parts);
  const storages = new Map<string, StorageRef>();
  const tensors = collectTensors(parts.pickle(new TorchPickleHooks(true, storages)));
  const keys = parts.pickle();
  if (!(keys instanceof PyList)) throw new FormatError("legacy storage key list is missing");
  const data = readLegacyStorages(parts, keys, storages, bigEndian);
  const get = (key: string) => {
    const d = data.get(key);
    if (!d) throw new FormatError(`storage ${printable(key)} has no data in the file`);
    return d;
  };
  const source: StorageSource = {
    bytes: (key) => get(key).length,
    cost: (key) => ({ bytes: 0, what: `storage ${printable(key)}` }),
    align: (key) => get(key).byteOffset,
    read: get,
  };
  return await buildTensors(tensors, source, bigEndian, bytes.length, options);
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
