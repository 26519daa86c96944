// LayerNorm over the last dimension C of a [rows, C] tensor (PyTorch semantics: biased variance).
//   main:       one workgroup per row -> y = (x − mean)·rstd·w + b, and stats[row] = (mean, rstd).
//               Two passes over the row (mean, then Σ(x − mean)²) for accuracy.
//   grad_x:     one workgroup per row -> dx = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)), ĝ = g·w, x̂ = (x − mean)·rstd
//   grad_wb:    one thread per (column, chunk of rows) -> partial Σ g·x̂ (dweight) and Σ g (dbias)
//   sum_chunks: one thread per column -> sums the [nchunks, C] partials
// Rows are spread over a 2-D grid: row = wid.x + wid.y · nwg.x.
// Workgroup size: 256 by default; the row kernels (main, grad_x) use the smallest power of two ≥ C/4
// (32…256) so short rows do not pay for idle threads and barriers.
override WG: u32 = 256u;

struct Params {
  rows: u32,
  C: u32,
  eps: f32,
  chunk: u32, // rows per chunk (grad_wb)
  nchunks: u32, // number of chunks (sum_chunks)
  _p0: u32,
  _p1: u32,
  _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// The row kernels tree-sum two values per thread at once (red_sum; totals in red[0]).
alias Red = vec2<f32>;
//!include workgroup_reduce

// ---------------------------------------------------------------- forward
// bindings: 1 x, 2 weight, 3 bias, 4 y (rw), 5 stats (rw, [rows, 2])
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) l: u32,
) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let base = row * p.C;
  let n = f32(p.C);
  var s = 0.0;
  for (var c = l; c < p.C; c += WG) { s += x[base + c]; }
  red[l] = vec2<f32>(s, 0.0);
  red_sum(l);
  let mean = red[0].x / n;
  workgroupBarrier();
  var v = 0.0;
  for (var c = l; c < p.C; c += WG) {
    let d = x[base + c] - mean;
    v += d * d;
  }
  red[l] = vec2<f32>(v, 0.0);
  red_sum(l);
  let rstd = inverseSqrt(red[0].x / n + p.eps);
  for (var c = l; c < p.C; c += WG) {
    y[base + c] = (x[base + c] - mean) * rstd * w[c] + bias[c];
  }
  if (l == 0u) {
    stats[2u * row] = mean;
    stats[2u * row + 1u] = rstd;
  }
}

// ---------------------------------------------------------------- grad_x
// bindings: 1 x, 2 weight, 3 g, 4 dx (rw), 5 stats
@group(0) @binding(3) var<storage, read> gy: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;
@group(0) @binding(5) var<storage, read> st: array<f32>;

@compute @workgroup_size(WG)
fn grad_x(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) l: u32,
) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let base = row * p.C;
  let mean = st[2u * row];
  let rstd = st[2u * row + 1u];
  var sg = 0.0;
  var sgx = 0.0;
  for (var c = l; c < p.C; c += WG) {
    let gh = gy[base + c] * w[c];
    sg += gh;
    sgx += gh * (x[base + c] - mean) * rstd;
  }
  red[l] = vec2<f32>(sg, sgx);
  red_sum(l);
  let n = f32(p.C);
  let mg = red[0].x / n;
  let mgx = red[0].y / n;
  for (var c = l; c < p.C; c += WG) {
    let xh = (x[base + c] - mean) * rstd;
    dx[base + c] = rstd * (gy[base + c] * w[c] - mg - xh * mgx);
  }
}

// ---------------------------------------------------------------- grad_wb
// bindings: 1 x, 2 g, 3 stats, 4 dweight partials (rw, [nchunks, C]), 5 dbias partials (rw, [nchunks, C])
// grid: (ceil(C / WG), nchunks)
@group(0) @binding(2) var<storage, read> g2: array<f32>;
@group(0) @binding(3) var<storage, read> st2: array<f32>;
@group(0) @binding(4) var<storage, read_write> dw: array<f32>;
@group(0) @binding(5) var<storage, read_write> db: array<f32>;

@compute @workgroup_size(WG)
fn grad_wb(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let c = wid.x * WG + l;
  if (c >= p.C) { return; }
  let r0 = wid.y * p.chunk;
  let r1 = min(p.rows, r0 + p.chunk);
  var sw = 0.0;
  var sb = 0.0;
  for (var r = r0; r < r1; r++) {
    let gv = g2[r * p.C + c];
    sw += gv * (x[r * p.C + c] - st2[2u * r]) * st2[2u * r + 1u];
    sb += gv;
  }
  dw[wid.y * p.C + c] = sw;
  db[wid.y * p.C + c] = sb;
}

// ---------------------------------------------------------------- sum_chunks
// bindings: 1 partials ([nchunks, C]), 2 total (rw, [C])
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read_write> total: array<f32>;

@compute @workgroup_size(WG)
fn sum_chunks(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c = gid.x;
  if (c >= p.C) { return; }
  var s = 0.0;
  for (var k = 0u; k < p.nchunks; k++) { s += part[k * p.C + c]; }
  total[c] = s;
}
