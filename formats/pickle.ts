/**
 * A restricted, data-only interpreter for Python pickles (protocols 0–5, binary opcodes plus a few text ones).
 *
 * Nothing in a pickle is ever executed: `GLOBAL`/`STACK_GLOBAL` only produce a {@link PyGlobal} marker when the
 * caller's allow-list accepts the name, and `REDUCE`/`NEWOBJ` hand the marker and its arguments to the caller's
 * {@link PickleHooks.reduce}, which builds plain data. Every opcode consumes at least one input byte, so the run
 * time is bounded by the input length, and the memory of the values built by {@link UnpickleOptions.maxMemory}.
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

const utf8 = new TextDecoder("utf-8", { fatal: true });
const MAX_LONG_BYTES = 256;

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

class Reader {
  pos: number;
  private readonly view: DataView;
  constructor(readonly bytes: Uint8Array, start: number) {
    this.pos = start;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  need(n: number): number {
    if (!Number.isSafeInteger(n) || n < 0 || n > this.bytes.length - this.pos) {
      throw new PickleError(
        `truncated pickle: need ${n} bytes at offset ${this.pos}, ${this.bytes.length - this.pos} left`,
      );
    }
    const p = this.pos;
    this.pos += n;
    return p;
  }
  u8(): number {
    return this.bytes[this.need(1)];
  }
  u16(): number {
    return this.view.getUint16(this.need(2), true);
  }
  u32(): number {
    return this.view.getUint32(this.need(4), true);
  }
  i32(): number {
    return this.view.getInt32(this.need(4), true);
  }
  u64(): number {
    const p = this.need(8);
    const v = this.view.getUint32(p, true) + this.view.getUint32(p + 4, true) * 2 ** 32;
    if (!Number.isSafeInteger(v)) throw new PickleError(`length ${v} at offset ${p} is too large`);
    return v;
  }
  f64be(): number {
    return this.view.getFloat64(this.need(8), false);
  }
  take(n: number): Uint8Array {
    const p = this.need(n);
    return this.bytes.subarray(p, p + n);
  }
  text(n: number): string {
    const b = this.take(n);
    try {
      return utf8.decode(b);
    } catch {
      throw new PickleError(`invalid UTF-8 string at offset ${this.pos - n}`);
    }
  }
  line(): string {
    const end = this.bytes.indexOf(0x0a, this.pos);
    if (end < 0) throw new PickleError(`truncated pickle: unterminated line at offset ${this.pos}`);
    const s = this.text(end - this.pos);
    this.pos++;
    return s;
  }
}

/** Decodes a little-endian two's-complement integer; a number when safe, otherwise a bigint. */
function decodeLong(b: Uint8Array): number | bigint {
  if (b.length === 0) return 0;
  if (b.length > MAX_LONG_BYTES) throw new PickleError(`integer of ${b.length} bytes is too large`);
  let hex = "";
  for (let i = b.length - 1; i >= 0; i--) hex += b[i].toString(16).padStart(2, "0");
  let v = BigInt("0x" + hex);
  if (b[b.length - 1] & 0x80) v -= 1n << BigInt(8 * b.length);
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

function parseDecimal(s: string, what: string): number | bigint {
  if (!/^[-+]?\d{1,400}$/.test(s)) throw new PickleError(`invalid ${what} literal "${printable(s)}"`);
  const v = BigInt(s);
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

function memoIndex(s: string): number {
  const v = parseDecimal(s, "memo index");
  if (typeof v !== "number" || v < 0) throw new PickleError(`invalid memo index "${printable(s)}"`);
  return v;
}

/** Estimated extra bytes of memory taken by the values that each opcode builds (beyond its 8-byte stack slot). */
const COST = new Uint16Array(256);
for (const op of [0x7d, 0x64]) COST[op] = 320; // EMPTY_DICT, DICT
for (const op of [0x52, 0x81, 0x92]) COST[op] = 320; // REDUCE, NEWOBJ, NEWOBJ_EX (built by the hooks)
for (const op of [0x5d, 0x29, 0x8f, 0x74, 0x85, 0x86, 0x87, 0x6c, 0x91, 0x63, 0x93, 0x51, 0x50]) COST[op] = 64;
for (const op of [0x71, 0x72, 0x94, 0x70, 0x73]) COST[op] = 48; // memo and dict entries
for (const op of [0x58, 0x8c, 0x8d, 0x54, 0x55, 0x42, 0x43, 0x8e, 0x96, 0x8a, 0x8b]) COST[op] = 32; // str, bytes, long

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
  const maxMemory = opts.maxMemory ?? 64 * 2 ** 20;
  let memory = 0;
  const r = new Reader(bytes, start);
  let stack: unknown[] = [];
  const metastack: unknown[][] = [];
  const memo = new Map<number, unknown>();
  const pop = (): unknown => {
    if (stack.length === 0) throw new PickleError(`stack underflow at offset ${r.pos - 1}`);
    return stack.pop();
  };
  const top = (): unknown => {
    if (stack.length === 0) throw new PickleError(`stack underflow at offset ${r.pos - 1}`);
    return stack[stack.length - 1];
  };
  const popMark = (): unknown[] => {
    const items = stack;
    const prev = metastack.pop();
    if (prev === undefined) throw new PickleError(`MARK not found at offset ${r.pos - 1}`);
    stack = prev;
    return items;
  };
  const container = <T>(cls: new () => T, op: string): T => {
    const c = top();
    if (!(c instanceof cls)) throw new PickleError(`${op} on ${describe(c)} at offset ${r.pos - 1}`);
    return c;
  };
  const setItems = (d: PyDict, items: unknown[]) => {
    if (items.length % 2 !== 0) throw new PickleError(`odd number of dict items at offset ${r.pos - 1}`);
    for (let i = 0; i < items.length; i += 2) d.map.set(items[i], items[i + 1]);
  };
  const resolveGlobal = (module: unknown, name: unknown): PyGlobal => {
    if (typeof module !== "string" || typeof name !== "string") {
      throw new PickleError(`STACK_GLOBAL needs two strings, got ${describe(module)} and ${describe(name)}`);
    }
    if (!hooks.allowGlobal(module, name)) {
      throw new PickleError(`refusing to load global ${printable(`${module}.${name}`)}`);
    }
    return new PyGlobal(module, name);
  };
  const call = (callable: unknown, args: unknown): unknown => {
    if (!(callable instanceof PyGlobal)) {
      throw new PickleError(`cannot call ${describe(callable)} at offset ${r.pos - 1}`);
    }
    if (!(args instanceof PyTuple)) throw new PickleError(`arguments of ${callable.qualifiedName} are not a tuple`);
    return hooks.reduce(callable, args);
  };
  const persistent = (pid: unknown): unknown => {
    if (!hooks.persistentLoad) throw new PickleError(`unexpected persistent id at offset ${r.pos - 1}`);
    return hooks.persistentLoad(pid);
  };

  while (r.pos < bytes.length) {
    const at = r.pos;
    const op = r.u8();
    memory += 8 + COST[op];
    if (op === 0x75 || op === 0x64) memory += 24 * stack.length; // SETITEMS, DICT: one map entry per pair
    if (memory > maxMemory) {
      throw new PickleError(`pickle builds too many objects: more than ${maxMemory} bytes of values by offset ${at}`);
    }
    switch (op) {
      case 0x80: { // PROTO
        const v = r.u8();
        if (v > 5) throw new PickleError(`unsupported pickle protocol ${v}`);
        break;
      }
      case 0x95: // FRAME
        r.u64();
        break;
      case 0x2e: // STOP
        return { value: pop(), end: r.pos };
      case 0x28: // MARK
        metastack.push(stack);
        stack = [];
        break;
      case 0x7d: // EMPTY_DICT
        stack.push(new PyDict());
        break;
      case 0x5d: // EMPTY_LIST
        stack.push(new PyList());
        break;
      case 0x29: // EMPTY_TUPLE
        stack.push(new PyTuple([]));
        break;
      case 0x8f: // EMPTY_SET
        stack.push(new PySet());
        break;
      case 0x71: // BINPUT
        memo.set(r.u8(), top());
        break;
      case 0x72: // LONG_BINPUT
        memo.set(r.u32(), top());
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x70: // PUT
        memo.set(memoIndex(r.line()), top());
        break;
      case 0x68: // BINGET
      case 0x6a: // LONG_BINGET
      case 0x67: { // GET
        const i = op === 0x68 ? r.u8() : op === 0x6a ? r.u32() : memoIndex(r.line());
        if (!memo.has(i)) throw new PickleError(`memo miss: index ${i} at offset ${at}`);
        stack.push(memo.get(i));
        break;
      }
      case 0x4a: // BININT
        stack.push(r.i32());
        break;
      case 0x4b: // BININT1
        stack.push(r.u8());
        break;
      case 0x4d: // BININT2
        stack.push(r.u16());
        break;
      case 0x8a: // LONG1
        stack.push(decodeLong(r.take(r.u8())));
        break;
      case 0x8b: { // LONG4
        const n = r.i32();
        if (n < 0) throw new PickleError(`negative LONG4 length at offset ${at}`);
        stack.push(decodeLong(r.take(n)));
        break;
      }
      case 0x49: { // INT (text; "00"/"01" are False/True)
        const s = r.line();
        stack.push(s === "00" ? false : s === "01" ? true : parseDecimal(s, "INT"));
        break;
      }
      case 0x4c: // LONG (text)
        stack.push(parseDecimal(r.line().replace(/L$/, ""), "LONG"));
        break;
      case 0x46: { // FLOAT (text)
        const s = r.line();
        const v = Number(s);
        if (s.trim() === "" || (Number.isNaN(v) && s !== "nan")) {
          throw new PickleError(`invalid FLOAT "${printable(s)}"`);
        }
        stack.push(v);
        break;
      }
      case 0x47: // BINFLOAT
        stack.push(r.f64be());
        break;
      case 0x58: // BINUNICODE
        stack.push(r.text(r.u32()));
        break;
      case 0x8c: // SHORT_BINUNICODE
        stack.push(r.text(r.u8()));
        break;
      case 0x8d: // BINUNICODE8
        stack.push(r.text(r.u64()));
        break;
      case 0x54: { // BINSTRING (Python 2 str, decoded as UTF-8 like torch.load does)
        const n = r.i32();
        if (n < 0) throw new PickleError(`negative BINSTRING length at offset ${at}`);
        stack.push(r.text(n));
        break;
      }
      case 0x55: // SHORT_BINSTRING
        stack.push(r.text(r.u8()));
        break;
      case 0x42: // BINBYTES
        stack.push(r.take(r.u32()).slice());
        break;
      case 0x43: // SHORT_BINBYTES
        stack.push(r.take(r.u8()).slice());
        break;
      case 0x8e: // BINBYTES8
      case 0x96: // BYTEARRAY8
        stack.push(r.take(r.u64()).slice());
        break;
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x74: { // TUPLE
        const items = popMark(); // before reading `stack`: popMark replaces it
        stack.push(new PyTuple(items));
        break;
      }
      case 0x85: // TUPLE1
        stack.push(new PyTuple([pop()]));
        break;
      case 0x86: { // TUPLE2
        const b = pop();
        stack.push(new PyTuple([pop(), b]));
        break;
      }
      case 0x87: { // TUPLE3
        const c = pop();
        const b = pop();
        stack.push(new PyTuple([pop(), b, c]));
        break;
      }
      case 0x6c: { // LIST
        const items = popMark(); // before reading `stack`: popMark replaces it
        stack.push(new PyList(items));
        break;
      }
      case 0x64: { // DICT
        const d = new PyDict();
        setItems(d, popMark());
        stack.push(d);
        break;
      }
      case 0x91: { // FROZENSET
        const items = popMark(); // before reading `stack`: popMark replaces it
        stack.push(new PySet(items));
        break;
      }
      case 0x61: { // APPEND
        const v = pop();
        container(PyList, "APPEND").items.push(v);
        break;
      }
      case 0x65: { // APPENDS
        const items = popMark();
        const list = container(PyList, "APPENDS");
        for (const v of items) list.items.push(v);
        break;
      }
      case 0x90: { // ADDITEMS
        const items = popMark();
        const set = container(PySet, "ADDITEMS");
        for (const v of items) set.items.push(v);
        break;
      }
      case 0x73: { // SETITEM
        const v = pop();
        const k = pop();
        container(PyDict, "SETITEM").map.set(k, v);
        break;
      }
      case 0x75: { // SETITEMS
        const items = popMark();
        setItems(container(PyDict, "SETITEMS"), items);
        break;
      }
      case 0x30: // POP
        if (stack.length > 0) stack.pop();
        else popMark();
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        stack.push(top());
        break;
      case 0x63: { // GLOBAL
        const module = r.line();
        stack.push(resolveGlobal(module, r.line()));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop();
        stack.push(resolveGlobal(pop(), name));
        break;
      }
      case 0x52: // REDUCE
      case 0x81: { // NEWOBJ
        const args = pop();
        stack.push(call(pop(), args));
        break;
      }
      case 0x92: { // NEWOBJ_EX
        const kwargs = pop();
        const args = pop();
        if (!(kwargs instanceof PyDict) || kwargs.map.size > 0) {
          throw new PickleError(`NEWOBJ_EX with keyword arguments`);
        }
        stack.push(call(pop(), args));
        break;
      }
      case 0x62: { // BUILD: state is recorded on dicts and otherwise ignored; nothing is set on live objects
        const state = pop();
        const obj = top();
        if (obj instanceof PyDict) obj.state = state;
        break;
      }
      case 0x51: // BINPERSID
        stack.push(persistent(pop()));
        break;
      case 0x50: // PERSID
        stack.push(persistent(r.line()));
        break;
      default: {
        const ch = op >= 0x20 && op < 0x7f ? ` '${String.fromCharCode(op)}'` : "";
        throw new PickleError(`unsupported pickle opcode 0x${op.toString(16).padStart(2, "0")}${ch} at offset ${at}`);
      }
    }
  }
  throw new PickleError(`truncated pickle: no STOP opcode before offset ${bytes.length}`);
}
