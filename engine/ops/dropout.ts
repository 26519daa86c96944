/**
 * Inverted dropout with a counter-based RNG (no mask is stored; backward regenerates it).
 *
 * The RNG, independent of WGSL (all arithmetic on unsigned 32-bit integers, modulo 2³²):
 *
 * ```text
 * mix32(x):  x ^= x >> 16;  x *= 0x7feb352d;  x ^= x >> 15;  x *= 0x846ca68b;  x ^= x >> 16
 * seed (an integer in [0, 2⁵³)) → lo = seed mod 2³², hi = floor(seed / 2³²)
 * key        = mix32(lo ^ mix32(hi ^ 0x9e3779b9))
 * bits(i)    = mix32(mix32(i ^ key) + key)          for element index i (mod 2³²)
 * threshold  = min(floor(p · 2³²), 2³² − 1)
 * keep(i)    = p < 1 and bits(i) ≥ threshold         (so P(keep) = 1 − p up to 2⁻³²)
 * y[i]       = keep(i) ? x[i] / (1 − p) : 0
 * ```
 *
 * `mix32` is a well-known 32-bit avalanche hash (the "lowbias32" constants). The element index of
 * {@linkcode dropout} is the flat row-major index of `x`; attention dropout uses the flat index of the
 * probability matrix `[B, H, Tq, Tk]`. {@linkcode dropoutMaskRef} replicates the decision on the CPU.
 * @module
 */

import { grid1d } from "../runtime.ts";
import { DROPOUT } from "../kernels/random.ts";
import { check, empty, runtime, type Tensor } from "../tensor.ts";
import { needsGrad, record } from "../autograd.ts";

/** The 32-bit avalanche hash of the dropout RNG (see the module docs). */
export function mix32(x: number): number {
  x = (x ^ (x >>> 16)) >>> 0;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x = (x ^ (x >>> 15)) >>> 0;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  return (x ^ (x >>> 16)) >>> 0;
}

/** The words a dropout kernel needs: the RNG key, the keep threshold and the scale of kept values. */
export interface DropoutRng {
  /** `mix32(lo ^ mix32(hi ^ 0x9e3779b9))` of the seed's low and high 32-bit halves. */
  key: number;
  /** Elements whose hash is ≥ this are kept: `min(floor(p·2³²), 2³² − 1)`. */
  threshold: number;
  /** 1 / (1 − p) (0 when p = 1). */
  scale: number;
}

/** Validates `seed` and `p` and derives the kernel words of the dropout RNG. */
export function dropoutRng(seed: number, p: number, op = "dropout"): DropoutRng {
  check(Number.isSafeInteger(seed) && seed >= 0, op, `seed must be an integer in [0, 2^53), got ${seed}`);
  check(p >= 0 && p <= 1, op, `dropout probability must be in [0, 1], got ${p}`);
  const lo = seed % 2 ** 32;
  const hi = Math.floor(seed / 2 ** 32);
  const key = mix32((lo ^ mix32((hi ^ 0x9e3779b9) >>> 0)) >>> 0);
  const threshold = Math.min(Math.floor(p * 2 ** 32), 2 ** 32 - 1);
  return { key, threshold, scale: p >= 1 ? 0 : 1 / (1 - p) };
}

/** The RNG's 32 random bits for element `index` under `key` (CPU replica of the kernels' hash). */
export function dropoutBits(key: number, index: number): number {
  return mix32((mix32((index ^ key) >>> 0) + key) >>> 0);
}

/**
 * Whether the dropout kernels keep element `index` for `seed` and drop probability `p`
 * (a CPU replica of the GPU decision, for tests and references).
 */
export function dropoutMaskRef(seed: number, index: number, p: number): boolean {
  const { key, threshold } = dropoutRng(seed, p, "dropoutMaskRef");
  return p < 1 && dropoutBits(key, index) >= threshold;
}

function applyMask(x: Tensor, rng: DropoutRng): Tensor {
  const out = empty(x.shape);
  const n = x.size;
  const params = { n, key: rng.key, threshold: rng.threshold, scale: rng.scale };
  runtime().run(DROPOUT, params, { x: x.storage, y: out.storage }, grid1d(n));
  return out;
}

/**
 * Inverted dropout: zeroes each element with probability `p` and scales kept ones by 1/(1 − p).
 * The mask is a pure function of (`seed`, element index), so the same seed reproduces it and the
 * backward pass regenerates it. With `p = 0` or `training = false` it is the identity: the result
 * shares `x`'s storage (gradients still flow through it unchanged).
 * @param x f32 tensor of any shape
 * @param p drop probability in [0, 1] (p = 1 gives zeros)
 * @param seed integer in [0, 2⁵³)
 * @param training when false, dropout is the identity
 * @returns a tensor shaped like `x`
 */
export function dropout(x: Tensor, p: number, seed: number, training = true): Tensor {
  check(x.dtype === "f32", "dropout", `expects an f32 tensor, got ${x.dtype} [${x.shape}]`);
  const rng = dropoutRng(seed, p);
  if (p === 0 || !training) {
    const same = x.detach();
    return needsGrad(x) ? record(same, "dropout", [x], (g) => [g.detach()]) : same;
  }
  const out = applyMask(x, rng);
  if (!needsGrad(x)) return out;
  return record(out, "dropout", [x], (g) => [applyMask(g, rng)]);
}
