/**
 * Set-up step run before the tests, benchmarks and demo (`deno task setup`; `deno task test|train|bench` run it
 * first): makes sure Deno's WebGPU finds a fast adapter.
 *
 * - A Vulkan adapter (a GPU's driver, or Mesa's llvmpipe Vulkan driver on the CPU): nothing to do.
 * - Linux without one — no adapter at all, or only wgpu's OpenGL/EGL backend over Mesa's llvmpipe, which is
 *   single-threaded, has no `shader-f16` and is several times slower: installs Debian's `mesa-vulkan-drivers`
 *   (apt-get; with sudo when not root), saying so. If Vulkan still cannot be had, it goes on with GL and says
 *   clearly that this is the slow path.
 * - `DENO_WEBGPU_BACKEND` set by the user: that choice is kept and only checked.
 * - `RLHF_SETUP_NO_INSTALL=1`: never installs anything; reports what it found.
 *
 * - `--browser` (what `deno task test` passes): also makes sure headless Chromium is there for the browser test
 *   (`tests/browser_test.ts`), installing Debian's `chromium` with apt-get when missing, and saying clearly when it
 *   cannot (the browser test then fails, naming this step).
 * - `--blas` (what `deno task test:cpu` passes): also makes sure OpenBLAS is there for the CPU backend's matrix
 *   products, installing Debian's `libopenblas0-pthread` when missing (without it they run in TypeScript, slower).
 *
 * - `--cpu-ok` (what `deno task train` passes): the program runs on the CPU backend where auto finds no hardware
 *   adapter (`engine/device.ts`), so a software adapter or none is fine: nothing is installed for WebGPU then, and
 *   OpenBLAS is made sure of as with `--blas`. With a GPU, the adapter is checked as usual.
 *
 * Exits 1 only when no adapter exists at all (never with `--cpu-ok`). The engine makes the same Vulkan-before-GL
 * choice in every process (`engine/device.ts`) and names the API in its start-up line.
 */

import { GL_SLOW_PATH } from "../engine/device.ts";

interface Found {
  /** Adapter description, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)". */
  name: string;
  /** Whether it has shader-f16. */
  f16: boolean;
}

/** Asks a fresh process (wgpu fixes its backend per process) for an adapter through `api` (undefined: wgpu's choice). */
async function probe(api?: string): Promise<Found | null> {
  const code = `const a = await navigator.gpu?.requestAdapter({ powerPreference: "high-performance" });
console.log(a ? JSON.stringify({ name: a.info.description || a.info.vendor || "unknown adapter",
  f16: a.features.has("shader-f16") }) : "");`;
  const env: Record<string, string> = { XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp" };
  if (api) env.DENO_WEBGPU_BACKEND = api;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    env,
    stdout: "piped",
    stderr: "null",
  }).output().catch(() => null);
  const text = out?.success ? new TextDecoder().decode(out.stdout).trim() : "";
  return text ? JSON.parse(text) as Found : null;
}

async function run(cmd: string[]): Promise<boolean> {
  console.error(`setup: $ ${cmd.join(" ")}`);
  const st = await new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    env: { DEBIAN_FRONTEND: "noninteractive" },
    stdout: "inherit",
    stderr: "inherit",
  }).output().catch(() => null);
  return st?.success ?? false;
}

async function hasCommand(name: string): Promise<boolean> {
  const st = await new Deno.Command("sh", { args: ["-c", `command -v ${name}`], stdout: "null", stderr: "null" })
    .output().catch(() => null);
  return st?.success ?? false;
}

/** Installs Debian package `pkg` with apt-get (sudo when not root); false, saying why, when that is not possible. */
async function aptInstall(pkg: string, elsewhere: string): Promise<boolean> {
  if (!await hasCommand("apt-get")) {
    console.error(`setup: apt-get not found; install ${elsewhere} with your package manager`);
    return false;
  }
  // sudo asks for a password only at a terminal; elsewhere (CI) -n fails at once instead of hanging.
  const sudo = Deno.uid?.() === 0 ? [] : Deno.stdin.isTerminal() ? ["sudo"] : ["sudo", "-n"];
  if (sudo.length && !await hasCommand("sudo")) {
    console.error(`setup: not root and no sudo: cannot install ${pkg} (ask an administrator)`);
    return false;
  }
  return await run([...sudo, "apt-get", "update", "-qq"]) &&
    await run([...sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", pkg]);
}

/** Installs Mesa's Vulkan driver with apt-get (sudo when not root); false when that is not possible here. */
function installVulkanDriver(): Promise<boolean> {
  const elsewhere =
    "Mesa's Vulkan driver (Fedora: mesa-vulkan-drivers, Arch: vulkan-swrast, Alpine: mesa-vulkan-swrast)";
  return aptInstall("mesa-vulkan-drivers", elsewhere);
}

const CHROMIUM_NAMES = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"];

/** With `--browser`: makes sure a Chromium is on PATH for the browser test, installing Debian's when missing. */
async function ensureChromium(): Promise<void> {
  if (Deno.env.get("CHROMIUM")) return;
  for (const name of CHROMIUM_NAMES) if (await hasCommand(name)) return;
  if (Deno.env.get("RLHF_SETUP_NO_INSTALL") === "1") {
    console.error(
      "setup: no chromium, and RLHF_SETUP_NO_INSTALL=1: the browser test (tests/browser_test.ts) will fail",
    );
    return;
  }
  console.error("setup: installing chromium for the browser test (headless, WebGPU on SwiftShader)");
  if (await aptInstall("chromium", "Chromium (or set CHROMIUM to a Chrome binary)") && await hasCommand("chromium")) {
    return;
  }
  console.error("setup: COULD NOT INSTALL chromium: the browser test (tests/browser_test.ts) will fail until it is");
}

/** With `--blas`: makes sure OpenBLAS is there for the CPU backend's matrix products (Debian's, via apt-get). */
async function ensureOpenBlas(): Promise<void> {
  const found = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib"].some((dir) => {
    try {
      return Deno.statSync(`${dir}/libopenblas.so.0`).isFile;
    } catch {
      return false;
    }
  });
  if (found || Deno.build.os !== "linux") return;
  if (Deno.env.get("RLHF_SETUP_NO_INSTALL") === "1") {
    console.error("setup: no OpenBLAS and RLHF_SETUP_NO_INSTALL=1: the CPU backend multiplies in TypeScript (slower)");
    return;
  }
  console.error("setup: installing libopenblas0-pthread for the CPU backend's matrix products");
  if (!await aptInstall("libopenblas0-pthread", "OpenBLAS (libopenblas.so.0)")) {
    console.error("setup: COULD NOT INSTALL OpenBLAS: the CPU backend multiplies in TypeScript (correct, slower)");
  }
}

function describe(found: Found, api: string): string {
  return `${found.name} (${api}${found.f16 ? ", shader-f16" : ""})`;
}

const SLOW_GL = `${GL_SLOW_PATH}; the tests and the demo still pass but take many times longer than on Vulkan`;

async function main(): Promise<number> {
  const forced = Deno.env.get("DENO_WEBGPU_BACKEND");
  if (forced) {
    const f = await probe(forced);
    if (!f) {
      console.error(`setup: no WebGPU adapter with DENO_WEBGPU_BACKEND=${forced}; unset it to let setup choose`);
      return 1;
    }
    console.error(`setup: WebGPU adapter: ${describe(f, forced)} (DENO_WEBGPU_BACKEND=${forced})`);
    if (forced.trim().toLowerCase() === "gl") console.error(`setup: note: ${SLOW_GL}`);
    return 0;
  }
  if (Deno.build.os !== "linux") {
    const f = await probe();
    if (!f) console.error("setup: no WebGPU adapter found; install or update your GPU driver");
    else console.error(`setup: WebGPU adapter: ${describe(f, Deno.build.os === "darwin" ? "metal" : "wgpu's choice")}`);
    return f ? 0 : 1;
  }
  const vulkan = await probe("vulkan");
  if (vulkan) {
    console.error(`setup: WebGPU adapter: ${describe(vulkan, "vulkan")}`);
    return 0;
  }
  const gl = await probe("gl");
  const noInstall = Deno.env.get("RLHF_SETUP_NO_INSTALL") === "1";
  console.error(
    gl ? `setup: the only WebGPU adapter is ${describe(gl, "gl")}: ${SLOW_GL}.` : "setup: no WebGPU adapter found.",
  );
  if (!noInstall) {
    console.error("setup: installing Mesa's Vulkan driver (mesa-vulkan-drivers: llvmpipe on Vulkan, runs on the CPU)");
    if (await installVulkanDriver()) {
      const after = await probe("vulkan");
      if (after) {
        console.error(`setup: WebGPU adapter: ${describe(after, "vulkan")}`);
        return 0;
      }
      console.error("setup: mesa-vulkan-drivers is installed but Deno's WebGPU still finds no Vulkan adapter");
    }
  } else {
    console.error("setup: RLHF_SETUP_NO_INSTALL=1: not installing mesa-vulkan-drivers");
  }
  if (gl) {
    console.error(`setup: going on with ${describe(gl, "gl")}, the slow path`);
    return 0;
  }
  console.error(
    "setup: still no WebGPU adapter. Install a Vulkan driver for your GPU, or on Debian/Ubuntu " +
      "`apt-get install mesa-vulkan-drivers` for the CPU fallback, then retry.",
  );
  return 1;
}

/** With `--cpu-ok`: true (and says so) when the only adapter is a software one or there is none. */
async function cpuBackendRuns(): Promise<boolean> {
  const f = Deno.build.os === "linux" ? await probe("vulkan") ?? await probe("gl") : await probe();
  if (f && !/llvmpipe|lavapipe|swiftshader|software/i.test(f.name)) return false;
  console.error(
    `setup: ${f ? `the only WebGPU adapter is ${f.name}, a software one` : "no WebGPU adapter"}: ` +
      "the program runs on the CPU backend (no WebGPU driver needed)",
  );
  return true;
}

const cpuOk = Deno.args.includes("--cpu-ok");
const status = cpuOk && await cpuBackendRuns() ? 0 : await main();
if (Deno.args.includes("--browser")) await ensureChromium();
if (Deno.args.includes("--blas") || cpuOk) await ensureOpenBlas();
Deno.exit(status);
