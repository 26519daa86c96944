import { assert, ready } from "./helpers.ts";
import { empty, keep, noGrad, readAll, runtime, type Tensor, tensor, tidy } from "../engine/tensor.ts";
import { backward, zeroGrad } from "../engine/autograd.ts";
import { add, exp, mul, sumTo } from "../engine/ops/elementwise.ts";
import { sum } from "../engine/ops/reduce.ts";
import { requestGpuDevice } from "../engine/device.ts";
import { loadSafetensors, saveSafetensors } from "../engine/io.ts";

Deno.test("device: reports the adapter and rejects an unknown backend name", async () => {
  await ready;
  const h = runtime().handle;
  assert.equal(h.backend, Deno.env.get("RLHF_WEBGPU_BACKEND") === "cpu" ? "cpu" : "deno");
  assert.ok(h.adapterName.length > 0);
  await assert.rejects(
    requestGpuDevice({ backend: "metal" as "deno" }),
    /must be one of auto, webgpu, deno, dawn, cpu/,
  );
  await assert.rejects(requestGpuDevice({ backend: "cpu" }), /the CPU backend has no GPU device/);
  // The library never imports Dawn's 130 MB package itself: the program passes it.
  await assert.rejects(
    requestGpuDevice({ backend: "dawn" }),
    /needs its module: initEngine\(\{ backend: "dawn", dawn: await import\("npm:webgpu@0\.6\.2"\) \}\)/,
  );
});

Deno.test("readAll reads many tensors with one round trip; ops only record until then", async () => {
  await ready;
  const rt = runtime();
  const before = { ...rt.stats };
  const xs = Array.from({ length: 5 }, (_, i) => tensor([i, i + 1, i + 2]));
  const ys = xs.map((x) => exp(x));
  assert.equal(rt.stats.readbacks, before.readbacks, "no readback while recording");
  const out = await readAll(ys);
  assert.equal(rt.stats.readbacks, before.readbacks + 1);
  assert.ok(Math.abs(out[4][2] - Math.exp(6)) < 1e-3);
  for (const t of [...xs, ...ys]) t.dispose();
});

Deno.test("tidy disposes intermediates, keeps results and kept tensors; pooled buffers are reused", async () => {
  await ready;
  const rt = runtime();
  const live0 = rt.stats.liveBytes;
  let inner: Tensor | null = null, kept: Tensor | null = null;
  const result = tidy(() => {
    const a = tensor([1, 2, 3]);
    inner = exp(a);
    kept = keep(exp(a));
    return { y: add(inner, a) };
  });
  assert.ok(inner!.disposed, "intermediate disposed");
  assert.ok(!result.y.disposed && !kept!.disposed);
  assert.deepEqual(Array.from(await kept!.toArray()).map((v) => +v.toFixed(4)), [2.7183, 7.3891, 20.0855]);
  result.y.dispose();
  kept!.dispose();
  assert.equal(rt.stats.liveBytes, live0, "all memory returned to the pool");
  const pooled = rt.stats.pooledBytes;
  tidy(() => exp(exp(tensor([1, 2, 3]))));
  assert.equal(rt.stats.pooledBytes, pooled, "second round reuses pooled buffers");
  assert.throws(() => inner!.storage, /was disposed/);
});

Deno.test("autograd: accumulation into .grad, shared subexpressions, retainGraph, noGrad, detach", async () => {
  await ready;
  const x = tensor([0.5, -1, 2]).requireGrad();
  // y = sum(x*x + exp(x) * x): x used several times
  const y = sum(add(mul(x, x), mul(exp(x), x)));
  backward(y, undefined, { retainGraph: true });
  const g1 = Array.from(await x.grad!.toArray());
  const want = [0.5, -1, 2].map((v) => 2 * v + Math.exp(v) * (1 + v));
  g1.forEach((g, i) => assert.ok(Math.abs(g - want[i]) < 1e-4, `grad ${i}: ${g} vs ${want[i]}`));
  backward(y); // again, accumulates
  const g2 = Array.from(await x.grad!.toArray());
  g2.forEach((g, i) => assert.ok(Math.abs(g - 2 * want[i]) < 2e-4));
  assert.throws(() => backward(y), /already freed/);
  zeroGrad([x]);
  assert.equal(x.grad, null);
  const z = noGrad(() => mul(x, x));
  assert.equal(z.requiresGrad, false);
  assert.equal(x.detach().requiresGrad, false);
  assert.throws(() => backward(z), /does not require grad/);
  const v = mul(x, x);
  assert.throws(() => backward(v), /gradient is needed for a non-scalar output/);
});

Deno.test("sumTo reverses broadcasting; tensor() validates its data", async () => {
  await ready;
  const x = tensor([1, 2, 3, 4, 5, 6], [2, 3]);
  const [a, b] = await readAll([sumTo(x, [3]), sumTo(x, [2, 1])]);
  assert.deepEqual(Array.from(a), [5, 7, 9]);
  assert.deepEqual(Array.from(b), [6, 15]);
  assert.throws(() => tensor([1, 2, 3], [2, 2]), /3 values do not fill shape \[2, 2\]/);
  assert.throws(() => empty([2, -1]), /invalid tensor shape/);
  assert.throws(() => tensor([1], [1], "i32").requireGrad(), /only f32/);
});

Deno.test("loadSafetensors / saveSafetensors round-trip GPU tensors (f32, f16, i32)", async () => {
  await ready;
  const dir = await Deno.makeTempDir();
  const a = tensor([1.5, -2.25, 3], [3]), b = tensor([7, -8], [2], "i32");
  await saveSafetensors({ a, b }, `${dir}/x.safetensors`, { metadata: { note: "hi" } });
  const back = await loadSafetensors(`${dir}/x.safetensors`);
  assert.deepEqual(Array.from(await back.get("a")!.toArray()), [1.5, -2.25, 3]);
  assert.deepEqual(Array.from(await back.get("b")!.toArray()), [7, -8]);
  assert.equal(back.get("b")!.dtype, "i32");
  await saveSafetensors(new Map([["a", a]]), `${dir}/h.safetensors`, { dtype: "F16" });
  const h = await loadSafetensors(`${dir}/h.safetensors`);
  assert.deepEqual(Array.from(await h.get("a")!.toArray()), [1.5, -2.25, 3]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("remote import: preloadShaders fetches every kernel's shader and its includes, then all expand", async () => {
  const root = new URL("..", import.meta.url);
  const served = new Set<string>();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const path = new URL(req.url).pathname;
    if (path.startsWith("/shaders/")) served.add(path.slice("/shaders/".length, -".wgsl".length));
    try {
      const body = await Deno.readFile(new URL(`.${path}`, root));
      const type = path.endsWith(".ts") ? "application/typescript" : "text/plain";
      return new Response(body, { headers: { "content-type": type } });
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
  const url = `http://127.0.0.1:${server.addr.port}`;
  const script = `const s = await import("${url}/engine/shaders.ts");
    const k = await import("${url}/engine/kernels/mod.ts");
    await s.preloadShaders();
    for (const { kernel } of k.allKernels()) s.shaderSource(kernel.shader);
    console.log("expanded", new Set(k.allKernels().map((e) => e.kernel.shader)).size);`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--no-config", "--allow-import", "--allow-net", script],
    stdout: "piped",
    stderr: "piped",
  }).output();
  await server.shutdown();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, text);
  assert.match(text, /expanded \d+/);
  const files: string[] = [];
  for await (const e of Deno.readDir(new URL("../shaders/", import.meta.url))) {
    assert.ok(e.name.endsWith(".wgsl"), `shaders/ holds only WGSL: ${e.name}`);
    files.push(e.name.slice(0, -5));
  }
  assert.deepEqual([...served].sort(), files.sort(), "every shader file was fetched (kernels and includes)");
});

Deno.test("profile: timestamp queries attribute GPU time per kernel; results are unchanged", async () => {
  await ready;
  const rt = runtime();
  if (!rt.handle.hasTimestamps) {
    assert.equal(rt.startProfile(), false);
    return;
  }
  const x = tensor(Array.from({ length: 96 * 80 }, (_, i) => Math.sin(i)), [96, 80]);
  const run = () => tidy(() => keep(add(exp(mul(x, x)), x)));
  const plain = run();
  const before = await plain.toArray();
  assert.ok(rt.startProfile());
  assert.equal(rt.startProfile(), false, "a second profile cannot start while one runs");
  const d0 = rt.stats.dispatches;
  const outs = Array.from({ length: 3 }, run);
  const t0 = performance.now();
  const profile = (await rt.stopProfile())!;
  const wallMs = performance.now() - t0;
  const after = await readAll(outs);
  for (const a of after) assert.deepEqual(Array.from(a), Array.from(before));
  assert.equal(profile.dispatches, rt.stats.dispatches - d0 - profile.copies);
  assert.ok(profile.kernels.length >= 2, JSON.stringify(profile.kernels));
  const counted = profile.kernels.reduce((a, k) => a + k.count, 0);
  assert.equal(counted, profile.dispatches);
  for (const k of profile.kernels) {
    assert.match(k.name, /^[a-z_0-9]+:[A-Za-z_0-9]+/);
    assert.ok(k.ms >= 0 && Number.isFinite(k.ms));
  }
  assert.ok(profile.kernelMs > 0, "the kernels took some GPU time");
  assert.ok(profile.kernelMs < wallMs + 1000, `kernel time ${profile.kernelMs} ms is not plausible`);
  assert.equal(await rt.stopProfile(), null, "no profile is running any more");
  for (const t of [x, plain, ...outs]) t.dispose();
});

Deno.test({
  name: "long recordings are submitted in chunks (the GPU starts before recording ends); results unchanged",
  // A WebGPU runtime property: the CPU backend runs each kernel when it is called and submits nothing.
  ignore: Deno.env.get("RLHF_WEBGPU_BACKEND") === "cpu",
}, async () => {
  await ready;
  const rt = runtime();
  await rt.sync();
  const half = tensor([0.5, 0.5, 0.5], [3]);
  let x = tensor([1, 2, 3], [3]);
  const s0 = rt.stats.submits, r0 = rt.stats.readbacks;
  for (let i = 0; i < 400; i++) {
    const y = tidy(() => mul(add(x, x), half)); // ×2 then ×0.5: exact, the value stays
    x.dispose();
    x = y;
  }
  assert.equal(rt.stats.readbacks, r0, "nothing was read back");
  assert.ok(rt.stats.submits - s0 >= 2, `only ${rt.stats.submits - s0} submits for 800 dispatches`);
  assert.deepEqual(Array.from(await x.toArray()), [1, 2, 3]);
  x.dispose();
  half.dispose();
});
