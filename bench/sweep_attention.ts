/**
 * The attention part of the kernel tile sweep (`bench/sweep.ts`): the candidate tile grid of the tiled causal
 * attention kernels (forward, dQ, dK/dV), the checks of which tiles fit the device, and the timing of each kernel
 * followed by fwd+bwd with the best tile of each.
 * @module
 */

import {
  type AttentionTileConfig,
  type AttentionTuning,
  backward,
  getAttentionTuning,
  noGrad,
  resetAttentionTuning,
  runtime,
  scaledDotProductAttention,
  setAttentionTuning,
  type Tensor,
  tidy,
} from "../engine/mod.ts";
import { now, randTensor, type Result } from "./lib.ts";
import { type Candidate, type Run, sweepKernel } from "./sweep_kernel.ts";

// ------------------------------------------------------------------ attention

type AttnKernel = "forward" | "gradQ" | "gradKV";
const SHARES = [0.25, 0.33, 0.33];

/** Workgroup cost of a tile (mirrors `tileLayout` in engine/ops/attention.ts) and why it cannot run, if so. */
function attnTileInfo(kind: AttnKernel, c: AttentionTileConfig, D: number, BH: number, T: number) {
  const lim = runtime().limits;
  const dp4 = Math.ceil(D / 4), rd4 = Math.ceil(dp4 / c.tc), rows = 4 * c.tq, threads = c.tq * c.tc;
  let sr = Math.max(dp4, rd4 * c.tc);
  if (sr % 2 === 0) sr++;
  const w = kind === "gradKV" ? 2 : 1;
  const vec4s = kind === "forward"
    ? rows * sr + 2 * c.bt * sr + c.bt * c.tq + 2 * threads
    : 2 * rows * sr + 2 * c.bt * sr + w * c.bt * c.tq;
  const bytes = 16 * vec4s + 4 * c.bt * w;
  const info = { workgroups: BH * Math.ceil(T / rows), threads, wg_bytes: bytes };
  const problem = c.bt % c.tc !== 0 || c.bt / c.tc > 16
    ? "bt must be tc·(1..16)"
    : rd4 > 8
    ? "head size too large for tc"
    : threads > Math.min(lim.maxComputeInvocationsPerWorkgroup, lim.maxComputeWorkgroupSizeX)
    ? `${threads} threads over the device's limits`
    : bytes > lim.maxComputeWorkgroupStorageSize
    ? `${bytes} B of workgroup memory > maxComputeWorkgroupStorageSize ${lim.maxComputeWorkgroupStorageSize}`
    : null;
  return { info, problem };
}

/** The tier the default tuning picks (as `pickTile` in engine/ops/attention.ts does). */
function defaultAttnTile(kind: AttnKernel, D: number, BH: number, T: number): AttentionTileConfig | "row" {
  const t = getAttentionTuning();
  if (T < t.minTiledQueries || D > t.maxTiledHeadDim) return "row";
  const usable = t[kind].filter((c) => !attnTileInfo(kind, c, D, BH, T).problem);
  const enough = usable.find((c) => BH * Math.ceil(T / (4 * c.tq)) >= (c.minWorkgroups ?? 0));
  const c = enough ?? usable[usable.length - 1];
  return c ? { tq: c.tq, tc: c.tc, bt: c.bt } : "row";
}

const attnLabel = (c: AttentionTileConfig | "row") => c === "row" ? "row" : `tq${c.tq}_tc${c.tc}_bt${c.bt}`;

/** An attention shape [B, H, T, D] (causal) and its share of the time budget. */
export type AttnShape = { key: string; B: number; H: number; T: number; D: number; weight: number };

/** Sweeps the forward, dQ and dK/dV kernels of causal attention, then times fwd+bwd with the best of each. */
export async function attentionShape(
  run: Run,
  s: AttnShape,
  endAt: number,
  save: () => Promise<void>,
): Promise<Result> {
  const { B, H, T, D } = s, BH = B * H, shape = [B, H, T, D];
  const q = randTensor(shape, 6), k = randTensor(shape, 7), v = randTensor(shape, 8), g = randTensor(shape, 9);
  const qkv = [q, k, v];
  const attn = () => scaledDotProductAttention(q, k, v, { causal: true });
  /** Runs fwd+bwd for the inputs flagged in `want` and returns their gradients. */
  const grads = (want: number[]): Tensor[] => {
    qkv.forEach((t, i) => t.requireGrad(want[i] === 1));
    tidy(() => backward(attn(), g));
    return qkv.filter((_, i) => want[i]).map((t) => {
      const gr = t.grad!;
      t.grad = null;
      return gr;
    });
  };
  const wants: Record<AttnKernel, number[]> = { forward: [0, 0, 0], gradQ: [1, 0, 0], gradKV: [0, 1, 1] };
  const grid: AttentionTileConfig[] = [];
  const [tqs, tcs, bts] = run.small ? [[4, 8], [4, 8], [16, 32]] : [[4, 8, 16], [4, 8, 16], [16, 32, 64]];
  for (const tq of tqs) for (const tc of tcs) for (const bt of bts) grid.push({ tq, tc, bt });
  const out: Result = { op: "attention", B, H, T, D, causal: true };
  const best: Partial<Record<AttnKernel, AttentionTileConfig | "row">> = {};
  const kinds: AttnKernel[] = ["forward", "gradQ", "gradKV"];
  try {
    for (const [i, kind] of kinds.entries()) {
      resetAttentionTuning();
      const tiles = [...getAttentionTuning()[kind] as AttentionTileConfig[], ...grid]
        .map((c) => ({ tq: c.tq, tc: c.tc, bt: c.bt }))
        .filter((c, j, all) => all.findIndex((u) => attnLabel(u) === attnLabel(c)) === j);
      const cands: Candidate[] = tiles.map((c) => ({
        label: attnLabel(c),
        setting: c,
        ...attnTileInfo(kind, c, D, BH, T),
        apply: () => setAttentionTuning({ [kind]: [c] }),
      }));
      if (T <= 256) {
        // no tier at all: this kernel falls back to its row kernel (one workgroup per row)
        const apply = () => setAttentionTuning({ [kind]: [] });
        cands.push({ label: "row", setting: "row", info: { workgroups: BH * T }, problem: null, apply });
      }
      const def = defaultAttnTile(kind, D, BH, T);
      const want = wants[kind];
      // shares of the shape's time: forward 25 %, dQ 33 %, dK/dV 33 %, fwd+bwd check of the best 9 %
      const kindEnd = now() + (endAt - now()) * SHARES[i] / (1 - SHARES.slice(0, i).reduce((x, y) => x + y, 0));
      const res = await sweepKernel(run, {
        candidates: cands,
        default: { setting: def, info: { label: attnLabel(def) } },
        produce: kind === "forward" ? () => [noGrad(attn)] : () => grads(want),
        step: kind === "forward" ? () => noGrad(attn).dispose() : () => grads(want).forEach((t) => t.dispose()),
        reset: resetAttentionTuning,
      }, Math.min(kindEnd, endAt - (run.small ? 0 : 1500)));
      out[kind] = res;
      const b = res.best as { setting: AttentionTileConfig | "row" } | null | undefined;
      if (b) best[kind] = b.setting;
      await save();
    }
    // fwd+bwd of all three inputs: default tuning against the best tile of each kernel.
    const combo: Partial<AttentionTuning> = {};
    for (const kind of kinds) {
      const c = best[kind];
      if (c) (combo[kind] as AttentionTileConfig[]) = c === "row" ? [] : [c];
    }
    out.fwd_bwd = await sweepKernel(run, {
      candidates: [{
        label: "best_of_each",
        setting: best,
        info: {},
        problem: Object.keys(best).length ? null : "no kernel has a correct best setting",
        apply: () => setAttentionTuning(combo),
      }],
      default: { setting: "default", info: { label: "default" } },
      produce: () => grads([1, 1, 1]),
      step: () => grads([1, 1, 1]).forEach((t) => t.dispose()),
      reset: resetAttentionTuning,
    }, endAt);
    out.best = best;
    return out;
  } finally {
    resetAttentionTuning();
    for (const t of [q, k, v, g]) {
      t.grad?.dispose();
      t.grad = null;
      t.dispose();
    }
  }
}
