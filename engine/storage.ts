/**
 * A tensor's elements on the GPU: a reference-counted buffer from the runtime's pool, or a view into one.
 * @module
 */

/** Host memory standing in for a GPU buffer on the CPU backend. */
export class HostBuffer {
  /** The bytes (`size` usable ones from `offset` on, plus up to 63 of padding). */
  readonly data: ArrayBuffer;
  /** Where the usable bytes start in `data`: on a 64-byte boundary in memory (0 where addresses cannot be read). */
  readonly offset: number;
  /** Allocates `size` bytes starting on a 64-byte boundary (cache lines; SIMD loads in the BLAS). */
  constructor(readonly size: number) {
    this.data = new ArrayBuffer(size + HOST_ALIGNMENT);
    this.offset = paddingToAlign(this.data);
  }
}

/** Alignment of the CPU backend's host buffers, in bytes. */
export const HOST_ALIGNMENT = 64;

/** Bytes from the start of `buffer` to the next 64-byte-aligned address; 0 where the address is unknown (no FFI). */
function paddingToAlign(buffer: ArrayBuffer): number {
  try {
    const address = Deno.UnsafePointer.value(Deno.UnsafePointer.of(buffer));
    return Number((BigInt(HOST_ALIGNMENT) - BigInt(address) % BigInt(HOST_ALIGNMENT)) % BigInt(HOST_ALIGNMENT));
  } catch {
    return 0;
  }
}

/** A storage's buffer: a GPU buffer, or host memory on the CPU backend. */
export type StorageBuffer = GPUBuffer | HostBuffer;

/** Where a storage's buffer returns when its last owner lets go (the runtime). */
export interface BufferPool {
  /** Takes back a buffer no storage uses any more. */
  recycle(buffer: StorageBuffer): void;
}

/** Reference-counted GPU buffer holding a tensor's elements. */
export class Storage {
  /** Number of owners (tensors and saved autograd views). */
  refs = 1;
  /** Wraps a buffer (one owner); use `Runtime.alloc` or {@linkcode Storage.view}. */
  constructor(
    /** The pooled buffer (may be larger than `bytes`). */
    readonly buffer: StorageBuffer,
    /** Bytes in use. */
    readonly bytes: number,
    private readonly pool: BufferPool,
    /** Byte offset into `buffer` (non-zero for views into a larger buffer; a multiple of 256). */
    readonly byteOffset = 0,
    /** The storage this one is a view of (kept alive while the view lives). */
    readonly parent: Storage | null = null,
  ) {}
  /** Adds an owner. */
  retain(): this {
    if (this.refs <= 0) throw new Error("use of a disposed tensor");
    this.refs++;
    return this;
  }
  /** Drops an owner; the buffer returns to the pool when none remain. */
  release(): void {
    if (this.refs <= 0) return;
    if (--this.refs === 0) {
      if (this.parent) this.parent.release();
      else this.pool.recycle(this.buffer);
    }
  }

  /** A view of `bytes` bytes starting at `byteOffset` (must be 256-byte aligned) within this storage. */
  view(byteOffset: number, bytes: number): Storage {
    if (byteOffset % 256 !== 0) throw new Error(`storage view offset ${byteOffset} is not a multiple of 256`);
    if (byteOffset + bytes > this.bytes) throw new Error("storage view out of bounds");
    this.retain();
    return new Storage(this.buffer, bytes, this.pool, this.byteOffset + byteOffset, this);
  }
}
