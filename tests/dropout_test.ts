import { assert, assertClose, checkOp, randArray, ready } from "./helpers.ts";
import { noGrad, readAll, tensor } from "../engine/tensor.ts";
import { backward } from "../engine/autograd.ts";
import { dropout, dropoutMaskRef } from "../engine/ops/dropout.ts";

function dropRef(x: Float64Array, p: number, seed: number): Float64Array {
  return x.map((v, i) => dropoutMaskRef(seed, i, p) ? v / (1 - p) : 0);
}

// The mask equals dropoutMaskRef, kept values are scaled by 1/(1-p), and backward uses the forward mask.
for (const [p, seed] of [[0.3, 5], [0.5, 2 ** 40 + 3], [0.9, 0], [0.4, 99]]) {
  Deno.test(`dropout p=${p} seed=${seed}: forward and backward`, () =>
    checkOp((t) => dropout(t, p, seed), (a) => dropRef(a, p, seed), [[1031]], {
      range: [0.5, 2],
      seed: seed % 1000,
      atol: 0,
      rtol: 1e-6,
    }));
}

Deno.test("dropout: kept fraction ≈ 1 − p over 100k elements", async () => {
  await ready;
  const n = 100_000;
  const x = tensor(new Float32Array(n).fill(1), [100, 1000]);
  for (const p of [0.1, 0.25, 0.5, 0.9]) {
    const y = await noGrad(() => dropout(x, p, 1234)).toArray();
    let kept = 0;
    for (const v of y) if (v !== 0) kept++;
    const sigma = Math.sqrt(n * p * (1 - p));
    assert.ok(Math.abs(kept - n * (1 - p)) < 6 * sigma, `p=${p}: kept ${kept} of ${n}`);
    assert.ok(y.every((v) => v === 0 || Math.abs(v - 1 / (1 - p)) < 1e-5), "kept values are 1/(1-p)");
  }
});

Deno.test("dropout: same seed reproduces the mask, another seed changes it", async () => {
  await ready;
  const x = tensor(new Float32Array(4096).fill(1));
  const [a, b, c, d] = await readAll(noGrad(() => [
    dropout(x, 0.5, 7),
    dropout(x, 0.5, 7),
    dropout(x, 0.5, 8),
    dropout(x, 0.5, 7 + 2 ** 32),
  ]));
  assert.deepEqual(Array.from(a), Array.from(b));
  assert.notDeepEqual(Array.from(a), Array.from(c));
  assert.notDeepEqual(Array.from(a), Array.from(d), "the seed's high bits matter");
});

Deno.test("dropout backward uses the forward mask", async () => {
  await ready;
  const p = 0.4, seed = 99;
  const x = tensor(Float32Array.from(randArray(301, 2, 0.5, 2)), [7, 43]).requireGrad();
  const y = dropout(x, p, seed);
  backward(y, tensor(new Float32Array(301).fill(1), [7, 43]));
  const [yv, gv] = await readAll([y, x.grad!]);
  for (let i = 0; i < 301; i++) {
    assert.equal(yv[i] !== 0, gv[i] !== 0, `element ${i}`);
    if (gv[i] !== 0) assert.ok(Math.abs(gv[i] - 1 / (1 - p)) < 1e-5);
  }
});

Deno.test("dropout: p = 0 and training = false are the identity (gradient passes through); p = 1 gives zeros", async () => {
  await ready;
  const data = randArray(9, 3);
  const x = tensor(Float32Array.from(data), [3, 3]).requireGrad();
  const a = dropout(x, 0, 1), b = dropout(x, 0.5, 1, false), c = noGrad(() => dropout(x, 1, 1));
  const [av, bv, cv] = await readAll([a, b, c]);
  assertClose(av, data, 1e-6, 0);
  assertClose(bv, data, 1e-6, 0);
  assert.deepEqual(Array.from(cv), new Array(9).fill(0));
  backward(b, tensor(new Float32Array(9).fill(2), [3, 3]));
  assert.deepEqual(Array.from(await x.grad!.toArray()), new Array(9).fill(2));
});

Deno.test("dropout rejects bad arguments, naming the op", async () => {
  await ready;
  const x = tensor([1, 2, 3]);
  assert.throws(() => dropout(x, 1.5, 1), /dropout: dropout probability must be in \[0, 1\], got 1.5/);
  assert.throws(() => dropout(x, 0.5, -1), /dropout: seed must be an integer/);
  assert.throws(() => dropout(x, 0.5, 1.5), /dropout: seed must be an integer/);
  assert.throws(() => dropout(tensor(new Int32Array(3)), 0.5, 1), /dropout: expects an f32 tensor, got i32/);
});
