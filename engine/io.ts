/**
 * Tensor-level safetensors I/O (like `safetensors.torch.load_file` / `save_file`): files ↔ GPU tensors.
 * @module
 */

import type { HostTensor } from "../formats/host_tensor.ts";
import { readSafetensors, writeHostTensors } from "../formats/safetensors.ts";
import { readAll, type Tensor, tensor } from "./tensor.ts";

/** Reads a `.safetensors` file into GPU tensors (F16/BF16/F64 become f32; integer types i32). */
export async function loadSafetensors(path: string | URL): Promise<Map<string, Tensor>> {
  const { tensors } = await readSafetensors(path);
  const out = new Map<string, Tensor>();
  for (const [name, h] of tensors) out.set(name, tensor(h.data, h.shape, h.dtype));
  return out;
}

/** Copies GPU tensors to host memory, in the given order (one GPU readback). */
export async function readHostTensors(
  tensors: Map<string, Tensor> | Record<string, Tensor>,
): Promise<Map<string, HostTensor>> {
  const entries = tensors instanceof Map ? [...tensors] : Object.entries(tensors);
  const data = await readAll(entries.map(([, t]) => t));
  return new Map(entries.map(([name, t], i) => [name, { dtype: t.dtype, shape: [...t.shape], data: data[i] }]));
}

/**
 * Writes GPU tensors to a `.safetensors` file atomically (one GPU readback). f32 tensors are stored
 * as F32, or F16 with `{ dtype: "F16" }`; i32 tensors as I32.
 */
export async function saveSafetensors(
  tensors: Map<string, Tensor> | Record<string, Tensor>,
  path: string | URL,
  options: { metadata?: Record<string, string>; dtype?: "F32" | "F16" } = {},
): Promise<void> {
  const host = await readHostTensors(tensors);
  await writeHostTensors(path, host, { metadata: options.metadata, floatDtype: options.dtype });
}
