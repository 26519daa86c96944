/**
 * The values a restricted pickle produces ({@link PyTuple}, {@link PyList}, {@link PySet}, {@link PyDict} and the
 * {@link PyGlobal} marker), the hooks that give meaning to its few non-data opcodes, its error type, and helpers
 * that make untrusted content safe for error messages.
 * @module
 */

/** Thrown for malformed, truncated, unsupported or refused pickle content. */
export class PickleError extends Error {
  /** Creates the error with a human-readable reason. */
  constructor(message: string) {
    super(message);
    this.name = "PickleError";
  }
}

/** A Python tuple. */
export class PyTuple {
  /** Creates a tuple holding `items`. */
  constructor(readonly items: readonly unknown[]) {}
}

/** A Python list. */
export class PyList {
  /** Creates a list holding `items`. */
  constructor(readonly items: unknown[] = []) {}
}

/** A Python set or frozenset. */
export class PySet {
  /** Creates a set holding `items` (duplicates are not removed). */
  constructor(readonly items: unknown[] = []) {}
}

/** A Python dict (also used for `collections.OrderedDict`); keys keep insertion order. */
export class PyDict {
  /** Key/value pairs; string and number keys compare by value, others by identity. */
  readonly map: Map<unknown, unknown> = new Map();
  /** State given by a `BUILD` opcode (e.g. an OrderedDict's `_metadata`), kept but not interpreted. */
  state: unknown = undefined;
}

/** A reference to an allow-listed global (`module.name`); it is a marker only, never something runnable. */
export class PyGlobal {
  /** Creates the marker for `module`.`name`. */
  constructor(readonly module: string, readonly name: string) {}
  /** `module.name`, e.g. `"torch.FloatStorage"`. */
  get qualifiedName(): string {
    return `${this.module}.${this.name}`;
  }
}

/** Callbacks that give meaning to the few non-data opcodes. */
export interface PickleHooks {
  /** Whether the global `module.name` may be referenced; refused names abort unpickling with a {@link PickleError}. */
  allowGlobal(module: string, name: string): boolean;
  /** Builds the value for `callable(*args)` (from `REDUCE`/`NEWOBJ`); must not run anything and may throw. */
  reduce(callable: PyGlobal, args: PyTuple): unknown;
  /** Resolves a persistent id (`BINPERSID`/`PERSID`); without it persistent ids are an error. */
  persistentLoad?(pid: unknown): unknown;
}

/** Makes untrusted text safe and short for error messages. */
export function printable(s: string): string {
  const clean = s.replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
  return clean.length > 120 ? `${clean.slice(0, 120)}…` : clean;
}

/** A short type name of an unpickled value, for error messages (never recurses). */
export function describe(v: unknown): string {
  if (v === null) return "None";
  if (v instanceof PyGlobal) return printable(v.qualifiedName);
  if (v instanceof Uint8Array) return "bytes";
  if (typeof v === "object") return v.constructor?.name ?? "object";
  return typeof v;
}
