/**
 * Public engine API without op-level tests elsewhere: the async scopes (tidyAsync, noGradAsync) and the tensor-level
 * safetensors I/O of engine/io.ts. (maximum, minimum, relu and abs are in elementwise_test.ts.)
 */
import { assert, assertClose, ready } from "./helpers.ts";
import { isGradEnabled, keep, noGradAsync, runtime, type Tensor, tensor, tidyAsync } from "../engine/tensor.ts";
import { backward } from "../engine/autograd.ts";
import { add, exp, mul } from "../engine/ops/elementwise.ts";
import { loadSafetensors, saveSafetensors } from "../engine/io.ts";

/** Bytes the runtime's live storages hold for one more 3-element f32 tensor. */
function bytesPerSmallTensor(): number {
  const before = runtime().stats.liveBytes;
  const t = tensor([0, 0, 0]);
  const bytes = runtime().stats.liveBytes - before;
  t.dispose();
  return bytes;
}

// ------------------------------------------------------------------ tidyAsync

Deno.test("tidyAsync disposes what was created across awaits, keeps what the result reaches and kept tensors", async () => {
  await ready;
  const rt = runtime();
  const per = bytesPerSmallTensor();
  assert.ok(per > 0);
  const live0 = rt.stats.liveBytes;
  const made: Tensor[] = [];
  let kept: Tensor | null = null;
  const result = await tidyAsync(async () => {
    const a = tensor([1, 2, 3]);
    made.push(a);
    await a.toArray(); // a GPU round trip inside the scope
    const b = exp(a);
    made.push(b, mul(a, b));
    await Promise.resolve();
    kept = keep(mul(b, b));
    return { list: [add(a, b)], map: new Map([["sq", mul(a, a)]]), n: 3 };
  });
  for (const t of made) assert.ok(t.disposed, "tensors created inside the scope are disposed");
  const [sum, sq] = [result.list[0], result.map.get("sq")!];
  assert.ok(!sum.disposed && !sq.disposed && !kept!.disposed);
  assert.equal(result.n, 3);
  assert.equal(rt.stats.liveBytes - live0, 3 * per, "exactly the 2 results and the kept tensor stay live");
  assertClose(await sum.toArray(), [1, 2, 3].map((v) => v + Math.exp(v)), 1e-5, 1e-6);
  assertClose(await kept!.toArray(), [1, 2, 3].map((v) => Math.exp(2 * v)), 1e-5, 1e-6);
  assertClose(await sq.toArray(), [1, 4, 9], 0, 0);
  for (const t of [sum, sq, kept!]) t.dispose();
  assert.equal(rt.stats.liveBytes, live0, "all memory returned to the pool");
});

Deno.test("tidyAsync: a rejected scope disposes its tensors and rethrows; nested scopes hand results outwards", async () => {
  await ready;
  const rt = runtime();
  const per = bytesPerSmallTensor();
  const live0 = rt.stats.liveBytes;
  let inner: Tensor | null = null, innerResult: Tensor | null = null, afterFailure: Tensor | null = null;
  const outer = await tidyAsync(async () => {
    await assert.rejects(
      tidyAsync(async () => {
        inner = exp(tensor([1, 2, 3]));
        await inner.toArray();
        throw new Error("boom");
      }),
      /boom/,
    );
    assert.ok(inner!.disposed, "the failed scope's tensors are disposed");
    innerResult = await tidyAsync(async () => {
      await Promise.resolve();
      return exp(tensor([0, 0, 0]));
    });
    assert.ok(!innerResult.disposed, "an inner result survives its own scope");
    // After the failed inner scope, new tensors belong to this (outer) scope again.
    afterFailure = mul(innerResult, innerResult);
    return add(afterFailure, innerResult);
  });
  assert.ok(innerResult!.disposed && afterFailure!.disposed, "the outer scope disposes what it did not return");
  assert.equal(rt.stats.liveBytes - live0, per, "only the outer result is live");
  assert.deepEqual(Array.from(await outer.toArray()), [2, 2, 2]);
  outer.dispose();
  assert.equal(rt.stats.liveBytes, live0);
});

// ------------------------------------------------------------------ noGradAsync

Deno.test("noGradAsync records no autograd nodes across awaits and restores recording afterwards", async () => {
  await ready;
  const x = tensor([0.5, -1, 2]).requireGrad();
  assert.ok(isGradEnabled());
  const y = await noGradAsync(async () => {
    assert.equal(isGradEnabled(), false);
    await x.toArray();
    assert.equal(isGradEnabled(), false, "still off after an await");
    const inner = await noGradAsync(() => Promise.resolve(mul(x, x)));
    assert.equal(isGradEnabled(), false, "a nested noGradAsync restores the outer (disabled) state");
    return add(inner, x);
  });
  assert.ok(isGradEnabled(), "recording is back on");
  assert.equal(y.gradFn, null);
  assert.equal(y.requiresGrad, false);
  assertClose(await y.toArray(), [0.75, 0, 6], 1e-6, 0);
  assert.throws(() => backward(y, tensor([1, 1, 1])), /does not require grad/);
  // Ops record again afterwards, and their gradients are right.
  const z = mul(x, x);
  assert.ok(z.gradFn !== null && z.requiresGrad);
  backward(z, tensor([1, 1, 1]));
  assertClose(await x.grad!.toArray(), [1, -2, 4], 1e-6, 0);
});

Deno.test("noGradAsync re-enables recording when its function rejects", async () => {
  await ready;
  await assert.rejects(
    noGradAsync(async () => {
      await Promise.resolve();
      throw new Error("boom");
    }),
    /boom/,
  );
  assert.ok(isGradEnabled());
  const x = tensor([1, 2]).requireGrad();
  assert.ok(mul(x, x).gradFn !== null);
});

// ------------------------------------------------------------------ engine/io.ts

/** The JSON header of a safetensors file (8-byte little-endian length, then JSON). */
async function header(path: string): Promise<Record<string, unknown>> {
  const bytes = await Deno.readFile(path);
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  return JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
}

/** Round-to-nearest IEEE half precision of a normal, non-tie value. */
const toF16 = (v: number) => {
  const q = 2 ** (Math.floor(Math.log2(Math.abs(v))) - 10);
  return Math.round(v / q) * q;
};

Deno.test("saveSafetensors writes F32/I32 (or F16) with shapes and metadata; loadSafetensors reads them back", async () => {
  await ready;
  const dir = await Deno.makeTempDir();
  try {
    const wData = [0.1, -3.14159, 1000.7, 1e-3, -2.5, 65000];
    const w = tensor(wData, [2, 3]), ids = tensor([2147483647, -2147483648, 0, 7], [4], "i32");
    const s = tensor([42.125], [1, 1, 1]);
    const path = `${dir}/a.safetensors`;
    await saveSafetensors({ w, ids, s }, path, { metadata: { format: "pt", note: "héllo" } });
    const h = await header(path);
    assert.deepEqual(h.__metadata__, { format: "pt", note: "héllo" });
    for (const [name, dtype, shape] of [["w", "F32", [2, 3]], ["ids", "I32", [4]], ["s", "F32", [1, 1, 1]]] as const) {
      const e = h[name] as { dtype: string; shape: number[]; data_offsets: [number, number] };
      assert.equal(e.dtype, dtype, name);
      assert.deepEqual(e.shape, shape, name);
      assert.equal(e.data_offsets[1] - e.data_offsets[0], 4 * shape.reduce((a: number, b) => a * b, 1), name);
    }
    const back = await loadSafetensors(new URL(`file://${path}`));
    assert.deepEqual([...back.keys()].sort(), ["ids", "s", "w"]);
    assert.deepEqual([...back.get("w")!.shape], [2, 3]);
    assert.deepEqual([...back.get("s")!.shape], [1, 1, 1]);
    assert.equal(back.get("w")!.dtype, "f32");
    assert.equal(back.get("ids")!.dtype, "i32");
    assert.deepEqual(Array.from(await back.get("w")!.toArray()), wData.map(Math.fround));
    assert.deepEqual(Array.from(await back.get("ids")!.toArray()), [2147483647, -2147483648, 0, 7]);

    // F16: f32 tensors are rounded to half precision, i32 stay I32; a Map works too, and the file is replaced.
    await saveSafetensors(new Map([["w", w], ["ids", ids]]), path, { dtype: "F16" });
    const h16 = await header(path);
    assert.equal((h16.w as { dtype: string }).dtype, "F16");
    assert.equal((h16.ids as { dtype: string }).dtype, "I32");
    assert.equal(h16.s, undefined);
    const back16 = await loadSafetensors(path);
    assert.deepEqual([...back16.keys()].sort(), ["ids", "w"]);
    assert.deepEqual(Array.from(await back16.get("w")!.toArray()), wData.map(toF16));
    assert.deepEqual(Array.from(await back16.get("ids")!.toArray()), [2147483647, -2147483648, 0, 7]);

    const files = [];
    for await (const e of Deno.readDir(dir)) files.push(e.name);
    assert.deepEqual(files, ["a.safetensors"], "no temporary files are left behind");
    for (const t of [w, ids, s, ...back.values(), ...back16.values()]) t.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
