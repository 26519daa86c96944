// Matrix multiply for few rows (matrix–vector like): C[z] = act(alpha · A'[z] · B'[z] (+ bias)) (+ R[z]),
// f32, with A' [M, K] and B' [K, N] addressed through element strides, so any transpose (or swapping
// the roles of A and B to serve an output with few columns) is index math. The epilogue constants
// are those of matmul.wgsl; R and `pre` are laid out like C.
//
// Each workgroup owns COLS output columns and ROWS (4, 8 or 16) rows (m0 = workgroup y · ROWS), so a
// product with ≤ ROWS rows reads each element of B' once. SLICES threads per column split K in
// quads (thread s takes k = 4·s, 4·(s + SLICES), …): one quad of B' is read once and dotted with
// the quad of each of the workgroup's rows, accumulating in up to four vec4 registers (acc0..acc3,
// rows 0–3, 4–7, 8–11, 12–15). The partial sums of a column's slices meet in workgroup memory
// (WG · ROWS · 4 bytes). KMAJOR puts a column's SLICES threads next to each other (coalesced when B'
// is contiguous along k); otherwise the COLS columns are adjacent (coalesced when B' is contiguous
// along n). VEC_A / VEC_B read a quad as one vec4 (host checks: k stride 1, K and every other
// stride a multiple of 4); otherwise as four scalars.

override COLS: u32 = 64u; // output columns per workgroup
override SLICES: u32 = 4u; // threads per column (a power of two)
override ROWS: u32 = 4u; // output rows per workgroup: 4, 8 or 16
override KMAJOR: bool = false;
override VEC_A: bool = false;
override VEC_B: bool = false;
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
@group(0) @binding(7) var<storage, read> aV: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read> bV: array<vec4<f32>>;

//!include activation

var<workgroup> red: array<vec4<f32>, WG * ROWS / 4u>; // red[j·WG + lid]: rows 4j..4j+3 of thread lid

// The quad of A' at element `base` (k, k+1, …): element j is read only when j < lim.
fn quadA(base: u32, lim: u32) -> vec4<f32> {
  if (VEC_A) { return aV[base / 4u]; }
  var v = vec4<f32>(0.0);
  v.x = a[base];
  if (lim > 1u) { v.y = a[base + p.sak]; }
  if (lim > 2u) { v.z = a[base + 2u * p.sak]; }
  if (lim > 3u) { v.w = a[base + 3u * p.sak]; }
  return v;
}

fn quadB(base: u32, lim: u32) -> vec4<f32> {
  if (VEC_B) { return bV[base / 4u]; }
  var v = vec4<f32>(0.0);
  v.x = b[base];
  if (lim > 1u) { v.y = b[base + p.sbk]; }
  if (lim > 2u) { v.z = b[base + 2u * p.sbk]; }
  if (lim > 3u) { v.w = b[base + 3u * p.sbk]; }
  return v;
}

// Row i's quad dotted with the B' quad (0 for rows past the end; `rows` is uniform in the workgroup).
fn rowDot(ak: u32, i: u32, rows: u32, lim: u32, bq: vec4<f32>) -> f32 {
  if (i >= rows) { return 0.0; }
  return dot(quadA(ak + i * p.sam, lim), bq);
}

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
  let m0 = wid.y * ROWS;
  let rows = min(p.M - m0, ROWS);
  offA += m0 * p.sam;

  var acc0 = vec4<f32>(0.0);
  var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0);
  var acc3 = vec4<f32>(0.0);
  if (n < p.N) {
    let bn = offB + n * p.sbn;
    for (var k = 4u * s; k < p.K; k += 4u * SLICES) {
      let lim = min(p.K - k, 4u);
      let bq = quadB(bn + k * p.sbk, lim);
      let ak = offA + k * p.sak;
      acc0 += vec4<f32>(rowDot(ak, 0u, rows, lim, bq), rowDot(ak, 1u, rows, lim, bq),
                        rowDot(ak, 2u, rows, lim, bq), rowDot(ak, 3u, rows, lim, bq));
      if (ROWS > 4u) {
        acc1 += vec4<f32>(rowDot(ak, 4u, rows, lim, bq), rowDot(ak, 5u, rows, lim, bq),
                          rowDot(ak, 6u, rows, lim, bq), rowDot(ak, 7u, rows, lim, bq));
      }
      if (ROWS > 8u) {
        acc2 += vec4<f32>(rowDot(ak, 8u, rows, lim, bq), rowDot(ak, 9u, rows, lim, bq),
                          rowDot(ak, 10u, rows, lim, bq), rowDot(ak, 11u, rows, lim, bq));
        acc3 += vec4<f32>(rowDot(ak, 12u, rows, lim, bq), rowDot(ak, 13u, rows, lim, bq),
                          rowDot(ak, 14u, rows, lim, bq), rowDot(ak, 15u, rows, lim, bq));
      }
    }
  }
  red[lid] = acc0;
  if (ROWS > 4u) { red[WG + lid] = acc1; }
  if (ROWS > 8u) {
    red[2u * WG + lid] = acc2;
    red[3u * WG + lid] = acc3;
  }
  workgroupBarrier();
  var step = 1u; // distance between a column's neighbouring slices
  if (!KMAJOR) { step = COLS; }
  for (var st = SLICES / 2u; st > 0u; st = st / 2u) {
    if (s < st) {
      let o = lid + st * step;
      for (var j = 0u; j < ROWS / 4u; j++) { red[j * WG + lid] += red[j * WG + o]; }
    }
    workgroupBarrier();
  }
  if (s != 0u || n >= p.N) { return; }
  let offC = z * p.M * p.N + n * p.scn;
  for (var i = 0u; i < rows; i++) {
    let m = m0 + i;
    var v = red[(i / 4u) * WG + lid][i % 4u] * p.alpha;
    if (BIAS == 1u) { v += bias[n]; }
    if (BIAS == 2u) { v += bias[m]; }
    let o = offC + m * p.scm;
    if (PRE) { pre[o] = v; }
    v = act(ACT, v);
    if (RESID) { v += resid[o]; }
    c[o] = v;
  }
}
