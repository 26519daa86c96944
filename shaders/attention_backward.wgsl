// Backward of the fused attention in attention.wgsl. Probabilities are recomputed from the saved
// per-row logsumexp: P_ij = exp(s_ij − lse_i) for unmasked keys (0 for masked), Z_ij the dropout
// factor (keep ? 1/(1 − p) : 0, the same counter-based RNG), O_i = Σ_j P_ij Z_ij v_j. Then
//   delta_i = dO_i · O_i                       (entry delta: one thread per query row)
//   dS_ij   = P_ij (Z_ij (dO_i · v_j) − delta_i)
//   dq_i    = scale Σ_j dS_ij k_j              (entry grad_q: one workgroup per query row)
//   dk_j    = scale Σ_i dS_ij q_i,  dv_j = Σ_i P_ij Z_ij dO_i   (entry grad_kv: one workgroup per key row)
// Organising dk/dv by key row makes every output owned by one workgroup, so no atomics are needed.
// Per-chunk scalars are kept in workgroup memory (CH at a time); loops handle any Tq or Tk.
const WG: u32 = 64u;
const CH: u32 = 1024u;
const MAXD: u32 = 256u;
const PER: u32 = MAXD / WG;

override MASK: u32 = 0u; // 0 no padding mask, 1 i32 mask, 2 f32 mask ([B, mstride], non-zero = attend)

//!include attention_common



// ---------------------------------------------------------------- delta
// bindings: 1 out [B,H,Tq,D], 2 dout, 3 delta (rw, [B·H·Tq])
@group(0) @binding(1) var<storage, read> o_fwd: array<f32>;
@group(0) @binding(2) var<storage, read> do_d: array<f32>;
@group(0) @binding(3) var<storage, read_write> delta_out: array<f32>;

@compute @workgroup_size(WG)
fn delta(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let row = gid.x + gid.y * nwg.x * WG;
  if (row >= p.rows) { return; }
  var s = 0.0;
  for (var d = 0u; d < p.D; d++) { s += o_fwd[row * p.D + d] * do_d[row * p.D + d]; }
  delta_out[row] = s;
}

// ---------------------------------------------------------------- grad_q and grad_kv
// bindings: 1 q, 2 k, 3 v, 4 mask, 5 dout, 6 lse, 7 delta, then
//   grad_q:  8 dq (rw)
//   grad_kv: 8 dk (rw), 9 dv (rw)
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> mask: array<u32>;
@group(0) @binding(5) var<storage, read> dout: array<f32>;
@group(0) @binding(6) var<storage, read> lse: array<f32>;
@group(0) @binding(7) var<storage, read> dlt: array<f32>;
@group(0) @binding(8) var<storage, read_write> g1: array<f32>;
@group(0) @binding(9) var<storage, read_write> g2: array<f32>;

var<workgroup> va: array<f32, MAXD>;
var<workgroup> vb: array<f32, MAXD>;
var<workgroup> sa: array<f32, CH>;
var<workgroup> sb: array<f32, CH>;

fn key_ok(b: u32, i: u32, j: u32) -> bool {
  if (p.causal == 1u && i32(j) > i32(p.Tk) - i32(p.Tq) + i32(i)) { return false; }
  if (MASK == 1u) { return mask[b * p.mstride + j] != 0u; }
  if (MASK == 2u) { return bitcast<f32>(mask[b * p.mstride + j]) != 0.0; }
  return true;
}

@compute @workgroup_size(WG)
fn grad_q(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) l: u32,
) {
  let row = wid.x + wid.y * nwg.x; // (bh, i)
  if (row >= p.rows) { return; }
  let D = p.D;
  let bh = row / p.Tq;
  let i = row % p.Tq;
  let b = bh / p.H;
  let kbase = bh * p.Tcap;
  for (var d = l; d < D; d += WG) {
    va[d] = q[row * D + d];
    vb[d] = dout[row * D + d];
  }
  workgroupBarrier();
  let lse_i = lse[row];
  let delta_i = dlt[row];
  var kend = p.Tk;
  if (p.causal == 1u) { kend = u32(clamp(i32(p.Tk) - i32(p.Tq) + i32(i) + 1, 0, i32(p.Tk))); }
  var acc: array<f32, PER>;
  for (var c0 = 0u; c0 < kend; c0 += CH) {
    let n = min(CH, kend - c0);
    for (var t = l; t < n; t += WG) {
      let j = c0 + t;
      var ds = 0.0;
      if (key_ok(b, i, j)) {
        let ko = (kbase + j) * D;
        var s = 0.0;
        var dp = 0.0;
        for (var d = 0u; d < D; d++) {
          s += va[d] * k[ko + d];
          dp += vb[d] * v[ko + d];
        }
        let pr = exp(s * p.scale - lse_i);
        ds = pr * (dp * drop_factor(row * p.Tk + j) - delta_i);
      }
      sa[t] = ds;
    }
    workgroupBarrier();
    for (var e = 0u; e < PER; e++) {
      let d = l + e * WG;
      if (d < D) {
        var a = acc[e];
        for (var t = 0u; t < n; t++) { a += sa[t] * k[(kbase + c0 + t) * D + d]; }
        acc[e] = a;
      }
    }
    workgroupBarrier();
  }
  for (var e = 0u; e < PER; e++) {
    let d = l + e * WG;
    if (d < D) { g1[row * D + d] = acc[e] * p.scale; }
  }
}

@compute @workgroup_size(WG)
fn grad_kv(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) l: u32,
) {
  let row = wid.x + wid.y * nwg.x; // (bh, j)
  if (row >= p.rows) { return; }
  let D = p.D;
  let bh = row / p.Tcap;
  let j = row % p.Tcap;
  let b = bh / p.H;
  let qbase = bh * p.Tq;
  for (var d = l; d < D; d += WG) {
    va[d] = k[row * D + d];
    vb[d] = v[row * D + d];
  }
  workgroupBarrier();
  // with the causal mask only queries at absolute position ≥ j see key j
  var i0 = 0u;
  if (p.causal == 1u) { i0 = u32(max(i32(j) - (i32(p.Tk) - i32(p.Tq)), 0)); }
  if (j >= p.Tk) { i0 = p.Tq; } // stored beyond the valid keys: zero gradient
  var acck: array<f32, PER>;
  var accv: array<f32, PER>;
  for (var c0 = i0; c0 < p.Tq; c0 += CH) {
    let n = min(CH, p.Tq - c0);
    for (var t = l; t < n; t += WG) {
      let i = c0 + t;
      let qrow = qbase + i;
      var pz = 0.0;
      var ds = 0.0;
      if (key_ok(b, i, j)) {
        var s = 0.0;
        var dp = 0.0;
        for (var d = 0u; d < D; d++) {
          s += q[qrow * D + d] * va[d];
          dp += dout[qrow * D + d] * vb[d];
        }
        let pr = exp(s * p.scale - lse[qrow]);
        let z = drop_factor(qrow * p.Tk + j);
        pz = pr * z;
        ds = pr * (dp * z - dlt[qrow]);
      }
      sa[t] = pz;
      sb[t] = ds;
    }
    workgroupBarrier();
    for (var e = 0u; e < PER; e++) {
      let d = l + e * WG;
      if (d < D) {
        var ak = acck[e];
        var av = accv[e];
        for (var t = 0u; t < n; t++) {
          let o = (qbase + c0 + t) * D + d;
          ak += sb[t] * q[o];
          av += sa[t] * dout[o];
        }
        acck[e] = ak;
        accv[e] = av;
      }
    }
    workgroupBarrier();
  }
  for (var e = 0u; e < PER; e++) {
    let d = l + e * WG;
    if (d < D) {
      g1[row * D + d] = acck[e] * p.scale;
      g2[row * D + d] = accv[e];
    }
  }
}
