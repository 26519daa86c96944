/**
 * Flat parameters, as in llm.c: {@linkcode createFlatParameters} allocates a model's parameters as views
 * into one large GPU buffer — a few when their total exceeds the device's largest storage binding — each
 * in a 256-byte-aligned slot. Gradients live in a flat buffer of the same layout: backward writes each
 * parameter's gradient into its slot in place ({@linkcode FlatChunk.accumulateGrad}), so that the
 * optimisers update a whole chunk with one dispatch and {@linkcode clipGradNorm} reduces it with one.
 *
 * Memory: a chunk lives as long as any of its parameters (the views own it); the flat gradient buffer is
 * allocated at the first backward that reaches the chunk and lives as long as any gradient view (`zeroGrad`
 * returns it to the pool), so a model used without gradients costs only its parameters.
 * @module
 */

import { grid1d, type Storage } from "./runtime.ts";
import { FILL } from "./kernels/elementwise.ts";
import { GRAD_ACCUMULATE } from "./kernels/optim.ts";
import { check, empty, keep, runtime, Tensor } from "./tensor.ts";

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

/** Records `dst[i] = 0` for i < elements. */
export function zeroFill(dst: Storage, elements: number): void {
  runtime().run(FILL, { n: elements, bits: 0, start: 0, step: 0 }, { y: dst }, grid1d(elements));
}

/** Records `dst[i] += src[i]` for i < elements (shaders/grad_accumulate.wgsl). */
function addInPlace(dst: Storage, src: Storage, elements: number): void {
  runtime().run(GRAD_ACCUMULATE, { n: elements }, { dst, src }, grid1d(elements));
}

/** One flat buffer holding several parameters, and lazily their gradients, each in a 256-byte-aligned slot. */
export class FlatChunk {
  /** The parameters' slots, by increasing offset. */
  readonly slots: FlatSlot[] = [];
  #grad: Storage | null = null;

  /** Wraps a buffer of `bytes` bytes (not owned: the parameter views own it). */
  constructor(
    /** The chunk's buffer (bound whole by the optimiser kernels). */
    readonly storage: Storage,
    /** Bytes in the chunk (a multiple of {@linkcode FLAT_ALIGN}). */
    readonly bytes: number,
  ) {}

  /** Number of f32 elements in the chunk, padding included. */
  get elements(): number {
    return this.bytes / 4;
  }

  /** The flat gradient buffer, or null when no gradient view is alive. Padding is zero. */
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

  #isSlotView(slot: FlatSlot, t: Tensor): boolean {
    const flat = this.grad, s = t.storage;
    return flat !== null && s.parent === flat && s.byteOffset === flat.byteOffset + slot.offset;
  }

  /** True when every slot's gradient is its view of the flat gradient buffer, which then is reduced whole. */
  gradsComplete(): boolean {
    return this.grad !== null && this.slots.every((s) => this.gradAtSlot(s));
  }

  /** A new tensor viewing `slot` in the gradient buffer, allocated (zero-filled) when none is alive. */
  gradView(slot: FlatSlot): Tensor {
    let flat = this.grad;
    const fresh = !flat;
    if (!flat) {
      flat = this.#grad = runtime().alloc(this.bytes);
      zeroFill(flat, this.elements);
    }
    const view = keep(new Tensor(flat.view(slot.offset, slot.param.size * 4), slot.param.shape));
    if (fresh) flat.release(); // the gradient views own the buffer from now on
    return view;
  }

  /**
   * Backward's accumulation into a leaf (disposes `g`): adds `g` in place into the slot's gradient view, or —
   * when the parameter has no gradient there yet — copies it into the slot (plus a gradient set by hand, which
   * is disposed) and makes the view the parameter's `grad`.
   */
  accumulateGrad(slot: FlatSlot, g: Tensor): void {
    const p = slot.param, current = p.grad;
    pendingTargets.delete(slot);
    if (!current && this.#isSlotView(slot, g)) {
      p.grad = keep(g); // written in place by the op's backward (gradTargetOf): nothing to copy
      return;
    }
    if (current && this.gradAtSlot(slot)) addInPlace(current.storage, g.storage, p.size);
    else {
      const view = this.gradView(slot);
      runtime().copy(g.storage, 0, view.storage, 0, p.size * 4);
      if (current) addInPlace(view.storage, current.storage, p.size);
      current?.dispose();
      p.grad = view;
    }
    g.dispose();
  }
}

/**
 * Moves gradients set by hand (`p.grad = t`, not a view of the flat gradient buffer) into the slots `which`:
 * copies each (GPU copies), makes the slot's view the parameter's `grad` and disposes the tensor given. Slots
 * whose parameter has no gradient, or already has it in place, are left alone.
 */
export function adoptGrads(which: Iterable<FlatSlot>): void {
  const todo = [...new Set(which)].filter((s) => s.param.grad && !s.chunk.gradAtSlot(s));
  const given = new Set<Tensor>();
  for (const s of todo) {
    const p = s.param, g = p.grad!, bytes = p.size * 4;
    check(!g.disposed, "adoptGrads", `gradient of parameter${p.name ? ` "${p.name}"` : ""} was disposed`);
    check(g.storage.bytes === bytes, "adoptGrads", `gradient of [${p.shape}] has ${g.storage.bytes} bytes`);
    const view = s.chunk.gradView(s);
    runtime().copy(g.storage, 0, view.storage, 0, bytes);
    given.add(g);
    p.grad = view;
  }
  for (const g of given) g.dispose(); // after the copies: one tensor may be the gradient of two parameters
}

/** The result of {@linkcode createFlatParameters}: the parameters and the chunks holding them. */
export class FlatParameters {
  /** Wraps the parameters and their chunks. */
  constructor(
    /** The parameters, in the order given (zero-size ones are plain tensors, in no chunk). */
    readonly params: readonly Tensor[],
    /** The chunks holding them. */
    readonly chunks: readonly FlatChunk[],
  ) {}

  /** Total bytes of the chunks, padding included. */
  get bytes(): number {
    return this.chunks.reduce((a, c) => a + c.bytes, 0);
  }
}

/** Options of {@linkcode createFlatParameters}. */
export interface FlatOptions {
  /**
   * Largest chunk in bytes (default and maximum: the device's `maxStorageBufferBindingSize`); a parameter
   * larger than this gets a chunk of its own.
   */
  maxChunkBytes?: number;
}

/** One parameter to create: its name, shape and initial values. */
export interface FlatParameterInit {
  /** Name (used in messages and as the model's parameter key). */
  name?: string;
  /** Dimensions. */
  shape: readonly number[];
  /** Initial values (as many as the shape has elements). */
  data: Float32Array;
}

/** Slots whose gradient an op's backward is writing in place (handed out by gradTargetOf, not yet accumulated). */
const pendingTargets = new Set<FlatSlot>();

/**
 * Where a backward may write the gradient of `p` so that no copy follows: a view of `p`'s slot in the flat
 * gradient buffer when `p` is a flat parameter that has no gradient yet (its first contribution of a step), else
 * null. The op must overwrite every element of the view and return it as `p`'s gradient.
 */
export function gradTargetOf(p: Tensor): Tensor | null {
  const slot = flatSlotOf(p);
  if (!slot || !p.requiresGrad || p.grad || pendingTargets.has(slot)) return null;
  pendingTargets.add(slot);
  return slot.chunk.gradView(slot);
}

/** Forgets targets handed out but never accumulated (called when a backward pass ends). */
export function clearGradTargets(): void {
  pendingTargets.clear();
}

/** The flat slot of `p`, or null when `p` is not a flat parameter (or was disposed). */
export function flatSlotOf(p: Tensor): FlatSlot | null {
  const slot = slots.get(p);
  return slot && !p.disposed ? slot : null;
}

/** Splits `sizes` (bytes) greedily into runs of consecutive indices whose aligned total is ≤ `limit`. */
function packGreedily(sizes: readonly number[], limit: number): number[][] {
  const groups: number[][] = [];
  let bytes = Infinity;
  sizes.forEach((n, i) => {
    if (n === 0) return;
    if (bytes + aligned(n) > limit) {
      groups.push([]);
      bytes = 0;
    }
    groups[groups.length - 1].push(i);
    bytes += aligned(n);
  });
  return groups;
}

/**
 * Allocates parameters (f32 leaves requiring grad, kept out of `tidy` scopes) as views of flat chunks: one
 * buffer, or several when the total exceeds the largest storage binding (or `options.maxChunkBytes`), each
 * parameter in a 256-byte-aligned slot and uploaded from `data`. Zero-size parameters get no slot.
 */
export function createFlatParameters(inits: readonly FlatParameterInit[], options: FlatOptions = {}): FlatParameters {
  const rt = runtime();
  const op = "createFlatParameters";
  const max = Math.floor(rt.maxStorageBindingBytes / FLAT_ALIGN) * FLAT_ALIGN;
  const limit = Math.min(options.maxChunkBytes ?? max, max);
  check(Number.isFinite(limit) && limit >= FLAT_ALIGN, op, `maxChunkBytes must be ≥ ${FLAT_ALIGN}, got ${limit}`);
  const sizes = inits.map(({ name, shape, data }) => {
    const n = shape.reduce((a, b) => a * b, 1);
    check(data.length === n, op, `${name ?? "parameter"}: ${data.length} values for shape [${shape}]`);
    return n * 4;
  });
  const params: Tensor[] = inits.map((init) => init.data.length === 0 ? keep(empty(init.shape)) : null!);
  const chunks = packGreedily(sizes, limit).map((group) => {
    const bytes = group.reduce((a, i) => a + aligned(sizes[i]), 0);
    const chunk = new FlatChunk(rt.alloc(bytes), bytes);
    let offset = 0;
    for (const i of group) {
      const view = chunk.storage.view(offset, sizes[i]);
      rt.write(view, inits[i].data);
      params[i] = keep(new Tensor(view, inits[i].shape));
      const slot: FlatSlot = { chunk, offset, param: params[i] };
      chunk.slots.push(slot);
      slots.set(params[i], slot);
      offset += aligned(sizes[i]);
    }
    chunk.storage.release(); // the parameter views own the chunk from now on
    return chunk;
  });
  params.forEach((p, i) => {
    p.requireGrad();
    if (inits[i].name !== undefined) p.name = inits[i].name;
  });
  return new FlatParameters(params, chunks);
}

/**
 * Flat optimiser state (e.g. AdamW's `m` and `v`): one zero-initialised buffer per chunk and name, handed out
 * as per-parameter views of the parameters' slots, so that one dispatch updates a whole chunk's state.
 */
export class FlatStateBuffers {
  #byChunk = new Map<FlatChunk, Map<string, { flat: Storage; used: Set<number> }>>();

  #entry(chunk: FlatChunk, name: string): { flat: Storage; used: Set<number> } {
    let byName = this.#byChunk.get(chunk);
    if (!byName) this.#byChunk.set(chunk, byName = new Map());
    let e = byName.get(name);
    if (!e) {
      e = { flat: runtime().alloc(chunk.bytes), used: new Set() };
      zeroFill(e.flat, chunk.elements);
      byName.set(name, e);
    }
    return e;
  }

  /** The flat buffer `name` of `chunk` (allocated as zeros on first use). */
  buffer(chunk: FlatChunk, name: string): Storage {
    return this.#entry(chunk, name).flat;
  }

  /** A new view of `slot` in buffer `name`; zero-filled when `zero` and a view of the slot was made before. */
  view(slot: FlatSlot, name: string, zero: boolean): Storage {
    const e = this.#entry(slot.chunk, name);
    const view = e.flat.view(slot.offset, slot.param.size * 4);
    if (zero && e.used.has(slot.offset)) zeroFill(view, slot.param.size);
    e.used.add(slot.offset);
    return view;
  }

  /** Releases the flat buffers (views handed out keep their memory alive until disposed). */
  dispose(): void {
    for (const byName of this.#byChunk.values()) for (const e of byName.values()) e.flat.release();
    this.#byChunk.clear();
  }
}
