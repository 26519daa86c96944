/**
 * The Hugging Face reference fixtures that ship with the tests (`tests/fixtures/hf-tiny`, see its README):
 * one place locates them and reads their references. No test reaches outside the repository.
 */
import { fileURLToPath } from "node:url";
import { readSafetensors } from "../engine/safetensors.ts";
import type { HostTensor } from "../engine/host_tensor.ts";

/** URL of the fixtures folder (`tests/fixtures/hf-tiny/`). */
export const FIXTURES: URL = new URL("./fixtures/hf-tiny/", import.meta.url);

/** Absolute path of a file or folder inside the fixtures; throws a clear message when it is missing. */
export function fixturePath(rel: string): string {
  const path = fileURLToPath(new URL(rel, FIXTURES));
  try {
    Deno.statSync(path);
  } catch {
    throw new Error(`test fixture ${path} is missing: it ships with the repository (tests/fixtures/hf-tiny)`);
  }
  return path;
}

/** Absolute path of one fixture folder (e.g. "gpt2-tiny"). */
export function fixtureDir(name: string): string {
  return fixturePath(name);
}

/** Tensors of a fixture's `reference.safetensors`. */
export async function reference(name: string): Promise<Map<string, HostTensor>> {
  return (await readSafetensors(fixturePath(`${name}/reference.safetensors`))).tensors;
}

/** Rows of a 2-D host tensor as number arrays. */
export function rows(t: HostTensor): number[][] {
  const [r, c] = t.shape;
  return Array.from({ length: r }, (_, i) => Array.from(t.data.subarray(i * c, (i + 1) * c)));
}
