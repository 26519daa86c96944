/**
 * The CPU kernels' fast `exp` (`engine/cpu/fastmath.ts`) against `Math.exp`: a dense sweep over the whole float32
 * range of exp (relative error, and the float32 roundings equal or neighbours), every float32 in a few narrow
 * windows (near 0, the table seams, underflow and overflow), and the edge cases: ±0, ±Infinity, NaN, values past
 * float32 underflow and overflow.
 */
import assert from "node:assert/strict";
import { fastExp } from "../engine/cpu/fastmath.ts";

const f = Math.fround;
const bits = new Uint32Array(1), asFloat = new Float32Array(bits.buffer);

/** Distance in float32 units in the last place between two non-negative finite float32 values. */
function ulps(a: number, b: number): number {
  asFloat[0] = a;
  const ia = bits[0];
  asFloat[0] = b;
  return Math.abs(ia - bits[0]);
}

/** Checks x: relative error ≤ 1e-10 where exp is a normal float32, float32 roundings at most one ulp apart. */
function check(x: number): string | null {
  const got = fastExp(x), want = Math.exp(x);
  if (want > 1.2e-38 && want < 3.4e38 && !(Math.abs(got - want) <= 1e-10 * want)) {
    return `exp(${x}): ${got} vs ${want} (relative error ${Math.abs(got - want) / want})`;
  }
  const fg = f(got), fw = f(want);
  if (fg === fw || (Number.isFinite(fw) && Number.isFinite(fg) && ulps(fg, fw) <= 1)) return null;
  return `exp(${x}) as float32: ${fg} vs ${fw}`;
}

Deno.test("fastExp: dense sweep over the float32 range of exp", () => {
  const bad: string[] = [];
  for (let x = -110; x < 95; x += 1.3e-4) {
    const err = check(x);
    if (err && bad.push(err) >= 5) break;
  }
  assert.deepEqual(bad, []);
});

Deno.test("fastExp: every float32 input in narrow windows (near 0, table seams, underflow, overflow)", () => {
  const bad: string[] = [];
  const windows = [1e-7, -1e-7, 0.01, -0.01, Math.LN2 / 128, -Math.LN2 / 128, -7.3, -87.3, -103.28, -103.97, 88.72];
  for (const centre of windows) {
    asFloat[0] = centre;
    const mid = bits[0];
    for (let k = -20000; k <= 20000; k++) {
      bits[0] = mid + k;
      const err = check(asFloat[0]);
      if (err) bad.push(err);
    }
  }
  assert.deepEqual(bad.slice(0, 5), []);
});

Deno.test("fastExp: edge cases", () => {
  assert.equal(fastExp(0), 1);
  assert.equal(fastExp(-0), 1);
  assert.equal(f(fastExp(1)), f(Math.exp(1)));
  assert.ok(Number.isNaN(fastExp(NaN)));
  assert.equal(fastExp(-Infinity), 0);
  assert.equal(fastExp(Infinity), Infinity);
  assert.equal(fastExp(-104), 0);
  assert.equal(fastExp(-1000), 0);
  assert.equal(fastExp(89), Infinity);
  assert.equal(fastExp(1000), Infinity);
  assert.equal(f(fastExp(-103.2)), f(Math.exp(-103.2))); // a float32 subnormal
  assert.ok(f(fastExp(-103.2)) > 0);
  assert.equal(f(fastExp(-104 + 1e-9)), 0);
  assert.equal(f(fastExp(88.72)), f(Math.exp(88.72))); // the largest float32s
  assert.ok(Number.isFinite(f(fastExp(88.72))));
  assert.equal(f(fastExp(88.73)), Infinity);
  assert.equal(f(fastExp(89 - 1e-9)), Infinity);
});
