import { assert, assertClose, checkOp, coords, randArray, ready, strides } from "./helpers.ts";
import { readAll, type Tensor, tensor } from "../engine/tensor.ts";
import { backward } from "../engine/autograd.ts";
import { mul } from "../engine/ops/elementwise.ts";
import {
  concat,
  flatten,
  narrow,
  permute,
  reshape,
  slice,
  split,
  squeeze,
  stack,
  transpose,
  unsqueeze,
} from "../engine/ops/shape.ts";

// ------------------------------------------------------------------ float64 references

const prod = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

function permuteRef(x: ArrayLike<number>, shape: number[], perm: number[]): Float64Array {
  const outShape = perm.map((d) => shape[d]);
  const st = strides(shape);
  const out = new Float64Array(x.length);
  for (let i = 0; i < out.length; i++) {
    const c = coords(i, outShape);
    out[i] = x[c.reduce((acc, v, k) => acc + v * st[perm[k]], 0)];
  }
  return out;
}

function sliceRef(x: ArrayLike<number>, shape: number[], axis: number, s: number, e: number): Float64Array {
  const outShape = [...shape];
  outShape[axis] = e - s;
  const st = strides(shape);
  const out = new Float64Array(prod(outShape));
  for (let i = 0; i < out.length; i++) {
    const c = coords(i, outShape);
    c[axis] += s;
    out[i] = x[c.reduce((acc, v, k) => acc + v * st[k], 0)];
  }
  return out;
}

function concatRef(xs: ArrayLike<number>[], shapes: number[][], axis: number): Float64Array {
  const outShape = [...shapes[0]];
  outShape[axis] = shapes.reduce((a, s) => a + s[axis], 0);
  const out = new Float64Array(prod(outShape));
  for (let i = 0; i < out.length; i++) {
    const c = coords(i, outShape);
    let k = 0;
    while (c[axis] >= shapes[k][axis]) c[axis] -= shapes[k++][axis];
    const st = strides(shapes[k]);
    out[i] = xs[k][c.reduce((acc, v, d) => acc + v * st[d], 0)];
  }
  return out;
}

const f32 = (a: Float64Array) => Float32Array.from(a);
/** Random data that is exactly representable in f32, so copies compare bit-exactly. */
const rand32 = (n: number, seed: number) => Float64Array.from(f32(randArray(n, seed)));
const X357 = rand32(105, 7);
/** Copies must be bit-exact. */
const EXACT = { atol: 0, rtol: 0 };

// ------------------------------------------------------------------ views

Deno.test("reshape/flatten/unsqueeze/squeeze share storage and infer -1", async () => {
  await ready;
  const x = tensor(f32(X357), [3, 5, 7]);
  const cases: [Tensor, number[]][] = [
    [reshape(x, [5, -1]), [5, 21]],
    [reshape(x, [-1]), [105]],
    [flatten(x), [105]],
    [flatten(x, 1), [3, 35]],
    [flatten(x, 0, -2), [15, 7]],
    [unsqueeze(x, 0), [1, 3, 5, 7]],
    [unsqueeze(x, -1), [3, 5, 7, 1]],
    [unsqueeze(x, 2), [3, 5, 1, 7]],
    [squeeze(reshape(x, [1, 3, 1, 35, 1])), [3, 35]],
    [squeeze(reshape(x, [1, 105]), 0), [105]],
    [squeeze(x, 1), [3, 5, 7]],
  ];
  for (const [t, shape] of cases) {
    assert.deepEqual([...t.shape], shape);
    assert.equal(t.storage, x.storage);
  }
  assertClose(await cases[0][0].toArray(), X357, 0, 0);
});

Deno.test("reshape and flatten/unsqueeze/squeeze chains: forward and backward", async () => {
  await checkOp((t) => reshape(t, [7, -1, 3]), (a) => a, [[3, 5, 7]], { ...EXACT, shape: [7, 5, 3] });
  await checkOp((t) => squeeze(unsqueeze(flatten(t, 1), 1)), (a) => a, [[3, 5, 7]], { ...EXACT, shape: [3, 35] });
});

Deno.test("reshape rejects size mismatches and bad -1 usage", async () => {
  await ready;
  const x = tensor(new Float32Array(6), [2, 3]);
  assert.throws(() => reshape(x, [4, 2]), /reshape: cannot reshape \[2, 3\] \(6 elements\) to \[4, 2\] \(8 elements\)/);
  assert.throws(() => reshape(x, [-1, -1]), /reshape: only one dimension may be -1/);
  assert.throws(() => reshape(x, [4, -1]), /reshape: cannot infer -1 in \[4, -1\]/);
  assert.throws(() => unsqueeze(x, 3), /unsqueeze: axis 3 is out of range for 3 dims/);
});

// ------------------------------------------------------------------ permute

const PERMS = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];

for (const perm of PERMS) {
  Deno.test(`permute [3,5,7] by [${perm}]: forward and backward`, () =>
    checkOp((t) => permute(t, perm), (a) => permuteRef(a, [3, 5, 7], perm), [[3, 5, 7]], {
      ...EXACT,
      shape: perm.map((d) => [3, 5, 7][d]),
    }));
}

// 4-D/5-D with mergeable and size-1 dims, given as negative dims; transpose.
const S5 = [2, 3, 1, 4, 5];
for (const perm of [[0, 3, 4, 1, 2], [4, 2, 3, 0, 1], [2, 0, 1, 3, 4], [1, 0, 3, 4, 2]]) {
  Deno.test(`permute [${S5}] by [${perm.map((d) => d - 5)}]: forward and backward`, () =>
    checkOp((t) => permute(t, perm.map((d) => d - 5)), (a) => permuteRef(a, S5, perm), [S5], {
      ...EXACT,
      shape: perm.map((d) => S5[d]),
    }));
}
for (const [d0, d1, perm] of [[1, -1, [0, 4, 2, 3, 1]], [0, 3, [3, 1, 2, 0, 4]]] as const) {
  Deno.test(`transpose [${S5}] dims ${d0} and ${d1}: forward and backward`, () =>
    checkOp((t) => transpose(t, d0, d1), (a) => permuteRef(a, S5, [...perm]), [S5], {
      ...EXACT,
      shape: perm.map((d) => S5[d]),
    }));
}

Deno.test("permute errors: bad permutation, wrong length, out of range, > 8 strided dims", async () => {
  await ready;
  const x = tensor(new Float32Array(105), [3, 5, 7]);
  assert.throws(() => permute(x, [0, 0, 1]), /permute: \[0,0,1\] is not a permutation of 3 dims/);
  assert.throws(() => permute(x, [0, 1]), /permute: got 2 dims \[0,1\] for a tensor of shape \[3, 5, 7\]/);
  assert.throws(() => permute(x, [0, 1, 3]), /permute: dim 3 in \[0,1,3\] is out of range for 3 dims/);
  const big = tensor(new Float32Array(512), new Array(9).fill(2));
  assert.throws(() => permute(big, [8, 7, 6, 5, 4, 3, 2, 1, 0]), /permute: .* needs 9 > 8 strided dims/);
  // ... while 9 dims that merge into fewer are fine
  const y = permute(big, [1, 2, 3, 4, 5, 6, 7, 8, 0]);
  assert.equal(y.size, 512);
});

// ------------------------------------------------------------------ slice / concat / split

const SLICES: [number, number, number | undefined][] = [[0, -2, undefined], [1, 1, -1], [2, -5, 6], [-1, 0, 3]];

for (const [axis, s, e] of SLICES) {
  const ax = axis < 0 ? axis + 3 : axis;
  const n = [3, 5, 7][ax];
  const s0 = s < 0 ? s + n : s, e0 = e === undefined ? n : e < 0 ? e + n : e;
  Deno.test(`slice [3,5,7] axis ${axis} [${s}, ${e}): forward and backward`, () =>
    checkOp((t) => slice(t, axis, s, e), (a) => sliceRef(a, [3, 5, 7], ax, s0, e0), [[3, 5, 7]], {
      ...EXACT,
      shape: [3, 5, 7].map((d, i) => i === ax ? e0 - s0 : d),
    }));
}

Deno.test("slice errors and empty slices", async () => {
  await ready;
  const x = tensor(new Float32Array(105), [3, 5, 7]);
  assert.throws(() => slice(x, 1, 2, 6), /slice: range \[2, 6\) is out of bounds for axis 1 of size 5 in \[3, 5, 7\]/);
  assert.throws(() => slice(x, 0, -4), /slice: range \[-4, 3\) is out of bounds/);
  assert.throws(() => slice(x, 2, 5, 4), /slice: range \[5, 4\) is out of bounds/);
  assert.throws(() => slice(x, 3, 0, 1), /slice: axis 3 is out of range for 3 dims/);
  assert.deepEqual([...slice(x, 1, 2, 2).shape], [3, 0, 7]);
  assert.deepEqual([...narrow(x, 2, -3, 2).shape], [3, 5, 2]);
});

Deno.test("concat of 3 tensors on the middle axis (as 1 and -2), and on the last: forward and backward", async () => {
  const shapes = [[3, 2, 4], [3, 5, 4], [3, 1, 4]];
  for (const axis of [1, -2]) {
    await checkOp((...ts) => concat(ts, axis), (...as) => concatRef(as, shapes, 1), shapes, {
      ...EXACT,
      shape: [3, 8, 4],
      seed: 20,
    });
  }
  await checkOp((a, b) => concat([a, b], -1), (a, b) => concatRef([a, b], [shapes[0], shapes[0]], 2), [
    shapes[0],
    shapes[0],
  ], { ...EXACT, shape: [3, 2, 8] });
});

Deno.test("concat on axis 0 with only some inputs needing gradients (one input twice)", async () => {
  await ready;
  const a = tensor([1, 2, 3, 4], [2, 2]).requireGrad();
  const b = tensor([5, 6], [1, 2]);
  const c = concat([b, a, b], 0);
  backward(c, tensor([1, 2, 3, 4, 5, 6, 7, 8], [4, 2]));
  assert.deepEqual(Array.from(await a.grad!.toArray()), [3, 4, 5, 6]);
});

Deno.test("concat errors: shape and dtype mismatches, empty list", async () => {
  await ready;
  const a = tensor(new Float32Array(6), [2, 3]);
  assert.throws(
    () => concat([a, tensor(new Float32Array(8), [2, 4])], 0),
    /concat: shapes \[2, 3\], \[2, 4\] differ outside axis 0/,
  );
  assert.throws(() => concat([a, tensor(new Float32Array(6), [6])], 0), /concat: shapes \[2, 3\], \[6\] differ/);
  assert.throws(() => concat([a, tensor(new Int32Array(6), [2, 3])], 0), /concat: dtypes differ: f32 and i32/);
  assert.throws(() => concat([], 0), /concat: needs at least one tensor/);
});

Deno.test("split, stack and narrow round trip", async () => {
  await ready;
  const x = tensor(f32(X357), [3, 5, 7]);
  const parts = split(x, [2, 0, 3], 1);
  assert.deepEqual(parts.map((p) => p.shape[1]), [2, 0, 3]);
  const back = concat(parts, 1);
  assertClose(await back.toArray(), X357, 0, 0);
  const eq = split(x, 3, -1);
  assert.deepEqual(eq.map((p) => p.shape[2]), [3, 3, 1]);
  assert.throws(() => split(x, [2, 2], 1), /split: sizes \[2,2\] do not sum to 5/);
  const s = stack([narrow(x, 0, 0, 1), narrow(x, 0, -1, 1)], 1);
  assert.deepEqual([...s.shape], [1, 2, 5, 7]);
  const [sv] = await readAll([s]);
  assertClose(sv, [...X357.slice(0, 35), ...X357.slice(70)], 0, 0);
});

Deno.test("stack and split inside a product: forward and backward", () =>
  checkOp(
    (a, b) => mul(stack([a, b], -1), unsqueeze(concat(split(b, 1, 0), 0), -1)),
    (a, b) => Float64Array.from({ length: 12 }, (_, j) => (j % 2 ? b : a)[j >> 1] * b[j >> 1]),
    [[2, 3], [2, 3]],
    { shape: [2, 3, 2] },
  ));

Deno.test("i32 tensors round-trip exactly through reshape/permute/slice/concat", async () => {
  await ready;
  const shape = [3, 5, 7];
  const data = Int32Array.from({ length: 105 }, (_, i) => (i * 2654435761) | 0);
  data[0] = 2147483647;
  data[1] = -2147483648;
  const x = tensor(data, shape);
  const p = permute(x, [2, 0, 1]);
  const back = permute(p, [1, 2, 0]);
  const sl = slice(reshape(x, [15, 7]), 0, -4);
  const cat = concat([slice(x, 1, 0, 2), slice(x, 1, 2)], 1);
  const [pv, bv, sv, cv] = await readAll([p, back, sl, cat]);
  assert.ok(pv instanceof Int32Array && p.dtype === "i32" && cat.dtype === "i32");
  assert.deepEqual(Array.from(pv), Array.from(permuteRef(data, shape, [2, 0, 1])));
  assert.deepEqual(Array.from(bv), Array.from(data));
  assert.deepEqual(Array.from(sv), Array.from(data.slice(77)));
  assert.deepEqual(Array.from(cv), Array.from(data));
});
