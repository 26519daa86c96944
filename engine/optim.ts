/**
 * Optimisers with PyTorch semantics — {@linkcode AdamW} (`torch.optim.AdamW`) and {@linkcode SGD}
 * (`torch.optim.SGD`) — and {@linkcode clipGradNorm} (`torch.nn.utils.clip_grad_norm_`).
 *
 * Parameters are flat (engine/flat.ts: views of one buffer per chunk, their gradients views of a flat gradient
 * buffer written in place by backward). Each step updates the parameters that have a gradient and their state in
 * place, with one kernel per flat chunk and kernel variant; each parameter's hyper-parameters and step count come
 * from a small segment table. State buffers are views of flat per-chunk buffers, allocated lazily as zeros.
 * Gradient clipping runs entirely on the GPU: the clipping coefficient never comes back to the CPU.
 * @module
 */

import { f32Bits, grid1d, type Storage } from "./runtime.ts";
import type { Kernel, ParamFields } from "./kernel.ts";
import * as updateKernels from "./kernels/optim.ts";
import { check, empty, keep, readAll, runtime, Tensor } from "./tensor.ts";
import { adoptGrads, type FlatChunk, type FlatSlot, flatSlotOf, FlatStateBuffers } from "./flat.ts";

export { clipGradNorm, clipGradNormChecked, type ClipGradNormOptions } from "./clip.ts";

/** Hyper-parameters every optimiser group has. */
export interface BaseHyper {
  /** Learning rate (≥ 0). */
  lr: number;
  /** Weight decay (≥ 0; decoupled for AdamW, added to the gradient for SGD). */
  weightDecay: number;
}

/** A parameter group: its tensors plus its hyper-parameters. */
export type ParamGroup<H> = H & { params: Tensor[] };

/** Host copy of one parameter's optimiser state: the step count and named buffers (e.g. `m`, `v`). */
export interface ParamStateData {
  /** Number of steps taken by this parameter. */
  step: number;
  /** State buffers by name. */
  [buffer: string]: number | Float32Array;
}

/** Host snapshot of an optimiser (as in PyTorch, parameters are referred to by their index over all groups). */
export interface OptimizerStateDict<H> {
  /** Per-parameter state, keyed by parameter index; parameters never stepped have no entry. */
  state: Record<number, ParamStateData>;
  /** Hyper-parameters of each group and the indices of its parameters. */
  paramGroups: (H & { params: number[] })[];
}

/** GPU-side state of one parameter. */
export interface ParamState {
  /** Number of steps taken. */
  step: number;
  /** State buffers by name: views of the flat state buffers (kept out of `tidy` scopes). */
  buffers: Map<string, Tensor>;
}

/** What one parameter's update runs: a kernel variant and its hyper-parameters. */
export interface UpdateKernel {
  /** Entry point of shaders/adamw.wgsl. */
  entry: "adamw" | "adamw_amsgrad" | "sgd" | "sgd_momentum";
  /** Flag bits (see shaders/adamw.wgsl). */
  flags: number;
  /** Up to 7 f32 hyper-parameters h0…h6 (computed in float64, rounded to f32 once). */
  h: number[];
}

/** 32-bit words of a segment-table entry: flags then h0…h6 as f32 bits. */
function hyperWords(k: UpdateKernel): number[] {
  const h = [...k.h, ...new Array(7 - k.h.length).fill(0)];
  return [k.flags, ...h.map((x) => f32Bits(x))];
}
const SEGMENT_WORDS = 10; // start, n, flags, h0…h6

/** A parameter waiting for its chunk's dispatch. */
interface UpdateItem {
  slot: FlatSlot;
  names: string[];
  k: UpdateKernel;
}

/** The kernel of each update entry point (its state buffers s0…s2 are the optimiser's buffer names in order). */
const UPDATE_KERNELS: Readonly<Record<UpdateKernel["entry"], Kernel<ParamFields, string>>> = {
  adamw: updateKernels.ADAMW,
  adamw_amsgrad: updateKernels.ADAMW_AMSGRAD,
  sgd: updateKernels.SGD,
  sgd_momentum: updateKernels.SGD_MOMENTUM,
};

/** Common machinery: parameter groups, lazily created state, `zeroGrad`, `lr`, state dicts. */
export abstract class Optimizer<H extends BaseHyper> {
  /** Parameter groups; hyper-parameters may be edited between steps (they are validated at each step). */
  readonly paramGroups: ParamGroup<H>[];
  #state = new Map<Tensor, ParamState>();
  #flat = new FlatStateBuffers();

  /**
   * Builds the groups and validates hyper-parameters and parameters (flat f32 leaves requiring grad, no
   * duplicates).
   * @param name class name used in error messages
   * @param params tensors, or groups of tensors with per-group hyper-parameter overrides
   * @param defaults the class's default hyper-parameters
   * @param options the caller's defaults for every group (override `defaults`)
   */
  protected constructor(
    protected readonly name: string,
    params: readonly Tensor[] | readonly ({ params: readonly Tensor[] } & Partial<H>)[],
    defaults: H,
    options: Partial<H>,
  ) {
    check(Array.isArray(params) && params.length > 0, name, "got an empty parameter list");
    const groups = (params as unknown[]).every((p) => p && typeof p === "object" && "params" in p)
      ? params as ({ params: readonly Tensor[] } & Partial<H>)[]
      : [{ params: params as Tensor[] } as unknown as { params: readonly Tensor[] } & Partial<H>];
    const seen = new Set<Tensor>();
    this.paramGroups = groups.map((g, gi) => {
      check(Array.isArray(g.params), name, `param group ${gi}: "params" must be an array of tensors`);
      const merged = { ...defaults } as H;
      for (const [k, v] of [...Object.entries(options), ...Object.entries(g)]) {
        if (k !== "params" && v !== undefined) (merged as never)[k] = (Array.isArray(v) ? [...v] : v) as never;
      }
      this.validate(merged);
      g.params.forEach((p, i) => this.#checkParam(p, `param group ${gi}, parameter ${i}`, seen));
      return { ...merged, params: [...g.params] };
    });
  }

  /** Throws a clear error unless `p` is a flat f32 leaf requiring grad, not seen before. */
  #checkParam(p: Tensor, where: string, seen: Set<Tensor>): void {
    const name = this.name, at = `${where}${p?.name ? ` ("${p.name}")` : ""}`;
    check(p instanceof Tensor, name, `${at} is not a Tensor`);
    check(p.dtype === "f32", name, `${at} must be an f32 tensor, got ${p.dtype}`);
    check(p.requiresGrad, name, `${at} does not require grad (call requireGrad())`);
    check(p.gradFn === null, name, `${at} is not a leaf tensor (it was produced by ${p.gradFn?.name})`);
    check(!seen.has(p), name, `${at} appears more than once among the parameters`);
    const flat = p.size === 0 || flatSlotOf(p) !== null;
    check(flat, name, `${at} is not a flat parameter (create parameters with createFlatParameters or uploadParams)`);
    seen.add(p);
  }

  /** Throws a clear error for invalid hyper-parameters. */
  protected abstract validate(h: H): void;
  /** Names of the state buffers a parameter of a group with these hyper-parameters needs. */
  protected abstract bufferNames(h: H): string[];
  /**
   * The kernel variant and hyper-parameters of one parameter's update (its step count already advanced);
   * `fresh` when its buffers were just created.
   */
  protected abstract kernel(state: ParamState, group: ParamGroup<H>, fresh: boolean): UpdateKernel;

  /**
   * Updates every parameter that has a gradient, in place: one dispatch per flat chunk (per kernel variant,
   * when groups mix AMSGrad or momentum settings). Gradients set by hand are first copied into the flat gradient
   * buffer. Parameters without a gradient are skipped and their step count does not advance.
   */
  step(): void {
    const todo: [Tensor, ParamGroup<H>][] = []; // everything is checked before anything is updated
    for (const g of this.paramGroups) {
      this.validate(g);
      for (const p of g.params) if (this.gradOf(p)) todo.push([p, g]);
    }
    const byChunk = new Map<FlatChunk, UpdateItem[]>();
    for (const [p, g] of todo) {
      let s = this.#state.get(p);
      if (!s) this.#state.set(p, s = { step: 0, buffers: new Map() });
      const names = this.bufferNames(g);
      const fresh = names.filter((b) => !s.buffers.has(b));
      for (const b of fresh) s.buffers.set(b, this.#newBuffer(p, b, true));
      s.step++;
      const slot = flatSlotOf(p);
      if (!slot) continue; // zero-size: nothing to update
      const items = byChunk.get(slot.chunk) ?? [];
      byChunk.set(slot.chunk, items);
      items.push({ slot, names, k: this.kernel(s, g, fresh.length > 0) });
    }
    adoptGrads([...byChunk.values()].flat().map((it) => it.slot));
    for (const [chunk, items] of byChunk) this.#stepChunk(chunk, items);
  }

  /** One dispatch per kernel variant over a flat chunk, with a segment table of its parameters. */
  #stepChunk(chunk: FlatChunk, items: UpdateItem[]): void {
    const rt = runtime();
    const variants = new Map<string, UpdateItem[]>();
    for (const it of items) {
      const key = `${it.k.entry}:${it.names.join()}`;
      variants.set(key, [...variants.get(key) ?? [], it]);
    }
    for (const list of variants.values()) {
      list.sort((a, b) => a.slot.offset - b.slot.offset);
      const words = new Uint32Array(list.length * SEGMENT_WORDS);
      list.forEach((it, j) =>
        words.set([it.slot.offset / 4, it.slot.param.size, ...hyperWords(it.k)], j * SEGMENT_WORDS)
      );
      const table = rt.alloc(words.byteLength);
      rt.write(table, words);
      const base = list[0].slot.offset / 4;
      const last = list[list.length - 1].slot;
      const n = last.offset / 4 + last.param.size - base;
      const bindings: Record<string, Storage> = { segments: table, param: chunk.storage, grad: chunk.grad! };
      list[0].names.forEach((name, i) => bindings[`s${i}`] = this.#flat.buffer(chunk, name));
      rt.run(UPDATE_KERNELS[list[0].k.entry], { n, base, count: list.length }, bindings, grid1d(n));
      table.release();
    }
  }

  /** A new state buffer for `p`: a view of its slot in the flat state buffer `name` (zero-size: an empty tensor). */
  #newBuffer(p: Tensor, name: string, zero: boolean): Tensor {
    const slot = flatSlotOf(p);
    if (!slot) return keep(empty(p.shape));
    return keep(new Tensor(this.#flat.view(slot, name, zero), p.shape));
  }

  /** The learning rate of the first group. */
  get lr(): number {
    return this.paramGroups[0].lr;
  }
  /** Sets the learning rate of every group (for schedules). */
  set lr(value: number) {
    check(typeof value === "number" && value >= 0, this.name, `invalid learning rate ${value} (must be ≥ 0)`);
    for (const g of this.paramGroups) g.lr = value;
  }

  /** All parameters, in group order (the indices used by state dicts). */
  get params(): Tensor[] {
    return this.paramGroups.flatMap((g) => g.params);
  }

  /** Number of steps taken by a parameter (0 before its first update). */
  stepCount(param: Tensor): number {
    return this.#state.get(param)?.step ?? 0;
  }

  /**
   * The GPU state buffers (e.g. AdamW's `m` and `v`) with the index of their parameter in {@linkcode params}
   * order and the buffer's name: for checks such as non-finite counts before a checkpoint is written.
   */
  stateTensors(): { param: number; name: string; tensor: Tensor }[] {
    const out: { param: number; name: string; tensor: Tensor }[] = [];
    this.params.forEach((p, i) => {
      for (const [name, tensor] of this.#state.get(p)?.buffers ?? []) out.push({ param: i, name, tensor });
    });
    return out;
  }

  /** Disposes every parameter's gradient and sets it to null (`zero_grad(set_to_none=True)`). */
  zeroGrad(): void {
    for (const p of this.params) {
      p.grad?.dispose();
      p.grad = null;
    }
  }

  /** Releases the GPU state buffers (the optimiser starts from scratch if stepped again). */
  dispose(): void {
    for (const s of this.#state.values()) for (const b of s.buffers.values()) b.dispose();
    this.#state.clear();
    this.#flat.dispose();
  }

  /** The gradient of `p` checked for use, or null when it has none. */
  protected gradOf(p: Tensor): Tensor | null {
    const g = p.grad;
    if (!g) return null;
    const what = `gradient of parameter${p.name ? ` "${p.name}"` : ""} [${p.shape}]`;
    check(!g.disposed, this.name, `${what} was disposed`);
    check(g.dtype === "f32" && g.shape.join() === p.shape.join(), this.name, `${what} has shape [${g.shape}]`);
    check(g.storage.buffer !== p.storage.buffer || p.size === 0, this.name, `${what} shares the parameter's storage`);
    return g;
  }

  /** Reads the state back to the host (one GPU round trip). */
  async stateDict(): Promise<OptimizerStateDict<H>> {
    const todo: { entry: ParamStateData; name: string; t: Tensor }[] = [];
    const state: Record<number, ParamStateData> = {};
    this.params.forEach((p, i) => {
      const s = this.#state.get(p);
      if (!s) return;
      const entry: ParamStateData = { step: s.step };
      for (const [name, t] of s.buffers) {
        if (t.size === 0) entry[name] = new Float32Array(0);
        else todo.push({ entry, name, t });
      }
      state[i] = entry;
    });
    const arrays = todo.length ? await readAll(todo.map((x) => x.t)) : [];
    todo.forEach((x, i) => x.entry[x.name] = arrays[i] as Float32Array);
    let next = 0;
    const paramGroups = this.paramGroups.map((g) => {
      const { params: ps, ...hyper } = g;
      const copy = structuredClone(hyper) as unknown as H;
      return { ...copy, params: ps.map(() => next++) };
    });
    return { state, paramGroups };
  }

  /** Restores a snapshot from {@linkcode stateDict} (same group layout and parameter sizes); validates first. */
  loadStateDict(sd: OptimizerStateDict<H>): void {
    const hypers = this.#checkGroups(sd);
    const entries = this.#checkState(sd, hypers);
    // Validated: apply.
    hypers.forEach((h, gi) => Object.assign(this.paramGroups[gi], h));
    const old = this.#state;
    this.#state = new Map();
    for (const { p, e, names } of entries) {
      const prev = old.get(p);
      old.delete(p);
      const buffers = new Map<string, Tensor>();
      for (const b of names) {
        const t = prev?.buffers.get(b) ?? this.#newBuffer(p, b, false);
        prev?.buffers.delete(b);
        if (p.size > 0) runtime().write(t.storage, e[b] as Float32Array);
        buffers.set(b, t);
      }
      for (const t of prev?.buffers.values() ?? []) t.dispose();
      this.#state.set(p, { step: e.step, buffers });
    }
    for (const s of old.values()) for (const t of s.buffers.values()) t.dispose();
  }

  /** The groups' hyper-parameters after loading `sd` (validated; nothing changed yet). */
  #checkGroups(sd: OptimizerStateDict<H>): H[] {
    const n = this.name;
    check(sd && typeof sd === "object" && Array.isArray(sd.paramGroups), n, "state dict has no paramGroups array");
    check(
      sd.paramGroups.length === this.paramGroups.length,
      n,
      `state dict has ${sd.paramGroups.length} parameter groups, the optimiser has ${this.paramGroups.length}`,
    );
    return sd.paramGroups.map((g, gi) => {
      const mine = this.paramGroups[gi];
      check(
        Array.isArray(g.params) && g.params.length === mine.params.length,
        n,
        `state dict group ${gi} has ${g.params?.length} parameters, the optimiser's has ${mine.params.length}`,
      );
      const { params: _ps, ...hyper } = g;
      const { params: _mine, ...current } = mine;
      const merged = { ...current, ...structuredClone(hyper) } as unknown as H;
      this.validate(merged);
      return merged;
    });
  }

  /** The per-parameter entries of `sd` with their parameter and buffer names (validated; nothing changed yet). */
  #checkState(sd: OptimizerStateDict<H>, hypers: H[]): { p: Tensor; e: ParamStateData; names: string[] }[] {
    const n = this.name, params = this.params;
    const groupOf = this.paramGroups.flatMap((g, gi) => g.params.map(() => gi));
    return Object.entries(sd.state ?? {}).map(([key, e]) => {
      const i = Number(key);
      check(Number.isInteger(i) && i >= 0 && i < params.length, n, `state dict has state for unknown parameter ${key}`);
      const p = params[i];
      check(Number.isInteger(e?.step) && e.step >= 0, n, `state of parameter ${i}: invalid step ${e?.step}`);
      const names = this.bufferNames(hypers[groupOf[i]]);
      for (const b of names) {
        const a = e[b];
        check(a instanceof Float32Array, n, `state of parameter ${i} lacks buffer "${b}" (a Float32Array)`);
        check(a.length === p.size, n, `state of parameter ${i}: "${b}" has ${a.length} values, not ${p.size}`);
      }
      return { p, e, names };
    });
  }
}

// ------------------------------------------------------------------ AdamW

/** AdamW hyper-parameters of one group. */
export interface AdamWHyper extends BaseHyper {
  /** Coefficients of the running averages of the gradient and its square. */
  betas: [number, number];
  /** Added to the denominator (> 0). */
  eps: number;
  /** Use the maximum of past second moments (AMSGrad). */
  amsgrad: boolean;
  /** Maximise the objective instead of minimising it. */
  maximize: boolean;
}

/** Options of {@linkcode AdamW}: defaults for every group (PyTorch's defaults when omitted). */
export type AdamWOptions = Partial<AdamWHyper>;

/** A parameter group given to {@linkcode AdamW}: tensors plus per-group overrides. */
export type AdamWGroupInput = { params: readonly Tensor[] } & AdamWOptions;

function validNumber(x: unknown): x is number {
  return typeof x === "number" && !Number.isNaN(x);
}
const NO_FLAGS = { amsgrad: false, maximize: false };

/**
 * `torch.optim.AdamW`: decoupled weight decay, then Adam with bias correction, in PyTorch's order of
 * operations (denominator √v / √(1 − β2ᵗ) + eps, step size lr / (1 − β1ᵗ)); step counts are per parameter,
 * and parameters without a gradient are skipped (their step count does not advance).
 */
export class AdamW extends Optimizer<AdamWHyper> {
  /**
   * Creates the optimiser; hyper-parameters and parameters are validated here.
   * @param params tensors (f32 leaves requiring grad), or groups with their own hyper-parameters
   * @param options defaults: lr 1e-3, betas [0.9, 0.999], eps 1e-8, weightDecay 0.01
   */
  constructor(params: readonly Tensor[] | readonly AdamWGroupInput[], options: AdamWOptions = {}) {
    super("AdamW", params, { lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 1e-2, ...NO_FLAGS }, options);
  }

  /** Checks lr ≥ 0, 0 ≤ β < 1, eps > 0, weightDecay ≥ 0. */
  protected validate(h: AdamWHyper): void {
    const n = this.name ?? "AdamW";
    check(validNumber(h.lr) && h.lr >= 0, n, `invalid learning rate ${h.lr} (must be ≥ 0)`);
    check(Array.isArray(h.betas) && h.betas.length === 2, n, `betas must be a pair [beta1, beta2], got ${h.betas}`);
    for (let i = 0; i < 2; i++) {
      const b = h.betas[i];
      check(validNumber(b) && b >= 0 && b < 1, n, `invalid beta parameter at index ${i}: ${b} (must be in [0, 1))`);
    }
    check(validNumber(h.eps) && h.eps > 0, n, `invalid epsilon ${h.eps} (must be > 0)`);
    check(validNumber(h.weightDecay) && h.weightDecay >= 0, n, `invalid weightDecay ${h.weightDecay} (must be ≥ 0)`);
    check(typeof h.amsgrad === "boolean", n, `amsgrad must be a boolean, got ${h.amsgrad}`);
    check(typeof h.maximize === "boolean", n, `maximize must be a boolean, got ${h.maximize}`);
  }

  /** `m`, `v`, plus `vMax` with AMSGrad. */
  protected bufferNames(h: AdamWHyper): string[] {
    return h.amsgrad ? ["m", "v", "vMax"] : ["m", "v"];
  }

  /** The AdamW kernel and its step-dependent scalars (in float64, as PyTorch computes them in Python). */
  protected kernel(s: ParamState, g: ParamGroup<AdamWHyper>): UpdateKernel {
    const [b1, b2] = g.betas;
    const bc1 = 1 - b1 ** s.step;
    const bc2 = 1 - b2 ** s.step;
    return {
      entry: g.amsgrad ? "adamw_amsgrad" : "adamw",
      flags: g.maximize ? 1 : 0,
      h: [1 - g.lr * g.weightDecay, 1 - b1, b2, 1 - b2, g.lr / bc1, Math.sqrt(bc2), g.eps],
    };
  }
}

// ------------------------------------------------------------------ SGD

/** SGD hyper-parameters of one group. */
export interface SGDHyper extends BaseHyper {
  /** Momentum factor (≥ 0; 0 disables the momentum buffer). */
  momentum: number;
  /** Dampening of the momentum (≥ 0). */
  dampening: number;
  /** Nesterov momentum (needs momentum > 0 and dampening 0). */
  nesterov: boolean;
  /** Maximise the objective instead of minimising it. */
  maximize: boolean;
}

/** Options of {@linkcode SGD}: defaults for every group. */
export type SGDOptions = Partial<SGDHyper>;

/** `torch.optim.SGD`: optional momentum (buffer `momentumBuffer`), dampening, Nesterov, L2 weight decay. */
export class SGD extends Optimizer<SGDHyper> {
  /**
   * Creates the optimiser; hyper-parameters and parameters are validated here.
   * @param params tensors (f32 leaves requiring grad), or groups with their own hyper-parameters
   * @param options defaults: lr 1e-3, momentum 0, dampening 0, weightDecay 0, nesterov false
   */
  constructor(
    params: readonly Tensor[] | readonly ({ params: readonly Tensor[] } & SGDOptions)[],
    options: SGDOptions = {},
  ) {
    super(
      "SGD",
      params,
      { lr: 1e-3, momentum: 0, dampening: 0, weightDecay: 0, nesterov: false, maximize: false },
      options,
    );
  }

  /** Checks lr, momentum, dampening and weightDecay ≥ 0 and the Nesterov conditions. */
  protected validate(h: SGDHyper): void {
    const n = this.name ?? "SGD";
    for (const k of ["lr", "momentum", "dampening", "weightDecay"] as const) {
      check(validNumber(h[k]) && h[k] >= 0, n, `invalid ${k} ${h[k]} (must be ≥ 0)`);
    }
    check(typeof h.maximize === "boolean", n, `maximize must be a boolean, got ${h.maximize}`);
    check(!h.nesterov || (h.momentum > 0 && h.dampening === 0), n, "Nesterov momentum needs momentum > 0, dampening 0");
  }

  /** `momentumBuffer` when momentum is on. */
  protected bufferNames(h: SGDHyper): string[] {
    return h.momentum !== 0 ? ["momentumBuffer"] : [];
  }

  /** The SGD kernel (a fresh momentum buffer starts as the update direction). */
  protected kernel(_s: ParamState, g: ParamGroup<SGDHyper>, fresh: boolean): UpdateKernel {
    const momentum = g.momentum !== 0;
    return {
      entry: momentum ? "sgd_momentum" : "sgd",
      flags: (g.maximize ? 1 : 0) | (fresh ? 2 : 0) | (g.nesterov ? 4 : 0),
      h: [g.lr, g.weightDecay, g.momentum, 1 - g.dampening],
    };
  }
}
