/**
 * The weights of a Hugging Face model folder as model parameters: read (the files themselves are
 * `formats/model_folder.ts`'s job), matched against the model's parameter spec, uploaded as GPU parameters,
 * initialised at random, and saved.
 * @module
 */

import { type HostTensor, shapeSize } from "../formats/host_tensor.ts";
import { readModelFolder } from "../formats/model_folder.ts";
import { readHostTensors, saveSafetensors } from "../engine/io.ts";
import type { Tensor } from "../engine/tensor.ts";
import { mulberry32 } from "../engine/random.ts";
import { createFlatParameters, type FlatOptions } from "../engine/flat.ts";

/** Weights read from a folder, with the file they came from (for error messages). */
export interface LoadedWeights {
  /** Tensors by checkpoint name. */
  tensors: Map<string, HostTensor>;
  /** The file (or index file) read. */
  file: string;
}

/**
 * Reads the weights of a model folder (see {@link readModelFolder}: `model.safetensors`, the sharded index, or
 * `pytorch_model.bin`). Given the model's `spec` (and the `options` later given to {@link matchWeights}), a
 * `pytorch_model.bin` is checked against it before any tensor data is allocated: wrong shapes are reported at once,
 * ignored buffers are not read, and the memory the load may take is bounded by the expected parameters.
 */
export async function readWeights(
  dir: string,
  spec?: ParamSpec,
  options: { prefix?: string; ignore?: RegExp } = {},
): Promise<LoadedWeights> {
  const expectedShape = spec && ((raw: string) => {
    const name = normaliseName(raw);
    if (options.ignore?.test(name)) return null;
    return spec.get(name) ?? (options.prefix ? spec.get(options.prefix + name) : undefined);
  });
  const { tensors, file } = await readModelFolder(dir, { expectedShape });
  return { tensors, file };
}

/** The shape every parameter must have, by HF name. */
export type ParamSpec = Map<string, number[]>;

/** Renames applied to checkpoint keys before matching (old-style LayerNorm names). */
function normaliseName(name: string): string {
  return name.replace(/LayerNorm\.gamma$/, "LayerNorm.weight").replace(/LayerNorm\.beta$/, "LayerNorm.bias");
}

/**
 * Matches checkpoint tensors to the expected parameters. `prefix` is prepended to keys that lack it
 * (a base-model checkpoint loaded into a head model); `ignore` matches buffers to skip. Throws one
 * error that lists every missing, unexpected and wrongly shaped tensor.
 */
export function matchWeights(
  loaded: LoadedWeights,
  spec: ParamSpec,
  options: { prefix?: string; ignore?: RegExp; optional?: Set<string> } = {},
): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  const unexpected: string[] = [];
  const wrong: string[] = [];
  for (const [rawName, t] of loaded.tensors) {
    let name = normaliseName(rawName);
    if (options.ignore?.test(name)) continue;
    if (!spec.has(name) && options.prefix && spec.has(options.prefix + name)) name = options.prefix + name;
    const want = spec.get(name);
    if (!want) {
      unexpected.push(rawName);
      continue;
    }
    if (want.join() !== t.shape.join()) {
      wrong.push(`${rawName}: expected [${want}], found [${t.shape}]`);
      continue;
    }
    if (t.dtype !== "f32") {
      wrong.push(`${rawName}: expected a floating-point tensor, found ${t.sourceDtype ?? t.dtype}`);
      continue;
    }
    out.set(name, t);
  }
  const missing = [...spec.keys()].filter((k) => !out.has(k) && !options.optional?.has(k));
  // Canonical order (the spec's), whatever the file's: optimiser state is indexed by parameter position.
  const ordered = new Map([...spec.keys()].filter((k) => out.has(k)).map((k) => [k, out.get(k)!]));
  if (missing.length || unexpected.length || wrong.length) {
    const parts: string[] = [];
    const list = (xs: string[]) => xs.slice(0, 20).join(", ") + (xs.length > 20 ? `, … (${xs.length} in all)` : "");
    if (missing.length) parts.push(`missing: ${list(missing)}`);
    if (unexpected.length) parts.push(`unexpected: ${list(unexpected)}`);
    if (wrong.length) parts.push(`wrong shape or type: ${list(wrong)}`);
    throw new Error(`${loaded.file}: weights do not match the model config — ${parts.join("; ")}`);
  }
  return ordered;
}

/**
 * Uploads host weights as trainable GPU parameters (kept out of `tidy` scopes), allocated flat: views of one
 * buffer (a few for very large models), so that backward writes their gradients into one flat buffer and an
 * optimiser updates them with one dispatch per buffer ({@linkcode createFlatParameters}).
 */
export function uploadParams(host: Map<string, HostTensor>, options: FlatOptions = {}): Map<string, Tensor> {
  const inits = [...host].map(([name, h]) => ({
    name,
    shape: h.shape,
    data: h.data instanceof Float32Array ? h.data : Float32Array.from(h.data),
  }));
  return new Map(createFlatParameters(inits, options).params.map((t) => [t.name!, t]));
}

/** Deterministic N(0, std²) initialisation for parameters (Box–Muller over a seeded PRNG). */
export function randomParams(spec: ParamSpec, seed: number, std = 0.02): Map<string, HostTensor> {
  const r = mulberry32(seed);
  const next = () => r() + 2 ** -33; // in (0, 1): safe for log

  const out = new Map<string, HostTensor>();
  for (const [name, shape] of spec) {
    const n = shapeSize(shape);
    const data = new Float32Array(n);
    if (/(LayerNorm|ln_\w+|ln_f)\.weight$/.test(name)) data.fill(1);
    else if (!name.endsWith(".bias")) {
      // Box–Muller, both outputs used.
      for (let i = 0; i < n; i += 2) {
        const r = std * Math.sqrt(-2 * Math.log(next())), a = 2 * Math.PI * next();
        data[i] = r * Math.cos(a);
        if (i + 1 < n) data[i + 1] = r * Math.sin(a);
      }
    }
    out.set(name, { dtype: "f32", shape, data });
  }
  return out;
}

/** Reads parameters back to the host (one GPU round trip). */
export async function downloadParams(params: Map<string, Tensor>): Promise<Map<string, HostTensor>> {
  return await readHostTensors(params);
}

/** Writes parameters as `model.safetensors` with metadata `{"format":"pt"}` (atomically; one GPU readback). */
export async function saveParams(file: string, params: Map<string, Tensor>): Promise<void> {
  await saveSafetensors(params, file, { metadata: { format: "pt" } });
}
