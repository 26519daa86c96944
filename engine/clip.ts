/**
 * Gradient clipping by total norm — {@linkcode clipGradNorm} (`torch.nn.utils.clip_grad_norm_`) and its
 * checked variant {@linkcode clipGradNormChecked}. The reduction and scaling run entirely on the GPU: the
 * clipping coefficient never comes back to the CPU. Gradients of flat parameters (engine/flat.ts) live in their
 * chunk's flat gradient buffer; a chunk whose every parameter is clipped is reduced and scaled with one dispatch
 * each, whatever its number of parameters.
 * @module
 */

import { grid1d, type Storage } from "./runtime.ts";
import { GRAD_NORM_FINALIZE, GRAD_NORM_PARTIAL, GRAD_NORM_SCALE } from "./kernels/optim.ts";
import { check, empty, runtime, Tensor, tensor } from "./tensor.ts";
import { adoptGrads, type FlatChunk, type FlatSlot, flatSlotOf } from "./flat.ts";

/** Options of {@linkcode clipGradNorm}. */
export interface ClipGradNormOptions {
  /**
   * PyTorch's `error_if_nonfinite`. Throwing needs the norm on the CPU, so {@linkcode clipGradNorm}
   * (which never reads back) rejects `true`; use {@linkcode clipGradNormChecked}, or read the returned
   * norm later and check it with `Number.isFinite`.
   */
  errorIfNonfinite?: boolean;
}

function validNumber(x: unknown): x is number {
  return typeof x === "number" && !Number.isNaN(x);
}

/** Elements [0, n) of a storage: one gradient, or a whole flat gradient buffer. */
interface Span {
  storage: Storage;
  n: number;
}

/**
 * The spans to reduce and scale, after validating the arguments: the gradients of `params`, except that a flat
 * chunk whose every parameter is in `params` with its gradient in place becomes one span (gradients set by hand
 * are first copied into the flat gradient buffer).
 */
function spansOf(params: Tensor | Iterable<Tensor>, maxNorm: number, normType: number): Span[] {
  const list = params instanceof Tensor ? [params] : [...params];
  checkArgs(list, maxNorm, normType);
  const byChunk = new Map<FlatChunk, FlatSlot[]>();
  for (const p of list) {
    const slot = p.grad ? flatSlotOf(p) : null;
    if (slot) byChunk.set(slot.chunk, [...byChunk.get(slot.chunk) ?? [], slot]);
  }
  const spans: Span[] = [];
  const covered = new Set<Tensor>();
  const inList = new Set(list);
  adoptGrads([...byChunk.values()].flat());
  for (const chunk of byChunk.keys()) {
    if (!chunk.gradsComplete() || !chunk.slots.every((s) => inList.has(s.param))) continue;
    spans.push({ storage: chunk.grad!, n: chunk.elements });
    for (const s of chunk.slots) covered.add(s.param.grad!);
  }
  const grads = new Set(list.map((p) => p.grad).filter((g): g is Tensor => g !== null && !covered.has(g)));
  for (const g of grads) spans.push({ storage: g.storage, n: g.size });
  return spans;
}

function checkArgs(list: Tensor[], maxNorm: number, normType: number): void {
  const op = "clipGradNorm";
  check(validNumber(maxNorm) && maxNorm >= 0, op, `maxNorm must be a number ≥ 0, got ${maxNorm}`);
  check(validNumber(normType) && normType > 0, op, `unsupported normType ${normType} (use a finite p > 0 or Infinity)`);
  for (const p of list) {
    check(p instanceof Tensor, op, `expected tensors, got ${p}`);
    const g = p.grad;
    if (!g) continue;
    check(!g.disposed, op, `gradient of parameter [${p.shape}] was disposed`);
    check(g.dtype === "f32", op, `gradients must be f32, got ${g.dtype}`);
  }
}

// Workgroups per gradient tensor in the partial reduction: one per PARTIAL_CHUNK elements, at most
// PARTIAL_GROUPS (a few per SM on large GPUs; the finalize kernel then sums ≤ 1024 partials per tensor).
const PARTIAL_GROUPS = 1024;
const PARTIAL_CHUNK = 2048;

/** Records the norm reduction; returns the norm tensor and the (GPU-resident) clipping coefficient. */
function normAndCoef(grads: Span[], maxNorm: number, normType: number): { norm: Tensor; coef: Tensor } {
  const rt = runtime();
  const mode = normType === 2 ? 0 : normType === Infinity ? 2 : 1;
  const pnorm = mode === 1 ? normType : 2;
  const groups = grads.map((g) => g.n === 0 ? 0 : Math.min(PARTIAL_GROUPS, Math.ceil(g.n / PARTIAL_CHUNK)));
  const slots = groups.reduce((a, b) => a + b, 0);
  const partials = empty([Math.max(slots, 1)]);
  const overrides = { MODE: mode };
  let base = 0;
  grads.forEach((g, i) => {
    if (groups[i] === 0) return;
    const params = { n: g.n, base, pnorm, max_norm: 0 };
    rt.run(GRAD_NORM_PARTIAL, params, { src: g.storage, dst: partials.storage }, [groups[i]], overrides);
    base += groups[i];
  });
  const norm = empty([]);
  const coef = empty([1]);
  const params = { n: slots, base: 0, pnorm, max_norm: maxNorm };
  const bindings = { src: partials.storage, dst: norm.storage, coef: coef.storage };
  rt.run(GRAD_NORM_FINALIZE, params, bindings, [1], overrides);
  partials.dispose();
  return { norm, coef };
}

function scaleGrads(grads: Span[], coef: Tensor): void {
  const rt = runtime();
  for (const g of grads) {
    const params = { n: g.n, base: 0, pnorm: 0, max_norm: 0 };
    if (g.n > 0) rt.run(GRAD_NORM_SCALE, params, { src: coef.storage, dst: g.storage }, grid1d(g.n));
  }
  coef.dispose();
}

/**
 * `torch.nn.utils.clip_grad_norm_`: the norm of order `normType` (2, any finite p > 0, or Infinity) over all
 * gradients of `params` taken together, then every gradient is scaled in place by
 * min(1, maxNorm / (norm + 1e-6)) — all on the GPU, with no readback. Parameters without a gradient are
 * ignored. Returns the total norm as a one-element (0-d) tensor owned by the caller; a non-finite norm gives
 * NaN/zero gradients as in PyTorch — read the norm when convenient to detect it, or use
 * {@linkcode clipGradNormChecked}.
 */
export function clipGradNorm(
  params: Tensor | Iterable<Tensor>,
  maxNorm: number,
  normType: number = 2,
  options: ClipGradNormOptions = {},
): Tensor {
  const why = "errorIfNonfinite needs a CPU readback: use `await clipGradNormChecked(...)`, or check the returned norm";
  check(!options.errorIfNonfinite, "clipGradNorm", why);
  const grads = spansOf(params, maxNorm, normType);
  if (grads.length === 0) return tensor([0], []);
  const { norm, coef } = normAndCoef(grads, maxNorm, normType);
  scaleGrads(grads, coef);
  return norm;
}

/**
 * Like {@linkcode clipGradNorm} with PyTorch's `error_if_nonfinite=True`: reads the norm back (one round trip)
 * and, when it is NaN or infinite, throws before touching the gradients. Returns the norm as a number.
 */
export async function clipGradNormChecked(
  params: Tensor | Iterable<Tensor>,
  maxNorm: number,
  normType: number = 2,
): Promise<number> {
  const grads = spansOf(params, maxNorm, normType);
  if (grads.length === 0) return 0;
  const { norm, coef } = normAndCoef(grads, maxNorm, normType);
  const total = await norm.item().finally(() => norm.dispose());
  if (!Number.isFinite(total)) {
    coef.dispose();
    throw new Error(
      `clipGradNorm: the total norm of order ${normType} for gradients is non-finite (${total}), so it cannot be clipped`,
    );
  }
  scaleGrads(grads, coef);
  return total;
}
