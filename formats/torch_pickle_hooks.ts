/**
 * The pickle hooks of PyTorch checkpoints: the allow-list of globals (torch storage types, dtypes and a fixed set
 * of rebuild functions), the data-only stand-ins for those functions, and the resolution of persistent ids into
 * {@link StorageRef}s. Nothing named in a checkpoint is ever run: each allow-listed call is re-implemented here as
 * plain data construction, and every other call is refused.
 * @module
 */

import { describe, type PickleHooks, PyDict, PyGlobal, PyList, PyTuple } from "./pickle.ts";
import { FormatError, int, type Kind, KIND_SIZE, StorageRef, TensorRef } from "./torch_tensors.ts";

/** Element kind of each allow-listed `torch.<name>Storage` type. */
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
/** Allow-listed `torch.<dtype>` names. */
const DTYPES = new Set(
  "float32 float float64 double float16 half bfloat16 int64 long int32 int int16 short int8 uint8 bool".split(" "),
);
/** Allow-listed callables and types, by qualified name. */
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

/** Hooks for pickles that must hold plain data only: every global is refused and persistent ids are an error. */
export const DATA_ONLY_HOOKS: PickleHooks = { allowGlobal: () => false, reduce: () => null };

/** `v` as a string (bytes as Latin-1, at most 256 of them; safe integers in decimal); `what` names it in the error. */
export function pickleString(v: unknown, what: string): string {
  if (typeof v === "string") return v;
  if (v instanceof Uint8Array) return String.fromCharCode(...v.subarray(0, 256));
  if (typeof v === "number" && Number.isSafeInteger(v)) return String(v);
  throw new FormatError(`${what} is ${describe(v)}, expected a string`);
}

/**
 * Pickle hooks for torch checkpoints; `legacy` selects the 6-field persistent ids of the pre-1.6 format. Every
 * storage referenced is recorded in `storages` under its key.
 */
export class TorchPickleHooks implements PickleHooks {
  /** Creates the hooks; `storages` receives each storage as it is first referenced. */
  constructor(private readonly legacy: boolean, private readonly storages: Map<string, StorageRef>) {}

  /** Whether `module.name` is on the allow-list. */
  allowGlobal(module: string, name: string): boolean {
    if (module === "torch" && (Object.hasOwn(STORAGE_KINDS, name) || DTYPES.has(name))) return true;
    return CALLABLES.has(`${module}.${name}`);
  }

  /** The data that the allow-listed `fn(*args)` stands for. */
  reduce(fn: PyGlobal, args: PyTuple): unknown {
    return reduceTorchCall(fn, args.items);
  }

  /** The storage a `('storage', type, key, location, numel[, view])` persistent id names. */
  persistentLoad(pid: unknown): StorageRef {
    return loadStorage(pid, this.legacy, this.storages);
  }
}

/** Builds the value of the allow-listed call `fn(*a)` as data; refuses every other callable. */
function reduceTorchCall(fn: PyGlobal, a: readonly unknown[]): unknown {
  switch (fn.qualifiedName) {
    case "collections.OrderedDict":
      return orderedDict(a);
    case "torch._utils._rebuild_tensor":
    case "torch._utils._rebuild_tensor_v2":
      return rebuildTensor(fn, a);
    case "torch._utils._rebuild_parameter":
    case "torch._utils._rebuild_parameter_with_state":
      if (!(a[0] instanceof TensorRef)) throw new FormatError(`parameter data is ${describe(a[0])}`);
      return a[0];
    case "torch._tensor._rebuild_from_type_v2":
      return rebuildFromType(a);
    case "_codecs.encode":
      return encodeLatin1(a);
    default:
      throw new FormatError(`refusing to call ${fn.qualifiedName}`);
  }
}

/** `collections.OrderedDict()` or `OrderedDict([(key, value), …])`. */
function orderedDict(a: readonly unknown[]): PyDict {
  const d = new PyDict();
  if (a.length === 1 && a[0] instanceof PyList) {
    for (const pair of a[0].items) {
      if (!(pair instanceof PyTuple) || pair.items.length !== 2) throw new FormatError("bad OrderedDict item");
      d.map.set(pair.items[0], pair.items[1]);
    }
  } else if (a.length !== 0) throw new FormatError("unsupported OrderedDict arguments");
  return d;
}

/** `_rebuild_tensor[_v2](storage, offset, size, stride, …)`: the tensor, checked later against its storage. */
function rebuildTensor(fn: PyGlobal, a: readonly unknown[]): TensorRef {
  if (a.length < 4) throw new FormatError(`${fn.qualifiedName} needs 4 arguments, got ${a.length}`);
  if (!(a[0] instanceof StorageRef)) throw new FormatError(`tensor storage is ${describe(a[0])}`);
  return new TensorRef(a[0], a[1], a[2], a[3]);
}

/** `_rebuild_from_type_v2(func, type, args, state)` for plain tensors and parameters: the value of `func(*args)`. */
function rebuildFromType(a: readonly unknown[]): unknown {
  const [func, type, inner] = a;
  const typeName = type instanceof PyGlobal ? type.qualifiedName : "";
  if (!(func instanceof PyGlobal) || !(inner instanceof PyTuple)) throw new FormatError("bad _rebuild_from_type_v2");
  if (typeName !== "torch.Tensor" && typeName !== "torch.nn.parameter.Parameter") {
    throw new FormatError(`unsupported tensor type ${describe(type)}`);
  }
  return reduceTorchCall(func, inner.items);
}

/** `_codecs.encode(text, "latin1")`: how protocol-2 pickles store bytes. */
function encodeLatin1(a: readonly unknown[]): Uint8Array {
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

/** Resolves a storage persistent id (5 fields, or 6 with a view in the legacy format) and records the storage. */
function loadStorage(pid: unknown, legacy: boolean, storages: Map<string, StorageRef>): StorageRef {
  const n = legacy ? 6 : 5;
  if (
    !(pid instanceof PyTuple) || pid.items.length !== n || pickleString(pid.items[0], "persistent id tag") !== "storage"
  ) {
    throw new FormatError(`unsupported persistent id (expected a ${n}-tuple starting with 'storage')`);
  }
  const [, type, rawKey, , numel, view] = pid.items;
  const kind = type instanceof PyGlobal && type.module === "torch" ? STORAGE_KINDS[type.name] : undefined;
  if (!kind || !(type instanceof PyGlobal)) throw new FormatError(`unsupported storage type ${describe(type)}`);
  const key = pickleString(rawKey, "storage key");
  int(numel, `numel of storage ${key}`);
  const prev = storages.get(key);
  if (legacy && prev && KIND_SIZE[prev.kind] !== KIND_SIZE[kind]) {
    throw new FormatError(`storage ${key} is used with different element sizes`);
  }
  if (!prev) storages.set(key, new StorageRef(type, kind, key));
  if (!legacy || view === null) return new StorageRef(type, kind, key);
  return legacyStorageView(type, kind, key, view);
}

/** A legacy persistent id's view `(view_key, element_offset, element_size)` of storage `key`. */
function legacyStorageView(type: PyGlobal, kind: Kind, key: string, view: unknown): StorageRef {
  if (!(view instanceof PyTuple) || view.items.length !== 3) throw new FormatError(`bad view of storage ${key}`);
  const [vKey, vOffset, vSize] = view.items;
  return new StorageRef(type, kind, key, {
    key: pickleString(vKey, "view key"),
    offset: int(vOffset, "view offset"),
    size: int(vSize, "view size"),
  });
}
