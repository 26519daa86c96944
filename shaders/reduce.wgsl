// Reductions over one axis of a contiguous tensor viewed as [outer, n, inner], and their backward.
//   *_rows:  inner == 1 (and n > 32); one 256-thread workgroup per output row, strided loads (coalesced), then a
//            workgroup-shared tree reduction. Row index = wid.x + wid.y * nwg.x.
//   *_cols:  inner > 1 (or short rows); one thread per (outer, inner) output looping over n (adjacent
//            threads read adjacent addresses when inner > 1).
//   sum_partial: first pass for few long rows; workgroup (g, row) sums elements g*256+t, +G*256, …
//   sum_cols_split: first pass for few long columns; each thread sums one chunk of a column.
//   expand_grad / max_grad: backward, one thread per input element.
struct Params {
  outer: u32,
  n: u32,
  inner: u32,
  scale: f32, // sums are multiplied by this (1 for sum, 1/n for mean; gradients likewise)
  total: u32, // outer * n * inner (elements of the input)
  groups: u32, // sum_partial: workgroups per row G; sum_cols_split: chunk length
  _pad0: u32,
  _pad1: u32,
}

// Threads per workgroup of the *_rows / sum_partial entries (a power of two, 32…256), chosen by the
// host from the row length; the element-wise entries always use EW = 256.
override WG: u32 = 256u;
const EW: u32 = 256u;
const LOWEST: f32 = -3.4028234663852886e38;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> yi: array<i32>;

alias Red = f32;
//!include workgroup_reduce

var<workgroup> shi: array<u32, 256>; // max_rows: the index of red's candidate

@compute @workgroup_size(WG)
fn sum_rows(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.outer) { return; }
  let base = row * p.n;
  var acc = 0.0;
  for (var k = lid; k < p.n; k += WG) {
    acc += x[base + k];
  }
  red[lid] = acc;
  red_sum(lid);
  if (lid == 0u) {
    y[row] = red[0] * p.scale;
  }
}

@compute @workgroup_size(WG)
fn sum_partial(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let g = wid.x;
  let row = wid.y;
  let base = row * p.n;
  var acc = 0.0;
  for (var k = g * WG + lid; k < p.n; k += p.groups * WG) {
    acc += x[base + k];
  }
  red[lid] = acc;
  red_sum(lid);
  if (lid == 0u) {
    y[row * p.groups + g] = red[0];
  }
}

// First pass of a column reduction with a long n: thread (o, c, i) sums chunk c (p.groups
// elements long) of column (o, i) into y[(o * S + c) * inner + i], S = ceil(n / p.groups).
@compute @workgroup_size(256)
fn sum_cols_split(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let j = gid.x + gid.y * nwg.x * EW;
  let chunks = (p.n + p.groups - 1u) / p.groups;
  if (j >= p.outer * chunks * p.inner) { return; }
  let i = j % p.inner;
  let c = (j / p.inner) % chunks;
  let o = j / (p.inner * chunks);
  let k0 = c * p.groups;
  let k1 = min(p.n, k0 + p.groups);
  var idx = (o * p.n + k0) * p.inner + i;
  var acc = 0.0;
  for (var k = k0; k < k1; k++) {
    acc += x[idx];
    idx += p.inner;
  }
  y[j] = acc;
}

@compute @workgroup_size(256)
fn sum_cols(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let j = gid.x + gid.y * nwg.x * EW;
  if (j >= p.outer * p.inner) { return; }
  let o = j / p.inner;
  let i = j - o * p.inner;
  var idx = o * p.n * p.inner + i;
  var acc = 0.0;
  for (var k = 0u; k < p.n; k++) {
    acc += x[idx];
    idx += p.inner;
  }
  y[j] = acc * p.scale;
}

// Max with the index of its first occurrence (ties keep the lower index).
@compute @workgroup_size(WG)
fn max_rows(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.outer) { return; }
  let base = row * p.n;
  var best = LOWEST;
  var bi = 0xffffffffu;
  for (var k = lid; k < p.n; k += WG) {
    let v = x[base + k];
    if (v > best || bi == 0xffffffffu) {
      best = v;
      bi = k;
    }
  }
  red[lid] = best;
  shi[lid] = bi;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (lid < s) {
      let v = red[lid + s];
      let k = shi[lid + s];
      // Take the other candidate when it is valid and larger, or equal with a lower index.
      if (k != 0xffffffffu && (shi[lid] == 0xffffffffu || v > red[lid] || (v == red[lid] && k < shi[lid]))) {
        red[lid] = v;
        shi[lid] = k;
      }
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    y[row] = red[0];
    yi[row] = i32(shi[0]);
  }
}

@compute @workgroup_size(256)
fn max_cols(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let j = gid.x + gid.y * nwg.x * EW;
  if (j >= p.outer * p.inner) { return; }
  let o = j / p.inner;
  let i = j - o * p.inner;
  var idx = o * p.n * p.inner + i;
  var best = x[idx];
  var bi = 0u;
  for (var k = 1u; k < p.n; k++) {
    idx += p.inner;
    let v = x[idx];
    if (v > best) {
      best = v;
      bi = k;
    }
  }
  y[j] = best;
  yi[j] = i32(bi);
}

// Backward of sum/mean: dx[o, k, i] = g[o, i] * scale. Bindings: 1 = g, 2 = dx.
@compute @workgroup_size(256)
fn expand_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = gid.x + gid.y * nwg.x * EW;
  if (idx >= p.total) { return; }
  let o = idx / (p.n * p.inner);
  let i = idx % p.inner;
  y[idx] = x[o * p.inner + i] * p.scale;
}

// Backward of max: the gradient goes to the recorded arg-max. Bindings: 1 = g, 2 = dx, 3 = indices.
@compute @workgroup_size(256)
fn max_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = gid.x + gid.y * nwg.x * EW;
  if (idx >= p.total) { return; }
  let o = idx / (p.n * p.inner);
  let i = idx % p.inner;
  let k = (idx / p.inner) % p.n;
  let j = o * p.inner + i;
  y[idx] = select(0.0, x[j], u32(yi[j]) == k);
}
