// Optimiser updates over a flat buffer of many parameters in one dispatch (engine/optim.ts, engine/flat.ts):
// entry points adamw, adamw_amsgrad, sgd, sgd_momentum. Each parameter has its own hyper-parameters and step
// count from a segment table; a thread finds its segment by binary search over the (sorted) segment starts, and
// elements outside every segment (slot padding, parameters without a gradient) are left untouched.
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

struct Params {
  n: u32, // elements covered by the dispatch, from `base`
  base: u32, // first element (the first segment's start)
  count: u32, // number of segments (≥ 1)
  _pad: u32,
}

// One parameter: elements [start, start + n) of the flat buffers.
struct Segment {
  start: u32,
  n: u32,
  hyper: Hyper,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> segments: array<Segment>;
@group(0) @binding(2) var<storage, read_write> param: array<f32>;
@group(0) @binding(3) var<storage, read> grad: array<f32>;
@group(0) @binding(4) var<storage, read_write> s0: array<f32>; // AdamW: m (exp_avg); SGD: momentum buffer
@group(0) @binding(5) var<storage, read_write> s1: array<f32>; // AdamW: v (exp_avg_sq)
@group(0) @binding(6) var<storage, read_write> s2: array<f32>; // AdamW amsgrad: max of v

// The element index and its segment; `ok` is false outside every segment.
struct Located {
  i: u32,
  seg: u32,
  ok: bool,
}

fn locate(gid: vec3<u32>, nwg: vec3<u32>) -> Located {
  let k = gid.x + gid.y * nwg.x * 256u;
  let i = p.base + k;
  if (k >= p.n) { return Located(i, 0u, false); }
  var lo = 0u;
  var hi = p.count;
  while (hi - lo > 1u) {
    let mid = (lo + hi) / 2u;
    if (segments[mid].start <= i) { lo = mid; } else { hi = mid; }
  }
  let s = segments[lo];
  return Located(i, lo, i >= s.start && i - s.start < s.n);
}

@compute @workgroup_size(256)
fn adamw(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let at = locate(gid, nwg);
  if (!at.ok) { return; }
  adamw_at(segments[at.seg].hyper, at.i);
}

@compute @workgroup_size(256)
fn adamw_amsgrad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let at = locate(gid, nwg);
  if (!at.ok) { return; }
  adamw_amsgrad_at(segments[at.seg].hyper, at.i);
}

@compute @workgroup_size(256)
fn sgd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let at = locate(gid, nwg);
  if (!at.ok) { return; }
  sgd_at(segments[at.seg].hyper, at.i);
}

@compute @workgroup_size(256)
fn sgd_momentum(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let at = locate(gid, nwg);
  if (!at.ok) { return; }
  sgd_momentum_at(segments[at.seg].hyper, at.i);
}
