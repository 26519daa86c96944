// What the tiled matrix kernels (matmul.wgsl, matmul_coop.wgsl) share: the operand-layout and epilogue pipeline
// constants, Params, bindings 0–8, where a grid layer's batch and K range start, the operand reads and the epilogue
// (the including kernel also includes activation.wgsl).

override TRANS_A: bool = false;
override TRANS_B: bool = false;
override VEC_A: bool = false; // A's contiguous dimension is a multiple of 4 (vec4 reads)
override VEC_B: bool = false; // likewise B
override BIAS: bool = false;
override ACT: u32 = 0u; // 0 none, 1 gelu (erf), 2 gelu_new (tanh), 3 relu
override RESID: bool = false;
override PRE: bool = false;

struct Params {
  M: u32,
  N: u32,
  K: u32,
  batch0: u32, // batch index of this dispatch's z = 0 (grids over 65535 batches are split)
  alpha: f32,
  nbatch: u32, // batches per split (z = split · nbatch + batch)
  kchunk: u32, // k range of one split (a multiple of BK)
  _p2: u32,
  bshape: vec4<u32>, // output batch dims, innermost last, padded with 1s in front
  astride: vec4<u32>, // A's element stride per batch dim (0 = broadcast)
  bstride: vec4<u32>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> aS: array<f32>;
@group(0) @binding(2) var<storage, read> aV: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bS: array<f32>;
@group(0) @binding(4) var<storage, read> bV: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> bias: array<f32>;
@group(0) @binding(6) var<storage, read_write> c: array<f32>;
@group(0) @binding(7) var<storage, read> resid: array<f32>;
@group(0) @binding(8) var<storage, read_write> pre: array<f32>;

// Where grid layer z works: its operands' batch offsets, its output's offset and its K range (split K).
struct TileOrigin {
  offA: u32,
  offB: u32,
  offC: u32,
  kBegin: u32,
  kEnd: u32,
}

fn tileOrigin(wz: u32) -> TileOrigin {
  let z = wz + p.batch0;
  let split = z / p.nbatch;
  let kBegin = split * p.kchunk;
  var rem = z - split * p.nbatch;
  var offA = 0u;
  var offB = 0u;
  for (var d = 3; d >= 0; d--) {
    let s = p.bshape[d];
    let q = rem % s;
    rem = rem / s;
    offA += q * p.astride[d];
    offB += q * p.bstride[d];
  }
  return TileOrigin(offA, offB, z * p.M * p.N, kBegin, min(p.K, kBegin + p.kchunk));
}

// Four consecutive elements of A starting at `base`; element j is read only when j < lim.
fn readA(base: u32, lim: u32) -> vec4<f32> {
  var v = vec4<f32>(0.0);
  if (VEC_A) {
    if (lim > 0u) { v = aV[base / 4u]; }
  } else {
    if (lim > 0u) { v.x = aS[base]; }
    if (lim > 1u) { v.y = aS[base + 1u]; }
    if (lim > 2u) { v.z = aS[base + 2u]; }
    if (lim > 3u) { v.w = aS[base + 3u]; }
  }
  return v;
}

fn readB(base: u32, lim: u32) -> vec4<f32> {
  var v = vec4<f32>(0.0);
  if (VEC_B) {
    if (lim > 0u) { v = bV[base / 4u]; }
  } else {
    if (lim > 0u) { v.x = bS[base]; }
    if (lim > 1u) { v.y = bS[base + 1u]; }
    if (lim > 2u) { v.z = bS[base + 2u]; }
    if (lim > 3u) { v.w = bS[base + 3u]; }
  }
  return v;
}

// Number of valid elements among i, i+1, i+2, i+3 below n.
fn avail(i: u32, n: u32) -> u32 {
  return select(0u, min(n - i, 4u), i < n);
}

// The epilogue of one element: C[o] = act(r (+ bias[n])) (+ R[o]), r = alpha · (the product) already.
fn epilogue(o: u32, n: u32, v: f32) {
  var r = v;
  if (BIAS) { r += bias[n]; }
  if (PRE) { pre[o] = r; }
  r = act(ACT, r);
  if (RESID) { r += resid[o]; }
  c[o] = r;
}
