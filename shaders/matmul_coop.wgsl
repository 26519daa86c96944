// Mixed-precision tiled batched matrix multiply on cooperative matrices (tensor cores):
// C[z] = act(alpha · op(A[z]) · op(B[z]) (+ bias[n])) (+ R[z]), the contract of matmul.wgsl (same Params,
// same bindings 0–8, same epilogue, batching and split K), with the operands rounded to f16 as they are staged
// in workgroup memory and every product accumulated in f32 by `coopMultiplyAdd` — wgpu's
// `wgpu_cooperative_matrix` extension, VK_KHR_cooperative_matrix on Vulkan (NVIDIA: tensor cores).
//
// Operand scaling: with SCALE_A (SCALE_B) each element of A (B) is multiplied by a power of two s_A (s_B) before
// rounding, and the product by alpha / s_A / s_B after the f32 accumulation (both exact). s is chosen on the GPU from
// the operand's largest magnitude (amax[0] for A, amax[1] for B, written by tensor_scan.wgsl's amax) so that the largest element
// lands in [2^13, 2^14] (below f16's 65504 even if log2 is off by one): gradients far below f16's smallest normal
// (6.1e-5) keep their precision. Dynamic loss scaling done per product, with no host round trip and no skipped step.
//
// Each workgroup computes a BM × BN tile of C with WM × WN subgroups of SG invocations (SG must be the device's
// subgroup size: a cooperative-matrix operation is executed by a whole subgroup, with uniform arguments). A
// subgroup owns FM × FN fragments of 16 × 16 (FM ≤ 4, FN ≤ 2), kept in named accumulators c<i><j>. Tiles of A
// (BM × BK) and B (BK × BN) pass through workgroup memory in the layout their storage has, so the staging stores
// are contiguous, and are read back as row-major (coopLoadT) or column-major (coopLoad) fragments. Rows are padded
// by 8 halves (16 bytes) against bank conflicts; every fragment address and stride is a multiple of 16 bytes.
// The epilogue goes through a 16 × 16 f32 scratch per subgroup: a fragment is stored there, then its 256 elements
// are written by the subgroup's invocations through `epilogue` (bounds-checked, as in matmul.wgsl).

enable f16;
enable wgpu_cooperative_matrix;

override SG: u32 = 32u; // subgroup size
override WM: u32 = 2u; // subgroups along M
override WN: u32 = 2u; // subgroups along N
override FM: u32 = 2u; // 16-row fragments per subgroup: 1, 2 or 4
override FN: u32 = 2u; // 16-column fragments per subgroup: 1 or 2
override BK: u32 = 32u; // depth of a k tile: a multiple of 16
override SCALE_A: bool = false;
override SCALE_B: bool = false;

override BM: u32 = WM * FM * 16u;
override BN: u32 = WN * FN * 16u;
override NT: u32 = WM * WN * SG;
override SA: u32 = BK + 8u; // row stride of As stored [m][k] (A not transposed)
override SAT: u32 = BM + 8u; // row stride of As stored [k][m] (TRANS_A)
override SB: u32 = BN + 8u; // row stride of Bs stored [k][n] (B not transposed)
override SBT: u32 = BK + 8u; // row stride of Bs stored [n][k] (TRANS_B)

//!include matmul_io
@group(0) @binding(9) var<storage, read> amax: array<f32>; // [largest |A|, largest |B|] (tensor_scan.wgsl amax)

//!include activation

var<workgroup> As: array<f16, (BM + 8u) * (BK + 8u)>;
var<workgroup> Bs: array<f16, (BN + 8u) * (BK + 8u)>;
var<workgroup> Cs: array<f32, WM * WN * 256u>;


// The power of two s with amax · s in [2^13, 2^14] (1 for a zero, infinite or NaN amax).
fn scaleFor(m: f32) -> f32 {
  if (!(m > 0.0) || m > 3.0e38) { return 1.0; }
  return ldexp(1.0, clamp(i32(floor(14.0 - log2(m))), -126, 126));
}

// Four values rounded to f16, stored at `at`, at + 1, at + 2, at + 3 of As or Bs.
fn putA(at: u32, v: vec4<f32>) {
  let h = vec4<f16>(v);
  As[at] = h.x;
  As[at + 1u] = h.y;
  As[at + 2u] = h.z;
  As[at + 3u] = h.w;
}

fn putB(at: u32, v: vec4<f32>) {
  let h = vec4<f16>(v);
  Bs[at] = h.x;
  Bs[at + 1u] = h.y;
  Bs[at + 2u] = h.z;
  Bs[at + 3u] = h.w;
}

// Stages vec4 group g of the A tile at (m0, k0), scaled by `s`, in the layout of A's storage.
fn loadA(offA: u32, m0: u32, k0: u32, kEnd: u32, g: u32, s: f32) {
  if (TRANS_A) {
    // Stored [K, M]: a group is 4 consecutive m at one k.
    let kk = g / (BM / 4u);
    let mq = g % (BM / 4u);
    let k = k0 + kk;
    let m = m0 + mq * 4u;
    var v = vec4<f32>(0.0);
    if (k < kEnd) { v = readA(offA + k * p.M + m, avail(m, p.M)); }
    putA(kk * SAT + mq * 4u, v * s);
  } else {
    // Stored [M, K]: a group is 4 consecutive k in one row.
    let row = g / (BK / 4u);
    let kq = g % (BK / 4u);
    let m = m0 + row;
    let k = k0 + kq * 4u;
    var v = vec4<f32>(0.0);
    if (m < p.M) { v = readA(offA + m * p.K + k, avail(k, kEnd)); }
    putA(row * SA + kq * 4u, v * s);
  }
}

fn loadB(offB: u32, n0: u32, k0: u32, kEnd: u32, g: u32, s: f32) {
  if (TRANS_B) {
    // Stored [N, K]: a group is 4 consecutive k at one n.
    let col = g / (BK / 4u);
    let kq = g % (BK / 4u);
    let n = n0 + col;
    let k = k0 + kq * 4u;
    var v = vec4<f32>(0.0);
    if (n < p.N) { v = readB(offB + n * p.K + k, avail(k, kEnd)); }
    putB(col * SBT + kq * 4u, v * s);
  } else {
    // Stored [K, N]: a group is 4 consecutive n at one k.
    let kk = g / (BN / 4u);
    let nq = g % (BN / 4u);
    let k = k0 + kk;
    let n = n0 + nq * 4u;
    var v = vec4<f32>(0.0);
    if (k < kEnd) { v = readB(offB + k * p.N + n, avail(n, p.N)); }
    putB(kk * SB + nq * 4u, v * s);
  }
}

// The 16 × 16 fragment of op(A) at tile rows r..r+15, tile depth kk..kk+15.
fn fragA(r: u32, kk: u32) -> coop_mat16x16<f16, A> {
  if (TRANS_A) {
    let at = kk * SAT + r;
    let st = SAT;
    return coopLoad<coop_mat16x16<f16, A>>(&As[at], st);
  }
  let at = r * SA + kk;
  let st = SA;
  return coopLoadT<coop_mat16x16<f16, A>>(&As[at], st);
}

// The 16 × 16 fragment of op(B) at tile depth kk..kk+15, tile columns n..n+15.
fn fragB(kk: u32, n: u32) -> coop_mat16x16<f16, B> {
  if (TRANS_B) {
    let at = n * SBT + kk;
    let st = SBT;
    return coopLoad<coop_mat16x16<f16, B>>(&Bs[at], st);
  }
  let at = kk * SB + n;
  let st = SB;
  return coopLoadT<coop_mat16x16<f16, B>>(&Bs[at], st);
}

// Writes fragment `f` (C rows m..m+15, columns n..n+15) through subgroup w's scratch and the epilogue.
fn flushFragment(f: coop_mat16x16<f32, C>, w: u32, lane: u32, offC: u32, m: u32, n: u32, scale: f32) {
  let at = w * 256u;
  let st = 16u;
  coopStoreT(f, &Cs[at], st);
  workgroupBarrier();
  for (var e = lane; e < 256u; e += SG) {
    let mm = m + e / 16u;
    let nn = n + e % 16u;
    if (mm < p.M && nn < p.N) { epilogue(offC + mm * p.N + nn, nn, Cs[at + e] * scale); }
  }
  workgroupBarrier();
}

@compute @workgroup_size(NT)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let w = lid / SG;
  let lane = lid % SG;
  let wr = (w % WM) * FM * 16u; // this subgroup's first row within the tile
  let wc = (w / WM) * FN * 16u; // and first column

  let at = tileOrigin(wid.z);
  let offA = at.offA;
  let offB = at.offB;
  let offC = at.offC;
  let kBegin = at.kBegin;
  let kEnd = at.kEnd;
  let m0 = wid.y * BM;
  let n0 = wid.x * BN;
  var sa = 1.0;
  var sb = 1.0;
  if (SCALE_A) { sa = scaleFor(amax[0]); }
  if (SCALE_B) { sb = scaleFor(amax[1]); }

  var c00 = coop_mat16x16<f32, C>();
  var c01 = coop_mat16x16<f32, C>();
  var c10 = coop_mat16x16<f32, C>();
  var c11 = coop_mat16x16<f32, C>();
  var c20 = coop_mat16x16<f32, C>();
  var c21 = coop_mat16x16<f32, C>();
  var c30 = coop_mat16x16<f32, C>();
  var c31 = coop_mat16x16<f32, C>();

  let groupsA = BM * BK / 4u;
  let groupsB = BN * BK / 4u;
  for (var k0 = kBegin; k0 < kEnd; k0 += BK) {
    for (var g = lid; g < groupsA; g += NT) { loadA(offA, m0, k0, kEnd, g, sa); }
    for (var g = lid; g < groupsB; g += NT) { loadB(offB, n0, k0, kEnd, g, sb); }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk += 16u) {
      let b0 = fragB(kk, wc);
      let a0 = fragA(wr, kk);
      c00 = coopMultiplyAdd(a0, b0, c00);
      if (FN > 1u) {
        let b1 = fragB(kk, wc + 16u);
        c01 = coopMultiplyAdd(a0, b1, c01);
        if (FM > 1u) {
          let a1 = fragA(wr + 16u, kk);
          c10 = coopMultiplyAdd(a1, b0, c10);
          c11 = coopMultiplyAdd(a1, b1, c11);
        }
        if (FM > 2u) {
          let a2 = fragA(wr + 32u, kk);
          c20 = coopMultiplyAdd(a2, b0, c20);
          c21 = coopMultiplyAdd(a2, b1, c21);
          let a3 = fragA(wr + 48u, kk);
          c30 = coopMultiplyAdd(a3, b0, c30);
          c31 = coopMultiplyAdd(a3, b1, c31);
        }
      } else {
        if (FM > 1u) {
          let a1 = fragA(wr + 16u, kk);
          c10 = coopMultiplyAdd(a1, b0, c10);
        }
        if (FM > 2u) {
          let a2 = fragA(wr + 32u, kk);
          c20 = coopMultiplyAdd(a2, b0, c20);
          let a3 = fragA(wr + 48u, kk);
          c30 = coopMultiplyAdd(a3, b0, c30);
        }
      }
    }
    workgroupBarrier();
  }

  let scale = p.alpha / sa / sb;
  let r0 = m0 + wr;
  let col0 = n0 + wc;
  flushFragment(c00, w, lane, offC, r0, col0, scale);
  if (FN > 1u) { flushFragment(c01, w, lane, offC, r0, col0 + 16u, scale); }
  if (FM > 1u) {
    flushFragment(c10, w, lane, offC, r0 + 16u, col0, scale);
    if (FN > 1u) { flushFragment(c11, w, lane, offC, r0 + 16u, col0 + 16u, scale); }
  }
  if (FM > 2u) {
    flushFragment(c20, w, lane, offC, r0 + 32u, col0, scale);
    flushFragment(c30, w, lane, offC, r0 + 48u, col0, scale);
    if (FN > 1u) {
      flushFragment(c21, w, lane, offC, r0 + 32u, col0 + 16u, scale);
      flushFragment(c31, w, lane, offC, r0 + 48u, col0 + 16u, scale);
    }
  }
}
