// Fused scaled-dot-product attention, forward: one workgroup per (batch·head, query row).
// q [B, H, Tq, D], k and v [B, H, Tcap, D] of which keys j < Tk are used; query i sits at absolute
// position Tk − Tq + i (causal mask). Used for decoding shapes (few queries); attention_tiled.wgsl
// handles the others.
// Keys are processed in chunks of CH: the chunk's scores live in workgroup memory, and an online
// softmax (running max m and normaliser l) carries the row across chunks, so any Tk works and a
// row with Tk ≤ CH is a single ordinary softmax. Masked keys get probability 0; a row whose keys
// are all masked outputs zeros (never NaN) and gets lse = 0.
// Attention dropout multiplies probability (b, h, i, j) — flat index (bh·Tq + i)·Tk + j — by
// keep ? 1/(1 − p) : 0 with the counter-based RNG of engine/ops/dropout.ts; the normaliser l is
// taken before dropout (dropout acts on the softmax output, as in PyTorch).
// Also saves lse = m + log(l) per row for the backward pass (attention_backward.wgsl).
const WG: u32 = 64u;
const CH: u32 = 1024u; // keys per chunk
const MAXD: u32 = 256u; // largest head size
const PER: u32 = MAXD / WG; // output dims per thread
const NEG: f32 = -3.0e38; // "minus infinity" for masked scores

override MASK: u32 = 0u; // 0 no padding mask, 1 i32 mask, 2 f32 mask ([B, mstride], non-zero = attend)

//!include attention_common

@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> mask: array<u32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> lse: array<f32>;

var<workgroup> qs: array<f32, MAXD>;
var<workgroup> sc: array<f32, CH>;
var<workgroup> red: array<f32, WG>;


// Whether query i of batch b may attend to key j (causal and padding masks).
fn key_ok(b: u32, i: u32, j: u32) -> bool {
  if (p.causal == 1u && i32(j) > i32(p.Tk) - i32(p.Tq) + i32(i)) { return false; }
  if (MASK == 1u) { return mask[b * p.mstride + j] != 0u; }
  if (MASK == 2u) { return bitcast<f32>(mask[b * p.mstride + j]) != 0.0; }
  return true;
}

// Number of keys query i can see (all Tk, or up to its absolute position when causal).
fn key_end(i: u32) -> u32 {
  if (p.causal == 0u) { return p.Tk; }
  return u32(clamp(i32(p.Tk) - i32(p.Tq) + i32(i) + 1, 0, i32(p.Tk)));
}

// Tree reduction of red (max when is_max, else sum); the result ends up in red[0].
fn reduce(l: u32, is_max: bool) {
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (l < s) {
      red[l] = select(red[l] + red[l + s], max(red[l], red[l + s]), is_max);
    }
    workgroupBarrier();
  }
}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) l: u32,
) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let D = p.D;
  let bh = row / p.Tq;
  let i = row % p.Tq;
  let b = bh / p.H;
  let kbase = bh * p.Tcap;
  for (var d = l; d < D; d += WG) { qs[d] = q[row * D + d]; }
  workgroupBarrier();

  var m = NEG;
  var lsum = 0.0;
  var acc: array<f32, PER>;
  let kend = key_end(i);
  for (var c0 = 0u; c0 < kend; c0 += CH) {
    let n = min(CH, kend - c0);
    // scores of this chunk, and their max
    var cmax = NEG;
    for (var t = l; t < n; t += WG) {
      let j = c0 + t;
      var s = NEG;
      if (key_ok(b, i, j)) {
        var dot = 0.0;
        let ko = (kbase + j) * D;
        for (var d = 0u; d < D; d++) { dot += qs[d] * k[ko + d]; }
        s = dot * p.scale;
      }
      sc[t] = s;
      cmax = max(cmax, s);
    }
    red[l] = cmax;
    reduce(l, true);
    let mnew = max(m, red[0]);
    workgroupBarrier();
    // probabilities relative to the new max; sc keeps them after dropout, the sum is taken before
    var psum = 0.0;
    for (var t = l; t < n; t += WG) {
      let s = sc[t];
      let pr = select(0.0, exp(s - mnew), s > NEG);
      psum += pr;
      sc[t] = pr * drop_factor((row * p.Tk) + c0 + t);
    }
    red[l] = psum;
    reduce(l, false);
    let alpha = exp(m - mnew);
    lsum = lsum * alpha + red[0];
    m = mnew;
    // acc = acc·alpha + Σ_t p_t · v[t]
    for (var e = 0u; e < PER; e++) {
      let d = l + e * WG;
      if (d < D) {
        var a = acc[e] * alpha;
        for (var t = 0u; t < n; t++) { a += sc[t] * v[(kbase + c0 + t) * D + d]; }
        acc[e] = a;
      }
    }
    workgroupBarrier();
  }
  let inv = select(0.0, 1.0 / lsum, lsum > 0.0);
  for (var e = 0u; e < PER; e++) {
    let d = l + e * WG;
    if (d < D) { out[row * D + d] = acc[e] * inv; }
  }
  if (l == 0u) { lse[row] = select(0.0, m + log(lsum), lsum > 0.0); }
}
