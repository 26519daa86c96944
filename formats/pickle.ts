/**
 * A restricted, data-only interpreter for Python pickles (protocols 0–5, binary opcodes plus a few text ones).
 *
 * Nothing in a pickle is ever executed: `GLOBAL`/`STACK_GLOBAL` only produce a {@link PyGlobal} marker when the
 * caller's allow-list accepts the name, and `REDUCE`/`NEWOBJ` hand the marker and its arguments to the caller's
 * {@link PickleHooks.reduce}, which builds plain data. Every opcode consumes at least one input byte, so the run
 * time is bounded by the input length, and the memory of the values built by {@link UnpickleOptions.maxMemory}.
 *
 * The values and hooks are in `pickle_values.ts`, input decoding in `pickle_reader.ts`, the machine's state in
 * `pickle_machine.ts` and the opcode handlers, grouped by kind, in `pickle_ops.ts`.
 * @module
 */

import { PickleMachine } from "./pickle_machine.ts";
import type { PickleHooks } from "./pickle_values.ts";

export {
  describe,
  PickleError,
  type PickleHooks,
  printable,
  PyDict,
  PyGlobal,
  PyList,
  PySet,
  PyTuple,
} from "./pickle_values.ts";

/** Options of {@link unpickle}. */
export interface UnpickleOptions {
  /**
   * Bound in bytes on the memory the values may take, estimated per opcode (about 330 bytes per dict, 70 per tuple
   * or list, 40 per string, 8 per stack slot); default 64 MiB, enough for a checkpoint of 45,000 tensors.
   */
  maxMemory?: number;
}

/** Result of {@link unpickle}: the value and the offset just after its `STOP` opcode. */
export interface UnpickleResult {
  /** The unpickled value. */
  value: unknown;
  /** Offset of the first byte after the `STOP` opcode. */
  end: number;
}

/**
 * Runs one pickle starting at `start` in `bytes` and returns its value and end offset.
 * @throws {PickleError} on truncation, stack underflow, memo misses, unknown opcodes, refused globals, or values
 * that would take more memory than `opts.maxMemory`.
 */
export function unpickle(
  bytes: Uint8Array,
  start: number,
  hooks: PickleHooks,
  opts: UnpickleOptions = {},
): UnpickleResult {
  return new PickleMachine(bytes, start, hooks, opts.maxMemory ?? 64 * 2 ** 20).run();
}
