/**
 * The project's one seeded PRNG module: deterministic initialisation, shuffling and test data all draw from
 * here. The generator is mulberry32, whose whole state is one 32-bit integer, so generators can be
 * checkpointed and resumed exactly ({@linkcode SeededRng}). One legacy stream, {@linkcode lcg32}, is kept
 * for the value head's initial weights so that existing runs keep their numbers.
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

/** A seeded mulberry32 generator whose whole state is one 32-bit integer, so runs can be resumed exactly. */
export class SeededRng {
  /** The 32-bit state. */
  state: number;
  /** Seeds the generator (the seed is hashed into the first state). */
  constructor(seed: number) {
    this.state = (Math.imul(seed | 0, 0x9e3779b1) ^ 0x85ebca6b) >>> 0;
  }
  /** A generator that starts from `state` as it is (no hashing), e.g. one saved from {@linkcode state}. */
  static fromState(state: number): SeededRng {
    const rng = new SeededRng(0);
    rng.state = state >>> 0;
    return rng;
  }
  /** A float in [0, 1). */
  next(): number {
    const r = mulberry32Next(this.state);
    this.state = r.state;
    return r.value;
  }
  /** A 32-bit unsigned integer. */
  nextU32(): number {
    return Math.floor(this.next() * 4294967296) >>> 0;
  }
  /** A uniformly random permutation of 0..n−1 (Fisher–Yates). */
  permutation(n: number): number[] {
    const p = Array.from({ length: n }, (_, i) => i);
    for (let i = n - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [p[i], p[j]] = [p[j], p[i]];
    }
    return p;
  }
}

/** A generator of floats in [0, 1): mulberry32 started from the state `seed` (unhashed). */
export function mulberry32(seed: number): () => number {
  const rng = SeededRng.fromState(seed);
  return () => rng.next();
}

/**
 * The legacy linear congruential stream (multiplier 1664525, increment 1013904223, modulo 2³²) started from
 * `seed`: floats in [0, 1). Only the value head's initial weights use it, so that a fresh head, and every run
 * and documented figure that starts from one, keeps its numbers; new code uses {@linkcode SeededRng}.
 */
export function lcg32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 4294967296;
  };
}
