/** Locates `../shared/fixtures/hf-tiny` (Hugging Face reference checkpoints) and reads references. */
import { readSafetensors } from "../engine/safetensors.ts";
import type { HostTensor } from "../engine/host_tensor.ts";

/** Absolute path of the hf-tiny fixtures folder; throws a clear message when it is missing. */
export function fixtureDir(name: string): string {
  const url = new URL(`../../shared/fixtures/hf-tiny/${name}`, import.meta.url);
  try {
    Deno.statSync(url);
  } catch {
    throw new Error(`fixture ${url.pathname} is missing: the tests need ../shared/fixtures beside the checkout`);
  }
  return url.pathname;
}

/** Tensors of a fixture's `reference.safetensors`. */
export async function reference(name: string): Promise<Map<string, HostTensor>> {
  return (await readSafetensors(`${fixtureDir(name)}/reference.safetensors`)).tensors;
}

/** Rows of a 2-D host tensor as number arrays. */
export function rows(t: HostTensor): number[][] {
  const [r, c] = t.shape;
  return Array.from({ length: r }, (_, i) => Array.from(t.data.subarray(i * c, (i + 1) * c)));
}
