// Inverted dropout with a counter-based RNG: nothing is stored; the keep decision for element i is
// recomputed from (key, i), so the backward pass (the same kernel applied to the gradient) uses the
// same mask. The RNG is described in engine/ops/dropout.ts and mirrored there by dropoutMaskRef:
//   mix32(x): x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16 (all mod 2^32)
//   bits(i) = mix32(mix32(i ^ key) + key);  keep  <=>  bits(i) >= threshold
struct Params {
  n: u32,
  key: u32, // derived from the seed on the CPU (dropoutRng in dropout.ts)
  threshold: u32, // floor(p * 2^32), saturated
  scale: f32, // 1 / (1 - p), or 0 when p = 1
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

//!include rng

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  let bits = mix32(mix32(i ^ p.key) + p.key);
  y[i] = select(0.0, x[i] * p.scale, bits >= p.threshold);
}
