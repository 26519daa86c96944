/**
 * What ops, tensors and autograd need from an execution backend: the WebGPU runtime (`runtime.ts`) or the CPU one
 * (`cpu/runtime.ts`). Both run the same declared kernels (`engine/kernels/`) — on the GPU as WGSL, on the CPU
 * through the kernel table of `engine/cpu/`.
 * @module
 */

import type { DeviceHandle } from "./device.ts";
import type { Kernel, ParamFields, ParamValues } from "./kernel.ts";
import type { DispatchObserver } from "./observer.ts";
import type { Profile } from "./profiler.ts";
import type { RuntimeStats } from "./stats.ts";
import type { Storage, StorageBuffer } from "./storage.ts";

/** The limits kernel planning reads (a WebGPU device's, or generous ones on the CPU). */
export type BackendLimits = Pick<
  GPUSupportedLimits,
  | "maxComputeWorkgroupsPerDimension"
  | "maxComputeInvocationsPerWorkgroup"
  | "maxComputeWorkgroupSizeX"
  | "maxComputeWorkgroupSizeY"
  | "maxComputeWorkgroupStorageSize"
  | "maxStorageBufferBindingSize"
  | "maxStorageBuffersPerShaderStage"
  | "maxBufferSize"
>;

/** An execution backend (see the module doc). */
export interface Backend {
  /** The device description (on the CPU: backend "cpu", no GPU device). */
  readonly handle: DeviceHandle;
  /** Limits for kernel planning. */
  readonly limits: BackendLimits;
  /** Counters the benchmarks and tests read. */
  readonly stats: RuntimeStats;
  /** Largest storage a tensor may have, in bytes. */
  readonly maxStorageBindingBytes: number;
  /** Watches every dispatch (null: none). */
  observer: DispatchObserver | null;
  /** Allocates a storage of `bytes` (contents undefined). */
  alloc(bytes: number): Storage;
  /** Returns a buffer to the pool (called by `Storage.release`). */
  recycle(buffer: StorageBuffer): void;
  /** Frees pooled buffers not in use. */
  trimPool(): void;
  /** Uploads bytes into a storage at a byte offset, in order with recorded work. */
  write(storage: Storage, data: ArrayBufferView, byteOffset?: number): void;
  /** Copies `bytes` bytes between storages. */
  copy(src: Storage, srcOffset: number, dst: Storage, dstOffset: number, bytes: number): void;
  /** Runs (or records) one dispatch of a declared kernel. */
  run<F extends ParamFields, B extends string, O extends string>(
    k: Kernel<F, B, O>,
    params: ParamValues<F>,
    bindings: Readonly<Record<B, Storage>>,
    grid: readonly [number, number?, number?],
    overrides?: Readonly<Partial<Record<O, number>>>,
  ): void;
  /** Submits recorded work (no wait). */
  flush(): void;
  /** Waits until all work has finished. */
  sync(): Promise<void>;
  /** Throws the first error the device reported since the last check. */
  checkErrors(): Promise<void>;
  /** Reads storages back with one round trip. */
  read(items: { storage: Storage; bytes: number }[]): Promise<ArrayBuffer[]>;
  /** Starts a per-kernel time profile; false when the backend cannot. */
  startProfile(): boolean;
  /** Ends the profile. */
  stopProfile(): Promise<Profile | null>;
}
