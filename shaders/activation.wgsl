// Activation functions shared by unary.wgsl (element-wise ops) and the matmul epilogues
// (matmul.wgsl, matmul_gemv.wgsl) via `//!include activation`, so every kernel computes the same
// formula. Codes of `act` / `act_grad` (ACT_IDENTITY, ACT_GELU = exact GELU (erf), ACT_GELU_NEW = GPT-2's tanh
// approximation, ACT_RELU) come from engine/kernels/codes.ts. Include-only: no bindings, no entry points.

//!codes act

const GELU_C: f32 = 0.7978845608028654; // sqrt(2 / pi)

// tanh that never returns NaN: WGSL's tanh may overflow for large |x|.
fn safe_tanh(v: f32) -> f32 {
  return tanh(clamp(v, -15.0, 15.0));
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

// Exact GELU: 0.5·v·(1 + erf(v/√2)).
fn gelu_erf(v: f32) -> f32 {
  return 0.5 * v * (1.0 + erf(v * 0.7071067811865476));
}

fn gelu_erf_grad(v: f32) -> f32 {
  return 0.5 * (1.0 + erf(v * 0.7071067811865476)) + v * 0.3989422804014327 * exp(-0.5 * v * v);
}

// gelu_new: 0.5·v·(1 + tanh(√(2/π)·(v + 0.044715·v³))).
fn gelu_tanh(v: f32) -> f32 {
  return 0.5 * v * (1.0 + safe_tanh(GELU_C * (v + 0.044715 * v * v * v)));
}

fn gelu_tanh_grad(v: f32) -> f32 {
  let t = safe_tanh(GELU_C * (v + 0.044715 * v * v * v));
  return 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * GELU_C * (1.0 + 3.0 * 0.044715 * v * v);
}

fn relu_grad(v: f32) -> f32 {
  return select(0.0, 1.0, v > 0.0);
}

// act(v) for an activation code (a pipeline constant where the caller passes an override).
fn act(kind: u32, v: f32) -> f32 {
  switch kind {
    case ACT_GELU: { return gelu_erf(v); }
    case ACT_GELU_NEW: { return gelu_tanh(v); }
    case ACT_RELU: { return max(v, 0.0); }
    default: { return v; }
  }
}

// act'(v) for an activation code.
fn act_grad(kind: u32, v: f32) -> f32 {
  switch kind {
    case ACT_GELU: { return gelu_erf_grad(v); }
    case ACT_GELU_NEW: { return gelu_tanh_grad(v); }
    case ACT_RELU: { return relu_grad(v); }
    default: { return 1.0; }
  }
}
