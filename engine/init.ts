/**
 * Engine start-up: {@linkcode initEngine} picks the backend — a WebGPU device (building the runtime and, where the
 * adapter offers cooperative matrices, checking the mixed-precision kernel before any product may use it) or the CPU
 * backend: asked for with `backend: "cpu"`, or chosen by "auto" when the only WebGPU adapter is a software one (or
 * there is none).
 * @module
 */

import { backendChoice, type DeviceOptions, reasonForCpu, requestGpuDevice, startupLine } from "./device.ts";
import type { Backend } from "./backend.ts";
import { CpuRuntime } from "./cpu/runtime.ts";
import { hasNativeBlas } from "./cpu/blas.ts";
import { Runtime } from "./runtime.ts";
import { preloadShaders, shadersAreLocal } from "./shaders.ts";
import { verifyCoopMatmul } from "./ops/matmul_coop.ts";
import { setRuntime } from "./tensor.ts";

let active: Backend | null = null;
let initializing: Promise<Backend> | null = null;

/**
 * Initialises the engine (idempotent; concurrent calls share one backend): on a WebGPU device, or on the CPU backend
 * where auto finds only a software adapter. See {@linkcode DeviceOptions} for choosing the backend and adapter.
 */
export function initEngine(options: DeviceOptions = {}): Promise<Backend> {
  if (active) return Promise.resolve(active);
  initializing ??= start(options).catch((e) => {
    initializing = null; // a later call may retry (e.g. after installing a driver)
    throw e;
  });
  return initializing;
}

async function start(options: DeviceOptions): Promise<Backend> {
  const choice = backendChoice(options);
  if (choice === "cpu") return startCpu(options, null);
  if (choice === "auto") {
    const why = await reasonForCpu(options);
    if (why) return startCpu(options, why);
  }
  if (!shadersAreLocal()) await preloadShaders();
  const handle = await requestGpuDevice(options);
  const rt = new Runtime(handle);
  // Mixed-precision products are used only once their kernel has given right results on this device.
  if (handle.hasCoopMatrix) await verifyCoopMatmul(rt);
  setRuntime(rt);
  return active = rt;
}

/**
 * The CPU backend: no adapter to find. Its start-up line unless `verbose: false`; when auto chose it (`why`), the
 * line says why, and also when no native BLAS loaded (products then run in TypeScript: install OpenBLAS).
 */
function startCpu(options: DeviceOptions, why: string | null): Backend {
  const rt = new CpuRuntime();
  if (options.verbose !== false) {
    const notes = [why ? `chosen because ${why}` : "", hasNativeBlas() ? "" : NO_BLAS_NOTE].filter((n) => n);
    console.error(startupLine(rt.handle) + notes.map((n) => `; ${n}`).join(""));
  }
  setRuntime(rt);
  return active = rt;
}

/** What the start-up line says when no native BLAS loaded. */
const NO_BLAS_NOTE = "no native BLAS loaded, matrix products in TypeScript are slow: install libopenblas0-pthread " +
  "(`deno task setup`) and allow FFI (-A)";
