// Element-wise binary ops with NumPy broadcasting, f32. OP: 0 add, 1 sub, 2 mul, 3 div, 4 max, 5 min.
// Shapes are padded to 8 dims; a stride of 0 broadcasts that dim.
override OP: u32 = 0u;

// BINARY_ADD, BINARY_SUB, …: the op codes of engine/kernels/codes.ts.
//!codes binary

struct Params {
  n: u32,
  ndim: u32,
  same: u32, // 1 when a, b and out have the same shape (no index math)
  _pad: u32,
  shape: array<vec4<u32>, 2>,
  astride: array<vec4<u32>, 2>,
  bstride: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn at(v: array<vec4<u32>, 2>, d: u32) -> u32 {
  return v[d / 4u][d % 4u];
}

fn apply(x: f32, y: f32) -> f32 {
  switch OP {
    case BINARY_ADD: { return x + y; }
    case BINARY_SUB: { return x - y; }
    case BINARY_MUL: { return x * y; }
    case BINARY_DIV: { return x / y; }
    case BINARY_MAXIMUM: { return max(x, y); }
    case BINARY_MINIMUM: { return min(x, y); }
    default: { return x; }
  }
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  if (p.same == 1u) {
    out[i] = apply(a[i], b[i]);
    return;
  }
  var rem = i;
  var ai = 0u;
  var bi = 0u;
  for (var d = i32(p.ndim) - 1; d >= 0; d--) {
    let s = at(p.shape, u32(d));
    let c = rem % s;
    rem = rem / s;
    ai += c * at(p.astride, u32(d));
    bi += c * at(p.bstride, u32(d));
  }
  out[i] = apply(a[ai], b[bi]);
}
