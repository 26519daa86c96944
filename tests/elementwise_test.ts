import { assert, bindex, checkOp, type CheckOpOptions, coords, ready } from "./helpers.ts";
import { readAll, type Tensor, tensor } from "../engine/tensor.ts";
import * as ew from "../engine/ops/elementwise.ts";

const gelu = (v: number) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
// float64 erf (Abramowitz–Stegun 7.1.28 would be too coarse; use a series/continued fraction split).
function erf(x: number): number {
  const s = Math.sign(x), a = Math.abs(x);
  if (a < 3) {
    let sum = a, term = a;
    for (let n = 1; n < 100; n++) {
      term *= -a * a / n;
      sum += term / (2 * n + 1);
    }
    return s * 2 / Math.sqrt(Math.PI) * sum;
  }
  let cf = 0;
  for (let n = 60; n >= 1; n--) cf = n / 2 / (a + cf);
  return s * (1 - Math.exp(-a * a) / Math.sqrt(Math.PI) / (a + cf));
}

const unaryCases: [string, (x: Tensor) => Tensor, (v: number) => number, CheckOpOptions][] = [
  ["neg", ew.neg, (v) => -v, { range: [-2, 2] }],
  ["exp", ew.exp, Math.exp, { range: [-2, 2] }],
  ["log", ew.log, Math.log, { range: [0.2, 3] }],
  ["tanh", ew.tanh, Math.tanh, { range: [-3, 3] }],
  ["geluNew", ew.geluNew, gelu, { range: [-4, 4] }],
  ["gelu", ew.gelu, (v) => 0.5 * v * (1 + erf(v / Math.SQRT2)), { range: [-4, 4] }],
  ["relu", ew.relu, (v) => Math.max(0, v), { range: [-2, 2], avoid: [0] }],
  ["sigmoid", ew.sigmoid, (v) => 1 / (1 + Math.exp(-v)), { range: [-4, 4] }],
  ["sqrt", ew.sqrt, Math.sqrt, { range: [0.2, 3] }],
  ["rsqrt", ew.rsqrt, (v) => 1 / Math.sqrt(v), { range: [0.2, 3] }],
  ["abs", ew.abs, Math.abs, { range: [-2, 2], avoid: [0] }],
  ["square", ew.square, (v) => v * v, { range: [-2, 2] }],
  ["powScalar", (x) => ew.powScalar(x, 3), (v) => v ** 3, { range: [-2, 2] }],
  ["addScalar", (x) => ew.addScalar(x, -0.75), (v) => v - 0.75, { range: [-2, 2] }],
  ["mulScalar", (x) => ew.mulScalar(x, 2.5), (v) => 2.5 * v, { range: [-2, 2] }],
  ["affine", (x) => ew.affine(x, 1.5, -0.25), (v) => 1.5 * v - 0.25, { range: [-2, 2] }],
  ["clamp", (x) => ew.clamp(x, -0.5, 0.7), (v) => Math.min(0.7, Math.max(-0.5, v)), {
    range: [-2, 2],
    avoid: [-0.5, 0.7],
  }],
];

for (const [name, f, ref, opts] of unaryCases) {
  Deno.test(`unary ${name}: forward matches float64 and backward matches finite differences`, () =>
    checkOp(f, (a) => a.map(ref), [[37]], { ...opts, name, seed: name.length, shape: [37], gradAtol: 2e-3 }));
}

Deno.test("tanh and geluNew stay finite for huge inputs", async () => {
  await ready;
  const t = tensor([-1e30, -100, 100, 1e30, 3e38]);
  const [a, b] = await readAll([ew.tanh(t), ew.geluNew(t)]);
  assert.deepEqual(Array.from(a), [-1, -1, 1, 1, 1]);
  assert.ok(Array.from(b).every((v) => !Number.isNaN(v)), `gelu gave NaN: ${b}`);
});

const binCases: [string, typeof ew.add, (a: number, b: number) => number][] = [
  ["add", ew.add, (a, b) => a + b],
  ["sub", ew.sub, (a, b) => a - b],
  ["mul", ew.mul, (a, b) => a * b],
  ["div", ew.div, (a, b) => a / b],
];
const shapes: [number[], number[]][] = [[[3, 5], [3, 5]], [[2, 3, 5], [5]], [[4, 1, 3], [1, 5, 1]], [[7], [1]], [
  [2, 1],
  [2, 3],
]];

/** float64 reference of a broadcasting binary op on shapes `as` and `bs`. */
function bref(as: number[], bs: number[], op: (a: number, b: number) => number) {
  const out = ew.broadcastShapes(as, bs);
  return (a: Float64Array, b: Float64Array) =>
    Float64Array.from({ length: out.reduce((x, y) => x * y, 1) }, (_, i) => {
      const c = coords(i, out);
      return op(a[bindex(c, as, out)], b[bindex(c, bs, out)]);
    });
}

for (const [name, f, op] of binCases) {
  for (const [as, bs] of shapes) {
    Deno.test(`binary ${name} [${as}] with [${bs}]: forward and backward`, () =>
      checkOp(f, bref(as, bs, op), [as, bs], { name, range: [0.5, 2], atol: 1e-6, shape: ew.broadcastShapes(as, bs) }));
  }
}

for (const [name, f, op] of [["maximum", ew.maximum, Math.max], ["minimum", ew.minimum, Math.min]] as const) {
  for (const [as, bs] of shapes) {
    Deno.test(`${name} [${as}] with [${bs}] matches float64`, () =>
      checkOp(f, bref(as, bs, op), [as, bs], {
        name,
        shape: ew.broadcastShapes(as, bs),
        atol: 0,
        rtol: 0,
        grad: false,
      }));
  }
  Deno.test(`${name} handles ties and ±∞, and records no autograd node`, async () => {
    await ready;
    const a = tensor([1, -2, 3, Infinity, -Infinity, 0.5]).requireGrad();
    const b = tensor([1, 5, -3, 0, 7, 0.5]);
    const y = f(a, b);
    assert.equal(y.gradFn, null);
    assert.equal(y.requiresGrad, false);
    assert.deepEqual(
      Array.from(await y.toArray()),
      [1, -2, 3, Infinity, -Infinity, 0.5].map((v, i) => op(v, [1, 5, -3, 0, 7, 0.5][i])),
    );
    assert.throws(() => f(a, tensor([1, 2])), new RegExp(`${name}: shapes \\[6\\] and \\[2\\] do not broadcast`));
    assert.throws(() => f(a, tensor(new Int32Array(6))), new RegExp(`${name}: expects f32 tensors, got f32 and i32`));
  });
}

Deno.test("binary ops reject shapes that do not broadcast, naming the op", async () => {
  await ready;
  assert.throws(() => ew.add(tensor([1, 2, 3]), tensor([1, 2])), /add: shapes \[3\] and \[2\] do not broadcast/);
});

Deno.test("fills, arange and casts", async () => {
  await ready;
  const [z, o, f, a, c] = await readAll([
    ew.zeros([3]),
    ew.ones([2, 2]),
    ew.full([2], -2.5),
    ew.arange(4, { start: 3, step: 2 }),
    ew.cast(tensor([1.7, -2.2, 3]), "i32"),
  ]);
  assert.deepEqual(Array.from(z), [0, 0, 0]);
  assert.deepEqual(Array.from(o), [1, 1, 1, 1]);
  assert.deepEqual(Array.from(f), [-2.5, -2.5]);
  assert.deepEqual(Array.from(a), [3, 5, 7, 9]);
  assert.ok(a instanceof Int32Array);
  assert.deepEqual(Array.from(c), [1, -2, 3]);
});
