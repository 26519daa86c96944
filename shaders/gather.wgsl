// Index-driven reads of 32-bit words (f32 or i32 alike): torch.gather and index_select/embedding.
// Out-of-range indices (negative or ≥ the axis length) produce 0 (a zero row for index_select)
// and never read outside `x`.
struct Params {
  n: u32,  // output elements
  a: u32,  // gather: ndim            | index_select: K (index length)
  b: u32,  // gather: axis            | index_select: V (x's size along the axis)
  c: u32,  // gather: L (x axis size) | index_select: inner (elements per selected slice)
  shape: array<vec4<u32>, 2>,  // gather: index (= output) shape
  stride: array<vec4<u32>, 2>, // gather: x's strides
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read> index: array<i32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

fn at(v: array<vec4<u32>, 2>, d: u32) -> u32 {
  return v[d / 4u][d % 4u];
}

// out[c] = x[c with c[axis] replaced by index[c]]; index and out share a shape of x's rank.
@compute @workgroup_size(256)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  var rem = i;
  var off = 0u;
  for (var d = i32(p.a) - 1; d >= 0; d--) {
    let s = at(p.shape, u32(d));
    if (u32(d) != p.b) { off += (rem % s) * at(p.stride, u32(d)); }
    rem = rem / s;
  }
  let v = index[i];
  if (v < 0 || u32(v) >= p.c) {
    out[i] = 0u;
  } else {
    out[i] = x[off + u32(v) * at(p.stride, p.b)];
  }
}

// x viewed as [outer, V, inner], out as [outer, K, inner]: out[o, k, j] = x[o, index[k], j].
@compute @workgroup_size(256)
fn index_select(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  let r = i / p.c;
  let j = i - r * p.c;
  let o = r / p.a;
  let k = r - o * p.a;
  let v = index[k];
  if (v < 0 || u32(v) >= p.b) {
    out[i] = 0u;
  } else {
    out[i] = x[(o * p.b + u32(v)) * p.c + j];
  }
}
