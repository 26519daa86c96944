import { assert, assertClose, gradCheck, randArray, ready } from "./helpers.ts";
import { noGrad, readAll, runtime, tensor } from "../engine/tensor.ts";
import { backward } from "../engine/autograd.ts";
import { add, mul } from "../engine/ops/elementwise.ts";
import { concat, flatten, permute, reshape } from "../engine/ops/shape.ts";
import { mergeHeads, splitHeads } from "../engine/ops/heads.ts";

// ------------------------------------------------------------------ float64 references

/** x [B, T, n·H·D] → part j as [B, H, T, D]. */
function splitRef(x: ArrayLike<number>, B: number, T: number, H: number, D: number, n: number, j: number) {
  const out = new Float64Array(B * H * T * D);
  const C = H * D;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < T; t++) {
        for (let d = 0; d < D; d++) {
          out[((b * H + h) * T + t) * D + d] = x[(b * T + t) * n * C + j * C + h * D + d];
        }
      }
    }
  }
  return out;
}

/** x [B, H, T, D] → [B, T, H·D]. */
function mergeRef(x: ArrayLike<number>, B: number, H: number, T: number, D: number) {
  const out = new Float64Array(B * H * T * D);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < T; t++) {
        for (let d = 0; d < D; d++) {
          out[(b * T + t) * H * D + h * D + d] = x[((b * H + h) * T + t) * D + d];
        }
      }
    }
  }
  return out;
}

function cat(parts: Float64Array[]): Float64Array {
  const out = new Float64Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

// ------------------------------------------------------------------ forward

Deno.test("splitHeads matches the reference for n = 1..4 and odd sizes", async () => {
  await ready;
  const cases: [number, number, number, number, number][] = [
    // B, T, H, D, n
    [2, 5, 3, 7, 3],
    [1, 1, 3, 7, 3],
    [2, 5, 1, 1, 3],
    [3, 4, 2, 5, 1],
    [1, 5, 3, 1, 1],
    [2, 3, 2, 3, 2],
    [1, 3, 2, 2, 4],
    [1, 1, 1, 4, 1],
  ];
  for (const [B, T, H, D, n] of cases) {
    const data = Float32Array.from(randArray(B * T * n * H * D, B * 100 + T * 10 + n));
    const x = tensor(data, [B, T, n * H * D]);
    const parts = splitHeads(x, H, n);
    assert.equal(parts.length, n);
    for (const p of parts) assert.deepEqual(p.shape, [B, H, T, D]);
    const got = await readAll(parts);
    for (let j = 0; j < n; j++) {
      assertClose(got[j], splitRef(data, B, T, H, D, n, j), 0, 0, `B${B} T${T} H${H} D${D} n${n} part ${j}`);
    }
    noGrad(() => [x, ...parts].forEach((t) => t.dispose()));
  }
});

Deno.test("mergeHeads matches the reference and inverts splitHeads", async () => {
  await ready;
  for (const [B, H, T, D] of [[2, 3, 5, 7], [1, 1, 5, 3], [2, 3, 1, 7], [1, 2, 3, 1]]) {
    const data = Float32Array.from(randArray(B * H * T * D, H * 7 + T));
    const x = tensor(data, [B, H, T, D]);
    const m = mergeHeads(x);
    assert.deepEqual(m.shape, [B, T, H * D]);
    const [back] = splitHeads(m, H, 1);
    const [gm, gb] = await readAll([m, back]);
    assertClose(gm, mergeRef(data, B, H, T, D), 0, 0, `merge B${B} H${H} T${T} D${D}`);
    assertClose(gb, data, 0, 0, "split(merge(x))");
    noGrad(() => [x, m, back].forEach((t) => t.dispose()));
  }
});

Deno.test("splitHeads and mergeHeads use one dispatch each", async () => {
  await ready;
  const x = tensor(Float32Array.from(randArray(2 * 5 * 3 * 6, 3)), [2, 5, 18]);
  const stats = runtime().stats;
  const before = stats.dispatches;
  const [q, k, v] = splitHeads(x, 3, 3);
  assert.equal(stats.dispatches - before, 1, "splitHeads n = 3");
  const m = mergeHeads(q);
  assert.equal(stats.dispatches - before, 2, "mergeHeads");
  noGrad(() => [x, q, k, v, m].forEach((t) => t.dispose()));
});

// ------------------------------------------------------------------ backward

Deno.test("splitHeads gradients: each part alone, pairs, all parts, odd sizes", async () => {
  await ready;
  for (const [B, T, H, D] of [[2, 5, 3, 7], [1, 1, 3, 2], [2, 5, 1, 1], [1, 3, 2, 1]]) {
    const n = 3, C = H * D;
    const input = [{ data: randArray(B * T * n * C, T * 31 + H), shape: [B, T, n * C] }];
    const refPart = (xs: Float64Array[], j: number) => splitRef(xs[0], B, T, H, D, n, j);
    // Loss depends on a subset of parts (the others get no gradient at all).
    for (const subset of [[0], [1], [2], [0, 2], [2, 1], [0, 1, 2]]) {
      await gradCheck(
        ([x]) => {
          const parts = splitHeads(x, H, n);
          return concat(subset.map((j) => flatten(parts[j])), 0);
        },
        (xs) => cat(subset.map((j) => refPart(xs, j))),
        input,
        { seed: subset.length * 10 + subset[0] },
      );
    }
  }
});

Deno.test("splitHeads gradients for n = 1, 2, 4 and mergeHeads", async () => {
  await ready;
  for (const [B, T, H, D, n] of [[2, 5, 3, 7, 1], [1, 5, 1, 3, 1], [2, 3, 2, 3, 2], [1, 3, 2, 1, 4]]) {
    const W = n * H * D;
    await gradCheck(
      ([x]) => {
        const parts = splitHeads(x, H, n);
        return concat(parts.map((p) => flatten(p)), 0);
      },
      (xs) => cat(Array.from({ length: n }, (_, j) => splitRef(xs[0], B, T, H, D, n, j))),
      [{ data: randArray(B * T * W, W), shape: [B, T, W] }],
    );
  }
  for (const [B, H, T, D] of [[2, 3, 5, 7], [1, 1, 5, 3], [2, 3, 1, 7]]) {
    await gradCheck(
      ([x]) => mergeHeads(x),
      (xs) => mergeRef(xs[0], B, H, T, D),
      [{ data: randArray(B * H * T * D, D), shape: [B, H, T, D] }],
    );
  }
});

Deno.test("splitHeads gradient: parts combined (shared gradient buffers), merged, and x used twice", async () => {
  await ready;
  const B = 2, T = 5, H = 3, D = 7, C = H * D;
  // q + k passes one gradient to both parts (possibly the same buffer); merge(v) mixes in mergeHeads;
  // x also feeds a second, direct use whose gradient the engine adds.
  await gradCheck(
    ([x]) => {
      const [q, k, v] = splitHeads(x, H);
      return concat([flatten(add(q, k)), flatten(mergeHeads(mul(v, v))), flatten(x)], 0);
    },
    (xs) => {
      const q = splitRef(xs[0], B, T, H, D, 3, 0), k = splitRef(xs[0], B, T, H, D, 3, 1);
      const v = splitRef(xs[0], B, T, H, D, 3, 2);
      return cat([q.map((a, i) => a + k[i]), mergeRef(v.map((a) => a * a), B, H, T, D), xs[0]]);
    },
    [{ data: randArray(B * T * 3 * C, 5), shape: [B, T, 3 * C] }],
  );
});

Deno.test("splitHeads backward is one dispatch and supports retainGraph", async () => {
  await ready;
  const B = 2, T = 3, H = 2, D = 3, W = 3 * H * D;
  const data = randArray(B * T * W, 11);
  const x = tensor(Float32Array.from(data), [B, T, W]).requireGrad();
  const [q, k, v] = splitHeads(x, H);
  const y = concat([flatten(q), flatten(k), flatten(v)], 0);
  const g = tensor(Float32Array.from(randArray(y.size, 12)), [y.size]);
  // Reference cost: the same concat over three leaves; splitHeads must add exactly one dispatch.
  const leaves = [0, 1, 2].map(() => tensor(new Float32Array(B * H * T * D), [B, H, T, D]).requireGrad());
  const y2 = concat(leaves.map((l) => flatten(l)), 0);
  const stats = runtime().stats;
  let before = stats.dispatches;
  backward(y2, g);
  const concatCost = stats.dispatches - before;
  before = stats.dispatches;
  backward(y, g, { retainGraph: true });
  assert.equal(stats.dispatches - before, concatCost + 1);
  backward(y, g); // accumulates a second copy
  const [dx] = await readAll([x.grad!]);
  const gd = await g.toArray();
  // dx[b, t, j·C + h·D + d] = 2 · g[j-th block at (b, h, t, d)]
  const want = new Float64Array(dx.length);
  for (let j = 0; j < 3; j++) {
    const block = gd.subarray(j * B * H * T * D, (j + 1) * B * H * T * D);
    const merged = mergeRef(block, B, H, T, D);
    for (let bt = 0; bt < B * T; bt++) {
      for (let c = 0; c < H * D; c++) want[bt * W + j * H * D + c] = 2 * merged[bt * H * D + c];
    }
  }
  assertClose(dx, want, 1e-6, 1e-6, "dx after two backward passes");
  noGrad(() => [x, x.grad!, q, k, v, y, g, y2, ...leaves, ...leaves.map((l) => l.grad!)].forEach((t) => t.dispose()));
});

Deno.test("splitHeads and mergeHeads agree with slice + permute (the old model code)", async () => {
  await ready;
  const B = 2, T = 5, H = 3, D = 4, C = H * D;
  const x = tensor(Float32Array.from(randArray(B * T * 3 * C, 21)), [B, T, 3 * C]);
  const [q, k, v] = splitHeads(x, H);
  const old = permute(reshape(x, [B, T, 3, H, D]), [2, 0, 3, 1, 4]); // [3, B, H, T, D]
  const all = await readAll([q, k, v, old, mergeHeads(v)]);
  assertClose(all[0], all[3].subarray(0, B * H * T * D), 0, 0, "q");
  assertClose(all[1], all[3].subarray(B * H * T * D, 2 * B * H * T * D), 0, 0, "k");
  assertClose(all[2], all[3].subarray(2 * B * H * T * D), 0, 0, "v");
  assertClose(all[4], mergeRef(all[2], B, H, T, D), 0, 0, "merge v");
});

// ------------------------------------------------------------------ errors

Deno.test("splitHeads and mergeHeads reject bad inputs", async () => {
  await ready;
  const bad = (f: () => unknown, re: RegExp) => assert.throws(f, re);
  const x = tensor(new Float32Array(2 * 3 * 12), [2, 3, 12]);
  const xi = tensor(new Int32Array(2 * 3 * 12), [2, 3, 12], "i32");
  bad(() => splitHeads(xi, 2), /^Error: splitHeads: x must be f32, got i32 \[2, 3, 12\]/);
  bad(() => splitHeads(reshape(x, [6, 12]), 2), /splitHeads: x must be \[batch, seq, parts·channels\], got \[6, 12\]/);
  bad(() => splitHeads(x, 5), /splitHeads: last dim of \[2, 3, 12\] is not divisible by 3 parts × 5 heads/);
  bad(() => splitHeads(x, 2, 5), /splitHeads: parts n = 5 must be an integer in \[1, 4\]/);
  bad(() => splitHeads(x, 2, 0), /splitHeads: parts n = 0/);
  bad(() => splitHeads(x, 0), /splitHeads: heads = 0 must be a positive integer/);
  bad(() => splitHeads(x, 1.5), /splitHeads: heads = 1.5/);
  bad(() => mergeHeads(x), /mergeHeads: x must be \[batch, heads, seq, headDim\], got \[2, 3, 12\]/);
  bad(() => mergeHeads(reshape(xi, [2, 3, 3, 4])), /mergeHeads: x must be f32, got i32 \[2, 3, 3, 4\]/);
  noGrad(() => [x, xi].forEach((t) => t.dispose()));
});
