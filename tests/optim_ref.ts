/** Float64 reference optimisers shared by the optimiser tests. */

/** Hyper-parameters of {@linkcode RefAdamW} (AdamW's option names). */
export interface RefAdamWHyper {
  lr: number;
  betas: [number, number];
  eps: number;
  weightDecay: number;
  amsgrad?: boolean;
  maximize?: boolean;
}

/** float64 torch.optim.AdamW (single-tensor path) for one parameter, with its own step count. */
export class RefAdamW {
  m: Float64Array;
  v: Float64Array;
  vMax: Float64Array;
  step = 0;
  constructor(public p: Float64Array, public h: RefAdamWHyper) {
    this.m = new Float64Array(p.length);
    this.v = new Float64Array(p.length);
    this.vMax = new Float64Array(p.length);
  }
  update(grad: ArrayLike<number>): void {
    const { lr, betas: [b1, b2], eps, weightDecay: wd } = this.h;
    this.step++;
    const bc1 = 1 - b1 ** this.step, bc2 = 1 - b2 ** this.step;
    for (let i = 0; i < this.p.length; i++) {
      const g = this.h.maximize ? -grad[i] : grad[i];
      this.p[i] *= 1 - lr * wd;
      this.m[i] += (1 - b1) * (g - this.m[i]);
      this.v[i] = this.v[i] * b2 + (1 - b2) * g * g;
      this.vMax[i] = Math.max(this.vMax[i], this.v[i]);
      const denom = Math.sqrt(this.h.amsgrad ? this.vMax[i] : this.v[i]) / Math.sqrt(bc2) + eps;
      this.p[i] -= (lr / bc1) * (this.m[i] / denom);
    }
  }
}
