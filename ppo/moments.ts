/**
 * TRL's `RunningMoments`: the running mean and variance of every score seen so far, serialisable for
 * checkpoints.
 * @module
 */

/** Serialised {@linkcode RunningMoments}. */
export interface RunningMomentsState {
  /** Running mean. */
  mean: number;
  /** Running (population) variance. */
  var: number;
  /** Bessel-corrected running standard deviation. */
  std: number;
  /** Number of values seen (starts at 1e-24). */
  count: number;
}

/** TRL's `RunningMoments`: mean and variance of every score seen so far, combined batch by batch. */
export class RunningMoments {
  /** Running mean. */
  mean = 0;
  /** Running population variance. */
  var = 1;
  /** Running standard deviation with Bessel's correction. */
  std = 1;
  /** Values seen (tiny initial count, as TRL). */
  count = 1e-24;

  /**
   * Merges a batch (Chan et al.'s parallel update) and returns the batch's own mean and unbiased std.
   * @param xs the batch's values
   * @returns [batch mean, batch std (unbiased)]
   */
  update(xs: readonly number[]): [number, number] {
    const n = xs.length;
    if (n === 0) throw new Error("RunningMoments.update: empty batch");
    const m = xs.reduce((a, b) => a + b, 0) / n;
    const v = xs.reduce((a, b) => a + (b - m) ** 2, 0) / n;
    const delta = m - this.mean;
    const tot = this.count + n;
    const oldSum = this.var * this.count + delta * delta * this.count * n / tot;
    this.mean += delta * n / tot;
    this.var = (oldSum + v * n) / tot;
    this.std = Math.sqrt(this.var * tot / (tot - 1));
    this.count = tot;
    return [m, Math.sqrt(v * n / (n - 1))];
  }

  /** Serialisable state. */
  toJSON(): RunningMomentsState {
    return { mean: this.mean, var: this.var, std: this.std, count: this.count };
  }

  /** Restores a state from {@linkcode toJSON}. */
  static fromJSON(s: RunningMomentsState): RunningMoments {
    const r = new RunningMoments();
    for (const k of ["mean", "var", "std", "count"] as const) {
      if (typeof s?.[k] !== "number") throw new Error(`RunningMoments.fromJSON: missing "${k}"`);
      r[k] = s[k];
    }
    return r;
  }
}
