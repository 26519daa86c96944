/**
 * The project's one small seeded PRNG (mulberry32): deterministic initialisation, shuffling and
 * test data. Its whole state is one 32-bit integer, so generators can be checkpointed exactly.
 * @module
 */

/** Advances a mulberry32 state; returns the next state and a float in [0, 1). */
export function mulberry32Next(state: number): { state: number; value: number } {
  const s = (state + 0x6d2b79f5) >>> 0;
  let t = s;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return { state: s, value: ((t ^ (t >>> 14)) >>> 0) / 4294967296 };
}

/** A generator of floats in [0, 1) seeded with `seed`. */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    const r = mulberry32Next(state);
    state = r.state;
    return r.value;
  };
}
