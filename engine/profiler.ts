/**
 * Per-kernel GPU time from WebGPU timestamp queries (feature `timestamp-query`).
 *
 * While a profile is running, the runtime gives every dispatch its own compute pass whose
 * `timestampWrites` record the GPU clock when the pass starts and ends; at each submit the
 * timestamps are resolved into a buffer and copied to a mappable one, and
 * {@linkcode Runtime.stopProfile} reads them all back once and sums them by kernel name.
 * One pass per dispatch costs a little GPU time of its own, so profiled runs attribute time;
 * they are not the timed runs.
 * @module
 */

/** GPU time of one kernel (WGSL file, entry point and override constants) over a profile. */
export interface KernelTime {
  /** `shader:entry` plus the override constants in braces when there are any. */
  name: string;
  /** Dispatches of it. */
  count: number;
  /** Summed GPU time between the start and the end of its passes, in milliseconds. */
  ms: number;
}

/** What a profile found. */
export interface Profile {
  /** Kernels by GPU time, largest first. */
  kernels: KernelTime[];
  /** Sum of every kernel's time, ms (GPU idle time between passes is not in it). */
  kernelMs: number;
  /** Dispatches timed. */
  dispatches: number;
  /** Buffer copies recorded (not timed). */
  copies: number;
  /** Submits during the profile. */
  submits: number;
}

interface Pending {
  staging: GPUBuffer;
  labels: string[];
}

/** Records timestamp queries around dispatches (used by the runtime; see {@linkcode Runtime.startProfile}). */
export class Profiler {
  /** Dispatches a submit may hold before the runtime must flush (two queries each). */
  readonly capacity: number;
  private querySet: GPUQuerySet;
  private resolveBuf: GPUBuffer;
  private labels: string[] = [];
  private pending: Pending[] = [];
  private copies = 0;
  private submits = 0;

  /** Creates the query set and resolve buffer on `device`. */
  constructor(private readonly device: GPUDevice, capacity = 2048) {
    this.capacity = capacity;
    this.querySet = device.createQuerySet({ type: "timestamp", count: 2 * capacity, label: "profile" });
    this.resolveBuf = device.createBuffer({
      size: 16 * capacity,
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
      label: "profile-resolve",
    });
  }

  /** True when the current submit has no room for another timed dispatch. */
  get full(): boolean {
    return this.labels.length >= this.capacity;
  }

  /** Begins the timed pass of the next dispatch (the caller ends it after the dispatch). */
  beginPass(encoder: GPUCommandEncoder, label: string): GPUComputePassEncoder {
    const i = this.labels.length;
    this.labels.push(label);
    return encoder.beginComputePass({
      timestampWrites: { querySet: this.querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 },
    });
  }

  /** Counts a buffer copy (copies are not timed). */
  countCopy(): void {
    this.copies++;
  }

  /** Appends the resolve of this submit's queries to `encoder` (call right before it is finished). */
  resolve(encoder: GPUCommandEncoder): void {
    this.submits++;
    const n = this.labels.length;
    if (n === 0) return;
    const staging = this.device.createBuffer({
      size: 16 * n,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      label: "profile-staging",
    });
    encoder.resolveQuerySet(this.querySet, 0, 2 * n, this.resolveBuf, 0);
    encoder.copyBufferToBuffer(this.resolveBuf, 0, staging, 0, 16 * n);
    this.pending.push({ staging, labels: this.labels });
    this.labels = [];
  }

  /** Reads every resolved timestamp (after the last submit) and sums the times by kernel. */
  async finish(): Promise<Profile> {
    const byName = new Map<string, KernelTime>();
    let total = 0, dispatches = 0;
    for (const { staging, labels } of this.pending) {
      await staging.mapAsync(GPUMapMode.READ);
      const ts = new BigUint64Array(staging.getMappedRange());
      labels.forEach((name, i) => {
        // Timestamps are nanoseconds (WebGPU); a pass whose end precedes its start counts as 0.
        const ns = ts[2 * i + 1] > ts[2 * i] ? Number(ts[2 * i + 1] - ts[2 * i]) : 0;
        let k = byName.get(name);
        if (!k) byName.set(name, k = { name, count: 0, ms: 0 });
        k.count++;
        k.ms += ns / 1e6;
        total += ns / 1e6;
        dispatches++;
      });
      staging.unmap();
      staging.destroy();
    }
    this.pending = [];
    this.querySet.destroy();
    this.resolveBuf.destroy();
    const kernels = [...byName.values()].sort((a, b) => b.ms - a.ms);
    return { kernels, kernelMs: total, dispatches, copies: this.copies, submits: this.submits };
  }
}

/** A kernel's profile name: `shader:entry`, plus `{K=V,…}` when it has override constants. */
export function kernelLabel(shader: string, entry: string | undefined, constants?: Record<string, number>): string {
  const c = constants && Object.keys(constants).length
    ? `{${Object.entries(constants).map(([k, v]) => `${k}=${v}`).join(",")}}`
    : "";
  return `${shader}:${entry ?? "main"}${c}`;
}
