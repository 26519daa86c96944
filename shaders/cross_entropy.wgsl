// Fused row-wise log-softmax consumers over logits [rows, n] (last axis), without materialising
// log-softmax. MODE (override): 0 = log-prob of a target id, 1 = cross-entropy, 2 = entropy.
//   main:   one 256-thread workgroup per row (row = wid.x + wid.y * nwg.x); online (max, Σexp, and for
//           entropy Σexp·(x − max)) per thread, merged in workgroup memory. Writes out[row] and
//           lse[row] = log Σ exp(x).
//   reduce: one workgroup; sums per-row losses and counts non-ignored targets → out[0], cnt[0].
//   grad:   one thread per logit.
// A target outside [0, n) that is not the ignore index yields NaN (loss and gradient of that row).
override MODE: u32 = 0u;

struct Params {
  rows: u32,
  n: u32,
  ignore: i32,
  mean: u32, // reduce: divide by the count; grad (MODE 1): scale by 1 / max(count, 1)
  gscalar: u32, // grad: the incoming gradient is one value g[0] rather than one per row
  total: u32, // rows * n
  nan_bits: u32, // 0x7fc00000 (a quiet NaN), from the host so no NaN constant is ever folded
  _pad1: u32,
}

// Threads per workgroup of `main` (a power of two, 32…256) chosen from the row length; `reduce` uses
// 256 and `grad` is element-wise with EW = 256 threads per workgroup.
override WG: u32 = 256u;
const EW: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> t: array<i32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> lse: array<f32>;
// grad only: 5 = incoming gradient, 6 = MODE 1 with mean: count (one value); MODE 2: entropy per row
@group(0) @binding(5) var<storage, read> g: array<f32>;
@group(0) @binding(6) var<storage, read> extra: array<f32>;

// main: LOWEST, online_add and row_stats (max, Σexp) over shm, shs; MODE 2 adds shu below.
//!include softmax_common
// reduce: the per-row losses and the counts, summed as pairs.
alias Red = vec2<f32>;
//!include workgroup_reduce

var<workgroup> shu: array<f32, 256>;

fn nan() -> f32 {
  return bitcast<f32>(p.nan_bits);
}

// Rescales Σ exp(x − m)·(x − m) (u) and Σ exp(x − m) (s) from max m to max mm ≥ m.
fn rescale_u(u: f32, s: f32, m: f32, mm: f32) -> f32 {
  if (s == 0.0) { return 0.0; }
  return exp(m - mm) * (u + (m - mm) * s);
}

// online_add of the entropy mode: a = (m, s, u), u = Σ exp(x − m)·(x − m).
fn online_add_u(a: vec3<f32>, v: f32) -> vec3<f32> {
  if (v > a.x) { return vec3<f32>(v, a.y * exp(a.x - v) + 1.0, rescale_u(a.z, a.y, a.x, v)); }
  let e = exp(v - a.x);
  return vec3<f32>(a.x, a.y + e, a.z + e * (v - a.x));
}

// row_stats of the entropy mode: merges every thread's (m, s, u) and returns the row's to all threads.
fn row_stats_u(lid: u32, a: vec3<f32>) -> vec3<f32> {
  shm[lid] = a.x;
  shs[lid] = a.y;
  shu[lid] = a.z;
  workgroupBarrier();
  for (var st = WG / 2u; st > 0u; st = st >> 1u) {
    if (lid < st) {
      let m1 = shm[lid];
      let m2 = shm[lid + st];
      let s1 = shs[lid];
      let s2 = shs[lid + st];
      let mm = max(m1, m2);
      shu[lid] = rescale_u(shu[lid], s1, m1, mm) + rescale_u(shu[lid + st], s2, m2, mm);
      shs[lid] = s1 * exp(m1 - mm) + s2 * exp(m2 - mm);
      shm[lid] = mm;
    }
    workgroupBarrier();
  }
  return vec3<f32>(shm[0], shs[0], shu[0]);
}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let base = row * p.n;
  var a = vec3<f32>(LOWEST, 0.0, 0.0);
  if (MODE == 2u) {
    for (var k = lid; k < p.n; k += WG) { a = online_add_u(a, x[base + k]); }
    a = row_stats_u(lid, a);
  } else {
    var ms = vec2<f32>(LOWEST, 0.0);
    for (var k = lid; k < p.n; k += WG) { ms = online_add(ms, x[base + k]); }
    a = vec3<f32>(row_stats(lid, ms), 0.0);
  }
  if (lid != 0u) { return; }
  let rs = a.y;
  let l = a.x + log(rs);
  lse[row] = l;
  if (MODE == 2u) {
    out[row] = log(rs) - a.z / rs;
    return;
  }
  let tid = t[row];
  if (MODE == 1u && tid == p.ignore) {
    out[row] = 0.0;
  } else if (tid < 0 || u32(tid) >= p.n) {
    out[row] = nan();
  } else if (MODE == 1u) {
    out[row] = l - x[base + u32(tid)];
  } else {
    out[row] = x[base + u32(tid)] - l;
  }
}

// Bindings: 1 = per-row losses, 2 = targets, 3 = result (one value), 4 = count of non-ignored rows.
@compute @workgroup_size(WG)
fn reduce(@builtin(local_invocation_index) lid: u32) {
  var acc = 0.0;
  var cnt = 0.0;
  for (var r = lid; r < p.rows; r += WG) {
    acc += x[r];
    cnt += select(1.0, 0.0, t[r] == p.ignore);
  }
  red[lid] = vec2<f32>(acc, cnt);
  red_sum(lid);
  if (lid == 0u) {
    let c = red[0].y;
    var res = red[0].x;
    if (p.mean == 1u) {
      res = select(res / c, 0.0, c == 0.0);
    }
    out[0] = res;
    lse[0] = c;
  }
}

// Bindings: 1 = logits, 2 = targets, 3 = dx, 4 = lse per row, 5 = g, 6 = extra (see above).
@compute @workgroup_size(256)
fn grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * EW;
  if (i >= p.total) { return; }
  let row = i / p.n;
  let c = i - row * p.n;
  let v = x[i];
  let prob = exp(v - lse[row]);
  var gr: f32;
  if (p.gscalar == 1u) {
    gr = g[0];
  } else {
    gr = g[row];
  }
  if (MODE == 2u) {
    // A probability of 0 (a logit at −∞) gets no gradient, not 0 · −∞ = NaN.
    out[i] = select(-gr * prob * (v - lse[row] + extra[row]), 0.0, prob == 0.0);
    return;
  }
  let tid = t[row];
  if (MODE == 1u && tid == p.ignore) {
    out[i] = 0.0;
    return;
  }
  if (tid < 0 || u32(tid) >= p.n) {
    out[i] = nan();
    return;
  }
  let hot = select(0.0, 1.0, u32(tid) == c);
  if (MODE == 1u) {
    var scale = gr;
    if (p.mean == 1u) {
      scale = gr / max(extra[0], 1.0);
    }
    out[i] = scale * (prob - hot);
  } else {
    out[i] = gr * (hot - prob);
  }
}
