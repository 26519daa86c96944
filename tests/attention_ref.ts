/** Float64 references and small helpers shared by the attention tests. */
import { randArray } from "./helpers.ts";
import { noGrad, type Tensor, tensor } from "../engine/tensor.ts";
import {
  type AttentionOptions,
  type AttentionTuning,
  scaledDotProductAttention,
  setAttentionTuning,
} from "../engine/ops/attention.ts";
import { dropoutMaskRef } from "../engine/ops/dropout.ts";

export interface Cfg {
  B: number;
  H: number;
  Tq: number;
  Tk: number;
  D: number;
  causal?: boolean;
  mask?: number[]; // [B, Tk], 1 = attend
  maskDtype?: "i32" | "f32";
  scale?: number;
  p?: number;
  seed?: number;
}

/** Probabilities P (after softmax, before dropout) and dropout factors Z, float64, [B·H·Tq, Tk]. */
export function probs(q: Float64Array, k: Float64Array, c: Cfg): { P: Float64Array; Z: Float64Array } {
  const { B, H, Tq, Tk, D } = c;
  const scale = c.scale ?? 1 / Math.sqrt(D);
  const P = new Float64Array(B * H * Tq * Tk), Z = new Float64Array(B * H * Tq * Tk).fill(1);
  for (let bh = 0; bh < B * H; bh++) {
    const b = Math.floor(bh / H);
    for (let i = 0; i < Tq; i++) {
      const row = (bh * Tq + i) * Tk;
      const ok = (j: number) => !(c.causal && j > Tk - Tq + i) && (!c.mask || c.mask[b * Tk + j] !== 0);
      let m = -Infinity;
      const s = new Float64Array(Tk);
      for (let j = 0; j < Tk; j++) {
        if (!ok(j)) continue;
        let dot = 0;
        for (let d = 0; d < D; d++) dot += q[(bh * Tq + i) * D + d] * k[(bh * Tk + j) * D + d];
        s[j] = dot * scale;
        m = Math.max(m, s[j]);
      }
      let sum = 0;
      for (let j = 0; j < Tk; j++) if (ok(j)) sum += Math.exp(s[j] - m);
      for (let j = 0; j < Tk; j++) {
        P[row + j] = ok(j) ? Math.exp(s[j] - m) / sum : 0;
        if (c.p) Z[row + j] = dropoutMaskRef(c.seed!, row + j, c.p) ? 1 / (1 - c.p) : 0;
      }
    }
  }
  return { P, Z };
}

/** float64 reference of the forward pass. */
export function attnRef(q: Float64Array, k: Float64Array, v: Float64Array, c: Cfg): Float64Array {
  const { B, H, Tq, Tk, D } = c;
  const { P, Z } = probs(q, k, c);
  const out = new Float64Array(B * H * Tq * D);
  for (let bh = 0; bh < B * H; bh++) {
    for (let i = 0; i < Tq; i++) {
      for (let j = 0; j < Tk; j++) {
        const w = P[(bh * Tq + i) * Tk + j] * Z[(bh * Tq + i) * Tk + j];
        if (w === 0) continue;
        for (let d = 0; d < D; d++) out[(bh * Tq + i) * D + d] += w * v[(bh * Tk + j) * D + d];
      }
    }
  }
  return out;
}

/** Analytic float64 backward (for shapes too large for finite differences). */
export function attnGradRef(
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  dO: Float64Array,
  c: Cfg,
): Float64Array[] {
  const { B, H, Tq, Tk, D } = c;
  const scale = c.scale ?? 1 / Math.sqrt(D);
  const { P, Z } = probs(q, k, c);
  const dq = new Float64Array(q.length), dk = new Float64Array(k.length), dv = new Float64Array(v.length);
  for (let bh = 0; bh < B * H; bh++) {
    for (let i = 0; i < Tq; i++) {
      const qi = (bh * Tq + i) * D, row = (bh * Tq + i) * Tk;
      const dP = new Float64Array(Tk);
      let delta = 0;
      for (let j = 0; j < Tk; j++) {
        if (P[row + j] === 0) continue;
        for (let d = 0; d < D; d++) dP[j] += dO[qi + d] * v[(bh * Tk + j) * D + d];
        dP[j] *= Z[row + j];
        delta += P[row + j] * dP[j];
      }
      for (let j = 0; j < Tk; j++) {
        if (P[row + j] === 0) continue;
        const ds = P[row + j] * (dP[j] - delta) * scale, kj = (bh * Tk + j) * D;
        for (let d = 0; d < D; d++) {
          dq[qi + d] += ds * k[kj + d];
          dk[kj + d] += ds * q[qi + d];
          dv[kj + d] += P[row + j] * Z[row + j] * dO[qi + d];
        }
      }
    }
  }
  return [dq, dk, dv];
}

export function inputs(c: Cfg, seed: number): Float64Array[] {
  const { B, H, Tq, Tk, D } = c;
  return [
    randArray(B * H * Tq * D, seed, -2, 2),
    randArray(B * H * Tk * D, seed + 1, -2, 2),
    randArray(B * H * Tk * D, seed + 2),
  ];
}

export function options(c: Cfg): AttentionOptions {
  const mask = c.mask
    ? (c.maskDtype === "f32"
      ? tensor(Float32Array.from(c.mask), [c.B, c.Tk])
      : tensor(Int32Array.from(c.mask), [c.B, c.Tk]))
    : undefined;
  return { causal: c.causal, keyPaddingMask: mask, scale: c.scale, dropoutP: c.p, seed: c.seed };
}

export function run(c: Cfg, [q, k, v]: Float64Array[]): Tensor {
  return noGrad(() =>
    scaledDotProductAttention(
      tensor(Float32Array.from(q), [c.B, c.H, c.Tq, c.D]),
      tensor(Float32Array.from(k), [c.B, c.H, c.Tk, c.D]),
      tensor(Float32Array.from(v), [c.B, c.H, c.Tk, c.D]),
      options(c),
    )
  );
}

// left padding: batch 0 has 2 pad tokens, batch 1 none
export const leftPad = (B: number, Tk: number, pads: number[]) =>
  Array.from({ length: B * Tk }, (_, i) => (i % Tk) < pads[Math.floor(i / Tk)] ? 0 : 1);

/** Runs `fn` with the attention tuning changed by `t`, restoring it afterwards. */
export async function withTuning<T>(t: Partial<AttentionTuning>, fn: () => Promise<T>): Promise<T> {
  const prev = setAttentionTuning(t);
  try {
    return await fn();
  } finally {
    setAttentionTuning(prev);
  }
}

/** A causal configuration, left-padded by `pads` (one count per batch) when given. */
export const causal = (
  B: number,
  H: number,
  Tq: number,
  Tk: number,
  D: number,
  pads?: number[],
  more?: Partial<Cfg>,
): Cfg => ({
  B,
  H,
  Tq,
  Tk,
  D,
  causal: true,
  mask: pads && leftPad(B, Tk, pads),
  ...more,
});
