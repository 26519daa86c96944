/**
 * WebGPU device acquisition: picks an implementation (Deno's built-in WebGPU or Dawn through
 * the npm package `webgpu`), the graphics API under Deno's WebGPU (Vulkan before OpenGL), an adapter,
 * and requests the adapter's real limits.
 * @module
 */

/** Where kernels run: Deno's built-in WebGPU, Dawn through npm, a browser's WebGPU, or the CPU backend. */
export type BackendName = "deno" | "dawn" | "browser" | "cpu";

/**
 * The graphics API under the WebGPU implementation: what `DENO_WEBGPU_BACKEND` selects in Deno's WebGPU (wgpu).
 * "gl" is wgpu's OpenGL/EGL backend: on Mesa's llvmpipe it is single-threaded and has no `shader-f16`, several
 * times slower than llvmpipe's Vulkan driver. "auto" means the implementation chose and did not say which.
 */
export type GraphicsApi = "vulkan" | "metal" | "dx12" | "gl" | "auto";

/** The npm package `webgpu` (Dawn's Node-API addon), as `await import("npm:webgpu@0.6.2")` returns it. */
export interface DawnModule {
  /** Creates Dawn's `GPU` object with Dawn flags (e.g. `enable-dawn-features=allow_unsafe_apis`). */
  create(flags: string[]): GPU;
  /** The WebGPU globals (`GPUBufferUsage`, …) to install where missing. */
  globals: Record<string, unknown>;
}

/** Options for {@linkcode requestGpuDevice}. */
export interface DeviceOptions {
  /**
   * Where kernels run. "auto" (default): Deno's built-in WebGPU on a real GPU, and the CPU backend when the only
   * adapter is a software one (llvmpipe, lavapipe, SwiftShader — emulating a GPU on the CPU is many times slower
   * than the CPU backend) or when there is none; in a browser, the browser's WebGPU. "webgpu" and "deno": Deno's
   * built-in WebGPU whatever the adapter (a browser's in a browser). "dawn": Dawn, from the module given as `dawn`;
   * auto never picks Dawn: on the lent H200 (2026-11-26) Dawn 0.6.2 under Deno 2.9.6 segfaults once more than 256
   * dispatches are submitted before a wait (bench/dawn_probe.ts), so it stays opt-in. "cpu": no WebGPU at all —
   * tensors in host memory and the CPU implementation of every kernel (`engine/cpu/`; matrix products by OpenBLAS
   * when it loads). When not given, the environment variable `RLHF_WEBGPU_BACKEND` (same values) decides.
   */
  backend?: BackendChoice;
  /**
   * Dawn's module for `backend: "dawn"`: `await import("npm:webgpu@0.6.2")`. The library never imports it itself, so
   * its 130 MB package is fetched only by programs that choose Dawn.
   */
  dawn?: DawnModule;
  /** Adapter preference; "high-performance" by default. */
  powerPreference?: GPUPowerPreference;
  /** Print one line naming the backend and adapter (default false). */
  verbose?: boolean;
}

/** What was chosen: the device plus a description for logs and benchmarks. */
export interface DeviceHandle {
  /** The WebGPU device (null on the CPU backend). */
  device: GPUDevice | null;
  /** The implementation behind it. */
  backend: BackendName;
  /** The graphics API under it (see {@linkcode GraphicsApi}). */
  graphicsApi: GraphicsApi;
  /** Adapter description, e.g. "NVIDIA H100 80GB HBM3" or "llvmpipe (LLVM 15.0.6, 256 bits)". */
  adapterName: string;
  /** True for a software/fallback adapter such as llvmpipe. */
  isFallbackAdapter: boolean;
  /** Whether the device has `shader-f16`. */
  hasF16: boolean;
  /** Whether the device has `timestamp-query`. */
  hasTimestamps: boolean;
  /**
   * Whether the device has wgpu's native `wgpu-cooperative-matrix` feature (WGSL `enable wgpu_cooperative_matrix;`:
   * subgroup-wide 16×16 matrix multiply-adds; on Vulkan VK_KHR_cooperative_matrix, NVIDIA's tensor cores).
   */
  hasCoopMatrix: boolean;
  /** Whether the device has `subgroups`. */
  hasSubgroups: boolean;
  /** The adapter's subgroup size when it has only one (NVIDIA: 32), else null. */
  subgroupSize: number | null;
  /** The adapter's feature names, sorted (for logs and benchmark records). */
  adapterFeatures: string[];
}

function adapterDescription(adapter: GPUAdapter): string {
  const info = adapter.info;
  return info.description || [info.vendor, info.architecture, info.device].filter((s) => s).join(" ") || "unknown";
}

/** Whether `adapter` is a software one (llvmpipe, lavapipe, SwiftShader, or flagged as a fallback adapter). */
export function isSoftwareAdapter(adapter: GPUAdapter): boolean {
  const info = adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
  const desc = adapterDescription(adapter).toLowerCase();
  return Boolean(info.isFallbackAdapter) || /llvmpipe|lavapipe|swiftshader|software/.test(desc);
}

const WGPU_APIS: readonly GraphicsApi[] = ["vulkan", "metal", "dx12", "gl"];

/**
 * Whether Deno's WebGPU finds an adapter through `api`, asked in a worker: wgpu reads `DENO_WEBGPU_BACKEND` once,
 * when a thread first requests an adapter, so a probe in this thread would fix the choice for good.
 */
async function workerFindsAdapter(api: GraphicsApi): Promise<boolean> {
  const code = `const a = await navigator.gpu?.requestAdapter(); self.postMessage(Boolean(a)); self.close();`;
  Deno.env.set("DENO_WEBGPU_BACKEND", api);
  const worker = new Worker(`data:text/javascript,${encodeURIComponent(code)}`, { type: "module" });
  try {
    return await new Promise<boolean>((resolve) => {
      worker.onmessage = (e) => resolve(e.data === true);
      worker.onerror = (e) => {
        e.preventDefault();
        resolve(false);
      };
    });
  } finally {
    worker.terminate();
  }
}

/** The graphics API picked for Deno's WebGPU, and whether the user's `DENO_WEBGPU_BACKEND` picked it. */
interface ApiChoice {
  api: GraphicsApi;
  userSet: boolean;
}

/**
 * Picks the graphics API for Deno's WebGPU before this thread's first adapter request. A user's
 * `DENO_WEBGPU_BACKEND` is kept. Otherwise on Linux Vulkan comes first and wgpu's GL backend only when no Vulkan
 * adapter exists (with both, wgpu may pick GL's llvmpipe, the slow path); macOS has only Metal; elsewhere wgpu
 * chooses. The choice is written to `DENO_WEBGPU_BACKEND`, so child processes inherit it without probing again.
 */
async function chooseGraphicsApi(): Promise<ApiChoice> {
  const set = Deno.env.get("DENO_WEBGPU_BACKEND")?.trim().toLowerCase();
  if (set) return { api: WGPU_APIS.includes(set as GraphicsApi) ? set as GraphicsApi : "auto", userSet: true };
  if (Deno.build.os === "darwin") return { api: "metal", userSet: false };
  if (Deno.build.os !== "linux") return { api: "auto", userSet: false };
  const api: GraphicsApi = await workerFindsAdapter("vulkan") ? "vulkan" : "gl";
  Deno.env.set("DENO_WEBGPU_BACKEND", api);
  return { api, userSet: false };
}

async function builtinAdapter(pref: GPUPowerPreference): Promise<{ adapter: GPUAdapter | null } & ApiChoice> {
  if (typeof navigator === "undefined" || !("gpu" in navigator)) return { adapter: null, api: "auto", userSet: false };
  let choice: ApiChoice = { api: "auto", userSet: false };
  try {
    // Mesa's Vulkan WSI complains on stderr when XDG_RUNTIME_DIR is unset (headless machines, CI).
    if (!Deno.env.get("XDG_RUNTIME_DIR")) Deno.env.set("XDG_RUNTIME_DIR", "/tmp");
    choice = await chooseGraphicsApi();
  } catch { /* no env permission: wgpu chooses */ }
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: pref }) ??
    await navigator.gpu.requestAdapter();
  return { adapter, ...choice };
}

async function dawnAdapter(pref: GPUPowerPreference, mod: DawnModule | undefined): Promise<GPUAdapter | null> {
  if (!mod || typeof mod.create !== "function" || !mod.globals) {
    throw new Error(
      'the Dawn backend needs its module: initEngine({ backend: "dawn", dawn: await import("npm:webgpu@0.6.2") })',
    );
  }
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

/** What the software path through wgpu's OpenGL backend costs (the start-up line and `deno task setup` say it). */
export const GL_SLOW_PATH =
  "wgpu's OpenGL backend over Mesa's llvmpipe is the SLOW path (one thread, no shader-f16, seconds to compile each " +
  "GPU kernel until Mesa's shader cache holds it)";

/**
 * The engine's start-up line: implementation, graphics API and adapter, and what a software adapter means —
 * on wgpu's GL backend, that it is the slow path and how to get Vulkan.
 */
export function startupLine(h: DeviceHandle): string {
  if (h.backend === "cpu") return `rlhf-webgpu: CPU backend (${h.adapterName})`;
  const api = h.graphicsApi === "auto" ? "" : ` (${h.graphicsApi})`;
  let note = "";
  if (h.isFallbackAdapter && h.graphicsApi === "gl") {
    note = `; ${GL_SLOW_PATH}. For Mesa's faster Vulkan driver run \`deno task setup\` or install ` +
      "mesa-vulkan-drivers";
  } else if (h.isFallbackAdapter) {
    note = "; software adapter (runs on the CPU): slow, small shapes only";
  }
  return `rlhf-webgpu: ${h.backend} WebGPU${api} on ${h.adapterName}${note}`;
}

/** The values of {@linkcode DeviceOptions.backend} and of `RLHF_WEBGPU_BACKEND`. */
export type BackendChoice = "auto" | "webgpu" | "deno" | "dawn" | "cpu";

const BACKEND_CHOICES: readonly BackendChoice[] = ["auto", "webgpu", "deno", "dawn", "cpu"];

/** The backend asked for: the option, else `RLHF_WEBGPU_BACKEND`, else "auto" (anything else throws). */
export function backendChoice(options: DeviceOptions): BackendChoice {
  const fromEnv = (typeof Deno !== "undefined" ? Deno.env.get("RLHF_WEBGPU_BACKEND") : undefined) || "auto";
  const choice = options.backend ?? fromEnv;
  if (!BACKEND_CHOICES.includes(choice as BackendChoice)) {
    throw new Error(`RLHF_WEBGPU_BACKEND must be one of ${BACKEND_CHOICES.join(", ")} (got "${choice}")`);
  }
  return choice as BackendChoice;
}

/**
 * For `backend: "auto"` in Deno: why the CPU backend should run instead of Deno's WebGPU — the only adapter is a
 * software one, or there is none — or null when a hardware adapter exists (or in a browser).
 */
export async function reasonForCpu(options: DeviceOptions): Promise<string | null> {
  if (typeof Deno === "undefined") return null;
  const found = await builtinAdapter(options.powerPreference ?? "high-performance");
  if (!found.adapter) return "no WebGPU adapter found";
  if (!isSoftwareAdapter(found.adapter)) return null;
  return `the only WebGPU adapter is a software one (${adapterDescription(found.adapter)}); ` +
    "RLHF_WEBGPU_BACKEND=webgpu uses it anyway";
}

/** An adapter and where it came from. */
interface FoundAdapter {
  adapter: GPUAdapter;
  backend: BackendName;
  graphicsApi: GraphicsApi;
}

/** Finds an adapter through Dawn or Deno's WebGPU; throws, saying where it looked and what to install, when none. */
async function findAdapter(choice: Exclude<BackendChoice, "cpu">, options: DeviceOptions): Promise<FoundAdapter> {
  const pref = options.powerPreference ?? "high-performance";
  if (choice === "dawn") {
    const adapter = await dawnAdapter(pref, options.dawn);
    if (!adapter) throw new Error("Dawn (npm:webgpu) found no WebGPU adapter");
    return { adapter, backend: "dawn", graphicsApi: "auto" };
  }
  const found = await builtinAdapter(pref);
  const builtin: BackendName = typeof Deno === "undefined" ? "browser" : "deno";
  if (found.adapter) return { adapter: found.adapter, backend: builtin, graphicsApi: found.api };
  let where = "";
  if (found.userSet) {
    where = ` with DENO_WEBGPU_BACKEND=${Deno.env.get("DENO_WEBGPU_BACKEND")} (from the environment)`;
  } else if (Deno.build.os === "linux") where = " (neither through Vulkan nor through OpenGL)";
  throw new Error(
    `No WebGPU adapter found${where}. On a machine without a GPU install Mesa's Vulkan driver ` +
      "(Debian/Ubuntu: apt-get install mesa-vulkan-drivers), or run `deno task setup`.",
  );
}

/**
 * Requests the device with the adapter's limits, `shader-f16` and `timestamp-query` where present, and wgpu's
 * native `subgroups` and `wgpu-cooperative-matrix` (the latter only with f16); when the native features are
 * refused, asks again without them.
 */
async function openDevice(adapter: GPUAdapter): Promise<GPUDevice> {
  const standard: GPUFeatureName[] = [];
  for (const f of ["shader-f16", "timestamp-query"] as GPUFeatureName[]) if (adapter.features.has(f)) standard.push(f);
  // Native wgpu features, by name (not in the WebGPU typings); cooperative matrices need f16 here.
  const native = ["subgroups", ...(standard.includes("shader-f16") ? ["wgpu-cooperative-matrix"] : [])]
    .filter((f) => adapter.features.has(f as GPUFeatureName)) as GPUFeatureName[];
  const limits = pickLimits(adapter);
  try {
    return await adapter.requestDevice({ requiredFeatures: [...standard, ...native], requiredLimits: limits });
  } catch (e) {
    if (native.length === 0) throw e;
    console.error(`rlhf-webgpu: device with ${native.join(", ")} refused (${(e as Error).message}); without them`);
    return await adapter.requestDevice({ requiredFeatures: standard, requiredLimits: limits });
  }
}

/** The {@linkcode DeviceHandle} of a device: what it has and what its adapter is. */
function describeDevice(device: GPUDevice, found: FoundAdapter): DeviceHandle {
  const { adapter, backend, graphicsApi } = found;
  const info = adapter.info as GPUAdapterInfo & { subgroupMinSize?: number; subgroupMaxSize?: number };
  const subgroupMin = info.subgroupMinSize, subgroupMax = info.subgroupMaxSize;
  return {
    device,
    backend,
    graphicsApi,
    adapterName: adapterDescription(adapter),
    isFallbackAdapter: isSoftwareAdapter(adapter),
    hasF16: device.features.has("shader-f16"),
    hasTimestamps: device.features.has("timestamp-query"),
    hasCoopMatrix: device.features.has("wgpu-cooperative-matrix" as GPUFeatureName),
    hasSubgroups: device.features.has("subgroups" as GPUFeatureName),
    subgroupSize: subgroupMin && subgroupMin === subgroupMax ? subgroupMin : null,
    adapterFeatures: [...adapter.features].sort(),
  };
}

/** Logs a device loss on stderr unless the device was destroyed on purpose. */
function reportDeviceLoss(device: GPUDevice): void {
  device.lost.then((info) => {
    if (info.reason !== "destroyed") {
      console.error(`rlhf-webgpu: GPU device lost (${info.reason}): ${info.message}`);
    }
  });
}

/**
 * Requests a WebGPU device with the adapter's full limits and the optional features the engine
 * uses (`shader-f16`, `timestamp-query`, and where the adapter has them wgpu's `subgroups` and
 * `wgpu-cooperative-matrix`). Throws a clear error when no adapter exists.
 */
export async function requestGpuDevice(options: DeviceOptions = {}): Promise<DeviceHandle> {
  const choice = backendChoice(options);
  if (choice === "cpu") throw new Error("requestGpuDevice: the CPU backend has no GPU device (use initEngine)");
  const found = await findAdapter(choice, options);
  const handle = describeDevice(await openDevice(found.adapter), found);
  if (options.verbose || handle.isFallbackAdapter && options.verbose !== false) {
    console.error(startupLine(handle));
  }
  reportDeviceLoss(handle.device!);
  return handle;
}
