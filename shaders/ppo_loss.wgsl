// TRL's PPO loss, fused. Over n = b·R tokens with weights w = mask (entries with w = 0 are skipped entirely):
//   ratio = exp(lp − old); pg = max(−A·ratio, −A·clamp(ratio, 1 − c, 1 + c))
//   vclip = max(min(v, old_v + cv), old_v − cv); vf = max((v − ret)², (vclip − ret)²)
//   loss = (mean(pg) + vf_coef · 0.5 · mean(vf)) · (mean(ratio) > threshold ? 0 : 1)
// main: ONE workgroup of WG threads loops over the tokens (two passes: sums, then centred squares for the
//       variances) and writes the scalar loss and the stats vector.
// grad: one thread per token; PyTorch's subgradients (ties of max/min split the gradient in halves).
// packed (binding 3) is [6, n]: old logprobs, old values, advantages, returns, mask, entropy.
// Stats: 0 pg_loss, 1 vf_loss, 2 loss, 3 approxkl, 4 policykl, 5 pg_clipfrac, 6 vf_clipfrac, 7 vpred mean,
//        8 returns mean, 9 returns var, 10 val error, 11 old values mean, 12 old values var,
//        13 advantages mean, 14 ratio mean, 15 skipped (0/1), 16 entropy mean, 17 mask sum.
struct Params {
  n: u32,
  has_entropy: u32,
  cliprange: f32,
  cliprange_value: f32,
  vf_coef: f32,
  ratio_threshold: f32,
  _pad0: u32,
  _pad1: u32,
}

const WG: u32 = 128u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> lp: array<f32>;
@group(0) @binding(2) var<storage, read> vp: array<f32>;
@group(0) @binding(3) var<storage, read> packed: array<f32>;
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;
// main: the loss (one value); grad: the incoming gradient (one value).
@group(0) @binding(5) var<storage, read_write> scalar: array<f32>;
@group(0) @binding(6) var<storage, read_write> dlp: array<f32>;
@group(0) @binding(7) var<storage, read_write> dvp: array<f32>;

// Four vec4 partial sums per thread, as the columns of a matrix (summed by red_sum).
alias Red = mat4x4<f32>;
//!include workgroup_reduce

fn old_lp(i: u32) -> f32 { return packed[i]; }
fn old_v(i: u32) -> f32 { return packed[p.n + i]; }
fn adv(i: u32) -> f32 { return packed[2u * p.n + i]; }
fn ret(i: u32) -> f32 { return packed[3u * p.n + i]; }
fn weight(i: u32) -> f32 { return packed[4u * p.n + i]; }
fn ent(i: u32) -> f32 { return packed[5u * p.n + i]; }

fn vclipped(v: f32, ov: f32) -> f32 {
  return max(min(v, ov + p.cliprange_value), ov - p.cliprange_value);
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
  // a: count, Σpg, Σvf, Σ(lp−old)²; b: Σ(old−lp), pg clips, vf clips, Σvpred;
  // c: Σret, Σ(v−ret)², Σold_v, Σadv; d: Σratio, Σentropy
  var a = vec4<f32>(0.0);
  var b = vec4<f32>(0.0);
  var c = vec4<f32>(0.0);
  var d = vec4<f32>(0.0);
  for (var i = lid; i < p.n; i += WG) {
    let w = weight(i);
    if (w == 0.0) { continue; }
    let dl = lp[i] - old_lp(i);
    let r = exp(dl);
    let A = adv(i);
    let pg1 = -A * r;
    let pg2 = -A * clamp(r, 1.0 - p.cliprange, 1.0 + p.cliprange);
    let v = vp[i];
    let R = ret(i);
    let vf1 = (v - R) * (v - R);
    let vc = vclipped(v, old_v(i)) - R;
    let vf2 = vc * vc;
    a += w * vec4<f32>(1.0, max(pg1, pg2), max(vf1, vf2), dl * dl);
    b += w * vec4<f32>(-dl, select(0.0, 1.0, pg2 > pg1), select(0.0, 1.0, vf2 > vf1), v);
    c += w * vec4<f32>(R, vf1, old_v(i), A);
    d += w * vec4<f32>(r, select(0.0, ent(i), p.has_entropy != 0u), 0.0, 0.0);
  }
  red[lid] = mat4x4<f32>(a, b, c, d);
  red_sum(lid);
  let sa = red[0][0];
  let sb = red[0][1];
  let sc = red[0][2];
  let sd = red[0][3];
  let cnt = sa.x;
  let ret_mean = sc.x / cnt;
  let val_mean = sc.z / cnt;
  workgroupBarrier();
  var e = vec4<f32>(0.0);
  for (var i = lid; i < p.n; i += WG) {
    let w = weight(i);
    if (w == 0.0) { continue; }
    let dr = ret(i) - ret_mean;
    let dv = old_v(i) - val_mean;
    e += w * vec4<f32>(dr * dr, dv * dv, 0.0, 0.0);
  }
  red[lid][0] = e;
  red_sum(lid);
  if (lid != 0u) { return; }
  let bessel = cnt / (cnt - 1.0);
  let ratio_mean = sd.x / cnt;
  let keep = select(1.0, 0.0, ratio_mean > p.ratio_threshold);
  let pg_loss = sa.y / cnt * keep;
  let vf_loss = 0.5 * sa.z / cnt * keep;
  let loss = pg_loss + p.vf_coef * vf_loss;
  scalar[0] = loss;
  stats[0] = pg_loss;
  stats[1] = vf_loss;
  stats[2] = loss;
  stats[3] = 0.5 * sa.w / cnt;
  stats[4] = sb.x / cnt;
  stats[5] = sb.y / cnt;
  stats[6] = sb.z / cnt;
  stats[7] = sb.w / cnt;
  stats[8] = ret_mean;
  stats[9] = red[0][0].x / cnt * bessel;
  stats[10] = sc.y / cnt;
  stats[11] = val_mean;
  stats[12] = red[0][0].y / cnt * bessel;
  stats[13] = sc.w / cnt;
  stats[14] = ratio_mean;
  stats[15] = 1.0 - keep;
  stats[16] = sd.y / cnt;
  stats[17] = cnt;
  stats[18] = 0.0;
  stats[19] = 0.0;
}

// Gradient weights of max(x, y) w.r.t. (x, y), PyTorch's rule: the larger gets it all, ties split in halves.
fn max_weights(x: f32, y: f32) -> vec2<f32> {
  if (x > y) { return vec2<f32>(1.0, 0.0); }
  if (x < y) { return vec2<f32>(0.0, 1.0); }
  return vec2<f32>(0.5, 0.5);
}

@compute @workgroup_size(256)
fn grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  let w = weight(i);
  if (w == 0.0) {
    dlp[i] = 0.0;
    dvp[i] = 0.0;
    return;
  }
  let s = scalar[0] * (1.0 - stats[15]) * w / stats[17];
  // policy term: d/dlp max(−A·r, −A·clamp(r, lo, hi)) with dr/dlp = r; torch.clamp passes the gradient on
  // [lo, hi] inclusive
  let r = exp(lp[i] - old_lp(i));
  let A = adv(i);
  let lo = 1.0 - p.cliprange;
  let hi = 1.0 + p.cliprange;
  let mw = max_weights(-A * r, -A * clamp(r, lo, hi));
  let dclamp = select(0.0, 1.0, r >= lo && r <= hi);
  dlp[i] = s * (mw.x + mw.y * dclamp) * (-A) * r;
  // value term: vf_coef · 0.5 · d/dv max((v − R)², (vclip − R)²), vclip = max(min(v, ov + cv), ov − cv)
  let v = vp[i];
  let R = ret(i);
  let ov = old_v(i);
  let vhi = ov + p.cliprange_value;
  let vlo = ov - p.cliprange_value;
  let m = min(v, vhi);
  let dmin = select(select(0.0, 0.5, v == vhi), 1.0, v < vhi);
  let dmax = select(select(0.0, 0.5, m == vlo), 1.0, m > vlo);
  let vc = max(m, vlo);
  let vw = max_weights((v - R) * (v - R), (vc - R) * (vc - R));
  let dvf = vw.x * 2.0 * (v - R) + vw.y * 2.0 * (vc - R) * dmin * dmax;
  dvp[i] = s * p.vf_coef * 0.5 * dvf;
}
