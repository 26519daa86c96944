/**
 * The graphics API under Deno's WebGPU: the engine prefers Vulkan to wgpu's slow OpenGL backend and names the API
 * in its start-up line; the set-up script (`scripts/ensure_adapter.ts`) keeps a user's `DENO_WEBGPU_BACKEND` and
 * says when GL is the slow path. Each case runs in a fresh process (wgpu fixes its backend once per thread).
 */
import { assert } from "./helpers.ts";
import { type DeviceHandle, startupLine } from "../engine/device.ts";

const DEVICE = new URL("../engine/device.ts", import.meta.url).href;
const INIT = new URL("../engine/init.ts", import.meta.url).href;
const SETUP = new URL("../scripts/ensure_adapter.ts", import.meta.url).pathname;

/** Runs `deno <args>` with this process's environment minus DENO_WEBGPU_BACKEND and RLHF_WEBGPU_BACKEND, plus `env`. */
async function deno(args: string[], env: Record<string, string> = {}) {
  const base = Deno.env.toObject();
  delete base.DENO_WEBGPU_BACKEND; // the engine of this test process set it
  delete base.RLHF_WEBGPU_BACKEND; // these tests are about the WebGPU path, also when the suite runs on the CPU backend
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    clearEnv: true,
    env: { ...base, NO_COLOR: "1", XDG_RUNTIME_DIR: base.XDG_RUNTIME_DIR ?? "/tmp", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout).trim(), stderr: dec.decode(out.stderr) };
}

/** The engine's device choice in a fresh process: its graphics API and start-up line. */
function engineChoice(env: Record<string, string> = {}) {
  const code = `import { requestGpuDevice } from "${DEVICE}";
const h = await requestGpuDevice({ verbose: true });
console.log(JSON.stringify({ api: h.graphicsApi, software: h.isFallbackAdapter }));`;
  return deno(["eval", code], env);
}

/** Whether a raw adapter request (no engine) finds one through `api` in a fresh process. */
async function rawAdapter(api: string): Promise<boolean> {
  const r = await deno(["eval", "console.log(Boolean(await navigator.gpu.requestAdapter()))"], {
    DENO_WEBGPU_BACKEND: api,
  });
  return r.stdout === "true";
}

Deno.test("engine: with DENO_WEBGPU_BACKEND unset, Vulkan when it has an adapter, else GL; the start-up line says which", async () => {
  const r = await engineChoice();
  assert.equal(r.code, 0, r.stderr);
  const { api } = JSON.parse(r.stdout);
  if (Deno.build.os === "linux") assert.equal(api, await rawAdapter("vulkan") ? "vulkan" : "gl");
  else if (Deno.build.os === "darwin") assert.equal(api, "metal");
  assert.match(r.stderr, new RegExp(`rlhf-webgpu: deno WebGPU \\(${api}\\) on `), r.stderr);
});

/** initEngine's choice in a fresh process, beside what a raw adapter request finds there. */
function autoChoice(env: Record<string, string> = {}) {
  const code = `import { initEngine } from "${INIT}";
import { isSoftwareAdapter } from "${DEVICE}";
const rt = await initEngine({});
const a = await navigator.gpu?.requestAdapter();
console.log(JSON.stringify({ backend: rt.handle.backend, adapter: Boolean(a), software: a ? isSoftwareAdapter(a) : null }));`;
  return deno(["eval", code], env);
}

Deno.test("initEngine auto: the CPU backend when the only adapter is software (or none), WebGPU on a GPU; the start-up line says why", async () => {
  const r = await autoChoice();
  assert.equal(r.code, 0, r.stderr);
  const { backend, adapter, software } = JSON.parse(r.stdout);
  if (!adapter || software) {
    assert.equal(backend, "cpu", r.stderr);
    const why = adapter
      ? "the only WebGPU adapter is a software one \\(.+\\); RLHF_WEBGPU_BACKEND=webgpu"
      : "no WebGPU";
    assert.match(r.stderr, new RegExp(`rlhf-webgpu: CPU backend \\(.+\\); chosen because ${why}`), r.stderr);
  } else {
    assert.equal(backend, "deno", r.stderr);
  }
  // "webgpu" keeps Deno's WebGPU whatever the adapter; "cpu" never asks for one; a wrong name is refused.
  if (adapter) {
    const w = await autoChoice({ RLHF_WEBGPU_BACKEND: "webgpu" });
    assert.equal(w.code, 0, w.stderr);
    assert.equal(JSON.parse(w.stdout).backend, "deno");
  }
  const c = await autoChoice({ RLHF_WEBGPU_BACKEND: "cpu" });
  assert.equal(JSON.parse(c.stdout).backend, "cpu");
  assert.doesNotMatch(c.stderr, /chosen because/);
  const bad = await autoChoice({ RLHF_WEBGPU_BACKEND: "metal" });
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /RLHF_WEBGPU_BACKEND must be one of auto, webgpu, deno, dawn, cpu \(got "metal"\)/);
});

Deno.test("engine: a user's DENO_WEBGPU_BACKEND=gl is kept and, on a software adapter, called the slow path", async () => {
  const r = await engineChoice({ DENO_WEBGPU_BACKEND: "gl" });
  if (r.code !== 0) { // no OpenGL/EGL on this machine: the error names the setting
    assert.match(r.stderr, /No WebGPU adapter found with DENO_WEBGPU_BACKEND=gl \(from the environment\)/);
    return;
  }
  const { api, software } = JSON.parse(r.stdout);
  assert.equal(api, "gl");
  assert.match(r.stderr, /deno WebGPU \(gl\) on /);
  if (software) assert.match(r.stderr, /SLOW path .*mesa-vulkan-drivers/);
});

Deno.test("engine: a DENO_WEBGPU_BACKEND with no adapter is an error that names it and the fix", async () => {
  const absent = Deno.build.os === "darwin" ? "dx12" : "metal"; // a backend this OS does not have
  const r = await engineChoice({ DENO_WEBGPU_BACKEND: absent });
  assert.notEqual(r.code, 0);
  assert.match(
    r.stderr,
    new RegExp(`No WebGPU adapter found with DENO_WEBGPU_BACKEND=${absent} \\(from the environment\\)`),
  );
  assert.match(r.stderr, /mesa-vulkan-drivers/);
});

Deno.test("startupLine: implementation, API, adapter, and what a software adapter means", () => {
  const h = (graphicsApi: DeviceHandle["graphicsApi"], isFallbackAdapter: boolean) =>
    startupLine({ backend: "deno", graphicsApi, adapterName: "llvmpipe", isFallbackAdapter } as DeviceHandle);
  assert.equal(h("vulkan", false), "rlhf-webgpu: deno WebGPU (vulkan) on llvmpipe");
  assert.match(h("vulkan", true), /\(vulkan\) on llvmpipe; software adapter \(runs on the CPU\)/);
  assert.match(h("gl", true), /\(gl\) on llvmpipe; .*SLOW path/);
  assert.equal(h("auto", false), "rlhf-webgpu: deno WebGPU on llvmpipe");
});

Deno.test("setup script: keeps DENO_WEBGPU_BACKEND, reports GL as the slow path, fails clearly when nothing is found", async () => {
  const gl = await deno(["run", "-A", SETUP], { DENO_WEBGPU_BACKEND: "gl", RLHF_SETUP_NO_INSTALL: "1" });
  if (gl.code === 0) {
    assert.match(gl.stderr, /setup: WebGPU adapter: .*\(gl\b.*DENO_WEBGPU_BACKEND=gl/);
    assert.match(gl.stderr, /SLOW path/);
  } else {
    assert.equal(gl.code, 1);
    assert.match(gl.stderr, /no WebGPU adapter with DENO_WEBGPU_BACKEND=gl/);
  }
  const absent = Deno.build.os === "darwin" ? "dx12" : "metal"; // a backend this OS does not have
  const none = await deno(["run", "-A", SETUP], { DENO_WEBGPU_BACKEND: absent, RLHF_SETUP_NO_INSTALL: "1" });
  assert.equal(none.code, 1, none.stderr);
  assert.match(none.stderr, new RegExp(`no WebGPU adapter with DENO_WEBGPU_BACKEND=${absent}; unset it`));
  if (Deno.build.os === "linux" && await rawAdapter("vulkan")) {
    const ok = await deno(["run", "-A", SETUP], { RLHF_SETUP_NO_INSTALL: "1" });
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stderr, /setup: WebGPU adapter: .*\(vulkan/);
    assert.doesNotMatch(ok.stderr, /installing/);
  }
});

Deno.test("deno.lock does not name Dawn's package: deno task installs every locked npm package, and only Dawn users need it", async () => {
  const lock = JSON.parse(await Deno.readTextFile(new URL("../deno.lock", import.meta.url)));
  const names = [...Object.keys(lock.specifiers ?? {}), ...Object.keys(lock.npm ?? {})];
  assert.ok(names.length > 0, "deno.lock lists the npm packages");
  assert.deepEqual(names.filter((n) => /(^|:)webgpu@/.test(n)), [], "remove npm:webgpu from deno.lock");
});
