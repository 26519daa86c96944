import { assert, assertClose, checkOp, randArray, ready } from "./helpers.ts";
import { noGrad, readAll, tensor } from "../engine/tensor.ts";
import { logSoftmax, softmax } from "../engine/ops/softmax.ts";

/** float64 reference over rows of length n: softmax or log-softmax. */
function ref(data: ArrayLike<number>, n: number, log: boolean): Float64Array {
  const out = new Float64Array(data.length);
  for (let b = 0; b < data.length; b += n) {
    let m = -Infinity;
    for (let k = 0; k < n; k++) m = Math.max(m, data[b + k]);
    let s = 0;
    for (let k = 0; k < n; k++) s += Math.exp(data[b + k] - m);
    const lse = m + Math.log(s);
    for (let k = 0; k < n; k++) out[b + k] = log ? data[b + k] - lse : Math.exp(data[b + k] - lse);
  }
  return out;
}

const shapes = [[3, 5, 7], [4, 1], [1], [2, 257], [3, 300], [6, 33], [2, 300]];

// Odd shapes, rows of length 1 and rows longer than a workgroup; logSoftmax's last axis spelled both ways.
for (const [i, shape] of shapes.entries()) {
  const n = shape[shape.length - 1];
  const axis = i % 2 ? -1 : shape.length - 1;
  const opts = { shape, range: [-4, 4] as const, seed: i + 3 };
  Deno.test(`softmax [${shape}]: forward and backward`, () =>
    checkOp((t) => softmax(t), (d) => ref(d, n, false), [shape], { ...opts, atol: 1e-6, name: "softmax" }));
  Deno.test(`logSoftmax [${shape}] axis ${axis}: forward and backward`, () =>
    checkOp((t) => logSoftmax(t, axis), (d) => ref(d, n, true), [shape], {
      ...opts,
      gradAtol: 2e-3,
      name: "logSoftmax",
    }));
}

Deno.test("softmax over a GPT-2-vocabulary row (50,257) with logits of ±80 is stable", async () => {
  await ready;
  const n = 50257;
  const data = randArray(2 * n, 7, -80, 80);
  data[123] = 80; // a clear winner in row 0
  data[n + 50256] = 95; // and at the very end of row 1
  const x = tensor(Float32Array.from(data), [2, n]);
  const [p, lp] = await readAll([softmax(x), logSoftmax(x)]);
  assert.ok(p.every((v) => Number.isFinite(v)) && lp.every((v) => Number.isFinite(v)), "non-finite output");
  assertClose(p, ref(data, n, false), 1e-6, 1e-3, "softmax 50257");
  assertClose(lp, ref(Float32Array.from(data), n, true), 2e-4, 1e-5, "logSoftmax 50257");
  let s0 = 0, s1 = 0;
  for (let k = 0; k < n; k++) {
    s0 += p[k];
    s1 += p[n + k];
  }
  assertClose([s0, s1], [1, 1], 1e-4, 0, "row sums");
});

Deno.test("softmax over more rows than one grid dimension allows (65,535 workgroups) uses a 2-D grid", async () => {
  await ready;
  const rows = 65600, n = 3;
  const data = Float32Array.from(randArray(rows * n, 17, -5, 5));
  const [lp] = await readAll([logSoftmax(tensor(data, [rows, n]))]);
  assertClose(lp, ref(data, n, true), 1e-5, 1e-5, "65600 rows");
});

Deno.test("softmax handles huge and −∞ logits without NaN; a lone −∞ gets probability 0", async () => {
  await ready;
  const x = tensor([1e30, -1e30, 0, 1000, -Infinity, 999, 3, 3, 3], [3, 3]);
  const [p, lp] = await readAll([softmax(x), logSoftmax(x)]);
  const e = Math.exp(-1);
  assertClose(p, [1, 0, 0, 1 / (1 + e), 0, e / (1 + e), 1 / 3, 1 / 3, 1 / 3], 1e-6, 1e-5);
  assertClose(lp.slice(6), [-Math.log(3), -Math.log(3), -Math.log(3)], 1e-6, 1e-5);
  assert.equal(lp[4], -Infinity);
});

Deno.test("softmax rejects other axes, scalars and i32, naming the op", async () => {
  await ready;
  const x = tensor(new Float32Array(6), [2, 3]);
  assert.throws(() => softmax(x, 0), /softmax: only the last axis is supported .* got axis 0 for shape \[2,3\]/);
  assert.throws(() => logSoftmax(x, -2), /logSoftmax: only the last axis is supported/);
  assert.throws(() => softmax(tensor([1], [])), /softmax: expects a tensor with at least one dimension/);
  assert.throws(() => noGrad(() => softmax(tensor(new Int32Array(3)))), /softmax: expects an f32 tensor, got i32/);
});
