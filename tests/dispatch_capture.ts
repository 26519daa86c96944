/**
 * Captures dispatches of a workload on the WebGPU backend — each kernel's uniform block, grid, constants and the
 * contents of its bindings before and after — by recording GPU copies in order with the dispatches (no waits), then
 * reading them back at the end. Used to replay real workloads through the CPU kernels.
 */
import type { DispatchObserver, ObservedDispatch } from "../engine/observer.ts";
import type { Kernel } from "../engine/kernel.ts";
import type { Storage } from "../engine/runtime.ts";
import type { Backend } from "../engine/backend.ts";

/** A dispatch with its bindings' bytes before and after it ran. */
export interface CapturedDispatch {
  kernel: Kernel;
  words: Uint32Array;
  grid: [number, number, number];
  overrides: Record<string, number>;
  /** For each binding: which distinct storage it is (aliased bindings share an index). */
  storageOf: number[];
  /** Bytes of each distinct storage before the dispatch. */
  before: Uint8Array[];
  /** Bytes of each distinct storage after it (written bindings only; null for read-only storages). */
  after: (Uint8Array | null)[];
}

interface Pending {
  dispatch: ObservedDispatch;
  distinct: Storage[];
  storageOf: number[];
  before: Storage[];
  after: (Storage | null)[];
}

const sameStorage = (a: Storage, b: Storage) => a.buffer === b.buffer && a.byteOffset === b.byteOffset;
const padded = (bytes: number) => Math.max(4, Math.ceil(bytes / 4) * 4);

/**
 * Runs `workload` with an observer that snapshots up to `perKernel` dispatches of each kernel (shader, entry and
 * constants), then returns them.
 */
export async function captureDispatches(
  rt: Backend,
  workload: () => Promise<void> | void,
  perKernel = 2,
): Promise<CapturedDispatch[]> {
  const pending: Pending[] = [];
  const seen = new Map<string, number>();
  let current: Pending | null = null;
  const snapshot = (s: Storage) => {
    const copy = rt.alloc(padded(s.bytes));
    rt.copy(s, 0, copy, 0, padded(s.bytes));
    return copy;
  };
  const observer: DispatchObserver = {
    before(dispatch) {
      const key = `${dispatch.kernel.shader}:${dispatch.kernel.entry}:${JSON.stringify(dispatch.overrides)}`;
      const count = seen.get(key) ?? 0;
      seen.set(key, count + 1);
      if (count >= perKernel || dispatch.storages.some((s) => s.bytes % 4 !== 0)) return;
      const distinct: Storage[] = [];
      const storageOf = dispatch.storages.map((s) => {
        const i = distinct.findIndex((d) => sameStorage(d, s));
        return i >= 0 ? i : distinct.push(s) - 1;
      });
      current = { dispatch, distinct, storageOf, before: distinct.map(snapshot), after: [] };
    },
    after() {
      if (!current) return;
      const written = new Set(current.storageOf.filter((_, b) => current!.dispatch.kernel.access[b] === "rw"));
      current.after = current.distinct.map((s, i) => written.has(i) ? snapshot(s) : null);
      pending.push(current);
      current = null;
    },
  };
  rt.observer = observer;
  try {
    await workload();
  } finally {
    rt.observer = null;
  }
  return await readCaptures(rt, pending);
}

async function readCaptures(rt: Backend, pending: Pending[]): Promise<CapturedDispatch[]> {
  const all = pending.flatMap((p) => [...p.before, ...p.after.filter((s): s is Storage => s !== null)]);
  const bytes = await rt.read(all.map((storage) => ({ storage, bytes: storage.bytes })));
  for (const s of all) s.release();
  let next = 0;
  return pending.map((p) => {
    const before = p.before.map(() => new Uint8Array(bytes[next++]));
    const after = p.after.map((s) => s ? new Uint8Array(bytes[next++]) : null);
    const { kernel, words, grid, overrides } = p.dispatch;
    return { kernel, words, grid, overrides, storageOf: p.storageOf, before, after };
  });
}
