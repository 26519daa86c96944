// Tiled (flash-attention style) scaled-dot-product attention: forward (fwd) and the two backward
// kernels (grad_q, grad_kv), for head sizes up to 128. Same semantics as attention.wgsl /
// attention_backward.wgsl (row kernels), which engine/ops/attention.ts uses for decoding shapes.
//
// Shapes: q, dout, out [B, H, Tq, D]; k, v [B, H, Tcap, D] of which keys j < Tk are valid; mask
// [B, mstride] (its first Tk columns are used); lse, delta [B, H, Tq]. Query i sits at absolute
// position Tk − Tq + i (causal mask). Masked probabilities are 0; rows with every key masked get
// out = 0, lse = 0 and zero gradients.
//
// Layout: a workgroup of NT = TQ·TC threads owns a block of BR = 4·TQ rows of one (b, h) — query rows
// for fwd and grad_q, key rows for grad_kv — kept in workgroup memory, and streams tiles of BT rows
// of the other side (keys, or queries) through workgroup memory. Thread (tr, tc) = (l / TC, l % TC)
// owns block rows 4·tr .. 4·tr + 3 (packed as the 4 components of a vec4), tile rows tc + TC·x
// (x < RT = BT / TC) for the score computations, and head-dim groups of 4, tc + TC·y (y < RD4), for
// its accumulators. Rows are stored in workgroup memory as vec4s with an odd stride SR ≥ DP4, so
// threads reading the same column of different rows hit different banks.
//
// fwd: online softmax over key tiles (running max m and normaliser l per row, exchanged across the
//   TC threads of a row through red_m / red_s); causal tiles above the diagonal are never loaded;
//   out = Σ P Z v / l and lse = m + log l are written.
// grad_q:  dS = P (Z (dO·v) − delta), dq = scale Σ_j dS k_j, P recomputed as exp(s − lse).
// grad_kv: dv_j = Σ_i P Z dO_i, dk_j = scale Σ_i dS q_i (no atomics: one workgroup per key block).
// Dropout factor Z of (b, h, i, j): flat index ((b·H + h)·Tq + i)·Tk + j through the counter-based
// RNG of engine/ops/dropout.ts (keep ? 1/(1 − p) : 0); the normaliser is taken before dropout.

override MASK: u32 = 0u; // 0 no padding mask, 1 i32 mask, 2 f32 mask (non-zero = attend)
override DH: u32 = 64u; // head size D
override TQ: u32 = 8u; // thread rows: the owned block has 4·TQ rows
override TC: u32 = 8u; // threads per 4 block rows
override BT: u32 = 32u; // rows of a streamed tile, a multiple of TC
override SR: u32 = 17u; // row stride of the workgroup tiles in vec4s: odd, ≥ DP4 and ≥ RD4·TC

override DP4: u32 = (DH + 3u) / 4u; // vec4 groups per row
override BR: u32 = 4u * TQ;
override NT: u32 = TQ * TC;
override RT: u32 = BT / TC; // tile rows per thread (≤ MAXRT)
override RD4: u32 = (DP4 + TC - 1u) / TC; // head-dim groups per thread (≤ MAXRD4)

const MAXRT: u32 = 16u;
const MAXACC: u32 = 32u; // 4 rows · MAXRD4 (= 8) dim groups
const NEG: f32 = -3.0e38; // "minus infinity" of masked scores

//!include attention_common

@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> mask: array<u32>;
// fwd: 5 out, 6 lse
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> lse_out: array<f32>;
// grad_q, grad_kv: 5 dout, 6 lse, 7 delta, 8 dq or dk, 9 dv
@group(0) @binding(5) var<storage, read> dout: array<f32>;
@group(0) @binding(6) var<storage, read> lse: array<f32>;
@group(0) @binding(7) var<storage, read> dlt: array<f32>;
@group(0) @binding(8) var<storage, read_write> g1: array<f32>;
@group(0) @binding(9) var<storage, read_write> g2: array<f32>;

var<workgroup> As1: array<vec4<f32>, BR * SR>; // owned rows: scale·q (fwd, grad_q) or k (grad_kv)
var<workgroup> As2: array<vec4<f32>, BR * SR>; // owned rows: dout (grad_q) or v (grad_kv)
var<workgroup> Bs1: array<vec4<f32>, BT * SR>; // tile rows: k (fwd, grad_q) or scale·q (grad_kv)
var<workgroup> Bs2: array<vec4<f32>, BT * SR>; // tile rows: v (fwd, grad_q) or dout (grad_kv)
var<workgroup> Ws1: array<vec4<f32>, BT * TQ>; // [tile row][thread row]: P·Z (fwd, grad_kv) or dS (grad_q)
var<workgroup> Ws2: array<vec4<f32>, BT * TQ>; // dS (grad_kv)
var<workgroup> red_m: array<vec4<f32>, NT>; // fwd: per-thread row maxima
var<workgroup> red_s: array<vec4<f32>, NT>; // fwd: per-thread row sums
var<workgroup> tok: array<u32, BT>; // fwd, grad_q: key of the tile valid (in range, not padding)
var<workgroup> tls: array<f32, BT>; // grad_kv: lse of the tile's queries
var<workgroup> tdl: array<f32, BT>; // grad_kv: delta of the tile's queries


// Dropout factors of flat indices base + c·step, c = 0..3 (all 1 when dropout is off).
fn drop4(base: u32, step: u32) -> vec4<f32> {
  if (p.drop_on == 0u) { return vec4<f32>(1.0); }
  return vec4<f32>(drop_keep(base), drop_keep(base + step), drop_keep(base + 2u * step), drop_keep(base + 3u * step));
}

// Whether the padding mask lets batch b attend to key j.
fn pad_ok(b: u32, j: u32) -> bool {
  if (MASK == 1u) { return mask[b * p.mstride + j] != 0u; }
  if (MASK == 2u) { return bitcast<f32>(mask[b * p.mstride + j]) != 0.0; }
  return true;
}

// Block index of a flat workgroup id; `reverse` puts the last blocks first.
fn block_of(flat: u32, reverse: bool) -> u32 {
  let r = flat % p.nblk;
  return select(r, p.nblk - 1u - r, reverse);
}

// Number of keys the queries up to ilast can see (all Tk, or up to ilast's position when causal).
fn key_end(ilast: u32) -> u32 {
  if (p.causal == 0u) { return p.Tk; }
  return u32(clamp(i32(p.Tk) - i32(p.Tq) + i32(ilast) + 1, 0, i32(p.Tk)));
}

// (k, v) at dim d of key j of (bh); 0 for j ≥ jend or d ≥ DH (the padding of the last vec4).
fn key_val(bh: u32, j: u32, jend: u32, d: u32) -> vec2<f32> {
  var kv = vec2<f32>(0.0);
  if (j < jend && d < DH) {
    let o = (bh * p.Tcap + j) * DH + d;
    kv = vec2<f32>(k[o], v[o]);
  }
  return kv;
}

// (scale·q, dout) at dim d of query i of (bh); 0 for i ≥ Tq or d ≥ DH (backward kernels).
fn q_dout(bh: u32, i: u32, d: u32) -> vec2<f32> {
  var qd = vec2<f32>(0.0);
  if (i < p.Tq && d < DH) {
    let o = (bh * p.Tq + i) * DH + d;
    qd = vec2<f32>(q[o] * p.scale, dout[o]);
  }
  return qd;
}

// Stores a pair at dim d of owned row r (As1, As2) or of tile row t (Bs1, Bs2).
fn put_owned(r: u32, d: u32, xy: vec2<f32>) {
  As1[r * SR + d / 4u][d % 4u] = xy.x;
  As2[r * SR + d / 4u][d % 4u] = xy.y;
}

fn put_tile(t: u32, d: u32, xy: vec2<f32>) {
  Bs1[t * SR + d / 4u][d % 4u] = xy.x;
  Bs2[t * SR + d / 4u][d % 4u] = xy.y;
}

// Loads the key tile j0 .. j0 + BT of (bh, b) into Bs1 (k), Bs2 (v) and tok; keys ≥ kend read as 0.
fn load_key_tile(bh: u32, b: u32, j0: u32, kend: u32, l: u32) {
  let w = DP4 * 4u;
  for (var e = l; e < BT * w; e += NT) {
    let t = e / w;
    let d = e % w;
    put_tile(t, d, key_val(bh, j0 + t, kend, d));
  }
  for (var t = l; t < BT; t += NT) {
    let j = j0 + t;
    tok[t] = select(0u, 1u, j < kend && pad_ok(b, j));
  }
}

// The 4 query rows ra .. ra + 3 of a thread of fwd and grad_q (thread row tr of query block i0 of bh).
struct QRows {
  ra: u32,
  valid: vec4<bool>, // row < Tq
  pos: vec4<i32>, // absolute position Tk − Tq + row (causal mask)
  kend: u32, // keys the whole block sees
  dbase: u32, // dropout index of (row ra, key 0)
}

fn query_rows(bh: u32, i0: u32, tr: u32) -> QRows {
  let ra = i0 + tr * 4u;
  let rows = vec4<u32>(ra) + vec4<u32>(0u, 1u, 2u, 3u);
  let pos = vec4<i32>(rows) + vec4<i32>(i32(p.Tk) - i32(p.Tq));
  return QRows(ra, rows < vec4<u32>(p.Tq), pos, key_end(min(i0 + BR, p.Tq) - 1u), (bh * p.Tq + ra) * p.Tk);
}

// Which of the rows qr may see key j0 + t of the tile.
fn key_visible(qr: QRows, j0: u32, t: u32) -> vec4<bool> {
  var ok = qr.valid & vec4<bool>(tok[t] != 0u);
  if (p.causal == 1u) { ok = ok & (vec4<i32>(i32(j0 + t)) <= qr.pos); }
  return ok;
}

// Both products of the backward kernels for the thread's 4 owned rows (from a0) and RT tile rows (tc + TC·x):
// s[x] = As1 rows · Bs1 row, dp[x] = As2 rows · Bs2 row.
fn tile_dots2(s: ptr<function, array<vec4<f32>, MAXRT>>, dp: ptr<function, array<vec4<f32>, MAXRT>>, a0: u32, tc: u32) {
  for (var x = 0u; x < RT; x++) {
    (*s)[x] = vec4<f32>(0.0);
    (*dp)[x] = vec4<f32>(0.0);
  }
  for (var d4 = 0u; d4 < DP4; d4++) {
    let a10 = As1[a0 + d4];
    let a11 = As1[a0 + SR + d4];
    let a12 = As1[a0 + 2u * SR + d4];
    let a13 = As1[a0 + 3u * SR + d4];
    let a20 = As2[a0 + d4];
    let a21 = As2[a0 + SR + d4];
    let a22 = As2[a0 + 2u * SR + d4];
    let a23 = As2[a0 + 3u * SR + d4];
    for (var x = 0u; x < RT; x++) {
      let t = tc + x * TC;
      let b1 = Bs1[t * SR + d4];
      let b2 = Bs2[t * SR + d4];
      (*s)[x] += vec4<f32>(dot(a10, b1), dot(a11, b1), dot(a12, b1), dot(a13, b1));
      (*dp)[x] += vec4<f32>(dot(a20, b2), dot(a21, b2), dot(a22, b2), dot(a23, b2));
    }
  }
}

// acc[4y + c] += wt[c] · b for the thread's 4 owned rows c (dim group y).
fn add_rows(acc: ptr<function, array<vec4<f32>, MAXACC>>, y: u32, wt: vec4<f32>, b: vec4<f32>) {
  (*acc)[y * 4u] += wt.x * b;
  (*acc)[y * 4u + 1u] += wt.y * b;
  (*acc)[y * 4u + 2u] += wt.z * b;
  (*acc)[y * 4u + 3u] += wt.w * b;
}

@compute @workgroup_size(NT)
fn fwd(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) l: u32,
) {
  let flat = wid.x + wid.y * nwg.x;
  if (flat >= p.rows) { return; }
  let bh = flat / p.nblk;
  let i0 = block_of(flat, true) * BR;
  let b = bh / p.H;
  let tr = l / TC;
  let tc = l % TC;
  let w = DP4 * 4u;
  for (var e = l; e < BR * w; e += NT) {
    let r = e / w;
    let d = e % w;
    var x = 0.0;
    if (i0 + r < p.Tq && d < DH) { x = q[(bh * p.Tq + i0 + r) * DH + d] * p.scale; }
    As1[r * SR + d / 4u][d % 4u] = x;
  }
  let qr = query_rows(bh, i0, tr);
  let ra = qr.ra;
  let a0 = tr * 4u * SR;
  var m = vec4<f32>(NEG);
  var lsum = vec4<f32>(0.0);
  var acc: array<vec4<f32>, MAXACC>;
  var s: array<vec4<f32>, MAXRT>;
  // The block's key count, taken outside qr (which also holds per-thread rows): Tint's uniformity analysis needs the
  // loop bound of a loop with barriers to be visibly workgroup-uniform.
  let kend = key_end(min(i0 + BR, p.Tq) - 1u);
  for (var j0 = 0u; j0 < kend; j0 += BT) {
    load_key_tile(bh, b, j0, kend, l);
    workgroupBarrier();
    // scores of the thread's 4 rows × RT keys
    for (var x = 0u; x < RT; x++) { s[x] = vec4<f32>(0.0); }
    for (var d4 = 0u; d4 < DP4; d4++) {
      let q0 = As1[a0 + d4];
      let q1 = As1[a0 + SR + d4];
      let q2 = As1[a0 + 2u * SR + d4];
      let q3 = As1[a0 + 3u * SR + d4];
      for (var x = 0u; x < RT; x++) {
        let kv = Bs1[(tc + x * TC) * SR + d4];
        s[x] += vec4<f32>(dot(q0, kv), dot(q1, kv), dot(q2, kv), dot(q3, kv));
      }
    }
    var lmax = vec4<f32>(NEG);
    for (var x = 0u; x < RT; x++) {
      s[x] = select(vec4<f32>(NEG), s[x], key_visible(qr, j0, tc + x * TC));
      lmax = max(lmax, s[x]);
    }
    red_m[l] = lmax;
    workgroupBarrier();
    var mt = red_m[tr * TC];
    for (var c = 1u; c < TC; c++) { mt = max(mt, red_m[tr * TC + c]); }
    let mnew = max(m, mt);
    let alpha = exp(m - mnew);
    var psum = vec4<f32>(0.0);
    for (var x = 0u; x < RT; x++) {
      let t = tc + x * TC;
      let pr = select(vec4<f32>(0.0), exp(s[x] - mnew), s[x] > vec4<f32>(NEG));
      psum += pr;
      Ws1[t * TQ + tr] = pr * drop4(qr.dbase + j0 + t, p.Tk);
    }
    red_s[l] = psum;
    workgroupBarrier();
    var st = red_s[tr * TC];
    for (var c = 1u; c < TC; c++) { st += red_s[tr * TC + c]; }
    lsum = lsum * alpha + st;
    m = mnew;
    for (var y = 0u; y < RD4; y++) {
      acc[y * 4u] *= alpha.x;
      acc[y * 4u + 1u] *= alpha.y;
      acc[y * 4u + 2u] *= alpha.z;
      acc[y * 4u + 3u] *= alpha.w;
    }
    for (var t = 0u; t < BT; t++) {
      let pv = Ws1[t * TQ + tr];
      for (var y = 0u; y < RD4; y++) { add_rows(&acc, y, pv, Bs2[t * SR + tc + y * TC]); }
    }
    workgroupBarrier();
  }
  let inv = select(vec4<f32>(0.0), vec4<f32>(1.0) / lsum, lsum > vec4<f32>(0.0));
  for (var r = 0u; r < 4u; r++) {
    let i = ra + r;
    if (i < p.Tq) {
      let ob = (bh * p.Tq + i) * DH;
      for (var y = 0u; y < RD4; y++) {
        let d = (tc + y * TC) * 4u;
        let val = acc[y * 4u + r] * inv[r];
        for (var c = 0u; c < 4u; c++) {
          if (d + c < DH) { out[ob + d + c] = val[c]; }
        }
      }
      if (tc == 0u) { lse_out[bh * p.Tq + i] = select(0.0, m[r] + log(lsum[r]), lsum[r] > 0.0); }
    }
  }
}

@compute @workgroup_size(NT)
fn grad_q(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) l: u32,
) {
  let flat = wid.x + wid.y * nwg.x;
  if (flat >= p.rows) { return; }
  let bh = flat / p.nblk;
  let i0 = block_of(flat, true) * BR;
  let b = bh / p.H;
  let tr = l / TC;
  let tc = l % TC;
  let w = DP4 * 4u;
  for (var e = l; e < BR * w; e += NT) {
    let r = e / w;
    let d = e % w;
    put_owned(r, d, q_dout(bh, i0 + r, d));
  }
  let qr = query_rows(bh, i0, tr);
  let ra = qr.ra;
  var lse4 = vec4<f32>(0.0);
  var dl4 = vec4<f32>(0.0);
  for (var r = 0u; r < 4u; r++) {
    if (ra + r < p.Tq) {
      lse4[r] = lse[bh * p.Tq + ra + r];
      dl4[r] = dlt[bh * p.Tq + ra + r];
    }
  }
  let a0 = tr * 4u * SR;
  var acc: array<vec4<f32>, MAXACC>;
  var s: array<vec4<f32>, MAXRT>;
  var dp: array<vec4<f32>, MAXRT>;
  // The block's key count, taken outside qr (which also holds per-thread rows): Tint's uniformity analysis needs the
  // loop bound of a loop with barriers to be visibly workgroup-uniform.
  let kend = key_end(min(i0 + BR, p.Tq) - 1u);
  for (var j0 = 0u; j0 < kend; j0 += BT) {
    load_key_tile(bh, b, j0, kend, l);
    workgroupBarrier();
    tile_dots2(&s, &dp, a0, tc);
    for (var x = 0u; x < RT; x++) {
      let t = tc + x * TC;
      let pr = select(vec4<f32>(0.0), exp(s[x] - lse4), key_visible(qr, j0, t));
      Ws1[t * TQ + tr] = pr * (dp[x] * drop4(qr.dbase + j0 + t, p.Tk) - dl4);
    }
    workgroupBarrier();
    for (var t = 0u; t < BT; t++) {
      let ds = Ws1[t * TQ + tr];
      for (var y = 0u; y < RD4; y++) { add_rows(&acc, y, ds, Bs1[t * SR + tc + y * TC]); }
    }
    workgroupBarrier();
  }
  for (var r = 0u; r < 4u; r++) {
    let i = ra + r;
    if (i < p.Tq) {
      let ob = (bh * p.Tq + i) * DH;
      for (var y = 0u; y < RD4; y++) {
        let d = (tc + y * TC) * 4u;
        let val = acc[y * 4u + r] * p.scale;
        for (var c = 0u; c < 4u; c++) {
          if (d + c < DH) { g1[ob + d + c] = val[c]; }
        }
      }
    }
  }
}

@compute @workgroup_size(NT)
fn grad_kv(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) l: u32,
) {
  let flat = wid.x + wid.y * nwg.x;
  if (flat >= p.rows) { return; }
  let bh = flat / p.nblk;
  let j0 = block_of(flat, false) * BR; // early key blocks (most queries with causal) first
  let b = bh / p.H;
  let tr = l / TC;
  let tc = l % TC;
  let w = DP4 * 4u;
  for (var e = l; e < BR * w; e += NT) {
    let r = e / w;
    let d = e % w;
    put_owned(r, d, key_val(bh, j0 + r, p.Tk, d));
  }
  let off = i32(p.Tk) - i32(p.Tq);
  let ja = j0 + tr * 4u;
  let keys = vec4<u32>(ja) + vec4<u32>(0u, 1u, 2u, 3u);
  var kok = keys < vec4<u32>(p.Tk);
  for (var r = 0u; r < 4u; r++) {
    if (kok[r]) { kok[r] = pad_ok(b, ja + r); }
  }
  let kpos = vec4<i32>(keys);
  // with the causal mask only queries at absolute position ≥ j0 see the block's keys
  var istart = 0u;
  if (p.causal == 1u) { istart = u32(clamp(i32(j0) - off, 0, i32(p.Tq))); }
  if (j0 >= p.Tk) { istart = p.Tq; }
  let a0 = tr * 4u * SR;
  var acck: array<vec4<f32>, MAXACC>;
  var accv: array<vec4<f32>, MAXACC>;
  var s: array<vec4<f32>, MAXRT>;
  var dp: array<vec4<f32>, MAXRT>;
  for (var i0 = istart; i0 < p.Tq; i0 += BT) {
    for (var e = l; e < BT * w; e += NT) {
      let t = e / w;
      let d = e % w;
      put_tile(t, d, q_dout(bh, i0 + t, d));
    }
    for (var t = l; t < BT; t += NT) {
      var a = 0.0;
      var c = 0.0;
      if (i0 + t < p.Tq) {
        a = lse[bh * p.Tq + i0 + t];
        c = dlt[bh * p.Tq + i0 + t];
      }
      tls[t] = a;
      tdl[t] = c;
    }
    workgroupBarrier();
    tile_dots2(&s, &dp, a0, tc);
    for (var x = 0u; x < RT; x++) {
      let t = tc + x * TC;
      let i = i0 + t;
      var ok = kok & vec4<bool>(i < p.Tq);
      if (p.causal == 1u) { ok = ok & (kpos <= vec4<i32>(off + i32(i))); }
      let pr = select(vec4<f32>(0.0), exp(s[x] - tls[t]), ok);
      let z = drop4((bh * p.Tq + i) * p.Tk + ja, 1u);
      Ws1[t * TQ + tr] = pr * z;
      Ws2[t * TQ + tr] = pr * (dp[x] * z - tdl[t]);
    }
    workgroupBarrier();
    for (var t = 0u; t < BT; t++) {
      let pz = Ws1[t * TQ + tr];
      let ds = Ws2[t * TQ + tr];
      for (var y = 0u; y < RD4; y++) {
        let g = t * SR + tc + y * TC;
        add_rows(&accv, y, pz, Bs2[g]);
        add_rows(&acck, y, ds, Bs1[g]);
      }
    }
    workgroupBarrier();
  }
  for (var r = 0u; r < 4u; r++) {
    let j = ja + r;
    if (j < p.Tcap) {
      let ob = (bh * p.Tcap + j) * DH;
      for (var y = 0u; y < RD4; y++) {
        let d = (tc + y * TC) * 4u;
        let kv = acck[y * 4u + r];
        let vv = accv[y * 4u + r];
        for (var c = 0u; c < 4u; c++) {
          if (d + c < DH) {
            g1[ob + d + c] = kv[c];
            g2[ob + d + c] = vv[c];
          }
        }
      }
    }
  }
}
