// Element-wise unary ops on f32. OP selects the function at pipeline creation (override constant).
// y = f(x; a, b). Entry `main` computes y; entry `grad` computes dx = g * f'(x) from x, y and g.
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

const GELU_C: f32 = 0.7978845608028654; // sqrt(2 / pi)

// tanh that never returns NaN: WGSL's tanh may overflow for large |x|.
fn safe_tanh(v: f32) -> f32 {
  return tanh(clamp(v, -15.0, 15.0));
}

fn forward(v: f32) -> f32 {
  switch OP {
    case 0u: { return -v; }
    case 1u: { return exp(v); }
    case 2u: { return log(v); }
    case 3u: { return safe_tanh(v); }
    case 4u: { return 0.5 * v * (1.0 + safe_tanh(GELU_C * (v + 0.044715 * v * v * v))); }
    case 5u: { return max(v, 0.0); }
    case 6u: { return 1.0 / (1.0 + exp(-v)); }
    case 7u: { return sqrt(v); }
    case 8u: { return inverseSqrt(v); }
    case 9u: { return p.a * v + p.b; }
    case 10u: { return pow(abs(v), p.a) * select(1.0, sign(v), fract(p.a * 0.5) != 0.0 && v < 0.0); }
    case 11u: { return abs(v); }
    case 12u: { return clamp(v, p.a, p.b); }
    case 13u: { return v * v; }
    case 14u: { return 0.5 * v * (1.0 + erf(v * 0.7071067811865476)); }
    default: { return v; }
  }
}

// erf with |error| < 1.2e-7 (Numerical Recipes' erfc Chebyshev fit); WGSL has no built-in erf.
fn erf(v: f32) -> f32 {
  let z = abs(v);
  let t = 1.0 / (1.0 + 0.5 * z);
  let r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
    t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
    t * (-0.82215223 + t * 0.17087277)))))))));
  return select(r - 1.0, 1.0 - r, v >= 0.0);
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
    case 4u: {
      let inner = GELU_C * (v + 0.044715 * v * v * v);
      let t = safe_tanh(inner);
      return 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * GELU_C * (1.0 + 3.0 * 0.044715 * v * v);
    }
    case 5u: { return select(0.0, 1.0, v > 0.0); }
    case 6u: { return out * (1.0 - out); }
    case 7u: { return 0.5 / out; }
    case 8u: { return -0.5 * out * out * out; }
    case 9u: { return p.a; }
    case 10u: { return select(p.a * out / v, 0.0, v == 0.0 && p.a > 1.0); }
    case 11u: { return sign(v); }
    case 12u: { return select(0.0, 1.0, v >= p.a && v <= p.b); }
    case 13u: { return 2.0 * v; }
    case 14u: {
      return 0.5 * (1.0 + erf(v * 0.7071067811865476)) + v * 0.3989422804014327 * exp(-0.5 * v * v);
    }
    default: { return 1.0; }
  }
}

@compute @workgroup_size(256)
fn grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  dx[i] = g[i] * derivative(x[i], y[i]);
}
