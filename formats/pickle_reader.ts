/**
 * Bounds-checked reading of a pickle's bytes: fixed-size integers and floats, length-prefixed byte strings,
 * UTF-8 text and newline-terminated lines, plus the decoders of the integer literals that opcodes carry.
 * @module
 */

import { PickleError, printable } from "./pickle_values.ts";

const utf8 = new TextDecoder("utf-8", { fatal: true });
/** Longest `LONG1`/`LONG4` integer accepted, in bytes. */
const MAX_LONG_BYTES = 256;

/** A cursor over pickle bytes; every read checks that the bytes are there and throws a {@link PickleError} if not. */
export class PickleReader {
  /** Offset of the next byte to read. */
  pos: number;
  private readonly view: DataView;

  /** Creates a cursor over `bytes` starting at offset `start`. */
  constructor(readonly bytes: Uint8Array, start: number) {
    this.pos = start;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** Claims the next `n` bytes and returns the offset of the first one. */
  need(n: number): number {
    if (!Number.isSafeInteger(n) || n < 0 || n > this.bytes.length - this.pos) {
      throw new PickleError(
        `truncated pickle: need ${n} bytes at offset ${this.pos}, ${this.bytes.length - this.pos} left`,
      );
    }
    const p = this.pos;
    this.pos += n;
    return p;
  }

  /** An unsigned byte. */
  u8(): number {
    return this.bytes[this.need(1)];
  }

  /** A little-endian uint16. */
  u16(): number {
    return this.view.getUint16(this.need(2), true);
  }

  /** A little-endian uint32. */
  u32(): number {
    return this.view.getUint32(this.need(4), true);
  }

  /** A little-endian int32. */
  i32(): number {
    return this.view.getInt32(this.need(4), true);
  }

  /** A little-endian uint64 that must be a safe integer (a length). */
  u64(): number {
    const p = this.need(8);
    const v = this.view.getUint32(p, true) + this.view.getUint32(p + 4, true) * 2 ** 32;
    if (!Number.isSafeInteger(v)) throw new PickleError(`length ${v} at offset ${p} is too large`);
    return v;
  }

  /** A big-endian float64 (`BINFLOAT`). */
  f64be(): number {
    return this.view.getFloat64(this.need(8), false);
  }

  /** A view of the next `n` bytes (not a copy). */
  take(n: number): Uint8Array {
    const p = this.need(n);
    return this.bytes.subarray(p, p + n);
  }

  /** The next `n` bytes decoded as strict UTF-8. */
  text(n: number): string {
    const b = this.take(n);
    try {
      return utf8.decode(b);
    } catch {
      throw new PickleError(`invalid UTF-8 string at offset ${this.pos - n}`);
    }
  }

  /** The text up to the next newline, which is consumed but not returned. */
  line(): string {
    const end = this.bytes.indexOf(0x0a, this.pos);
    if (end < 0) throw new PickleError(`truncated pickle: unterminated line at offset ${this.pos}`);
    const s = this.text(end - this.pos);
    this.pos++;
    return s;
  }
}

/** Narrows a bigint to a number when it is a safe integer. */
function narrow(v: bigint): number | bigint {
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

/** Decodes a little-endian two's-complement integer; a number when safe, otherwise a bigint. */
export function decodeLong(b: Uint8Array): number | bigint {
  if (b.length === 0) return 0;
  if (b.length > MAX_LONG_BYTES) throw new PickleError(`integer of ${b.length} bytes is too large`);
  let hex = "";
  for (let i = b.length - 1; i >= 0; i--) hex += b[i].toString(16).padStart(2, "0");
  let v = BigInt("0x" + hex);
  if (b[b.length - 1] & 0x80) v -= 1n << BigInt(8 * b.length);
  return narrow(v);
}

/** Parses a decimal integer literal of at most 400 digits; `what` names it in the error. */
export function parseDecimal(s: string, what: string): number | bigint {
  if (!/^[-+]?\d{1,400}$/.test(s)) throw new PickleError(`invalid ${what} literal "${printable(s)}"`);
  return narrow(BigInt(s));
}

/** Parses the decimal memo index of a text `PUT`/`GET`. */
export function memoIndex(s: string): number {
  const v = parseDecimal(s, "memo index");
  if (typeof v !== "number" || v < 0) throw new PickleError(`invalid memo index "${printable(s)}"`);
  return v;
}
