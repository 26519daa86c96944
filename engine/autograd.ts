/**
 * Reverse-mode autograd: ops record a {@linkcode GradNode} on their output; `backward` walks the
 * tape in reverse topological order and accumulates gradients into leaf tensors' `.grad`.
 * @module
 */

import { empty, type GradNode, isGradEnabled, keep, noGrad, runtime, Tensor } from "./tensor.ts";
import { f32Bits, grid1d } from "./runtime.ts";

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
  if (!isGradEnabled() || !inputs.some((t) => t.requiresGrad)) {
    for (const s of saved) s.dispose();
    return out;
  }
  const node: GradNode = {
    name,
    inputs,
    backward,
    released: false,
    release() {
      if (this.released) return;
      this.released = true;
      for (const s of saved) s.dispose();
    },
  };
  out.requiresGrad = true;
  out.gradFn = node;
  return out;
}

/** True when the op should save tensors for backward (grad mode on, some input needs a gradient). */
export function needsGrad(...inputs: Tensor[]): boolean {
  return isGradEnabled() && inputs.some((t) => t.requiresGrad);
}

function topoOrder(root: Tensor): Tensor[] {
  const order: Tensor[] = [];
  const seen = new Set<Tensor>();
  const stack: [Tensor, number][] = [[root, 0]];
  seen.add(root);
  while (stack.length) {
    const top = stack[stack.length - 1];
    const [t, i] = top;
    const inputs = t.gradFn?.inputs ?? [];
    if (i < inputs.length) {
      top[1]++;
      const next = inputs[i];
      if (next.requiresGrad && !seen.has(next)) {
        seen.add(next);
        stack.push([next, 0]);
      }
    } else {
      order.push(t);
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
  noGrad(() => {
    const order = topoOrder(root);
    const grads = new Map<Tensor, Tensor>();
    grads.set(root, grad ? grad.detach() : onesLike(root));
    for (const t of order) {
      const g = grads.get(t);
      if (!g) continue;
      grads.delete(t);
      const node = t.gradFn;
      if (!node) {
        accumulateLeaf(t, g);
        continue;
      }
      if (node.released) {
        throw new Error(`backward: the graph through ${node.name} was already freed; pass {retainGraph: true}`);
      }
      const inGrads = node.backward(g);
      g.dispose();
      node.inputs.forEach((inp, i) => {
        const gi = inGrads[i];
        if (!gi) return;
        if (!inp.requiresGrad) {
          gi.dispose();
          return;
        }
        const prev = grads.get(inp);
        if (prev) {
          grads.set(inp, addInto(prev, gi));
        } else {
          grads.set(inp, gi);
        }
      });
      if (!options.retainGraph) node.release();
    }
    for (const g of grads.values()) g.dispose();
  });
}

function accumulateLeaf(leaf: Tensor, g: Tensor): void {
  if (g.shape.join() !== leaf.shape.join()) {
    throw new Error(`backward: gradient shape [${g.shape}] does not match tensor [${leaf.shape}]`);
  }
  if (leaf.grad) {
    const sum = addInto(leaf.grad, g);
    leaf.grad = keep(sum);
  } else {
    leaf.grad = keep(g);
  }
}

/** a + b for same-shape f32 tensors (binary.wgsl, OP 0), disposing both inputs. */
function addInto(a: Tensor, b: Tensor): Tensor {
  const out = empty(a.shape);
  const n = a.size;
  runtime().dispatch(
    { shader: "binary", bindings: ["read", "read", "rw"], constants: { OP: 0 } },
    [a.storage, b.storage, out.storage],
    [n, a.ndim, 1, 0, ...new Array(24).fill(0)],
    grid1d(n),
  );
  a.dispose();
  b.dispose();
  return out;
}

function onesLike(t: Tensor): Tensor {
  const out = empty(t.shape);
  runtime().dispatch({ shader: "fill", bindings: ["rw"] }, [out.storage], [t.size, f32Bits(1), 0, 0], grid1d(t.size));
  return out;
}

/** Disposes `.grad` of each tensor (like `optimizer.zero_grad(set_to_none=True)`). */
export function zeroGrad(params: Iterable<Tensor>): void {
  for (const p of params) {
    p.grad?.dispose();
    p.grad = null;
  }
}
