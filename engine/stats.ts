/**
 * The counters every backend keeps (dispatches, copies, submits, readbacks, memory), read by benchmarks and tests.
 * @module
 */

/** Counters the benchmarks and tests read. */
export interface RuntimeStats {
  /** Dispatches recorded since creation (buffer copies included; see `copies`). */
  dispatches: number;
  /** Buffer-to-buffer copies recorded since creation (also counted in `dispatches`). */
  copies: number;
  /** Queue submits since creation. */
  submits: number;
  /** Readback round trips since creation. */
  readbacks: number;
  /** Bytes currently held by live (not pooled) storages. */
  liveBytes: number;
  /** Highest `liveBytes` seen. */
  peakBytes: number;
  /** Bytes held by the pool, live or free. */
  pooledBytes: number;
  /**
   * Compute pipelines (kernel variants) built since creation. Each is compiled once, on first use; drivers finish
   * the compilation when the kernel first runs (on llvmpipe from a cold shader cache: tenths of a second each on
   * Vulkan, seconds each on OpenGL), so a run's first steps are slower.
   */
  pipelines: number;
}

/** Counters at zero, for a new runtime (WebGPU or CPU). */
export function zeroStats(): RuntimeStats {
  return {
    dispatches: 0,
    copies: 0,
    submits: 0,
    readbacks: 0,
    liveBytes: 0,
    peakBytes: 0,
    pooledBytes: 0,
    pipelines: 0,
  };
}
