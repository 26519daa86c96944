/**
 * A small WebAssembly encoder for the CPU backend's SIMD kernels (`simd.ts`): LEB128 integers, sections, the few
 * scalar and `f32x4` instructions they use, an e^x on four float32 lanes, and a loop skeleton that runs a kernel body
 * over two vectors (eight floats) per iteration. Modules are generated at start-up, so no binary is checked in and
 * no toolchain is needed.
 * @module
 */

/** Lanes per loop iteration: two independent vectors, so the core overlaps their dependency chains. */
export const STEP = 8;

/** Unsigned LEB128. */
function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}

/** Signed LEB128 of a 32-bit integer. */
function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) return [...out, b];
    out.push(b | 0x80);
  }
}

const section = (id: number, body: number[]) => [id, ...uleb(body.length), ...body];
const vec = (items: number[][]) => [...uleb(items.length), ...items.flat()];
const name = (s: string) => vec([...new TextEncoder().encode(s)].map((b) => [b]));

export const I32 = 0x7f, F32 = 0x7d;
const V128 = 0x7b;
/** A SIMD instruction: the 0xfd prefix and its LEB128 opcode. */
const simd = (op: number) => [0xfd, ...uleb(op)];
export const get = (i: number) => [0x20, ...uleb(i)];
export const set = (i: number) => [0x21, ...uleb(i)];
export const i32c = (n: number) => [0x41, ...sleb(n)];
export const add = simd(0xe4), sub = simd(0xe5), mul = simd(0xe6), div = simd(0xe7), sqrt = simd(0xe3);
export const and = simd(0x4e);
const gt = simd(0x44), pmin = simd(0xea), pmax = simd(0xeb);
export const i32x4Add = simd(0xae), f32x4Splat = simd(0x13), i32x4Splat = simd(0x11);
const i32x4Shl = simd(0xab);
export const xor = simd(0x51), i32x4ShrU = simd(0xad), i32x4Mul = simd(0xb5), i32x4GeU = simd(0x40);
export const load = (ptr: number, offset: number) => [...get(ptr), ...simd(0x00), 4, ...uleb(offset)];
export const store = (
  ptr: number,
  offset: number,
  value: number[],
) => [...get(ptr), ...value, ...simd(0x0b), 4, ...uleb(offset)];
export const lane = (i: number) => [...simd(0x1f), i]; // f32x4.extract_lane

/** While a function is generated: its constants (by their 16 bytes) and the local each is kept in (set before the loop). */
let pool: { next: number; locals: Map<string, number> } | null = null;

/** A pooled v128 constant of the given 16 bytes: V8 would rebuild a v128.const at every use. */
function pooled(bytes: number[]): number[] {
  if (!pool) throw new Error("simd: constants only inside a generated function");
  const key = bytes.join(",");
  let local = pool.locals.get(key);
  if (local === undefined) pool.locals.set(key, local = pool.next++);
  return get(local);
}

/** Four equal float32 lanes (pooled). */
export const f32x4 = (x: number): number[] => pooled([...new Uint8Array(Float32Array.of(x, x, x, x).buffer)]);
/** Four 32-bit integer lanes (pooled); one value repeats. */
export const i32x4 = (...lanes: number[]): number[] =>
  pooled([...new Uint8Array(Int32Array.from({ length: 4 }, (_, i) => lanes[i % lanes.length]).buffer)]);

/** A v128.const of 16 bytes given as a pool key. */
function constant(key: string): number[] {
  return [...simd(0x0c), ...key.split(",").map(Number)];
}

/** 1.5 · 2²³: added to a float32 of magnitude < 2²², it rounds it to an integer n held in the low mantissa bits. */
const ROUNDER = 12582912;

/**
 * e^a for the v128 in local `a`, left on the stack (locals a, a + 1 … a + 3 are used: a is clamped, then j, r and the
 * below-range mask): clamp, reduce by ln 2, polynomial, scale by 2ⁿ built in the exponent bits, zero below −87.
 * n = round(a·log₂e) comes from adding {@linkcode ROUNDER} (j's bits are then ROUNDER's plus n), so 2ⁿ's bits are
 * (j << 23) + the bits of 1.0 — no float-to-integer conversion; pmin/pmax clamp in one instruction each (NaN lanes
 * are zeroed by the mask).
 */
export function exp(a: number): number[] {
  const [j, r, keep] = [a + 1, a + 2, a + 3];
  const poly = [1 / 5040, 1 / 720, 1 / 120, 1 / 24, 1 / 6, 1 / 2, 1, 1]; // Horner from r⁷ down to 1
  let p = f32x4(poly[0]);
  for (const c of poly.slice(1)) p = [...p, ...get(r), ...mul, ...f32x4(c), ...add];
  // deno-fmt-ignore
  return [
    ...get(a), ...f32x4(-87), ...gt, ...set(keep),
    ...get(a), ...f32x4(-87), ...pmax, ...f32x4(88), ...pmin, ...set(a),
    ...get(a), ...f32x4(Math.LOG2E), ...mul, ...f32x4(ROUNDER), ...add, ...set(j),
    ...get(j), ...f32x4(ROUNDER), ...sub, ...set(r), // r holds n for the moment
    ...get(a), ...get(r), ...f32x4(0.693145751953125), ...mul, ...sub,
    ...get(r), ...f32x4(1.428606765330187e-6), ...mul, ...sub, ...set(r),
    ...p,
    ...get(j), ...i32c(23), ...i32x4Shl, ...i32x4(0x3f800000), ...i32x4Add,
    ...mul, ...get(keep), ...and,
  ];
}

/** Scratch v128 locals per lane group: the loaded lanes, exp's four, and three more. */
const GROUP = 8;

/** A function's shape: parameters (the first two i32 are the byte offsets x and y, the third the count n). */
export interface FnSpec {
  params: number[];
  result?: number;
  /** Before the loop (constants are set before this). */
  prologue?: number[];
  /** The lanes at byte offset o of the iteration, loaded from x into local l; locals l + 1 … l + GROUP − 1 free. */
  body: (o: number, l: number, group: number) => number[];
  /** After the loop (leaves the result, if any). */
  epilogue?: number[];
  /** Extra v128 locals after the groups (for accumulators), and where they start is passed to the generators. */
  extra?: number;
}

/** A generator's parameters, result and extra-local count (its code is generated against a throwaway pool). */
function shapeOf(spec: (firstExtra: number) => FnSpec): FnSpec {
  pool = { next: 0, locals: new Map() };
  try {
    return spec(0);
  } finally {
    pool = null;
  }
}

/** A function body looping over n floats at byte offset x (n a multiple of STEP), advancing x and y together. */
function fn(spec: (firstExtra: number) => FnSpec, paramCount: number): number[] {
  const groups = paramCount + 2 * GROUP, extra = shapeOf(spec).extra ?? 0;
  const [x, y, n] = [0, 1, 2];
  pool = { next: groups + extra, locals: new Map() }; // constants after the groups and the extra locals
  const s = spec(groups);
  const lanes = (o: number, l: number, g: number) => [...load(x, o), ...set(l), ...s.body(o, l, g)];
  const work = [...lanes(0, paramCount, 0), ...lanes(16, paramCount + GROUP, 1)];
  const prologue = s.prologue ?? [], epilogue = s.epilogue ?? [];
  const consts = [...pool.locals];
  pool = null;
  // deno-fmt-ignore
  const code = [
    ...consts.flatMap(([value, local]) => [...constant(value), ...set(local)]),
    ...prologue,
    ...get(x), ...get(n), ...i32c(2), 0x74, 0x6a, ...set(n), // n := end offset
    0x02, 0x40, 0x03, 0x40, // block, loop
    ...get(x), ...get(n), 0x4f, 0x0d, 1, // x ≥ end → exit
    ...work,
    ...get(x), ...i32c(4 * STEP), 0x6a, ...set(x),
    ...get(y), ...i32c(4 * STEP), 0x6a, ...set(y),
    0x0c, 0, 0x0b, 0x0b, // br loop; end loop; end block
    ...epilogue, 0x0b,
  ];
  const locals = vec([[...uleb(2 * GROUP + extra + consts.length), V128]]);
  return [...uleb(locals.length + code.length), ...locals, ...code];
}

/**
 * A module exporting its memory (`pages` of 64 KiB) as "memory" and the given functions, in order. Each generator
 * receives the index of its first extra local; `paramCount` is taken from its `params`.
 */
export function moduleBytes(
  functions: [string, (firstExtra: number) => FnSpec][],
  pages: number,
): Uint8Array<ArrayBuffer> {
  const specs = functions.map(([, make]) => shapeOf(make));
  const types = specs.map((s) => [0x60, ...vec(s.params.map((t) => [t])), ...vec(s.result ? [[s.result]] : [])]);
  const bodies = functions.map(([, make], i) => fn(make, specs[i].params.length));
  // deno-fmt-ignore
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 1, 0, 0, 0,
    ...section(1, vec(types)),
    ...section(3, vec(functions.map((_, i) => [i]))),
    ...section(5, vec([[0, ...uleb(pages)]])),
    ...section(7, vec([[...name("memory"), 2, 0], ...functions.map(([n], i) => [...name(n), 0, i])])),
    ...section(10, [...uleb(bodies.length), ...bodies.flat()]),
  ]);
}
