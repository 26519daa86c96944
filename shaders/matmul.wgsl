// Tiled batched matrix multiply: C[z] = act(alpha · op(A[z]) · op(B[z]) (+ bias[n])) (+ R[z]), f32.
// The epilogue (all pipeline constants, free when off): BIAS adds bias[n]; PRE also writes that
// pre-activation value to `pre` (kept for backward); ACT applies an activation (activation.wgsl
// codes); RESID then adds the residual R, laid out like C.
// op(A) is [M, K]: A is stored [M, K], or [K, M] when TRANS_A. op(B) is [K, N]: B is stored
// [K, N], or [N, K] when TRANS_B. C is contiguous [batch, M, N].
//
// Each workgroup computes a BM × BN tile of C (BM = WG_Y·TM, BN = WG_X·TN). The A and B tiles
// pass through workgroup memory BK deep at a time, stored k-major as vec4s, so the inner loop reads
// four rows of A and four columns of B per vec4 load. Each thread keeps a TM × TN block (TM, TN ∈
// {4, 8}) of accumulators in named vec4 locals (cRC: row R, column group C), never an indexed array.
// A thread's rows are ty·4 + 0..3 and (ty + WG_Y)·4 + 0..3; its columns tx·4 + 0..3 and
// (tx + WG_X)·4 + 0..3, so neighbouring threads read neighbouring vec4s of workgroup memory.
//
// A and B are bound twice: as f32 (any shape) and as vec4<f32> (used only when VEC_A / VEC_B say
// the contiguous dimension is a multiple of 4, so every vec4 lies wholly inside or outside).
// The grid is (⌈N/BN⌉, ⌈M/BM⌉, batches · splits); batch z's operand offsets come from up to 4 batch
// dims with per-operand element strides (0 where that operand is broadcast).
//
// Split K: z = split · nbatch + batch, and split s covers k ∈ [s·kchunk, min(K, (s+1)·kchunk)) (kchunk a
// multiple of BK), writing its partial product to C[z] — so C is [splits, batches, M, N] and the host
// sums the splits (only without bias, activation or residual; alpha distributes over the sum).
// Without splitting, nbatch ≥ every z and kchunk ≥ K.

override WG_X: u32 = 16u; // threads along N
override WG_Y: u32 = 16u; // threads along M
override TM: u32 = 4u; // rows per thread: 4 or 8
override TN: u32 = 4u; // columns per thread: 4 or 8
override BK: u32 = 16u; // depth of a k tile, a multiple of 4

override BM: u32 = WG_Y * TM;
override BN: u32 = WG_X * TN;
override NT: u32 = WG_X * WG_Y;

//!include matmul_io

//!include activation

var<workgroup> As: array<vec4<f32>, BK * BM / 4u>; // As[k·BM/4 + m/4][m % 4]
var<workgroup> Bs: array<vec4<f32>, BK * BN / 4u>; // Bs[k·BN/4 + n/4][n % 4]

// Loads vec4 group g of the A tile at (m0, k0) into workgroup memory.
fn loadA(offA: u32, m0: u32, k0: u32, kEnd: u32, g: u32) {
  if (TRANS_A) {
    // Stored [K, M]: a group is 4 consecutive m at one k; lands as one vec4.
    let kk = g / (BM / 4u);
    let mq = g % (BM / 4u);
    let k = k0 + kk;
    let m = m0 + mq * 4u;
    var v = vec4<f32>(0.0);
    if (k < kEnd) { v = readA(offA + k * p.M + m, avail(m, p.M)); }
    As[kk * (BM / 4u) + mq] = v;
  } else {
    // Stored [M, K]: a group is 4 consecutive k in one row; lands in 4 vec4s, one component each.
    let row = g / (BK / 4u);
    let kq = g % (BK / 4u);
    let m = m0 + row;
    let k = k0 + kq * 4u;
    var v = vec4<f32>(0.0);
    if (m < p.M) { v = readA(offA + m * p.K + k, avail(k, kEnd)); }
    let at = kq * 4u * (BM / 4u) + row / 4u;
    let comp = row % 4u;
    As[at][comp] = v.x;
    As[at + BM / 4u][comp] = v.y;
    As[at + 2u * (BM / 4u)][comp] = v.z;
    As[at + 3u * (BM / 4u)][comp] = v.w;
  }
}

fn loadB(offB: u32, n0: u32, k0: u32, kEnd: u32, g: u32) {
  if (TRANS_B) {
    // Stored [N, K]: a group is 4 consecutive k at one n.
    let col = g / (BK / 4u);
    let kq = g % (BK / 4u);
    let n = n0 + col;
    let k = k0 + kq * 4u;
    var v = vec4<f32>(0.0);
    if (n < p.N) { v = readB(offB + n * p.K + k, avail(k, kEnd)); }
    let at = kq * 4u * (BN / 4u) + col / 4u;
    let comp = col % 4u;
    Bs[at][comp] = v.x;
    Bs[at + BN / 4u][comp] = v.y;
    Bs[at + 2u * (BN / 4u)][comp] = v.z;
    Bs[at + 3u * (BN / 4u)][comp] = v.w;
  } else {
    // Stored [K, N]: a group is 4 consecutive n at one k.
    let kk = g / (BN / 4u);
    let nq = g % (BN / 4u);
    let k = k0 + kk;
    let n = n0 + nq * 4u;
    var v = vec4<f32>(0.0);
    if (k < kEnd) { v = readB(offB + k * p.N + n, avail(n, p.N)); }
    Bs[kk * (BN / 4u) + nq] = v;
  }
}

// Writes row m, columns n..n+3 of C through the epilogue, skipping what lies outside.
fn store(offC: u32, m: u32, n: u32, v: vec4<f32>) {
  if (m >= p.M || n >= p.N) { return; }
  let lim = min(p.N - n, 4u);
  let o = offC + m * p.N + n;
  let r = v * p.alpha;
  epilogue(o, n, r.x);
  if (lim > 1u) { epilogue(o + 1u, n + 1u, r.y); }
  if (lim > 2u) { epilogue(o + 2u, n + 2u, r.z); }
  if (lim > 3u) { epilogue(o + 3u, n + 3u, r.w); }
}

@compute @workgroup_size(WG_X, WG_Y)
fn main(@builtin(local_invocation_id) lid3: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let tx = lid3.x;
  let ty = lid3.y;
  let lid = ty * WG_X + tx;

  let at = tileOrigin(wid.z);
  let offA = at.offA;
  let offB = at.offB;
  let offC = at.offC;
  let kBegin = at.kBegin;
  let kEnd = at.kEnd;
  let m0 = wid.y * BM;
  let n0 = wid.x * BN;

  var c00 = vec4<f32>(0.0);
  var c10 = vec4<f32>(0.0);
  var c20 = vec4<f32>(0.0);
  var c30 = vec4<f32>(0.0);
  var c40 = vec4<f32>(0.0);
  var c50 = vec4<f32>(0.0);
  var c60 = vec4<f32>(0.0);
  var c70 = vec4<f32>(0.0);
  var c01 = vec4<f32>(0.0);
  var c11 = vec4<f32>(0.0);
  var c21 = vec4<f32>(0.0);
  var c31 = vec4<f32>(0.0);
  var c41 = vec4<f32>(0.0);
  var c51 = vec4<f32>(0.0);
  var c61 = vec4<f32>(0.0);
  var c71 = vec4<f32>(0.0);

  let groupsA = BM * BK / 4u;
  let groupsB = BN * BK / 4u;
  for (var k0 = kBegin; k0 < kEnd; k0 += BK) {
    for (var g = lid; g < groupsA; g += NT) { loadA(offA, m0, k0, kEnd, g); }
    for (var g = lid; g < groupsB; g += NT) { loadB(offB, n0, k0, kEnd, g); }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      let a0 = As[kk * (BM / 4u) + ty];
      let b0 = Bs[kk * (BN / 4u) + tx];
      c00 += a0.x * b0;
      c10 += a0.y * b0;
      c20 += a0.z * b0;
      c30 += a0.w * b0;
      if (TN == 8u) {
        let b1 = Bs[kk * (BN / 4u) + tx + WG_X];
        c01 += a0.x * b1;
        c11 += a0.y * b1;
        c21 += a0.z * b1;
        c31 += a0.w * b1;
        if (TM == 8u) {
          let a1 = As[kk * (BM / 4u) + ty + WG_Y];
          c41 += a1.x * b1;
          c51 += a1.y * b1;
          c61 += a1.z * b1;
          c71 += a1.w * b1;
        }
      }
      if (TM == 8u) {
        let a1 = As[kk * (BM / 4u) + ty + WG_Y];
        c40 += a1.x * b0;
        c50 += a1.y * b0;
        c60 += a1.z * b0;
        c70 += a1.w * b0;
      }
    }
    workgroupBarrier();
  }

  let r0 = m0 + ty * 4u;
  let col0 = n0 + tx * 4u;
  store(offC, r0, col0, c00);
  store(offC, r0 + 1u, col0, c10);
  store(offC, r0 + 2u, col0, c20);
  store(offC, r0 + 3u, col0, c30);
  let col1 = col0 + WG_X * 4u;
  if (TN == 8u) {
    store(offC, r0, col1, c01);
    store(offC, r0 + 1u, col1, c11);
    store(offC, r0 + 2u, col1, c21);
    store(offC, r0 + 3u, col1, c31);
  }
  if (TM == 8u) {
    let r1 = r0 + WG_Y * 4u;
    store(offC, r1, col0, c40);
    store(offC, r1 + 1u, col0, c50);
    store(offC, r1 + 2u, col0, c60);
    store(offC, r1 + 3u, col0, c70);
    if (TN == 8u) {
      store(offC, r1, col1, c41);
      store(offC, r1 + 1u, col1, c51);
      store(offC, r1 + 2u, col1, c61);
      store(offC, r1 + 3u, col1, c71);
    }
  }
}
