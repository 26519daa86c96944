// Element-wise unary ops on f32. OP selects the function at pipeline creation (override constant).
// y = f(x; a, b). Entry `main` computes y; entry `grad` computes dx = g * f'(x) from x, y and g;
// entry `grad_x` the same from x and g alone, for ops whose derivative needs no y (gelu, gelu_new,
// relu: the backward of matmul epilogues, which keep only the pre-activation).
override OP: u32 = 0u;

struct Params {
  n: u32,
  a: f32,
  b: f32,
  _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

// safe_tanh, erf and the GELU formulas (shared with the matmul epilogues).
//!include activation

fn forward(v: f32) -> f32 {
  switch OP {
    case 0u: { return -v; }
    case 1u: { return exp(v); }
    case 2u: { return log(v); }
    case 3u: { return safe_tanh(v); }
    case 4u: { return gelu_tanh(v); }
    case 5u: { return max(v, 0.0); }
    case 6u: { return 1.0 / (1.0 + exp(-v)); }
    case 7u: { return sqrt(v); }
    case 8u: { return inverseSqrt(v); }
    case 9u: { return p.a * v + p.b; }
    case 10u: { return pow(abs(v), p.a) * select(1.0, sign(v), fract(p.a * 0.5) != 0.0 && v < 0.0); }
    case 11u: { return abs(v); }
    case 12u: { return clamp(v, p.a, p.b); }
    case 13u: { return v * v; }
    case 14u: { return gelu_erf(v); }
    default: { return v; }
  }
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  y[i] = forward(x[i]);
}

// grad: binding 1 = x, binding 2 = y (forward output), binding 3 = g, binding 4 = dx
@group(0) @binding(3) var<storage, read> g: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;

fn derivative(v: f32, out: f32) -> f32 {
  switch OP {
    case 0u: { return -1.0; }
    case 1u: { return out; }
    case 2u: { return 1.0 / v; }
    case 3u: { return 1.0 - out * out; }
    case 4u: { return gelu_tanh_grad(v); }
    case 5u: { return relu_grad(v); }
    case 6u: { return out * (1.0 - out); }
    case 7u: { return 0.5 / out; }
    case 8u: { return -0.5 * out * out * out; }
    case 9u: { return p.a; }
    case 10u: { return select(p.a * out / v, 0.0, v == 0.0 && p.a > 1.0); }
    case 11u: { return sign(v); }
    case 12u: { return select(0.0, 1.0, v >= p.a && v <= p.b); }
    case 13u: { return 2.0 * v; }
    case 14u: { return gelu_erf_grad(v); }
    default: { return 1.0; }
  }
}

@compute @workgroup_size(256)
fn grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  dx[i] = g[i] * derivative(x[i], y[i]);
}

@compute @workgroup_size(256)
fn grad_x(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  dx[i] = g[i] * derivative(x[i], 0.0);
}
