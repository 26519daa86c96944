/**
 * CPU kernels of the element-wise family (`engine/kernels/elementwise.ts`): fills and casts, unary ops with their
 * backward, broadcasting binary ops and the sum back to a broadcast shape.
 * @module
 */

import * as K from "../../kernels/elementwise.ts";
import { BINARY_OPS, UNARY_OPS } from "../../kernels/codes.ts";
import { defineCpuKernel } from "../kernel_table.ts";
import { geluTanh, geluTanhGrad, unaryDerivative, unaryForward } from "../activation.ts";
import { geluGradSimd, geluSimd } from "../simd.ts";

defineCpuKernel(K.FILL, ({ params: p, bindings: b }) => b.y.u32.fill(p.bits, 0, p.n), { exact: true });

defineCpuKernel(K.ARANGE_F32, ({ params: p, bindings: b }) => {
  for (let i = 0; i < p.n; i++) b.y.f32[i] = p.start + Math.fround(i) * p.step;
});

defineCpuKernel(K.ARANGE_I32, ({ params: p, bindings: b }) => {
  const start = Math.trunc(p.start), step = Math.trunc(p.step);
  for (let i = 0; i < p.n; i++) b.y.i32[i] = start + i * step;
}, { exact: true });

defineCpuKernel(K.I32_TO_F32, ({ params: p, bindings: b }) => {
  for (let i = 0; i < p.n; i++) b.dst.f32[i] = b.y.i32[i];
}, { exact: true });

defineCpuKernel(K.F32_TO_I32, ({ params: p, bindings: b }) => {
  for (let i = 0; i < p.n; i++) b.dst.i32[i] = Math.trunc(b.y.f32[i]);
}, { exact: true });

defineCpuKernel(K.UNARY, ({ params: p, bindings: b, overrides: o }) => {
  const op = o.OP ?? 0, x = b.x.f32, y = b.y.f32;
  if (op === UNARY_OPS.geluNew) {
    if (geluSimd(x, y, 0, p.n)) return;
    for (let i = 0; i < p.n; i++) y[i] = geluTanh(x[i]);
    return;
  }
  for (let i = 0; i < p.n; i++) y[i] = unaryForward(op, x[i], p.a, p.b);
});

defineCpuKernel(K.UNARY_GRAD, ({ params: p, bindings: b, overrides: o }) => {
  const op = o.OP ?? 0, x = b.x.f32, y = b.y.f32, g = b.g.f32, dx = b.dx.f32;
  for (let i = 0; i < p.n; i++) dx[i] = g[i] * unaryDerivative(op, x[i], y[i], p.a, p.b);
});

defineCpuKernel(K.UNARY_GRAD_X, ({ params: p, bindings: b, overrides: o }) => {
  const op = o.OP ?? 0, x = b.x.f32, g = b.g.f32, dx = b.dx.f32;
  if (op === UNARY_OPS.geluNew) {
    if (geluGradSimd(x, g, dx, 0, p.n)) return;
    for (let i = 0; i < p.n; i++) dx[i] = g[i] * geluTanhGrad(x[i]);
    return;
  }
  for (let i = 0; i < p.n; i++) dx[i] = g[i] * unaryDerivative(op, x[i], 0, p.a, p.b);
});

const BINARY_FNS: Record<number, (x: number, y: number) => number> = {
  [BINARY_OPS.add]: (x, y) => x + y,
  [BINARY_OPS.sub]: (x, y) => x - y,
  [BINARY_OPS.mul]: (x, y) => x * y,
  [BINARY_OPS.div]: (x, y) => x / y,
  [BINARY_OPS.maximum]: (x, y) => Math.max(x, y),
  [BINARY_OPS.minimum]: (x, y) => Math.min(x, y),
};

defineCpuKernel(K.BINARY, ({ params: p, bindings: b, overrides: o }) => {
  const apply = BINARY_FNS[o.OP ?? 0] ?? ((x: number) => x);
  const a = b.a.f32, bb = b.b.f32, out = b.out.f32;
  if (p.same === 1) {
    for (let i = 0; i < p.n; i++) out[i] = apply(a[i], bb[i]);
    return;
  }
  if (p.ndim === 0) {
    for (let i = 0; i < p.n; i++) out[i] = apply(a[0], bb[0]);
    return;
  }
  // Rows of the innermost dimension: the operands' offsets are found once per row, then step by their strides.
  const last = p.ndim - 1, inner = p.shape[last], as = p.astride[last], bs = p.bstride[last];
  for (let start = 0; start < p.n; start += inner) {
    let rem = start / inner, ai = 0, bi = 0;
    for (let d = last - 1; d >= 0; d--) {
      const c = rem % p.shape[d];
      rem = (rem - c) / p.shape[d];
      ai += c * p.astride[d];
      bi += c * p.bstride[d];
    }
    const end = Math.min(start + inner, p.n);
    for (let i = start; i < end; i++, ai += as, bi += bs) out[i] = apply(a[ai], bb[bi]);
  }
});

defineCpuKernel(K.REDUCE_TO, ({ params: p, bindings: b }) => {
  const x = b.x.f32, y = b.y.f32;
  for (let j = 0; j < p.nout; j++) {
    let acc = 0;
    for (let k = 0; k < p.nred; k++) {
      let rj = j, rk = k, idx = 0, stride = 1;
      for (let d = p.ndim - 1; d >= 0; d--) {
        const fs = p.full[d];
        let c: number;
        if (p.outShape[d] === 1 && fs !== 1) [c, rk] = [rk % fs, Math.floor(rk / fs)];
        else [c, rj] = [rj % fs, Math.floor(rj / fs)];
        idx += c * stride;
        stride *= fs;
      }
      acc = Math.fround(acc + x[idx]);
    }
    y[j] = acc;
  }
});
