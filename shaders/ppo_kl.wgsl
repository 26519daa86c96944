// Full-distribution KL per row for TRL's kl_penalty "full": with p = softmax(x·s), q = softmax(y·s) over the
// last axis (s = 1 / temperature), kl[row] = Σ p·(log p − log q). One workgroup per row
// (row = wid.x + wid.y·nwg.x), two passes over the row: maxima, then Σexp and Σexp·(x − y).
struct Params {
  rows: u32,
  n: u32,
  inv_temp: f32,
  _pad: u32,
}

const WG: u32 = 256u;
const LOWEST: f32 = -3.4028234663852886e38;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> kl: array<f32>;

alias Red = vec4<f32>;
//!include workgroup_reduce

// The tree of red_sum with max in place of +: the maxima end up in red[0].
fn red_max(l: u32) {
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (l < s) {
      red[l] = max(red[l], red[l + s]);
    }
    workgroupBarrier();
  }
}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let base = row * p.n;
  var m = vec4<f32>(LOWEST, LOWEST, 0.0, 0.0);
  for (var k = lid; k < p.n; k += WG) {
    m = max(m, vec4<f32>(x[base + k] * p.inv_temp, y[base + k] * p.inv_temp, 0.0, 0.0));
  }
  red[lid] = m;
  red_max(lid);
  let mx = red[0].x;
  let my = red[0].y;
  workgroupBarrier();
  var acc = vec4<f32>(0.0);
  for (var k = lid; k < p.n; k += WG) {
    let a = x[base + k] * p.inv_temp;
    let b = y[base + k] * p.inv_temp;
    let ea = exp(a - mx);
    acc += vec4<f32>(ea, exp(b - my), ea * (a - b), 0.0);
  }
  red[lid] = acc;
  red_sum(lid);
  if (lid == 0u) {
    let t = red[0];
    // Σp(log p − log q) = Σ e^{a−mx}(a − b)/Σe^{a−mx} − (mx + log Σe^{a−mx}) + (my + log Σe^{b−my})
    kl[row] = t.z / t.x - (mx + log(t.x)) + (my + log(t.y));
  }
}
