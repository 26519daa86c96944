// Sums a tensor of shape `full` down to a broadcast-compatible shape `outShape` (same rank, dims 1
// where reduced): the backward of broadcasting. One invocation per output element.
struct Params {
  nout: u32,
  ndim: u32,
  nred: u32, // number of input elements summed into each output element
  _pad: u32,
  full: array<vec4<u32>, 2>,
  outShape: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

fn at(v: array<vec4<u32>, 2>, d: u32) -> u32 {
  return v[d / 4u][d % 4u];
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let j = gid.x + gid.y * nwg.x * 256u;
  if (j >= p.nout) { return; }
  var acc = 0.0;
  for (var k = 0u; k < p.nred; k++) {
    // Coordinates: kept dims from j, reduced dims from k; accumulate the full linear index.
    var rj = j;
    var rk = k;
    var idx = 0u;
    var stride = 1u;
    for (var d = i32(p.ndim) - 1; d >= 0; d--) {
      let fs = at(p.full, u32(d));
      var c: u32;
      if (at(p.outShape, u32(d)) == 1u && fs != 1u) {
        c = rk % fs;
        rk = rk / fs;
      } else {
        c = rj % fs;
        rj = rj / fs;
      }
      idx += c * stride;
      stride *= fs;
    }
    acc += x[idx];
  }
  y[j] = acc;
}
