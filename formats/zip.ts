/**
 * A minimal, bounds-checked ZIP archive reader: central directory (with ZIP64), STORED and DEFLATE entries,
 * CRC-32 verification. Enough for PyTorch's zip checkpoints; encryption and multi-disk archives are rejected.
 *
 * DEFLATE entries are inflated in small pieces straight into one buffer of the entry's declared size, so an entry
 * that inflates to more than it declares fails as soon as it overflows, and nothing is allocated for a declared
 * size beyond what DEFLATE can produce from the stored bytes ({@link MAX_DEFLATE_RATIO}) or beyond the caller's limit.
 * @module
 */

import { printable } from "./pickle.ts";

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
  /** Refuse (before allocating anything) an entry whose uncompressed size is larger than this many bytes. */
  maxBytes?: number;
}

/** Largest output per input byte that DEFLATE can produce (258-byte matches in 2 bits): about 1032 to 1. */
export const MAX_DEFLATE_RATIO = 1032;
/** Bytes of output the inflater produces per step (each is copied into the entry's buffer, then dropped). */
const INFLATE_CHUNK = 65536;

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const names = new TextDecoder("utf-8");

let crcTables: Uint32Array | undefined;

/** CRC-32 (IEEE 802.3, as used by ZIP) of `bytes`, continuing from `crc` (default 0); eight bytes per step. */
export function crc32(bytes: Uint8Array, crc = 0): number {
  if (!crcTables) {
    // Table k maps a byte to the CRC of that byte followed by k zero bytes.
    crcTables = new Uint32Array(8 * 256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTables[n] = c >>> 0;
    }
    for (let i = 256; i < 8 * 256; i++) {
      crcTables[i] = crcTables[crcTables[i - 256] & 0xff] ^ (crcTables[i - 256] >>> 8);
    }
  }
  const t = crcTables;
  let c = ~crc;
  let i = 0;
  for (const n8 = bytes.length - 8; i <= n8; i += 8) {
    const a = c ^ (bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) | (bytes[i + 3] << 24));
    c = t[1792 + (a & 0xff)] ^ t[1536 + ((a >>> 8) & 0xff)] ^ t[1280 + ((a >>> 16) & 0xff)] ^ t[1024 + (a >>> 24)] ^
      t[768 + bytes[i + 4]] ^ t[512 + bytes[i + 5]] ^ t[256 + bytes[i + 6]] ^ t[bytes[i + 7]];
  }
  for (; i < bytes.length; i++) c = t[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

/** Whether `bytes` starts like a ZIP archive (a local file header or an empty archive's end record). */
export function isZipArchive(bytes: Uint8Array): boolean {
  if (bytes.length < 4) return false;
  const sig = (bytes[0] | (bytes[1] << 8) | (bytes[2] << 16) | (bytes[3] << 24)) >>> 0;
  return sig === SIG_LOCAL || sig === SIG_EOCD;
}

/** Where an entry's bytes are: sizes and local header offset, possibly replaced by ZIP64 extended information. */
interface EntryExtent {
  compressedSize: number;
  uncompressedSize: number;
  localHeader: number;
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
    const directory = this.findDirectory();
    const cdEnd = directory.offset + directory.size;
    if (cdEnd > bytes.length) throw new ZipError("central directory lies outside the file (truncated?)");
    if (directory.count * 46 > directory.size) {
      throw new ZipError(`central directory too small for ${directory.count} entries`);
    }
    let p = directory.offset;
    for (let i = 0; i < directory.count; i++) p = this.readDirectoryEntry(p, cdEnd);
  }

  /**
   * The uncompressed bytes of entry `name`: a view into the archive for STORED entries, otherwise one new buffer
   * of exactly the declared uncompressed size (nothing else of that size is allocated on the way).
   * @throws {ZipError} when the entry is missing, corrupt, larger than `options.maxBytes` or than DEFLATE can produce
   * from its stored bytes, inflates to another size than it declares, or fails its CRC check.
   */
  async read(name: string, options: ZipReadOptions = {}): Promise<Uint8Array> {
    const e = this.entries.get(name);
    if (!e) throw new ZipError(`missing entry ${printable(name)}`);
    this.checkSize(e, options.maxBytes);
    const raw = this.bytes.subarray(e.dataOffset, e.dataOffset + e.compressedSize);
    const data = e.method === 0 ? raw : await inflateRaw(raw, e.uncompressedSize, printable(e.name));
    if (options.verifyCrc !== false && crc32(data) !== e.crc32) {
      throw new ZipError(`entry ${printable(e.name)}: CRC-32 mismatch`);
    }
    return data;
  }

  /**
   * Throws unless entry `e` can be read within `maxBytes` (default unlimited) and its declared size is one that
   * its stored bytes can really inflate to; allocates nothing.
   * @throws {ZipError} naming the entry, its sizes and the bound it breaks.
   */
  checkSize(e: ZipEntry, maxBytes = Infinity): void {
    const size = e.uncompressedSize;
    if (size > maxBytes) {
      throw new ZipError(
        `entry ${printable(e.name)}: uncompressed size ${size} bytes is more than the limit of ${maxBytes}`,
      );
    }
    if (e.method === 8 && size > e.compressedSize * MAX_DEFLATE_RATIO + 1024) {
      throw new ZipError(
        `entry ${printable(e.name)}: declares ${size} bytes from ${e.compressedSize} compressed bytes, ` +
          `more than DEFLATE can produce (at most ${MAX_DEFLATE_RATIO}:1)`,
      );
    }
  }

  /** Entry count, size and offset of the central directory, from the end record or its ZIP64 successor. */
  private findDirectory(): { count: number; size: number; offset: number } {
    const eocd = this.findEndRecord();
    let count = this.u16(eocd + 10);
    let size = this.u32(eocd + 12);
    let offset = this.u32(eocd + 16);
    if (this.u16(eocd + 4) !== 0 || this.u16(eocd + 6) !== 0) {
      throw new ZipError("multi-disk archives are not supported");
    }
    if (eocd >= 20 && this.u32(eocd - 20) === SIG_ZIP64_LOCATOR) {
      const z = this.u64(eocd - 12);
      if (this.u32(z) !== SIG_ZIP64_EOCD) throw new ZipError(`bad ZIP64 end record at offset ${z}`);
      count = this.u64(z + 32);
      size = this.u64(z + 40);
      offset = this.u64(z + 48);
    }
    return { count, size, offset };
  }

  /** Reads the central directory entry at `p` (the directory ends at `cdEnd`); returns the next entry's offset. */
  private readDirectoryEntry(p: number, cdEnd: number): number {
    if (p + 46 > cdEnd || this.u32(p) !== SIG_CENTRAL) throw new ZipError(`bad central directory entry at ${p}`);
    const nameLen = this.u16(p + 28);
    const extraLen = this.u16(p + 30);
    const next = p + 46 + nameLen + extraLen + this.u16(p + 32);
    if (next > cdEnd) throw new ZipError(`central directory entry at ${p} overruns the directory`);
    const name = names.decode(this.bytes.subarray(p + 46, p + 46 + nameLen));
    const extent: EntryExtent = {
      compressedSize: this.u32(p + 20),
      uncompressedSize: this.u32(p + 24),
      localHeader: this.u32(p + 42),
    };
    this.readExtraFields(p + 46 + nameLen, extraLen, extent, printable(name));
    this.addEntry(name, this.u16(p + 8), this.u16(p + 10), this.u32(p + 16), extent);
    return next;
  }

  /** Applies the ZIP64 extended information among the `length` bytes of extra fields at `start` to `extent`. */
  private readExtraFields(start: number, length: number, extent: EntryExtent, shown: string): void {
    for (let q = start, end = start + length; q + 4 <= end;) {
      const id = this.u16(q);
      const size = this.u16(q + 2);
      if (q + 4 + size > end) throw new ZipError(`entry ${shown}: bad extra field`);
      if (id === 1) this.readZip64Field(q + 4, q + 4 + size, extent, shown);
      q += 4 + size;
    }
  }

  /** ZIP64 extended information (`start`..`end`): 8-byte values, only for the 32-bit fields that overflowed. */
  private readZip64Field(start: number, end: number, extent: EntryExtent, shown: string): void {
    let f = start;
    if (extent.uncompressedSize === 0xffffffff) {
      extent.uncompressedSize = this.zip64Value(f, end, shown);
      f += 8;
    }
    if (extent.compressedSize === 0xffffffff) {
      extent.compressedSize = this.zip64Value(f, end, shown);
      f += 8;
    }
    if (extent.localHeader === 0xffffffff) extent.localHeader = this.zip64Value(f, end, shown);
  }

  /** The 8-byte value at `f` of a ZIP64 extra field that ends at `end`. */
  private zip64Value(f: number, end: number, shown: string): number {
    if (f + 8 > end) throw new ZipError(`entry ${shown}: short ZIP64 extra field`);
    return this.u64(f);
  }

  /** Validates an entry (flags, method, sizes, local header) and adds it to {@link entries}. */
  private addEntry(name: string, flags: number, method: number, crc: number, extent: EntryExtent): void {
    const shown = printable(name);
    const { compressedSize, uncompressedSize, localHeader: local } = extent;
    if (flags & 1) throw new ZipError(`entry ${shown} is encrypted`);
    if (method !== 0 && method !== 8) {
      throw new ZipError(`entry ${shown} uses unsupported compression method ${method}`);
    }
    if (method === 0 && compressedSize !== uncompressedSize) throw new ZipError(`entry ${shown}: size mismatch`);
    if (local + 30 > this.bytes.length || this.u32(local) !== SIG_LOCAL) {
      throw new ZipError(`entry ${shown}: bad local header at offset ${local}`);
    }
    const dataOffset = local + 30 + this.u16(local + 26) + this.u16(local + 28);
    if (dataOffset + compressedSize > this.bytes.length) {
      throw new ZipError(`entry ${shown}: data lies outside the file`);
    }
    if (this.entries.has(name)) throw new ZipError(`duplicate entry ${shown}`);
    this.entries.set(name, { name, method, crc32: crc, compressedSize, uncompressedSize, dataOffset });
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

/**
 * Inflates raw DEFLATE `data` into one buffer of `size` bytes, copying each {@link INFLATE_CHUNK}-byte piece of
 * output into it as it comes, and stops the inflater as soon as the output would overflow the buffer. `node:zlib` is
 * imported here, on first use, so that the module also loads where there is none (a browser bundle).
 */
async function inflateRaw(data: Uint8Array, size: number, name: string): Promise<Uint8Array> {
  const { createInflateRaw } = await import("node:zlib");
  const out = new Uint8Array(size);
  let total = 0, settled = false;
  return new Promise((resolve, reject) => {
    const inflater = createInflateRaw({ chunkSize: INFLATE_CHUNK });
    const fail = (why: string) => {
      if (settled) return;
      settled = true;
      inflater.destroy();
      reject(new ZipError(`entry ${name}: ${why}`));
    };
    inflater.on("data", (chunk: Uint8Array) => {
      if (settled) return;
      if (chunk.length > size - total) return fail(`inflates to more than its declared ${size} bytes`);
      out.set(chunk, total);
      total += chunk.length;
    });
    inflater.on("error", (e: Error) => fail(`corrupt DEFLATE data (${printable(e.message)})`));
    inflater.on("end", () => {
      if (total !== size) return fail(`inflated to ${total} bytes, expected ${size}`);
      settled = true;
      resolve(out);
    });
    inflater.end(data);
  });
}
