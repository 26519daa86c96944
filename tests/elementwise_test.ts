import { assert, assertClose, gradCheck, randArray, ready } from "./helpers.ts";
import { noGrad, readAll, tensor } from "../engine/tensor.ts";
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

const unaryCases: [
  string,
  (x: import("../engine/tensor.ts").Tensor) => import("../engine/tensor.ts").Tensor,
  (v: number) => number,
  number,
  number,
][] = [
  ["neg", ew.neg, (v) => -v, -2, 2],
  ["exp", ew.exp, Math.exp, -2, 2],
  ["log", ew.log, Math.log, 0.2, 3],
  ["tanh", ew.tanh, Math.tanh, -3, 3],
  ["geluNew", ew.geluNew, gelu, -4, 4],
  ["gelu", ew.gelu, (v) => 0.5 * v * (1 + erf(v / Math.SQRT2)), -4, 4],
  ["sigmoid", ew.sigmoid, (v) => 1 / (1 + Math.exp(-v)), -4, 4],
  ["sqrt", ew.sqrt, Math.sqrt, 0.2, 3],
  ["rsqrt", ew.rsqrt, (v) => 1 / Math.sqrt(v), 0.2, 3],
  ["square", ew.square, (v) => v * v, -2, 2],
  ["powScalar", (x) => ew.powScalar(x, 3), (v) => v ** 3, -2, 2],
  ["affine", (x) => ew.affine(x, 1.5, -0.25), (v) => 1.5 * v - 0.25, -2, 2],
  ["clamp", (x) => ew.clamp(x, -0.5, 0.7), (v) => Math.min(0.7, Math.max(-0.5, v)), -2, 2],
];

for (const [name, f, ref, lo, hi] of unaryCases) {
  Deno.test(`unary ${name}: forward matches float64 and backward matches finite differences`, async () => {
    await ready;
    const x = randArray(37, name.length, lo, hi);
    const y = noGrad(() => f(tensor(Float32Array.from(x), [37])));
    assertClose(await y.toArray(), x.map(ref), 1e-5, 1e-5, name);
    await gradCheck(([t]) => f(t), ([a]) => a.map(ref), [{ data: x, shape: [37] }], { atol: 2e-3 });
  });
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

function bref(as: number[], bs: number[], op: (a: number, b: number) => number) {
  const out = ew.broadcastShapes(as, bs);
  return (a: Float64Array, b: Float64Array) => {
    const n = out.reduce((x, y) => x * y, 1);
    const r = new Float64Array(n);
    const idx = (shape: number[], coords: number[]) => {
      let k = 0;
      const off = out.length - shape.length;
      for (let d = 0; d < shape.length; d++) k = k * shape[d] + (shape[d] === 1 ? 0 : coords[d + off]);
      return k;
    };
    for (let i = 0; i < n; i++) {
      const c: number[] = [];
      let rem = i;
      for (let d = out.length - 1; d >= 0; d--) {
        c[d] = rem % out[d];
        rem = Math.floor(rem / out[d]);
      }
      r[i] = op(a[idx(as, c)], b[idx(bs, c)]);
    }
    return r;
  };
}

for (const [name, f, op] of binCases) {
  for (const [as, bs] of shapes) {
    Deno.test(`binary ${name} [${as}] with [${bs}]: forward and backward`, async () => {
      await ready;
      const na = as.reduce((x, y) => x * y, 1), nb = bs.reduce((x, y) => x * y, 1);
      const a = randArray(na, 1, 0.5, 2), b = randArray(nb, 2, 0.5, 2);
      const ref = bref(as, bs, op);
      const y = noGrad(() => f(tensor(Float32Array.from(a), as), tensor(Float32Array.from(b), bs)));
      assert.deepEqual([...y.shape], ew.broadcastShapes(as, bs));
      assertClose(await y.toArray(), ref(a, b), 1e-6, 1e-5, name);
      await gradCheck(([x, z]) => f(x, z), ([x, z]) => ref(x, z), [{ data: a, shape: as }, { data: b, shape: bs }]);
    });
  }
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
