import { assert, assertClose, bindex, checkOp, coords, randArray, ready, rng, strides } from "./helpers.ts";
import { readAll, type Tensor, tensor } from "../engine/tensor.ts";
import { backward } from "../engine/autograd.ts";
import { embedding, gather, indexSelect, maskedFill, where } from "../engine/ops/index_ops.ts";

// ------------------------------------------------------------------ float64 references

const prod = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);
const f32 = (a: Float64Array) => Float32Array.from(a);
const rand32 = (n: number, seed: number) => Float64Array.from(f32(randArray(n, seed)));

/** torch.gather; out-of-range indices give 0. */
function gatherRef(x: ArrayLike<number>, shape: number[], axis: number, idx: ArrayLike<number>, idxShape: number[]) {
  const st = strides(shape);
  const out = new Float64Array(idx.length);
  for (let i = 0; i < idx.length; i++) {
    const c = coords(i, idxShape);
    const v = idx[i];
    if (v < 0 || v >= shape[axis]) continue;
    c[axis] = v;
    out[i] = x[c.reduce((a, cv, d) => a + cv * st[d], 0)];
  }
  return out;
}

function indexSelectRef(x: ArrayLike<number>, shape: number[], axis: number, idx: ArrayLike<number>) {
  const outShape = [...shape];
  outShape[axis] = idx.length;
  const st = strides(shape);
  const out = new Float64Array(prod(outShape));
  for (let i = 0; i < out.length; i++) {
    const c = coords(i, outShape);
    const v = idx[c[axis]];
    if (v < 0 || v >= shape[axis]) continue;
    c[axis] = v;
    out[i] = x[c.reduce((a, cv, d) => a + cv * st[d], 0)];
  }
  return out;
}

function whereRef(
  cond: ArrayLike<number>,
  cs: number[],
  a: ArrayLike<number>,
  as: number[],
  b: ArrayLike<number>,
  bs: number[],
  out: number[],
) {
  const r = new Float64Array(prod(out));
  for (let i = 0; i < r.length; i++) {
    const c = coords(i, out);
    r[i] = cond[bindex(c, cs, out)] !== 0 ? a[bindex(c, as, out)] : b[bindex(c, bs, out)];
  }
  return r;
}

function randIndex(n: number, lo: number, hi: number, seed: number): Int32Array {
  const r = rng(seed);
  return Int32Array.from({ length: n }, () => lo + Math.floor(r() * (hi - lo)));
}

// ------------------------------------------------------------------ gather

const X_SHAPE = [3, 5, 7];
/** Data movement must be bit-exact. */
const EXACT = { atol: 0, rtol: 0 };
const GATHERS: [number, number[]][] = [[0, [4, 5, 7]], [1, [3, 9, 7]], [2, [3, 5, 4]], [-1, [2, 3, 1]], [1, [2, 3, 6]]];

for (const [axis, idxShape] of GATHERS) {
  const ax = axis < 0 ? axis + 3 : axis;
  Deno.test(`gather [3,5,7] axis ${axis} index [${idxShape}] (repeats): forward and backward`, () =>
    checkOp(
      (x, i) => gather(x, axis, i),
      (x, i) => gatherRef(x, X_SHAPE, ax, i, idxShape),
      [X_SHAPE, { shape: idxShape, dtype: "i32", range: [0, X_SHAPE[ax]] }],
      { ...EXACT, shape: idxShape, seed: 5 + ax },
    ));
}

Deno.test("gather: out-of-range indices read 0 and get no gradient; i32 data", async () => {
  await ready;
  const idx = Int32Array.from([0, -1, 2, 3, 1, 100]);
  const y = gather(tensor([1, 2, 3, 4, 5, 6], [2, 3]), 1, tensor(idx, [2, 3]));
  assert.deepEqual(Array.from(await y.toArray()), [1, 0, 3, 0, 5, 0]);
  await checkOp(
    (x, i) => gather(x, 1, i),
    (x, i) => gatherRef(x, [2, 3], 1, i, [2, 3]),
    [[2, 3], { shape: [2, 3], dtype: "i32", data: idx }],
    EXACT,
  );
  const yi = gather(tensor(Int32Array.from([7, -8, 2147483647, 4]), [4]), 0, tensor(Int32Array.from([2, 1, 1])));
  assert.ok(yi.dtype === "i32");
  assert.deepEqual(Array.from(await yi.toArray()), [2147483647, -8, -8]);
});

Deno.test("gather/indexSelect/embedding reject bad index tensors", async () => {
  await ready;
  const x = tensor(new Float32Array(105), X_SHAPE);
  const fi = tensor([0, 1], [2]);
  assert.throws(
    () => gather(x, 0, tensor([0, 1, 0], [1, 1, 3])),
    /gather: index must be an i32 tensor, got f32 \[1, 1, 3\]/,
  );
  assert.throws(
    () => gather(x, 0, tensor(new Int32Array(3), [3])),
    /gather: index \[3\] must have the rank of x \[3, 5, 7\]/,
  );
  assert.throws(() => gather(x, 0, tensor(new Int32Array(6), [1, 6, 1])), /gather: index \[1, 6, 1\] must have/);
  assert.throws(() => gather(x, 3, tensor(new Int32Array(1), [1, 1, 1])), /gather: axis 3 is out of range for 3 dims/);
  assert.throws(() => indexSelect(x, 0, fi), /indexSelect: index must be an i32 tensor, got f32 \[2\]/);
  assert.throws(
    () => indexSelect(x, 0, tensor(new Int32Array(4), [2, 2])),
    /indexSelect: index must be 1-D, got \[2, 2\]/,
  );
  assert.throws(() => embedding(tensor(new Float32Array(6), [3, 2]), fi), /embedding: index must be an i32 tensor/);
  assert.throws(() => embedding(x, tensor(new Int32Array(2))), /embedding: weight must be \[V, D\], got \[3, 5, 7\]/);
});

// ------------------------------------------------------------------ indexSelect / embedding

for (const axis of [0, 1, -1]) {
  const ax = axis < 0 ? axis + 3 : axis;
  Deno.test(`indexSelect [3,5,7] axis ${axis} with repeats: forward and backward`, () =>
    checkOp(
      (x, i) => indexSelect(x, axis, i),
      (x, i) => indexSelectRef(x, X_SHAPE, ax, i),
      [X_SHAPE, { shape: [9], dtype: "i32", range: [0, X_SHAPE[ax]] }],
      { ...EXACT, shape: X_SHAPE.map((d, k) => k === ax ? 9 : d), seed: 30 + ax },
    ));
}

function embeddingRef(w: ArrayLike<number>, V: number, D: number, ids: Int32Array | Float64Array): Float64Array {
  const out = new Float64Array(ids.length * D);
  ids.forEach((id, t) => {
    if (id >= 0 && id < V) { for (let d = 0; d < D; d++) out[t * D + d] = w[id * D + d]; }
  });
  return out;
}

Deno.test("embedding with repeated and out-of-range ids: forward (zero rows) and backward", async () => {
  await ready;
  const V = 7, D = 5;
  await checkOp(embedding, (w, ids) => embeddingRef(w, V, D, ids), [[V, D], {
    shape: [2, 4],
    dtype: "i32",
    data: [3, 0, 3, 6, -1, 3, 7, 0],
  }], { ...EXACT, shape: [2, 4, D] });
  // i32 tables are pure data movement too
  const yi = embedding(tensor(Int32Array.from([1, 2, 3, 4]), [2, 2]), tensor(Int32Array.from([1, 9, 0])));
  assert.deepEqual(Array.from(await yi.toArray()), [3, 4, 0, 0, 1, 2]);
});

/** Runs embedding backward on the GPU and returns the weight gradient. */
async function embeddingGrad(V: number, D: number, ids: Int32Array, g: Float64Array): Promise<Float32Array> {
  const w = tensor(new Float32Array(V * D), [V, D]).requireGrad();
  const y = embedding(w, tensor(ids));
  backward(y, tensor(f32(g), [ids.length, D]));
  return (await w.grad!.toArray()) as Float32Array;
}

for (const [V, N, D] of [[37, 2000, 3], [3000, 5000, 2], [5, 513, 4], [2, 3001, 3]]) {
  Deno.test(`embedding backward: ${N} ids over ${V} rows (multi-pass sort) matches CPU and is deterministic`, async () => {
    await ready;
    const ids = randIndex(N, -2, V + 2, V + N);
    ids[0] = 0;
    ids[N - 1] = V - 1;
    const g = rand32(N * D, 77);
    const expected = new Float64Array(V * D);
    ids.forEach((id, t) => {
      if (id >= 0 && id < V) { for (let d = 0; d < D; d++) expected[id * D + d] += g[t * D + d]; }
    });
    const got = await embeddingGrad(V, D, ids, g);
    assertClose(got, expected, 1e-4, 1e-5, "weight grad");
    const again = await embeddingGrad(V, D, ids, g);
    assert.deepEqual(Array.from(again), Array.from(got), "backward is bitwise reproducible");
  });
}

// ------------------------------------------------------------------ maskedFill / where

Deno.test("maskedFill: i32 and f32 masks with broadcasting, forward and backward", async () => {
  await ready;
  const maskShape = [3, 1, 7];
  const ref = (value: number) => (a: ArrayLike<number>, mask: ArrayLike<number>) =>
    Float64Array.from({ length: 105 }, (_, i) => mask[bindex(coords(i, X_SHAPE), maskShape, X_SHAPE)] ? value : a[i]);
  for (const value of [-1e9, 0.5]) {
    await checkOp((x, m) => maskedFill(x, m, value), ref(value), [X_SHAPE, {
      shape: maskShape,
      dtype: "i32",
      range: [0, 2],
    }], { ...EXACT, shape: X_SHAPE, seed: 8 });
  }
  // f32 mask: -0 counts as zero, any other value (NaN included) as set; -Infinity fill
  const fm = tensor([0, -0, 1, -2.5, NaN], [5]);
  const [z] = await readAll([maskedFill(tensor([1, 2, 3, 4, 5]), fm, -Infinity)]);
  assert.deepEqual(Array.from(z), [1, 2, -Infinity, -Infinity, -Infinity]);
  // i32 data
  const zi = maskedFill(tensor(Int32Array.from([1, 2, 3]), [3]), tensor(Int32Array.from([0, 5, 0])), -7);
  assert.deepEqual(Array.from(await zi.toArray()), [1, -7, 3]);
  assert.throws(
    () => maskedFill(tensor(new Float32Array(6), [2, 3]), tensor(new Int32Array(12), [2, 2, 3]), 0),
    /maskedFill: mask \[2, 2, 3\] must broadcast to x's shape \[2, 3\]/,
  );
  assert.throws(
    () => maskedFill(tensor(new Float32Array(6), [2, 3]), tensor(new Int32Array(2), [2]), 0),
    /maskedFill: shapes \[2,3\] and \[2\] do not broadcast/,
  );
});

Deno.test("where: broadcasting cond, a and b; gradients to both branches", async () => {
  await ready;
  const cs = [3, 1], as = [3, 4], bs = [4];
  await checkOp(where, (c, x, y) => whereRef(c, cs, x, as, y, bs, [3, 4]), [
    { shape: cs, data: [1, 0, 1], grad: false },
    as,
    bs,
  ], { ...EXACT, shape: [3, 4] });
  const ci = tensor(Int32Array.from([0, 3]), [2, 1]);
  const wi = where(ci, tensor(Int32Array.from([1, 2])), tensor(Int32Array.from([-1])));
  assert.deepEqual(Array.from(await wi.toArray()), [-1, -1, 1, 2]);
  assert.throws(() => where(ci, tensor([1, 2]), tensor(Int32Array.from([1]))), /where: a and b must share a dtype/);
  const t: Tensor = tensor([1, 2, 3]);
  assert.throws(() => where(tensor(Int32Array.from([1, 0])), t, t), /where: shapes \[3\] and \[2\] do not broadcast/);
});

Deno.test("embedding backward: a run of the largest id starting on a chunk boundary ignores stale pool memory", async () => {
  await ready;
  const { full } = await import("../engine/ops/elementwise.ts");
  const { backward } = await import("../engine/autograd.ts");
  const D = 4;
  // 64 ids of 0, then 6 ids of 5: the run of 5 starts at sorted position 64 and m = 70 is not a multiple of 64.
  const ids = [...new Array(64).fill(0), ...new Array(6).fill(5)];
  for (let attempt = 0; attempt < 3; attempt++) {
    // Leave garbage in pooled buffers of the partials' size.
    const junk = Array.from({ length: 32 }, () => full([2 * D], 1e30));
    for (const t of junk) t.dispose();
    const w = tensor(new Float32Array(6 * D), [6, D]).requireGrad();
    const out = embedding(w, tensor(ids, [70], "i32"));
    backward(out, full([70, D], 1));
    const g = await w.grad!.toArray();
    assert.deepEqual(Array.from(g.subarray(5 * D, 6 * D)), [6, 6, 6, 6]);
    assert.deepEqual(Array.from(g.subarray(0, D)), [64, 64, 64, 64]);
  }
});
