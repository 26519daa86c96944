// Largest magnitude of a tensor, for the operand scaling of matmul_coop.wgsl: out[slot] = max(out[slot], |x[i]|)
// over all i, kept as the bit pattern of a non-negative f32, which orders like its value when compared as a u32 (so
// one atomicMax merges the workgroups; out must start at 0). NaN's bits exceed +inf's, so a NaN anywhere wins and
// the reader sees it. Grid-stride: any number of workgroups covers any n.

struct Params {
  n: u32,
  slot: u32,
  _p0: u32,
  _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<atomic<u32>>;

var<workgroup> red: array<u32, 256>;

@compute @workgroup_size(256)
fn main(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let stride = nwg.x * 256u;
  var m = 0u;
  for (var i = wid.x * 256u + lid; i < p.n; i += stride) {
    m = max(m, bitcast<u32>(abs(x[i])));
  }
  red[lid] = m;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s >>= 1u) {
    if (lid < s) { red[lid] = max(red[lid], red[lid + s]); }
    workgroupBarrier();
  }
  if (lid == 0u) { atomicMax(&out[p.slot], red[0]); }
}
