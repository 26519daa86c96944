// Element-wise unary ops on f32. OP selects the function at pipeline creation (override constant).
// y = f(x; a, b). Entry `main` computes y; entry `grad` computes dx = g * f'(x) from x, y and g;
// entry `grad_x` the same from x and g alone, for ops whose derivative needs no y (gelu, gelu_new,
// relu: the backward of matmul epilogues, which keep only the pre-activation).
override OP: u32 = 0u;

// UNARY_NEG, UNARY_EXP, …: the op codes of engine/kernels/codes.ts.
//!codes unary

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
    case UNARY_NEG: { return -v; }
    case UNARY_EXP: { return exp(v); }
    case UNARY_LOG: { return log(v); }
    case UNARY_TANH: { return safe_tanh(v); }
    case UNARY_GELU_NEW: { return gelu_tanh(v); }
    case UNARY_RELU: { return max(v, 0.0); }
    case UNARY_SIGMOID: { return 1.0 / (1.0 + exp(-v)); }
    case UNARY_SQRT: { return sqrt(v); }
    case UNARY_RSQRT: { return inverseSqrt(v); }
    case UNARY_AFFINE: { return p.a * v + p.b; }
    case UNARY_POW: { return pow(abs(v), p.a) * select(1.0, sign(v), fract(p.a * 0.5) != 0.0 && v < 0.0); }
    case UNARY_ABS: { return abs(v); }
    case UNARY_CLAMP: { return clamp(v, p.a, p.b); }
    case UNARY_SQUARE: { return v * v; }
    case UNARY_GELU: { return gelu_erf(v); }
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
    case UNARY_NEG: { return -1.0; }
    case UNARY_EXP: { return out; }
    case UNARY_LOG: { return 1.0 / v; }
    case UNARY_TANH: { return 1.0 - out * out; }
    case UNARY_GELU_NEW: { return gelu_tanh_grad(v); }
    case UNARY_RELU: { return relu_grad(v); }
    case UNARY_SIGMOID: { return out * (1.0 - out); }
    case UNARY_SQRT: { return 0.5 / out; }
    case UNARY_RSQRT: { return -0.5 * out * out * out; }
    case UNARY_AFFINE: { return p.a; }
    case UNARY_POW: { return select(p.a * out / v, 0.0, v == 0.0 && p.a > 1.0); }
    case UNARY_ABS: { return sign(v); }
    case UNARY_CLAMP: { return select(0.0, 1.0, v >= p.a && v <= p.b); }
    case UNARY_SQUARE: { return 2.0 * v; }
    case UNARY_GELU: { return gelu_erf_grad(v); }
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
