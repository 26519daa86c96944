// Shared by attention.wgsl, attention_backward.wgsl and attention_tiled.wgsl (`//!include attention_common`):
// the uniform block laid out by engine/ops/attention.ts, and the attention-dropout decision (the same
// counter-based RNG as dropout.wgsl, indexed by the flat probability index).
struct Params {
  rows: u32, // invocation rows (per-row kernels) or workgroups B·H·nblk (tiled kernels)
  H: u32,
  Tq: u32,
  Tk: u32,
  D: u32,
  causal: u32,
  drop_on: u32,
  drop_threshold: u32,
  drop_key: u32,
  drop_scale: f32,
  scale: f32,
  Tcap: u32, // key rows stored per (b, h) (≥ Tk; keys j ≥ Tk are ignored)
  mstride: u32, // row stride of the padding mask (≥ Tk)
  nblk: u32, // query/key blocks per (b, h) (tiled kernels only)
}

@group(0) @binding(0) var<uniform> p: Params;

//!include rng

// keep ? 1/(1 − p) : 0 for flat probability index idx (call only when dropout is on).
fn drop_keep(idx: u32) -> f32 {
  let bits = mix32(mix32(idx ^ p.drop_key) + p.drop_key);
  return select(0.0, p.drop_scale, bits >= p.drop_threshold);
}

// Dropout factor of flat probability index idx: 1 when dropout is off.
fn drop_factor(idx: u32) -> f32 {
  if (p.drop_on == 0u) { return 1.0; }
  return drop_keep(idx);
}
