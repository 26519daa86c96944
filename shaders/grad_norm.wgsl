// Gradient-norm clipping (torch.nn.utils.clip_grad_norm_) without a CPU round trip.
//   partial:  up to 1024 workgroups per gradient tensor reduce Σ|x|ᵖ (or max |x|) into dst[base + workgroup].
//   finalize: one workgroup combines all partials: dst[0] = total norm, coef[0] = min(1, max_norm / (total + 1e-6))
//             (NaN stays NaN, as in PyTorch).
//   scale:    dst[i] ← dst[i] · src[0] (the gradient times the coefficient).
override MODE: u32 = 0u; // 0: p = 2, 1: any finite p > 0, 2: p = ∞

struct Params {
  n: u32,
  base: u32,
  pnorm: f32,
  max_norm: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<storage, read_write> coef: array<f32>;

var<workgroup> sh: array<f32, 256>;

fn is_nan(x: f32) -> bool {
  return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

fn term(x: f32) -> f32 {
  let a = abs(x);
  switch MODE {
    case 0u: { return x * x; }
    case 1u: {
      if (a == 0.0) { return 0.0; }
      return pow(a, p.pnorm);
    }
    default: { return a; }
  }
}

fn combine(a: f32, b: f32) -> f32 {
  if (MODE == 2u) {
    if (is_nan(a) || is_nan(b)) { return bitcast<f32>(0x7fc00000u); }
    return max(a, b);
  }
  return a + b;
}

// Tree-reduces sh[] in the workgroup; the result is in sh[0].
fn reduce_shared(li: u32) {
  workgroupBarrier();
  for (var s = 128u; s > 0u; s = s >> 1u) {
    if (li < s) { sh[li] = combine(sh[li], sh[li + s]); }
    workgroupBarrier();
  }
}

@compute @workgroup_size(256)
fn partial(
  @builtin(local_invocation_index) li: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  var acc = 0.0;
  let stride = nwg.x * 256u;
  for (var i = wid.x * 256u + li; i < p.n; i += stride) {
    acc = combine(acc, term(src[i]));
  }
  sh[li] = acc;
  reduce_shared(li);
  if (li == 0u) { dst[p.base + wid.x] = sh[0]; }
}

@compute @workgroup_size(256)
fn finalize(@builtin(local_invocation_index) li: u32) {
  var acc = 0.0;
  for (var i = li; i < p.n; i += 256u) {
    acc = combine(acc, src[i]);
  }
  sh[li] = acc;
  reduce_shared(li);
  if (li == 0u) {
    let s = sh[0];
    var total = s;
    if (MODE == 0u) {
      total = sqrt(s);
    } else if (MODE == 1u && s != 0.0) {
      total = pow(s, 1.0 / p.pnorm);
    }
    dst[0] = total;
    var c = p.max_norm / (total + 1e-6);
    if (!is_nan(c)) { c = min(c, 1.0); }
    coef[0] = c;
  }
}

@compute @workgroup_size(256)
fn scale(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  dst[i] = dst[i] * src[0];
}
