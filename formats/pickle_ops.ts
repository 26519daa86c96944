/**
 * The opcode handlers of the restricted pickle machine, grouped by kind, and the table that maps each accepted
 * opcode to its handler and its memory cost. Opcodes missing from the table are unsupported. No handler runs
 * anything from the input: globals become {@link PyGlobal} markers only when the caller's allow-list accepts them,
 * and calls and persistent ids are handed to the caller's hooks.
 * @module
 */

import { PickleError, printable, PyDict, PyList, PySet, PyTuple } from "./pickle_values.ts";
import { decodeLong, memoIndex, parseDecimal } from "./pickle_reader.ts";
import type { PickleMachine } from "./pickle_machine.ts";

/** Codes of the opcodes handled (names as in Python's `pickletools`). */
export const OP = {
  PROTO: 0x80,
  FRAME: 0x95,
  STOP: 0x2e,
  MARK: 0x28,
  POP: 0x30,
  POP_MARK: 0x31,
  DUP: 0x32,
  NONE: 0x4e,
  NEWTRUE: 0x88,
  NEWFALSE: 0x89,
  BININT: 0x4a,
  BININT1: 0x4b,
  BININT2: 0x4d,
  LONG1: 0x8a,
  LONG4: 0x8b,
  INT: 0x49,
  LONG: 0x4c,
  FLOAT: 0x46,
  BINFLOAT: 0x47,
  BINUNICODE: 0x58,
  SHORT_BINUNICODE: 0x8c,
  BINUNICODE8: 0x8d,
  BINSTRING: 0x54,
  SHORT_BINSTRING: 0x55,
  BINBYTES: 0x42,
  SHORT_BINBYTES: 0x43,
  BINBYTES8: 0x8e,
  BYTEARRAY8: 0x96,
  EMPTY_DICT: 0x7d,
  EMPTY_LIST: 0x5d,
  EMPTY_TUPLE: 0x29,
  EMPTY_SET: 0x8f,
  TUPLE: 0x74,
  TUPLE1: 0x85,
  TUPLE2: 0x86,
  TUPLE3: 0x87,
  LIST: 0x6c,
  DICT: 0x64,
  FROZENSET: 0x91,
  APPEND: 0x61,
  APPENDS: 0x65,
  ADDITEMS: 0x90,
  SETITEM: 0x73,
  SETITEMS: 0x75,
  BINPUT: 0x71,
  LONG_BINPUT: 0x72,
  MEMOIZE: 0x94,
  PUT: 0x70,
  BINGET: 0x68,
  LONG_BINGET: 0x6a,
  GET: 0x67,
  GLOBAL: 0x63,
  STACK_GLOBAL: 0x93,
  REDUCE: 0x52,
  NEWOBJ: 0x81,
  NEWOBJ_EX: 0x92,
  BUILD: 0x62,
  BINPERSID: 0x51,
  PERSID: 0x50,
} as const;

/** Runs opcode `op`, read at offset `at`, whose operands follow at `m.input.pos`. */
export type OpcodeHandler = (m: PickleMachine, op: number, at: number) => void;

/** Handler of each opcode, indexed by opcode; `undefined` for unsupported ones (`STOP` is run by the machine). */
export const OPCODE_HANDLERS: (OpcodeHandler | undefined)[] = Array.from({ length: 256 }, () => undefined);
/** Estimated extra bytes of memory taken by the values that each opcode builds (beyond its 8-byte stack slot). */
export const OPCODE_COST: Uint16Array = new Uint16Array(256);

/** Registers `handler` for each of `ops`, with memory cost `cost`. */
function define(ops: readonly number[], cost: number, handler: OpcodeHandler): void {
  for (const op of ops) {
    OPCODE_HANDLERS[op] = handler;
    OPCODE_COST[op] = cost;
  }
}

// ---------- framing and protocol ----------

function proto(m: PickleMachine): void {
  const version = m.input.u8();
  if (version > 5) throw new PickleError(`unsupported pickle protocol ${version}`);
}

function frame(m: PickleMachine): void {
  m.input.u64(); // frame length: frames are read as part of the stream
}

// ---------- constants and numbers ----------

function pushNone(m: PickleMachine): void {
  m.push(null);
}

function pushBool(m: PickleMachine, op: number): void {
  m.push(op === OP.NEWTRUE);
}

function pushBinInt(m: PickleMachine, op: number): void {
  const input = m.input;
  m.push(op === OP.BININT ? input.i32() : op === OP.BININT1 ? input.u8() : input.u16());
}

function pushLong1(m: PickleMachine): void {
  const input = m.input;
  m.push(decodeLong(input.take(input.u8())));
}

function pushLong4(m: PickleMachine, _op: number, at: number): void {
  const n = m.input.i32();
  if (n < 0) throw new PickleError(`negative LONG4 length at offset ${at}`);
  m.push(decodeLong(m.input.take(n)));
}

/** `INT` (text; "00"/"01" are False/True). */
function pushTextInt(m: PickleMachine): void {
  const s = m.input.line();
  m.push(s === "00" ? false : s === "01" ? true : parseDecimal(s, "INT"));
}

/** `LONG` (text, with an optional trailing `L`). */
function pushTextLong(m: PickleMachine): void {
  m.push(parseDecimal(m.input.line().replace(/L$/, ""), "LONG"));
}

/** `FLOAT` (text). */
function pushTextFloat(m: PickleMachine): void {
  const s = m.input.line();
  const v = Number(s);
  if (s.trim() === "" || (Number.isNaN(v) && s !== "nan")) throw new PickleError(`invalid FLOAT "${printable(s)}"`);
  m.push(v);
}

function pushBinFloat(m: PickleMachine): void {
  m.push(m.input.f64be());
}

define([OP.PROTO], 0, proto);
define([OP.FRAME], 0, frame);
define([OP.NONE], 0, pushNone);
define([OP.NEWTRUE, OP.NEWFALSE], 0, pushBool);
define([OP.BININT, OP.BININT1, OP.BININT2], 0, pushBinInt);
define([OP.LONG1], 32, pushLong1);
define([OP.LONG4], 32, pushLong4);
define([OP.INT], 0, pushTextInt);
define([OP.LONG], 0, pushTextLong);
define([OP.FLOAT], 0, pushTextFloat);
define([OP.BINFLOAT], 0, pushBinFloat);

// ---------- strings and bytes ----------

/** `BINUNICODE`, `SHORT_BINUNICODE`, `BINUNICODE8` and `SHORT_BINSTRING`: UTF-8 text after its length. */
function pushText(m: PickleMachine, op: number): void {
  const input = m.input;
  const n = op === OP.BINUNICODE ? input.u32() : op === OP.BINUNICODE8 ? input.u64() : input.u8();
  m.push(input.text(n));
}

/** `BINSTRING`: a Python 2 str, decoded as UTF-8 like torch.load does. */
function pushBinString(m: PickleMachine, _op: number, at: number): void {
  const n = m.input.i32();
  if (n < 0) throw new PickleError(`negative BINSTRING length at offset ${at}`);
  m.push(m.input.text(n));
}

/** `BINBYTES`, `SHORT_BINBYTES`, `BINBYTES8` and `BYTEARRAY8`: a copy of the bytes after their length. */
function pushBytes(m: PickleMachine, op: number): void {
  const input = m.input;
  const n = op === OP.BINBYTES ? input.u32() : op === OP.SHORT_BINBYTES ? input.u8() : input.u64();
  m.push(input.take(n).slice());
}

define([OP.BINUNICODE, OP.SHORT_BINUNICODE, OP.BINUNICODE8, OP.SHORT_BINSTRING], 32, pushText);
define([OP.BINSTRING], 32, pushBinString);
define([OP.BINBYTES, OP.SHORT_BINBYTES, OP.BINBYTES8, OP.BYTEARRAY8], 32, pushBytes);

// ---------- stack manipulation ----------

function mark(m: PickleMachine): void {
  m.pushMark();
}

/** `POP`: drops the top item, or the innermost `MARK` when the current stack is empty. */
function pop(m: PickleMachine): void {
  if (m.stack.length > 0) m.stack.pop();
  else m.popMark();
}

function popMark(m: PickleMachine): void {
  m.popMark();
}

function dup(m: PickleMachine): void {
  m.push(m.top());
}

define([OP.MARK], 0, mark);
define([OP.POP], 0, pop);
define([OP.POP_MARK], 0, popMark);
define([OP.DUP], 0, dup);

// ---------- containers ----------

function pushEmpty(m: PickleMachine, op: number): void {
  if (op === OP.EMPTY_DICT) m.push(new PyDict());
  else if (op === OP.EMPTY_LIST) m.push(new PyList());
  else if (op === OP.EMPTY_TUPLE) m.push(new PyTuple([]));
  else m.push(new PySet());
}

/** `TUPLE`, `LIST` and `FROZENSET`: the items above the innermost `MARK`. */
function collectMarked(m: PickleMachine, op: number): void {
  const items = m.popMark();
  m.push(op === OP.TUPLE ? new PyTuple(items) : op === OP.LIST ? new PyList(items) : new PySet(items));
}

/** `TUPLE1`, `TUPLE2` and `TUPLE3`: a tuple of the top one, two or three items. */
function collectTuple(m: PickleMachine, op: number): void {
  const n = op - OP.TUPLE1 + 1;
  const items = new Array<unknown>(n);
  for (let i = n - 1; i >= 0; i--) items[i] = m.pop();
  m.push(new PyTuple(items));
}

function collectDict(m: PickleMachine): void {
  const d = new PyDict();
  m.setItems(d, m.popMark());
  m.push(d);
}

function append(m: PickleMachine): void {
  const v = m.pop();
  m.container(PyList, "APPEND").items.push(v);
}

function appends(m: PickleMachine): void {
  const items = m.popMark();
  const list = m.container(PyList, "APPENDS");
  for (const v of items) list.items.push(v);
}

function addItems(m: PickleMachine): void {
  const items = m.popMark();
  const set = m.container(PySet, "ADDITEMS");
  for (const v of items) set.items.push(v);
}

function setItem(m: PickleMachine): void {
  const v = m.pop();
  const k = m.pop();
  m.container(PyDict, "SETITEM").map.set(k, v);
}

function setItems(m: PickleMachine): void {
  const items = m.popMark();
  m.setItems(m.container(PyDict, "SETITEMS"), items);
}

define([OP.EMPTY_DICT], 320, pushEmpty);
define([OP.EMPTY_LIST, OP.EMPTY_TUPLE, OP.EMPTY_SET], 64, pushEmpty);
define([OP.TUPLE, OP.LIST, OP.FROZENSET], 64, collectMarked);
define([OP.TUPLE1, OP.TUPLE2, OP.TUPLE3], 64, collectTuple);
define([OP.DICT], 320, collectDict);
define([OP.APPEND], 0, append);
define([OP.APPENDS], 0, appends);
define([OP.ADDITEMS], 0, addItems);
define([OP.SETITEM], 48, setItem);
define([OP.SETITEMS], 0, setItems);

// ---------- memo ----------

/** `BINPUT`, `LONG_BINPUT` and `PUT`: saves the top item under the index that follows. */
function memoPut(m: PickleMachine, op: number): void {
  const input = m.input;
  const index = op === OP.BINPUT ? input.u8() : op === OP.LONG_BINPUT ? input.u32() : memoIndex(input.line());
  m.memo.set(index, m.top());
}

function memoize(m: PickleMachine): void {
  m.memo.set(m.memo.size, m.top());
}

/** `BINGET`, `LONG_BINGET` and `GET`: pushes the item saved under the index that follows. */
function memoGet(m: PickleMachine, op: number, at: number): void {
  const input = m.input;
  const index = op === OP.BINGET ? input.u8() : op === OP.LONG_BINGET ? input.u32() : memoIndex(input.line());
  if (!m.memo.has(index)) throw new PickleError(`memo miss: index ${index} at offset ${at}`);
  m.push(m.memo.get(index));
}

define([OP.BINPUT, OP.LONG_BINPUT, OP.PUT], 48, memoPut);
define([OP.MEMOIZE], 48, memoize);
define([OP.BINGET, OP.LONG_BINGET, OP.GET], 0, memoGet);

// ---------- globals, calls and BUILD (through the caller's allow-list and hooks) ----------

function global(m: PickleMachine): void {
  const module = m.input.line();
  m.push(m.resolveGlobal(module, m.input.line()));
}

function stackGlobal(m: PickleMachine): void {
  const name = m.pop();
  m.push(m.resolveGlobal(m.pop(), name));
}

/** `REDUCE` and `NEWOBJ`: `callable(*args)`, built by the hooks. */
function reduce(m: PickleMachine): void {
  const args = m.pop();
  m.push(m.call(m.pop(), args));
}

/** `NEWOBJ_EX`: as `NEWOBJ`, with an empty keyword-argument dict. */
function newObjEx(m: PickleMachine): void {
  const kwargs = m.pop();
  const args = m.pop();
  if (!(kwargs instanceof PyDict) || kwargs.map.size > 0) throw new PickleError(`NEWOBJ_EX with keyword arguments`);
  m.push(m.call(m.pop(), args));
}

/** `BUILD`: state is recorded on dicts and otherwise ignored; nothing is set on live objects. */
function build(m: PickleMachine): void {
  const state = m.pop();
  const obj = m.top();
  if (obj instanceof PyDict) obj.state = state;
}

define([OP.GLOBAL], 64, global);
define([OP.STACK_GLOBAL], 64, stackGlobal);
define([OP.REDUCE, OP.NEWOBJ], 320, reduce);
define([OP.NEWOBJ_EX], 320, newObjEx);
define([OP.BUILD], 0, build);

// ---------- persistent ids (resolved by the caller's hooks) ----------

function binPersId(m: PickleMachine): void {
  m.push(m.persistent(m.pop()));
}

function persId(m: PickleMachine): void {
  m.push(m.persistent(m.input.line()));
}

define([OP.BINPERSID], 64, binPersId);
define([OP.PERSID], 64, persId);
