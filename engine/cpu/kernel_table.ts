/**
 * CPU implementations of the declared kernels (`engine/kernels/`), one table keyed by the kernel object: the seam a
 * CPU backend runs ops through, with the same uniform fields, bindings, grid and pipeline constants the WGSL kernel
 * gets. Each implementation computes what the shader entry computes, over host memory, without emulating threads.
 * `tests/cpu_kernels_test.ts` replays dispatches captured from real workloads on the WebGPU backend through this table
 * and compares every output.
 * @module
 */

import type { Kernel, ParamFields, ParamType } from "../kernel.ts";

/** A binding's bytes on the host, seen as f32, u32 and i32 (the views share one buffer). */
export interface HostArray {
  /** As float32 values. */
  readonly f32: Float32Array;
  /** As unsigned 32-bit words. */
  readonly u32: Uint32Array;
  /** As signed 32-bit integers. */
  readonly i32: Int32Array;
}

/** Wraps `bytes` (a multiple of 4 long) as a {@linkcode HostArray}. */
export function hostArray(bytes: ArrayBuffer | Uint8Array): HostArray {
  const buffer = bytes instanceof Uint8Array ? bytes.slice().buffer : bytes;
  return { f32: new Float32Array(buffer), u32: new Uint32Array(buffer), i32: new Int32Array(buffer) };
}

/** A field's value as the shader reads it: a number for scalars, the lanes of a vector or array of vectors. */
type Unpacked<T extends ParamType> = T extends "u32" | "i32" | "f32" ? number : number[];

/** The uniform fields as the shader reads them (f32 fields rounded to float32, u32 fields as unsigned). */
export type UnpackedParams<F extends ParamFields> = { readonly [K in keyof F]: Unpacked<F[K]> };

/** One call of a CPU kernel. */
export interface CpuCall<F extends ParamFields = ParamFields, B extends string = string, O extends string = string> {
  /** The uniform fields. */
  params: UnpackedParams<F>;
  /** The bindings by name (aliased bindings share one array). */
  bindings: Readonly<Record<B, HostArray>>;
  /** Workgroups along x, y, z. */
  grid: readonly [number, number, number];
  /** The pipeline constants the op set (absent ones keep the shader's defaults). */
  overrides: Readonly<Partial<Record<O, number>>>;
}

/** How outputs of a kernel compare across backends (default: f32 within 1e-5 relative, 1e-6 absolute). */
export interface Agreement {
  /** Every word must be equal (integer outputs, copies, sampled tokens). */
  exact?: boolean;
  /** Relative tolerance for f32 words. */
  rtol?: number;
  /** Absolute tolerance for f32 words. */
  atol?: number;
}

interface Entry {
  run: (call: CpuCall) => void;
  agreement: Agreement;
}

const table = new Map<Kernel, Entry>();

/** Registers the CPU implementation of kernel `k`. */
export function defineCpuKernel<F extends ParamFields, B extends string, O extends string>(
  k: Kernel<F, B, O>,
  run: (call: CpuCall<F, B, O>) => void,
  agreement: Agreement = {},
): void {
  if (table.has(k as Kernel)) throw new Error(`cpu kernel ${k.shader}:${k.entry} defined twice`);
  table.set(k as Kernel, { run: run as (call: CpuCall) => void, agreement });
}

/** The CPU implementation of `k`, or undefined when there is none yet. */
export function cpuKernelOf(k: Kernel): Entry | undefined {
  return table.get(k);
}

/**
 * Reads a packed uniform block back into named fields, as the shader sees them. `floats` and `ints` view the same
 * words (the runtime passes the views it keeps of its block; made here otherwise).
 */
export function unpackParams<F extends ParamFields>(
  k: Kernel<F>,
  words: Uint32Array,
  floats: Float32Array = new Float32Array(words.buffer, words.byteOffset, words.length),
  ints: Int32Array = new Int32Array(words.buffer, words.byteOffset, words.length),
): UnpackedParams<F> {
  const out: Record<string, number | number[]> = {};
  for (const field of k.layout) {
    const src = field.kind === "f32" ? floats : field.kind === "i32" ? ints : words, at = field.offset;
    if (field.words === 1) out[field.name] = src[at];
    else {
      const values = new Array<number>(field.words);
      for (let i = 0; i < field.words; i++) values[i] = src[at + i];
      out[field.name] = values;
    }
  }
  return out as UnpackedParams<F>;
}

/** Index of thread `gid` in a 1-D launch spread over x and y as `grid1d` does (x + y · groupsX · wg). */
export function flatIndex(x: number, y: number, groupsX: number, wg = 256): number {
  return x + y * groupsX * wg;
}

/** Number of threads a `grid1d`-style launch of `grid` covers with `wg` threads per workgroup. */
export function launchedThreads(grid: readonly [number, number, number], wg = 256): number {
  return grid[0] * grid[1] * grid[2] * wg;
}
