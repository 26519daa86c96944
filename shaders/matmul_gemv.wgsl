// Matrix multiply for few rows (matrix–vector like): C[z] = act(alpha · A'[z] · B'[z] (+ bias)) (+ R[z]),
// f32 (the epilogue constants as in matmul.wgsl; R and `pre` are laid out like C), with A' [M, K] and B' [K, N] addressed through element strides, so any transpose (or swapping
// the roles of A and B to serve an output with few columns) is index math. Each workgroup owns
// COLS output columns and up to 4 rows (m0 = workgroup y · 4); SLICES threads per column split K
// and their partial sums meet in workgroup memory. KMAJOR puts a column's SLICES threads next to
// each other (coalesced when B' is contiguous along k); otherwise the COLS columns are adjacent
// (coalesced when B' is contiguous along n).

override COLS: u32 = 64u; // output columns per workgroup
override SLICES: u32 = 4u; // threads per column (a power of two)
override KMAJOR: bool = false;
override BIAS: u32 = 0u; // 0 none, 1 bias[n] per column, 2 bias[m] per row
override ACT: u32 = 0u; // 0 none, 1 gelu (erf), 2 gelu_new (tanh), 3 relu
override RESID: bool = false;
override PRE: bool = false;

override WG: u32 = COLS * SLICES;

struct Params {
  M: u32,
  N: u32,
  K: u32,
  batch0: u32,
  alpha: f32,
  sam: u32, // A' element (m, k) at m·sam + k·sak
  sak: u32,
  sbk: u32, // B' element (k, n) at k·sbk + n·sbn
  sbn: u32,
  scm: u32, // C element (m, n) at m·scm + n·scn (+ z·M·N)
  scn: u32,
  _p0: u32,
  bshape: vec4<u32>, // batch dims, innermost last, padded with 1s in front
  astride: vec4<u32>,
  bstride: vec4<u32>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;
@group(0) @binding(5) var<storage, read> resid: array<f32>;
@group(0) @binding(6) var<storage, read_write> pre: array<f32>;

//!include activation

var<workgroup> red: array<vec4<f32>, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  var col: u32;
  var s: u32;
  if (KMAJOR) {
    s = lid % SLICES;
    col = lid / SLICES;
  } else {
    col = lid % COLS;
    s = lid / COLS;
  }
  let z = wid.z + p.batch0;
  var rem = z;
  var offA = 0u;
  var offB = 0u;
  for (var d = 3; d >= 0; d--) {
    let sh = p.bshape[d];
    let q = rem % sh;
    rem = rem / sh;
    offA += q * p.astride[d];
    offB += q * p.bstride[d];
  }
  let n = wid.x * COLS + col;
  let m0 = wid.y * 4u;
  let rows = min(p.M - m0, 4u);
  offA += m0 * p.sam;

  var acc = vec4<f32>(0.0);
  if (n < p.N) {
    let bn = offB + n * p.sbn;
    for (var k = s; k < p.K; k += SLICES) {
      let bv = b[bn + k * p.sbk];
      let ak = offA + k * p.sak;
      acc.x += a[ak] * bv;
      if (rows > 1u) { acc.y += a[ak + p.sam] * bv; }
      if (rows > 2u) { acc.z += a[ak + 2u * p.sam] * bv; }
      if (rows > 3u) { acc.w += a[ak + 3u * p.sam] * bv; }
    }
  }
  red[lid] = acc;
  workgroupBarrier();
  for (var st = SLICES / 2u; st > 0u; st = st / 2u) {
    if (s < st) {
      if (KMAJOR) {
        red[lid] += red[lid + st];
      } else {
        red[lid] += red[lid + st * COLS];
      }
    }
    workgroupBarrier();
  }
  if (s != 0u || n >= p.N) { return; }
  let r = red[lid] * p.alpha;
  let offC = z * p.M * p.N + n * p.scn;
  for (var i = 0u; i < rows; i++) {
    let m = m0 + i;
    var v = r[i];
    if (BIAS == 1u) { v += bias[n]; }
    if (BIAS == 2u) { v += bias[m]; }
    let o = offC + m * p.scm;
    if (PRE) { pre[o] = v; }
    v = act(ACT, v);
    if (RESID) { v += resid[o]; }
    c[o] = v;
  }
}
