/**
 * Op codes shared by TypeScript and WGSL, declared once. Shaders receive them as WGSL constants through a
 * `//!codes NAME` line (expanded by `engine/shaders.ts`): `//!codes unary` defines `UNARY_NEG`, `UNARY_EXP`, …
 * @module
 */

/** Element-wise unary ops (`shaders/unary.wgsl`, override `OP`). */
export const UNARY_OPS = {
  neg: 0,
  exp: 1,
  log: 2,
  tanh: 3,
  geluNew: 4,
  relu: 5,
  sigmoid: 6,
  sqrt: 7,
  rsqrt: 8,
  affine: 9,
  pow: 10,
  abs: 11,
  clamp: 12,
  square: 13,
  gelu: 14,
} as const;

/** Name of a unary op. */
export type UnaryOp = keyof typeof UNARY_OPS;

/** Element-wise binary ops with broadcasting (`shaders/binary.wgsl`, override `OP`). */
export const BINARY_OPS = { add: 0, sub: 1, mul: 2, div: 3, maximum: 4, minimum: 5 } as const;

/** Name of a binary op. */
export type BinaryOp = keyof typeof BINARY_OPS;

/**
 * Activations fused into matrix products (`shaders/activation.wgsl` `act`/`act_grad`, override `ACT`), by their
 * Hugging Face config names, with the unary op that computes the same function (whose backward they share).
 */
export const ACTIVATIONS = {
  identity: { code: 0, unary: null },
  gelu: { code: 1, unary: "gelu" },
  gelu_new: { code: 2, unary: "geluNew" },
  relu: { code: 3, unary: "relu" },
} as const satisfies Record<string, { code: number; unary: UnaryOp | null }>;

/** An activation a matrix product can fuse (Hugging Face's name). */
export type Activation = Exclude<keyof typeof ACTIVATIONS, "identity">;

/** The code tables a shader can include with `//!codes NAME`, as WGSL constant name → value. */
export const WGSL_CODES: Readonly<Record<string, Readonly<Record<string, number>>>> = {
  unary: prefixed("UNARY", UNARY_OPS),
  binary: prefixed("BINARY", BINARY_OPS),
  act: prefixed("ACT", Object.fromEntries(Object.entries(ACTIVATIONS).map(([name, a]) => [name, a.code]))),
};

function prefixed(prefix: string, table: Readonly<Record<string, number>>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [name, code] of Object.entries(table)) {
    out[`${prefix}_${name.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase()}`] = code;
  }
  return out;
}

/** WGSL declarations of a code table: one `const NAME: u32 = Vu;` line per code. */
export function wgslCodes(table: string): string {
  const codes = WGSL_CODES[table];
  if (!codes) throw new Error(`shaders: unknown code table "${table}" (known: ${Object.keys(WGSL_CODES).join(", ")})`);
  return Object.entries(codes).map(([name, code]) => `const ${name}: u32 = ${code}u;`).join("\n");
}
