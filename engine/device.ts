/**
 * WebGPU device acquisition: picks an implementation (Deno's built-in WebGPU or Dawn through
 * the npm package `webgpu`), an adapter, and requests the adapter's real limits.
 * @module
 */

/** Which WebGPU implementation a device comes from. */
export type BackendName = "deno" | "dawn";

/** Options for {@linkcode requestGpuDevice}. */
export interface DeviceOptions {
  /**
   * "auto" (default) and "deno": Deno's built-in WebGPU. "dawn": Dawn through the npm package `webgpu`
   * (loaded only then). Auto does not pick Dawn: on the lent H200 (2026-11-26) Dawn 0.6.2 under Deno 2.9.6
   * segfaults once more than 256 dispatches are submitted before a wait (bench/dawn_probe.ts), so it stays opt-in.
   * When not given, the environment variable `RLHF_WEBGPU_BACKEND` (auto | deno | dawn) decides.
   */
  backend?: "auto" | BackendName;
  /** Adapter preference; "high-performance" by default. */
  powerPreference?: GPUPowerPreference;
  /** Print one line naming the backend and adapter (default false). */
  verbose?: boolean;
}

/** What was chosen: the device plus a description for logs and benchmarks. */
export interface DeviceHandle {
  /** The WebGPU device. */
  device: GPUDevice;
  /** The implementation behind it. */
  backend: BackendName;
  /** Adapter description, e.g. "NVIDIA H100 80GB HBM3" or "llvmpipe (LLVM 15.0.6, 256 bits)". */
  adapterName: string;
  /** True for a software/fallback adapter such as llvmpipe. */
  isFallbackAdapter: boolean;
  /** Whether the device has `shader-f16`. */
  hasF16: boolean;
  /** Whether the device has `timestamp-query`. */
  hasTimestamps: boolean;
}

const DAWN_SPECIFIER = "npm:webgpu@0.6.2";

function adapterDescription(adapter: GPUAdapter): string {
  const info = adapter.info;
  return info.description || [info.vendor, info.architecture, info.device].filter((s) => s).join(" ") || "unknown";
}

function isSoftware(adapter: GPUAdapter): boolean {
  const info = adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
  const desc = adapterDescription(adapter).toLowerCase();
  return Boolean(info.isFallbackAdapter) || /llvmpipe|lavapipe|swiftshader|software/.test(desc);
}

async function builtinAdapter(pref: GPUPowerPreference): Promise<GPUAdapter | null> {
  if (typeof navigator === "undefined" || !("gpu" in navigator)) return null;
  // Mesa's Vulkan WSI complains on stderr when XDG_RUNTIME_DIR is unset (headless machines, CI).
  try {
    if (!Deno.env.get("XDG_RUNTIME_DIR")) Deno.env.set("XDG_RUNTIME_DIR", "/tmp");
  } catch { /* no env permission: only the warning remains */ }
  return await navigator.gpu.requestAdapter({ powerPreference: pref }) ??
    await navigator.gpu.requestAdapter();
}

async function dawnAdapter(pref: GPUPowerPreference): Promise<GPUAdapter | null> {
  // Loaded lazily (non-literal specifier) so CPU-only users never download or load it.
  const spec = DAWN_SPECIFIER;
  const mod = await import(spec) as { create(flags: string[]): GPU; globals: Record<string, unknown> };
  for (const [k, v] of Object.entries(mod.globals)) {
    if (!(k in globalThis)) (globalThis as Record<string, unknown>)[k] = v;
  }
  const gpu = mod.create([]);
  return await gpu.requestAdapter({ powerPreference: pref });
}

function pickLimits(adapter: GPUAdapter): Record<string, number> {
  const want = [
    "maxStorageBufferBindingSize",
    "maxBufferSize",
    "maxComputeWorkgroupStorageSize",
    "maxComputeInvocationsPerWorkgroup",
    "maxComputeWorkgroupSizeX",
    "maxComputeWorkgroupSizeY",
    "maxComputeWorkgroupsPerDimension",
    "maxStorageBuffersPerShaderStage",
  ];
  const out: Record<string, number> = {};
  const lim = adapter.limits as unknown as Record<string, number>;
  for (const k of want) if (typeof lim[k] === "number") out[k] = lim[k];
  return out;
}

/**
 * Requests a WebGPU device with the adapter's full limits and the optional features the engine
 * uses (`shader-f16`, `timestamp-query`). Throws a clear error when no adapter exists.
 */
export async function requestGpuDevice(options: DeviceOptions = {}): Promise<DeviceHandle> {
  const pref = options.powerPreference ?? "high-performance";
  const envChoice = (typeof Deno !== "undefined" ? Deno.env.get("RLHF_WEBGPU_BACKEND") : undefined) ?? "auto";
  const choice = options.backend ?? envChoice;
  if (!["auto", "deno", "dawn"].includes(choice)) {
    throw new Error(`RLHF_WEBGPU_BACKEND must be auto, deno or dawn (got "${choice}")`);
  }
  let adapter: GPUAdapter | null = null;
  let backend: BackendName = "deno";
  if (choice === "dawn") {
    adapter = await dawnAdapter(pref);
    backend = "dawn";
    if (!adapter) throw new Error("Dawn (npm:webgpu) found no WebGPU adapter");
  } else {
    adapter = await builtinAdapter(pref);
  }
  if (!adapter) {
    throw new Error(
      "No WebGPU adapter found. On a machine without a GPU install Mesa's Vulkan driver " +
        "(Debian: apt-get install mesa-vulkan-drivers) or run `deno task setup`.",
    );
  }
  const features: GPUFeatureName[] = [];
  for (const f of ["shader-f16", "timestamp-query"] as GPUFeatureName[]) if (adapter.features.has(f)) features.push(f);
  const device = await adapter.requestDevice({ requiredFeatures: features, requiredLimits: pickLimits(adapter) });
  const handle: DeviceHandle = {
    device,
    backend,
    adapterName: adapterDescription(adapter),
    isFallbackAdapter: isSoftware(adapter),
    hasF16: device.features.has("shader-f16"),
    hasTimestamps: device.features.has("timestamp-query"),
  };
  if (options.verbose || handle.isFallbackAdapter && options.verbose !== false) {
    const note = handle.isFallbackAdapter ? " (software fallback adapter: slow, small shapes only)" : "";
    console.error(`rlhf-webgpu: ${backend} WebGPU on ${handle.adapterName}${note}`);
  }
  device.lost.then((info) => {
    if (info.reason !== "destroyed") {
      console.error(`rlhf-webgpu: GPU device lost (${info.reason}): ${info.message}`);
    }
  });
  return handle;
}
