/**
 * Tensor-level safetensors I/O (like `safetensors.torch.load_file` / `save_file`): files ↔ GPU tensors.
 * @module
 */

import { readSafetensors, type SafetensorsWriteTensor, writeSafetensors } from "../formats/safetensors.ts";
import { readAll, type Tensor, tensor } from "./tensor.ts";

/** Reads a `.safetensors` file into GPU tensors (F16/BF16/F64 become f32; integer types i32). */
export async function loadSafetensors(path: string | URL): Promise<Map<string, Tensor>> {
  const { tensors } = await readSafetensors(path);
  const out = new Map<string, Tensor>();
  for (const [name, h] of tensors) out.set(name, tensor(h.data, h.shape, h.dtype));
  return out;
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
  const entries = tensors instanceof Map ? [...tensors] : Object.entries(tensors);
  const data = await readAll(entries.map(([, t]) => t));
  const out: Record<string, SafetensorsWriteTensor> = {};
  entries.forEach(([name, t], i) => {
    out[name] = {
      dtype: t.dtype === "i32" ? "I32" : options.dtype ?? "F32",
      shape: [...t.shape],
      data: data[i],
    };
  });
  await writeSafetensors(path, out, options.metadata);
}
