/**
 * Masked statistics over {@linkcode Rows} as TRL computes them: mean, (unbiased) variance and whitening,
 * counting only the elements whose mask is non-zero.
 * @module
 */

import type { Rows } from "./rows.ts";

/** Σ x·mask / Σ mask over every element (NaN when the mask is all zeros, as in TRL). */
export function maskedMean(x: Rows, mask: Rows): number {
  let s = 0, n = 0;
  x.forEach((r, i) =>
    r.forEach((v, t) => {
      if (mask[i][t]) {
        s += v * mask[i][t];
        n += mask[i][t];
      }
    })
  );
  return s / n;
}

/**
 * Masked variance: maskedMean((x − maskedMean(x))²), times n/(n − 1) when `unbiased` (TRL's default; n is
 * the mask sum, so a single unmasked element gives NaN or ∞ as in TRL).
 */
export function maskedVar(x: Rows, mask: Rows, unbiased = true): number {
  const mean = maskedMean(x, mask);
  const v = maskedMean(x.map((r) => r.map((e) => (e - mean) ** 2)), mask);
  if (!unbiased) return v;
  const n = mask.reduce((a, r) => a + r.reduce((b, m) => b + m, 0), 0);
  if (n === 0) throw new Error("maskedVar: the mask is all zeros");
  return v * n / (n - 1);
}

/**
 * TRL's `masked_whiten`: (x − mean)·rsqrt(var + 1e-8) with the masked mean and unbiased masked variance;
 * with `shiftMean` false the mean is added back. Every element (masked or not) is transformed.
 */
export function maskedWhiten(x: Rows, mask: Rows, shiftMean = true): Rows {
  const mean = maskedMean(x, mask);
  const scale = 1 / Math.sqrt(maskedVar(x, mask) + 1e-8);
  return x.map((r) => r.map((v) => (v - mean) * scale + (shiftMean ? 0 : mean)));
}
