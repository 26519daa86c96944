// Softmax / log-softmax over the last axis, rows of length n. One 256-thread workgroup per row
// (row = wid.x + wid.y * nwg.x). Forward: each thread keeps an online (max, Σexp(x − max)) pair over
// its strided elements, pairs are merged in workgroup memory, then the row is written.
// Backward: one shared reduction (Σ g·y or Σ g) per row, then the element-wise formula.
override LOG: bool = false;

struct Params {
  rows: u32,
  n: u32,
  _pad0: u32,
  _pad1: u32,
}

// Threads per workgroup (a power of two, 32…256), chosen per row length by the host.
override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
// backward: binding 1 = y (forward output), 2 = dx, 3 = g
@group(0) @binding(3) var<storage, read> g: array<f32>;

//!include softmax_common

fn row_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return wid.x + wid.y * nwg.x;
}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = row_index(wid, nwg);
  if (row >= p.rows) { return; }
  let base = row * p.n;
  var ms = vec2<f32>(LOWEST, 0.0);
  for (var k = lid; k < p.n; k += WG) {
    ms = online_add(ms, x[base + k]);
  }
  let stats = row_stats(lid, ms);
  let rm = stats.x;
  let rs = stats.y;
  if (LOG) {
    let lse = rm + log(rs);
    for (var k = lid; k < p.n; k += WG) {
      y[base + k] = x[base + k] - lse;
    }
  } else {
    let inv = 1.0 / rs;
    for (var k = lid; k < p.n; k += WG) {
      y[base + k] = exp(x[base + k] - rm) * inv;
    }
  }
}

// softmax: dx = y · (g − Σ g·y);  log-softmax (y = log p): dx = g − exp(y) · Σ g.
@compute @workgroup_size(WG)
fn grad(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = row_index(wid, nwg);
  if (row >= p.rows) { return; }
  let base = row * p.n;
  var acc = 0.0;
  for (var k = lid; k < p.n; k += WG) {
    if (LOG) {
      acc += g[base + k];
    } else {
      acc += g[base + k] * x[base + k];
    }
  }
  let tot = row_sum(lid, acc);
  for (var k = lid; k < p.n; k += WG) {
    let yv = x[base + k];
    if (LOG) {
      y[base + k] = g[base + k] - exp(yv) * tot;
    } else {
      y[base + k] = yv * (g[base + k] - tot);
    }
  }
}
