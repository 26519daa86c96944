/**
 * The Hugging Face reference fixtures that ship with the tests (`tests/fixtures/hf-tiny`, see its README):
 * one place locates them and reads their references. No test reaches outside the repository.
 */
import { fileURLToPath } from "node:url";
import { readSafetensors } from "../formats/safetensors.ts";
import type { HostTensor } from "../formats/host_tensor.ts";

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

/**
 * A policy folder in the seed's layout, made in a new temporary folder the caller removes: the tiny GPT-2's
 * `config.json` and weights (`pytorch_model.bin` by default) with the tiny Chinese BERT tokenizer (`vocab.txt`,
 * `tokenizer_config.json`), plus any other files of the GPT-2 fixture named in `extra`.
 */
export async function seedLikePolicyDir(
  o: { weights?: "pytorch_model.bin" | "model.safetensors"; extra?: string[] } = {},
): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "policy-" });
  const g = fixtureDir("gpt2-tiny"), t = fixtureDir("tokenizer-bert-zh");
  const files: [string, string][] = [
    [g, "config.json"],
    [g, o.weights ?? "pytorch_model.bin"],
    [t, "vocab.txt"],
    [t, "tokenizer_config.json"],
    ...(o.extra ?? []).map((f): [string, string] => [g, f]),
  ];
  for (const [from, name] of files) await Deno.copyFile(`${from}/${name}`, `${dir}/${name}`);
  return dir;
}
