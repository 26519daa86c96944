// Optimiser updates: one fused, in-place pass per parameter tensor.
//   main, main_amsgrad: AdamW with torch.optim.AdamW's (single-tensor) order of operations:
//     p ← p·(1 − lr·wd); m ← lerp(m, g, 1 − β1); v ← v·β2 + (1 − β2)·g²;
//     denom = √v / √(1 − β2ᵗ) + eps; p ← p − (lr / (1 − β1ᵗ))·m / denom.
//     The step-dependent scalars are computed in float64 on the CPU, as PyTorch does.
//   sgd, sgd_momentum: torch.optim.SGD.
// The uniform block is shared: each entry point names its meaning of h0…h6 below.
struct Params {
  n: u32,
  flags: u32, // bit 0: maximize; bit 1 (sgd_momentum): first step (buffer ← d); bit 2: nesterov
  h0: f32,
  h1: f32,
  h2: f32,
  h3: f32,
  h4: f32,
  h5: f32,
  h6: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> s0: array<f32>; // AdamW: m (exp_avg); SGD: momentum buffer
@group(0) @binding(4) var<storage, read_write> s1: array<f32>; // AdamW: v (exp_avg_sq)
@group(0) @binding(5) var<storage, read_write> s2: array<f32>; // AdamW amsgrad: max of v

fn index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return gid.x + gid.y * nwg.x * 256u;
}

fn load_grad(i: u32) -> f32 {
  let g = grad[i];
  return select(g, -g, (p.flags & 1u) != 0u);
}

// AdamW: h0 = 1 − lr·wd, h1 = 1 − β1, h2 = β2, h3 = 1 − β2, h4 = lr / (1 − β1ᵗ), h5 = √(1 − β2ᵗ), h6 = eps.
// Updates p (decay), m and v; returns the decayed parameter.
fn adam_moments(i: u32, g: f32) -> f32 {
  let w = p.h1;
  let m = s0[i];
  // torch.lerp(m, g, w): m + w·(g − m) for |w| < 0.5, else g − (g − m)·(1 − w).
  var m1: f32;
  if (abs(w) < 0.5) {
    m1 = m + w * (g - m);
  } else {
    m1 = g - (g - m) * (1.0 - w);
  }
  s0[i] = m1;
  s1[i] = s1[i] * p.h2 + p.h3 * (g * g);
  return param[i] * p.h0;
}

fn adam_apply(i: u32, x: f32, vhat: f32) {
  let denom = sqrt(vhat) / p.h5 + p.h6;
  param[i] = x + (-p.h4) * (s0[i] / denom);
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = index(gid, nwg);
  if (i >= p.n) { return; }
  let x = adam_moments(i, load_grad(i));
  adam_apply(i, x, s1[i]);
}

@compute @workgroup_size(256)
fn main_amsgrad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = index(gid, nwg);
  if (i >= p.n) { return; }
  let x = adam_moments(i, load_grad(i));
  let vmax = max(s2[i], s1[i]);
  s2[i] = vmax;
  adam_apply(i, x, vmax);
}

// SGD: h0 = lr, h1 = weight decay, h2 = momentum, h3 = 1 − dampening.
fn sgd_direction(i: u32) -> f32 {
  return load_grad(i) + p.h1 * param[i];
}

@compute @workgroup_size(256)
fn sgd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = index(gid, nwg);
  if (i >= p.n) { return; }
  param[i] = param[i] + (-p.h0) * sgd_direction(i);
}

@compute @workgroup_size(256)
fn sgd_momentum(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = index(gid, nwg);
  if (i >= p.n) { return; }
  var d = sgd_direction(i);
  var buf = d;
  if ((p.flags & 2u) == 0u) {
    buf = s0[i] * p.h2 + p.h3 * d;
  }
  s0[i] = buf;
  if ((p.flags & 4u) != 0u) {
    d = d + p.h2 * buf;
  } else {
    d = buf;
  }
  param[i] = param[i] + (-p.h0) * d;
}
