/**
 * Engine start-up: {@linkcode initEngine} picks the WebGPU device, builds the runtime and, where the adapter offers
 * cooperative matrices, checks the mixed-precision kernel before any product may use it.
 * @module
 */

import { type DeviceOptions, requestGpuDevice } from "./device.ts";
import { Runtime } from "./runtime.ts";
import { preloadShaders, shadersAreLocal } from "./shaders.ts";
import { verifyCoopMatmul } from "./ops/matmul_coop.ts";
import { setRuntime } from "./tensor.ts";

let active: Runtime | null = null;
let initializing: Promise<Runtime> | null = null;

/**
 * Initialises the engine on a WebGPU device (idempotent; concurrent calls share one device).
 * See {@linkcode DeviceOptions} for choosing the implementation and adapter.
 */
export function initEngine(options: DeviceOptions = {}): Promise<Runtime> {
  if (active) return Promise.resolve(active);
  initializing ??= start(options).catch((e) => {
    initializing = null; // a later call may retry (e.g. after installing a driver)
    throw e;
  });
  return initializing;
}

async function start(options: DeviceOptions): Promise<Runtime> {
  if (!shadersAreLocal()) await preloadShaders();
  const handle = await requestGpuDevice(options);
  const rt = new Runtime(handle);
  // Mixed-precision products are used only once their kernel has given right results on this device.
  if (handle.hasCoopMatrix) await verifyCoopMatmul(rt);
  setRuntime(rt);
  return active = rt;
}
