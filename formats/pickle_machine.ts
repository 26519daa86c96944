/**
 * The state of one restricted pickle run: the input cursor, the stack, the metastack of enclosing stacks (one per
 * `MARK`), the memo, and the memory budget. Its {@link PickleMachine.run} loop charges each opcode against the
 * budget and dispatches it through the opcode table of `pickle_ops.ts`; the helpers here are the only ways the
 * handlers touch the stack or the caller's hooks, so every stack and hook error reads the same wherever it occurs.
 * @module
 */

import { describe, PickleError, type PickleHooks, printable, type PyDict, PyGlobal, PyTuple } from "./pickle_values.ts";
import { PickleReader } from "./pickle_reader.ts";
import { OP, OPCODE_COST, OPCODE_HANDLERS } from "./pickle_ops.ts";

/** A value and the offset just after the `STOP` opcode that ended its pickle. */
export interface PickleRunResult {
  /** The unpickled value. */
  value: unknown;
  /** Offset of the first byte after the `STOP` opcode. */
  end: number;
}

/** One pickle being run; create one per pickle and call {@link PickleMachine.run} once. */
export class PickleMachine {
  /** Cursor over the input; handlers read their operands from it. */
  readonly input: PickleReader;
  /** The current stack (replaced by a fresh one at each `MARK`). */
  stack: unknown[] = [];
  /** The stacks enclosing the current one, innermost last. */
  readonly metastack: unknown[][] = [];
  /** Values saved by `PUT`/`MEMOIZE` for `GET`. */
  readonly memo: Map<number, unknown> = new Map();
  /** Estimated bytes taken by the values built so far. */
  private memory = 0;

  /** Prepares a run over `bytes` from `start`, resolving globals and calls through `hooks`. */
  constructor(bytes: Uint8Array, start: number, readonly hooks: PickleHooks, readonly maxMemory: number) {
    this.input = new PickleReader(bytes, start);
  }

  /** Runs opcodes until `STOP` and returns the value on top of the stack. */
  run(): PickleRunResult {
    const input = this.input;
    const length = input.bytes.length;
    while (input.pos < length) {
      const at = input.pos;
      const op = input.u8();
      this.charge(op, at);
      if (op === OP.STOP) return { value: this.pop(), end: input.pos };
      const handler = OPCODE_HANDLERS[op];
      if (handler === undefined) throw unsupportedOpcode(op, at);
      handler(this, op, at);
    }
    throw new PickleError(`truncated pickle: no STOP opcode before offset ${length}`);
  }

  /** Adds the estimated memory of opcode `op` (read at `at`) and throws once the budget is exceeded. */
  private charge(op: number, at: number): void {
    this.memory += 8 + OPCODE_COST[op];
    if (op === OP.SETITEMS || op === OP.DICT) this.memory += 24 * this.stack.length; // one map entry per pair
    if (this.memory > this.maxMemory) {
      throw new PickleError(
        `pickle builds too many objects: more than ${this.maxMemory} bytes of values by offset ${at}`,
      );
    }
  }

  /** Pushes `v` on the current stack (read after `v` is computed, so `v` may come from {@link popMark}). */
  push(v: unknown): void {
    this.stack.push(v);
  }

  /** Removes and returns the top of the stack. */
  pop(): unknown {
    if (this.stack.length === 0) throw this.underflow();
    return this.stack.pop();
  }

  /** The top of the stack, left in place. */
  top(): unknown {
    if (this.stack.length === 0) throw this.underflow();
    return this.stack[this.stack.length - 1];
  }

  /** Returns the items above the innermost `MARK` and makes the enclosing stack current again. */
  popMark(): unknown[] {
    const items = this.stack;
    const enclosing = this.metastack.pop();
    if (enclosing === undefined) throw new PickleError(`MARK not found at offset ${this.input.pos - 1}`);
    this.stack = enclosing;
    return items;
  }

  /** Starts a new stack above a `MARK`. */
  pushMark(): void {
    this.metastack.push(this.stack);
    this.stack = [];
  }

  /** The top of the stack, which opcode `opName` requires to be a `cls`. */
  container<T>(cls: new () => T, opName: string): T {
    const c = this.top();
    if (!(c instanceof cls)) throw new PickleError(`${opName} on ${describe(c)} at offset ${this.input.pos - 1}`);
    return c;
  }

  /** Sets the key/value pairs `items` (flattened) in `dict`. */
  setItems(dict: PyDict, items: unknown[]): void {
    if (items.length % 2 !== 0) throw new PickleError(`odd number of dict items at offset ${this.input.pos - 1}`);
    for (let i = 0; i < items.length; i += 2) dict.map.set(items[i], items[i + 1]);
  }

  /** The marker of global `module.name`, if both are strings and the hooks allow it. */
  resolveGlobal(module: unknown, name: unknown): PyGlobal {
    if (typeof module !== "string" || typeof name !== "string") {
      throw new PickleError(`STACK_GLOBAL needs two strings, got ${describe(module)} and ${describe(name)}`);
    }
    if (!this.hooks.allowGlobal(module, name)) {
      throw new PickleError(`refusing to load global ${printable(`${module}.${name}`)}`);
    }
    return new PyGlobal(module, name);
  }

  /** The value the hooks build for `callable(*args)`; nothing is run. */
  call(callable: unknown, args: unknown): unknown {
    if (!(callable instanceof PyGlobal)) {
      throw new PickleError(`cannot call ${describe(callable)} at offset ${this.input.pos - 1}`);
    }
    if (!(args instanceof PyTuple)) throw new PickleError(`arguments of ${callable.qualifiedName} are not a tuple`);
    return this.hooks.reduce(callable, args);
  }

  /** The value the hooks give persistent id `pid`. */
  persistent(pid: unknown): unknown {
    if (!this.hooks.persistentLoad) throw new PickleError(`unexpected persistent id at offset ${this.input.pos - 1}`);
    return this.hooks.persistentLoad(pid);
  }

  private underflow(): PickleError {
    return new PickleError(`stack underflow at offset ${this.input.pos - 1}`);
  }
}

/** The error for an opcode that has no handler. */
function unsupportedOpcode(op: number, at: number): PickleError {
  const ch = op >= 0x20 && op < 0x7f ? ` '${String.fromCharCode(op)}'` : "";
  return new PickleError(`unsupported pickle opcode 0x${op.toString(16).padStart(2, "0")}${ch} at offset ${at}`);
}
