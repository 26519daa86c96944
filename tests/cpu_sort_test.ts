/**
 * The CPU backend's sort kernels against the compare-exchange network of `index_sort.wgsl`, step by step: the local
 * sort and local merges sort whole 512-pair blocks directly (packed into float64, or through an index permutation
 * for arrays too long to pack), the global steps exchange pairs; the words must come out as the network leaves them.
 */

import assert from "node:assert/strict";
import "../engine/cpu/mod.ts";
import { cpuKernelOf, type HostArray } from "../engine/cpu/kernel_table.ts";
import { sortBlock } from "../engine/cpu/kernels/indexing.ts";
import * as K from "../engine/kernels/indexing.ts";
import type { Kernel } from "../engine/kernel.ts";
import { mulberry32 } from "../engine/random.ts";

const DROP = 0xffffffff;

/** One step of the network (distance j in stage k) over all pairs, as the shader's threads apply it. */
function networkStep(keys: Uint32Array, vals: Uint32Array, total: number, k: number, j: number): void {
  for (let t = 0; t < total / 2; t++) {
    const i = (t & ~(j - 1)) * 2 + (t & (j - 1)), l = i + j;
    const bFirst = keys[l] < keys[i] || (keys[l] === keys[i] && vals[l] < vals[i]);
    if (bFirst === ((i & k) === 0)) {
      [keys[i], keys[l]] = [keys[l], keys[i]];
      [vals[i], vals[l]] = [vals[l], vals[i]];
    }
  }
}

/** Keys with many repeats and dropped (padding) pairs; values a permutation of the positions. */
function pairs(total: number, seed: number): [Uint32Array, Uint32Array] {
  const rnd = mulberry32(seed);
  const keys = Uint32Array.from({ length: total }, () => rnd() < 0.2 ? DROP : Math.floor(rnd() * 40) * 100_003);
  const vals = Uint32Array.from({ length: total }, (_, i) => i);
  for (let i = total - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [vals[i], vals[j]] = [vals[j], vals[i]];
  }
  return [keys, vals];
}

const view = (u32: Uint32Array): HostArray =>
  ({ u32, i32: new Int32Array(u32.buffer), f32: new Float32Array(u32.buffer) }) as HostArray;

function run(k: Kernel, keys: Uint32Array, vals: Uint32Array, total: number, a = 0, b = 0): void {
  const params = { m: total, a, b, c: 0, total, shape: [], stride: [] };
  cpuKernelOf(k)!.run({
    params,
    bindings: { keys: view(keys), vals: view(vals) },
    grid: [total / 512, 1, 1],
    overrides: {},
  });
}

for (const total of [512, 1024, 4096]) {
  Deno.test(`cpu sort kernels: ${total} pairs, every dispatch leaves the network's words`, () => {
    const [keys, vals] = pairs(total, total);
    const [rk, rv] = [keys.slice(), vals.slice()];
    for (let k = 2; k <= 512; k *= 2) for (let j = k / 2; j >= 1; j /= 2) networkStep(rk, rv, total, k, j);
    run(K.SORT_LOCAL as Kernel, keys, vals, total);
    assert.deepEqual([keys, vals], [rk, rv], "local sort");
    for (let k = 1024; k <= total; k *= 2) {
      for (let j = k / 2; j >= 512; j /= 2) {
        networkStep(rk, rv, total, k, j);
        run(K.SORT_GLOBAL_STEP as Kernel, keys, vals, total, k, j);
        assert.deepEqual([keys, vals], [rk, rv], `global step ${k}/${j}`);
      }
      for (let j = 256; j >= 1; j /= 2) networkStep(rk, rv, total, k, j);
      run(K.SORT_LOCAL_MERGE as Kernel, keys, vals, total, k);
      assert.deepEqual([keys, vals], [rk, rv], `local merge ${k}`);
    }
    for (let i = 1; i < total; i++) {
      assert.ok(keys[i - 1] < keys[i] || (keys[i - 1] === keys[i] && vals[i - 1] < vals[i]));
    }
  });
}

Deno.test("cpu sort kernels: a block sorts the same packed into float64 and through an index permutation", () => {
  for (const ascending of [true, false]) {
    const [keys, vals] = pairs(1024, ascending ? 1 : 2);
    keys[3] = 0xfffffffe; // the largest keys and values pack exactly
    const [k2, v2] = [keys.slice(), vals.slice()];
    sortBlock(keys, vals, 512, ascending, 1024);
    sortBlock(k2, v2, 512, ascending, 1024, 0);
    assert.deepEqual([keys, vals], [k2, v2]);
    const [rk, rv] = pairs(1024, ascending ? 1 : 2);
    rk[3] = 0xfffffffe;
    assert.deepEqual([keys.subarray(0, 512), vals.subarray(0, 512)], [rk.subarray(0, 512), rv.subarray(0, 512)]);
    for (let i = 513; i < 1024; i++) {
      const before = keys[i - 1] < keys[i] || (keys[i - 1] === keys[i] && vals[i - 1] < vals[i]);
      assert.equal(before, ascending, `pair ${i}`);
    }
  }
});
