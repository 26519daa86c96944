/**
 * CPU kernels of the random family (`engine/kernels/random.ts`): inverted dropout, its keep decisions taken from the
 * host copy of `rng.wgsl`'s counter-based generator (`../rng.ts`), so the masks agree bit for bit.
 * @module
 */

import * as K from "../../kernels/random.ts";
import { defineCpuKernel } from "../kernel_table.ts";
import { dropBits } from "../rng.ts";
import { dropoutSimd } from "../simd.ts";

defineCpuKernel(K.DROPOUT, ({ params: p, bindings: b }) => {
  const x = b.x.f32, y = b.y.f32;
  if (dropoutSimd(x, y, p.n, p.key, p.threshold, p.scale)) return;
  // select(0, x · scale, keep): a dropped element is +0 even where x is ±Inf or NaN.
  for (let i = 0; i < p.n; i++) y[i] = dropBits(i, p.key) >= p.threshold ? Math.fround(x[i] * p.scale) : 0;
}, { exact: true }); // the mask bit for bit, then one correctly rounded product per kept element
