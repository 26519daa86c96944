import { assert, assertClose, checkOp, randArray, ready } from "./helpers.ts";
import { tensor } from "../engine/tensor.ts";
import { backward } from "../engine/autograd.ts";
import { layerNorm } from "../engine/ops/norm.ts";

/** float64 reference of layerNorm over the last dim. */
function lnRef(x: Float64Array, w: Float64Array, b: Float64Array, C: number, eps: number): Float64Array {
  const rows = x.length / C;
  const y = new Float64Array(x.length);
  for (let r = 0; r < rows; r++) {
    let mean = 0;
    for (let c = 0; c < C; c++) mean += x[r * C + c];
    mean /= C;
    let v = 0;
    for (let c = 0; c < C; c++) v += (x[r * C + c] - mean) ** 2;
    const rstd = 1 / Math.sqrt(v / C + eps);
    for (let c = 0; c < C; c++) y[r * C + c] = (x[r * C + c] - mean) * rstd * w[c] + b[c];
  }
  return y;
}

// x centred, and with an offset mean (checks the two-pass variance); dx, dweight and dbias.
for (const shape of [[3, 1], [2, 3, 7], [4, 33], [4, 768], [5, 300], [1, 1000]]) {
  for (const range of [[-1, 1], [2, 5]] as const) {
    Deno.test(`layerNorm [${shape}], x in [${range}]: forward and backward`, () => {
      const C = shape[shape.length - 1];
      return checkOp(
        (x, w, b) => layerNorm(x, w, b, 1e-5),
        (x, w, b) => lnRef(x, w, b, C, 1e-5),
        [{ shape, range }, { shape: [C], range: [0.5, 1.5] }, [C]],
        { shape, atol: 1e-4, rtol: 1e-4, gradAtol: 2e-3, gradRtol: 2e-2, name: "layerNorm" },
      );
    });
  }
}

Deno.test("layerNorm dweight/dbias over many rows (chunked partial sums)", async () => {
  await ready;
  const rows = 200, C = 5;
  const x = randArray(rows * C, 7), w = randArray(C, 8, 0.5, 1.5), b = randArray(C, 9), g = randArray(rows * C, 10);
  const xt = tensor(Float32Array.from(x), [rows, C]).requireGrad();
  const wt = tensor(Float32Array.from(w)).requireGrad(), bt = tensor(Float32Array.from(b)).requireGrad();
  backward(layerNorm(xt, wt, bt), tensor(Float32Array.from(g), [rows, C]));
  const dw = new Float64Array(C), db = new Float64Array(C);
  for (let r = 0; r < rows; r++) {
    let mean = 0, v = 0;
    for (let c = 0; c < C; c++) mean += x[r * C + c] / C;
    for (let c = 0; c < C; c++) v += (x[r * C + c] - mean) ** 2 / C;
    for (let c = 0; c < C; c++) {
      dw[c] += g[r * C + c] * (x[r * C + c] - mean) / Math.sqrt(v + 1e-5);
      db[c] += g[r * C + c];
    }
  }
  assertClose(await wt.grad!.toArray(), dw, 1e-3, 1e-4, "dweight");
  assertClose(await bt.grad!.toArray(), db, 1e-3, 1e-4, "dbias");
});

Deno.test("layerNorm only computes the gradients that are needed", async () => {
  await ready;
  const x = tensor(Float32Array.from(randArray(6, 11)), [2, 3]).requireGrad();
  const w = tensor([1, 2, 3]), b = tensor([0, 0, 0]);
  backward(layerNorm(x, w, b), tensor([1, 0, 0, 0, 1, 0], [2, 3]));
  assert.ok(x.grad && !w.grad && !b.grad);
});

Deno.test("layerNorm rejects bad shapes and dtypes, naming the op", async () => {
  await ready;
  const x = tensor(new Float32Array(6), [2, 3]);
  assert.throws(() => layerNorm(x, tensor([1, 1]), tensor([0, 0, 0])), /layerNorm: weight must be f32 \[3\]/);
  assert.throws(() => layerNorm(x, tensor([1, 1, 1]), tensor([0, 0])), /layerNorm: bias must be f32 \[3\]/);
  assert.throws(
    () => layerNorm(tensor(new Int32Array(3)), tensor([1, 1, 1]), tensor([0, 0, 0])),
    /layerNorm: x must be f32/,
  );
  assert.throws(() => layerNorm(x, tensor([1, 1, 1]), tensor([0, 0, 0]), -1), /layerNorm: eps/);
});
