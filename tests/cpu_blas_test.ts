/**
 * The host matrix product of the CPU kernels (`engine/cpu/blas.ts`): the native BLAS path (OpenBLAS through FFI)
 * and the TypeScript fallback, each against a float64 reference on odd shapes, every transpose combination, row
 * padding, offsets, alpha and beta; operand extents are checked before any native call. When no BLAS can be loaded
 * the native test is skipped (shown as ignored) and the backend must be the fallback, as said in the log.
 */
import assert from "node:assert/strict";
import {
  asOperand,
  blasBackend,
  hasNativeBlas,
  type MatrixOperand,
  sgemm,
  type SgemmCall,
  sgemmFallback,
  sgemmNative,
  sgemmSmall,
} from "../engine/cpu/blas.ts";
import { mulberry32 } from "../engine/random.ts";

const SHAPES: [number, number, number][] = [
  [1, 1, 1],
  [3, 5, 7],
  [17, 1, 33],
  [1, 29, 130],
  [65, 47, 129],
  [130, 257, 300], // past one packed panel of the fallback along N and K
];

/** A random operand storing op(X) [rows, cols] (transposed when `trans`) with row padding and a leading offset. */
function operand(rand: () => number, rows: number, cols: number, trans: boolean): MatrixOperand {
  const storedRows = trans ? cols : rows, storedCols = trans ? rows : cols;
  const ld = storedCols + 3, offset = 5;
  const data = Float32Array.from({ length: offset + storedRows * ld }, () => rand() * 2 - 1);
  return { data, offset, ld, trans };
}

const at = (x: MatrixOperand, r: number, c: number) =>
  x.trans ? x.data[x.offset + c * x.ld + r] : x.data[x.offset + r * x.ld + c];

/** Checks C against the float64 product within f32 accumulation error: 4·K·2⁻²⁴ of Σ|terms| per element. */
function checkAgainstReference(call: SgemmCall, before: Float32Array, label: string): void {
  const { M, N, K, alpha, a, b, beta, c } = call;
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let sum = 0, mag = 0;
      for (let k = 0; k < K; k++) {
        const t = at(a, m, k) * at(b, k, n);
        sum += t;
        mag += Math.abs(t);
      }
      const o = c.offset + m * c.ld + n;
      const ref = alpha * sum + beta * before[o];
      const tol = 4 * (K + 2) * 2 ** -24 * (Math.abs(alpha) * mag + Math.abs(beta * before[o])) + 1e-30;
      assert.ok(Math.abs(c.data[o] - ref) <= tol, `${label}: C[${m}, ${n}] = ${c.data[o]}, reference ${ref}`);
    }
  }
}

/** Runs `impl` on every shape and transpose combination, with beta 0 and beta ≠ 0, checking each result. */
function checkImplementation(impl: (call: SgemmCall) => void, name: string): void {
  const rand = mulberry32(7);
  for (const [M, N, K] of SHAPES) {
    for (const [transA, transB] of [[false, false], [true, false], [false, true], [true, true]]) {
      for (const beta of [0, -0.5]) {
        const a = operand(rand, M, K, transA), b = operand(rand, K, N, transB);
        const cData = Float32Array.from({ length: 2 + M * (N + 1) }, () => rand());
        const call: SgemmCall = { M, N, K, alpha: 0.75, a, b, beta, c: { data: cData, offset: 2, ld: N + 1 } };
        const before = cData.slice();
        impl(call);
        checkAgainstReference(call, before, `${name} ${M}×${N}×${K} tA=${transA} tB=${transB} beta=${beta}`);
        assert.equal(cData[0], before[0], `${name}: wrote before C's offset`);
        for (let m = 0; m < M; m++) assert.equal(cData[2 + m * (N + 1) + N], before[2 + m * (N + 1) + N], "padding");
      }
    }
  }
}

Deno.test("cpu blas: which implementation sgemm uses", () => {
  const backend = blasBackend();
  if (hasNativeBlas()) {
    console.log(`sgemm: native BLAS ${backend}`);
    assert.notEqual(backend, "typescript");
  } else {
    console.warn("sgemm: no native BLAS loaded (libopenblas0-pthread missing or no --allow-ffi): TypeScript fallback");
    assert.equal(backend, "typescript");
    assert.throws(() => sgemmNative({} as SgemmCall), /no native BLAS/);
  }
});

Deno.test({
  name: "cpu blas: OpenBLAS sgemm agrees with a float64 reference (odd shapes, transposes, alpha, beta)",
  ignore: !hasNativeBlas(),
  fn: () => checkImplementation(sgemmNative, "native"),
});

Deno.test("cpu blas: the TypeScript fallback agrees with a float64 reference", () => {
  checkImplementation(sgemmFallback, "fallback");
});

Deno.test("cpu blas: the small-product loops agree with a float64 reference", () => {
  checkImplementation(sgemmSmall, "small");
});

Deno.test("cpu blas: operands are checked against their arrays before the product", () => {
  const small = new Float32Array(10);
  const call = (ld: number): SgemmCall => ({
    M: 3,
    N: 3,
    K: 3,
    alpha: 1,
    a: { data: small, offset: 0, ld, trans: false },
    b: { data: new Float32Array(9), offset: 0, ld: 3, trans: false },
    beta: 0,
    c: { data: new Float32Array(9), offset: 0, ld: 3 },
  });
  for (const impl of [sgemm, sgemmFallback, sgemmSmall]) {
    assert.throws(() => impl(call(4)), RangeError); // rows reach element 2·4 + 3 = 11 > 10
    assert.throws(() => impl(call(2)), RangeError); // ld below the row length
    impl(call(3));
  }
});

Deno.test("cpu blas: strided matrices become operands in place or packed", () => {
  const rand = mulberry32(3);
  const data = Float32Array.from({ length: 200 }, () => rand());
  // In place: unit column stride (row-major) and unit row stride (stored transposed).
  assert.deepEqual(asOperand({ data, offset: 4, rowStride: 9, colStride: 1 }, 5, 7), {
    data,
    offset: 4,
    ld: 9,
    trans: false,
  });
  assert.deepEqual(asOperand({ data, offset: 4, rowStride: 1, colStride: 9 }, 7, 5), {
    data,
    offset: 4,
    ld: 9,
    trans: true,
  });
  // Neither stride 1: packed, same elements.
  const packed = asOperand({ data, offset: 1, rowStride: 2, colStride: 20 }, 4, 6);
  assert.equal(packed.trans, false);
  for (let r = 0; r < 4; r++) {
    for (let c = 0; c < 6; c++) assert.equal(packed.data[r * 6 + c], data[1 + r * 2 + c * 20]);
  }
  // A product through the packed operand and an in-place transposed one.
  const b = asOperand({ data, offset: 150, rowStride: 1, colStride: 6 }, 6, 3);
  assert.equal(b.trans, true);
  const c = new Float32Array(12);
  sgemm({ M: 4, N: 3, K: 6, alpha: 1, a: packed, b, beta: 0, c: { data: c, offset: 0, ld: 3 } });
  for (let r = 0; r < 4; r++) {
    for (let n = 0; n < 3; n++) {
      let ref = 0;
      for (let k = 0; k < 6; k++) ref += data[1 + r * 2 + k * 20] * data[150 + k + n * 6];
      assert.ok(
        Math.abs(c[r * 3 + n] - ref) <= 1e-5 * (1 + Math.abs(ref)),
        `C[${r}, ${n}] = ${c[r * 3 + n]} vs ${ref}`,
      );
    }
  }
});
