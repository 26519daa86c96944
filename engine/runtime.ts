/**
 * The runtime: owns the GPU device, compiles and caches kernels, pools buffers, records many
 * dispatches into one command encoder and submits them together, and reads results back.
 *
 * Measured facts behind the design: each submit→await or mapAsync round trip costs ~11 ms in
 * Deno's built-in WebGPU, and recording a dispatch ~4–12 µs of CPU. So work is recorded lazily
 * and submitted in batches; only an explicit readback waits for the GPU.
 * @module
 */

import type { DeviceHandle } from "./device.ts";
import { kernelLabel, type Profile, Profiler } from "./profiler.ts";
import { shaderSource } from "./shaders.ts";
import { type Access, type Kernel, overridesKey, packParams, type ParamFields, type ParamValues } from "./kernel.ts";

export type { Access } from "./kernel.ts";
export { Storage } from "./storage.ts";
export { type RuntimeStats, zeroStats } from "./stats.ts";
import { type RuntimeStats, zeroStats } from "./stats.ts";
export type { DispatchObserver, ObservedDispatch } from "./observer.ts";
import type { DispatchObserver } from "./observer.ts";
import type { Backend, BackendLimits } from "./backend.ts";
import type { StorageBuffer } from "./storage.ts";
export { f32Bits, grid1d, rowWorkgroup } from "./grid.ts";
import { Storage } from "./storage.ts";

/** Pipelines of one kernel by override values (one level per declared override), the pipeline under COMPILED. */
type VariantTree = Map<unknown, VariantTree | CompiledKernel>;
const COMPILED = Symbol("compiled");

/** A built pipeline with its bind-group layout, a small id for bind-group keys and its profile label. */
interface CompiledKernel {
  pipeline: GPUComputePipeline;
  layout: GPUBindGroupLayout;
  id: number;
  label: string;
}

const UNIFORM_STRIDE = 256;
/**
 * Recorded dispatches after which the runtime submits on its own, so the GPU starts on long recordings
 * (a training step, a generation loop) while the CPU records the rest instead of waiting for all of it.
 */
const AUTO_FLUSH_DISPATCHES = 256;
const ARENA_BYTES = 1 << 20;
const USAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;

/** Rounds a byte size up to a pool bucket: multiples of 256 B, then 1/8-octave steps. */
function bucket(bytes: number): number {
  const b = Math.max(256, Math.ceil(bytes / 256) * 256);
  if (b <= 1 << 16) return b;
  const step = 2 ** (Math.floor(Math.log2(b)) - 3);
  return Math.ceil(b / step) * step;
}

/** The engine's GPU runtime (one per device). */
export class Runtime implements Backend {
  /** The device. */
  readonly device: GPUDevice;
  /** Device description. */
  readonly handle: DeviceHandle;
  /** Counters. */
  readonly stats: RuntimeStats = zeroStats();
  private pipelines = new Map<string, CompiledKernel>();
  private variants = new WeakMap<Kernel, VariantTree>();
  private bindGroups = new Map<string, GPUBindGroup>();
  private bufferIds = new WeakMap<GPUBuffer, number>();
  /** Batch id of the last recorded command that used each buffer. */
  private usedIn = new WeakMap<GPUBuffer, number>();
  private nextBufferId = 1;
  private free = new Map<number, GPUBuffer[]>();
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private arena: GPUBuffer;
  private arenaCpu = new Uint32Array(ARENA_BYTES / 4);
  private arenaF32 = new Float32Array(this.arenaCpu.buffer);
  private arenaI32 = new Int32Array(this.arenaCpu.buffer);
  private arenaUsed = 0;
  private batch = 0;
  private pendingErrors: Promise<string | null>[] = [];
  private readonly uniformAlign: number;
  private readonly maxBinding: number;
  private profiler: Profiler | null = null;
  private pendingDispatches = 0;

  /** Creates the runtime of a device (see `initEngine`). */
  constructor(handle: DeviceHandle) {
    this.handle = handle;
    if (!handle.device) throw new Error("Runtime: a WebGPU device is needed (the CPU backend is CpuRuntime)");
    this.device = handle.device;
    this.uniformAlign = Math.max(UNIFORM_STRIDE, this.device.limits.minUniformBufferOffsetAlignment);
    this.maxBinding = this.device.limits.maxStorageBufferBindingSize;
    this.arena = this.device.createBuffer({
      size: ARENA_BYTES,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      label: "uniform-arena",
    });
    this.device.addEventListener("uncapturederror", (e) => {
      console.error(`rlhf-webgpu: uncaptured WebGPU error: ${(e as GPUUncapturedErrorEvent).error.message}`);
    });
  }

  /** The device's limits (for kernel planning). */
  get limits(): BackendLimits {
    return this.device.limits;
  }

  /** Largest storage buffer binding the device allows, in bytes. */
  get maxStorageBindingBytes(): number {
    return this.maxBinding;
  }

  // ---------------------------------------------------------------- buffers

  /** Allocates a storage of `bytes` (contents undefined) from the pool. */
  alloc(bytes: number): Storage {
    if (bytes > this.maxBinding) {
      throw new Error(
        `tensor of ${bytes} bytes exceeds this device's maxStorageBufferBindingSize (${this.maxBinding} bytes)`,
      );
    }
    const size = Math.min(bucket(bytes), Math.max(256, Math.ceil(this.maxBinding / 4) * 4));
    const list = this.free.get(size);
    let buffer = list?.pop();
    if (!buffer) {
      buffer = this.device.createBuffer({ size, usage: USAGE });
      this.bufferIds.set(buffer, this.nextBufferId++);
      this.stats.pooledBytes += size;
    }
    this.stats.liveBytes += size;
    if (this.stats.liveBytes > this.stats.peakBytes) this.stats.peakBytes = this.stats.liveBytes;
    return new Storage(buffer, bytes, this);
  }

  /** Returns a buffer to the pool (called by {@linkcode Storage.release}). */
  recycle(buffer: StorageBuffer): void {
    const size = buffer.size;
    this.stats.liveBytes -= size;
    let list = this.free.get(size);
    if (!list) this.free.set(size, list = []);
    list.push(buffer as GPUBuffer);
  }

  /** Destroys every pooled buffer not in use. */
  trimPool(): void {
    this.flush();
    for (const list of this.free.values()) {
      for (const b of list) {
        this.stats.pooledBytes -= b.size;
        b.destroy();
      }
      list.length = 0;
    }
    this.bindGroups.clear();
  }

  /** Uploads bytes into a storage at a byte offset, keeping order with recorded work. */
  write(storage: Storage, data: ArrayBufferView, byteOffset = 0): void {
    // queue.writeBuffer runs before not-yet-submitted commands: submit any that touch this buffer first.
    if (this.encoder && this.usedIn.get(storage.buffer as GPUBuffer) === this.batch) this.flush();
    const bytes = new Uint8Array(data.buffer as ArrayBuffer, data.byteOffset, data.byteLength);
    let padded = bytes;
    if (bytes.byteLength % 4 !== 0) {
      padded = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
      padded.set(bytes);
    }
    this.device.queue.writeBuffer(storage.buffer as GPUBuffer, storage.byteOffset + byteOffset, padded);
  }

  // ---------------------------------------------------------------- kernels

  #pipeline(
    shader: string,
    entry: string,
    access: readonly Access[],
    constants: Readonly<Record<string, number>> | undefined,
  ): CompiledKernel {
    const key = `${shader}:${entry}:${access.join(",")}:${overridesKey(constants)}`;
    let compiled = this.pipelines.get(key);
    if (!compiled) {
      compiled = this.#compile(shader, entry, access, constants);
      this.pipelines.set(key, compiled);
    }
    return compiled;
  }

  /**
   * The pipeline of a kernel with the given constants, cached on the kernel object in a tree keyed by the values of
   * its declared overrides in order (no key string per dispatch).
   */
  #variant(k: Kernel, constants: Readonly<Record<string, number>> | undefined): CompiledKernel {
    let node = this.variants.get(k);
    if (!node) this.variants.set(k, node = new Map());
    for (const name of k.overrides) {
      const value = constants?.[name];
      let next = node.get(value) as VariantTree | undefined;
      if (!next) node.set(value, next = new Map());
      node = next;
    }
    let compiled = node.get(COMPILED) as CompiledKernel | undefined;
    if (!compiled) node.set(COMPILED, compiled = this.#pipeline(k.shader, k.entry, k.access, constants));
    return compiled;
  }

  #compile(
    shader: string,
    entry: string,
    access: readonly Access[],
    constants: Readonly<Record<string, number>> | undefined,
  ): CompiledKernel {
    const entries: GPUBindGroupLayoutEntry[] = [{
      binding: 0,
      visibility: GPUShaderStage.COMPUTE,
      buffer: { type: "uniform", hasDynamicOffset: true, minBindingSize: 0 },
    }];
    access.forEach((a, i) =>
      entries.push({
        binding: i + 1,
        visibility: GPUShaderStage.COMPUTE,
        buffer: { type: a === "read" ? "read-only-storage" : "storage" },
      })
    );
    this.device.pushErrorScope("validation");
    const layout = this.device.createBindGroupLayout({ entries, label: shader });
    const module = this.device.createShaderModule({ code: shaderSource(shader), label: shader });
    const pipeline = this.device.createComputePipeline({
      label: `${shader}:${entry}`,
      layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: entry, constants: constants as Record<string, number> | undefined },
    });
    const compileErrors = module.getCompilationInfo().then((info) => {
      const errs = info.messages.filter((m) => m.type === "error");
      return errs.length
        ? `shaders/${shader}.wgsl: ${errs.map((m) => `line ${m.lineNum}: ${m.message}`).join("; ")}`
        : null;
    });
    this.pendingErrors.push(
      Promise.all([compileErrors, this.device.popErrorScope()]).then(([c, e]) =>
        c ?? (e ? `kernel ${shader}:${entry} failed to build: ${e.message}` : null)
      ),
    );
    this.stats.pipelines++;
    return { pipeline, layout, id: this.pipelines.size + 1, label: kernelLabel(shader, entry, constants) };
  }

  #idOf(b: GPUBuffer): number {
    let id = this.bufferIds.get(b);
    if (id === undefined) this.bufferIds.set(b, id = this.nextBufferId++);
    return id;
  }

  /**
   * Records one dispatch of a declared kernel: `params` are its uniform fields by name, `bindings` its storages by
   * binding name, `grid` the workgroup counts and `overrides` the pipeline constants it sets.
   */
  run<F extends ParamFields, B extends string, O extends string>(
    k: Kernel<F, B, O>,
    params: ParamValues<F>,
    bindings: Readonly<Record<B, Storage>>,
    grid: readonly [number, number?, number?],
    overrides?: Readonly<Partial<Record<O, number>>>,
  ): void {
    const names = k.bindingNames;
    const storages = new Array<Storage>(names.length);
    for (let i = 0; i < names.length; i++) storages[i] = bindings[names[i]];
    const [x, y = 1, z = 1] = grid;
    if (!this.#gridFits(k.shader, x, y, z)) return;
    const compiled = this.#variant(k, overrides as Record<string, number> | undefined);
    const offset = this.#reserveUniforms();
    packParams(k, params as Record<string, number>, this.arenaCpu, this.arenaF32, this.arenaI32, offset / 4);
    const observed = this.observer && { kernel: k as Kernel, storages, grid: [x, y, z] as [number, number, number] };
    if (observed) {
      const words = this.arenaCpu.slice(offset / 4, (offset + k.uniformBytes) / 4);
      this.observer!.before({ ...observed, words, overrides: { ...overrides } as Record<string, number> });
    }
    this.#record(compiled, storages, offset, x, y, z);
    if (observed) this.observer!.after();
  }

  /**
   * Watches every dispatch of {@linkcode run} (null: none; the default). Used by tools that record workloads, e.g.
   * the test comparing kernels across backends; `before` and `after` run synchronously around the recording, so an
   * observer may record copies of the bindings in order with the dispatch.
   */
  observer: DispatchObserver | null = null;

  /** False for an empty grid (nothing to record); throws when a dimension exceeds the device limit. */
  #gridFits(shader: string, x: number, y: number, z: number): boolean {
    const maxWg = this.device.limits.maxComputeWorkgroupsPerDimension;
    if (x > maxWg || y > maxWg || z > maxWg) {
      throw new Error(`kernel ${shader}: grid ${x}×${y}×${z} exceeds ${maxWg} workgroups per dimension`);
    }
    return x !== 0 && y !== 0 && z !== 0;
  }

  /** Reserves one uniform slot in the arena (submitting first when it is full); returns its byte offset. */
  #reserveUniforms(): number {
    if (this.arenaUsed + this.uniformAlign > ARENA_BYTES) this.flush();
    const offset = this.arenaUsed;
    this.arenaUsed += this.uniformAlign;
    return offset;
  }

  #bindGroup(compiled: CompiledKernel, storages: readonly Storage[]): GPUBindGroup {
    let key = `${compiled.id}`;
    for (const s of storages) {
      key += "," + this.#idOf(s.buffer as GPUBuffer) + (s.byteOffset || s.parent ? `@${s.byteOffset}+${s.bytes}` : "");
    }
    let group = this.bindGroups.get(key);
    if (!group) {
      const entries: GPUBindGroupEntry[] = [{ binding: 0, resource: { buffer: this.arena, size: UNIFORM_STRIDE } }];
      storages.forEach((s, i) =>
        entries.push({
          binding: i + 1,
          resource: s.parent
            ? { buffer: s.buffer as GPUBuffer, offset: s.byteOffset, size: Math.max(4, Math.ceil(s.bytes / 4) * 4) }
            : { buffer: s.buffer as GPUBuffer },
        })
      );
      group = this.device.createBindGroup({ layout: compiled.layout, entries });
      if (this.bindGroups.size > 20000) this.bindGroups.clear();
      this.bindGroups.set(key, group);
    }
    return group;
  }

  #record(
    compiled: CompiledKernel,
    storages: readonly Storage[],
    uniformOffset: number,
    x: number,
    y: number,
    z: number,
  ): void {
    const group = this.#bindGroup(compiled, storages);
    for (const s of storages) this.usedIn.set(s.buffer as GPUBuffer, this.batch);
    const prof = this.profiler;
    let pass: GPUComputePassEncoder;
    if (prof) {
      if (prof.full) this.flush();
      pass = prof.beginPass(this.#commandEncoder(), compiled.label);
    } else pass = this.#computePass();
    pass.setPipeline(compiled.pipeline);
    pass.setBindGroup(0, group, [uniformOffset]);
    pass.dispatchWorkgroups(x, y, z);
    if (prof) pass.end();
    this.stats.dispatches++;
    if (++this.pendingDispatches >= AUTO_FLUSH_DISPATCHES) this.flush();
  }

  // ---------------------------------------------------------------- profiling

  /**
   * Starts attributing GPU time to kernels with timestamp queries: from now until
   * {@linkcode stopProfile}, every dispatch runs in its own timed compute pass. Returns false (and
   * does nothing) when the device lacks `timestamp-query` or a profile is already running.
   */
  startProfile(): boolean {
    if (!this.handle.hasTimestamps || this.profiler) return false;
    this.flush();
    this.profiler = new Profiler(this.device);
    return true;
  }

  /** Ends the profile started by {@linkcode startProfile}; waits for the GPU and sums time per kernel. */
  async stopProfile(): Promise<Profile | null> {
    const prof = this.profiler;
    if (!prof) return null;
    this.flush();
    this.profiler = null;
    const out = await prof.finish();
    await this.checkErrors();
    return out;
  }

  #computePass(): GPUComputePassEncoder {
    if (!this.encoder) this.encoder = this.device.createCommandEncoder();
    if (!this.pass) this.pass = this.encoder.beginComputePass();
    return this.pass;
  }

  #commandEncoder(): GPUCommandEncoder {
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
    if (!this.encoder) this.encoder = this.device.createCommandEncoder();
    return this.encoder;
  }

  /** Records a buffer-to-buffer copy (byte counts must be multiples of 4). */
  copy(src: Storage, srcOffset: number, dst: Storage, dstOffset: number, bytes: number): void {
    if (bytes === 0) return;
    this.usedIn.set(src.buffer as GPUBuffer, this.batch);
    this.usedIn.set(dst.buffer as GPUBuffer, this.batch);
    this.#commandEncoder().copyBufferToBuffer(
      src.buffer as GPUBuffer,
      src.byteOffset + srcOffset,
      dst.buffer as GPUBuffer,
      dst.byteOffset + dstOffset,
      bytes,
    );
    this.profiler?.countCopy();
    this.stats.dispatches++;
    this.stats.copies++;
  }

  /** Submits everything recorded so far (does not wait). */
  flush(): void {
    if (!this.encoder) return;
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
    if (this.arenaUsed > 0) {
      this.device.queue.writeBuffer(this.arena, 0, this.arenaCpu, 0, this.arenaUsed / 4);
    }
    this.profiler?.resolve(this.encoder);
    this.device.pushErrorScope("validation");
    this.device.queue.submit([this.encoder.finish()]);
    this.pendingErrors.push(this.device.popErrorScope().then((e) => e ? `GPU validation error: ${e.message}` : null));
    this.encoder = null;
    this.arenaUsed = 0;
    this.pendingDispatches = 0;
    this.batch++;
    this.stats.submits++;
  }

  /** Throws the first validation error reported by the device since the last check. */
  async checkErrors(): Promise<void> {
    if (this.pendingErrors.length === 0) return;
    const errs = await Promise.all(this.pendingErrors.splice(0));
    const first = errs.find((e) => e);
    if (first) throw new Error(`rlhf-webgpu: ${first}`);
  }

  /** Reads back several storages with a single GPU round trip. */
  async read(items: { storage: Storage; bytes: number }[]): Promise<ArrayBuffer[]> {
    let total = 0;
    const offsets = items.map((it) => {
      const o = total;
      total += Math.ceil(it.bytes / 256) * 256;
      return o;
    });
    if (total === 0) return items.map(() => new ArrayBuffer(0));
    const staging = this.device.createBuffer({ size: total, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const enc = this.#commandEncoder();
    items.forEach((it, i) => {
      enc.copyBufferToBuffer(
        it.storage.buffer as GPUBuffer,
        it.storage.byteOffset,
        staging,
        offsets[i],
        Math.ceil(it.bytes / 4) * 4,
      );
    });
    this.flush();
    this.stats.readbacks++;
    await staging.mapAsync(GPUMapMode.READ);
    const all = staging.getMappedRange();
    const out = items.map((it, i) => all.slice(offsets[i], offsets[i] + it.bytes));
    staging.unmap();
    staging.destroy();
    await this.checkErrors();
    return out;
  }

  /** Waits until all submitted work has finished. */
  async sync(): Promise<void> {
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
    await this.checkErrors();
  }
}
