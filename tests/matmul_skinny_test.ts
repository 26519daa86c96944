// Few-row products (matrix–vector kernel with 4, 8 or 16 rows per workgroup) and split-K products of
// the tiled kernel: forward vs float64 (transposes, batches, broadcasting, epilogues), backward vs
// finite differences, and which kernel each product takes (recorded from the runtime's dispatches).
import { assert, assertClose, gradCheck, onCpuBackend, randArray, ready } from "./helpers.ts";
import { refEpilogue, refMatmul } from "./matmul_ref.ts";
import { noGrad, runtime, type Tensor, tensor } from "../engine/tensor.ts";
import { linear, matmul, type MatmulTuningPatch, resetMatmulTuning, setMatmulTuning } from "../engine/ops/matmul.ts";
import type { Kernel } from "../engine/kernel.ts";

const numel = (s: readonly number[]) => s.reduce((x, y) => x * y, 1);
const t32 = (d: Float64Array, shape: number[]) => tensor(Float32Array.from(d), shape);

/** Runs `fn` and returns the shader names (with ROWS for the matrix–vector kernel) it dispatched. */
function kernels(fn: () => unknown): string[] {
  const rt = runtime(), orig = rt.run, seen: string[] = [];
  const record = (k: Kernel, overrides?: Readonly<Record<string, number>>) => {
    const rows = overrides?.ROWS;
    seen.push(k.shader + (rows !== undefined ? `/${rows}` : "") + (k.entry !== "main" ? `:${k.entry}` : ""));
  };
  rt.run = (k, params, bindings, grid, overrides) => {
    record(k as Kernel, overrides as Record<string, number> | undefined);
    orig.call(rt, k, params, bindings, grid, overrides);
  };
  try {
    fn();
  } finally {
    rt.run = orig;
  }
  return seen;
}

async function withTuning(t: MatmulTuningPatch, body: () => unknown): Promise<void> {
  setMatmulTuning(t);
  try {
    await body();
  } finally {
    resetMatmulTuning();
  }
}

/** Checks one product against float64 and returns the kernels it ran. */
async function check(as: number[], bs: number[], tA: boolean, tB: boolean, seed: number, alpha = 1, tol = 1e-4) {
  const a = randArray(numel(as), seed), b = randArray(numel(bs), seed + 1);
  let y: Tensor | null = null;
  const ks = kernels(() => y = noGrad(() => matmul(t32(a, as), t32(b, bs), { transA: tA, transB: tB, alpha })));
  const what = `[${as}]${tA ? "ᵀ" : ""}·[${bs}]${tB ? "ᵀ" : ""} via ${ks}`;
  assertClose(await y!.toArray(), refMatmul(a, as, b, bs, tA, tB, alpha), tol, tol, what);
  return ks;
}

const COMBOS: [boolean, boolean][] = [[false, false], [true, false], [false, true], [true, true]];
const stored = (M: number, K: number, N: number, tA: boolean, tB: boolean): [number[], number[]] => [
  tA ? [K, M] : [M, K],
  tB ? [N, K] : [K, N],
];

// ------------------------------------------------------------------ matrix–vector kernel, 4/8/16 rows

Deno.test("few-row products: 4, 8 and 16 rows per workgroup, every transpose, match float64", async () => {
  await ready;
  await withTuning({ gemvMaxRows: 64 }, async () => {
    let seed = 1;
    for (const cap of [4, 8, 16] as const) {
      setMatmulTuning({ gemvRows: cap });
      for (const M of [5, 7, 9, 15, 17, 31, 63]) {
        for (const [i, [tA, tB]] of COMBOS.entries()) {
          // K odd (scalar quads with a ragged tail) or a multiple of 4 (vec4 quads where strides allow).
          const K = (M + i) % 2 ? 37 : 44, N = 66 + i;
          const ks = await check(...stored(M, K, N, tA, tB), tA, tB, seed += 2, (M % 3) - 0.5);
          const want = Math.min(cap, M <= 4 ? 4 : M <= 8 ? 8 : 16);
          assert.deepEqual(ks, [`matmul_gemv/${want}`], `M=${M} cap=${cap}`);
        }
      }
    }
  });
});

Deno.test("few-column products (operands swapped) and thread layouts, match float64", async () => {
  await ready;
  await withTuning({ gemvMaxRows: 64 }, async () => {
    let seed = 100;
    for (const [gemvN, gemvK] of [[[8, 32], [8, 32]], [[32, 4], [4, 16]], [[3, 2], [5, 1]]] as [number, number][][]) {
      setMatmulTuning({ gemvN: gemvN as [number, number], gemvK: gemvK as [number, number] });
      for (const [tA, tB] of COMBOS) {
        for (const [M, K, N] of [[70, 41, 13], [45, 48, 27], [9, 33, 5]]) {
          const ks = await check(...stored(M, K, N, tA, tB), tA, tB, seed += 2);
          assert.equal(ks.length, 1);
          assert.match(ks[0], /^matmul_gemv\//);
        }
      }
    }
  });
});

Deno.test("few-row products with batches and broadcasting match float64", async () => {
  await ready;
  const cases: [number[], number[], boolean, boolean][] = [
    [[3, 13, 20], [20, 70], false, false], // stacked rows: one 39-row product
    [[2, 11, 20], [2, 70, 20], false, true],
    [[2, 1, 9, 24], [1, 3, 24, 40], false, false],
    [[3, 24, 21], [24, 35], true, false],
    [[21, 24], [4, 35, 24], false, true],
    [[2, 3, 19, 17], [3, 17, 29], false, false],
    [[2, 40, 12], [2, 12, 7], false, false], // few columns per batch
  ];
  await withTuning({ gemvMaxRows: 64 }, async () => {
    let seed = 200;
    for (const [as, bs, tA, tB] of cases) {
      const ks = await check(as, bs, tA, tB, seed += 2);
      assert.ok(ks.every((k) => k.startsWith("matmul_gemv/")), `${as}·${bs}: ${ks}`);
    }
  });
});

Deno.test("default routing: ≤ 32 rows or columns take the matrix–vector kernel, more the tiled one", async () => {
  await ready;
  assert.deepEqual(await check([16, 48], [100, 48], false, true, 300), ["matmul_gemv/16"]);
  assert.deepEqual(await check([7, 48], [48, 100], false, false, 302), ["matmul_gemv/8"]);
  assert.deepEqual(await check([32, 33], [33, 50], false, false, 304), ["matmul_gemv/16"]);
  assert.deepEqual(await check([100, 33], [33, 3], false, false, 306), ["matmul_gemv/4"]);
  assert.deepEqual(await check([33, 20], [20, 40], false, false, 308), ["matmul"]);
});

// ------------------------------------------------------------------ epilogues on the new paths

Deno.test("linear epilogues on 8/16-row workgroups (both layouts, few rows and few columns) match float64", async () => {
  await ready;
  let seed = 400;
  await withTuning({ gemvMaxRows: 64 }, async () => {
    for (const [rows, inF, outF] of [[13, 33, 19], [29, 36, 40], [7, 20, 9], [45, 21, 7]]) {
      for (const act of [undefined, "gelu", "gelu_new", "relu"] as const) {
        const outIn = seed % 2 === 0, withResidual = act !== "gelu";
        const d = [randArray(rows * inF, seed++, -2, 2), randArray(inF * outF, seed++), randArray(outF, seed++)];
        if (withResidual) d.push(randArray(rows * outF, seed++));
        let y: Tensor | null = null;
        const ks = kernels(() =>
          y = noGrad(() =>
            linear(t32(d[0], [rows, inF]), t32(d[1], outIn ? [outF, inF] : [inF, outF]), t32(d[2], [outF]), {
              weightLayout: outIn ? "out_in" : "in_out",
              activation: act,
              residual: withResidual ? t32(d[3], [rows, outF]) : null,
            })
          )
        );
        assert.equal(ks.length, 1);
        assert.match(ks[0], /^matmul_gemv\//);
        const what = `linear ${rows}×${inF}→${outF} ${act} resid=${withResidual} ${ks}`;
        assertClose(await y!.toArray(), refEpilogue(d, inF, outF, outIn, act), 1e-4, 1e-4, what);
      }
    }
  });
});

// ------------------------------------------------------------------ split K

const FORCE_SPLIT = { maxWorkgroups: 1e9, minK: 0, targetWorkgroups: 1e6, maxSplits: 7 };

/** The kernels a split product records: the CPU backend never splits (one BLAS call does the whole K). */
const split = (...ks: string[]) => onCpuBackend() ? ["matmul"] : ["matmul", ...ks];

Deno.test("split-K products (odd K, every transpose, batches, alpha) match float64", async () => {
  await ready;
  await withTuning({ gemvMaxRows: 0, splitK: FORCE_SPLIT }, async () => {
    let seed = 500;
    for (const [tA, tB] of COMBOS) {
      for (const [M, K, N] of [[37, 1001, 29], [36, 1000, 40], [5, 40, 3]]) {
        const [as, bs] = stored(M, K, N, tA, tB);
        const ks = await check(as, bs, tA, tB, seed += 2, 0.5, 2e-4);
        assert.deepEqual(ks, split("reduce:sum_cols"), `${M}×${K}×${N}`);
        const kb = await check([2, ...as], [2, ...bs], tA, tB, seed += 2, -1.5, 2e-4);
        assert.deepEqual(kb, split("reduce:sum_cols"));
      }
    }
    await check([2, 1, 9, 301], [1, 3, 301, 11], false, false, seed += 2);
    // Tiles of other depths (bk 4 and 12): the chunks stay multiples of bk.
    for (const tile of [{ wgX: 4, wgY: 8, tm: 8, tn: 4, bk: 4 }, { wgX: 8, wgY: 8, tm: 4, tn: 4, bk: 12 }] as const) {
      setMatmulTuning({ tiers: [{ tile, minWorkgroups: 0, minUtilization: 0 }] });
      await check([33, 203], [203, 45], false, false, seed += 2);
      await check([203, 33], [45, 203], true, true, seed += 2);
    }
  });
});

Deno.test("split-K: epilogues split only with withEpilogue, short K and big grids never", async () => {
  await ready;
  await withTuning({ gemvMaxRows: 0, splitK: { ...FORCE_SPLIT, withEpilogue: false } }, () => {
    const x = t32(randArray(33 * 40, 1), [33, 40]), w = t32(randArray(40 * 35, 2), [40, 35]);
    const b = t32(randArray(35, 3), [35]);
    assert.deepEqual(kernels(() => noGrad(() => linear(x, w, b))), ["matmul"]);
    assert.deepEqual(kernels(() => noGrad(() => linear(x, w, null, { activation: "relu" }))), ["matmul"]);
    assert.deepEqual(kernels(() => noGrad(() => linear(x, w))), split("reduce:sum_cols"));
    setMatmulTuning({ splitK: { withEpilogue: true } });
    assert.deepEqual(kernels(() => noGrad(() => linear(x, w, b))), split("matmul_splitk"));
    setMatmulTuning({ splitK: { minK: 41 } });
    assert.deepEqual(kernels(() => noGrad(() => matmul(x, w))), ["matmul"]);
    setMatmulTuning({ splitK: { minK: 0, maxWorkgroups: 1 } });
    assert.deepEqual(kernels(() => noGrad(() => matmul(x, w))), ["matmul"]);
    // ... unless K reaches longK (a vocabulary-long reduction), which splits whatever the grid.
    setMatmulTuning({ splitK: { longK: 40 } });
    assert.deepEqual(kernels(() => noGrad(() => matmul(x, w))), split("reduce:sum_cols"));
  });
  // Defaults: PPO's LM-head dX shape class (few tiles, long K) splits; a short K does not.
  const big = kernels(() =>
    noGrad(() => matmul(t32(new Float64Array(40 * 4100), [40, 4100]), t32(new Float64Array(4100 * 40), [4100, 40])))
  );
  assert.deepEqual(big, split("reduce:sum_cols"));
});

// ------------------------------------------------------------------ backward through the new paths

const gradCases: [string, MatmulTuningPatch, number[], number[], boolean, boolean][] = [
  ["gemv 8 rows", { gemvMaxRows: 64 }, [7, 9], [9, 11], false, false],
  ["gemv 16 rows, transB", { gemvMaxRows: 64 }, [2, 13, 9], [11, 9], false, true],
  ["gemv 4-row blocks, transA", { gemvMaxRows: 64, gemvRows: 4 }, [9, 11], [2, 9, 6], true, false],
  ["split K", { gemvMaxRows: 0, splitK: FORCE_SPLIT }, [5, 23], [23, 6], false, false],
  ["split K, transposes, batch", { gemvMaxRows: 0, splitK: FORCE_SPLIT }, [2, 23, 5], [2, 6, 23], true, true],
];

for (const [name, tune, as, bs, tA, tB] of gradCases) {
  Deno.test(`matmul backward through ${name} matches finite differences`, async () => {
    await ready;
    await withTuning(tune, () =>
      gradCheck(
        ([a, b]) => matmul(a, b, { transA: tA, transB: tB, alpha: 0.75 }),
        ([a, b]) => refMatmul(a, as, b, bs, tA, tB, 0.75),
        [{ data: randArray(numel(as), 7), shape: as }, { data: randArray(numel(bs), 8), shape: bs }],
      ));
  });
}

Deno.test("linear backward (gelu_new, residual) through 16-row workgroups matches finite differences", async () => {
  await ready;
  const rows = 11, inF = 6, outF = 5;
  await withTuning({ gemvMaxRows: 64 }, () =>
    gradCheck(
      (t) => linear(t[0], t[1], t[2], { activation: "gelu_new", residual: t[3], weightLayout: "out_in" }),
      (d) => refEpilogue(d, inF, outF, true, "gelu_new"),
      [
        { data: randArray(rows * inF, 40), shape: [rows, inF] },
        { data: randArray(inF * outF, 41), shape: [outF, inF] },
        { data: randArray(outF, 42), shape: [outF] },
        { data: randArray(rows * outF, 43), shape: [rows, outF] },
      ],
    ));
});

Deno.test("setMatmulTuning validates the new knobs", () => {
  try {
    assert.throws(() => setMatmulTuning({ gemvRows: 12 as 8 }), /gemvRows must be 4, 8 or 16/);
    assert.throws(() => setMatmulTuning({ gemvMaxRows: -1 }), /gemvMaxRows/);
    assert.throws(() => setMatmulTuning({ splitK: { maxSplits: 0 } }), /splitK/);
    const prev = setMatmulTuning({ gemvMaxRows: 100, splitK: { minK: 7 } });
    assert.equal(prev.gemvMaxRows, 32);
    assert.equal(prev.splitK.maxWorkgroups, 264);
  } finally {
    resetMatmulTuning();
  }
});
