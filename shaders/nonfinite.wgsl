// Counts the non-finite elements (±Inf, NaN) of a tensor into out[slot] (out must start at 0): one workgroup-level
// sum, then one atomicAdd per workgroup. Grid-stride, so any number of workgroups covers any n. An f32 is non-finite
// exactly when its 8 exponent bits are all ones.

struct Params {
  n: u32,
  slot: u32,
  _p0: u32,
  _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<atomic<u32>>;

var<workgroup> red: array<u32, 256>;

@compute @workgroup_size(256)
fn main(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let stride = nwg.x * 256u;
  var count = 0u;
  for (var i = wid.x * 256u + lid; i < p.n; i += stride) {
    count += select(0u, 1u, (x[i] & 0x7f800000u) == 0x7f800000u);
  }
  red[lid] = count;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s >>= 1u) {
    if (lid < s) { red[lid] += red[lid + s]; }
    workgroupBarrier();
  }
  if (lid == 0u && red[0] > 0u) { atomicAdd(&out[p.slot], red[0]); }
}
