import { assert, assertClose, checkOp, randArray, ready, rng } from "./helpers.ts";
import { readAll, tensor } from "../engine/tensor.ts";
import { backward } from "../engine/autograd.ts";
import { crossEntropy, entropyFromLogits, logProbsOf, type Reduction } from "../engine/ops/loss.ts";

/** float64 log-sum-exp of each row of length n. */
function lseRows(x: ArrayLike<number>, n: number): Float64Array {
  const out = new Float64Array(x.length / n);
  for (let r = 0; r < out.length; r++) {
    let m = -Infinity;
    for (let k = 0; k < n; k++) m = Math.max(m, x[r * n + k]);
    let s = 0;
    for (let k = 0; k < n; k++) s += Math.exp(x[r * n + k] - m);
    out[r] = m + Math.log(s);
  }
  return out;
}

/** float64 cross-entropy with PyTorch semantics (mean over non-ignored rows; 0 when none). */
function ceRef(x: ArrayLike<number>, t: ArrayLike<number>, n: number, reduction: Reduction, ignore = -100) {
  const lse = lseRows(x, n);
  const per = Float64Array.from(lse, (l, r) => t[r] === ignore ? 0 : l - x[r * n + t[r]]);
  if (reduction === "none") return per;
  const total = per.reduce((a, b) => a + b, 0);
  const count = Array.from(t).filter((v) => v !== ignore).length;
  return Float64Array.of(reduction === "sum" ? total : count === 0 ? 0 : total / count);
}

const logProbRef = (x: ArrayLike<number>, ids: ArrayLike<number>, n: number) =>
  Float64Array.from(lseRows(x, n), (l, r) => x[r * n + ids[r]] - l);

function entropyRef(x: ArrayLike<number>, n: number): Float64Array {
  return Float64Array.from(lseRows(x, n), (l, r) => {
    let h = 0;
    for (let k = 0; k < n; k++) {
      const lp = x[r * n + k] - l;
      h -= Math.exp(lp) * lp;
    }
    return h;
  });
}

function randIds(count: number, n: number, seed: number, ignoreEvery = 0, ignore = -100): Int32Array {
  const r = rng(seed);
  return Int32Array.from({ length: count }, (_, i) => ignoreEvery && i % ignoreEvery === 1 ? ignore : (r() * n) | 0);
}

Deno.test("crossEntropy equals hand-computed PyTorch values (mean, sum, none, ignored row)", async () => {
  await ready;
  // F.cross_entropy(torch.tensor([[1,2,3],[1,-1,0],[.5,.5,.5],[2,0,-2]]), torch.tensor([2,0,1,-100]))
  const logits = tensor([1, 2, 3, 1, -1, 0, 0.5, 0.5, 0.5, 2, 0, -2], [4, 3]);
  const t = tensor(Int32Array.from([2, 0, 1, -100]));
  const [m, s, none] = await readAll([
    crossEntropy(logits, t),
    crossEntropy(logits, t, { reduction: "sum" }),
    crossEntropy(logits, t, { reduction: "none" }),
  ]);
  assertClose(m, [0.6379414058522902], 1e-6, 1e-6, "mean");
  assertClose(s, [1.9138242175568707], 1e-6, 1e-6, "sum");
  assertClose(none, [0.4076059644443806, 0.40760596444438035, 1.0986122886681098, 0], 1e-6, 1e-6, "none");
});

// [..., C] layouts, C = 1, ignored targets (the default ignoreIndex, −1, and 7, a valid class); logits in ±r.
const CE_CASES: [number[], number, number, number][] = [
  [[7, 13], 3, -100, 5],
  [[2, 3, 5], 0, -100, 5],
  [[5, 1], 2, -1, 5],
  [[9, 300], 4, 7, 5],
  [[7, 13], 3, -100, 3],
  [[2, 3, 5], 4, -100, 3],
  [[3, 1], 0, -100, 3],
];
for (const [shape, every, ignore, r] of CE_CASES) {
  for (const reduction of ["mean", "sum", "none"] as Reduction[]) {
    Deno.test(`crossEntropy [${shape}] ${reduction}, ignoreIndex ${ignore} every ${every}, logits ±${r}: forward and backward`, () => {
      const n = shape[shape.length - 1], rows = shape.slice(0, -1).reduce((a, b) => a * b, 1);
      const options = ignore === -100 ? { reduction } : { reduction, ignoreIndex: ignore };
      return checkOp(
        (l, t) => crossEntropy(l, t, options),
        (l, t) => ceRef(l, t, n, reduction, ignore),
        [{ shape, range: [-r, r] }, {
          shape: shape.slice(0, -1),
          dtype: "i32",
          data: randIds(rows, n, n, every, ignore),
        }],
        { shape: reduction === "none" ? shape.slice(0, -1) : [], seed: rows + n, name: "crossEntropy" },
      );
    });
  }
}

Deno.test("crossEntropy with every target ignored: mean is 0 (PyTorch gives NaN), gradient is zero", async () => {
  await ready;
  const x = tensor(Float32Array.from(randArray(6, 1)), [2, 3]).requireGrad();
  const loss = crossEntropy(x, tensor(Int32Array.from([-100, -100])));
  assert.deepEqual(Array.from(await loss.toArray()), [0]);
  backward(loss);
  assert.deepEqual(Array.from(await x.grad!.toArray()), [0, 0, 0, 0, 0, 0]);
});

Deno.test("out-of-range targets give NaN for their row (loss and gradient), other rows are unaffected", async () => {
  await ready;
  const xd = randArray(12, 2);
  const x = tensor(Float32Array.from(xd), [3, 4]).requireGrad();
  const t = tensor(Int32Array.from([1, 4, -3]));
  const none = await crossEntropy(x, t, { reduction: "none" }).toArray();
  assertClose([none[0]], [ceRef(xd, [1, 0, 0], 4, "none")[0]], 1e-5, 1e-5);
  assert.ok(Number.isNaN(none[1]) && Number.isNaN(none[2]), `expected NaN, got ${none}`);
  const loss = crossEntropy(x, t);
  assert.ok(Number.isNaN(await loss.item()));
  backward(loss);
  const g = await x.grad!.toArray();
  assert.ok(g.slice(0, 4).every(Number.isFinite) && g.slice(4).every(Number.isNaN), `grad ${g}`);
  const lp = await logProbsOf(x, tensor(Int32Array.from([0, 9, 3]))).toArray();
  assert.ok(Number.isFinite(lp[0]) && Number.isNaN(lp[1]) && Number.isFinite(lp[2]), `logProbsOf ${lp}`);
});

for (const shape of [[3, 5, 7], [4, 1], [2, 260], [2, 300]]) {
  const n = shape[shape.length - 1], rows = shape.slice(0, -1).reduce((a, b) => a * b, 1);
  for (const r of [3, 6]) {
    const opts = { shape: shape.slice(0, -1), seed: r * rows + n };
    Deno.test(`logProbsOf [${shape}], logits ±${r}: forward and backward`, () =>
      checkOp(logProbsOf, (l, ids) => logProbRef(l, ids, n), [{ shape, range: [-r, r] }, {
        shape: shape.slice(0, -1),
        dtype: "i32",
        range: [0, n],
      }], { ...opts, name: "logProbsOf" }));
    Deno.test(`entropyFromLogits [${shape}], logits ±${r}: forward and backward`, () =>
      checkOp(entropyFromLogits, (l) => entropyRef(l, n), [{ shape, range: [-r, r] }], { ...opts, name: "entropy" }));
  }
}

Deno.test("fused losses over a GPT-2-vocabulary row (50,257) with logits of ±80 are stable", async () => {
  await ready;
  const n = 50257;
  const x = Float32Array.from(randArray(2 * n, 13, -80, 80));
  x[n + 50256] = 90;
  const ids = Int32Array.from([4242, 50256]);
  const lt = tensor(x, [2, n]), tt = tensor(ids);
  const [lp, ce, h] = await readAll([
    logProbsOf(lt, tt),
    crossEntropy(lt, tt, { reduction: "none" }),
    entropyFromLogits(lt),
  ]);
  assertClose(lp, logProbRef(x, ids, n), 2e-4, 1e-5, "logProbsOf");
  assertClose(ce, ceRef(x, ids, n, "none"), 2e-4, 1e-5, "crossEntropy");
  assertClose(h, entropyRef(x, n), 2e-4, 1e-4, "entropy");
});

Deno.test("losses reject mismatched shapes, wrong dtypes and bad options, naming the op", async () => {
  await ready;
  const x = tensor(new Float32Array(12), [3, 4]);
  const t = tensor(Int32Array.from([0, 1, 2]));
  assert.throws(
    () => crossEntropy(x, tensor(Int32Array.from([0, 1]))),
    /crossEntropy: logits \[3,4\] need targets of shape \[3\], got \[2\]/,
  );
  assert.throws(() => crossEntropy(x, tensor([0, 1, 2])), /crossEntropy: targets must be i32, got f32/);
  assert.throws(() => crossEntropy(x, t, { reduction: "avg" as Reduction }), /crossEntropy: unknown reduction "avg"/);
  assert.throws(() => logProbsOf(t, t), /logProbsOf: logits must be f32, got i32/);
  assert.throws(
    () => entropyFromLogits(tensor(new Float32Array(0), [2, 0])),
    /entropyFromLogits: logits \[2,0\] have no classes/,
  );
});

Deno.test("entropyFromLogits with logits at −∞ (masked tokens): finite entropy, no gradient to the masked logits", async () => {
  await ready;
  const n = 7, x = Float32Array.from([0.5, -Infinity, 1.5, -2, -Infinity, 0, 3, 1, 1, 1, 1, 1, 1, -Infinity]);
  const lt = tensor(x, [2, n]).requireGrad();
  const h = entropyFromLogits(lt);
  backward(h, tensor(Float32Array.from([1, -0.5])));
  const [hv, gv] = await readAll([h, lt.grad!]);
  // float64: H = −Σ p log p over the unmasked logits (p log p → 0 as p → 0).
  const lse = lseRows(x, n), ent = new Float64Array(2), g = [1, -0.5];
  for (let i = 0; i < 2 * n; i++) {
    if (x[i] > -Infinity) {
      ent[Math.floor(i / n)] -= Math.exp(x[i] - lse[Math.floor(i / n)]) * (x[i] - lse[Math.floor(i / n)]);
    }
  }
  assertClose(hv, ent, 1e-5, 1e-6, "entropy");
  for (const i of [1, 4, 13]) assert.equal(gv[i], 0, `gradient of masked logit ${i}`);
  // Elsewhere: −g · p · (log p + H).
  const want = new Float64Array(2 * n);
  for (let i = 0; i < 2 * n; i++) {
    const r = Math.floor(i / n), lp = x[i] - lse[r];
    want[i] = x[i] === -Infinity ? 0 : -g[r] * Math.exp(lp) * (lp + ent[r]);
  }
  assertClose(gv, want, 1e-5, 1e-6, "entropy gradient");
});

Deno.test("a NaN logit makes its row's loss, log-prob and entropy NaN (never silently skipped); other rows stay finite", async () => {
  await ready;
  for (const n of [7, 3000]) {
    const x = Float32Array.from(randArray(2 * n, n, -3, 3));
    x[n + 5] = NaN; // row 1, not its target
    const lt = tensor(x, [2, n]), tt = tensor(Int32Array.from([1, 2]));
    const [lp, ce, h] = await readAll([
      logProbsOf(lt, tt),
      crossEntropy(lt, tt, { reduction: "none" }),
      entropyFromLogits(lt),
    ]);
    for (const [what, v] of [["logProbsOf", lp], ["crossEntropy", ce], ["entropy", h]] as const) {
      assert.ok(Number.isFinite(v[0]) && Number.isNaN(v[1]), `${what} (n ${n}): ${v[0]}, ${v[1]}`);
    }
  }
});
