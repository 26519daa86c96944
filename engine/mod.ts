/**
 * The tensor engine: device and runtime, tensors, autograd, ops, optimisers and safetensors I/O.
 * @module
 */

export {
  type BackendChoice,
  type BackendName,
  type DawnModule,
  type DeviceHandle,
  type DeviceOptions,
  type GraphicsApi,
  requestGpuDevice,
  startupLine,
} from "./device.ts";
export { type KernelTime, type Profile } from "./profiler.ts";
export { type Access, f32Bits, grid1d, rowWorkgroup, Runtime, type RuntimeStats, Storage } from "./runtime.ts";
export type { DispatchObserver, ObservedDispatch } from "./observer.ts";
export type { Backend, BackendLimits } from "./backend.ts";
export { HostBuffer, type StorageBuffer } from "./storage.ts";
export { CpuRuntime } from "./cpu/runtime.ts";
export type { FieldLayout, Kernel, ParamFields, ParamType, ParamValue, ParamValues } from "./kernel.ts";
export { initEngine } from "./init.ts";
export { preloadShaders, provideShaders } from "./shaders.ts";
export {
  check,
  type DType,
  empty,
  type GradNode,
  isGradEnabled,
  keep,
  noGrad,
  noGradAsync,
  readAll,
  runtime,
  Tensor,
  tensor,
  type TensorData,
  tidy,
  tidyAsync,
} from "./tensor.ts";
export {
  backward,
  type BackwardOptions,
  needsGrad,
  record,
  recordMulti,
  saveForBackward,
  zeroGrad,
} from "./autograd.ts";
export * from "./ops/mod.ts";
export * from "./optim.ts";
export {
  createFlatParameters,
  FLAT_ALIGN,
  FlatChunk,
  type FlatOptions,
  type FlatParameterInit,
  FlatParameters,
  type FlatSlot,
  flatSlotOf,
} from "./flat.ts";
export { loadSafetensors, saveSafetensors } from "./io.ts";
