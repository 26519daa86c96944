// Row statistics shared by softmax.wgsl, attention_softmax.wgsl and cross_entropy.wgsl (`//!include softmax_common`):
// each thread keeps an online pair (max m, Σ exp(x − m)) over its strided elements; the pairs, or plain partial sums,
// then meet in workgroup memory. The including shader declares `override WG: u32` (threads per row, a power of two
// ≤ 256) and calls the reductions from uniform control flow (one row per workgroup).

const LOWEST: f32 = -3.4028234663852886e38;

var<workgroup> shm: array<f32, 256>;
var<workgroup> shs: array<f32, 256>;

// Adds element v to the pair ms = (m, s).
fn online_add(ms: vec2<f32>, v: f32) -> vec2<f32> {
  if (v > ms.x) { return vec2<f32>(v, ms.y * exp(ms.x - v) + 1.0); }
  return vec2<f32>(ms.x, ms.y + exp(v - ms.x));
}

// Merges every thread's pair; returns the row's (max, Σ exp(x − max)) to all threads. A thread that saw no
// element passes (LOWEST, 0), which adds nothing.
fn row_stats(lid: u32, ms: vec2<f32>) -> vec2<f32> {
  shm[lid] = ms.x;
  shs[lid] = ms.y;
  workgroupBarrier();
  for (var st = WG / 2u; st > 0u; st = st >> 1u) {
    if (lid < st) {
      let m1 = shm[lid];
      let m2 = shm[lid + st];
      let mm = max(m1, m2);
      shs[lid] = shs[lid] * exp(m1 - mm) + shs[lid + st] * exp(m2 - mm);
      shm[lid] = mm;
    }
    workgroupBarrier();
  }
  return vec2<f32>(shm[0], shs[0]);
}

// Sum of every thread's `v`, returned to all threads.
fn row_sum(lid: u32, v: f32) -> f32 {
  shs[lid] = v;
  workgroupBarrier();
  for (var st = WG / 2u; st > 0u; st = st >> 1u) {
    if (lid < st) { shs[lid] = shs[lid] + shs[lid + st]; }
    workgroupBarrier();
  }
  return shs[0];
}
