/**
 * The TypeScript ↔ WGSL seam, declared once per kernel: a {@linkcode Kernel} names its shader file, entry point,
 * uniform fields (in the order and with the types of the shader's `struct Params`), storage bindings (in binding
 * order, with their access) and the `override` constants it may set. Ops fill the fields by name; the runtime packs
 * them with WGSL's uniform layout rules, so a missing field is a type error and an unwritten word is zero.
 * `tests/kernels_test.ts` parses every shader and checks each descriptor against it.
 * @module
 */

/** A storage-binding access mode for kernel bindings 1..n (binding 0 is the uniform block). */
export type Access = "read" | "rw";

/** The WGSL types a `Params` field may have. */
export type ParamType =
  | "u32"
  | "i32"
  | "f32"
  | "vec4<u32>"
  | "vec4<f32>"
  | `array<vec4<u32>, ${number}>`
  | `array<vec4<f32>, ${number}>`;

/** Uniform fields by name, in `struct Params` order. Names starting with `_` are padding (always zero). */
export type ParamFields = Readonly<Record<string, ParamType>>;

/** The value an op passes for a field: a number for scalars, up to the vector's length of numbers otherwise. */
export type ParamValue<T extends ParamType> = T extends "u32" | "i32" | "f32" ? number : ArrayLike<number>;

/** The values of a kernel's uniform fields, padding excluded. */
export type ParamValues<F extends ParamFields> = {
  readonly [K in keyof F as K extends `_${string}` ? never : K]: ParamValue<F[K]>;
};

/** How one field is written: its word offset in the uniform block, word count and element kind. */
export interface FieldLayout {
  /** Field name. */
  readonly name: string;
  /** WGSL type. */
  readonly type: ParamType;
  /** Offset in 32-bit words from the start of the block. */
  readonly offset: number;
  /** Number of 32-bit words the field spans. */
  readonly words: number;
  /** Element kind of the words. */
  readonly kind: "u32" | "i32" | "f32";
}

/** What a kernel declaration gives: everything but the derived layout. */
export interface KernelDeclaration<F extends ParamFields, B extends string, O extends string> {
  /** Shader file in `shaders/` without `.wgsl`. */
  readonly shader: string;
  /** Entry point (default `main`). */
  readonly entry?: string;
  /** Uniform fields in `struct Params` order (empty when the shader has no `Params`). */
  readonly params: F;
  /** Storage bindings 1..n by WGSL variable name, in binding order. */
  readonly bindings: Readonly<Record<B, Access>>;
  /** `override` constants the op may set (others keep the shader's defaults). */
  readonly overrides?: readonly O[];
  /** Bindings this entry point never touches (bound only to keep binding numbers; any access). */
  readonly unused?: readonly NoInfer<B>[];
}

/** A compute kernel: a shader entry point with its typed uniform block, bindings and pipeline constants. */
export interface Kernel<F extends ParamFields = ParamFields, B extends string = string, O extends string = string> {
  /** Shader file in `shaders/` without `.wgsl`. */
  readonly shader: string;
  /** Entry point. */
  readonly entry: string;
  /** Uniform fields in `struct Params` order. */
  readonly params: F;
  /** Binding names 1..n in order. */
  readonly bindingNames: readonly B[];
  /** Access of bindings 1..n in order. */
  readonly access: readonly Access[];
  /** Names of the settable `override` constants. */
  readonly overrides: readonly O[];
  /** Bindings the entry point never touches. */
  readonly unused: readonly B[];
  /** Where each field lives in the uniform block. */
  readonly layout: readonly FieldLayout[];
  /** The fields an op writes (the layout without padding). */
  readonly fields: readonly FieldLayout[];
  /** Size of the uniform block in bytes (WGSL struct size). */
  readonly uniformBytes: number;
}

/** Largest uniform block a kernel may declare, in bytes (the runtime's per-dispatch slot). */
export const MAX_UNIFORM_BYTES = 256;

/** Size and alignment in bytes of a field type under WGSL's uniform layout rules. */
export function typeLayout(type: ParamType): { size: number; align: number; kind: "u32" | "i32" | "f32" } {
  if (type === "u32" || type === "i32" || type === "f32") return { size: 4, align: 4, kind: type };
  const kind = type.includes("f32") ? "f32" : "u32";
  if (type.startsWith("vec4")) return { size: 16, align: 16, kind };
  const count = Number(/,\s*(\d+)>$/.exec(type)?.[1]);
  if (!(count > 0)) throw new Error(`kernel params: bad array type ${type}`);
  return { size: 16 * count, align: 16, kind };
}

/** Lays out fields as WGSL does for a uniform struct; returns the layout and the struct size in bytes. */
export function layoutParams(fields: ParamFields): { layout: FieldLayout[]; bytes: number } {
  const layout: FieldLayout[] = [];
  let offset = 0;
  let structAlign = 4;
  for (const [name, type] of Object.entries(fields)) {
    const { size, align, kind } = typeLayout(type);
    offset = Math.ceil(offset / align) * align;
    layout.push({ name, type, offset: offset / 4, words: size / 4, kind });
    offset += size;
    structAlign = Math.max(structAlign, align);
  }
  return { layout, bytes: layout.length ? Math.ceil(offset / structAlign) * structAlign : 0 };
}

/** Declares a kernel (once, in `engine/kernels/`); the field layout is computed here. */
export function kernel<const F extends ParamFields, const B extends string, const O extends string = never>(
  declaration: KernelDeclaration<F, B, O>,
): Kernel<F, B, O> {
  const { layout, bytes } = layoutParams(declaration.params);
  const where = `${declaration.shader}:${declaration.entry ?? "main"}`;
  if (bytes > MAX_UNIFORM_BYTES) throw new Error(`kernel ${where}: Params of ${bytes} bytes exceeds 256`);
  const bindingNames = Object.keys(declaration.bindings) as B[];
  return {
    shader: declaration.shader,
    entry: declaration.entry ?? "main",
    params: declaration.params,
    bindingNames,
    access: bindingNames.map((name) => declaration.bindings[name]),
    overrides: declaration.overrides ?? [],
    unused: declaration.unused ?? [],
    layout,
    fields: layout.filter((field) => !field.name.startsWith("_")),
    uniformBytes: bytes,
  };
}

/** The options of a kernel beyond its shader, entry, params and bindings. */
export interface KernelOptions<B extends string, O extends string> {
  /** `override` constants the op may set. */
  readonly overrides?: readonly O[];
  /** Bindings the entry point never touches. */
  readonly unused?: readonly NoInfer<B>[];
}

/**
 * Declares the entry points of one shader that share its `Params`: `const heads = shaderKernels("heads", P)`, then
 * `heads("split1", { src: "read", d1: "rw" })` for each entry.
 */
export function shaderKernels<const F extends ParamFields>(shader: string, params: F) {
  return <const B extends string, const O extends string = never>(
    entry: string,
    bindings: Readonly<Record<B, Access>>,
    options: KernelOptions<B, O> = {},
  ): Kernel<F, B, O> => kernel<F, B, O>({ shader, entry, params, bindings, ...options });
}

/**
 * Writes `values` into `words` at word offset `base` following `layout`: the whole block is zeroed first, so
 * padding and unwritten vector lanes are zero. Throws when a field is missing or a vector is too long.
 */
export function packParams(
  k: Kernel,
  values: Readonly<Record<string, number | ArrayLike<number>>>,
  words: Uint32Array,
  floats: Float32Array,
  ints: Int32Array,
  base: number,
): void {
  words.fill(0, base, base + k.uniformBytes / 4);
  for (const field of k.fields) {
    const value = values[field.name];
    const at = base + field.offset;
    if (typeof value === "number") {
      if (field.words !== 1) throw fieldError(k, field.name, "expects a vector");
      writeWord(field.kind, value, at, words, floats, ints);
    } else if (value === undefined) {
      throw fieldError(k, field.name, "missing");
    } else {
      if (field.words === 1) throw fieldError(k, field.name, "expects a number");
      if (value.length > field.words) throw fieldError(k, field.name, `has ${value.length} > ${field.words} values`);
      for (let i = 0; i < value.length; i++) writeWord(field.kind, value[i], at + i, words, floats, ints);
    }
  }
}

function writeWord(
  kind: FieldLayout["kind"],
  value: number,
  at: number,
  words: Uint32Array,
  floats: Float32Array,
  ints: Int32Array,
): void {
  if (kind === "f32") floats[at] = value;
  else if (kind === "i32") ints[at] = value;
  else words[at] = value;
}

function fieldError(k: Kernel, name: string, why: string): Error {
  return new Error(`kernel ${k.shader}:${k.entry}: uniform field "${name}" ${why}`);
}

/** A cache key for a kernel's pipeline constants (empty when none are set). */
export function overridesKey(values: Readonly<Record<string, number>> | undefined): string {
  if (!values) return "";
  let key = "";
  for (const name in values) key += `${name}=${values[name]};`;
  return key;
}
