// Optimiser updates: one fused, in-place pass over one parameter tensor per dispatch (entry points adamw,
// adamw_amsgrad, sgd, sgd_momentum). The element updates live in adamw_common.wgsl; shaders/adamw_flat.wgsl
// runs the same updates over a flat buffer of many parameters.
struct Params {
  n: u32,
  flags: u32,
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

//!include adamw_common

fn index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return gid.x + gid.y * nwg.x * 256u;
}

fn hyper() -> Hyper {
  return Hyper(p.flags, p.h0, p.h1, p.h2, p.h3, p.h4, p.h5, p.h6);
}

@compute @workgroup_size(256)
fn adamw(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = index(gid, nwg);
  if (i >= p.n) { return; }
  adamw_at(hyper(), i);
}

@compute @workgroup_size(256)
fn adamw_amsgrad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = index(gid, nwg);
  if (i >= p.n) { return; }
  adamw_amsgrad_at(hyper(), i);
}

@compute @workgroup_size(256)
fn sgd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = index(gid, nwg);
  if (i >= p.n) { return; }
  sgd_at(hyper(), i);
}

@compute @workgroup_size(256)
fn sgd_momentum(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = index(gid, nwg);
  if (i >= p.n) { return; }
  sgd_momentum_at(hyper(), i);
}
