/**
 * The weights of a Hugging Face model folder, found and read as transformers does: `model.safetensors`, else the
 * sharded `model.safetensors.index.json`, else PyTorch's `pytorch_model.bin` (read without running any of its
 * code). Sharded `pytorch_model.bin` checkpoints are refused with a message saying so.
 * @module
 */

import { exists, isRemote } from "./files.ts";
import { readSafetensors, readShardedSafetensors, type SafetensorsContents } from "./safetensors.ts";
import { displayPath, SafetensorsError } from "./safetensors_checks.ts";
import { readTorchCheckpoint, type TorchCheckpointOptions } from "./torch_checkpoint.ts";

/** The safetensors weight files of a model folder, in order of preference. */
export const SAFETENSORS_WEIGHT_FILES: readonly string[] = ["model.safetensors", "model.safetensors.index.json"];
/** Every weight file {@linkcode readModelFolder} reads, in transformers' order of preference. */
export const MODEL_WEIGHT_FILES: readonly string[] = [...SAFETENSORS_WEIGHT_FILES, "pytorch_model.bin"];

/** The weights of a model folder and the file they were read from. */
export interface FolderWeights extends SafetensorsContents {
  /** The file (or index file) read, as shown in messages. */
  file: string;
}

/** Options of {@linkcode readModelFolder}. */
export interface ReadModelFolderOptions {
  /**
   * Read safetensors files only, and report a folder without them as a {@linkcode SafetensorsError}
   * (otherwise `pytorch_model.bin` is tried last and a folder without weights is a plain `Error`).
   */
  safetensorsOnly?: boolean;
  /** What the model expects of each tensor of a `pytorch_model.bin`, checked before any data is read. */
  expectedShape?: TorchCheckpointOptions["expectedShape"];
}

/** `name` inside folder `dir` (a path, or a `file:` URL with or without its trailing slash). */
function inFolder(dir: string | URL, name: string): string | URL {
  if (dir instanceof URL) return new URL(name, dir.href.endsWith("/") ? dir : dir.href + "/");
  return dir === "" ? name : `${dir.replace(/\/$/, "")}/${name}`;
}

/** Reads weight file `name` of a model folder with the reader its format needs. */
async function readWeightFile(
  path: string | URL,
  name: string,
  options: ReadModelFolderOptions,
): Promise<SafetensorsContents> {
  if (name === "model.safetensors") return await readSafetensors(path);
  if (name === "model.safetensors.index.json") return await readShardedSafetensors(path);
  if (isRemote(path)) {
    throw new Error(`${displayPath(path)}: pytorch_model.bin is read from local files only; convert to safetensors`);
  }
  return { tensors: await readTorchCheckpoint(path, { expectedShape: options.expectedShape }), metadata: {} };
}

/** The error for a folder that holds none of the weight files looked for. */
async function noWeightsError(dir: string | URL, options: ReadModelFolderOptions): Promise<Error> {
  if (options.safetensorsOnly) {
    const why = "no checkpoint found (looked for model.safetensors and model.safetensors.index.json)";
    return new SafetensorsError(displayPath(dir), why);
  }
  const shown = displayPath(dir).replace(/\/$/, "");
  if (await exists(inFolder(dir, "pytorch_model.bin.index.json"), "file")) {
    return new Error(`${shown}: sharded pytorch_model.bin checkpoints are not supported; convert to safetensors`);
  }
  return new Error(`${shown}: no weights found (looked for ${MODEL_WEIGHT_FILES.join(", ")})`);
}

/**
 * Reads the weights of model folder `dir`: the first of {@linkcode MODEL_WEIGHT_FILES} it holds (of
 * {@linkcode SAFETENSORS_WEIGHT_FILES} with `safetensorsOnly`). Errors name the file and the reason: a
 * {@linkcode SafetensorsError} or `TorchCheckpointError` for a damaged file, an `Error` naming the folder when it
 * has no weights.
 *
 * @param dir Folder path or `file:` URL.
 * @param options Which formats count, and the expected shapes a `pytorch_model.bin` is checked against.
 * @returns The tensors (host memory), the metadata (empty for `pytorch_model.bin`) and the file read.
 */
export async function readModelFolder(dir: string | URL, options: ReadModelFolderOptions = {}): Promise<FolderWeights> {
  for (const name of options.safetensorsOnly ? SAFETENSORS_WEIGHT_FILES : MODEL_WEIGHT_FILES) {
    const path = inFolder(dir, name);
    if (!(await exists(path, "file"))) continue;
    const { tensors, metadata } = await readWeightFile(path, name, options);
    return { tensors, metadata, file: displayPath(path) };
  }
  throw await noWeightsError(dir, options);
}

/**
 * Loads the checkpoint in a model directory: `model.safetensors` if present, otherwise the sharded
 * `model.safetensors.index.json`.
 * @param dir Directory path or `file:` URL.
 * @returns The tensors and metadata.
 */
export async function loadSafetensorsDir(dir: string | URL): Promise<SafetensorsContents> {
  const { tensors, metadata } = await readModelFolder(dir, { safetensorsOnly: true });
  return { tensors, metadata };
}
