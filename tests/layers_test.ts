/**
 * The layers of the house, lowest first: formats (files on host memory) → engine (GPU tensors, kernels, autograd)
 * → models → ppo (the algorithm) → app (the train.ts application) → the entry points at the root. A module may
 * import only from its own layer or a lower one, and no import cycle may exist between modules (type-only
 * imports excepted: they vanish at run time).
 */
import assert from "node:assert/strict";

const ROOT = new URL("..", import.meta.url);
const LAYERS = ["formats", "engine", "models", "ppo", "app", "."] as const;

function layerOf(path: string): number {
  const top = path.includes("/") ? path.slice(0, path.indexOf("/")) : ".";
  // web/ (the browser page and bundle) is an application beside app/.
  return LAYERS.indexOf((top === "web" ? "app" : top) as typeof LAYERS[number]);
}

async function sources(dir: string, out: string[] = []): Promise<string[]> {
  for await (const e of Deno.readDir(new URL(dir, ROOT))) {
    const path = dir === "." ? e.name : `${dir}/${e.name}`;
    if (e.isDirectory) await sources(path, out);
    else if (e.name.endsWith(".ts")) out.push(path);
  }
  return out;
}

/** Relative static and dynamic imports of a module, resolved to repository paths. */
async function importsOf(path: string): Promise<string[]> {
  const code = (await Deno.readTextFile(new URL(path, ROOT))).replace(/\/\*[\s\S]*?\*\//g, "");
  const runtimeImports = code.replace(/^(?:import|export) type [^;]*;/gm, ""); // type-only imports vanish at run time
  const specs = [...runtimeImports.matchAll(/(?:from|import)\s*\(?\s*"(\.{1,2}\/[^"]+)"/g)].map((m) => m[1]);
  return specs.map((spec) => new URL(spec, new URL(path, ROOT)).pathname.slice(ROOT.pathname.length));
}

const modules = [
  ...(await Promise.all(["formats", "engine", "models", "ppo", "app", "web"].map((d) => sources(d)))).flat(),
  "mod.ts",
  "train.ts",
  "cli.ts",
];
const graph = new Map(await Promise.all(modules.map(async (m) => [m, await importsOf(m)] as const)));

Deno.test("layers: every module imports only from its own layer or below", () => {
  const upward: string[] = [];
  for (const [module, imports] of graph) {
    for (const target of imports) {
      if (layerOf(target) > layerOf(module)) upward.push(`${module} → ${target}`);
    }
  }
  assert.deepEqual(upward, []);
  assert.ok(graph.size > 100, `found ${graph.size} modules`);
});

Deno.test("layers: no import cycles between modules", () => {
  const state = new Map<string, "open" | "done">();
  const cycles: string[] = [];
  const visit = (module: string, path: string[]) => {
    if (state.get(module) === "done") return;
    if (state.get(module) === "open") {
      cycles.push([...path.slice(path.indexOf(module)), module].join(" → "));
      return;
    }
    state.set(module, "open");
    for (const target of graph.get(module) ?? []) visit(target, [...path, module]);
    state.set(module, "done");
  };
  for (const module of graph.keys()) visit(module, []);
  assert.deepEqual(cycles, []);
});
