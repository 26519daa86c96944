/**
 * Reverse-mode autograd: ops record a {@linkcode GradNode} on their output; `backward` walks the
 * tape in reverse topological order and accumulates gradients into leaf tensors' `.grad` — for flat parameters,
 * in place into their slots of the flat gradient buffer.
 * @module
 */

import { empty, type GradNode, isGradEnabled, keep, noGrad, runtime, Tensor } from "./tensor.ts";
import { f32Bits, grid1d } from "./runtime.ts";
import { BINARY, FILL } from "./kernels/elementwise.ts";
import { BINARY_OPS } from "./kernels/codes.ts";
import { clearGradTargets, flatSlotOf, gradTargetOf } from "./flat.ts";

/** A retained view of a tensor that stays valid until the node is released. */
export function saveForBackward(t: Tensor): Tensor {
  const view = new Tensor(t.storage.retain(), t.shape, t.dtype, false);
  return view;
}

/**
 * Records an autograd node on `out` when grad mode is on and any input requires a gradient.
 * `backward` receives the output gradient and returns one gradient (or null) per input;
 * `saved` are tensors created with {@linkcode saveForBackward}, released with the node.
 */
export function record(
  out: Tensor,
  name: string,
  inputs: readonly Tensor[],
  backward: (grad: Tensor) => (Tensor | null)[],
  saved: readonly Tensor[] = [],
): Tensor {
  recordMulti([out], name, inputs, ([g]) => backward(g!), saved);
  return out;
}

/**
 * Records one autograd node for an op with several outputs. `backward` receives the outputs'
 * gradients in order (null for an output no gradient reached; at least one is non-null) and returns
 * one gradient (or null) per input.
 */
export function recordMulti(
  outs: readonly Tensor[],
  name: string,
  inputs: readonly Tensor[],
  backward: (grads: (Tensor | null)[]) => (Tensor | null)[],
  saved: readonly Tensor[] = [],
): Tensor[] {
  if (!isGradEnabled() || !inputs.some((t) => t.requiresGrad)) {
    for (const s of saved) s.dispose();
    return [...outs];
  }
  const node: GradNode = {
    name,
    inputs,
    outputs: outs,
    backward,
    released: false,
    release() {
      if (this.released) return;
      this.released = true;
      for (const s of saved) s.dispose();
    },
  };
  for (const out of outs) {
    out.requiresGrad = true;
    out.gradFn = node;
  }
  return [...outs];
}

/** True when the op should save tensors for backward (grad mode on, some input needs a gradient). */
export function needsGrad(...inputs: Tensor[]): boolean {
  return isGradEnabled() && inputs.some((t) => t.requiresGrad);
}

/** Nodes reachable from `root`, each after every node that consumes its outputs (reverse topological order). */
function topoOrder(root: GradNode): GradNode[] {
  const order: GradNode[] = [];
  const seen = new Set<GradNode>([root]);
  const stack: [GradNode, number][] = [[root, 0]];
  while (stack.length) {
    const top = stack[stack.length - 1];
    const [node, i] = top;
    if (i < node.inputs.length) {
      top[1]++;
      const next = node.inputs[i].gradFn;
      if (node.inputs[i].requiresGrad && next && !seen.has(next)) {
        seen.add(next);
        stack.push([next, 0]);
      }
    } else {
      order.push(node);
      stack.pop();
    }
  }
  return order.reverse();
}

/** Options for {@linkcode backward}. */
export interface BackwardOptions {
  /** Keep saved tensors so backward can run again through the same graph (default false). */
  retainGraph?: boolean;
}

/**
 * Computes gradients of `root` with respect to every leaf that requires a gradient and adds them
 * into the leaves' `.grad`. `grad` defaults to ones for a one-element root.
 */
export function backward(root: Tensor, grad?: Tensor, options: BackwardOptions = {}): void {
  if (!root.requiresGrad) throw new Error("backward: tensor does not require grad (nothing was recorded)");
  if (!grad && root.size !== 1) {
    throw new Error(`backward: a gradient is needed for a non-scalar output of shape [${root.shape}]`);
  }
  try {
    noGrad(() => propagate(root, grad ? grad.detach() : onesLike(root), options));
  } finally {
    clearGradTargets();
  }
}

/** Walks the graph from `root` (whose gradient is `rootGrad`) in reverse topological order, accumulating into leaves. */
function propagate(root: Tensor, rootGrad: Tensor, options: BackwardOptions): void {
  if (!root.gradFn) {
    accumulateLeaf(root, rootGrad);
    return;
  }
  const grads = new Map<Tensor, Tensor>([[root, rootGrad]]);
  const add = (t: Tensor, g: Tensor) => {
    const prev = grads.get(t);
    grads.set(t, prev ? addInto(prev, g) : g);
  };
  for (const node of topoOrder(root.gradFn)) {
    const outGrads = node.outputs.map((t) => {
      const g = grads.get(t) ?? null;
      grads.delete(t);
      return g;
    });
    if (outGrads.every((g) => g === null)) continue;
    if (node.released) {
      for (const g of outGrads) g?.dispose();
      throw new Error(`backward: the graph through ${node.name} was already freed; pass {retainGraph: true}`);
    }
    const inGrads = node.backward(outGrads);
    for (const g of outGrads) g?.dispose();
    node.inputs.forEach((inp, i) => {
      const gi = inGrads[i];
      if (!gi) return;
      if (!inp.requiresGrad) gi.dispose();
      else if (inp.gradFn) add(inp, gi);
      else accumulateLeaf(inp, gi);
    });
    if (!options.retainGraph) node.release();
  }
  for (const g of grads.values()) g.dispose();
}

/**
 * A tensor for a backward to write the gradient of `input` into: a view of `input`'s slot in its flat gradient
 * buffer when `input` is a flat parameter receiving its first gradient (so backward need not copy it there),
 * else a new tensor shaped like `input`. The backward must overwrite all of it and return it as the gradient.
 */
export function gradOutput(input: Tensor): Tensor {
  return gradTargetOf(input) ?? empty(input.shape);
}

/**
 * Adds `g` into `leaf.grad` (disposing `g`): in place into its slot of the flat gradient buffer for a flat
 * parameter (engine/flat.ts), else as a new tensor.
 */
function accumulateLeaf(leaf: Tensor, g: Tensor): void {
  if (g.shape.join() !== leaf.shape.join()) {
    throw new Error(`backward: gradient shape [${g.shape}] does not match tensor [${leaf.shape}]`);
  }
  const slot = flatSlotOf(leaf);
  if (slot) slot.chunk.accumulateGrad(slot, g);
  else if (leaf.grad) {
    const sum = addInto(leaf.grad, g);
    leaf.grad = keep(sum);
  } else {
    leaf.grad = keep(g);
  }
}

/** a + b for same-shape f32 tensors (the binary kernel's add), disposing both inputs. */
function addInto(a: Tensor, b: Tensor): Tensor {
  const out = empty(a.shape);
  const n = a.size;
  const params = { n, ndim: a.ndim, same: 1, shape: [], astride: [], bstride: [] };
  const bindings = { a: a.storage, b: b.storage, out: out.storage };
  runtime().run(BINARY, params, bindings, grid1d(n), { OP: BINARY_OPS.add });
  a.dispose();
  b.dispose();
  return out;
}

function onesLike(t: Tensor): Tensor {
  const out = empty(t.shape);
  runtime().run(FILL, { n: t.size, bits: f32Bits(1), start: 0, step: 0 }, { y: out.storage }, grid1d(t.size));
  return out;
}

/** Disposes `.grad` of each tensor (like `optimizer.zero_grad(set_to_none=True)`). */
export function zeroGrad(params: Iterable<Tensor>): void {
  for (const p of params) {
    p.grad?.dispose();
    p.grad = null;
  }
}
