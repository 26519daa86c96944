import { assert, assertClose, gradCheck, randArray, ready } from "./helpers.ts";
import { refLinear, refMatmul } from "./matmul_ref.ts";
import { noGrad, type Tensor, tensor } from "../engine/tensor.ts";
import { linear, matmul, resetMatmulTuning, setMatmulTuning } from "../engine/ops/matmul.ts";

// ------------------------------------------------------------------ float64 references

const numel = (s: readonly number[]) => s.reduce((x, y) => x * y, 1);

const t32 = (d: Float64Array, shape: number[]) => tensor(Float32Array.from(d), shape);

/** Shapes [rows, cols] of the stored operands for an (M, K, N) product with the given flags. */
function stored(M: number, K: number, N: number, tA: boolean, tB: boolean): [number[], number[]] {
  return [tA ? [K, M] : [M, K], tB ? [N, K] : [K, N]];
}

async function checkForward(
  as: number[],
  bs: number[],
  tA: boolean,
  tB: boolean,
  seed: number,
  tol = 1e-4,
  alpha?: number,
): Promise<void> {
  const a = randArray(numel(as), seed), b = randArray(numel(bs), seed + 1);
  const y = noGrad(() => matmul(t32(a, as), t32(b, bs), { transA: tA, transB: tB, alpha }));
  const what = `matmul [${as}]${tA ? "ᵀ" : ""} · [${bs}]${tB ? "ᵀ" : ""}`;
  assertClose(await y.toArray(), refMatmul(a, as, b, bs, tA, tB, alpha), tol, tol, what);
}

const COMBOS: [boolean, boolean][] = [[false, false], [true, false], [false, true], [true, true]];

// (M, K, N): odd sizes, tile edges, vec4-aligned sizes, skinny and few-row/few-column shapes, K = 1.
const SHAPES: [number, number, number][] = [
  [1, 1, 1],
  [7, 13, 5],
  [65, 33, 17],
  [68, 36, 20],
  [1, 300, 70],
  [3, 50, 130],
  [70, 24, 2],
  [9, 1, 11],
  [5, 7, 4],
  [129, 8, 67],
];

// ------------------------------------------------------------------ forward

for (const [tA, tB] of COMBOS) {
  Deno.test(`matmul forward matches float64, transA=${tA} transB=${tB}`, async () => {
    await ready;
    let seed = 1;
    // Default routing (few rows/columns → matrix–vector kernel), then the tiled kernel for all but ≤ 4.
    for (const gemvMaxRows of [undefined, 4]) {
      if (gemvMaxRows !== undefined) setMatmulTuning({ gemvMaxRows });
      try {
        for (const [M, K, N] of SHAPES) {
          const [as, bs] = stored(M, K, N, tA, tB);
          await checkForward(as, bs, tA, tB, seed += 2);
          await checkForward([3, ...as], [3, ...bs], tA, tB, seed += 2);
        }
      } finally {
        resetMatmulTuning();
      }
    }
  });
}

Deno.test("matmul forward with every tile shape the kernel supports", async () => {
  await ready;
  const configs = [
    { wgX: 16, wgY: 16, tm: 8, tn: 8, bk: 16 },
    { wgX: 16, wgY: 16, tm: 8, tn: 4, bk: 16 },
    { wgX: 8, wgY: 8, tm: 4, tn: 4, bk: 16 },
    { wgX: 8, wgY: 16, tm: 4, tn: 8, bk: 12 },
    { wgX: 4, wgY: 8, tm: 8, tn: 4, bk: 4 },
  ] as const;
  try {
    for (const tile of configs) {
      setMatmulTuning({ tiers: [{ tile, minWorkgroups: 0, minUtilization: 0 }], gemvMaxRows: 0 });
      let seed = 100;
      // Each transpose combination once, on an unaligned (scalar loads) or aligned (vec4 loads) shape.
      for (const [i, [tA, tB]] of COMBOS.entries()) {
        const [M, K, N] = i === 0 || i === 3 ? [65, 33, 17] : [132, 40, 136];
        const [as, bs] = stored(M, K, N, tA, tB);
        await checkForward([2, ...as], [2, ...bs], tA, tB, seed += 2);
      }
    }
  } finally {
    resetMatmulTuning();
  }
});

Deno.test("matmul forward broadcasts batch dims", async () => {
  await ready;
  const cases: [number[], number[], boolean, boolean][] = [
    [[2, 3, 5, 7], [7, 4], false, false],
    [[2, 3, 5, 7], [6, 7], false, true],
    [[3, 7, 5], [7, 6], true, false],
    [[3, 5, 7], [1, 7, 9], false, false],
    [[5, 7], [3, 7, 6], false, false],
    [[7, 5], [3, 6, 7], true, true],
    [[2, 1, 5, 7], [1, 3, 7, 6], false, false],
    [[2, 1, 3, 5, 7], [4, 1, 7, 6], false, false],
    [[3, 1, 7], [3, 7, 10], false, false],
    [[4, 3, 2], [4, 2, 1], false, false],
  ];
  let seed = 200;
  for (const [as, bs, tA, tB] of cases) await checkForward(as, bs, tA, tB, seed += 2);
});

Deno.test("matmul forward: alpha, K = 0, and empty outputs", async () => {
  await ready;
  await checkForward([6, 5], [7, 5], false, true, 300, 1e-4, 0.125);
  await checkForward([2, 3, 1], [2, 5, 1], false, true, 301, 1e-4, -2);
  const z = noGrad(() => matmul(tensor(new Float32Array(0), [3, 0]), tensor(new Float32Array(0), [0, 4])));
  assert.deepEqual(Array.from(await z.toArray()), new Array(12).fill(0));
  const e = noGrad(() => matmul(tensor(new Float32Array(0), [0, 3]), tensor(new Float32Array(12), [3, 4])));
  assert.deepEqual([...e.shape], [0, 4]);
});

Deno.test("matmul 256×256×256 matches float64 within float32 accumulation error", async () => {
  await ready;
  for (const [tA, tB] of [[false, false], [true, true]]) await checkForward([256, 256], [256, 256], tA, tB, 400, 2e-4);
});

Deno.test("linear forward: both layouts, with and without bias, few rows and few columns", async () => {
  await ready;
  const cases: [number[], number, number][] = [
    [[2, 3, 5], 5, 7],
    [[1, 33], 33, 66],
    [[3, 17], 17, 2],
    [[70, 9], 9, 1],
    [
      [4, 12],
      12,
      16,
    ],
  ];
  let seed = 500;
  for (const [xs, inF, outF] of cases) {
    for (const outIn of [false, true]) {
      for (const withBias of [false, true]) {
        const x = randArray(numel(xs), seed++), w = randArray(inF * outF, seed++), b = randArray(outF, seed++);
        const y = noGrad(() =>
          linear(t32(x, xs), t32(w, outIn ? [outF, inF] : [inF, outF]), withBias ? t32(b, [outF]) : undefined, {
            weightLayout: outIn ? "out_in" : "in_out",
          })
        );
        assert.deepEqual([...y.shape], [...xs.slice(0, -1), outF]);
        const ref = refLinear(x, inF, w, outF, outIn, withBias ? b : undefined);
        assertClose(
          await y.toArray(),
          ref,
          1e-5,
          1e-4,
          `linear [${xs}] ${outIn ? "out_in" : "in_out"} bias=${withBias}`,
        );
      }
    }
  }
});

// ------------------------------------------------------------------ backward

const gradCases: [string, number[], number[], boolean, boolean][] = [
  ["plain", [5, 6], [6, 7], false, false],
  ["transA", [6, 5], [6, 7], true, false],
  ["transB", [5, 6], [7, 6], false, true],
  ["transA transB", [2, 6, 5], [2, 7, 6], true, true],
  ["batched", [3, 5, 6], [3, 6, 7], false, false],
  ["b 2-D shared across a's batch", [2, 3, 5, 6], [6, 7], false, false],
  ["b 2-D shared, transB", [2, 5, 6], [7, 6], false, true],
  ["b 2-D shared, transA", [3, 6, 5], [6, 7], true, false],
  ["a 2-D shared across b's batch", [5, 6], [3, 6, 7], false, false],
  ["batch dims [2,1] and [1,3]", [2, 1, 5, 6], [1, 3, 7, 6], false, true],
  ["one output row (matrix–vector)", [2, 1, 9], [9, 7], false, false],
  ["one output column", [7, 9], [2, 1, 9], false, true],
];

for (const [name, as, bs, tA, tB] of gradCases) {
  Deno.test(`matmul backward matches finite differences: ${name}`, async () => {
    await ready;
    await gradCheck(
      ([a, b]) => matmul(a, b, { transA: tA, transB: tB }),
      ([a, b]) => refMatmul(a, as, b, bs, tA, tB),
      [{ data: randArray(numel(as), 7), shape: as }, { data: randArray(numel(bs), 8), shape: bs }],
    );
  });
}

Deno.test("matmul backward with alpha, and with only one operand requiring grad", async () => {
  await ready;
  await gradCheck(
    ([a, b]) => matmul(a, b, { transB: true, alpha: 0.5 }),
    ([a, b]) => refMatmul(a, [2, 4, 3], b, [2, 5, 3], false, true, 0.5),
    [{ data: randArray(24, 9), shape: [2, 4, 3] }, { data: randArray(30, 10), shape: [2, 5, 3] }],
  );
  const a = tensor(Float32Array.from(randArray(12, 11)), [3, 4]).requireGrad();
  const b = tensor(Float32Array.from(randArray(20, 12)), [4, 5]);
  const { backward } = await import("../engine/autograd.ts");
  const y = matmul(a, b);
  backward(y, tensor(new Float32Array(15).fill(1), [3, 5]));
  const ga = await a.grad!.toArray();
  const bd = await b.toArray();
  const want = new Float64Array(12);
  for (let m = 0; m < 3; m++) for (let k = 0; k < 4; k++) for (let n = 0; n < 5; n++) want[m * 4 + k] += bd[k * 5 + n];
  assertClose(ga, want, 1e-5, 1e-5, "dA");
  assert.equal(b.grad, null);
});

for (const outIn of [false, true]) {
  for (const withBias of [true, false]) {
    Deno.test(`linear backward: ${outIn ? "out_in" : "in_out"} weight, bias=${withBias}`, async () => {
      await ready;
      const inF = 6, outF = 5, xs = [2, 3, inF];
      const ws = outIn ? [outF, inF] : [inF, outF];
      const inputs = [{ data: randArray(numel(xs), 20), shape: xs }, { data: randArray(inF * outF, 21), shape: ws }];
      if (withBias) inputs.push({ data: randArray(outF, 22), shape: [outF] });
      const layout = outIn ? "out_in" as const : "in_out" as const;
      await gradCheck(
        (t: Tensor[]) => linear(t[0], t[1], t[2], { weightLayout: layout }),
        (d) => refLinear(d[0], inF, d[1], outF, outIn, d[2]),
        inputs,
      );
    });
  }
}

Deno.test("linear backward for few rows and a single output column (matrix–vector kernels)", async () => {
  await ready;
  for (
    const [xs, outF, outIn] of [[[1, 7], 9, true], [[2, 7], 9, false], [[11, 7], 1, false], [[3, 4, 7], 2, true]] as [
      number[],
      number,
      boolean,
    ][]
  ) {
    const inF = 7, ws = outIn ? [outF, inF] : [inF, outF];
    await gradCheck(
      (t) => linear(t[0], t[1], t[2], { weightLayout: outIn ? "out_in" : "in_out" }),
      (d) => refLinear(d[0], inF, d[1], outF, outIn, d[2]),
      [
        { data: randArray(numel(xs), 30), shape: xs },
        { data: randArray(inF * outF, 31), shape: ws },
        { data: randArray(outF, 32), shape: [outF] },
      ],
    );
  }
});

// ------------------------------------------------------------------ errors

Deno.test("matmul and linear reject bad shapes, naming both shapes", async () => {
  await ready;
  const z = (...s: number[]) => tensor(new Float32Array(numel(s)), s);
  assert.throws(
    () => matmul(z(2, 3), z(4, 5)),
    /matmul: inner dimensions differ \(3 vs 4\) for a \[2,3\] and b \[4,5\]/,
  );
  assert.throws(
    () => matmul(z(3, 2), z(4, 5), { transA: true }),
    /matmul: inner dimensions differ \(3 vs 4\) for a \[3,2\] \(transA\) and b \[4,5\]/,
  );
  assert.throws(() => matmul(z(2, 3), z(5, 4), { transB: true }), /a \[2,3\] and b \[5,4\] \(transB\)/);
  assert.throws(
    () => matmul(z(2, 2, 3), z(3, 3, 4)),
    /matmul: batch dims do not broadcast for a \[2,2,3\] and b \[3,3,4\]/,
  );
  assert.throws(() => matmul(z(3), z(3, 4)), /matmul: needs operands with at least 2 dims/);
  assert.throws(() => linear(z(2, 3), z(4, 5)), /linear: input \[2,3\] does not match weight \[4,5\]/);
  assert.throws(
    () => linear(z(2, 4), z(4, 5), null, { weightLayout: "out_in" }),
    /linear: input \[2,4\] does not match weight \[4,5\] \(out_in: 5 input features\)/,
  );
  assert.throws(() => linear(z(2, 4), z(4, 5), z(4)), /linear: bias \[4\] does not match weight \[4,5\]/);
  assert.throws(
    () =>
      setMatmulTuning({
        tiers: [{ tile: { wgX: 16, wgY: 16, tm: 8, tn: 8, bk: 6 }, minWorkgroups: 0, minUtilization: 0 }],
      }),
    /setMatmulTuning/,
  );
});
