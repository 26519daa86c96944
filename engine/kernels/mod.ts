/**
 * Every declared kernel, by family (one file each in `engine/kernels/`). Ops import their family's file directly;
 * this list serves the descriptor test and the shader preload list.
 * @module
 */

import type { Kernel } from "../kernel.ts";
import * as attention from "./attention.ts";
import * as elementwise from "./elementwise.ts";
import * as indexing from "./indexing.ts";
import * as loss from "./loss.ts";
import * as matmul from "./matmul.ts";
import * as optim from "./optim.ts";
import * as random from "./random.ts";
import * as reduce from "./reduce.ts";
import * as sampling from "./sampling.ts";

/** The kernel families: module name → its exported kernels. */
const FAMILIES: Readonly<Record<string, Readonly<Record<string, unknown>>>> = {
  attention,
  elementwise,
  indexing,
  loss,
  matmul,
  optim,
  random,
  reduce,
  sampling,
};

/** Every declared kernel with the name it is exported under (`family.NAME`). */
export function allKernels(): { name: string; kernel: Kernel }[] {
  const out: { name: string; kernel: Kernel }[] = [];
  for (const [family, exports] of Object.entries(FAMILIES)) {
    for (const [name, value] of Object.entries(exports)) {
      if (isKernel(value)) out.push({ name: `${family}.${name}`, kernel: value });
    }
  }
  return out;
}

function isKernel(value: unknown): value is Kernel {
  return typeof value === "object" && value !== null && "shader" in value && "layout" in value;
}
