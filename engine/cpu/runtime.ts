/**
 * The CPU backend: tensors in host memory and every declared kernel run by its CPU implementation (`kernel_table.ts`,
 * matrix products through OpenBLAS when it loads). Same interface as the WebGPU runtime ({@linkcode Backend}), so ops,
 * autograd, models and PPO run unchanged; chosen with `initEngine({ backend: "cpu" })` or `RLHF_WEBGPU_BACKEND=cpu`.
 * @module
 */

import type { Backend, BackendLimits } from "../backend.ts";
import type { DeviceHandle } from "../device.ts";
import { type Kernel, packParams, type ParamFields, type ParamValues } from "../kernel.ts";
import type { DispatchObserver } from "../observer.ts";
import type { Profile } from "../profiler.ts";
import { type RuntimeStats, zeroStats } from "../stats.ts";
import { HostBuffer, Storage, type StorageBuffer } from "../storage.ts";
import { blasBackend } from "./blas.ts";
import { cpuKernelOf, type HostArray, unpackParams } from "./kernel_table.ts";
import "./mod.ts";

/** Limits the kernel planners read: a workgroup model like a software GPU's, storages up to 1 GiB. */
const CPU_LIMITS: BackendLimits = {
  maxComputeWorkgroupsPerDimension: 65535,
  maxComputeInvocationsPerWorkgroup: 256,
  maxComputeWorkgroupSizeX: 256,
  maxComputeWorkgroupSizeY: 256,
  maxComputeWorkgroupStorageSize: 32768,
  maxStorageBufferBindingSize: 2 ** 30,
  maxStorageBuffersPerShaderStage: 10,
  maxBufferSize: 2 ** 30,
};

/** Pipeline constants of a dispatch that sets none (shared; kernels only read them). */
const NO_OVERRIDES: Readonly<Record<string, number>> = Object.freeze({});

/** The CPU backend (see the module doc). */
export class CpuRuntime implements Backend {
  /** Describes the backend: "cpu", with the BLAS in use as the adapter name. */
  readonly handle: DeviceHandle = {
    device: null,
    backend: "cpu",
    graphicsApi: "auto",
    adapterName: `CPU, matrix products by ${blasBackend()}`,
    isFallbackAdapter: false,
    hasF16: false,
    hasTimestamps: false,
    hasCoopMatrix: false,
    hasSubgroups: false,
    subgroupSize: null,
    adapterFeatures: [],
  };
  /** Limits for kernel planning. */
  readonly limits: BackendLimits = CPU_LIMITS;
  /** Counters (dispatches are kernel calls; there are no submits). */
  readonly stats: RuntimeStats = zeroStats();
  /** Watches every dispatch (null: none). */
  observer: DispatchObserver | null = null;
  #free = new Map<number, HostBuffer[]>();
  #views = new WeakMap<Storage, HostArray>();
  #words = new Uint32Array(64);
  #floats = new Float32Array(this.#words.buffer);
  #ints = new Int32Array(this.#words.buffer);

  /** Largest storage a tensor may have, in bytes. */
  get maxStorageBindingBytes(): number {
    return CPU_LIMITS.maxStorageBufferBindingSize;
  }

  /** Allocates a storage of `bytes` (contents undefined) from the pool. */
  alloc(bytes: number): Storage {
    if (bytes > this.maxStorageBindingBytes) {
      throw new Error(
        `tensor of ${bytes} bytes exceeds the CPU backend's limit (${this.maxStorageBindingBytes} bytes)`,
      );
    }
    const size = Math.max(256, Math.ceil(bytes / 256) * 256);
    let buffer = this.#free.get(size)?.pop();
    if (!buffer) {
      buffer = new HostBuffer(size);
      this.stats.pooledBytes += size;
    }
    this.stats.liveBytes += size;
    this.stats.peakBytes = Math.max(this.stats.peakBytes, this.stats.liveBytes);
    return new Storage(buffer, bytes, this);
  }

  /** Returns a buffer to the pool. */
  recycle(buffer: StorageBuffer): void {
    this.stats.liveBytes -= buffer.size;
    let list = this.#free.get(buffer.size);
    if (!list) this.#free.set(buffer.size, list = []);
    list.push(buffer as HostBuffer);
  }

  /** Drops pooled buffers not in use. */
  trimPool(): void {
    for (const list of this.#free.values()) {
      for (const b of list) this.stats.pooledBytes -= b.size;
      list.length = 0;
    }
  }

  /** Copies bytes into a storage at a byte offset. */
  write(storage: Storage, data: ArrayBufferView, byteOffset = 0): void {
    const bytes = new Uint8Array(data.buffer as ArrayBuffer, data.byteOffset, data.byteLength);
    this.#bytes(storage, byteOffset, bytes.byteLength).set(bytes);
  }

  /** Copies `bytes` bytes between storages. */
  copy(src: Storage, srcOffset: number, dst: Storage, dstOffset: number, bytes: number): void {
    if (bytes === 0) return;
    this.#bytes(dst, dstOffset, bytes).set(this.#bytes(src, srcOffset, bytes).slice());
    this.stats.dispatches++;
    this.stats.copies++;
  }

  /** Runs one dispatch of a declared kernel by its CPU implementation. */
  run<F extends ParamFields, B extends string, O extends string>(
    k: Kernel<F, B, O>,
    params: ParamValues<F>,
    bindings: Readonly<Record<B, Storage>>,
    grid: readonly [number, number?, number?],
    overrides?: Readonly<Partial<Record<O, number>>>,
  ): void {
    const entry = cpuKernelOf(k as Kernel);
    if (!entry) throw new Error(`CPU backend: kernel ${k.shader}:${k.entry} has no CPU implementation`);
    const [x, y = 1, z = 1] = grid;
    if (x === 0 || y === 0 || z === 0) return;
    // The fields go through the uniform block as on the GPU (validated, and rounded to their WGSL types).
    packParams(k as Kernel, params as Record<string, number>, this.#words, this.#floats, this.#ints, 0);
    const names = k.bindingNames, views: Record<string, HostArray> = {};
    for (let i = 0; i < names.length; i++) views[names[i]] = this.#view(bindings[names[i] as B]);
    const constants = (overrides ?? NO_OVERRIDES) as Record<string, number>;
    const observer = this.observer;
    if (observer) {
      const storages = names.map((name) => bindings[name as B]);
      const words = this.#words.slice(0, k.uniformBytes / 4);
      observer.before({ kernel: k as Kernel, words, storages, grid: [x, y, z], overrides: { ...constants } });
    }
    entry.run({
      params: unpackParams(k as Kernel, this.#words, this.#floats, this.#ints),
      bindings: views,
      grid: [x, y, z],
      overrides: constants,
    });
    observer?.after();
    this.stats.dispatches++;
  }

  /** Nothing to submit: kernels ran when recorded. */
  flush(): void {}

  /** Resolves at once (all work is done). */
  sync(): Promise<void> {
    return Promise.resolve();
  }

  /** No asynchronous errors on the CPU. */
  checkErrors(): Promise<void> {
    return Promise.resolve();
  }

  /** Copies of the storages' bytes. */
  read(items: { storage: Storage; bytes: number }[]): Promise<ArrayBuffer[]> {
    this.stats.readbacks++;
    return Promise.resolve(items.map((it) => this.#bytes(it.storage, 0, it.bytes).slice().buffer));
  }

  /** Not available on the CPU backend. */
  startProfile(): boolean {
    return false;
  }

  /** Not available on the CPU backend. */
  stopProfile(): Promise<Profile | null> {
    return Promise.resolve(null);
  }

  #bytes(storage: Storage, offset: number, length: number): Uint8Array {
    const host = storage.buffer as HostBuffer;
    return new Uint8Array(host.data, host.offset + storage.byteOffset + offset, length);
  }

  #view(storage: Storage): HostArray {
    let view = this.#views.get(storage);
    if (!view) {
      const host = storage.buffer as HostBuffer, n = Math.floor(storage.bytes / 4);
      const start = host.offset + storage.byteOffset;
      view = {
        f32: new Float32Array(host.data, start, n),
        u32: new Uint32Array(host.data, start, n),
        i32: new Int32Array(host.data, start, n),
      };
      this.#views.set(storage, view);
    }
    return view;
  }
}
