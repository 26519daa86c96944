// KV-cache write: cache[b, h, offset + t, d] = update[b, h, t, d] for cache [B, H, Tcap, D] and
// update [B, H, T, D] (offset + T ≤ Tcap), one thread per element of update. Lets generation append
// new keys/values in place instead of concatenating (see writeKV in engine/ops/attention.ts).
struct Params {
  n: u32, // B·H·T·D
  T: u32,
  D: u32,
  Tcap: u32,
  offset: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> update: array<f32>;
@group(0) @binding(2) var<storage, read_write> cache: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let e = gid.x + gid.y * nwg.x * 256u;
  if (e >= p.n) { return; }
  let d = e % p.D;
  let rest = e / p.D;
  let t = rest % p.T;
  let bh = rest / p.T;
  cache[(bh * p.Tcap + p.offset + t) * p.D + d] = update[e];
}
