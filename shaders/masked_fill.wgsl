// masked_fill and where on 32-bit words (f32 or i32 data alike), with NumPy broadcasting of the
// mask/condition (and of a, b for where) to the output shape (≤ 8 dims; stride 0 = broadcast).
// A mask element is "set" when non-zero: for f32 masks ±0.0 both count as zero (MASK_F32 = 1).
// INVERT = 1 flips the mask (masked_fill fills where the mask is zero instead).
override MASK_F32: u32 = 0u;
override INVERT: u32 = 0u;

struct Params {
  n: u32,
  ndim: u32,
  value: u32, // fill value bits (masked_fill)
  _pad: u32,
  shape: array<vec4<u32>, 2>,
  mstride: array<vec4<u32>, 2>,
  astride: array<vec4<u32>, 2>,
  bstride: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<u32>;
@group(0) @binding(2) var<storage, read> mask: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;
@group(0) @binding(4) var<storage, read> b: array<u32>;

fn at(v: array<vec4<u32>, 2>, d: u32) -> u32 {
  return v[d / 4u][d % 4u];
}

fn is_set(bits: u32) -> bool {
  var nz = bits != 0u;
  if (MASK_F32 == 1u) { nz = (bits & 0x7fffffffu) != 0u; }
  return nz != (INVERT == 1u);
}

// out[i] = mask ? value : a[i] (a has the output's shape).
@compute @workgroup_size(256)
fn masked_fill(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  var rem = i;
  var mi = 0u;
  for (var d = i32(p.ndim) - 1; d >= 0; d--) {
    let s = at(p.shape, u32(d));
    mi += (rem % s) * at(p.mstride, u32(d));
    rem = rem / s;
  }
  out[i] = select(a[i], p.value, is_set(mask[mi]));
}

// out[i] = cond ? a : b, all three broadcast to the output shape.
@compute @workgroup_size(256)
fn where_select(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  var rem = i;
  var mi = 0u;
  var ai = 0u;
  var bi = 0u;
  for (var d = i32(p.ndim) - 1; d >= 0; d--) {
    let s = at(p.shape, u32(d));
    let c = rem % s;
    rem = rem / s;
    mi += c * at(p.mstride, u32(d));
    ai += c * at(p.astride, u32(d));
    bi += c * at(p.bstride, u32(d));
  }
  if (is_set(mask[mi])) {
    out[i] = a[ai];
  } else {
    out[i] = b[bi];
  }
}
