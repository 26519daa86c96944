/**
 * The `Tensor` type: a contiguous, row-major block of GPU memory with a shape and dtype, plus the
 * autograd fields (`requiresGrad`, `grad`, `gradFn`). Ops live in `engine/ops/`; the tape walk in
 * `engine/autograd.ts`.
 * @module
 */

import type { DType } from "../formats/host_tensor.ts";
import { shapeSize } from "../formats/host_tensor.ts";
import type { Storage } from "./runtime.ts";
import type { Backend } from "./backend.ts";

export type { DType };

/** A node of the autograd tape: how to turn the output's gradient into the inputs' gradients. */
export interface GradNode {
  /** Op name, for error messages and debugging. */
  readonly name: string;
  /** The op's tensor inputs (gradients are returned in this order). */
  readonly inputs: readonly Tensor[];
  /** The op's outputs (one for most ops; several for ops such as `splitHeads`). */
  readonly outputs: readonly Tensor[];
  /**
   * Computes input gradients (null where an input needs none) from the outputs' gradients, in
   * `outputs` order; an output that received no gradient gets null.
   */
  backward(grads: (Tensor | null)[]): (Tensor | null)[];
  /** Releases saved tensors. */
  release(): void;
  /** True once released (after backward, unless the graph was retained). */
  released: boolean;
}

let current: Backend | null = null;

/** Makes `rt` the active runtime (called once by `initEngine` in engine/init.ts). */
export function setRuntime(rt: Backend): void {
  current = rt;
}

/** The active runtime; throws when {@linkcode initEngine} has not completed. */
export function runtime(): Backend {
  if (!current) throw new Error("rlhf-webgpu: call `await initEngine()` before creating tensors");
  return current;
}

// ------------------------------------------------------------------ scopes

const scopes: Set<Tensor>[] = [];
let gradEnabled = true;
let nextId = 1;

/** Whether ops currently record autograd nodes. */
export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs `fn` without recording autograd nodes (like `torch.no_grad()`). */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    const r = fn();
    if (r instanceof Promise) {
      throw new Error("noGrad(fn): fn must be synchronous; use noGradAsync for async functions");
    }
    return r;
  } finally {
    gradEnabled = prev;
  }
}

/** Async form of {@linkcode noGrad}; do not interleave with other grad-recording work meanwhile. */
export async function noGradAsync<T>(fn: () => Promise<T>): Promise<T> {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return await fn();
  } finally {
    gradEnabled = prev;
  }
}

function collect(value: unknown, into: Set<Tensor>, depth = 0): void {
  if (depth > 6 || value === null || typeof value !== "object") return;
  if (value instanceof Tensor) {
    into.add(value);
  } else if (Array.isArray(value)) {
    for (const v of value) collect(v, into, depth + 1);
  } else if (value instanceof Map) {
    for (const v of value.values()) collect(v, into, depth + 1);
  } else if (Object.getPrototypeOf(value) === Object.prototype) {
    for (const v of Object.values(value)) collect(v, into, depth + 1);
  }
}

function endScope(scope: Set<Tensor>, result: unknown): void {
  const keep = new Set<Tensor>();
  collect(result, keep);
  for (const t of scope) if (!keep.has(t)) t.dispose();
  const parent = scopes[scopes.length - 1];
  if (parent) { for (const t of keep) if (scope.has(t)) parent.add(t); }
}

/**
 * Runs `fn` and disposes every tensor created inside it except those reachable from its result
 * (arrays, plain objects and Maps are searched) and those passed to {@linkcode keep}.
 */
export function tidy<T>(fn: () => T): T {
  const scope = new Set<Tensor>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    scopes.pop();
    endScope(scope, undefined);
    throw e;
  }
  scopes.pop();
  if (result instanceof Promise) throw new Error("tidy(fn): fn must be synchronous; use tidyAsync");
  endScope(scope, result);
  return result;
}

/** Async form of {@linkcode tidy}; scopes are a stack, so do not run two concurrently. */
export async function tidyAsync<T>(fn: () => Promise<T>): Promise<T> {
  const scope = new Set<Tensor>();
  scopes.push(scope);
  let result: T;
  try {
    result = await fn();
  } catch (e) {
    scopes.splice(scopes.lastIndexOf(scope), 1);
    endScope(scope, undefined);
    throw e;
  }
  scopes.splice(scopes.lastIndexOf(scope), 1);
  endScope(scope, result);
  return result;
}

/** Exempts tensors from disposal by the enclosing {@linkcode tidy} scopes. */
export function keep<T extends Tensor | Tensor[]>(t: T): T {
  for (const x of Array.isArray(t) ? t : [t]) for (const s of scopes) s.delete(x);
  return t;
}

// ------------------------------------------------------------------ tensor

/** Anything a tensor can be created from. */
export type TensorData = Float32Array | Int32Array | number[] | ArrayLike<number>;

/** A dense, contiguous, row-major GPU tensor. */
export class Tensor {
  /** Unique id (creation order). */
  readonly id: number = nextId++;
  /** Dimensions, outermost first. */
  readonly shape: readonly number[];
  /** Element type. */
  readonly dtype: DType;
  /** Whether gradients flow to this tensor. */
  requiresGrad = false;
  /** Accumulated gradient (leaf tensors), set by `backward()`. */
  grad: Tensor | null = null;
  /** The op that produced this tensor, when recorded for autograd. */
  gradFn: GradNode | null = null;
  /** Optional name (parameters), used in messages. */
  name?: string;
  #storage: Storage | null;

  /** Wraps a storage (takes ownership of one reference). Prefer the factory functions. */
  constructor(storage: Storage, shape: readonly number[], dtype: DType = "f32", tracked = true) {
    for (const d of shape) {
      if (!Number.isInteger(d) || d < 0) throw new Error(`invalid tensor shape [${shape.join(", ")}]`);
    }
    this.#storage = storage;
    this.shape = Object.freeze([...shape]);
    this.dtype = dtype;
    if (tracked) scopes[scopes.length - 1]?.add(this);
  }

  /** The GPU storage; throws if the tensor was disposed. */
  get storage(): Storage {
    if (!this.#storage) throw new Error(`tensor${this.name ? ` "${this.name}"` : ""} was disposed`);
    return this.#storage;
  }

  /** Number of elements. */
  get size(): number {
    return shapeSize(this.shape);
  }

  /** Number of dimensions. */
  get ndim(): number {
    return this.shape.length;
  }

  /** True after {@linkcode dispose}. */
  get disposed(): boolean {
    return this.#storage === null;
  }

  /** Releases the GPU memory (autograd nodes keep what they saved until backward). */
  dispose(): void {
    if (!this.#storage) return;
    this.#storage.release();
    this.#storage = null;
    for (const s of scopes) s.delete(this);
  }

  /** `using t = ...` support. */
  [Symbol.dispose](): void {
    this.dispose();
  }

  /** Copies the elements to the CPU (one GPU round trip). */
  async toArray(): Promise<Float32Array | Int32Array> {
    const [buf] = await runtime().read([{ storage: this.storage, bytes: this.size * 4 }]);
    return this.dtype === "i32" ? new Int32Array(buf) : new Float32Array(buf);
  }

  /** The single element of a one-element tensor. */
  async item(): Promise<number> {
    if (this.size !== 1) throw new Error(`item() needs a one-element tensor, got shape [${this.shape}]`);
    return (await this.toArray())[0];
  }

  /** A new tensor sharing this one's storage, cut off from autograd. */
  detach(): Tensor {
    return new Tensor(this.storage.retain(), this.shape, this.dtype);
  }

  /** Marks this tensor as a leaf that accumulates gradients. */
  requireGrad(flag = true): this {
    if (flag && this.dtype !== "f32") throw new Error("only f32 tensors can require gradients");
    this.requiresGrad = flag;
    return this;
  }

  /** Human-readable summary. */
  toString(): string {
    return `Tensor(${this.dtype}, [${this.shape.join(", ")}]${this.requiresGrad ? ", requiresGrad" : ""})`;
  }
}

/** Shape check helper used by ops: throws `op: message` when `cond` is false. */
export function check(cond: boolean, op: string, msg: string): asserts cond {
  if (!cond) throw new Error(`${op}: ${msg}`);
}

/** Allocates an uninitialised tensor. */
export function empty(shape: readonly number[], dtype: DType = "f32"): Tensor {
  return new Tensor(runtime().alloc(shapeSize(shape) * 4), shape, dtype);
}

/** Creates a tensor from CPU data (f32 unless `dtype` says otherwise or `data` is an Int32Array). */
export function tensor(data: TensorData, shape?: readonly number[], dtype?: DType): Tensor {
  const dt: DType = dtype ?? (data instanceof Int32Array ? "i32" : "f32");
  const sh = shape ?? [data.length];
  const n = shapeSize(sh);
  if (n !== data.length) {
    throw new Error(`tensor: ${data.length} values do not fill shape [${sh.join(", ")}] (${n} elements)`);
  }
  let arr: Float32Array | Int32Array;
  if (dt === "f32") arr = data instanceof Float32Array ? data : Float32Array.from(data as ArrayLike<number>);
  else arr = data instanceof Int32Array ? data : Int32Array.from(data as ArrayLike<number>);
  const t = empty(sh, dt);
  if (n > 0) runtime().write(t.storage, arr);
  return t;
}

/** Reads several tensors back with one GPU round trip. */
export async function readAll(tensors: readonly Tensor[]): Promise<(Float32Array | Int32Array)[]> {
  const bufs = await runtime().read(tensors.map((t) => ({ storage: t.storage, bytes: t.size * 4 })));
  return bufs.map((b, i) => tensors[i].dtype === "i32" ? new Int32Array(b) : new Float32Array(b));
}
