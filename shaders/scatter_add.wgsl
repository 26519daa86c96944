// Deterministic scatter-add, step 2 (after index_sort.wgsl): dst[key, :] = Σ src[val, :] over each
// run of equal keys in the sorted pairs, in a fixed order, so results are bitwise reproducible.
// dst must be zeroed beforehand (rows with no source stay 0).
//
// Long runs (a padding id repeated thousands of times) are split into chunks of CHUNK sorted
// positions: `chunk_partials` sums, per chunk that a run enters from the left, the chunk's leading
// entries of that run; `main` (one invocation per run start and column) sums the run's entries up
// to the end of its first chunk, then adds the partials of the following chunks in order. The
// serial work per invocation is ≤ CHUNK + run/CHUNK instead of run, and the blocked summation is
// also more accurate than one long sequential sum.
const CHUNK: u32 = 64u;

struct Params {
  m: u32,     // real pairs; dropped keys (0xFFFFFFFF) sort after valid ones
  inner: u32, // columns per row
  rows: u32,  // dst rows
  _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> keys: array<u32>;
@group(0) @binding(2) var<storage, read> vals: array<u32>;
@group(0) @binding(3) var<storage, read> src: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>; // main: dst | chunk_partials: partials
@group(0) @binding(5) var<storage, read> partials: array<f32>;  // [ceil(m / CHUNK), inner]

// One invocation per (chunk c, column j); only chunks whose first key continues a run work.
@compute @workgroup_size(256)
fn chunk_partials(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  let c = i / p.inner;
  let start = c * CHUNK;
  if (start >= p.m || c == 0u) { return; }
  let j = i - c * p.inner;
  let key = keys[start];
  if (key >= p.rows || keys[start - 1u] != key) { return; }
  let end = min(start + CHUNK, p.m);
  var acc = 0.0;
  for (var e = start; e < end; e++) {
    if (keys[e] != key) { break; }
    acc += src[vals[e] * p.inner + j];
  }
  out[c * p.inner + j] = acc;
}

// One invocation per (sorted position k, column j); only run starts work.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  let k = i / p.inner;
  if (k >= p.m) { return; }
  let j = i - k * p.inner;
  let key = keys[k];
  if (key >= p.rows) { return; }
  if (k > 0u && keys[k - 1u] == key) { return; }
  let end = min((k / CHUNK + 1u) * CHUNK, p.m);
  var acc = 0.0;
  var e = k;
  for (; e < end; e++) {
    if (keys[e] != key) { break; }
    acc += src[vals[e] * p.inner + j];
  }
  if (e == end && end < p.m) {
    // The run reached a chunk boundary (not the end of the data): add the following chunks' leading
    // portions while it lasts.
    for (var c = end / CHUNK; c * CHUNK < p.m; c++) {
      if (keys[c * CHUNK] != key) { break; }
      acc += partials[c * p.inner + j];
    }
  }
  out[key * p.inner + j] = acc;
}
