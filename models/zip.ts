/**
 * A minimal, bounds-checked ZIP archive reader: central directory (with ZIP64), STORED and DEFLATE entries,
 * CRC-32 verification. Enough for PyTorch's zip checkpoints; encryption and multi-disk archives are rejected.
 * @module
 */

/** Thrown for malformed, truncated or unsupported ZIP archives. */
export class ZipError extends Error {
  /** Creates the error with a human-readable reason. */
  constructor(message: string) {
    super(message);
    this.name = "ZipError";
  }
}

/** One file in the archive, as described by the central directory. */
export interface ZipEntry {
  /** Path inside the archive. */
  name: string;
  /** Compression method: 0 (STORED) or 8 (DEFLATE). */
  method: number;
  /** CRC-32 of the uncompressed bytes. */
  crc32: number;
  /** Size of the stored (possibly compressed) bytes. */
  compressedSize: number;
  /** Size after decompression. */
  uncompressedSize: number;
  /** Offset of the stored bytes in the archive. */
  dataOffset: number;
}

/** Options for {@link ZipReader.read}. */
export interface ZipReadOptions {
  /** Check the entry's CRC-32 (default true). */
  verifyCrc?: boolean;
}

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const names = new TextDecoder("utf-8");

let crcTable: Uint32Array | undefined;

/** CRC-32 (IEEE 802.3, as used by ZIP) of `bytes`, continuing from `crc` (default 0). */
export function crc32(bytes: Uint8Array, crc = 0): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  const t = crcTable;
  let c = ~crc;
  for (let i = 0; i < bytes.length; i++) c = t[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

/** Whether `bytes` starts like a ZIP archive (a local file header or an empty archive's end record). */
export function isZipArchive(bytes: Uint8Array): boolean {
  if (bytes.length < 4) return false;
  const sig = (bytes[0] | (bytes[1] << 8) | (bytes[2] << 16) | (bytes[3] << 24)) >>> 0;
  return sig === SIG_LOCAL || sig === SIG_EOCD;
}

/** Reads entries of an in-memory ZIP archive; the constructor parses and validates the directory. */
export class ZipReader {
  /** Entries by name, in central-directory order. */
  readonly entries: Map<string, ZipEntry> = new Map();
  private readonly view: DataView;

  /**
   * Parses the central directory of `bytes`.
   * @throws {ZipError} when the archive is malformed, truncated, encrypted or uses unsupported features.
   */
  constructor(private readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const eocd = this.findEndRecord();
    let count = this.u16(eocd + 10);
    let cdSize = this.u32(eocd + 12);
    let cdOffset = this.u32(eocd + 16);
    if (this.u16(eocd + 4) !== 0 || this.u16(eocd + 6) !== 0) {
      throw new ZipError("multi-disk archives are not supported");
    }
    if (eocd >= 20 && this.u32(eocd - 20) === SIG_ZIP64_LOCATOR) {
      const z = this.u64(eocd - 12);
      if (this.u32(z) !== SIG_ZIP64_EOCD) throw new ZipError(`bad ZIP64 end record at offset ${z}`);
      count = this.u64(z + 32);
      cdSize = this.u64(z + 40);
      cdOffset = this.u64(z + 48);
    }
    const cdEnd = cdOffset + cdSize;
    if (cdEnd > bytes.length) throw new ZipError("central directory lies outside the file (truncated?)");
    if (count * 46 > cdSize) throw new ZipError(`central directory too small for ${count} entries`);
    let p = cdOffset;
    for (let i = 0; i < count; i++) {
      if (p + 46 > cdEnd || this.u32(p) !== SIG_CENTRAL) throw new ZipError(`bad central directory entry at ${p}`);
      const flags = this.u16(p + 8);
      const method = this.u16(p + 10);
      const crc = this.u32(p + 16);
      let compressedSize = this.u32(p + 20);
      let uncompressedSize = this.u32(p + 24);
      const nameLen = this.u16(p + 28);
      const extraLen = this.u16(p + 30);
      const commentLen = this.u16(p + 32);
      let local = this.u32(p + 42);
      const next = p + 46 + nameLen + extraLen + commentLen;
      if (next > cdEnd) throw new ZipError(`central directory entry at ${p} overruns the directory`);
      const name = names.decode(this.bytes.subarray(p + 46, p + 46 + nameLen));
      // ZIP64 extended information: 8-byte fields present only for the 32-bit fields that overflowed.
      for (let q = p + 46 + nameLen, end = q + extraLen; q + 4 <= end;) {
        const id = this.u16(q);
        const size = this.u16(q + 2);
        if (q + 4 + size > end) throw new ZipError(`entry ${name}: bad extra field`);
        if (id === 1) {
          let f = q + 4;
          const field = () => {
            if (f + 8 > q + 4 + size) throw new ZipError(`entry ${name}: short ZIP64 extra field`);
            f += 8;
            return this.u64(f - 8);
          };
          if (uncompressedSize === 0xffffffff) uncompressedSize = field();
          if (compressedSize === 0xffffffff) compressedSize = field();
          if (local === 0xffffffff) local = field();
        }
        q += 4 + size;
      }
      if (flags & 1) throw new ZipError(`entry ${name} is encrypted`);
      if (method !== 0 && method !== 8) {
        throw new ZipError(`entry ${name} uses unsupported compression method ${method}`);
      }
      if (method === 0 && compressedSize !== uncompressedSize) throw new ZipError(`entry ${name}: size mismatch`);
      if (local + 30 > bytes.length || this.u32(local) !== SIG_LOCAL) {
        throw new ZipError(`entry ${name}: bad local header at offset ${local}`);
      }
      const dataOffset = local + 30 + this.u16(local + 26) + this.u16(local + 28);
      if (dataOffset + compressedSize > bytes.length) throw new ZipError(`entry ${name}: data lies outside the file`);
      if (this.entries.has(name)) throw new ZipError(`duplicate entry ${name}`);
      this.entries.set(name, { name, method, crc32: crc, compressedSize, uncompressedSize, dataOffset });
      p = next;
    }
  }

  /**
   * The uncompressed bytes of entry `name` (a view into the archive for STORED entries).
   * @throws {ZipError} when the entry is missing, corrupt, or fails its CRC check.
   */
  async read(name: string, options: ZipReadOptions = {}): Promise<Uint8Array> {
    const e = this.entries.get(name);
    if (!e) throw new ZipError(`missing entry ${name}`);
    const raw = this.bytes.subarray(e.dataOffset, e.dataOffset + e.compressedSize);
    const data = e.method === 0 ? raw : await inflateRaw(raw, e.uncompressedSize, name);
    if (options.verifyCrc !== false && crc32(data) !== e.crc32) throw new ZipError(`entry ${name}: CRC-32 mismatch`);
    return data;
  }

  /** Offset of the end-of-central-directory record. */
  private findEndRecord(): number {
    const n = this.bytes.length;
    for (let i = n - 22; i >= 0 && i >= n - 22 - 0xffff; i--) {
      if (this.u32(i) === SIG_EOCD && i + 22 + this.u16(i + 20) <= n) return i;
    }
    throw new ZipError("end of central directory not found (not a zip file, or truncated)");
  }
  /** Bounds-checked little-endian uint16 at `p`. */
  private u16(p: number): number {
    if (p < 0 || p + 2 > this.bytes.length) throw new ZipError(`read past end of file at offset ${p}`);
    return this.view.getUint16(p, true);
  }
  /** Bounds-checked little-endian uint32 at `p`. */
  private u32(p: number): number {
    if (p < 0 || p + 4 > this.bytes.length) throw new ZipError(`read past end of file at offset ${p}`);
    return this.view.getUint32(p, true);
  }
  /** Bounds-checked little-endian uint64 at `p`, which must be a safe integer. */
  private u64(p: number): number {
    const v = this.u32(p) + this.u32(p + 4) * 2 ** 32;
    if (!Number.isSafeInteger(v)) throw new ZipError(`64-bit field at offset ${p} is too large`);
    return v;
  }
}

/** Inflates raw DEFLATE data, refusing output longer than `expected` bytes. */
async function inflateRaw(data: Uint8Array, expected: number, name: string): Promise<Uint8Array> {
  const ds = new DecompressionStream("deflate-raw");
  const writer = ds.writable.getWriter();
  writer.write(data.slice()).catch(() => {});
  writer.close().catch(() => {});
  const reader = ds.readable.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > expected) {
        await reader.cancel().catch(() => {});
        throw new ZipError(`entry ${name}: inflates to more than its declared ${expected} bytes`);
      }
      chunks.push(value);
    }
  } catch (e) {
    if (e instanceof ZipError) throw e;
    throw new ZipError(`entry ${name}: corrupt DEFLATE data (${e instanceof Error ? e.message : String(e)})`);
  }
  if (total !== expected) throw new ZipError(`entry ${name}: inflated to ${total} bytes, expected ${expected}`);
  const out = new Uint8Array(total);
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}
