// Attention head split/merge in one pass (engine/ops/heads.ts).
//
// Packed layout X: [B, T, parts, H, D] (a fused projection [B, T, parts·C] with C = H·D).
// Head layout Y_j: [B, H, T, D], one tensor per part j.
//
// splitN (N = parts): one thread per element i of a head tensor; Y_j[i] = X[base(i) + j·C]
//   for every part. Bindings: src = X, d1..dN = Y_0..Y_{N-1}.
// mergeN: one thread per element i of [B, T, C]; X[bt·parts·C + j·C + c] = Y_j[...] for every part,
//   or 0 where bit j of `mask` is clear (part missing). Bindings: src = Y_0, d1..d{N-1} = Y_1..Y_{N-1}
//   (only read), dN = X.
// One declaration per binding keeps every entry point's interface consistent.
struct Params {
  n: u32, // elements of one head tensor, B·H·T·D
  T: u32,
  H: u32,
  D: u32,
  parts: u32,
  mask: u32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> d1: array<f32>;
@group(0) @binding(3) var<storage, read_write> d2: array<f32>;
@group(0) @binding(4) var<storage, read_write> d3: array<f32>;
@group(0) @binding(5) var<storage, read_write> d4: array<f32>;

fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return gid.x + gid.y * nwg.x * 256u;
}

// Index in X of part 0 for head-layout index i = ((b·H + h)·T + t)·D + d.
fn packedIndex(i: u32) -> u32 {
  let d = i % p.D;
  let r = i / p.D;
  let t = r % p.T;
  let r2 = r / p.T;
  let h = r2 % p.H;
  let b = r2 / p.H;
  return (b * p.T + t) * p.parts * p.H * p.D + h * p.D + d;
}

// Index in a head tensor for packed-row index i = (b·T + t)·C + c (part dropped).
fn headIndex(i: u32) -> u32 {
  let C = p.H * p.D;
  let c = i % C;
  let bt = i / C;
  let h = c / p.D;
  let d = c - h * p.D;
  let b = bt / p.T;
  let t = bt - b * p.T;
  return ((b * p.H + h) * p.T + t) * p.D + d;
}

// Where part 0 of packed-row index i goes in X.
fn packedRow(i: u32) -> u32 {
  let C = p.H * p.D;
  let bt = i / C;
  return bt * p.parts * C + (i - bt * C);
}

fn has(j: u32) -> bool {
  return ((p.mask >> j) & 1u) != 0u;
}

@compute @workgroup_size(256)
fn split1(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  d1[i] = src[packedIndex(i)];
}

@compute @workgroup_size(256)
fn split2(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  let s = packedIndex(i);
  let C = p.H * p.D;
  d1[i] = src[s];
  d2[i] = src[s + C];
}

@compute @workgroup_size(256)
fn split3(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  let s = packedIndex(i);
  let C = p.H * p.D;
  d1[i] = src[s];
  d2[i] = src[s + C];
  d3[i] = src[s + 2u * C];
}

@compute @workgroup_size(256)
fn split4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  let s = packedIndex(i);
  let C = p.H * p.D;
  d1[i] = src[s];
  d2[i] = src[s + C];
  d3[i] = src[s + 2u * C];
  d4[i] = src[s + 3u * C];
}

@compute @workgroup_size(256)
fn merge1(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  var v0 = 0.0;
  if (has(0u)) { v0 = src[headIndex(i)]; }
  d1[packedRow(i)] = v0;
}

@compute @workgroup_size(256)
fn merge2(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  let g = headIndex(i);
  let o = packedRow(i);
  let C = p.H * p.D;
  var v0 = 0.0;
  var v1 = 0.0;
  if (has(0u)) { v0 = src[g]; }
  if (has(1u)) { v1 = d1[g]; }
  d2[o] = v0;
  d2[o + C] = v1;
}

@compute @workgroup_size(256)
fn merge3(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  let g = headIndex(i);
  let o = packedRow(i);
  let C = p.H * p.D;
  var v0 = 0.0;
  var v1 = 0.0;
  var v2 = 0.0;
  if (has(0u)) { v0 = src[g]; }
  if (has(1u)) { v1 = d1[g]; }
  if (has(2u)) { v2 = d2[g]; }
  d3[o] = v0;
  d3[o + C] = v1;
  d3[o + 2u * C] = v2;
}

@compute @workgroup_size(256)
fn merge4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  let g = headIndex(i);
  let o = packedRow(i);
  let C = p.H * p.D;
  var v0 = 0.0;
  var v1 = 0.0;
  var v2 = 0.0;
  var v3 = 0.0;
  if (has(0u)) { v0 = src[g]; }
  if (has(1u)) { v1 = d1[g]; }
  if (has(2u)) { v2 = d2[g]; }
  if (has(3u)) { v3 = d3[g]; }
  d4[o] = v0;
  d4[o + C] = v1;
  d4[o + 2u * C] = v2;
  d4[o + 3u * C] = v3;
}
