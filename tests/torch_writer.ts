/**
 * Test-only writer of PyTorch zip checkpoints (`torch.save(state_dict)` in the format of torch ≥ 1.6):
 * `archive/data.pkl` (a protocol-2 pickle of an OrderedDict of `torch._utils._rebuild_tensor_v2` calls
 * whose storages are persistent ids `('storage', torch.FloatStorage, key, 'cpu', numel)`),
 * `archive/byteorder`, one `archive/data/<key>` entry per storage and `archive/version`; STORED
 * (uncompressed) zip entries aligned to 64 bytes like PyTorch's writer, with real CRC-32s.
 *
 * Tied tensors (GPT-2's `lm_head.weight`) are written the way `torch.save` writes them: a separate
 * tensor that references the storage of the tensor it is tied to. For hostile-input tests, a tensor can also be
 * any view (size, stride, offset) of an earlier tensor's storage, any entry can be replaced by raw (e.g. DEFLATE)
 * bytes, and {@link deflateZeros} makes a tiny DEFLATE stream that inflates to gigabytes.
 * @module
 */

/** Element data of one tensor: f32 → `torch.FloatStorage`, i64 → `LongStorage`, u8 → `ByteStorage`. */
export type TorchWriterData = Float32Array | BigInt64Array | Uint8Array;

/** One tensor to write: contiguous row-major `data` of `shape`. */
export interface TorchWriterTensor {
  /** Dimensions, outermost first (`[]` for a scalar). */
  shape: number[];
  /** Elements; the array type picks the storage type. */
  data: TorchWriterData;
}

/** A tensor that shares the storage (and shape) of the tensor named `tiedTo`, written earlier. */
export interface TorchWriterTie {
  /** Name of the tensor whose storage is reused. */
  tiedTo: string;
}

/** A tensor over the storage of the tensor named `viewOf` (written earlier) with its own size, stride and offset. */
export interface TorchWriterView {
  /** Name of the tensor whose storage is viewed. */
  viewOf: string;
  /** Declared size. */
  shape: number[];
  /** Declared stride (in elements). */
  stride: number[];
  /** Storage offset (in elements, default 0). */
  offset?: number;
}

/** One value of a state dict. */
export type TorchWriterValue = TorchWriterTensor | TorchWriterTie | TorchWriterView;

/** A state dict in write order. */
export type TorchWriterState = Map<string, TorchWriterValue> | Record<string, TorchWriterValue>;

/** A zip entry written as given: `stored` bytes with `method` (0 STORED, 8 DEFLATE), declared `size` and `crc`. */
export interface TorchWriterRawEntry {
  /** The bytes stored in the archive. */
  stored: Uint8Array;
  /** Compression method recorded for the entry. */
  method: 0 | 8;
  /** Declared uncompressed size (below 4 GiB). */
  size: number;
  /** Declared CRC-32 of the uncompressed bytes. */
  crc: number;
}

/** Options of {@link torchCheckpointBytes} and {@link writeTorchCheckpoint}. */
export interface TorchWriterOptions {
  /** Folder name inside the zip (PyTorch uses the file's stem; default `"archive"`). */
  archiveName?: string;
  /** Also set the OrderedDict's `_metadata` attribute (via BUILD), as `state_dict()` does (default true). */
  metadata?: boolean;
  /** Entries to write as given, by path inside the archive folder (`"data.pkl"`, `"data/0"`). */
  raw?: Record<string, TorchWriterRawEntry>;
}

const enc = new TextEncoder();
const ALIGN = 64;

/** Byte-buffer builder for pickle opcodes and zip records (little-endian). */
class Bytes {
  private buf = new Uint8Array(256);
  length = 0;
  private ensure(n: number): void {
    if (this.length + n <= this.buf.length) return;
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.length + n));
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
  }
  u8(...v: number[]): this {
    this.ensure(v.length);
    for (const x of v) this.buf[this.length++] = x & 0xff;
    return this;
  }
  u16(v: number): this {
    return this.u8(v, v >>> 8);
  }
  u32(v: number): this {
    return this.u8(v, v >>> 8, v >>> 16, v >>> 24);
  }
  raw(b: Uint8Array): this {
    this.ensure(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
    return this;
  }
  bytes(): Uint8Array {
    return this.buf.slice(0, this.length);
  }
}

/** Pickle opcodes used here (protocol 2). */
const OP = {
  PROTO: 0x80,
  GLOBAL: 0x63,
  EMPTY_TUPLE: 0x29,
  EMPTY_DICT: 0x7d,
  REDUCE: 0x52,
  MARK: 0x28,
  TUPLE: 0x74,
  BINUNICODE: 0x58,
  BININT: 0x4a,
  LONG1: 0x8a,
  BINPERSID: 0x51,
  NEWFALSE: 0x89,
  SETITEM: 0x73,
  SETITEMS: 0x75,
  BUILD: 0x62,
  BINPUT: 0x71,
  LONG_BINPUT: 0x72,
  BINGET: 0x68,
  LONG_BINGET: 0x6a,
  STOP: 0x2e,
} as const;

class Pickler extends Bytes {
  private memo = new Map<string, number>();
  str(s: string): this {
    const b = enc.encode(s);
    return this.u8(OP.BINUNICODE).u32(b.length).raw(b);
  }
  int(n: number): this {
    if (!Number.isSafeInteger(n)) throw new Error(`torch_writer: ${n} is not a safe integer`);
    if (n >= -(2 ** 31) && n < 2 ** 31) return this.u8(OP.BININT).u32(n >>> 0);
    // LONG1: little-endian two's complement, 8 bytes is enough for safe integers.
    const v = BigInt.asUintN(64, BigInt(n));
    this.u8(OP.LONG1, 8);
    for (let i = 0n; i < 8n; i++) this.u8(Number((v >> (8n * i)) & 0xffn));
    return this;
  }
  /** A GLOBAL, memoised so that repeated references use BINGET (as Python's pickler does). */
  global(module: string, name: string): this {
    const key = `${module}\n${name}\n`;
    const idx = this.memo.get(key);
    if (idx !== undefined) return idx < 256 ? this.u8(OP.BINGET, idx) : this.u8(OP.LONG_BINGET).u32(idx);
    this.u8(OP.GLOBAL).raw(enc.encode(key));
    const n = this.memo.size;
    this.memo.set(key, n);
    return n < 256 ? this.u8(OP.BINPUT, n) : this.u8(OP.LONG_BINPUT).u32(n);
  }
  tuple(items: number[]): this {
    this.u8(OP.MARK);
    for (const x of items) this.int(x);
    return this.u8(OP.TUPLE);
  }
  emptyOrderedDict(): this {
    return this.global("collections", "OrderedDict").u8(OP.EMPTY_TUPLE, OP.REDUCE);
  }
}

interface Storage {
  key: string;
  type: string;
  numel: number;
  bytes: Uint8Array;
}

function storageType(data: TorchWriterData): { type: string; size: number } {
  if (data instanceof Float32Array) return { type: "FloatStorage", size: 4 };
  if (data instanceof BigInt64Array) return { type: "LongStorage", size: 8 };
  if (data instanceof Uint8Array) return { type: "ByteStorage", size: 1 };
  throw new Error("torch_writer: tensor data must be a Float32Array, BigInt64Array or Uint8Array");
}

function contiguousStride(shape: number[]): number[] {
  const stride = new Array<number>(shape.length);
  let s = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    stride[d] = s;
    s *= shape[d];
  }
  return stride;
}

/** Builds `data.pkl` and the list of storages for a state dict. */
function pickleState(state: TorchWriterState, metadata: boolean): { pkl: Uint8Array; storages: Storage[] } {
  const entries = state instanceof Map ? [...state] : Object.entries(state);
  const p = new Pickler().u8(OP.PROTO, 2).emptyOrderedDict();
  const storages: Storage[] = [];
  const written = new Map<string, { storage: Storage; shape: number[] }>();
  if (entries.length > 0) p.u8(OP.MARK);
  for (const [name, value] of entries) {
    if (written.has(name)) throw new Error(`torch_writer: duplicate tensor name ${name}`);
    let storage: Storage, shape: number[], stride: number[] | undefined, offset = 0;
    if ("tiedTo" in value || "viewOf" in value) {
      const of = "tiedTo" in value ? value.tiedTo : value.viewOf;
      const src = written.get(of);
      if (!src) throw new Error(`torch_writer: ${name} refers to ${of}, which is not written before it`);
      ({ storage, shape } = src);
      if ("viewOf" in value) ({ shape, stride, offset = 0 } = value);
    } else {
      shape = [...value.shape];
      const numel = shape.reduce((a, b) => a * b, 1);
      if (shape.some((d) => !Number.isInteger(d) || d < 0) || numel !== value.data.length) {
        throw new Error(`torch_writer: ${name} has ${value.data.length} elements, shape [${shape}] needs ${numel}`);
      }
      const { type } = storageType(value.data);
      const d = value.data;
      storage = {
        key: String(storages.length),
        type,
        numel,
        bytes: new Uint8Array(d.buffer, d.byteOffset, d.byteLength),
      };
      storages.push(storage);
    }
    written.set(name, { storage, shape });
    p.str(name).global("torch._utils", "_rebuild_tensor_v2").u8(OP.MARK);
    p.u8(OP.MARK).str("storage").global("torch", storage.type).str(storage.key).str("cpu").int(storage.numel);
    p.u8(OP.TUPLE, OP.BINPERSID).int(offset).tuple(shape).tuple(stride ?? contiguousStride(shape)).u8(OP.NEWFALSE);
    p.emptyOrderedDict().u8(OP.TUPLE, OP.REDUCE);
  }
  if (entries.length > 0) p.u8(OP.SETITEMS);
  if (metadata) {
    // state_dict()._metadata = OrderedDict({"": {"version": 1}}) set through BUILD's state dict.
    p.u8(OP.EMPTY_DICT).str("_metadata").emptyOrderedDict();
    p.u8(OP.MARK).str("").u8(OP.EMPTY_DICT).str("version").int(1).u8(OP.SETITEM, OP.SETITEMS);
    p.u8(OP.SETITEM, OP.BUILD);
  }
  return { pkl: p.u8(OP.STOP).bytes(), storages };
}

let crcTables: Uint32Array[] | undefined;

/** CRC-32 (IEEE, as in zip), slicing-by-8 so that hundreds of megabytes take about a second. */
export function crc32Fast(bytes: Uint8Array): number {
  if (!crcTables) {
    crcTables = Array.from({ length: 8 }, () => new Uint32Array(256));
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTables[0][n] = c >>> 0;
    }
    for (let n = 0; n < 256; n++) {
      for (let t = 1; t < 8; t++) {
        crcTables[t][n] = (crcTables[0][crcTables[t - 1][n] & 0xff] ^ (crcTables[t - 1][n] >>> 8)) >>> 0;
      }
    }
  }
  const [t0, t1, t2, t3, t4, t5, t6, t7] = crcTables;
  let c = 0xffffffff;
  let i = 0;
  const n = bytes.length;
  for (; i + 8 <= n; i += 8) {
    const a = (c ^ (bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) | (bytes[i + 3] << 24))) >>> 0;
    c = t7[a & 0xff] ^ t6[(a >>> 8) & 0xff] ^ t5[(a >>> 16) & 0xff] ^ t4[a >>> 24] ^
      t3[bytes[i + 4]] ^ t2[bytes[i + 5]] ^ t1[bytes[i + 6]] ^ t0[bytes[i + 7]];
  }
  for (; i < n; i++) c = t0[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

type ZipFile = { name: string; data: Uint8Array; raw?: TorchWriterRawEntry };

/** Yields the zip file as a sequence of chunks (storage data is yielded as views, never copied). */
function* zipChunks(files: ZipFile[]): Generator<Uint8Array> {
  const central = new Bytes();
  let offset = 0;
  for (const f of files) {
    const name = enc.encode(f.name);
    const stored = f.raw?.stored ?? f.data;
    const { method = 0, size = stored.length, crc = crc32Fast(stored) } = f.raw ?? {};
    // Pad the local header with an extra field so the data starts on a 64-byte boundary (as PyTorch does).
    const pad = (ALIGN - ((offset + 30 + name.length + 4) % ALIGN)) % ALIGN;
    const local = new Bytes().u32(0x04034b50).u16(20).u16(0).u16(method).u16(0).u16(0x21).u32(crc);
    local.u32(stored.length).u32(size).u16(name.length).u16(4 + pad).raw(name);
    local.u16(0x4246).u16(pad).raw(new Uint8Array(pad).fill(0x5a)); // "FB" extra field, 'Z' padding
    if (offset + local.length + stored.length > 0xffffffff || size > 0xfffffffe) {
      throw new Error("torch_writer: checkpoints of 4 GiB or more need ZIP64, which this writer does not write");
    }
    central.u32(0x02014b50).u16(20).u16(20).u16(0).u16(method).u16(0).u16(0x21).u32(crc);
    central.u32(stored.length).u32(size).u16(name.length).u16(0).u16(0).u16(0).u16(0).u32(0);
    central.u32(offset).raw(name);
    yield local.bytes();
    yield stored;
    offset += local.length + stored.length;
  }
  const eocd = new Bytes().u32(0x06054b50).u16(0).u16(0).u16(files.length).u16(files.length);
  eocd.u32(central.length).u32(offset).u16(0);
  yield central.bytes();
  yield eocd.bytes();
}

function archiveFiles(state: TorchWriterState, options: TorchWriterOptions): ZipFile[] {
  const dir = options.archiveName ?? "archive";
  const { pkl, storages } = pickleState(state, options.metadata ?? true);
  const files = [
    { name: "data.pkl", data: pkl },
    { name: "byteorder", data: enc.encode("little") },
    ...storages.map((s) => ({ name: `data/${s.key}`, data: s.bytes })),
    { name: "version", data: enc.encode("3\n") },
  ];
  return files.map((f) => ({ name: `${dir}/${f.name}`, data: f.data, raw: options.raw?.[f.name] }));
}

/**
 * A raw DEFLATE stream (one dynamic-Huffman block) that inflates to `n` zero bytes, about `n / 1032` bytes long:
 * a literal 0, then 258-byte copies at distance 1 that take two bits each, then literals for the rest.
 */
export function deflateZeros(n: number): Uint8Array {
  if (!Number.isSafeInteger(n) || n < 1) throw new Error(`deflateZeros: bad length ${n}`);
  const matches = Math.floor((n - 1) / 258), literals = 1 + (n - 1) % 258;
  const out = new Uint8Array(Math.ceil((200 + 2 * matches + 2 * literals) / 8) + 1);
  let bit = 0;
  const put = (v: number, len: number) => { // fields, least significant bit first
    for (let i = 0; i < len; i++, bit++) if ((v >> i) & 1) out[bit >> 3] |= 1 << (bit & 7);
  };
  const code = (v: number, len: number) => { // Huffman codes, most significant bit first
    for (let i = len - 1; i >= 0; i--, bit++) if ((v >> i) & 1) out[bit >> 3] |= 1 << (bit & 7);
  };
  put(1, 1), put(2, 2); // final block, dynamic Huffman
  put(29, 5), put(1, 5), put(14, 4); // 286 literal/length codes, 2 distance codes, 18 code-length codes
  // Code-length code lengths in the format's order 16 17 18 0 8 7 9 6 10 5 11 4 12 3 13 2 14 1: 18→1, 2→2, 1→2,
  // so 18 is "0", 1 is "10" and 2 is "11".
  for (const len of [0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 2]) put(len, 3);
  const zeros = (k: number) => (code(0, 1), put(k - 11, 7)); // code 18: a run of 11..138 zero lengths
  // Literal 0 and end-of-block get 2 bits ("10", "11"), length 285 (258 bytes) 1 bit ("0"); distances 0, 1: 1 bit.
  code(3, 2), zeros(138), zeros(117), code(3, 2), zeros(28), code(2, 2), code(2, 2), code(2, 2);
  code(2, 2); // literal 0
  bit += 2 * matches; // each copy is length code "0" plus distance code "0" (distance 1): all zero bits
  for (let i = 1; i < literals; i++) code(2, 2);
  code(3, 2); // end of block
  return out.subarray(0, (bit + 7) >> 3);
}

/**
 * The bytes of a PyTorch zip checkpoint holding `state` (names in order; see {@link TorchWriterTie}).
 * @param state Tensors by name.
 * @param options Archive folder name and `_metadata`.
 * @returns The whole file in memory.
 */
export function torchCheckpointBytes(state: TorchWriterState, options: TorchWriterOptions = {}): Uint8Array {
  const chunks = [...zipChunks(archiveFiles(state, options))];
  const out = new Uint8Array(chunks.reduce((a, c) => a + c.length, 0));
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}

/**
 * Writes a PyTorch zip checkpoint to `path`, streaming the storages (no second copy of large state dicts).
 * @param path Destination file (created or truncated).
 * @param state Tensors by name.
 * @param options Archive folder name and `_metadata`.
 */
export async function writeTorchCheckpoint(
  path: string | URL,
  state: TorchWriterState,
  options: TorchWriterOptions = {},
): Promise<void> {
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    for (const chunk of zipChunks(archiveFiles(state, options))) {
      for (let o = 0; o < chunk.length;) o += await file.write(chunk.subarray(o));
    }
  } finally {
    file.close();
  }
}
