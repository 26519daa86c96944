// Counter-based random bits shared by dropout, attention dropout and sampling (included with
// `//!include rng`): a 32-bit integer finaliser ("lowbias32"); engine/ops/dropout.ts mirrors it in
// TypeScript (mix32) so tests can recompute masks on the CPU.
fn mix32(x: u32) -> u32 {
  var h = x;
  h ^= h >> 16u;
  h *= 0x7feb352du;
  h ^= h >> 15u;
  h *= 0x846ca68bu;
  h ^= h >> 16u;
  return h;
}
