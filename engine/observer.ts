/**
 * Watching the dispatches the runtime records (`Runtime.observer`): for tools that capture a workload, such as the
 * test that replays captured dispatches on another backend's kernels.
 * @module
 */

import type { Kernel } from "./kernel.ts";
import type { Storage } from "./storage.ts";

/** One dispatch as `Runtime.run` records it: the kernel, its packed uniform block, storages and grid. */
export interface ObservedDispatch {
  /** The kernel. */
  kernel: Kernel;
  /** The uniform block as packed (32-bit words; padding zero). */
  words: Uint32Array;
  /** Storages in binding order (1..n). */
  storages: readonly Storage[];
  /** Workgroups along x, y, z. */
  grid: [number, number, number];
  /** Pipeline constants set by the op. */
  overrides: Record<string, number>;
}

/** Callbacks around every recorded dispatch (see `Runtime.observer`). */
export interface DispatchObserver {
  /** Called before the dispatch is recorded. */
  before(dispatch: ObservedDispatch): void;
  /** Called right after it is recorded. */
  after(): void;
}
