/**
 * Tensor cores through Dawn (`npm:webgpu`, dawn.node) under Deno: Deno's WebGPU (wgpu 29) exposes
 * `wgpu-cooperative-matrix` on Vulkan only where an 8×8 f32 configuration exists, which NVIDIA's drivers do not
 * offer, so on an H200 it has none (bench/RESULTS.md). Dawn has its own door, `chromium-experimental-subgroup-matrix`
 * (VK_KHR_cooperative_matrix underneath). This probe records, on a GPU machine:
 *
 * 1. Dawn's adapter: features, subgroup sizes and its subgroup-matrix configurations, with `allow_unsafe_apis`;
 * 2. one-tile subgroup-matrix kernels (16×16 and 8×8, f16 and f32) in both spellings of the load builtin that
 *    Dawn versions have used: whether each compiles and gives C = A·B;
 * 3. the engine's mixed-precision kernel (`shaders/matmul_coop.wgsl`, rewritten to Dawn's spelling) against a float64
 *    reference of f16-rounded operands, and its time beside the fp32 kernel (`shaders/matmul.wgsl`) on the same
 *    shapes as bench/coop_probe.ts, with at most 64 dispatches per wait (Dawn 0.6.2 crashed past 256 under Deno).
 *
 *     deno run -A --no-lock bench/dawn_matrix_probe.ts [--out FILE]
 * @module
 */

import { shaderSource } from "../engine/shaders.ts";
import { maxError, mixedReference } from "../engine/ops/matmul_coop.ts";

const outFile = Deno.args.includes("--out") ? Deno.args[Deno.args.indexOf("--out") + 1] : null;
const enc = new TextEncoder();
const log = (m: string) => Deno.stderr.writeSync(enc.encode(`[dawn-matrix] ${m}\n`));
const report: Record<string, unknown> = { date: new Date().toISOString(), deno: Deno.version.deno };
const save = () => outFile && Deno.writeTextFileSync(outFile, JSON.stringify(report, null, 1) + "\n");

const spec = "npm:webgpu@0.6.2";
const mod = await import(spec) as { create(flags: string[]): GPU; globals: Record<string, unknown> };
for (const [k, v] of Object.entries(mod.globals)) {
  if (!(k in globalThis)) (globalThis as Record<string, unknown>)[k] = v;
}
const gpu = mod.create(["enable-dawn-features=allow_unsafe_apis"]);
const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
if (!adapter) throw new Error("Dawn found no adapter");
const info = adapter.info as unknown as Record<string, unknown>;
const infoOut: Record<string, unknown> = {};
for (const k in info) infoOut[k] = info[k];
// The configurations are objects with getters: copy their fields by name.
interface MatrixConfig {
  componentType: string;
  resultComponentType: string;
  M: number;
  N: number;
  K: number;
}
const configs: MatrixConfig[] = ((info.subgroupMatrixConfigs ?? []) as Record<string, unknown>[]).map((c) => ({
  componentType: String(c.componentType),
  resultComponentType: String(c.resultComponentType),
  M: Number(c.M),
  N: Number(c.N),
  K: Number(c.K),
}));
infoOut.subgroupMatrixConfigs = configs;
report.adapter = infoOut;
report.features = [...adapter.features].sort();
log(`${info.description}: ${(report.features as string[]).join(" ")}`);
log(`info: ${JSON.stringify(infoOut)}`);
save();

const want = ["shader-f16", "subgroups", "chromium-experimental-subgroup-matrix", "timestamp-query"]
  .filter((f) => adapter.features.has(f as GPUFeatureName)) as GPUFeatureName[];
const lim = adapter.limits as unknown as Record<string, number>;
const device = await adapter.requestDevice({
  requiredFeatures: want,
  requiredLimits: {
    maxComputeWorkgroupStorageSize: lim.maxComputeWorkgroupStorageSize,
    maxComputeInvocationsPerWorkgroup: lim.maxComputeInvocationsPerWorkgroup,
    maxComputeWorkgroupSizeX: lim.maxComputeWorkgroupSizeX,
    maxStorageBufferBindingSize: lim.maxStorageBufferBindingSize,
    maxBufferSize: lim.maxBufferSize,
    maxStorageBuffersPerShaderStage: lim.maxStorageBuffersPerShaderStage,
  },
});
report.device_features = [...device.features].sort();
const sg = Number(info.subgroupMaxSize ?? info.subgroupMinSize ?? 32) || 32;
const hasMatrix = device.features.has("chromium-experimental-subgroup-matrix" as GPUFeatureName);
log(`device features: ${(report.device_features as string[]).join(" ")}; subgroup ${sg}`);
save();

// ------------------------------------------------------------------ helpers

const STORAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
function buffer(data: ArrayBufferView<ArrayBuffer> | number, usage = STORAGE): GPUBuffer {
  const size = Math.max(256, Math.ceil((typeof data === "number" ? data : data.byteLength) / 4) * 4);
  const b = device.createBuffer({ size, usage });
  if (typeof data !== "number") device.queue.writeBuffer(b, 0, data);
  return b;
}

async function readF32(b: GPUBuffer, n: number): Promise<Float32Array> {
  const r = device.createBuffer({
    size: Math.max(256, n * 4),
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  const e = device.createCommandEncoder();
  e.copyBufferToBuffer(b, 0, r, 0, Math.max(256, n * 4));
  device.queue.submit([e.finish()]);
  await r.mapAsync(GPUMapMode.READ);
  const out = new Float32Array(r.getMappedRange().slice(0, n * 4));
  r.unmap();
  r.destroy();
  return out;
}

/** Builds a pipeline; returns it or the compiler's complaint. */
async function build(
  code: string,
  constants: Record<string, number>,
  layout: GPUPipelineLayout | "auto",
): Promise<GPUComputePipeline | string> {
  device.pushErrorScope("validation");
  const module = device.createShaderModule({ code });
  const msgs = (await module.getCompilationInfo()).messages.filter((m) => m.type === "error");
  let p: GPUComputePipeline | null = null;
  if (msgs.length === 0) {
    try {
      p = await device.createComputePipelineAsync({ layout, compute: { module, entryPoint: "main", constants } });
    } catch (e) {
      await device.popErrorScope();
      return String(e).slice(0, 800);
    }
  }
  const err = await device.popErrorScope();
  if (msgs.length) return msgs.map((m) => `${m.lineNum}: ${m.message}`).join("; ").slice(0, 800);
  if (err) return err.message.slice(0, 800);
  return p!;
}

// ------------------------------------------------------------------ 2. one-tile kernels

type Syntax = "bool" | "template";
function load(syntax: Syntax, type: string, ptr: string, offset: string, colMajor: boolean, stride: string): string {
  return syntax === "bool"
    ? `subgroupMatrixLoad<${type}>(${ptr}, ${offset}, ${colMajor}, ${stride})`
    : `subgroupMatrixLoad<${type}, ${colMajor ? "col_major" : "row_major"}>(${ptr}, ${offset}, ${stride})`;
}
function store(syntax: Syntax, ptr: string, offset: string, value: string, colMajor: boolean, stride: string): string {
  return syntax === "bool"
    ? `subgroupMatrixStore(${ptr}, ${offset}, ${value}, ${colMajor}, ${stride})`
    : `subgroupMatrixStore<${colMajor ? "col_major" : "row_major"}>(${ptr}, ${offset}, ${value}, ${stride})`;
}

const tiles: Record<string, unknown> = {};
report.tiles = tiles;
let syntaxOk: Syntax | null = null;
let enableSubgroups = false;
if (hasMatrix) {
  // Every configuration the adapter lists whose types WGSL can name here (f16 needs shader-f16), plus square ones.
  const cands: [number, number, number, string, string][] = configs.map((
    c,
  ) => [c.M, c.N, c.K, c.componentType, c.resultComponentType]);
  for (const [ab, acc] of [["f16", "f32"], ["f32", "f32"]]) cands.push([16, 16, 16, ab, acc], [8, 8, 8, ab, acc]);
  const f16ok = device.features.has("shader-f16" as GPUFeatureName);
  for (
    const [M, N, K, ab, acc] of cands.filter(([, , , ab, acc]) =>
      ["f16", "f32"].includes(ab) && ["f16", "f32"].includes(acc) && (f16ok || (ab !== "f16" && acc !== "f16"))
    )
  ) {
    const n = M;
    for (const syntax of ["bool", "template"] as Syntax[]) {
      for (const sgEnable of [false, true]) {
        const key = `M${M} N${N} K${K} ${ab}*${ab}+${acc} ${syntax}${sgEnable ? " +subgroups" : ""}`;
        if (tiles[key]) continue;
        // Dawn's template arguments are (type, columns, rows): left is M×K, right K×N, result M×N.
        const T = (role: string, t: string) =>
          `subgroup_matrix_${role}<${t}, ${
            role === "left" ? `${K}, ${M}` : role === "right" ? `${N}, ${K}` : `${N}, ${M}`
          }>`;
        const code = `${ab === "f16" || acc === "f16" ? "enable f16;\n" : ""}${
          sgEnable ? "enable subgroups;\n" : ""
        }enable chromium_experimental_subgroup_matrix;
@group(0) @binding(0) var<storage, read> a: array<${ab}>;
@group(0) @binding(1) var<storage, read> b: array<${ab}>;
@group(0) @binding(2) var<storage, read_write> c: array<${acc}>;
@compute @workgroup_size(${sg})
fn main() {
  let ma = ${load(syntax, T("left", ab), "&a", "0u", false, `${K}u`)};
  let mb = ${load(syntax, T("right", ab), "&b", "0u", false, `${N}u`)};
  var mc = ${T("result", acc)}();
  mc = subgroupMatrixMultiplyAccumulate(ma, mb, mc);
  ${store(syntax, "&c", "0u", "mc", false, `${N}u`)};
}`;
        const p = await build(code, {}, "auto");
        if (typeof p === "string") {
          tiles[key] = { compiles: false, error: p };
          log(`${key}: ${p.slice(0, 200)}`);
          continue;
        }
        const A = Array.from({ length: M * K }, (_, i) => ((i * 7) % 11) - 5);
        const B = Array.from({ length: K * N }, (_, i) => ((i * 5) % 13) / 2 - 3);
        const ref: number[] = [];
        for (let r = 0; r < M; r++) {
          for (let col = 0; col < N; col++) {
            let s = 0;
            for (let k = 0; k < K; k++) s += A[r * K + k] * B[k * N + col];
            ref.push(s);
          }
        }
        const half = (xs: number[]) => Uint16Array.from(xs, f16Bits);
        const ba = buffer(ab === "f16" ? half(A) : new Float32Array(A));
        const bb = buffer(ab === "f16" ? half(B) : new Float32Array(B));
        const bc = buffer(M * N * 4);
        const e = device.createCommandEncoder();
        const pass = e.beginComputePass();
        pass.setPipeline(p);
        pass.setBindGroup(
          0,
          device.createBindGroup({
            layout: p.getBindGroupLayout(0),
            entries: [ba, bb, bc].map((buffer, binding) => ({ binding, resource: { buffer } })),
          }),
        );
        pass.dispatchWorkgroups(1);
        pass.end();
        device.queue.submit([e.finish()]);
        const raw = await readF32(bc, acc === "f16" ? M * N / 2 : M * N);
        const got = acc === "f16" ? Array.from(new Uint16Array(raw.buffer), fromF16) : Array.from(raw);
        const err = maxError(got, ref);
        tiles[key] = { compiles: true, correct: err <= 1e-3, max_error: err };
        log(`${key}: ${JSON.stringify(tiles[key])}`);
        if (err <= 1e-3 && n === 16 && N === 16 && K === 16 && ab === "f16" && acc === "f32" && !syntaxOk) {
          syntaxOk = syntax;
          enableSubgroups = sgEnable;
        }
        [ba, bb, bc].forEach((x) => x.destroy());
      }
    }
  }
}
save();

function f16Bits(x: number): number {
  // Small integers and halves only (exact in f16).
  if (x === 0) return 0;
  const s = x < 0 ? 0x8000 : 0, a = Math.abs(x), e = Math.floor(Math.log2(a));
  return s | ((e + 15) << 10) | Math.round((a / 2 ** e - 1) * 1024);
}
function fromF16(bits: number): number {
  const s = bits & 0x8000 ? -1 : 1, e = (bits >>> 10) & 0x1f, m = bits & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

// ------------------------------------------------------------------ 3. the engine's kernels under Dawn

/** matmul_coop.wgsl in Dawn's spelling (wgpu's coop_mat16x16 / coopLoad[T] / coopStoreT / coopMultiplyAdd). */
function dawnDialect(src: string, syntax: Syntax): string {
  const role = { A: "left", B: "right", C: "result" } as Record<string, string>;
  return src
    .replace(
      "enable wgpu_cooperative_matrix;",
      `${enableSubgroups ? "enable subgroups;\n" : ""}enable chromium_experimental_subgroup_matrix;`,
    )
    .replace(/coop_mat16x16<(\w+), ([ABC])>/g, (_, t, r) => `subgroup_matrix_${role[r]}<${t}, 16, 16>`)
    .replace(
      /coopLoad(T?)<([^>]+>)>\(&(\w+)\[(\w+)\], (\w+)\)/g,
      (_, t, type, arr, at, st) => load(syntax, type, `&${arr}`, at, t !== "T", st),
    )
    .replace(
      /coopStoreT\((\w+), &(\w+)\[(\w+)\], (\w+)\)/g,
      (_, f, arr, at, st) => store(syntax, `&${arr}`, at, f, false, st),
    )
    .replace(/coopMultiplyAdd\(/g, "subgroupMatrixMultiplyAccumulate(");
}

function layoutOf(kinds: ("uniform" | "read" | "rw")[]): GPUPipelineLayout {
  const bgl = device.createBindGroupLayout({
    entries: kinds.map((k, binding) => ({
      binding,
      visibility: GPUShaderStage.COMPUTE,
      buffer: { type: k === "uniform" ? "uniform" : k === "read" ? "read-only-storage" : "storage" },
    })),
  });
  return device.createPipelineLayout({ bindGroupLayouts: [bgl] });
}

interface Shape {
  key: string;
  M: number;
  N: number;
  K: number;
  transA?: boolean;
  transB?: boolean;
}
const SHAPES: Shape[] = [
  { key: "check_odd", M: 200, N: 136, K: 328, transA: true, transB: true },
  { key: "square_4096", M: 4096, N: 4096, K: 4096 },
  { key: "gpt2_fc_M8192", M: 8192, N: 3072, K: 768 },
  { key: "gpt2_proj_M8192", M: 8192, N: 768, K: 3072 },
  { key: "gpt2_lmhead_M8192", M: 8192, N: 50257, K: 768, transB: true },
  { key: "gpt2_fc_dw_M8192", M: 768, N: 3072, K: 8192, transA: true },
  { key: "ppo_fc_M736", M: 736, N: 3072, K: 768 },
  { key: "ppo_proj_M736", M: 736, N: 768, K: 3072 },
];

const kinds: Record<string, { code: string; constants: Record<string, number>; bm: number; bn: number; n: number }> =
  {};
if (syntaxOk) {
  kinds.mixed = {
    code: dawnDialect(shaderSource("matmul_coop"), syntaxOk),
    constants: { SG: sg, WM: 2, WN: 4, FM: 4, FN: 2, BK: 32 },
    bm: 128,
    bn: 128,
    n: 10,
  };
  kinds.mixed_64 = {
    code: dawnDialect(shaderSource("matmul_coop"), syntaxOk),
    constants: { SG: sg, WM: 2, WN: 2, FM: 2, FN: 2, BK: 32 },
    bm: 64,
    bn: 64,
    n: 10,
  };
}
kinds.fp32 = {
  code: shaderSource("matmul"),
  constants: { WG_X: 16, WG_Y: 16, TM: 8, TN: 8, BK: 16 },
  bm: 128,
  bn: 128,
  n: 9,
};

const products: Record<string, Record<string, unknown>> = {};
report.products = products;
for (const s of SHAPES) {
  const row: Record<string, unknown> = { M: s.M, N: s.N, K: s.K, transA: !!s.transA, transB: !!s.transB };
  products[s.key] = row;
  const rnd = (n: number, seed: number) => {
    let x = seed;
    return Float32Array.from({ length: n }, () => ((x = (Math.imul(x, 1664525) + 1013904223) >>> 0) / 2 ** 31) - 1);
  };
  const a = rnd(s.M * s.K, 1), b = rnd(s.K * s.N, 2);
  const ba = buffer(a), bb = buffer(b), bc = buffer(s.M * s.N * 4), dummy = buffer(256), dummyRw = buffer(256);
  const amax = buffer(new Float32Array([0, 0]));
  for (const [name, k] of Object.entries(kinds)) {
    const vecA = (s.transA ? s.M : s.K) % 4 === 0, vecB = (s.transB ? s.K : s.N) % 4 === 0;
    const flags = { TRANS_A: s.transA ? 1 : 0, TRANS_B: s.transB ? 1 : 0, VEC_A: vecA ? 1 : 0, VEC_B: vecB ? 1 : 0 };
    const mixed = name !== "fp32";
    const bindings: ("uniform" | "read" | "rw")[] = [
      "uniform",
      "read",
      "read",
      "read",
      "read",
      "read",
      "rw",
      "read",
      "rw",
    ];
    if (mixed) bindings.push("read");
    const layout = layoutOf(bindings);
    const p = await build(k.code, { ...k.constants, ...flags }, layout);
    if (typeof p === "string") {
      row[`${name}_error`] = p;
      log(`${s.key} ${name}: ${p.slice(0, 300)}`);
      continue;
    }
    const words = new Uint32Array(64);
    const f = new Float32Array(words.buffer);
    words.set([s.M, s.N, s.K, 0]);
    f[4] = 1;
    words.set([1, s.K, 0, 1, 1, 1, 1], 5);
    const uni = buffer(words, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST);
    const bufs = [
      uni,
      ba,
      vecA ? ba : dummy,
      bb,
      vecB ? bb : dummy,
      dummy,
      bc,
      dummy,
      dummyRw,
      ...(mixed ? [amax] : []),
    ];
    const bg = device.createBindGroup({
      layout: p.getBindGroupLayout(0),
      entries: bufs.map((buffer, binding) => ({ binding, resource: { buffer } })),
    });
    const grid = [Math.ceil(s.N / k.bn), Math.ceil(s.M / k.bm)];
    const run = (count: number) => {
      const e = device.createCommandEncoder();
      const pass = e.beginComputePass();
      pass.setPipeline(p);
      pass.setBindGroup(0, bg);
      for (let i = 0; i < count; i++) pass.dispatchWorkgroups(grid[0], grid[1], 1);
      pass.end();
      device.queue.submit([e.finish()]);
      return device.queue.onSubmittedWorkDone();
    };
    try {
      device.pushErrorScope("validation");
      await run(1);
      const runErr = await device.popErrorScope();
      if (runErr) throw new Error(runErr.message);
      if (s.key === "check_odd" && mixed) {
        const got = await readF32(bc, s.M * s.N);
        const ref = mixedReference(a, b, s.M, s.N, s.K, { transA: s.transA, transB: s.transB });
        row[`${name}_max_error`] = maxError(got, ref);
        row[`${name}_correct`] = maxError(got, ref) < 1e-4;
      } else if (s.key !== "check_odd") {
        const flops = 2 * s.M * s.N * s.K;
        const count = Math.max(3, Math.min(64, Math.round(3e12 / flops)));
        const ms: number[] = [];
        for (let r = 0; r < 3; r++) {
          const t0 = performance.now();
          await run(count);
          ms.push((performance.now() - t0) / count);
        }
        ms.sort((x, y) => x - y);
        row[`${name}_ms`] = Number(ms[1].toPrecision(4));
        row[`${name}_tflops`] = Number((flops / (ms[1] * 1e9)).toPrecision(4));
      }
    } catch (e) {
      row[`${name}_error`] = String(e).slice(0, 400);
    }
    uni.destroy();
    log(`${s.key} ${name}: ${JSON.stringify(row)}`);
    save();
  }
  [ba, bb, bc, dummy, dummyRw, amax].forEach((x) => x.destroy());
}
save();
console.log(JSON.stringify(report));
Deno.exit(0);
