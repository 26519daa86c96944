// Next-token selection on the GPU, one workgroup per batch row, no readback:
// suppressed tokens (transformers' suppress_tokens: never chosen), temperature, top-k and top-p
// (nucleus) filtering, greedy or seeded sampling, min-new-tokens (EOS forbidden before it), and
// EOS/pad bookkeeping for finished rows.
// Top-k and top-p thresholds are found by bisection on the logit value (32 rounds of
// row reductions) instead of sorting: the kept set is {z >= threshold}.
struct Params {
  vocab: u32,
  step: u32,       // index of the token being generated (column in `tokens`)
  max_new: u32,    // columns of `tokens`
  greedy: u32,     // 1: argmax
  top_k: u32,      // 0: off
  eos: i32,        // -1: none
  pad: i32,
  min_new: u32,
  seed: u32,
  temperature: f32,
  top_p: f32,      // >= 1: off
  suppress_words: u32, // words of the suppressed-token bit set (0: none)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;        // [B, vocab]
@group(0) @binding(2) var<storage, read_write> finished: array<i32>; // [B]
@group(0) @binding(3) var<storage, read_write> tokens: array<i32>;   // [B, max_new]
@group(0) @binding(4) var<storage, read_write> next_ids: array<i32>; // [B]
@group(0) @binding(5) var<storage, read> suppress: array<u32>;      // bit i set: token i is never chosen

const WG: u32 = 256u;
var<workgroup> red_f: array<f32, 256>;
var<workgroup> red_u: array<u32, 256>;
var<workgroup> shared_target: f32;

//!include rng

fn logit_at(row: u32, i: u32) -> f32 {
  var z = logits[row * p.vocab + i];
  if (i32(i) == p.eos && p.step < p.min_new) { z = -3.0e38; }
  if ((i >> 5u) < p.suppress_words && ((suppress[i >> 5u] >> (i & 31u)) & 1u) == 1u) { z = -3.0e38; }
  if (p.greedy == 0u) { z = z / p.temperature; }
  return z;
}

fn reduce_max(lid: u32, v: f32) -> f32 {
  red_f[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { red_f[lid] = max(red_f[lid], red_f[lid + s]); }
    workgroupBarrier();
  }
  let r = red_f[0];
  workgroupBarrier();
  return r;
}

fn reduce_sum(lid: u32, v: f32) -> f32 {
  red_f[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { red_f[lid] = red_f[lid] + red_f[lid + s]; }
    workgroupBarrier();
  }
  let r = red_f[0];
  workgroupBarrier();
  return r;
}

fn reduce_count(lid: u32, v: u32) -> u32 {
  red_u[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { red_u[lid] = red_u[lid] + red_u[lid + s]; }
    workgroupBarrier();
  }
  let r = red_u[0];
  workgroupBarrier();
  return r;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lidv: vec3<u32>) {
  let row = wid.x;
  let lid = lidv.x;
  let V = p.vocab;
  // Contiguous chunk per thread (for the final prefix-sum search).
  let chunk = (V + WG - 1u) / WG;
  let lo = min(lid * chunk, V);
  let hi = min(lo + chunk, V);

  var m = -3.4e38;
  var arg = 0xffffffffu;
  for (var i = lo; i < hi; i++) {
    let z = logit_at(row, i);
    if (z > m) { m = z; arg = i; }
  }
  let gmax = reduce_max(lid, m);
  var token = 0u;
  if (p.greedy == 1u) {
    // First index attaining the maximum.
    red_u[lid] = select(0xffffffffu, arg, m == gmax);
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
      if (lid < s) { red_u[lid] = min(red_u[lid], red_u[lid + s]); }
      workgroupBarrier();
    }
    token = red_u[0];
    workgroupBarrier();
  } else {
    // The smallest logit still allowed (suppressed tokens and an early EOS sit at -3e38 and would leave the
    // top-k bisection's 32 halvings far too coarse).
    var gmin_local = 3.4e38;
    for (var i = lo; i < hi; i++) {
      let z = logit_at(row, i);
      if (z > -1.0e38) { gmin_local = min(gmin_local, z); }
    }
    let gmin = -reduce_max(lid, -gmin_local);
    // Top-k: largest threshold t with count(z >= t) >= k.
    var thresh = gmin;
    if (p.top_k > 0u && p.top_k < V) {
      var a = gmin;
      var b = gmax;
      for (var it = 0u; it < 32u; it++) {
        let mid = a + (b - a) * 0.5;
        var c = 0u;
        for (var i = lo; i < hi; i++) { c += select(0u, 1u, logit_at(row, i) >= mid); }
        if (reduce_count(lid, c) >= p.top_k) { a = mid; } else { b = mid; }
      }
      thresh = a;
    }
    var total_local = 0.0;
    for (var i = lo; i < hi; i++) {
      let z = logit_at(row, i);
      if (z >= thresh) { total_local += exp(z - gmax); }
    }
    let total = reduce_sum(lid, total_local);
    // Top-p: largest threshold t >= thresh whose kept mass is still >= top_p of the total.
    if (p.top_p < 1.0) {
      var a = thresh;
      var b = gmax;
      for (var it = 0u; it < 32u; it++) {
        let mid = a + (b - a) * 0.5;
        var s = 0.0;
        for (var i = lo; i < hi; i++) {
          let z = logit_at(row, i);
          if (z >= mid) { s += exp(z - gmax); }
        }
        if (reduce_sum(lid, s) >= p.top_p * total) { a = mid; } else { b = mid; }
      }
      thresh = a;
    }
    var kept_local = 0.0;
    for (var i = lo; i < hi; i++) {
      let z = logit_at(row, i);
      if (z >= thresh) { kept_local += exp(z - gmax); }
    }
    // Inclusive scan of per-thread masses (Hillis–Steele in workgroup memory).
    red_f[lid] = kept_local;
    workgroupBarrier();
    for (var off = 1u; off < WG; off <<= 1u) {
      var add = 0.0;
      if (lid >= off) { add = red_f[lid - off]; }
      workgroupBarrier();
      red_f[lid] = red_f[lid] + add;
      workgroupBarrier();
    }
    let kept_total = red_f[WG - 1u];
    if (lid == 0u) {
      let u = f32(mix32(mix32(p.seed ^ mix32(row * 0x9e3779b9u)) ^ mix32(p.step + 0x632be5abu)) >> 8u) / 16777216.0;
      shared_target = u * kept_total;
    }
    red_u[lid] = 0xffffffffu;
    workgroupBarrier();
    let goal = shared_target;
    let before = red_f[lid] - kept_local;
    if (kept_local > 0.0 && goal >= before && (goal < red_f[lid] || lid == WG - 1u || red_f[lid] >= kept_total)) {
      var acc = before;
      var pick = 0xffffffffu;
      for (var i = lo; i < hi; i++) {
        let z = logit_at(row, i);
        if (z >= thresh) {
          pick = i;
          acc += exp(z - gmax);
          if (acc > goal) { break; }
        }
      }
      red_u[lid] = pick;
    }
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
      if (lid < s) { red_u[lid] = min(red_u[lid], red_u[lid + s]); }
      workgroupBarrier();
    }
    token = red_u[0];
  }
  if (lid == 0u) {
    var t = i32(token);
    if (token >= V) { t = select(0, p.pad, p.pad >= 0); }
    if (finished[row] != 0) {
      t = p.pad;
    } else if (t == p.eos) {
      finished[row] = 1;
    }
    tokens[row * p.max_new + p.step] = t;
    next_ids[row] = t;
  }
}
