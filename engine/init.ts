/**
 * Engine start-up: {@linkcode initEngine} picks the backend — a WebGPU device (building the runtime and, where the
 * adapter offers cooperative matrices, checking the mixed-precision kernel before any product may use it) or, with
 * `backend: "cpu"`, the CPU backend.
 * @module
 */

import { backendChoice, type DeviceOptions, requestGpuDevice, startupLine } from "./device.ts";
import type { Backend } from "./backend.ts";
import { CpuRuntime } from "./cpu/runtime.ts";
import { Runtime } from "./runtime.ts";
import { preloadShaders, shadersAreLocal } from "./shaders.ts";
import { verifyCoopMatmul } from "./ops/matmul_coop.ts";
import { setRuntime } from "./tensor.ts";

let active: Backend | null = null;
let initializing: Promise<Backend> | null = null;

/**
 * Initialises the engine on a WebGPU device (idempotent; concurrent calls share one device).
 * See {@linkcode DeviceOptions} for choosing the implementation and adapter.
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
  if (backendChoice(options) === "cpu") return startCpu(options);
  if (!shadersAreLocal()) await preloadShaders();
  const handle = await requestGpuDevice(options);
  const rt = new Runtime(handle);
  // Mixed-precision products are used only once their kernel has given right results on this device.
  if (handle.hasCoopMatrix) await verifyCoopMatmul(rt);
  setRuntime(rt);
  return active = rt;
}

/** The CPU backend: no adapter to find; its start-up line unless `verbose: false`. */
function startCpu(options: DeviceOptions): Backend {
  const rt = new CpuRuntime();
  if (options.verbose !== false) console.error(startupLine(rt.handle));
  setRuntime(rt);
  return active = rt;
}
