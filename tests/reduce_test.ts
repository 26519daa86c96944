import { assert, assertClose, checkOp, randArray, ready, rng } from "./helpers.ts";
import { readAll, type Tensor, tensor } from "../engine/tensor.ts";
import { argmax, max, mean, sum } from "../engine/ops/reduce.ts";

type Op = "sum" | "mean" | "max" | "argmax";

/** float64 reference: reduces `data` of `shape` over `axis` (null = all). */
function ref(data: ArrayLike<number>, shape: number[], axis: number | null, op: Op): Float64Array {
  let outer = 1, n = data.length, inner = 1;
  if (axis !== null) {
    const a = axis < 0 ? axis + shape.length : axis;
    outer = shape.slice(0, a).reduce((p, d) => p * d, 1);
    n = shape[a];
    inner = shape.slice(a + 1).reduce((p, d) => p * d, 1);
  }
  const out = new Float64Array(outer * inner);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      let acc = op === "sum" || op === "mean" ? 0 : -Infinity, arg = 0;
      for (let k = 0; k < n; k++) {
        const v = data[(o * n + k) * inner + i];
        if (op === "sum" || op === "mean") acc += v;
        else if (v > acc) {
          acc = v;
          arg = k;
        }
      }
      out[o * inner + i] = op === "mean" ? acc / n : op === "argmax" ? arg : acc;
    }
  }
  return out;
}

function refShape(shape: number[], axis: number | null, keepDim: boolean): number[] {
  if (axis === null) return keepDim ? shape.map(() => 1) : [];
  const a = axis < 0 ? axis + shape.length : axis;
  return keepDim ? shape.map((d, i) => i === a ? 1 : d) : shape.filter((_, i) => i !== a);
}

const run = (op: Op, x: Tensor, axis: number | null, keepDim: boolean): Tensor =>
  op === "sum"
    ? sum(x, axis, keepDim)
    : op === "mean"
    ? mean(x, axis, keepDim)
    : op === "max"
    ? max(x, axis, keepDim)
    : argmax(x, axis, keepDim);

/** Distinct values (no ties, gaps ≥ 0.01) in a shuffled order, so max is finite-difference friendly. */
function distinct(n: number, seed: number): Float64Array {
  const r = rng(seed);
  const v = Float64Array.from({ length: n }, (_, i) => (i - n / 2) * 0.037);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [v[i], v[j]] = [v[j], v[i]];
  }
  return v;
}

// Every axis of [3, 5, 7] (and all), with and without keepDim: values, shapes, dtypes and (but argmax) gradients.
const X357 = distinct(105, 1);
for (const op of ["sum", "mean", "max", "argmax"] as Op[]) {
  for (const axis of [null, 0, 1, 2, -1, -2, -3]) {
    for (const keepDim of [false, true]) {
      const what = `${op}(axis ${axis}, keepDim ${keepDim})`;
      Deno.test(`${what} of [3, 5, 7]: forward${op === "argmax" ? " (i32)" : " and backward"}`, () =>
        checkOp((t) => run(op, t, axis, keepDim), (d) => ref(d, [3, 5, 7], axis, op), [{
          shape: [3, 5, 7],
          data: X357,
        }], {
          name: what,
          shape: refShape([3, 5, 7], axis, keepDim),
          dtype: op === "argmax" ? "i32" : "f32",
          grad: op !== "argmax",
          gradAtol: 2e-3,
        }));
    }
  }
}

Deno.test("reductions over axes of length 1, 1-D and empty inputs", async () => {
  await ready;
  const data = randArray(4, 2);
  const a = tensor(Float32Array.from(data), [4, 1]);
  const [s, m, am, s0] = await readAll([sum(a, -1), max(a, 1, true), argmax(a, -1), sum(a, 0)]);
  assertClose(s, data);
  assertClose(m, data);
  assert.deepEqual(Array.from(am), [0, 0, 0, 0]);
  assertClose(s0, [data.reduce((p, v) => p + v, 0)]);
  const v = tensor([2, -1, 5, 3]);
  const [vs, vm, va] = await readAll([sum(v), mean(v, 0), argmax(v, null)]);
  assertClose(vs, [9]);
  assertClose(vm, [2.25]);
  assert.deepEqual(Array.from(va), [2]);
  const e = tensor([], [0, 3]);
  const [es] = await readAll([sum(e, 0)]);
  assert.deepEqual(Array.from(es), [0, 0, 0]);
  assert.throws(() => max(e, 0), /max: cannot reduce an empty axis of shape \[0,3\]/);
});

Deno.test("large reductions: two-pass full sum, few long rows, few long columns, many rows", async () => {
  await ready;
  const big = randArray(30011, 3);
  const x = tensor(Float32Array.from(big), [30011]);
  const [s, m] = await readAll([sum(x), mean(x, null, true)]);
  assertClose(s, ref(big, [30011], null, "sum"), 1e-3, 1e-4, "two-pass sum");
  assertClose(m, ref(big, [30011], null, "mean"), 1e-6, 1e-4, "two-pass mean");
  const rd = Float32Array.from(big.subarray(0, 2 * 5003));
  const r = tensor(rd, [2, 5003]);
  const [rs, cs, rmx, ram] = await readAll([sum(r, 1), sum(r, 0), max(r, -1), argmax(r, 1)]);
  assertClose(rs, ref(rd, [2, 5003], 1, "sum"), 1e-3, 1e-4, "row sums");
  assertClose(cs, ref(rd, [2, 5003], 0, "sum"), 1e-5, 1e-5, "column sums");
  assertClose(rmx, ref(rd, [2, 5003], 1, "max"), 0, 0, "row max");
  assert.deepEqual(Array.from(ram), Array.from(ref(rd, [2, 5003], 1, "argmax")));
  // Medium rows (one workgroup of 32…256 threads per row).
  for (const n of [33, 129, 700]) {
    const d = Float32Array.from(randArray(5 * n, n));
    const xm = tensor(d, [5, n]);
    const [a, b, c] = await readAll([sum(xm, -1), max(xm, 1), argmax(xm, 1)]);
    assertClose(a, ref(d, [5, n], 1, "sum"), 1e-4, 1e-5, `row sums of ${n}`);
    assertClose(b, ref(d, [5, n], 1, "max"), 0, 0, `row max of ${n}`);
    assert.deepEqual(Array.from(c), Array.from(ref(d, [5, n], 1, "argmax")));
  }
  // Few long columns (split into chunks, then summed): [3001, 3] over axis 0, [2, 701, 5] over axis 1.
  const cd = Float32Array.from(big.subarray(0, 9003));
  const c1 = tensor(cd, [3001, 3]), c2 = tensor(cd.subarray(0, 7010), [2, 701, 5]);
  const [cs1, cm2, cx1] = await readAll([sum(c1, 0), mean(c2, 1, true), max(c1, 0)]);
  assertClose(cs1, ref(cd, [3001, 3], 0, "sum"), 1e-3, 1e-4, "split column sums");
  assertClose(cm2, ref(cd.subarray(0, 7010), [2, 701, 5], 1, "mean"), 1e-5, 1e-4, "split column means");
  assertClose(cx1, ref(cd, [3001, 3], 0, "max"), 0, 0, "long column max");
  // Many short rows (one thread per row), and more rows than one grid dimension allows (65,535
  // workgroups): the one-workgroup-per-row kernel then uses a 2-D grid.
  const md = Float32Array.from(randArray(66000 * 33, 6));
  const [ms, mx] = await readAll([
    mean(tensor(md.subarray(0, 66000), [66000, 1]), 1),
    max(tensor(md, [66000, 33]), -1),
  ]);
  assertClose(ms, md.subarray(0, 66000), 0, 0, "66000 rows of 1 (mean)");
  assertClose(mx, ref(md, [66000, 33], 1, "max"), 0, 0, "66000 rows of 33 (max)");
});

Deno.test("max and argmax pick the first of tied maxima; max's gradient goes there only", async () => {
  await ready;
  const x = tensor([1, 3, 3, 0, 2, 2, 3, 3], [2, 4]).requireGrad();
  const xt = tensor([1, 3, 3, 0, 2, 2, 3, 3], [2, 4, 1]);
  const [a, at, ac] = await readAll([argmax(x, 1), argmax(xt, 1), argmax(tensor([5, 5, 5, 5, 5, 5], [3, 2]), 0)]);
  assert.deepEqual(Array.from(a), [1, 2]);
  assert.deepEqual(Array.from(at), [1, 2]);
  assert.deepEqual(Array.from(ac), [0, 0]);
  const { backward } = await import("../engine/autograd.ts");
  backward(max(x, 1), tensor([10, 20]));
  assert.deepEqual(Array.from(await x.grad!.toArray()), [0, 10, 0, 0, 0, 0, 20, 0]);
});

Deno.test("the mean of column maxima sends gradients through two reductions", () =>
  checkOp(
    (t) => mean(max(t, 0), null),
    (d) => ref(ref(d, [4, 3], 0, "max"), [3], null, "mean"),
    [{ shape: [4, 3], data: distinct(12, 5) }],
    { shape: [] },
  ));

Deno.test("reductions reject bad axes and dtypes, naming the op and shape", async () => {
  await ready;
  const x = tensor(new Float32Array(6), [2, 3]);
  assert.throws(() => sum(x, 2), /sum: axis 2 is out of range for shape \[2,3\]/);
  assert.throws(() => mean(x, -3), /mean: axis -3 is out of range for shape \[2,3\]/);
  assert.throws(() => max(x, 0.5), /max: axis must be an integer/);
  assert.throws(() => argmax(tensor(new Int32Array(3)), 0), /argmax: expects an f32 tensor, got i32/);
});
