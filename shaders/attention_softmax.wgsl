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

@group(0) @binding(1) var<storage, read> s: array<f32>; // grad: P
@group(0) @binding(2) var<storage, read> mask: array<u32>;
@group(0) @binding(3) var<storage, read_write> pr: array<f32>; // fwd: P; grad: dS
@group(0) @binding(4) var<storage, read_write> pd: array<f32>; // fwd: P after dropout; grad: G (read)

//!include softmax_common

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
  var ms = vec2<f32>(LOWEST, 0.0);
  for (var j = lid; j < lim; j += WG) {
    if (allowed(b, j)) { ms = online_add(ms, s[base + j]); }
  }
  let stats = row_stats(lid, ms);
  let rm = stats.x;
  let rs = stats.y;
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
  let tot = row_sum(lid, acc);
  for (var j = lid; j < p.Tk; j += WG) {
    pr[base + j] = s[base + j] * (pd[base + j] * drop_factor(base + j) - tot);
  }
}
