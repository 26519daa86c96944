// Operand reads shared by the tiled matrix kernels (matmul.wgsl, matmul_coop.wgsl), which declare the bindings
// aS/aV (A as f32 and as vec4) and bS/bV (B) and the pipeline constants VEC_A/VEC_B before including this file.

// Four consecutive elements of A starting at `base`; element j is read only when j < lim.
fn readA(base: u32, lim: u32) -> vec4<f32> {
  var v = vec4<f32>(0.0);
  if (VEC_A) {
    if (lim > 0u) { v = aV[base / 4u]; }
  } else {
    if (lim > 0u) { v.x = aS[base]; }
    if (lim > 1u) { v.y = aS[base + 1u]; }
    if (lim > 2u) { v.z = aS[base + 2u]; }
    if (lim > 3u) { v.w = aS[base + 3u]; }
  }
  return v;
}

fn readB(base: u32, lim: u32) -> vec4<f32> {
  var v = vec4<f32>(0.0);
  if (VEC_B) {
    if (lim > 0u) { v = bV[base / 4u]; }
  } else {
    if (lim > 0u) { v.x = bS[base]; }
    if (lim > 1u) { v.y = bS[base + 1u]; }
    if (lim > 2u) { v.z = bS[base + 2u]; }
    if (lim > 3u) { v.w = bS[base + 3u]; }
  }
  return v;
}

// Number of valid elements among i, i+1, i+2, i+3 below n.
fn avail(i: u32, n: u32) -> u32 {
  return select(0u, min(n - i, 4u), i < n);
}
