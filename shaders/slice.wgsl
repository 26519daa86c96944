// Block copy of 32-bit words (f32 or i32 alike) for slice, concat and the slice backward.
// The tensors are viewed as [outer, row]: for i < n, with o = i / chunk and j = i % chunk,
//   dst[o * dstRow + dstOff + j] = src[o * srcRow + srcOff + j].
// Slicing axis a of shape S: outer = prod(S[..a]), inner = prod(S[a+1..]), chunk = len * inner,
// srcRow = S[a] * inner, srcOff = start * inner (dst contiguous). Concat/scatter swap the roles.
struct Params {
  n: u32,
  chunk: u32,
  srcRow: u32,
  srcOff: u32,
  dstRow: u32,
  dstOff: u32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  let o = i / p.chunk;
  let j = i - o * p.chunk;
  dst[o * p.dstRow + p.dstOff + j] = src[o * p.srcRow + p.srcOff + j];
}
