// Element updates shared by shaders/adamw.wgsl (one parameter tensor per dispatch) and shaders/adamw_flat.wgsl
// (a flat buffer of many parameters per dispatch), so both paths compute bit-identical results.
// The including file declares the storage arrays `param`, `grad`, `s0` (AdamW: m; SGD: momentum buffer),
// `s1` (AdamW: v) and `s2` (AdamW AMSGrad: max of v).
//   AdamW with torch.optim.AdamW's (single-tensor) order of operations:
//     p ← p·(1 − lr·wd); m ← lerp(m, g, 1 − β1); v ← v·β2 + (1 − β2)·g²;
//     denom = √v / √(1 − β2ᵗ) + eps; p ← p − (lr / (1 − β1ᵗ))·m / denom.
//     The step-dependent scalars are computed in float64 on the CPU, as PyTorch does.
//   SGD: torch.optim.SGD.

// One parameter's hyper-parameters. flags: bit 0 maximize; bit 1 (SGD momentum) first step (buffer ← d);
// bit 2 Nesterov.
// AdamW: h0 = 1 − lr·wd, h1 = 1 − β1, h2 = β2, h3 = 1 − β2, h4 = lr / (1 − β1ᵗ), h5 = √(1 − β2ᵗ), h6 = eps.
// SGD:   h0 = lr, h1 = weight decay, h2 = momentum, h3 = 1 − dampening.
struct Hyper {
  flags: u32,
  h0: f32,
  h1: f32,
  h2: f32,
  h3: f32,
  h4: f32,
  h5: f32,
  h6: f32,
}

fn load_grad(h: Hyper, i: u32) -> f32 {
  let g = grad[i];
  return select(g, -g, (h.flags & 1u) != 0u);
}

// Updates p (decay), m and v; returns the decayed parameter.
fn adam_moments(h: Hyper, i: u32, g: f32) -> f32 {
  let w = h.h1;
  let m = s0[i];
  // torch.lerp(m, g, w): m + w·(g − m) for |w| < 0.5, else g − (g − m)·(1 − w).
  var m1: f32;
  if (abs(w) < 0.5) {
    m1 = m + w * (g - m);
  } else {
    m1 = g - (g - m) * (1.0 - w);
  }
  s0[i] = m1;
  s1[i] = s1[i] * h.h2 + h.h3 * (g * g);
  return param[i] * h.h0;
}

fn adam_apply(h: Hyper, i: u32, x: f32, vhat: f32) {
  let denom = sqrt(vhat) / h.h5 + h.h6;
  param[i] = x + (-h.h4) * (s0[i] / denom);
}

fn adamw_at(h: Hyper, i: u32) {
  let x = adam_moments(h, i, load_grad(h, i));
  adam_apply(h, i, x, s1[i]);
}

fn adamw_amsgrad_at(h: Hyper, i: u32) {
  let x = adam_moments(h, i, load_grad(h, i));
  let vmax = max(s2[i], s1[i]);
  s2[i] = vmax;
  adam_apply(h, i, x, vmax);
}

fn sgd_direction(h: Hyper, i: u32) -> f32 {
  return load_grad(h, i) + h.h1 * param[i];
}

fn sgd_at(h: Hyper, i: u32) {
  param[i] = param[i] + (-h.h0) * sgd_direction(h, i);
}

fn sgd_momentum_at(h: Hyper, i: u32) {
  var d = sgd_direction(h, i);
  var buf = d;
  if ((h.flags & 2u) == 0u) {
    buf = s0[i] * h.h2 + h.h3 * d;
  }
  s0[i] = buf;
  if ((h.flags & 4u) != 0u) {
    d = d + h.h2 * buf;
  } else {
    d = buf;
  }
  param[i] = param[i] + (-h.h0) * d;
}
