// Masked softmax of materialised attention scores, for the matmul-based attention path
// (engine/ops/attention_math.ts): S [B·H·Tq, Tk] (already scaled) → P, with the causal mask (query i sits
// at absolute position Tk − Tq + i), the key padding mask and attention dropout. One workgroup per row.
// Masked entries get probability 0; a row with every key masked is all zeros (as the fused kernels do).
// Dropout uses the fused kernels' decision (attention_common.wgsl, flat index row·Tk + j), so both paths
// drop the same probabilities for the same seed.
//   fwd:  P = softmax(S) (zeros where masked); PD = P · keep / (1 − p) when dropout is on.
//   grad: given G = dL/dPD: dS = P ⊙ (Gk − Σ_j Gk·P) with Gk = G · keep / (1 − p).

//!include attention_common

override MASK: u32 = 0u; // 0 no padding mask, 1 i32 mask, 2 f32 mask ([B, mstride], non-zero = attend)
override WG: u32 = 256u; // threads per row (a power of two ≤ 256)
const LOWEST: f32 = -3.4028234663852886e38;

@group(0) @binding(1) var<storage, read> s: array<f32>; // grad: P
@group(0) @binding(2) var<storage, read> mask: array<u32>;
@group(0) @binding(3) var<storage, read_write> pr: array<f32>; // fwd: P; grad: dS
@group(0) @binding(4) var<storage, read_write> pd: array<f32>; // fwd: P after dropout; grad: G (read)

var<workgroup> shm: array<f32, 256>;
var<workgroup> shs: array<f32, 256>;

// Keys of row `row` that may be attended: j < limit, and the padding mask.
fn row_limit(row: u32) -> u32 {
  let i = row % p.Tq;
  if (p.causal == 0u) { return p.Tk; }
  return u32(clamp(i32(p.Tk) - i32(p.Tq) + i32(i) + 1, 0, i32(p.Tk)));
}

fn allowed(b: u32, j: u32) -> bool {
  if (MASK == 1u) { return mask[b * p.mstride + j] != 0u; }
  if (MASK == 2u) { return bitcast<f32>(mask[b * p.mstride + j]) != 0.0; }
  return true;
}

fn row_of(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return wid.x + wid.y * nwg.x;
}

@compute @workgroup_size(WG)
fn fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = row_of(wid, nwg);
  if (row >= p.rows) { return; }
  let b = row / (p.Tq * p.H);
  let base = row * p.Tk;
  let lim = row_limit(row);
  var m = LOWEST;
  var sum = 0.0;
  for (var j = lid; j < lim; j += WG) {
    if (!allowed(b, j)) { continue; }
    let v = s[base + j];
    if (v > m) {
      sum = sum * exp(m - v) + 1.0;
      m = v;
    } else {
      sum += exp(v - m);
    }
  }
  shm[lid] = m;
  shs[lid] = sum;
  workgroupBarrier();
  for (var st = WG / 2u; st > 0u; st = st >> 1u) {
    if (lid < st) {
      let m1 = shm[lid];
      let m2 = shm[lid + st];
      let mm = max(m1, m2);
      var t = 0.0;
      if (m1 > LOWEST) { t += shs[lid] * exp(m1 - mm); }
      if (m2 > LOWEST) { t += shs[lid + st] * exp(m2 - mm); }
      shs[lid] = t;
      shm[lid] = mm;
    }
    workgroupBarrier();
  }
  let rm = shm[0];
  let rs = shs[0];
  let inv = select(0.0, 1.0 / rs, rs > 0.0);
  for (var j = lid; j < p.Tk; j += WG) {
    var y = 0.0;
    if (j < lim && allowed(b, j)) { y = exp(s[base + j] - rm) * inv; }
    pr[base + j] = y;
    if (p.drop_on != 0u) { pd[base + j] = y * drop_keep(base + j); }
  }
}

@compute @workgroup_size(WG)
fn grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = row_of(wid, nwg);
  if (row >= p.rows) { return; }
  let base = row * p.Tk;
  var acc = 0.0;
  for (var j = lid; j < p.Tk; j += WG) {
    acc += pd[base + j] * drop_factor(base + j) * s[base + j];
  }
  shs[lid] = acc;
  workgroupBarrier();
  for (var st = WG / 2u; st > 0u; st = st >> 1u) {
    if (lid < st) { shs[lid] = shs[lid] + shs[lid + st]; }
    workgroupBarrier();
  }
  let tot = shs[0];
  for (var j = lid; j < p.Tk; j += WG) {
    pr[base + j] = s[base + j] * (pd[base + j] * drop_factor(base + j) - tot);
  }
}
