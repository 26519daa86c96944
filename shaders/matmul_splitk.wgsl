// The end of a split-K product with an epilogue (engine/ops/matmul_gemm.ts): the S partial products part[s, i]
// (each already scaled by alpha) are summed and the matmul epilogue applied once, as matmul.wgsl would have:
// C[i] = act(Σ_s part[s, i] (+ bias[i mod N])) (+ R[i]); PRE also writes the pre-activation value.

override BIAS: bool = false;
override ACT: u32 = 0u; // activation.wgsl codes
override RESID: bool = false;
override PRE: bool = false;

struct Params {
  size: u32, // elements of C
  splits: u32,
  N: u32, // columns of C (the bias index is i mod N)
  _p0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<storage, read> resid: array<f32>;
@group(0) @binding(5) var<storage, read_write> pre: array<f32>;

//!include activation

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.size) { return; }
  var r = 0.0;
  for (var s = 0u; s < p.splits; s++) { r += part[s * p.size + i]; }
  if (BIAS) { r += bias[i % p.N]; }
  if (PRE) { pre[i] = r; }
  r = act(ACT, r);
  if (RESID) { r += resid[i]; }
  c[i] = r;
}
