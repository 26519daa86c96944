// Mixed-precision products (shaders/matmul_coop.wgsl, engine/ops/matmul_coop.ts). Everywhere: the f16 rounding and
// operand-scale references, the amax kernel, the kernel's WGSL through naga (the shader compiler wgpu uses, as
// WebAssembly) for several pipeline-constant sets, the fallback's status and errors. On a device with cooperative
// matrices (a lent GPU): the kernel against float64 references of f16-rounded operands, every layout and epilogue.
import { assert, assertClose, randArray, ready } from "./helpers.ts";
import { float16BitsToFloat32, float32ToFloat16Bits } from "../formats/float16.ts";
import { runtime, tensor } from "../engine/tensor.ts";
import { linear, matmul } from "../engine/ops/matmul.ts";
import { gemm, NO_EPILOGUE } from "../engine/ops/matmul_gemm.ts";
import { sum } from "../engine/ops/reduce.ts";
import { backward } from "../engine/autograd.ts";
import {
  matmulPrecisionStatus,
  maxError,
  mixedReference,
  operandScale,
  recordAmax,
  roundF16,
  setMatmulPrecision,
} from "../engine/ops/matmul_coop.ts";
import { shaderSource } from "../engine/shaders.ts";

await ready;
const rt = runtime();
const MIXED = matmulPrecisionStatus(rt).mixed;

Deno.test("roundF16 agrees with the engine's f32→f16 conversion, subnormals and overflow included", () => {
  const xs = [
    0,
    1,
    -1,
    1 / 3,
    65504,
    65519,
    65520,
    1e5,
    6.1e-5,
    5.96e-8,
    2.98e-8,
    2.99e-8,
    1e-9,
    0.1,
    -2.5e-6,
    1 + 2 ** -11,
  ];
  const r = randArray(500, 3, -8, 8);
  for (let i = 0; i < r.length; i++) xs.push(Math.sign(r[i]) * 2 ** r[i] * 1.234567);
  for (const x of xs) {
    const want = float16BitsToFloat32(float32ToFloat16Bits(Math.fround(x)));
    assert.equal(roundF16(Math.fround(x)), want, `roundF16(${x})`);
  }
});

Deno.test("operandScale puts the largest magnitude in [2^13, 2^14] and leaves 0, Inf and NaN unscaled", () => {
  for (const m of [1e-30, 3e-6, 1e-3, 0.5, 1, 8191, 16384, 70000, 1e20]) {
    const s = operandScale(m);
    assert.ok(Math.log2(s) === Math.round(Math.log2(s)), `power of two for ${m}`);
    assert.ok(m * s >= 8192 && m * s <= 16384, `${m} · ${s} = ${m * s}`);
  }
  for (const m of [0, Infinity, NaN]) assert.equal(operandScale(m), 1);
});

Deno.test("mixedReference rounds the operands to f16 and undoes the scales exactly", () => {
  // Operands below f16's subnormal range: unscaled they vanish, scaled they come back exactly.
  const a = [3e-9, -1e-9, 2e-9, 5e-9], b = [1, 2, 3, 4];
  const plain = mixedReference(a, b, 2, 2, 2);
  assert.deepEqual(Array.from(plain), [0, 0, 0, 0]);
  const scaled = mixedReference(a, b, 2, 2, 2, { scaleA: true });
  const exact = [3e-9 * 1 + -1e-9 * 3, 3e-9 * 2 + -1e-9 * 4, 2e-9 * 1 + 5e-9 * 3, 2e-9 * 2 + 5e-9 * 4];
  assertClose(Array.from(scaled), exact, 1e-3, 0, "scaled reference");
});

Deno.test("amax kernel: the largest magnitude over any length, NaN wins, slots independent", async () => {
  for (const n of [1, 255, 256, 257, 5000, 300_000]) {
    const x = Float32Array.from(randArray(n, n, -2, 2));
    x[(n * 7) >> 3] = -3.25;
    const t = tensor(x, [n]);
    const out = recordAmax(rt, null, t.storage);
    const [raw] = await rt.read([{ storage: out, bytes: 8 }]);
    const got = new Float32Array(raw);
    assert.equal(got[0], 0, `slot 0 untouched (n=${n})`);
    assert.equal(got[1], 3.25, `amax (n=${n})`);
    out.release();
    t.dispose();
  }
  const t = tensor(new Float32Array([1, NaN, -4]), [3]);
  const out = recordAmax(rt, t.storage, null);
  const [raw] = await rt.read([{ storage: out, bytes: 8 }]);
  assert.ok(Number.isNaN(new Float32Array(raw)[0]), "NaN propagates");
  out.release();
  t.dispose();
});

Deno.test("matmul_coop.wgsl parses, validates and compiles to SPIR-V in naga for every tile and flag set", async () => {
  const { parseWgsl, validate, writeSpirv } = await import("naga-wasm");
  const src = shaderSource("matmul_coop");
  const sets: Record<string, number>[] = [
    {},
    { WM: 2, WN: 4, FM: 4, FN: 2, TRANS_A: 1, TRANS_B: 1, VEC_A: 1, VEC_B: 1 },
    { WM: 1, WN: 1, FM: 1, FN: 1, BK: 16, BIAS: 1, ACT: 2, RESID: 1, PRE: 1, SCALE_A: 1, SCALE_B: 1 },
    { WM: 4, WN: 2, FM: 2, FN: 1, BK: 64, SG: 64 },
  ];
  for (const set of sets) {
    // naga-wasm has no pipeline constants: pin each override as a const.
    const pinned = src.replace(/^override (\w+): (\w+) = ([^;]+);/gm, (_, n: string, t: string, v: string) => {
      const val = n in set ? (t === "bool" ? String(set[n] !== 0) : `${set[n]}u`) : v;
      return `const ${n}: ${t} = ${val};`;
    });
    const module = parseWgsl(pinned);
    const words = writeSpirv(module, validate(module), {});
    assert.ok(words.length > 1000, `SPIR-V for ${JSON.stringify(set)}`);
  }
});

Deno.test("without cooperative matrices: fp32 products, a reason, and a clear error for precision mixed", {
  ignore: MIXED,
}, () => {
  const st = matmulPrecisionStatus(rt);
  assert.ok(!st.mixed && /fp32 products/.test(st.reason), st.reason);
  const prev = setMatmulPrecision("mixed");
  try {
    const a = tensor(new Float32Array(64 * 64), [64, 64]);
    assert.throws(() => matmul(a, a), /precision "mixed" is not available: the device has no/);
    a.dispose();
  } finally {
    setMatmulPrecision(prev);
  }
  assert.throws(() => setMatmulPrecision("half" as "fp32"), /auto, fp32 or mixed/);
});

// ------------------------------------------------------------------ on a GPU with cooperative matrices

/** Runs `fn` with mixed precision on. */
async function mixed<T>(fn: () => Promise<T>): Promise<T> {
  const prev = setMatmulPrecision("mixed");
  try {
    return await fn();
  } finally {
    setMatmulPrecision(prev);
  }
}

const LAYOUTS: [boolean, boolean][] = [[false, false], [true, false], [false, true], [true, true]];
const SIZES: [number, number, number][] = [[33, 40, 70], [64, 64, 64], [130, 96, 200], [256, 384, 128], [40, 1000, 72]];

Deno.test("mixed matmul equals the float64 reference of f16-rounded operands (all layouts, odd sizes)", {
  ignore: !MIXED,
}, async () => {
  await mixed(async () => {
    let seed = 1;
    for (const [tA, tB] of LAYOUTS) {
      for (const [M, K, N] of SIZES) {
        const a = Float32Array.from(randArray(M * K, seed++)), b = Float32Array.from(randArray(K * N, seed++));
        const y = matmul(tensor(a, tA ? [K, M] : [M, K]), tensor(b, tB ? [N, K] : [K, N]), {
          transA: tA,
          transB: tB,
          alpha: 0.75,
        });
        const want = mixedReference(a, b, M, N, K, { transA: tA, transB: tB, alpha: 0.75 });
        const err = maxError(await y.toArray(), want);
        assert.ok(err < 2e-6 * Math.sqrt(K), `[${M},${K}]·[${K},${N}] tA=${tA} tB=${tB}: error ${err}`);
      }
    }
  });
});

Deno.test("mixed matmul: scaled gradient-sized operands keep their precision; split K; batches", {
  ignore: !MIXED,
}, async () => {
  await mixed(async () => {
    // Split K (K ≥ 4096 on a small grid) with a scaled 1e-7-sized operand.
    const M = 48, K = 6000, N = 40;
    const a = Float32Array.from(randArray(M * K, 7, -1e-7, 1e-7)), b = Float32Array.from(randArray(K * N, 8));
    const ta = tensor(a, [M, K]), tb = tensor(b, [K, N]);
    const y = gemm({
      a: { storage: ta.storage, trans: false, strides: [], scaled: true },
      b: { storage: tb.storage, trans: false, strides: [], scaled: true },
      batch: [],
      M,
      N,
      K,
      alpha: 1,
      bias: null,
      epilogue: NO_EPILOGUE,
      outShape: [M, N],
    });
    const want = mixedReference(a, b, M, N, K, { scaleA: true, scaleB: true });
    const err = maxError(await y.toArray(), want);
    assert.ok(err < 1e-4, `scaled split-K error ${err}`);
    // Without scaling these operands are f16 subnormals: the error is visible, so the test above means something.
    const unscaled = mixedReference(a, b, M, N, K);
    assert.ok(maxError(unscaled, want) > 1e-3, "scaling matters for 1e-7 operands");
    // Batched with a broadcast operand: [3, M, K] · [K, N].
    const a3 = Float32Array.from(randArray(3 * 70 * 50, 9)), b3 = Float32Array.from(randArray(50 * 36, 10));
    const y3 = await matmul(tensor(a3, [3, 70, 50]), tensor(b3, [50, 36])).toArray();
    for (let z = 0; z < 3; z++) {
      const want3 = mixedReference(a3.subarray(z * 3500, (z + 1) * 3500), b3, 70, 36, 50);
      assert.ok(maxError(y3.slice(z * 2520, (z + 1) * 2520), want3) < 2e-5, `batch ${z}`);
    }
  });
});

Deno.test("mixed linear: fused bias, gelu and residual, and its gradients, within f16 bounds of fp32", {
  ignore: !MIXED,
}, async () => {
  const rows = 96, inF = 128, outF = 160;
  const x = Float32Array.from(randArray(rows * inF, 21)), w = Float32Array.from(randArray(inF * outF, 22, -0.1, 0.1));
  const bias = Float32Array.from(randArray(outF, 23)), res = Float32Array.from(randArray(rows * outF, 24));
  const run = async () => {
    const tx = tensor(x, [rows, inF]).requireGrad(), tw = tensor(w, [inF, outF]).requireGrad();
    const y = linear(tx, tw, tensor(bias, [outF]), { activation: "gelu", residual: tensor(res, [rows, outF]) });
    backward(sum(y));
    return [await y.toArray(), await tx.grad!.toArray(), await tw.grad!.toArray()];
  };
  const exact = await run();
  const mix = await mixed(run);
  const names = ["output", "dx", "dw"];
  for (let i = 0; i < 3; i++) {
    const err = maxError(mix[i], exact[i]);
    assert.ok(err < 3e-3, `${names[i]}: error ${err} of the largest value`);
  }
});
