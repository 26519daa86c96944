import { assert, assertClose, coords, gradCheck, randArray, ready, strides } from "./helpers.ts";
import { noGrad, readAll, type Tensor, tensor } from "../engine/tensor.ts";
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
  await gradCheck(([t]) => reshape(t, [7, -1, 3]), ([a]) => a.slice(), [{ data: X357, shape: [3, 5, 7] }]);
  await gradCheck(([t]) => squeeze(unsqueeze(flatten(t, 1), 1)), ([a]) => a.slice(), [{
    data: X357,
    shape: [3, 5, 7],
  }]);
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
  Deno.test(`permute [3,5,7] by [${perm}]: forward and backward`, async () => {
    await ready;
    const y = noGrad(() => permute(tensor(f32(X357), [3, 5, 7]), perm));
    assert.deepEqual([...y.shape], perm.map((d) => [3, 5, 7][d]));
    assertClose(await y.toArray(), permuteRef(X357, [3, 5, 7], perm), 0, 0);
    await gradCheck(([t]) => permute(t, perm), ([a]) => permuteRef(a, [3, 5, 7], perm), [{
      data: X357,
      shape: [3, 5, 7],
    }]);
  });
}

Deno.test("permute 4-D/5-D with mergeable and size-1 dims, negative dims, transpose", async () => {
  await ready;
  const shape = [2, 3, 1, 4, 5];
  const x = rand32(prod(shape), 3);
  for (const perm of [[0, 3, 4, 1, 2], [4, 2, 3, 0, 1], [2, 0, 1, 3, 4], [1, 0, 3, 4, 2]]) {
    const y = permute(tensor(f32(x), shape), perm.map((d) => d - 5));
    assertClose(await y.toArray(), permuteRef(x, shape, perm), 0, 0, `perm ${perm}`);
  }
  const t = transpose(tensor(f32(x), shape), 1, -1);
  assert.deepEqual([...t.shape], [2, 5, 1, 4, 3]);
  assertClose(await t.toArray(), permuteRef(x, shape, [0, 4, 2, 3, 1]), 0, 0);
  await gradCheck(([a]) => transpose(a, 0, 3), ([a]) => permuteRef(a, shape, [3, 1, 2, 0, 4]), [{ data: x, shape }]);
});

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
  Deno.test(`slice [3,5,7] axis ${axis} [${s}, ${e}): forward and backward`, async () => {
    await ready;
    const ax = axis < 0 ? axis + 3 : axis;
    const n = [3, 5, 7][ax];
    const s0 = s < 0 ? s + n : s, e0 = e === undefined ? n : e < 0 ? e + n : e;
    const ref = (a: Float64Array) => sliceRef(a, [3, 5, 7], ax, s0, e0);
    const y = noGrad(() => slice(tensor(f32(X357), [3, 5, 7]), axis, s, e));
    assert.equal(y.shape[ax], e0 - s0);
    assertClose(await y.toArray(), ref(X357), 0, 0);
    await gradCheck(([t]) => slice(t, axis, s, e), ([a]) => ref(a), [{ data: X357, shape: [3, 5, 7] }]);
  });
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

Deno.test("concat of 3 tensors on the middle axis: forward and backward", async () => {
  await ready;
  const shapes = [[3, 2, 4], [3, 5, 4], [3, 1, 4]];
  const data = shapes.map((s, i) => rand32(prod(s), 20 + i));
  const y = noGrad(() => concat(data.map((d, i) => tensor(f32(d), shapes[i])), 1));
  assert.deepEqual([...y.shape], [3, 8, 4]);
  assertClose(await y.toArray(), concatRef(data, shapes, 1), 0, 0);
  const inputs = data.map((d, i) => ({ data: d, shape: shapes[i] }));
  await gradCheck((ts) => concat(ts, -2), (as) => concatRef(as, shapes, 1), inputs);
  // axis 0 and last, only some inputs needing gradients
  const z = concat([tensor(f32(data[0]), [3, 2, 4]), tensor(f32(data[0]), [3, 2, 4])], -1);
  assertClose(await z.toArray(), concatRef([data[0], data[0]], [[3, 2, 4], [3, 2, 4]], 2), 0, 0);
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
  await gradCheck(
    ([a, b]) => mul(stack([a, b], -1), unsqueeze(concat(split(b, 1, 0), 0), -1)),
    ([a, b]) => {
      const out = new Float64Array(12);
      for (let i = 0; i < 6; i++) for (let k = 0; k < 2; k++) out[i * 2 + k] = (k ? b[i] : a[i]) * b[i];
      return out;
    },
    [{ data: randArray(6, 1), shape: [2, 3] }, { data: randArray(6, 2), shape: [2, 3] }],
  );
});

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
