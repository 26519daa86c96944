// General strided gather-copy of 32-bit words (f32 or i32 alike), used by permute/transpose.
// The output is contiguous with shape `shape` (≤ 8 dims, already collapsed by the caller);
// output element i at coordinates c reads input word sum_d c[d] * stride[d].
struct Params {
  n: u32,
  ndim: u32,
  _pad0: u32,
  _pad1: u32,
  shape: array<vec4<u32>, 2>,
  stride: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

fn at(v: array<vec4<u32>, 2>, d: u32) -> u32 {
  return v[d / 4u][d % 4u];
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  var rem = i;
  var off = 0u;
  for (var d = i32(p.ndim) - 1; d >= 0; d--) {
    let s = at(p.shape, u32(d));
    off += (rem % s) * at(p.stride, u32(d));
    rem = rem / s;
  }
  dst[i] = src[off];
}
