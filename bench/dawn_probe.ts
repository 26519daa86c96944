/**
 * Locates where Dawn (`npm:webgpu`) fails under Deno: runs the engine's basic operations one at a time on the
 * Dawn backend, printing a line to stderr (synchronously) before and after each, so the last line before a
 * crash names the operation. Used by `bench/device_run.sh` on GPU machines (Dawn rejects llvmpipe).
 *
 *     deno run -A --no-lock bench/dawn_probe.ts [--backend deno|dawn]
 * @module
 */

import { addScalar, f32Bits, initEngine, matmul, runtime, softmax, tidy } from "../engine/mod.ts";
import { FILL } from "../engine/kernels/elementwise.ts";
import { engineOptions, randTensor } from "./lib.ts";

const enc = new TextEncoder();
const say = (s: string) => Deno.stderr.writeSync(enc.encode(`[probe] ${s}\n`));

async function step(name: string, fn: () => unknown): Promise<void> {
  say(`${name} …`);
  const t0 = performance.now();
  await fn();
  say(`${name} ok (${(performance.now() - t0).toFixed(2)} ms)`);
}

if (import.meta.main) {
  const backend = Deno.args.includes("--backend") ? Deno.args[Deno.args.indexOf("--backend") + 1] : "dawn";
  if (backend !== "deno" && backend !== "dawn") throw new Error("--backend must be deno or dawn");
  await step(`init (${backend})`, async () => initEngine({ ...(await engineOptions(backend)), verbose: true }));
  const rt = runtime();
  const x = randTensor([64], 10);
  const fill = (bits: number) => rt.run(FILL, { n: 64, bits, start: 0, step: 0 }, { y: x.storage }, [1]);
  await step("1 dispatch + sync", async () => {
    fill(f32Bits(1));
    await rt.sync();
  });
  await step("readback", () => x.toArray());
  for (const n of [10, 100, 255, 256, 257, 1000]) {
    await step(`${n} dispatches + sync`, async () => {
      for (let i = 0; i < n; i++) fill(f32Bits(i));
      await rt.sync();
    });
  }
  await step("1000 ops (new buffers, dispose) + sync", async () => {
    for (let i = 0; i < 1000; i++) addScalar(x, 1).dispose();
    await rt.sync();
  });
  await step("matmul 256³ + softmax + readback", async () => {
    const a = randTensor([256, 256], 1), b = randTensor([256, 256], 2);
    const y = tidy(() => softmax(matmul(a, b)));
    await y.toArray();
    for (const t of [a, b, y]) t.dispose();
  });
  await step("trimPool", () => rt.trimPool());
  await step("profile (timestamp queries)", async () => {
    if (!rt.startProfile()) return say("no timestamp-query");
    addScalar(x, 1).dispose();
    const p = await rt.stopProfile();
    say(`kernels: ${p?.kernels.map((k) => k.name).join(", ")}`);
  });
  say("all steps passed");
  Deno.exit(0);
}
