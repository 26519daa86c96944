/**
 * The TS ↔ WGSL seam: every kernel descriptor in `engine/kernels/` must match its shader — the `Params` struct
 * (field names, order, types, hence layout and size), the storage bindings 1..n (names and access), the entry
 * point and the override constants — and packing must zero what an op does not write.
 */
import assert from "node:assert/strict";
import { allKernels } from "../engine/kernels/mod.ts";
import { type Kernel, layoutParams, packParams, type ParamFields, type ParamType } from "../engine/kernel.ts";
import { shaderSource } from "../engine/shaders.ts";
import { WGSL_CODES } from "../engine/kernels/codes.ts";
import { BINARY, UNARY } from "../engine/kernels/elementwise.ts";
import type { Runtime, Storage } from "../engine/runtime.ts";

interface BindingDecl {
  name: string;
  access: "read" | "rw" | "uniform";
}

interface ShaderFacts {
  params: [string, string][] | null;
  /** Declarations per binding number (a shader may redeclare a number for another entry point). */
  bindings: Map<number, BindingDecl[]>;
  entries: Set<string>;
  overrides: Set<string>;
  /** Function name → body. */
  functions: Map<string, string>;
}

/** Reads the facts a descriptor must agree with out of a shader's expanded source. */
function parseShader(source: string): ShaderFacts {
  const code = source.replace(/\/\/.*$/gm, "");
  const struct = /struct Params\s*\{([^}]*)\}/.exec(code);
  const fieldRe = /(\w+)\s*:\s*(array\s*<\s*vec4\s*<\s*\w+\s*>\s*,\s*\d+\s*>|vec4\s*<\s*\w+\s*>|\w+)/g;
  const params = struct
    ? [...struct[1].matchAll(fieldRe)].map((m) =>
      [m[1], m[2].replace(/\s/g, "").replace(",", ", ")] as [string, string]
    )
    : null;
  const bindings = new Map<number, BindingDecl[]>();
  const bindingRe = /@group\(0\)\s*@binding\((\d+)\)\s*var<([^>]*)>\s*(\w+)/g;
  for (const m of code.matchAll(bindingRe)) {
    const space = m[2].replace(/\s/g, "");
    const access = space === "uniform" ? "uniform" : space.endsWith("read_write") ? "rw" : "read";
    const number = Number(m[1]);
    bindings.set(number, [...bindings.get(number) ?? [], { name: m[3], access }]);
  }
  const entries = new Set([...code.matchAll(/@compute[^f]*fn\s+(\w+)/g)].map((m) => m[1]));
  const overrides = new Set([...code.matchAll(/override\s+(\w+)/g)].map((m) => m[1]));
  return { params, bindings, entries, overrides, functions: functionBodies(code) };
}

/** Function name → body (from its opening brace to the matching closing one). */
function functionBodies(code: string): Map<string, string> {
  const bodies = new Map<string, string>();
  for (const m of code.matchAll(/\bfn\s+(\w+)\s*\(/g)) {
    const open = code.indexOf("{", m.index);
    let depth = 0, end = open;
    for (; end < code.length; end++) {
      if (code[end] === "{") depth++;
      else if (code[end] === "}" && --depth === 0) break;
    }
    bodies.set(m[1], code.slice(open, end + 1));
  }
  return bodies;
}

/** The identifiers an entry point's body uses, following the functions it calls. */
function identifiersUsed(f: ShaderFacts, entry: string): Set<string> {
  const words = new Set<string>(), seen = new Set<string>(), todo = [entry];
  while (todo.length) {
    const fn = todo.pop()!;
    if (seen.has(fn)) continue;
    seen.add(fn);
    for (const w of f.functions.get(fn)?.match(/\b\w+\b/g) ?? []) {
      words.add(w);
      if (f.functions.has(w)) todo.push(w);
    }
  }
  return words;
}

/** The declaration of binding `number` that `entry` uses (the only one, unless the shader redeclares it). */
function bindingOf(f: ShaderFacts, entry: string, number: number, name: string): BindingDecl | undefined {
  const decls = f.bindings.get(number) ?? [];
  if (decls.length <= 1) return decls[0];
  const used = identifiersUsed(f, entry);
  const live = decls.filter((d) => used.has(d.name));
  return live.length === 1 ? live[0] : decls.find((d) => d.name === name) ?? decls[0];
}

const KERNELS = allKernels();
const facts = new Map<string, ShaderFacts>();
const shaderFacts = (shader: string) => {
  let f = facts.get(shader);
  if (!f) facts.set(shader, f = parseShader(shaderSource(shader)));
  return f;
};

Deno.test("kernels: at least one descriptor per family, unique names", () => {
  assert.ok(KERNELS.length > 0);
  const keys = KERNELS.map(({ kernel: k }) => `${k.shader}:${k.entry}:${k.bindingNames.join(",")}`);
  assert.equal(new Set(KERNELS.map((k) => k.name)).size, KERNELS.length);
  assert.ok(keys.length > 0);
});

for (const { name, kernel: k } of KERNELS) {
  Deno.test(`kernels: ${name} matches shaders/${k.shader}.wgsl:${k.entry}`, () => {
    const f = shaderFacts(k.shader);
    assert.ok(f.entries.has(k.entry), `entry point ${k.entry} not found (has ${[...f.entries]})`);
    checkParams(k, f);
    checkBindings(k, f);
    for (const o of k.overrides) assert.ok(f.overrides.has(o), `override ${o} not declared in the shader`);
  });
}

function checkParams(k: Kernel, f: ShaderFacts): void {
  const declared = Object.entries(k.params);
  if (f.params === null) {
    assert.equal(declared.length, 0, "the shader has no struct Params");
    return;
  }
  assert.deepEqual(declared, f.params, "Params fields (name, type, order)");
  assert.equal(f.bindings.get(0)?.[0].access, "uniform", "binding 0 is the uniform Params block");
  const fromShader = layoutParams(Object.fromEntries(f.params) as Record<string, ParamType>);
  assert.equal(k.uniformBytes, fromShader.bytes);
  assert.ok(k.uniformBytes <= 256);
}

function checkBindings(k: Kernel, f: ShaderFacts): void {
  k.bindingNames.forEach((name, i) => {
    const b = bindingOf(f, k.entry, i + 1, name);
    assert.ok(b, `binding ${i + 1} (${name}) not declared in the shader`);
    assert.equal(b.name, name, `binding ${i + 1} name`);
    if (!k.unused.includes(name)) assert.equal(b.access, k.access[i], `binding ${i + 1} (${name}) access`);
  });
}

Deno.test("kernels: every shader file is a kernel's or an include", async () => {
  const used = new Set(KERNELS.map((k) => k.kernel.shader));
  const includes = new Set<string>();
  for (const shader of used) {
    for (
      const m of (await Deno.readTextFile(new URL(`../shaders/${shader}.wgsl`, import.meta.url)))
        .matchAll(/^\/\/!include (\w+)/gm)
    ) includes.add(m[1]);
  }
  const files: string[] = [];
  for await (const e of Deno.readDir(new URL("../shaders/", import.meta.url))) {
    if (e.name.endsWith(".wgsl")) files.push(e.name.slice(0, -5));
  }
  const orphans = files.filter((f) => !used.has(f) && !includes.has(f));
  assert.deepEqual(orphans, [], "shader files no kernel uses");
});

Deno.test("kernels: WGSL layout rules — vec4 arrays align to 16 bytes, struct size rounds to its alignment", () => {
  const fields: ParamFields = { n: "u32", scale: "f32", dims: "array<vec4<u32>, 2>", last: "i32" };
  const { layout, bytes } = layoutParams(fields);
  assert.deepEqual(layout.map((l) => [l.name, l.offset, l.words]), [["n", 0, 1], ["scale", 1, 1], ["dims", 4, 8], [
    "last",
    12,
    1,
  ]]);
  assert.equal(bytes, 64);
});

Deno.test("kernels: packing writes fields by name, zeroes the rest, rejects missing or oversized fields", () => {
  const k = allKernels().find((e) => e.name === "elementwise.BINARY")!.kernel;
  const words = new Uint32Array(64).fill(0xdeadbeef);
  const floats = new Float32Array(words.buffer);
  const ints = new Int32Array(words.buffer);
  packParams(k, { n: 6, ndim: 2, same: 0, shape: [2, 3], astride: [3, 1], bstride: [0, 1] }, words, floats, ints, 8);
  assert.deepEqual([...words.slice(0, 8)], new Array(8).fill(0xdeadbeef), "words before the block untouched");
  assert.deepEqual([...words.slice(8, 8 + 4)], [6, 2, 0, 0]);
  assert.deepEqual([...words.slice(12, 20)], [2, 3, 0, 0, 0, 0, 0, 0], "unwritten vector lanes are zero");
  assert.deepEqual([...words.slice(20, 22)], [3, 1]);
  assert.throws(
    () => packParams(k, { n: 6, ndim: 2, same: 0, shape: [2, 3], astride: [3, 1] }, words, floats, ints, 0),
    /bstride.*missing/,
  );
  assert.throws(
    () =>
      packParams(
        k,
        { n: 6, ndim: 2, same: 0, shape: new Array(9).fill(1), astride: [], bstride: [] },
        words,
        floats,
        ints,
        0,
      ),
    /shape.*9 > 8/,
  );
  const unary = allKernels().find((e) => e.name === "elementwise.UNARY")!.kernel;
  packParams(unary, { n: 3, a: 0.5, b: -2 }, words, floats, ints, 0);
  assert.deepEqual([words[0], floats[1], floats[2], words[3]], [3, 0.5, -2, 0]);
});

Deno.test("kernels: op-code tables become WGSL constants that the shaders use", () => {
  const unary = shaderSource("unary");
  for (const [name, code] of Object.entries(WGSL_CODES.unary)) {
    assert.ok(unary.includes(`const ${name}: u32 = ${code}u;`), name);
    assert.ok(unary.includes(`case ${name}:`), `unary.wgsl has a case for ${name}`);
  }
  const act = shaderSource("activation");
  for (const name of ["ACT_GELU", "ACT_GELU_NEW", "ACT_RELU"]) assert.ok(act.includes(`case ${name}:`), name);
});

Deno.test("kernels: a missing or misnamed field or binding is a type error (checked by deno check)", () => {
  // Never called: the function exists for the type checker, which must reject each marked line.
  const typeChecks = (rt: Runtime, s: Storage) => {
    // @ts-expect-error: field `b` is missing
    rt.run(UNARY, { n: 1, a: 0 }, { x: s, y: s }, [1]);
    // @ts-expect-error: binding `y` is missing
    rt.run(UNARY, { n: 1, a: 0, b: 0 }, { x: s }, [1]);
    // @ts-expect-error: a vector field takes numbers, not a number
    rt.run(BINARY, { n: 1, ndim: 1, same: 1, shape: 1, astride: [], bstride: [] }, { a: s, b: s, out: s }, [1]);
    // @ts-expect-error: `OPS` is not an override of the unary kernel
    rt.run(UNARY, { n: 1, a: 0, b: 0 }, { x: s, y: s }, [1], { OPS: 1 });
  };
  assert.equal(typeof typeChecks, "function");
});
