/**
 * What a GPU offers for tensor-core products through Deno's WebGPU, and how fast the engine's mixed-precision kernel
 * runs (issue: tensor cores from WGSL). Prints one JSON object (and writes it to `--out FILE`):
 *
 * 1. the adapter: name, features (`wgpu-cooperative-matrix`, `subgroups`, `shader-f16`, …), subgroup sizes, limits;
 * 2. raw cooperative-matrix configurations, each its own small kernel (one 16×16 or 8×8 tile, loaded row-major
 *    from storage): whether it compiles, and whether C = A·B comes out right against a float64 reference;
 * 3. the engine: the precision status after the start-up check, then for GPT-2- and PPO-shaped products (forward
 *    and both gradient layouts) the time of the fp32 kernels and of the mixed-precision kernel, and the mixed
 *    result's largest error against the fp32 one (relative to the largest value);
 * 4. a sweep of the mixed kernel's tiles on a few shapes (`--sweep`).
 *
 *     deno run -A bench/coop_probe.ts [--out FILE] [--sweep] [--budget-s N]
 * @module
 */

import {
  getMatmulTuning,
  initEngine,
  matmul,
  type MatmulCoopTile,
  matmulPrecisionStatus,
  readAll,
  setMatmulPrecision,
  setMatmulTuning,
  type Tensor,
} from "../engine/mod.ts";
import { maxError } from "../engine/ops/matmul_coop.ts";
import { disposeAll, engineOptions, median, now, randTensor, sig, sync } from "./lib.ts";

const args = Deno.args;
const outFile = args.includes("--out") ? args[args.indexOf("--out") + 1] : null;
const budgetS = args.includes("--budget-s") ? Number(args[args.indexOf("--budget-s") + 1]) : 120;
const started = now();
const left = () => budgetS * 1000 - (now() - started);
const log = (m: string) => console.error(`[coop] ${m}`);

// ------------------------------------------------------------------ 1. adapter

const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
if (!adapter) throw new Error("no WebGPU adapter");
const info = adapter.info as GPUAdapterInfo & { subgroupMinSize?: number; subgroupMaxSize?: number };
const limits: Record<string, number> = {};
for (const k in adapter.limits) limits[k] = (adapter.limits as unknown as Record<string, number>)[k];
const report: Record<string, unknown> = {
  date: new Date().toISOString(),
  deno: Deno.version.deno,
  adapter: { description: info.description, vendor: info.vendor, architecture: info.architecture },
  subgroup_min_size: info.subgroupMinSize ?? null,
  subgroup_max_size: info.subgroupMaxSize ?? null,
  features: [...adapter.features].sort(),
  limits,
};
log(`${info.description}: ${[...adapter.features].sort().join(" ")}`);

// ------------------------------------------------------------------ 2. raw configurations

interface Variant {
  name: string;
  n: 8 | 16;
  ab: "f16" | "f32";
  acc: "f16" | "f32";
}
const VARIANTS: Variant[] = [
  { name: "16x16 f16*f16+f32", n: 16, ab: "f16", acc: "f32" },
  { name: "16x16 f16*f16+f16", n: 16, ab: "f16", acc: "f16" },
  { name: "8x8 f16*f16+f32", n: 8, ab: "f16", acc: "f32" },
  { name: "8x8 f32*f32+f32", n: 8, ab: "f32", acc: "f32" },
  { name: "16x16 f32*f32+f32", n: 16, ab: "f32", acc: "f32" },
];

/** One tile C = A·B (+ 0) with A, B, C row-major n × n, one subgroup. */
function variantSource(v: Variant, sg: number): string {
  const t = (s: string) => `coop_mat${v.n}x${v.n}<${s === "C" ? v.acc : v.ab}, ${s}>`;
  return `enable f16;
enable wgpu_cooperative_matrix;
@group(0) @binding(0) var<storage, read> a: array<${v.ab}>;
@group(0) @binding(1) var<storage, read> b: array<${v.ab}>;
@group(0) @binding(2) var<storage, read_write> c: array<${v.acc}>;
@compute @workgroup_size(${sg})
fn main() {
  let st = ${v.n}u;
  let ma = coopLoadT<${t("A")}>(&a[0], st);
  let mb = coopLoadT<${t("B")}>(&b[0], st);
  var mc = ${t("C")}();
  mc = coopMultiplyAdd(ma, mb, mc);
  coopStoreT(mc, &c[0], st);
}`;
}

function toBytes(xs: number[], type: "f16" | "f32"): ArrayBuffer {
  if (type === "f32") return new Float32Array(xs).buffer;
  const h = new Uint16Array(xs.length);
  const f = new Float32Array(1), u = new Uint32Array(f.buffer);
  xs.forEach((x, i) => {
    // Small integers and halves only: exact in f16.
    f[0] = x;
    const bits = u[0], sign = (bits >>> 16) & 0x8000, e = ((bits >>> 23) & 0xff) - 127 + 15, m = (bits >>> 13) & 0x3ff;
    h[i] = x === 0 ? 0 : sign | (e << 10) | m;
  });
  return h.buffer;
}

function fromF16(bits: number): number {
  const s = bits & 0x8000 ? -1 : 1, e = (bits >>> 10) & 0x1f, m = bits & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

async function tryVariant(device: GPUDevice, v: Variant, sg: number): Promise<Record<string, unknown>> {
  const n = v.n, A: number[] = [], B: number[] = [];
  for (let i = 0; i < n * n; i++) {
    A.push(((i * 7) % 11) - 5);
    B.push(((i * 5) % 13) / 2 - 3);
  }
  const want: number[] = [];
  for (let r = 0; r < n; r++) {
    for (let col = 0; col < n; col++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += A[r * n + k] * B[k * n + col];
      want.push(s);
    }
  }
  device.pushErrorScope("validation");
  const module = device.createShaderModule({ code: variantSource(v, sg) });
  const msgs = (await module.getCompilationInfo()).messages.filter((m) => m.type === "error").map((m) => m.message);
  let pipeline: GPUComputePipeline | null = null;
  if (msgs.length === 0) {
    pipeline = device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: "main" } });
  }
  const err = await device.popErrorScope();
  if (msgs.length || err) return { compiles: false, error: (msgs.join("; ") || err!.message).slice(0, 600) };
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
  const mk = (data: ArrayBuffer) => {
    const buf = device.createBuffer({ size: Math.max(256, data.byteLength), usage });
    device.queue.writeBuffer(buf, 0, data);
    return buf;
  };
  const cBytes = n * n * (v.acc === "f16" ? 2 : 4);
  const ba = mk(toBytes(A, v.ab)), bb = mk(toBytes(B, v.ab)), bc = mk(new ArrayBuffer(cBytes));
  const read = device.createBuffer({
    size: Math.max(256, cBytes),
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  device.pushErrorScope("validation");
  const enc = device.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(pipeline!);
  pass.setBindGroup(
    0,
    device.createBindGroup({
      layout: pipeline!.getBindGroupLayout(0),
      entries: [ba, bb, bc].map((buffer, binding) => ({ binding, resource: { buffer } })),
    }),
  );
  pass.dispatchWorkgroups(1);
  pass.end();
  enc.copyBufferToBuffer(bc, 0, read, 0, Math.max(256, cBytes));
  device.queue.submit([enc.finish()]);
  const runErr = await device.popErrorScope();
  await read.mapAsync(GPUMapMode.READ);
  const raw = read.getMappedRange().slice(0, cBytes);
  read.unmap();
  const got = v.acc === "f16" ? Array.from(new Uint16Array(raw), fromF16) : Array.from(new Float32Array(raw));
  const err2 = maxError(got, want);
  const transposed: number[] = [];
  for (let r = 0; r < n; r++) for (let col = 0; col < n; col++) transposed.push(got[col * n + r]);
  [ba, bb, bc, read].forEach((b) => b.destroy());
  return {
    compiles: true,
    run_error: runErr?.message ?? null,
    correct: err2 <= 1e-3,
    max_error: sig(err2),
    max_error_if_transposed: sig(maxError(transposed, want)),
    sample: got.slice(0, 4),
    want_sample: want.slice(0, 4),
  };
}

{
  const extra = ["shader-f16", "subgroups", "wgpu-cooperative-matrix", "timestamp-query"].filter((f) =>
    adapter.features.has(f as GPUFeatureName)
  );
  const raw: Record<string, unknown> = { requested: extra };
  try {
    const device = await adapter.requestDevice({ requiredFeatures: extra as GPUFeatureName[] });
    raw.device_features = [...device.features].sort();
    const sg = info.subgroupMinSize && info.subgroupMinSize === info.subgroupMaxSize ? info.subgroupMinSize : 32;
    if (device.features.has("wgpu-cooperative-matrix" as GPUFeatureName)) {
      for (const v of VARIANTS) {
        try {
          raw[v.name] = await tryVariant(device, v, sg);
        } catch (e) {
          raw[v.name] = { error: String(e).slice(0, 600) };
        }
        log(`${v.name}: ${JSON.stringify(raw[v.name])}`);
      }
    }
    device.destroy();
  } catch (e) {
    raw.error = String(e).slice(0, 600);
    log(`device: ${raw.error}`);
  }
  report.raw_variants = raw;
}

// ------------------------------------------------------------------ 3. engine products, fp32 vs mixed

const rt = await initEngine({ ...(await engineOptions(null)), verbose: true });
const status = matmulPrecisionStatus(rt);
report.engine = { adapter: rt.handle.adapterName, precision: status, subgroup_size: rt.handle.subgroupSize };
log(status.reason);

interface Shape {
  key: string;
  M: number;
  N: number;
  K: number;
  transA?: boolean;
  transB?: boolean;
}
const SHAPES: Shape[] = [
  { key: "square_4096", M: 4096, N: 4096, K: 4096 },
  { key: "square_2048", M: 2048, N: 2048, K: 2048 },
  { key: "gpt2_qkv_M8192", M: 8192, N: 2304, K: 768 },
  { key: "gpt2_fc_M8192", M: 8192, N: 3072, K: 768 },
  { key: "gpt2_proj_M8192", M: 8192, N: 768, K: 3072 },
  { key: "gpt2_lmhead_M8192", M: 8192, N: 50257, K: 768, transB: true },
  { key: "gpt2_fc_dx_M8192", M: 8192, N: 768, K: 3072, transB: true },
  { key: "gpt2_fc_dw_M8192", M: 768, N: 3072, K: 8192, transA: true },
  { key: "ppo_qkv_M736", M: 736, N: 2304, K: 768 },
  { key: "ppo_fc_M736", M: 736, N: 3072, K: 768 },
  { key: "ppo_proj_M736", M: 736, N: 768, K: 3072 },
  { key: "ppo_fc_dw_M736", M: 768, N: 3072, K: 736, transA: true },
  { key: "gpt2_qkv_M1024", M: 1024, N: 2304, K: 768 },
  { key: "bert_fc_M768", M: 768, N: 3072, K: 768 },
];

async function timeProduct(a: Tensor, b: Tensor, s: Shape): Promise<number> {
  const run = () => matmul(a, b, { transA: s.transA, transB: s.transB }).dispose();
  run();
  await sync();
  const flops = 2 * s.M * s.N * s.K;
  const iters = Math.max(3, Math.min(200, Math.round(2e12 / flops)));
  const samples: number[] = [];
  for (let r = 0; r < 3; r++) {
    const t0 = now();
    for (let i = 0; i < iters; i++) run();
    await sync();
    samples.push((now() - t0) / iters);
  }
  return median(samples);
}

const products: Record<string, unknown> = {};
report.products = products;
for (const s of SHAPES) {
  if (left() < 10_000) {
    products[s.key] = { skipped: "budget" };
    continue;
  }
  const a = randTensor(s.transA ? [s.K, s.M] : [s.M, s.K], 11);
  const b = randTensor(s.transB ? [s.N, s.K] : [s.K, s.N], 12);
  const row: Record<string, unknown> = { M: s.M, N: s.N, K: s.K, transA: !!s.transA, transB: !!s.transB };
  try {
    setMatmulPrecision("fp32");
    const ref = matmul(a, b, { transA: s.transA, transB: s.transB });
    const msF = await timeProduct(a, b, s);
    row.fp32_ms = sig(msF);
    row.fp32_tflops = sig(2 * s.M * s.N * s.K / (msF * 1e9));
    if (status.mixed) {
      setMatmulPrecision("auto");
      if (s.M * s.N <= 2 ** 26) {
        const mix = matmul(a, b, { transA: s.transA, transB: s.transB });
        const [r, m] = await readAll([ref, mix]);
        row.mixed_max_error = sig(maxError(m as Float32Array, r as Float32Array));
        mix.dispose();
      }
      const msM = await timeProduct(a, b, s);
      row.mixed_ms = sig(msM);
      row.mixed_tflops = sig(2 * s.M * s.N * s.K / (msM * 1e9));
      row.speedup = sig(msF / msM);
    }
    ref.dispose();
  } catch (e) {
    row.error = String(e).slice(0, 400);
  } finally {
    setMatmulPrecision("auto");
    disposeAll([a, b]);
  }
  products[s.key] = row;
  log(`${s.key}: ${JSON.stringify(row)}`);
}

// ------------------------------------------------------------------ 4. tile sweep

if (args.includes("--sweep") && status.mixed) {
  const tiles: MatmulCoopTile[] = [
    { wm: 2, wn: 4, fm: 4, fn: 2, bk: 32 },
    { wm: 4, wn: 2, fm: 2, fn: 2, bk: 32 },
    { wm: 2, wn: 4, fm: 4, fn: 2, bk: 16 },
    { wm: 2, wn: 4, fm: 2, fn: 2, bk: 32 },
    { wm: 2, wn: 2, fm: 4, fn: 2, bk: 32 },
    { wm: 2, wn: 2, fm: 4, fn: 2, bk: 64 },
    { wm: 2, wn: 2, fm: 2, fn: 2, bk: 32 },
    { wm: 2, wn: 2, fm: 2, fn: 1, bk: 32 },
    { wm: 1, wn: 1, fm: 2, fn: 2, bk: 32 },
    { wm: 4, wn: 4, fm: 2, fn: 2, bk: 32 },
  ];
  const sweepShapes = SHAPES.filter((s) =>
    ["square_4096", "gpt2_fc_M8192", "ppo_fc_M736", "gpt2_fc_dw_M8192"].includes(s.key)
  );
  const prev = getMatmulTuning();
  const sweep: Record<string, unknown> = {};
  report.sweep = sweep;
  for (const s of sweepShapes) {
    const a = randTensor(s.transA ? [s.K, s.M] : [s.M, s.K], 11);
    const b = randTensor(s.transB ? [s.N, s.K] : [s.K, s.N], 12);
    for (const tile of tiles) {
      if (left() < 5_000) break;
      const key = `${s.key} ${tile.wm}x${tile.wn}w ${tile.fm}x${tile.fn}f bk${tile.bk}`;
      try {
        setMatmulTuning({ coopTiers: [{ tile, minWorkgroups: 0, minUtilization: 0 }] });
        const ms = await timeProduct(a, b, s);
        sweep[key] = { ms: sig(ms), tflops: sig(2 * s.M * s.N * s.K / (ms * 1e9)) };
      } catch (e) {
        sweep[key] = { error: String(e).slice(0, 300) };
      }
      log(`${key}: ${JSON.stringify(sweep[key])}`);
    }
    setMatmulTuning(prev);
    disposeAll([a, b]);
  }
}

report.total_s = sig((now() - started) / 1000);
const text = JSON.stringify(report, null, 1);
if (outFile) await Deno.writeTextFile(outFile, text + "\n");
console.log(text);
Deno.exit(0);
