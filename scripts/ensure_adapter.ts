/**
 * Set-up check run before the tests, benchmarks and demo: makes sure Deno's WebGPU finds an
 * adapter. On a machine without a GPU, Debian's `mesa-vulkan-drivers` provides the CPU
 * "llvmpipe" Vulkan driver; this script installs it (with apt-get) when no adapter is found.
 * With a real GPU it installs nothing.
 */

async function probe(): Promise<string | null> {
  // A fresh process: an adapter lookup result is cached for the life of a process.
  const code = `const a = await navigator.gpu?.requestAdapter({ powerPreference: "high-performance" });
console.log(a ? (a.info.description || a.info.vendor || "unknown adapter") : "");`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    env: { XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp" },
    stdout: "piped",
    stderr: "null",
  }).output();
  const name = new TextDecoder().decode(out.stdout).trim();
  return out.success && name ? name : null;
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

const found = await probe();
if (found) {
  console.error(`setup: WebGPU adapter: ${found}`);
} else {
  console.error("setup: no WebGPU adapter found; installing Mesa's Vulkan driver (llvmpipe, runs on the CPU)...");
  const isRoot = Deno.uid?.() === 0;
  const sudo = isRoot ? [] : ["sudo"];
  const ok = await run([...sudo, "apt-get", "update", "-qq"]) &&
    await run([...sudo, "apt-get", "install", "-y", "-qq", "mesa-vulkan-drivers"]);
  const after = ok ? await probe() : null;
  if (!after) {
    console.error(
      "setup: still no WebGPU adapter. Install a Vulkan driver for your GPU, or on Debian/Ubuntu " +
        "`apt-get install mesa-vulkan-drivers` for the CPU fallback, then retry.",
    );
    Deno.exit(1);
  }
  console.error(`setup: WebGPU adapter: ${after}`);
}
