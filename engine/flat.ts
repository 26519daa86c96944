/**
 * Flat parameter buffers. {@linkcode flattenParameters} packs many parameter tensors into one large GPU
 * buffer — a few when their total exceeds the device's largest storage binding — giving each parameter a
 * 256-byte-aligned slot and re-pointing the parameter tensor at a view of its slot (values, names and
 * autograd fields are unchanged). The optimisers then update every flat parameter of a chunk with one
 * dispatch, and {@linkcode clipGradNorm} reduces a chunk's gradients with one: both first copy the
 * gradients into a flat gradient buffer of the same layout ({@linkcode FlatChunk.gatherGrads}).
 *
 * Memory: a chunk lives as long as any of its parameters (the views own it); the flat gradient buffer
 * lives as long as any gathered gradient (`zeroGrad` returns it to the pool).
 * @module
 */

import { grid1d, type Storage } from "./runtime.ts";
import { check, keep, runtime, Tensor } from "./tensor.ts";
import { zeros } from "./ops/elementwise.ts";

/** Slot alignment in bytes (the storage-binding offset alignment WebGPU guarantees). */
export const FLAT_ALIGN = 256;

/** One parameter's place in a flat chunk. */
export interface FlatSlot {
  /** The chunk. */
  readonly chunk: FlatChunk;
  /** Byte offset of the parameter in the chunk (a multiple of {@linkcode FLAT_ALIGN}). */
  readonly offset: number;
  /** The parameter tensor (a view of its slot). */
  readonly param: Tensor;
}

const slots = new WeakMap<Tensor, FlatSlot>();

function aligned(bytes: number): number {
  return Math.ceil(bytes / FLAT_ALIGN) * FLAT_ALIGN;
}

/** Records `dst[i] = 0` over a storage. */
function zeroFill(s: Storage, elements: number): void {
  runtime().dispatch({ shader: "fill", bindings: ["rw"] }, [s], [elements, 0, 0, 0], grid1d(elements));
}

/** One flat buffer holding several parameters, each in a 256-byte-aligned slot. */
export class FlatChunk {
  /** The parameters' slots, by increasing offset. */
  readonly slots: FlatSlot[] = [];
  #grad: Storage | null = null;
  #gradZeroed = false;

  /** Wraps a buffer of `bytes` bytes (not owned: the parameter views own it). */
  constructor(
    /** The chunk's buffer (bound whole by the flat optimiser kernels). */
    readonly storage: Storage,
    /** Bytes in the chunk (a multiple of {@linkcode FLAT_ALIGN}). */
    readonly bytes: number,
  ) {}

  /** Number of f32 elements in the chunk, padding included. */
  get elements(): number {
    return this.bytes / 4;
  }

  /** The current flat gradient buffer, or null when no gathered gradient is alive. */
  get grad(): Storage | null {
    return this.#grad && this.#grad.refs > 0 ? this.#grad : null;
  }

  /** True when the gradient of `slot`'s parameter is the view of its slot in the flat gradient buffer. */
  gradAtSlot(slot: FlatSlot): boolean {
    const g = slot.param.grad;
    const flat = this.grad;
    if (!g || g.disposed || !flat) return false;
    const s = g.storage;
    return s.parent === flat && s.byteOffset === flat.byteOffset + slot.offset && s.bytes === slot.param.size * 4;
  }

  /**
   * True when the flat gradient buffer holds every slot's gradient and zero padding, so that it can be
   * reduced or scaled as a whole.
   */
  gradsComplete(): boolean {
    return this.#gradZeroed && this.grad !== null && this.slots.every((s) => this.gradAtSlot(s));
  }

  /**
   * Copies the gradients of `which` (slots of this chunk; those without a gradient are skipped) into the
   * flat gradient buffer and re-points each gradient tensor at its slot (GPU copies, no readback; gradients
   * already there are left alone). Allocates the buffer when none is alive — zero-filled when
   * `zeroPadding` (needed to reduce it as a whole). Returns the buffer, or null when no slot has a gradient.
   */
  gatherGrads(which: readonly FlatSlot[], zeroPadding: boolean): Storage | null {
    const todo = [...new Set(which)].filter((s) => s.param.grad && !this.gradAtSlot(s));
    if (todo.length === 0) return this.grad;
    const rt = runtime();
    let flat = this.grad;
    const fresh = !flat;
    if (!flat) {
      flat = this.#grad = rt.alloc(this.bytes);
      this.#gradZeroed = zeroPadding;
      if (zeroPadding) zeroFill(flat, this.elements);
    }
    const claimed = new Set<Tensor>();
    for (const s of todo) {
      const p = s.param, g = p.grad!, bytes = p.size * 4;
      check(!g.disposed, "gatherGrads", `gradient of parameter${p.name ? ` "${p.name}"` : ""} was disposed`);
      check(g.storage.bytes === bytes, "gatherGrads", `gradient of [${p.shape}] has ${g.storage.bytes} bytes`);
      if (g.storage.buffer !== flat.buffer) rt.copy(g.storage, 0, flat, s.offset, bytes);
      else { // already in this buffer (e.g. one gradient tensor shared by two params): through a temporary
        const tmp = rt.alloc(bytes);
        rt.copy(g.storage, 0, tmp, 0, bytes);
        rt.copy(tmp, 0, flat, s.offset, bytes);
        tmp.release();
      }
      const view = flat.view(s.offset, bytes);
      if (claimed.has(g)) p.grad = keep(new Tensor(view, p.shape)); // one gradient tensor shared by two params
      else {
        g.replaceStorage(view);
        claimed.add(g);
      }
    }
    if (fresh) flat.release(); // the gradient views own the buffer from now on
    return flat;
  }
}

/** The result of {@linkcode flattenParameters}: the parameters and the chunks holding them. */
export class FlatParameters {
  /** Wraps the parameters and their chunks. */
  constructor(
    /** The parameters, in the order given (zero-size ones stay as they are). */
    readonly params: readonly Tensor[],
    /** The chunks holding them: chunks the parameters were already in, then the new ones. */
    readonly chunks: readonly FlatChunk[],
  ) {}

  /** Total bytes of the chunks, padding included. */
  get bytes(): number {
    return this.chunks.reduce((a, c) => a + c.bytes, 0);
  }
}

/** Options of {@linkcode flattenParameters}. */
export interface FlattenOptions {
  /**
   * Largest chunk in bytes (default and maximum: the device's `maxStorageBufferBindingSize`); a parameter
   * larger than this gets a chunk of its own.
   */
  maxChunkBytes?: number;
}

/**
 * The flat slot of `p`, or null when `p` is not (or no longer) a view of a flat chunk slot — e.g. it was
 * never flattened, was disposed, or had its storage replaced.
 */
export function flatSlotOf(p: Tensor): FlatSlot | null {
  const slot = slots.get(p);
  if (!slot || p.disposed) return null;
  const s = p.storage;
  const c = slot.chunk.storage;
  return s.parent === c && s.byteOffset === c.byteOffset + slot.offset ? slot : null;
}

/**
 * Packs `params` into flat chunks: allocates one buffer (several when the total exceeds the largest
 * storage binding, or `options.maxChunkBytes`), copies each parameter into a 256-byte-aligned slot on the
 * GPU (no readback) and re-points the parameter tensor at a view of its slot, releasing its old storage.
 * Parameters keep their values, `grad`, `requiresGrad` and names. Idempotent: parameters already flat stay
 * in their chunks (only the others are packed, into new chunks); zero-size parameters are left as they are.
 * Returns the chunks that hold the parameters.
 */
export function flattenParameters(params: Iterable<Tensor>, options: FlattenOptions = {}): FlatParameters {
  const rt = runtime();
  const op = "flattenParameters";
  const list = [...new Set(params)];
  for (const p of list) {
    check(p instanceof Tensor, op, `expected tensors, got ${p}`);
    check(!p.disposed, op, `parameter${p.name ? ` "${p.name}"` : ""} was disposed`);
  }
  const max = Math.floor(rt.maxStorageBindingBytes / FLAT_ALIGN) * FLAT_ALIGN;
  const limit = Math.min(options.maxChunkBytes ?? max, max);
  check(Number.isFinite(limit) && limit >= FLAT_ALIGN, op, `maxChunkBytes must be ≥ ${FLAT_ALIGN}, got ${limit}`);
  const chunks = new Set<FlatChunk>();
  const groups: Tensor[][] = [];
  let bytes = Infinity;
  for (const p of list) {
    const slot = flatSlotOf(p);
    if (slot) chunks.add(slot.chunk);
    if (slot || p.size === 0) continue;
    const b = aligned(p.size * 4);
    if (bytes + b > limit) {
      groups.push([]);
      bytes = 0;
    }
    groups[groups.length - 1].push(p);
    bytes += b;
  }
  for (const group of groups) {
    const total = group.reduce((a, p) => a + aligned(p.size * 4), 0);
    const storage = rt.alloc(total);
    const chunk = new FlatChunk(storage, total);
    let offset = 0;
    for (const p of group) {
      const n = p.size * 4;
      rt.copy(p.storage, 0, storage, offset, n);
      p.replaceStorage(storage.view(offset, n));
      const slot: FlatSlot = { chunk, offset, param: p };
      chunk.slots.push(slot);
      slots.set(p, slot);
      offset += aligned(n);
    }
    storage.release(); // the parameter views own the chunk from now on
    chunks.add(chunk);
  }
  return new FlatParameters(list, [...chunks]);
}

/**
 * Flat optimiser state (e.g. AdamW's `m` and `v`): one zero-initialised buffer per chunk and name, handed out
 * as per-parameter views of the parameters' slots, so that one dispatch updates a whole chunk's state.
 */
export class FlatStateBuffers {
  #byChunk = new Map<FlatChunk, Map<string, { flat: Tensor; used: Set<number> }>>();

  #entry(chunk: FlatChunk, name: string): { flat: Tensor; used: Set<number> } {
    let byName = this.#byChunk.get(chunk);
    if (!byName) this.#byChunk.set(chunk, byName = new Map());
    let e = byName.get(name);
    if (!e) byName.set(name, e = { flat: keep(zeros([chunk.elements])), used: new Set() });
    return e;
  }

  /** The flat buffer `name` of `chunk` (allocated as zeros on first use; kept out of `tidy` scopes). */
  buffer(chunk: FlatChunk, name: string): Storage {
    return this.#entry(chunk, name).flat.storage;
  }

  /** A new view of `slot` in buffer `name`; zero-filled when `zero` and a view of the slot was made before. */
  view(slot: FlatSlot, name: string, zero: boolean): Storage {
    const e = this.#entry(slot.chunk, name);
    const view = e.flat.storage.view(slot.offset, slot.param.size * 4);
    if (zero && e.used.has(slot.offset) && slot.param.size > 0) zeroFill(view, slot.param.size);
    e.used.add(slot.offset);
    return view;
  }

  /** True when `t` is a view of `slot` in buffer `name`. */
  holds(slot: FlatSlot, name: string, t: Tensor): boolean {
    const flat = this.buffer(slot.chunk, name);
    return t.storage.parent === flat && t.storage.byteOffset === flat.byteOffset + slot.offset;
  }

  /** Releases the flat buffers (views handed out keep their memory alive until disposed). */
  dispose(): void {
    for (const byName of this.#byChunk.values()) for (const e of byName.values()) e.flat.dispose();
    this.#byChunk.clear();
  }
}
