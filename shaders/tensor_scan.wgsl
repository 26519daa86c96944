// Whole-tensor scans that end in one atomic per workgroup (out must start at 0): grid-stride, so any number of
// workgroups covers any n, then a workgroup reduction and one atomic into out[slot].
// - amax: the largest magnitude max |x[i]|, kept as the bit pattern of a non-negative f32, which orders like its value
//   when compared as a u32 (atomicMax merges workgroups); NaN's bits exceed +inf's, so a NaN wins and the reader sees
//   it. Used for the operand scaling of matmul_coop.wgsl.
// - nonfinite: how many elements are ±Inf or NaN (exponent bits all ones), with atomicAdd. Used before checkpoints.

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

// The workgroup's reduction of v (max when MAX, else sum), valid in every invocation.
fn reduce(lid: u32, v: u32, MAX: bool) -> u32 {
  red[lid] = v;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s >>= 1u) {
    if (lid < s) { red[lid] = select(red[lid] + red[lid + s], max(red[lid], red[lid + s]), MAX); }
    workgroupBarrier();
  }
  return red[0];
}

@compute @workgroup_size(256)
fn amax(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  var m = 0u;
  for (var i = wid.x * 256u + lid; i < p.n; i += nwg.x * 256u) { m = max(m, x[i] & 0x7fffffffu); }
  let r = reduce(lid, m, true);
  if (lid == 0u) { atomicMax(&out[p.slot], r); }
}

@compute @workgroup_size(256)
fn nonfinite(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  var count = 0u;
  for (var i = wid.x * 256u + lid; i < p.n; i += nwg.x * 256u) {
    count += select(0u, 1u, (x[i] & 0x7f800000u) == 0x7f800000u);
  }
  let r = reduce(lid, count, false);
  if (lid == 0u && r > 0u) { atomicAdd(&out[p.slot], r); }
}
