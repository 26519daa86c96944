// Optimiser updates over a flat buffer of many parameters in one dispatch (engine/flat.ts): the same element
// updates as shaders/adamw.wgsl (adamw_common.wgsl), each parameter with its own hyper-parameters and step
// count from a segment table. A thread finds its segment by binary search over the (sorted) segment starts;
// elements outside every segment (slot padding, parameters without a gradient) are left untouched.
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

//!include adamw_common

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
